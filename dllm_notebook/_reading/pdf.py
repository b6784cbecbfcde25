"""Reading one PDF with PyMuPDF: text in reading order, a title, and a status for bad files.

PyMuPDF is a dependency, imported only when a PDF is read, so that
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
from pathlib import Path
from types import ModuleType
from typing import Any

from .._errors import DllmError
from .doi import PageBlocks
from .language import garbled_pages, page_ranges
from .metadata import Reference, merge, pdf_references
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

INSTALL_HINT = "reinstall it: pip install --force-reinstall pymupdf (a dependency of dllm-notebook)"
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
            f"reading PDFs needs PyMuPDF, which could not be imported; {INSTALL_HINT}"
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
    first_pages: list[PageBlocks] = []  # for the DOI printed on them
    failed_pages = 0
    for number in range(count):
        try:
            page = doc.load_page(number)
            blocks = page.get_text("blocks", flags=flags)
        except Exception:
            failed_pages += 1
            blocks = []
        text_blocks = [block for block in blocks if block[6] == 0]
        if number < 2 and blocks:
            spans = tuple((b[1], b[3], clean_chars(b[4])) for b in text_blocks)
            first_pages.append(PageBlocks(page.rect.height, spans))
        raw_pages.append("\n\n".join(block[4] for block in text_blocks))
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

    def first_page() -> dict[str, Any] | None:
        if 0 in garbled:  # a garbled first page supplies no title or authors
            return None
        try:
            page: dict[str, Any] = doc.load_page(0).get_text("dict", flags=flags)
        except Exception:
            return None
        return page

    found = pdf_references(doc.metadata or {}, first_page, first_pages)
    meta, sources = merge([*found, Reference("file_name", title=file.stem)])
    return Paper(
        name=file.name,
        path=file,
        text=text,
        pages=pages,
        page_count=count,
        sha256=digest,
        status=status,
        message=message,
        source=sources,
        **meta,
    )


def _classify(text: str, page_count: int) -> tuple[PaperStatus, str]:
    visible = visible_chars(text)
    fraction = unmappable_fraction(text)
    if visible >= MIN_CHARS_PER_PAGE and fraction > GARBLED_FRACTION:
        return "garbled", GARBLED_MESSAGE.format(fraction=fraction)
    if visible * (1 - fraction) < MIN_CHARS_PER_PAGE * page_count:
        return "no_text", NO_TEXT_MESSAGE
    return "ok", ""
