"""Papers: the record each file becomes, and :func:`load_papers` that reads a folder or a list.

>>> papers = load_papers("papers/")                  # every .pdf, .txt and .md in the folder
>>> [(p.name, p.status, p.message) for p in papers if not p.ok]    # what needs attention
>>> papers[0].title, papers[0].page_count, papers[0].text[:200]

A bad file never raises: it comes back as a :class:`Paper` whose ``status`` says what is
wrong and whose ``message`` says what to do. Only a missing path, a folder with nothing to
read, or a broken PyMuPDF install raise a :class:`~dllm_notebook.DllmError`.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from .._errors import DllmError
from .metadata import Sources
from .paper import (
    BINARY_TEXT_MESSAGE,
    EMPTY_FILE_MESSAGE,
    READ_EXTENSIONS,
    UNSUPPORTED_MESSAGE,
    Paper,
    failed_paper,
    unreadable_message,
)
from .references import LibraryEntry, entry_paper
from .sources import PaperSource, collect, unique_names
from .text import (
    classify_text,
    clean_chars,
    first_line_title,
    join_pages,
    markdown_title,
    normalize_whitespace,
)

__all__ = ["PARALLEL_MIN_PDFS", "READ_EXTENSIONS", "PaperSource", "load_papers", "warm_up"]

PARALLEL_MIN_PDFS = 100
"""From this many PDFs on, ``workers=None`` also reads in worker processes (one per core).
A worker needs about 2 s to start (spawn, then import dllm_notebook and PyMuPDF) and reading
runs at about 300 pages/s per core, so fewer PDFs are read before the workers could help.
Measured with bench/bench_ingest.py; see docs/performance.md."""


def load_papers(
    source: PaperSource,
    *,
    recursive: bool = False,
    password: str | None = None,
    workers: int | None = None,
    crossref: bool | str = False,
) -> list[Paper]:
    """Read papers from a folder, a file, a reference library, a list, or loaded Papers.

    A folder gives its ``.pdf``, ``.txt`` and ``.md`` files in sorted order (hidden files
    skipped, subfolders only with ``recursive=True``); a file given explicitly is always
    read, and a type other than those three comes back as status ``unsupported``.
    ``password`` is tried on encrypted PDFs. ``workers`` is how many processes read PDFs,
    this one included: ``1`` reads here only; ``None`` uses one per core when there are
    at least ``PARALLEL_MIN_PDFS`` PDFs. Results keep the input order. Workers are spawned
    processes: in a script, make the call under ``if __name__ == "__main__":``.

    A ``.bib`` or ``.ris`` file, or a Zotero collection, gives one paper per entry: its
    attached PDF, named by the citation key, with the library's metadata (title, authors,
    year, DOI, venue) over what the PDF says; an entry with no readable attachment comes
    back with status ``no_file``. ``crossref=True`` (or a Crossref URL) fills in missing
    metadata from Crossref for papers with a DOI; it needs the network, so it is off.

    >>> papers = load_papers("papers/", recursive=True)
    >>> papers = load_papers(["a.pdf", "notes/b.md"], password="s3cret")
    >>> papers = load_papers("library.bib")                 # see docs/references.md
    """
    if workers is not None and workers < 1:
        raise DllmError(
            f"workers must be 1 or more, not {workers}; use workers=1 to read sequentially"
        )
    items = collect(source, recursive)
    files = [i.readable_file() if isinstance(i, LibraryEntry) else i for i in items]
    pdfs = list(
        dict.fromkeys(f for f in files if isinstance(f, Path) and f.suffix.lower() == ".pdf")
    )
    if pdfs:
        from .pdf import require_pymupdf

        require_pymupdf()
    processes = _process_count(workers, len(pdfs))
    read = dict(zip(pdfs, _read_pdfs(pdfs, password, processes), strict=True))

    def paper_of(item: Path | Paper | None) -> Paper | None:
        if item is None or isinstance(item, Paper):
            return item
        return read.get(item) or read_path(item, password=password)

    papers = [
        entry_paper(item, paper_of(file)) if isinstance(item, LibraryEntry) else paper_of(file)
        for item, file in zip(items, files, strict=True)
    ]
    found = unique_names([paper for paper in papers if paper is not None])
    if crossref:
        from .crossref import CROSSREF_URL, enrich

        return enrich(found, url=crossref if isinstance(crossref, str) else CROSSREF_URL)
    return found


def read_path(path: Path, *, password: str | None = None) -> Paper:
    """Read one file of any supported type. Never raises for a bad file."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".pdf":
            from .pdf import read_pdf

            return read_pdf(path, password=password)
        if suffix in (".txt", ".md"):
            return read_text_file(path)
        return failed_paper(
            path, "unsupported", UNSUPPORTED_MESSAGE.format(suffix=suffix or path.name)
        )
    except DllmError:
        raise
    except Exception as exc:  # a reader bug must not lose the whole folder
        return failed_paper(
            path,
            "corrupt",
            f"reading it failed unexpectedly ({exc!r}); check the file, or report this",
        )


def read_text_file(path: Path) -> Paper:
    """Read a .txt or .md file (UTF-8, UTF-16 with a BOM, or else Windows-1252)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return failed_paper(path, "corrupt", unreadable_message(exc))
    digest = hashlib.sha256(data).hexdigest()
    if not data:
        return failed_paper(path, "empty", EMPTY_FILE_MESSAGE, sha256=digest)
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raw = data.decode("utf-16", errors="replace")
    elif b"\x00" in data[:8192]:
        return failed_paper(path, "corrupt", BINARY_TEXT_MESSAGE, sha256=digest)
    else:
        try:
            raw = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raw = data.decode("cp1252", errors="replace")
    pages = tuple(normalize_whitespace(clean_chars(page)) for page in raw.split("\f"))
    text = join_pages(pages)
    status, message = classify_text(text)
    heading = markdown_title(text) or first_line_title(text, default="")
    return Paper(
        name=path.name,
        path=path,
        title=heading or path.stem,
        authors=(),
        text=text,
        pages=pages,
        page_count=len(pages),
        sha256=digest,
        status=status,
        message=message,
        source=Sources(title="first_page" if heading else "file_name"),
    )


# ---------------------------------------------------------------- sources and processes


def _process_count(workers: int | None, pdf_count: int) -> int:
    if workers is not None:
        return max(1, min(workers, pdf_count))
    if pdf_count < PARALLEL_MIN_PDFS:
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, pdf_count))


def _read_pdfs(paths: list[Path], password: str | None, processes: int) -> list[Paper]:
    """Read PDFs here and, once they have started, in ``processes - 1`` worker processes.

    This process reads from the front of the list while the workers take files from the
    back, so nothing waits for a worker to start (each imports PyMuPDF, 1-2 s): a folder
    that is read before they are ready takes no longer than reading it here alone.
    """
    if processes <= 1:
        return [read_path(path, password=password) for path in paths]
    results: list[Paper | None] = [None] * len(paths)
    helpers = processes - 1
    # spawn, not fork: forking a Jupyter kernel that runs threads (ours included) can deadlock.
    executor = ProcessPoolExecutor(helpers, mp_context=multiprocessing.get_context("spawn"))
    ready: Future[int] | None = executor.submit(warm_up)
    pending: dict[Future[Paper], int] = {}
    front, back = 0, len(paths)
    try:
        while front < back:
            if ready is not None and ready.done():
                try:
                    if ready.exception() is not None:
                        raise BrokenProcessPool(ready.exception())
                    _collect_done(pending, results, paths, password)
                    while len(pending) <= helpers and front < back:
                        future = executor.submit(_read_in_worker, paths[back - 1], password)
                        back -= 1
                        pending[future] = back
                except BrokenProcessPool:  # e.g. a script without `if __name__ == "__main__":`
                    ready = None  # read the rest here
            if front < back:
                results[front] = read_path(paths[front], password=password)
                front += 1
        for future in pending:
            future.cancel()  # those not started yet are read here, below
        _collect_done(pending, results, paths, password, wait=True)
    finally:
        started = ready is not None and ready.done()
        terminate = getattr(executor, "terminate_workers", None)  # Python 3.14+
        if not started and terminate is not None:
            terminate()  # still importing: no use finishing that
        executor.shutdown(wait=started, cancel_futures=True)
    return [paper for paper in results if paper is not None]


def _collect_done(
    pending: dict[Future[Paper], int],
    results: list[Paper | None],
    paths: list[Path],
    password: str | None,
    *,
    wait: bool = False,
) -> None:
    for future in [f for f in pending if wait or f.done()]:
        index = pending.pop(future)
        try:
            results[index] = future.result()
        except (CancelledError, BrokenProcessPool):
            results[index] = read_path(paths[index], password=password)


def warm_up() -> int:
    from .pdf import require_pymupdf

    require_pymupdf()
    return os.getpid()


def _read_in_worker(path: Path, password: str | None) -> Paper:
    return read_path(path, password=password)
