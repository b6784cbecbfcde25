"""Text clean-up shared by the PDF and plain-text readers.

Ligatures expanded, stray LaTeX accents composed, invisible and control characters
dropped, words hyphenated across line ends joined, whitespace normalised.

>>> normalize_whitespace(dehyphenate(clean_chars("The meth-\\nods  were efﬁcient.")))
'The methods were efficient.'
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Literal

__all__ = [
    "BLANK_TEXT_MESSAGE",
    "GARBLED_FRACTION",
    "GARBLED_MESSAGE",
    "classify_text",
    "clean_chars",
    "dehyphenate",
    "first_line_title",
    "join_pages",
    "markdown_title",
    "normalize_whitespace",
    "page_starts",
    "unmappable_fraction",
    "visible_chars",
]

GARBLED_FRACTION = 0.3
"""A text whose visible characters are more than 30% unmappable (U+FFFD or private-use
code points) is ``garbled``: a model would read noise, not the paper."""
BLANK_TEXT_MESSAGE = "the file contains no text, only whitespace; check that it was saved"
GARBLED_MESSAGE = (
    "garbled text: {fraction:.0%} of the characters cannot be mapped to real letters "
    "(unmappable or private-use code points); rebuild the text layer with OCR "
    "(ocrmypdf --force-ocr input.pdf output.pdf) or export the text again"
)
TextStatus = Literal["ok", "empty", "garbled"]

_LIGATURES = str.maketrans(
    {"ﬀ": "ff", "ﬁ": "fi", "ﬂ": "fl", "ﬃ": "ffi", "ﬄ": "ffl", "ﬅ": "st", "ﬆ": "st"}
)
_LIGATURE_RE = re.compile("[\ufb00-\ufb06]")
# LaTeX PDFs often draw an accent as a spacing glyph beside its letter ("F¨arber", "Go´mez").
_SPACING_ACCENTS = {
    "¨": "\u0308",
    "´": "\u0301",
    "ˆ": "\u0302",
    "˜": "\u0303",
    "˚": "\u030a",
    "¸": "\u0327",
}
_SPACING_ACCENT_RE = re.compile("([A-Za-z]?)([" + "".join(_SPACING_ACCENTS) + "])([A-Za-zı]?)")
_SOFT_HYPHEN_BREAK_RE = re.compile("\u00ad[ \t]*\r?\n[ \t]*")
# Control characters (not \t \n), zero-width spaces, BOM and soft hyphens are dropped.
_DROP_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u00ad\u200b\u2060\ufeff]")
_ASCII_DROP = dict.fromkeys([*range(0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F])
"""``_DROP_RE``'s characters that ASCII has, for ``str.translate`` (a tenth of the time)."""
_SPACE_CHARS = " \t\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000"
# A run of spaces that is not one plain space already: a lone " " is left alone, so the
# regex engine replaces only what changes (most gaps between words are one space).
_SPACES_RE = re.compile(f" [{_SPACE_CHARS}]+|[{_SPACE_CHARS[1:]}][{_SPACE_CHARS}]*")
_BLANK_LINES_RE = re.compile(r"\n{3,}")
_UNMAPPABLE_RE = re.compile("[\ufffd\ue000-\uf8ff\U000f0000-\U000ffffd\U00100000-\U0010fffd]")
_HYPHENS = "-\u2010"
# A word (possibly itself a compound) ending in a hyphen at a line end, then the next word,
# possibly after one blank line (a block or column break).
_LINE_END_HYPHEN_RE = re.compile(
    r"(?<![\w\-\u2010])(\w[\w\-\u2010]*?)[\-\u2010][ \t]*\n(?:[ \t]*\n)?[ \t]*(\w+)"
)


def clean_chars(text: str) -> str:
    """Expand ligatures, compose stray accents, drop control and invisible characters."""
    ascii_only = text.isascii()  # then no ligature, accent or soft hyphen: skip the searches
    if not ascii_only:
        if _LIGATURE_RE.search(text):
            text = text.translate(_LIGATURES)
        if _SPACING_ACCENT_RE.search(text):
            text = _SPACING_ACCENT_RE.sub(_compose_accent, text)
        text = _SOFT_HYPHEN_BREAK_RE.sub("", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if ascii_only:
        return text.translate(_ASCII_DROP)
    return unicodedata.normalize("NFC", _DROP_RE.sub("", text))


def _compose_accent(match: re.Match[str]) -> str:
    """Put a spacing accent on the letter after it, else before it, when that makes a
    Latin-1 letter (ä, é, ñ, ç ...); leave anything else (an apostrophe in "don´t") alone."""
    before, accent, after = match.groups()
    mark = _SPACING_ACCENTS[accent]
    for letter, rest, letter_first in ((after, before, False), (before, after, True)):
        if letter:
            composed = unicodedata.normalize("NFC", letter.replace("ı", "i") + mark)
            if len(composed) == 1 and "\u00c0" <= composed <= "\u00ff":
                return composed + rest if letter_first else rest + composed
    return match.group(0)


def dehyphenate(text: str, document: str = "") -> str:
    """Join words split by a hyphen at a line end: ``"meth-\\nods"`` -> ``"methods"``.

    ``document`` is the whole paper, lower-cased: when it writes one form within a line
    (``l-tryptophan`` or ``self-reported``), that form wins. Otherwise the hyphen goes,
    except after a compound (``state-of-the-\\nart``). It always stays when the next part
    does not start with a lower-case letter (``EF-\\n1A``).
    """

    def join(match: re.Match[str]) -> str:
        first, second = match.group(1), match.group(2)
        hyphenated, joined = f"{first}-{second}", first + second
        if not first[-1].isalpha() or not second[0].islower():
            return hyphenated
        has_hyphenated = hyphenated.lower() in document
        has_joined = joined.lower() in document
        if has_hyphenated != has_joined:
            return hyphenated if has_hyphenated else joined
        return hyphenated if any(h in first for h in _HYPHENS) else joined

    return _LINE_END_HYPHEN_RE.sub(join, text)


def normalize_whitespace(text: str) -> str:
    """One space between words, no trailing spaces, at most one blank line in a row."""
    if not text.isascii() or "  " in text or "\t" in text:  # else every gap is one space
        text = _SPACES_RE.sub(" ", text)
    text = "\n".join(line.strip() for line in text.split("\n"))
    if "\n\n\n" in text:
        text = _BLANK_LINES_RE.sub("\n\n", text)
    return text.strip()


PAGE_SEPARATOR = "\n\n"


def join_pages(pages: Sequence[str]) -> str:
    """The full text: non-empty pages separated by a blank line."""
    return PAGE_SEPARATOR.join(page for page in pages if page)


def page_starts(pages: Sequence[str]) -> tuple[int, ...]:
    """Where each page starts in ``join_pages(pages)``, as character offsets.

    An empty page (left out of the text) starts where the next non-empty page does, so an
    offset always falls on a page that has text.

    >>> page_starts(["Intro", "", "Methods"])
    (0, 7, 7)
    """
    starts: list[int] = []
    offset = 0
    for page in pages:
        starts.append(offset)
        if page:
            offset += len(page) + len(PAGE_SEPARATOR)
    end = max(0, offset - len(PAGE_SEPARATOR))
    return tuple(min(start, end) for start in starts)


def visible_chars(text: str) -> int:
    """How many characters are not spaces, tabs or newlines."""
    return len(text) - sum(text.count(c) for c in " \n\t")


def unmappable_fraction(text: str) -> float:
    """Share of the visible characters that are U+FFFD or private-use code points."""
    visible = visible_chars(text)
    if not visible or text.isascii():  # no U+FFFD nor private use in ASCII
        return 0.0
    return len(_UNMAPPABLE_RE.findall(text)) / visible


def classify_text(text: str) -> tuple[TextStatus, str]:
    """``empty`` for whitespace, ``garbled`` for mostly unmappable text, else ``ok``."""
    if not text.strip():
        return "empty", BLANK_TEXT_MESSAGE
    fraction = unmappable_fraction(text)
    if fraction > GARBLED_FRACTION:
        return "garbled", GARBLED_MESSAGE.format(fraction=fraction)
    return "ok", ""


def markdown_title(text: str) -> str | None:
    match = re.search(r"^#[ \t]+(.+?)[ \t#]*$", text[:5000], flags=re.MULTILINE)
    return match.group(1).strip() if match else None


def first_line_title(text: str, *, default: str) -> str:
    for line in text.split("\n"):
        line = line.strip(" #*_>-=")
        if line:
            return line if len(line) <= 150 else line[:149].rstrip() + "…"
    return default
