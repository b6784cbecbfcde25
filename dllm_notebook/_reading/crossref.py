"""Optional metadata from Crossref: a DOI in, title, authors, year and venue out.

Off by default (a lab may be offline): ``load_papers(..., crossref=True)`` asks Crossref's
REST API (``GET {url}/works/{doi}``) for every paper with a DOI, and fills the fields
Crossref has over what the PDF said; a reference library's values stay first. A DOI that
Crossref does not know (404) leaves its paper as it was.

>>> papers = enrich(load_papers("papers/"), mailto="me@lab.example")
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import httpx

from .._errors import CrossrefUnavailable
from .metadata import Reference, format_name, normalize_doi
from .paper import Paper

__all__ = ["CROSSREF_URL", "crossref_reference", "enrich"]

CROSSREF_URL = "https://api.crossref.org"
logger = logging.getLogger("dllm_notebook")


def enrich(
    papers: Sequence[Paper],
    *,
    url: str = CROSSREF_URL,
    mailto: str | None = None,
    timeout: float = 10.0,
) -> list[Paper]:
    """The papers with Crossref's metadata for each DOI (``mailto`` joins Crossref's polite
    pool). Raises :class:`~dllm_notebook.CrossrefUnavailable` when Crossref cannot be
    reached: pass ``crossref=False`` (the default) to work offline."""
    agent = "dllm-notebook" + (f" (mailto:{mailto})" if mailto else "")
    enriched = []
    with httpx.Client(
        base_url=url.rstrip("/"), timeout=timeout, headers={"User-Agent": agent}
    ) as client:
        for paper in papers:
            reference = crossref_reference(paper.doi, client) if paper.doi else None
            enriched.append(paper.with_reference(reference) if reference else paper)
    return enriched


def crossref_reference(doi: str, client: httpx.Client) -> Reference | None:
    """Crossref's record of ``doi`` as a Reference, or None when Crossref has none."""
    try:
        response = client.get(f"/works/{quote(doi, safe='/')}")
    except httpx.TransportError as exc:
        raise CrossrefUnavailable(
            f"Crossref at {client.base_url} is not reachable ({exc.__class__.__name__}); "
            "check the network, or load papers with crossref=False to work offline"
        ) from exc
    if response.status_code == 404:
        logger.info("Crossref has no record of DOI %s", doi)
        return None
    if response.status_code != 200:
        raise CrossrefUnavailable(
            f"Crossref at {client.base_url} answered {response.status_code} for DOI {doi}; "
            "try again later, or load papers with crossref=False"
        )
    try:
        work: dict[str, Any] = response.json()["message"]
    except (ValueError, KeyError, TypeError) as exc:
        raise CrossrefUnavailable(
            f"Crossref at {client.base_url} sent a malformed answer for DOI {doi}; "
            "check the URL, or load papers with crossref=False"
        ) from exc
    return _reference(work, doi)


def _reference(work: dict[str, Any], doi: str) -> Reference:
    authors = tuple(
        format_name(a.get("family", ""), a.get("given", "")) if a.get("family") else a["name"]
        for a in work.get("author", ())
        if a.get("family") or a.get("name")
    )
    year = None
    for field in ("published", "issued", "published-print", "published-online"):
        parts = (work.get(field) or {}).get("date-parts") or [[None]]
        if parts and parts[0] and parts[0][0]:
            year = int(parts[0][0])
            break
    return Reference(
        "crossref",
        title=_first(work.get("title")),
        authors=authors,
        year=year,
        doi=normalize_doi(work.get("DOI")) or doi,
        venue=_first(work.get("container-title")) or work.get("publisher"),
    )


def _first(values: Any) -> str | None:
    if isinstance(values, list) and values:
        return " ".join(str(values[0]).split()) or None
    return None
