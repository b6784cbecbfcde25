"""A paper: the record each file becomes, readable or not.

Kept apart from ``papers`` (which finds and reads files) so that the readers (``pdf``)
and everything downstream can use the record without importing the loader.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, get_args

from .._errors import DllmError
from .metadata import META_FIELDS, Reference, Sources, merge
from .text import (
    classify_text,
    clean_chars,
    first_line_title,
    join_pages,
    normalize_whitespace,
    page_starts,
)

__all__ = [
    "BINARY_TEXT_MESSAGE",
    "EMPTY_FILE_MESSAGE",
    "PAPER_STATUSES",
    "READ_EXTENSIONS",
    "UNSUPPORTED_MESSAGE",
    "Paper",
    "PaperStatus",
    "failed_paper",
    "unreadable_message",
]

PaperStatus = Literal[
    "ok", "no_text", "encrypted", "corrupt", "empty", "unsupported", "garbled", "no_file"
]
"""``ok``; ``no_text`` (a scan without a text layer); ``encrypted`` (needs a password);
``corrupt`` (damaged, truncated or not a PDF); ``empty`` (0 bytes, 0 pages or only
whitespace); ``unsupported`` (not .pdf/.txt/.md); ``garbled`` (text that does not map to
Unicode, or a PDF text layer whose pages read as symbols, not words); ``no_file`` (a
reference library's entry without a readable attachment)."""
PAPER_STATUSES: tuple[PaperStatus, ...] = get_args(PaperStatus)

READ_EXTENSIONS = (".pdf", ".txt", ".md")

UNSUPPORTED_MESSAGE = (
    "unsupported file type {suffix!r}: dllm_notebook reads .pdf, .txt and .md files; "
    "export it to PDF or plain text first"
)
EMPTY_FILE_MESSAGE = "the file is empty (0 bytes); re-download or re-export it"
BINARY_TEXT_MESSAGE = (
    "this does not look like a text file (it contains binary data); "
    "save it as UTF-8 plain text, or as PDF with a .pdf extension"
)


@dataclass(frozen=True, repr=False)
class Paper:
    """One paper: its text (page by page), reference metadata, and whether it could be read.

    ``name`` is the file name, or the citation key for a paper from a reference library
    (unique within one :func:`load_papers` call), and becomes the DataFrame index. When
    ``ok`` is false, ``message`` says what went wrong and what to do. ``title``,
    ``authors``, ``year``, ``doi``, ``venue`` and ``key`` come from the best origin that
    has them; ``source`` says which (docs/references.md).

    >>> paper = Paper.from_text("notes.txt", "Soil microbes and drought ...")
    >>> paper.ok, paper.page_count
    (True, 1)
    >>> paper.page_at(paper.text.index("drought"))
    1
    """

    name: str
    path: Path | None
    title: str
    authors: tuple[str, ...]
    """Each author as "First Last" (as printed when only the PDF names them)."""
    text: str
    """The cleaned full text: pages joined by a blank line."""
    pages: tuple[str, ...]
    """The cleaned text of each page; ``len(pages) == page_count``."""
    page_count: int
    sha256: str
    """SHA-256 of the file's bytes (of the UTF-8 text for in-memory papers)."""
    status: PaperStatus = "ok"
    message: str = ""
    year: int | None = None
    doi: str | None = None
    """The DOI as ``10.NNNN/...``, without a ``doi:`` label or doi.org URL."""
    venue: str | None = None
    """The journal, proceedings or publisher the library names."""
    key: str | None = None
    """The citation key in the reference library the paper came from."""
    source: Sources = field(default_factory=Sources)
    """Where each metadata field came from: ``str(paper.source)`` lists them."""
    page_starts: tuple[int, ...] = field(init=False, repr=False, compare=False)
    """Where each page starts in ``text`` (character offsets), from the pages as they are
    read: ``text[page_starts[i]:]`` begins with page ``i + 1``. Text and markdown files
    are one page unless form feeds split them."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "page_starts", page_starts(self.pages))

    @property
    def ok(self) -> bool:
        """True when the text could be read and can be sent to a model."""
        return self.status == "ok"

    def page_at(self, offset: int) -> int:
        """The 1-based page that character ``offset`` of ``text`` is on.

        >>> paper.page_at(paper.text.index("Methods"))
        4
        """
        if not 0 <= offset < len(self.text) or not self.page_starts:
            raise DllmError(
                f"offset {offset} is outside the text of {self.name!r} "
                f"({len(self.text)} characters); pass an offset from 0 to {len(self.text) - 1}"
            )
        return bisect_right(self.page_starts, offset)

    @classmethod
    def from_text(cls, name: str, text: str, title: str | None = None) -> Paper:
        """A paper held in memory. Form feeds (``\\f``) in ``text`` separate pages.

        >>> Paper.from_text("abstract-1", "We measured ...", title="Tree cover and heat")
        """
        pages = tuple(normalize_whitespace(clean_chars(page)) for page in text.split("\f"))
        cleaned = join_pages(pages)
        status, message = classify_text(cleaned)
        return cls(
            name=name,
            path=None,
            title=title if title is not None else first_line_title(cleaned, default=name),
            authors=(),
            text=cleaned,
            pages=pages,
            page_count=len(pages),
            sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
            status=status,
            message=message,
            source=Sources(title="given" if title is not None else "first_page"),
        )

    def with_reference(self, reference: Reference) -> Paper:
        """This paper with the fields of ``reference`` where its origin ranks higher than
        the origin of the value held now (``metadata.ORIGIN_RANK``)."""
        current = {name: getattr(self, name) for name in META_FIELDS}
        values, sources = merge([reference], current, self.source)
        values["title"] = values["title"] or self.title
        return replace(self, **values, source=sources)

    def __repr__(self) -> str:
        title = self.title if len(self.title) <= 60 else self.title[:59] + "…"
        detail = f"{self.page_count} pages, {len(self.text)} chars" if self.ok else self.message
        return f"Paper({self.name!r}, status={self.status!r}, title={title!r}: {detail})"


def failed_paper(
    path: Path, status: PaperStatus, message: str, *, sha256: str = "", page_count: int = 0
) -> Paper:
    """The record of a file that could not be read: no text, a status and what to do."""
    return Paper(
        name=path.name,
        path=path,
        title=path.stem,
        authors=(),
        text="",
        pages=("",) * page_count,
        page_count=page_count,
        sha256=sha256,
        status=status,
        message=message,
        source=Sources(title="file_name"),
    )


def unreadable_message(exc: OSError) -> str:
    reason = exc.strerror or exc
    return f"cannot read the file ({reason}); check that it exists and that you may read it"
