"""Reference metadata of a paper: title, authors, year, DOI, venue, citation key, and where
each came from.

Each origin gives a :class:`Reference`; :func:`merge` keeps, field by field, the value from
the best origin (``ORIGIN_RANK``): the reference library the paper came from (``bibtex``,
``ris``, ``zotero``), then Crossref (only when asked for), then the PDF's own metadata
(``pdf_metadata``), a DOI printed on its first pages (``pdf_text``), the first page's
layout (``first_page``: the largest font is the title, the names under it the authors), and
last the file name. :class:`Sources` records the winner of each field.

The PDF side (:func:`pdf_references`) works on what ``pdf.py`` already extracted while the
document was open: its metadata dict, the first page's text dict and the first pages'
blocks, so a PDF is read once. The first page's layout is read in ``first_page.py``.

>>> refs = pdf_references(doc.metadata, page_dict, first_pages)
>>> fields, sources = merge(refs)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from .doi import DOI_RE, PageBlocks, first_page_doi, normalize_doi, trim_doi
from .first_page import heading_authors, heading_title
from .text import clean_chars, unmappable_fraction

__all__ = [
    "META_FIELDS",
    "ORIGIN_RANK",
    "Reference",
    "Sources",
    "format_name",
    "meaningful_authors",
    "meaningful_title",
    "merge",
    "normalize_doi",
    "pdf_references",
    "split_authors",
    "year_in",
]

ORIGIN_RANK = {
    "given": 0,
    "bibtex": 0,
    "ris": 0,
    "zotero": 0,
    "crossref": 1,
    "pdf_metadata": 2,
    "pdf_text": 3,
    "first_page": 4,
    "file_name": 5,
}
"""Lower wins: which origin's value a paper keeps when several give the same field."""

META_FIELDS = ("title", "authors", "year", "doi", "venue", "key")


@dataclass(frozen=True)
class Reference:
    """The metadata one origin gives for one paper; empty fields are ``None`` or ``()``."""

    origin: str
    title: str | None = None
    authors: tuple[str, ...] = ()
    year: int | None = None
    doi: str | None = None
    venue: str | None = None
    key: str | None = None


@dataclass(frozen=True)
class Sources:
    """Where each metadata field of a paper came from (an origin of ``ORIGIN_RANK``), or
    ``None`` when the field is empty.

    >>> str(paper.source)
    'bibtex: title, authors, year, doi, venue, key'
    """

    title: str | None = None
    authors: str | None = None
    year: str | None = None
    doi: str | None = None
    venue: str | None = None
    key: str | None = None

    def __str__(self) -> str:
        groups: dict[str, list[str]] = {}
        for name in META_FIELDS:
            origin = getattr(self, name)
            if origin is not None:
                groups.setdefault(origin, []).append(name)
        return "; ".join(f"{origin}: {', '.join(names)}" for origin, names in groups.items())


def merge(
    references: Sequence[Reference],
    current: Mapping[str, Any] | None = None,
    sources: Sources | None = None,
) -> tuple[dict[str, Any], Sources]:
    """Field by field, the value of the best-ranked origin among ``references`` (and the
    ``current`` values, whose origins are ``sources``). Returns the values and their sources.
    """
    values: dict[str, Any] = {name: (current or {}).get(name) for name in META_FIELDS}
    origins: dict[str, str | None] = {
        f.name: getattr(sources, f.name) if sources else None for f in fields(Sources)
    }
    for ref in references:
        rank = ORIGIN_RANK[ref.origin]
        for name in META_FIELDS:
            value = getattr(ref, name)
            if value in (None, (), ""):
                continue
            held = origins[name]
            if held is None or rank < ORIGIN_RANK[held]:
                values[name], origins[name] = value, ref.origin
    values["authors"] = values["authors"] or ()
    return values, Sources(**origins)


# ---------------------------------------------------------------- names, years, DOIs

_YEAR_RE = re.compile(r"(?<!\d)(1[89]\d\d|20\d\d)(?!\d)")
_ET_AL_RE = re.compile(r"[{(]?\bet\.? al\.?[})]?", re.IGNORECASE)


def year_in(text: str | None) -> int | None:
    """The first plausible year (1800-2099) in ``text``."""
    match = _YEAR_RE.search(text or "")
    return int(match.group(1)) if match else None


def format_name(last: str, first: str = "", von: str = "", jr: str = "") -> str:
    """``First von Last, Jr`` from a name's parts."""
    name = " ".join(part for part in (first, von, last) if part)
    return f"{name}, {jr}" if jr else name


def split_authors(raw: str | None) -> tuple[str, ...]:
    """Authors out of one string: ``;``-separated, comma-separated, or ``Last, First``."""
    if not raw:
        return ()
    text = " ".join(_ET_AL_RE.sub("", clean_chars(raw)).split()).strip(" ,;")
    if not text:
        return ()
    if ";" in text:
        parts = text.split(";")
    else:
        parts = re.split(r",|\band\b|&", text)
        pieces = [p.strip() for p in text.split(",")]
        if len(pieces) == 2 and len(pieces[0].split()) == 1 and len(pieces[1].split()) <= 2:
            parts = [f"{pieces[1]} {pieces[0]}"]  # "McVey, Mitch"
    return tuple(name for name in (" ".join(p.split()) for p in parts) if name)


# ---------------------------------------------------------------- the PDF's own metadata

_PLACEHOLDER_TITLE_RE = re.compile(
    r"^(untitled|title|no title|document\d*|slide \d+|layout \d+|page \d+|pii:.*|doi:.*"
    r"|microsoft (word|powerpoint|excel) - .*)$",
    re.IGNORECASE,
)
_FILE_NAME_RE = re.compile(
    r"\.(docx?|pdf|tex|dvi|rtf|odt|txt|indd|qxd|qxp|ps|eps|pages|wpd|xml)$", re.IGNORECASE
)
_PLACEHOLDER_AUTHORS = {
    "admin",
    "administrator",
    "anonymous",
    "author",
    "authors",
    "microsoft office user",
    "owner",
    "unknown",
    "user",
    "windows user",
}


def meaningful_title(raw: str | None) -> str | None:
    """The metadata title, unless it is empty, a placeholder or a file name."""
    if not raw:
        return None
    title = " ".join(clean_chars(raw).split())
    letters = sum(c.isalpha() for c in title)
    if (
        _PLACEHOLDER_TITLE_RE.match(title)
        or _FILE_NAME_RE.search(title)
        or letters < 4
        or letters < 0.5 * len(title.replace(" ", ""))  # e.g. "6489122611071476 1..10"
        or (" " not in title and any(c.isdigit() for c in title))  # e.g. "jcm-10-01234"
        or unmappable_fraction(title) > 0.1
    ):
        return None
    return title


def meaningful_authors(raw: str | None) -> tuple[str, ...]:
    """The metadata authors, unless empty or a placeholder such as "Administrator"."""
    if not raw:
        return ()
    authors = " ".join(clean_chars(raw).split()).strip(" ,;")
    if authors.lower() in _PLACEHOLDER_AUTHORS or not any(c.isalpha() for c in authors):
        return ()
    return split_authors(authors)


# ---------------------------------------------------------------- all PDF origins together


def pdf_references(
    metadata: Mapping[str, Any],
    first_page: Callable[[], dict[str, Any] | None],
    first_pages: Sequence[PageBlocks],
) -> list[Reference]:
    """What a PDF says about itself: its metadata, a DOI printed on its first pages, and
    the first page's title and authors. ``first_page()`` gives the first page's text dict;
    it is called only when the metadata lacks the title or names fewer than two authors
    (the dict costs about as much as reading a page)."""
    subject = str(metadata.get("subject") or "")
    keywords = str(metadata.get("keywords") or "")
    listed = meaningful_authors(metadata.get("author"))
    embedded = Reference(
        "pdf_metadata",
        title=meaningful_title(metadata.get("title")),
        authors=listed,
        year=year_in(subject),
        doi=_doi_in(subject) or _doi_in(keywords),
    )
    printed = Reference("pdf_text", doi=first_page_doi(first_pages))
    page = first_page() if embedded.title is None or len(listed) < 2 else None
    if page is None:
        return [embedded, printed]
    names = heading_authors(page)
    if len(listed) == 1 and len(names) > 1 and _same_person(listed[0], names):
        # Publishers often list only the first (or the corresponding) author.
        embedded = replace(embedded, authors=())
    layout = Reference("first_page", title=heading_title(page), authors=names)
    return [embedded, printed, layout]


def _doi_in(text: str) -> str | None:
    match = DOI_RE.search(text)
    return trim_doi(match.group(0)) if match else None


def _same_person(name: str, names: Sequence[str]) -> bool:
    words = {w.lower().strip(",.") for w in name.split() if len(w) > 1}
    return any(words & {w.lower().strip(",.") for w in other.split()} for other in names)
