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
blocks, so a PDF is read once.

>>> refs = pdf_references(doc.metadata, page_dict, first_pages)
>>> fields, sources = merge(refs)
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from .text import clean_chars, dehyphenate, unmappable_fraction

__all__ = [
    "META_FIELDS",
    "ORIGIN_RANK",
    "PageBlocks",
    "Reference",
    "Sources",
    "first_page_doi",
    "format_name",
    "heading_title",
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

_DOI_RE = re.compile(r"10\.\d{4,9}/[-._;()/:<>\[\]A-Za-z0-9]+")
_DOI_PREFIX_RE = re.compile(r"^(https?://(dx\.)?doi\.org/|doi:\s*)", re.IGNORECASE)
_YEAR_RE = re.compile(r"(?<!\d)(1[89]\d\d|20\d\d)(?!\d)")
_ET_AL_RE = re.compile(r"[{(]?\bet\.? al\.?[})]?", re.IGNORECASE)


def normalize_doi(raw: str | None) -> str | None:
    """``10.1234/abc`` out of a DOI, a ``doi:`` label or a doi.org URL; None if not a DOI."""
    if not raw:
        return None
    text = _DOI_PREFIX_RE.sub("", raw.strip())
    match = _DOI_RE.match(text)
    return _trim_doi(match.group(0)) if match else None


def _trim_doi(doi: str) -> str | None:
    doi = doi.rstrip(".,;:'\"")
    while doi.endswith((")", "]", ">")) and doi.count(doi[-1]) > doi.count(
        {")": "(", "]": "[", ">": "<"}[doi[-1]]
    ):
        doi = doi[:-1].rstrip(".,;:")
    suffix = doi.partition("/")[2]
    return doi if len(suffix) >= 2 else None


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


# ---------------------------------------------------------------- a DOI on the first pages


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
            for match in _DOI_RE.finditer(text):
                doi = _trim_doi(match.group(0))
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


# ---------------------------------------------------------------- the first page's layout

# Article-type labels set as large as the title on some journals' first pages.
_LABEL_RE = re.compile(
    r"^((original|research|review|short|brief|case|clinical|technical)\s+)?"
    r"(article|paper|report|communication|letter|review|note|open access)s?$",
    re.IGNORECASE,
)
_FOOTNOTE_MARKS = " *∗†‡§¶"
_MARKS = "*∗†‡§¶☯#♠♢♡♣✉"
_NOT_A_NAME_RE = re.compile(
    r"\b(universit|institut|department|dept|college|school|center|centre|hospital|laborator"
    r"|abstract|received|accepted|correspondence|edited|editor|inc|ltd|gmbh|faculty|group)",
    re.IGNORECASE,
)
_PARTICLES = {"van", "von", "de", "der", "den", "da", "di", "del", "la", "le", "du", "dos", "y"}


@dataclass(frozen=True)
class _Line:
    size: float
    x0: float
    y0: float
    y1: float
    text: str


def heading_title(page_dict: dict[str, Any]) -> str | None:
    """The first page's largest-font line(s), from ``page.get_text("dict")``."""
    rows = _title_rows(_horizontal_lines(page_dict))
    if not rows:
        return None
    joined = "\n".join(" ".join(ln.text for ln in row) for row in rows)
    title = " ".join(dehyphenate(joined).split()).strip(_FOOTNOTE_MARKS)
    if len(title) > 300:
        title = title[:299].rstrip() + "…"
    return title or None


def heading_authors(page_dict: dict[str, Any]) -> tuple[str, ...]:
    """The names printed under the title: the next rows in one smaller font, split at
    commas and "and", superscript affiliation marks dropped. Empty when they do not all
    look like names (an affiliation, a date, an e-mail)."""
    lines = _horizontal_lines(page_dict, drop_superscripts=True)
    rows = _title_rows(lines)
    if not rows:
        return ()
    title_size, bottom = rows[0][0].size, max(ln.y1 for ln in rows[-1])
    below = sorted((ln for ln in lines if ln.y0 >= bottom - 1), key=lambda ln: (ln.y0, ln.x0))
    if not below or below[0].size >= title_size - 0.5 or below[0].y0 - bottom > 4 * title_size:
        return ()
    size, last, joined, boxes = below[0].size, below[0], below[0].text, 1
    for line in below[1:]:
        if abs(line.size - size) > 0.6 or line.y0 - last.y0 > 1.5 * size:
            break
        if abs(line.y0 - last.y0) < 0.3 * size:  # one name per box, side by side
            joined, boxes = f"{joined}, {line.text}", boxes + 1
        else:  # a new row: a name in running text may wrap to it
            joined, boxes = f"{joined}{', ' if boxes > 1 else ' '}{line.text}", 1
        last = line
    names: list[str] = []
    for part in re.split(r",|;|\band\b|&", joined):
        name = " ".join(part.strip(_MARKS + " ").split()).rstrip(_MARKS + "0123456789 ")
        if not name:
            continue
        if not _looks_like_a_name(name):
            break
        names.append(name)
    return tuple(names) if len(names) >= 1 else ()


def _looks_like_a_name(text: str) -> bool:
    words = text.split()
    if not 2 <= len(words) <= 5 or _NOT_A_NAME_RE.search(text) or "@" in text:
        return False
    return all(
        w.lower() in _PARTICLES or (w[0].isupper() and not any(c.isdigit() for c in w))
        for w in words
    )


def _title_rows(lines: list[_Line]) -> list[list[_Line]]:
    if not lines:
        return []
    top = max(line.size for line in lines)
    largest = sorted((ln for ln in lines if ln.size >= top - 0.5), key=lambda ln: (ln.y0, ln.x0))
    rows: list[list[_Line]] = [[largest[0]]]
    for line in largest[1:]:
        previous = rows[-1][-1]
        if abs(line.y0 - previous.y0) < 0.3 * top:  # same row
            rows[-1].append(line)
        elif line.y0 - previous.y1 < 0.8 * top and len(rows) < 5:  # the title's next line
            rows.append([line])
        else:
            break
    return rows


def _horizontal_lines(page_dict: dict[str, Any], *, drop_superscripts: bool = False) -> list[_Line]:
    lines: list[_Line] = []
    for block in page_dict.get("blocks", ()):
        for line in block.get("lines", ()):
            dx, dy = line["dir"]
            spans = [s for s in line["spans"] if s["text"].strip()]
            if dx <= 0 or abs(dy) > 0.01 or not spans:
                continue
            size = max(s["size"] for s in spans)
            kept = line["spans"]
            if drop_superscripts:  # affiliation marks: superscript flag, or a smaller size
                kept = [
                    s if not s["flags"] & 1 and s["size"] >= 0.8 * size else {"text": " "}
                    for s in kept
                ]
            text = " ".join(clean_chars("".join(s["text"] for s in kept)).split())
            if sum(c.isalpha() for c in text) < 3 or _LABEL_RE.match(text):
                continue
            x0, y0, _, y1 = line["bbox"]
            lines.append(_Line(size, x0, y0, y1, text))
    return lines


# ---------------------------------------------------------------- all PDF origins together


def pdf_references(
    metadata: Mapping[str, Any],
    first_page: dict[str, Any] | None,
    first_pages: Sequence[PageBlocks],
) -> list[Reference]:
    """What a PDF says about itself: its metadata, a DOI printed on its first pages, and
    the first page's title and authors."""
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
    if first_page is None:
        return [embedded, printed]
    names = heading_authors(first_page)
    if len(listed) == 1 and len(names) > 1 and _same_person(listed[0], names):
        # Publishers often list only the first (or the corresponding) author.
        embedded = replace(embedded, authors=())
    layout = Reference("first_page", title=heading_title(first_page), authors=names)
    return [embedded, printed, layout]


def _doi_in(text: str) -> str | None:
    match = _DOI_RE.search(text)
    return _trim_doi(match.group(0)) if match else None


def _same_person(name: str, names: Sequence[str]) -> bool:
    words = {w.lower().strip(",.") for w in name.split() if len(w) > 1}
    return any(words & {w.lower().strip(",.") for w in other.split()} for other in names)
