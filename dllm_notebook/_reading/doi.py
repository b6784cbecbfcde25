"""DOIs: the standard pattern, cleaning one up, and finding the paper's own DOI on its
first pages (not a cited work's).

>>> normalize_doi("https://doi.org/10.1038/s41467-024-44806-1")
'10.1038/s41467-024-44806-1'
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["DOI_RE", "PageBlocks", "first_page_doi", "normalize_doi", "trim_doi"]

DOI_RE = re.compile(r"10\.\d{4,9}/[-._;()/:<>\[\]A-Za-z0-9]+")
_DOI_PREFIX_RE = re.compile(r"^(https?://(dx\.)?doi\.org/|doi:\s*)", re.IGNORECASE)


def normalize_doi(raw: str | None) -> str | None:
    """``10.1234/abc`` out of a DOI, a ``doi:`` label or a doi.org URL; None if not a DOI."""
    if not raw:
        return None
    text = _DOI_PREFIX_RE.sub("", raw.strip())
    match = DOI_RE.match(text)
    return trim_doi(match.group(0)) if match else None


def trim_doi(doi: str) -> str | None:
    doi = doi.rstrip(".,;:'\"")
    while doi.endswith((")", "]", ">")) and doi.count(doi[-1]) > doi.count(
        {")": "(", "]": "[", ">": "<"}[doi[-1]]
    ):
        doi = doi[:-1].rstrip(".,;:")
    suffix = doi.partition("/")[2]
    return doi if len(suffix) >= 2 else None


@dataclass(frozen=True)
class PageBlocks:
    """One page's text blocks with their vertical extent: ``(y0, y1, text)``."""

    height: float
    blocks: tuple[tuple[float, float, str], ...] = field(default=())


_REFERENCES_HEADING_RE = re.compile(
    r"^\s*(\d+\.?\s*)?(references|bibliography|literature cited|works cited)\s*$", re.IGNORECASE
)
_MARGIN = 0.12
"""The top and bottom 12% of a page: where running heads and footers print the DOI."""


def first_page_doi(pages: Sequence[PageBlocks]) -> str | None:
    """The paper's own DOI as printed on its first page (confirmed by the second's header).

    A DOI counts when it is in the page's header or footer, or labelled (``doi:``,
    ``DOI``, ``https://doi.org/``) on the first page; never after a References heading,
    never one cut by a line break, and never one that is the start of a longer DOI found
    too. The most frequent wins, so a cited work's DOI loses to the paper's running footer.
    """
    found: dict[str, int] = {}
    for number, page in enumerate(pages[:2]):
        for y0, y1, text in page.blocks:
            if _REFERENCES_HEADING_RE.match(text.splitlines()[0] if text.strip() else ""):
                return _best(found)
            margin = y1 <= _MARGIN * page.height or y0 >= (1 - _MARGIN) * page.height
            for match in DOI_RE.finditer(text):
                doi = trim_doi(match.group(0))
                if doi is None or _cut_by_line_break(text, match):
                    continue
                labelled = "doi" in text[max(0, match.start() - 12) : match.start()].lower()
                if margin or (number == 0 and labelled):
                    found[doi] = found.get(doi, 0) + 1 + 2 * margin + labelled
    return _best(found)


def _cut_by_line_break(text: str, match: re.Match[str]) -> bool:
    after = text[match.end() : match.end() + 3]
    return match.group(0)[-1] in "./-" and bool(re.match(r"[\u200b\s]*\n\s*\w", after))


def _best(found: dict[str, int]) -> str | None:
    whole = {
        doi: score
        for doi, score in found.items()
        if not any(o != doi and o.lower().startswith(doi.lower()) for o in found)
    }
    return max(whole, key=lambda doi: whole[doi]) if whole else None
