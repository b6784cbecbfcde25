"""The first page's layout: the title (the largest font) and the authors (the names in
one smaller font under it), from the ``get_text("dict")`` that ``pdf.py`` already made.

>>> heading_title(page.get_text("dict"))
'S2ORC: The Semantic Scholar Open Research Corpus'
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .text import clean_chars, dehyphenate

__all__ = ["heading_authors", "heading_title"]

# ---------------------------------------------------------------- a DOI on the first pages


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
