"""An emulated Crossref REST API: ``GET /works/{doi}`` in Crossref's documented JSON.

A known DOI (case does not matter, as in Crossref) answers ``{"status": "ok",
"message-type": "work", "message-version": "1.0.0", "message": {...}}`` with ``DOI``,
``title`` and ``container-title`` (lists), ``author`` (``given``, ``family``,
``sequence``, ``affiliation``), ``published`` / ``issued`` (``date-parts``), ``publisher``,
``type`` and ``URL``; an unknown one answers 404 ``Resource not found.`` as Crossref does.

>>> crossref = FakeCrossref()
>>> crossref.add_work("10.7717/peerj-cs.118", title="VESPA", authors=["Andrew E. Webb"],
...                   year=2017, venue="PeerJ Computer Science")
>>> with crossref:
...     enrich(papers, url=crossref.url)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiohttp import web

from ._service import LoopbackService

__all__ = ["FakeCrossref"]


class FakeCrossref(LoopbackService):
    """Crossref's ``/works/{doi}`` on loopback; ``add_work`` adds a record."""

    name = "crossref"

    def __init__(self, *, port: int = 0) -> None:
        super().__init__(port=port)
        self.works: dict[str, dict[str, Any]] = {}

    def add_work(
        self,
        doi: str,
        *,
        title: str,
        authors: Sequence[str] = (),
        year: int | None = None,
        venue: str = "",
        publisher: str = "",
        work_type: str = "journal-article",
    ) -> None:
        date = {"date-parts": [[year]]} if year else {"date-parts": [[None]]}
        self.works[doi.lower()] = {
            "DOI": doi.lower(),
            "type": work_type,
            "title": [title],
            "container-title": [venue] if venue else [],
            "publisher": publisher,
            "author": [_author(name, i) for i, name in enumerate(authors)],
            "published": date,
            "issued": date,
            "URL": f"https://doi.org/{doi.lower()}",
            "reference-count": 0,
        }

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/works/{doi:.+}", self._work)

    async def _work(self, request: web.Request) -> web.Response:
        work = self.works.get(request.match_info["doi"].lower())
        if work is None:
            return web.Response(status=404, text="Resource not found.")
        return web.json_response(
            {"status": "ok", "message-type": "work", "message-version": "1.0.0", "message": work}
        )


def _author(name: str, index: int) -> dict[str, Any]:
    given, _, family = name.rpartition(" ")
    return {
        "given": given,
        "family": family,
        "sequence": "first" if index == 0 else "additional",
        "affiliation": [],
    }
