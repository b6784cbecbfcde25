"""Reading one PDF with PyMuPDF: text in reading order, a title, and a status for bad files.

PyMuPDF is the ``[pdf]`` extra and is imported only when a PDF is read, so that
``import dllm_notebook`` stays light.

>>> paper = read_pdf("papers/s2orc.pdf")
>>> paper.status, paper.title, paper.page_count
('ok', 'S2ORC: The Semantic Scholar Open Research Corpus', 15)

Choices measured on the shared corpus (docs/performance.md):

* Text comes in the content stream's order (``get_text("blocks")`` without ``sort``). On
  two-column papers that follows the columns; ``sort=True`` interleaves them.
* Ligatures are expanded (``TEXT_PRESERVE_LIGATURES`` off) and unmappable glyphs come out
  as U+FFFD (``TEXT_CID_FOR_UNKNOWN_UNICODE`` off), one way ``garbled`` is detected.
* A text layer whose characters are not the printed ones (a Type 3 font without a Unicode
  map reads as its raw codes) is found page by page (``language.py``). When more than half
  of the judged pages are symbol soup the paper is ``garbled`` and the message names them;
  fewer are left out of the text (blank pages), and the message of the ``ok`` paper says
  which, so no noise reaches the model.
* Words hyphenated across line ends are joined, except compounds ("state-of-the-\\nart"),
  a next part that is not lower case ("EF-\\n1A"), and words the paper itself writes with a
  hyphen elsewhere.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from .._errors import DllmError
from .language import garbled_pages, page_ranges
from .paper import (
    EMPTY_FILE_MESSAGE,
    Paper,
    PaperStatus,
    failed_paper,
    unreadable_message,
)
from .text import (
    GARBLED_FRACTION,
    GARBLED_MESSAGE,
    clean_chars,
    dehyphenate,
    join_pages,
    normalize_whitespace,
    unmappable_fraction,
    visible_chars,
)

__all__ = ["read_pdf", "require_pymupdf"]

INSTALL_HINT = "install the pdf extra: pip install 'dllm-notebook[pdf]'"
MIN_CHARS_PER_PAGE = 100
"""Fewer visible characters than this per page, on average, means ``no_text``."""

NO_TEXT_MESSAGE = (
    "no text layer: this looks like a scanned PDF; run OCR first "
    "(ocrmypdf input.pdf output.pdf) and load the OCR'd copy"
)
_QPDF = "or remove the password with qpdf (qpdf --password=PASSWORD --decrypt in.pdf out.pdf)"
ENCRYPTED_MESSAGE = (
    "encrypted: it needs a password to open; pass it as load_papers(..., password='...') "
    f"or read_pdf(path, password='...'), {_QPDF}"
)
WRONG_PASSWORD_MESSAGE = (
    f"encrypted: the password given does not open it; check the password, {_QPDF}"
)
CORRUPT_MESSAGE = "damaged or not a PDF (PyMuPDF: {error}); re-download it"
TRUNCATED_MESSAGE = (
    "damaged: no page could be recovered (it looks truncated, like an interrupted "
    "download); re-download it"
)
NOT_PDF_MESSAGE = (
    "not a PDF: it starts with {start!r}, not %PDF (a web page saved under a .pdf name?); "
    "re-download it"
)
NO_PAGES_MESSAGE = "the PDF has no pages; re-export or re-download it"
GARBLED_LAYER_MESSAGE = (
    "garbled text layer: pages {pages} of {count} read as symbols, not words (a font "
    "without a Unicode map, e.g. from an old Ghostscript); re-OCR this file "
    "(ocrmypdf --force-ocr input.pdf output.pdf) and load the OCR'd copy"
)
DROPPED_PAGES_MESSAGE = (
    "{pages} a garbled text layer (symbols, not words), left out of the text; "
    "re-OCR this file (ocrmypdf --force-ocr input.pdf output.pdf) to include them"
)
REPAIRED_MESSAGE = (
    "the PDF was damaged and repaired when opened; some text may be missing: "
    "re-download it if answers look incomplete"
)


def require_pymupdf() -> ModuleType:
    """Import PyMuPDF, or raise a DllmError that says how to install it."""
    try:
        import pymupdf
    except ImportError as exc:
        raise DllmError(
            f"reading PDFs needs PyMuPDF, which is not installed; {INSTALL_HINT}"
        ) from exc
    return pymupdf


def read_pdf(path: str | os.PathLike[str], *, password: str | None = None) -> Paper:
    """Read one PDF. A damaged, encrypted or scanned file comes back with its status.

    >>> read_pdf("locked.pdf").status
    'encrypted'
    >>> read_pdf("locked.pdf", password="s3cret").ok
    True
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise DllmError(f"no such PDF file: {str(file)!r}; check the path")
    pymupdf = require_pymupdf()
    try:
        data = file.read_bytes()
    except OSError as exc:
        return failed_paper(file, "corrupt", unreadable_message(exc))
    digest = hashlib.sha256(data).hexdigest()
    if not data:
        return failed_paper(file, "empty", EMPTY_FILE_MESSAGE, sha256=digest)
    if b"%PDF" not in data[:1024]:
        return failed_paper(file, "corrupt", NOT_PDF_MESSAGE.format(start=data[:20]), sha256=digest)
    try:
        doc = pymupdf.open(stream=data, filetype="pdf")
    except Exception as exc:
        return failed_paper(file, "corrupt", CORRUPT_MESSAGE.format(error=exc), sha256=digest)
    with doc:
        return _read_document(pymupdf, doc, file, digest, password)


def _read_document(
    pymupdf: ModuleType, doc: Any, file: Path, digest: str, password: str | None
) -> Paper:
    if doc.needs_pass:
        if password is None:
            return failed_paper(file, "encrypted", ENCRYPTED_MESSAGE, sha256=digest)
        if not doc.authenticate(password):
            return failed_paper(file, "encrypted", WRONG_PASSWORD_MESSAGE, sha256=digest)
    # Never index a document without checking page_count: in PyMuPDF 2, doc[-1] on a
    # 0-page document (what a truncated file "repairs" into) does not return.
    count: int = doc.page_count
    if count == 0:
        if doc.is_repaired:
            return failed_paper(file, "corrupt", TRUNCATED_MESSAGE, sha256=digest)
        return failed_paper(file, "empty", NO_PAGES_MESSAGE, sha256=digest)
    flags = pymupdf.TEXT_MEDIABOX_CLIP
    raw_pages: list[str] = []
    failed_pages = 0
    for number in range(count):
        try:
            blocks = doc.load_page(number).get_text("blocks", flags=flags)
        except Exception:
            failed_pages += 1
            blocks = []
        raw_pages.append("\n\n".join(block[4] for block in blocks if block[6] == 0))
    cleaned = [clean_chars(page) for page in raw_pages]
    document = "\n".join(cleaned).lower()
    pages = tuple(normalize_whitespace(dehyphenate(page, document)) for page in cleaned)
    garbled, judged = garbled_pages(pages)
    if garbled and len(garbled) <= judged / 2:
        # A few bad pages: keep the rest, leave the noise out, and say which pages.
        pages = tuple("" if number in garbled else page for number, page in enumerate(pages))
    text = join_pages(pages)
    status, message = _classify(text, count)
    if status == "ok" and garbled:
        if len(garbled) > judged / 2:
            status = "garbled"
            message = GARBLED_LAYER_MESSAGE.format(pages=page_ranges(garbled), count=count)
        else:
            which = f"page {garbled[0] + 1} has" if len(garbled) == 1 else "pages {} have"
            message = DROPPED_PAGES_MESSAGE.format(pages=which.format(page_ranges(garbled)))
    if status == "ok" and (doc.is_repaired or failed_pages):
        message = "; ".join(m for m in (message, REPAIRED_MESSAGE) if m)
    metadata = doc.metadata or {}
    title = meaningful_title(metadata.get("title"))
    if title is None and 0 not in garbled:
        try:
            title = heading_title(doc.load_page(0).get_text("dict", flags=flags))
        except Exception:
            title = None
    return Paper(
        name=file.name,
        path=file,
        title=title or file.stem,
        authors=meaningful_authors(metadata.get("author")),
        text=text,
        pages=pages,
        page_count=count,
        sha256=digest,
        status=status,
        message=message,
    )


def _classify(text: str, page_count: int) -> tuple[PaperStatus, str]:
    visible = visible_chars(text)
    fraction = unmappable_fraction(text)
    if visible >= MIN_CHARS_PER_PAGE and fraction > GARBLED_FRACTION:
        return "garbled", GARBLED_MESSAGE.format(fraction=fraction)
    if visible * (1 - fraction) < MIN_CHARS_PER_PAGE * page_count:
        return "no_text", NO_TEXT_MESSAGE
    return "ok", ""


# ---------------------------------------------------------------- title and authors

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
# Article-type labels set as large as the title on some journals' first pages.
_LABEL_RE = re.compile(
    r"^((original|research|review|short|brief|case|clinical|technical)\s+)?"
    r"(article|paper|report|communication|letter|review|note|open access)s?$",
    re.IGNORECASE,
)
_FOOTNOTE_MARKS = " *∗†‡§¶"


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


def meaningful_authors(raw: str | None) -> str | None:
    """The metadata author, unless it is empty or a placeholder such as "Administrator"."""
    if not raw:
        return None
    authors = " ".join(clean_chars(raw).split()).strip(" ,;")
    if authors.lower() in _PLACEHOLDER_AUTHORS or not any(c.isalpha() for c in authors):
        return None
    return authors.replace(" ;", ";")


@dataclass(frozen=True)
class _Line:
    size: float
    x0: float
    y0: float
    y1: float
    text: str


def heading_title(page_dict: dict[str, Any]) -> str | None:
    """The first page's largest-font line(s), from ``page.get_text("dict")``."""
    lines = _horizontal_lines(page_dict)
    if not lines:
        return None
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
    joined = "\n".join(" ".join(ln.text for ln in row) for row in rows)
    title = " ".join(dehyphenate(joined).split()).strip(_FOOTNOTE_MARKS)
    if len(title) > 300:
        title = title[:299].rstrip() + "…"
    return title or None


def _horizontal_lines(page_dict: dict[str, Any]) -> list[_Line]:
    lines: list[_Line] = []
    for block in page_dict.get("blocks", ()):
        for line in block.get("lines", ()):
            dx, dy = line["dir"]
            spans = [s for s in line["spans"] if s["text"].strip()]
            if dx <= 0 or abs(dy) > 0.01 or not spans:
                continue
            text = " ".join(clean_chars("".join(s["text"] for s in line["spans"])).split())
            if sum(c.isalpha() for c in text) < 3 or _LABEL_RE.match(text):
                continue
            x0, y0, _, y1 = line["bbox"]
            lines.append(_Line(max(s["size"] for s in spans), x0, y0, y1, text))
    return lines
