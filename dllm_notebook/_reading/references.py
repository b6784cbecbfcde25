"""Reference libraries as input: ``.bib`` (bibtexparser) and ``.ris`` (rispy) files.

Each entry becomes a :class:`LibraryEntry`: its metadata as a
:class:`~dllm_notebook._reading.metadata.Reference` and the files attached to it, in the
library's order. :func:`entry_paper` turns an entry and its read attachment into a
:class:`Paper` named by the citation key; an entry with no readable attachment becomes a
paper with status ``no_file``. Zotero's local API gives the same entries (``zotero.py``).

>>> entries = read_library(Path("refs.bib"))
>>> [(e.name, e.files) for e in entries]

The ``file`` fields these tools write, all understood:

* Zotero: ``{Full Text PDF:/home/u/Zotero/storage/AB12/x.pdf:application/pdf}``
* Better BibTeX: ``{/home/u/Zotero/storage/AB12/x.pdf;/home/u/.../y.html}``
* JabRef: ``{:papers/x.pdf:PDF}`` (relative to the .bib file), ``\\:`` and ``\\\\`` escaped
* Mendeley: ``{:C$\\backslash$:/Users/u/x.pdf:pdf}``
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

from .._errors import ReferenceFileError
from .metadata import Reference, Sources, format_name, normalize_doi, split_authors, year_in
from .paper import READ_EXTENSIONS, Paper

__all__ = [
    "LIBRARY_SUFFIXES",
    "LibraryEntry",
    "entry_paper",
    "file_paths",
    "library_files",
    "local_path",
    "read_bibtex",
    "read_library",
    "read_ris",
]

LIBRARY_SUFFIXES = (".bib", ".ris")

NO_ATTACHMENT_MESSAGE = (
    "no file attached to this entry in {where}; attach the PDF in your reference manager "
    "and export the library again (with files), or pass the PDF's path directly"
)
MISSING_FILE_MESSAGE = (
    "the attached file is not there: {paths}; re-link it in your reference manager "
    "(or sync Zotero's storage) and export again"
)
NOT_READABLE_MESSAGE = (
    "none of the attachments is a PDF, .txt or .md file ({paths}); attach the PDF and export again"
)


@dataclass(frozen=True)
class LibraryEntry:
    """One reference of a library: its metadata and the files attached to it."""

    reference: Reference
    files: tuple[Path, ...]
    where: str
    """The library it came from, e.g. ``refs.bib`` or ``Zotero collection 'Review'``."""
    fallback_name: str
    """The paper's name when the entry has no citation key and no attachment."""

    @property
    def name(self) -> str:
        readable = self.readable_file()
        return self.reference.key or (readable.name if readable else self.fallback_name)

    def readable_file(self) -> Path | None:
        """The attachment to read: the first existing PDF, else the first .txt or .md."""
        existing = [f for f in self.files if f.suffix.lower() in READ_EXTENSIONS and f.is_file()]
        pdfs = [f for f in existing if f.suffix.lower() == ".pdf"]
        chosen = pdfs or existing
        return chosen[0] if chosen else None


def entry_paper(entry: LibraryEntry, paper: Paper | None) -> Paper:
    """The paper of a library entry: its attachment as read (``paper``), with the library's
    metadata over the PDF's and the citation key as its name; ``no_file`` without one."""
    if paper is None:
        paper = Paper(
            name=entry.name,
            path=None,
            title=entry.reference.title or entry.name,
            authors=(),
            text="",
            pages=(),
            page_count=0,
            sha256="",
            status="no_file",
            message=_no_file_message(entry),
            source=Sources(title=entry.reference.origin if entry.reference.title else None),
        )
    return replace(paper.with_reference(entry.reference), name=entry.name)


def _no_file_message(entry: LibraryEntry) -> str:
    if not entry.files:
        return NO_ATTACHMENT_MESSAGE.format(where=entry.where)
    paths = ", ".join(str(f) for f in entry.files)
    if any(f.suffix.lower() in READ_EXTENSIONS for f in entry.files):
        return MISSING_FILE_MESSAGE.format(paths=paths)
    return NOT_READABLE_MESSAGE.format(paths=paths)


def read_library(path: Path) -> list[LibraryEntry]:
    """The entries of a ``.bib`` or ``.ris`` file."""
    if path.suffix.lower() == ".bib":
        return read_bibtex(path)
    return read_ris(path)


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ReferenceFileError(
            f"cannot read it ({exc.strerror or exc}); check the path", path=str(path)
        ) from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


# ---------------------------------------------------------------- BibTeX


def read_bibtex(path: Path) -> list[LibraryEntry]:
    """Entries of a .bib file, LaTeX accents and braces decoded (bibtexparser v2)."""
    from bibtexparser import middlewares
    from bibtexparser.entrypoint import parse_string

    text = _read_text(path)
    library = parse_string(text)
    if library.failed_blocks:
        block = library.failed_blocks[0]
        key = re.match(r"@\w+\s*[{(]\s*([^,\s]+)", block.raw or "")
        duplicate = type(block).__name__ == "DuplicateBlockKeyBlock"
        raise ReferenceFileError(
            "this key is used by an earlier entry too; give each entry its own key"
            if duplicate
            else "this entry is malformed (an unclosed brace or quote, or a missing comma); "
            "fix it or export the library again",
            path=str(path),
            entry=key.group(1) if key else None,
            line=(block.start_line or 0) + 1,
        )
    if not library.entries:
        raise ReferenceFileError(
            "no entries found: is this a BibTeX file? Export the library as BibTeX",
            path=str(path),
        )
    raw_files = {entry.key: _file_field(entry.fields_dict) for entry in library.entries}
    for middleware in (
        middlewares.LatexDecodingMiddleware(),
        middlewares.SeparateCoAuthors(),
        middlewares.SplitNameParts(),
    ):
        library = middleware.transform(library)
    entries = []
    for entry in library.entries:
        values = {name.lower(): field.value for name, field in entry.fields_dict.items()}
        authors = values.get("author") or values.get("editor") or []
        reference = Reference(
            "bibtex",
            title=_clean(values.get("title")),
            authors=tuple(
                format_name(" ".join(n.last), " ".join(n.first), " ".join(n.von), " ".join(n.jr))
                for n in authors
            ),
            year=year_in(values.get("year") or values.get("date")),
            doi=normalize_doi(values.get("doi")),
            venue=_first(values, "journal", "journaltitle", "booktitle", "eventtitle", "publisher"),
            key=entry.key,
        )
        files = file_paths(raw_files.get(entry.key, ""), path.parent)
        entries.append(LibraryEntry(reference, files, path.name, entry.key))
    return entries


def _file_field(fields: dict[str, Any]) -> str:
    """The raw ``file`` (or ``pdf``) field, taken before LaTeX decoding mangles its paths."""
    for name, field in fields.items():
        if name.lower() in ("file", "pdf") and isinstance(field.value, str):
            return str(field.value)
    return ""


def _first(values: dict[str, Any], *names: str) -> str | None:
    for name in names:
        value = _clean(values.get(name))
        if value:
            return value
    return None


def _clean(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    return " ".join(value.replace("{", "").replace("}", "").split()) or None


def file_paths(field: str, base: Path) -> tuple[Path, ...]:
    """The files of a BibTeX ``file`` field (Zotero, Better BibTeX, JabRef, Mendeley).

    >>> file_paths("Full Text PDF:/z/a.pdf:application/pdf;Snapshot:/z/b.html:text/html", base)
    (PosixPath('/z/a.pdf'), PosixPath('/z/b.html'))
    """
    field = field.replace("$\\backslash$", "\\")  # Mendeley
    paths = []
    for attachment in _split_unescaped(field, ";"):
        if attachment.strip().lower().startswith("file:"):
            paths.append(local_path(_unescape(attachment.strip()), base))
            continue
        parts = _split_unescaped(attachment, ":")
        parts = _rejoin_drive_letters(parts)
        if len(parts) >= 3:  # description:path:type
            raw = parts[1] if parts[1] else ":".join(parts[1:-1])
        elif len(parts) == 2:  # description:path or path:type
            raw = parts[1] if "/" in parts[1] or "\\" in parts[1] else parts[0]
        else:
            raw = parts[0] if parts else ""
        raw = _unescape(raw).strip()
        if raw:
            paths.append(local_path(raw, base))
    return tuple(paths)


def _split_unescaped(text: str, separator: str) -> list[str]:
    parts, current, escaped = [], "", False
    for char in text:
        if escaped:
            current += "\\" + char
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == separator:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current + ("\\" if escaped else ""))
    return parts


def _rejoin_drive_letters(parts: list[str]) -> list[str]:
    """``C`` and ``\\Users\\x.pdf`` (split at a Windows drive's colon) are one path."""
    joined: list[str] = []
    for part in parts:
        if joined and re.fullmatch(r"[A-Za-z]", joined[-1]) and re.match(r"[\\/]", part):
            joined[-1] = f"{joined[-1]}:{part}"
        else:
            joined.append(part)
    return joined


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def local_path(raw: str, base: Path) -> Path:
    """A file path from a path or a ``file://`` URL; relative paths start at ``base``."""
    if raw.lower().startswith("file:"):
        raw = url2pathname(unquote(urlparse(raw).path))
    path = Path(raw).expanduser()
    return path if path.is_absolute() else base / path


# ---------------------------------------------------------------- RIS

_RIS_LIST_TAGS = ["A1", "A2", "A3", "A4", "AU", "KW", "N1", "UR", "L1", "L2"]
_RIS_START_RE = re.compile(r"^TY  - ", re.MULTILINE)


def read_ris(path: Path) -> list[LibraryEntry]:
    """Entries of a .ris file (rispy): ``L1`` attachments, and ``UR`` links to local files."""
    import rispy

    text = _read_text(path)
    starts = [text.count("\n", 0, m.start()) + 1 for m in _RIS_START_RE.finditer(text)]
    if not starts:
        raise ReferenceFileError(
            "no 'TY  - ' line: is this a RIS file? Export the library as RIS", path=str(path)
        )
    try:
        records = rispy.loads(text, list_tags=_RIS_LIST_TAGS)
    except Exception as exc:
        raise ReferenceFileError(
            f"rispy cannot parse it ({exc}); export the library as RIS again", path=str(path)
        ) from exc
    if len(records) != len(starts):
        number = len(records) + 1
        raise ReferenceFileError(
            "this record has no 'ER  - ' end line, so it was cut; fix it or export again",
            path=str(path),
            entry=f"#{number}",
            line=starts[len(records)],
        )
    return [_ris_entry(record, number, path) for number, record in enumerate(records, 1)]


def _ris_entry(record: dict[str, Any], number: int, path: Path) -> LibraryEntry:
    authors = [*record.get("authors", ()), *record.get("first_authors", ())]
    year_field = record.get("year") or record.get("publication_year") or record.get("date")
    reference = Reference(
        "ris",
        title=_clean(record.get("title") or record.get("primary_title")),
        authors=tuple(name for raw in authors for name in split_authors(raw)),
        year=year_in(year_field),
        doi=normalize_doi(record.get("doi")),
        venue=_first(record, "secondary_title", "journal_name", "alternate_title3", "publisher"),
        key=_clean(record.get("id")),
    )
    links = [*_as_list(record.get("file_attachments1")), *_as_list(record.get("urls"))]
    files = tuple(_ris_file(link, path) for link in links if _is_local(link))
    return LibraryEntry(reference, files, path.name, f"{path.stem} #{number}")


def _as_list(value: Any) -> Sequence[str]:
    if value is None:
        return ()
    return [value] if isinstance(value, str) else list(value)


def _is_local(link: str) -> bool:
    scheme = urlparse(link).scheme.lower()
    return scheme in ("file", "internal-pdf", "") or bool(re.match(r"[A-Za-z]:[\\/]", link))


def _ris_file(link: str, path: Path) -> Path:
    if link.lower().startswith("internal-pdf://"):  # EndNote: under <library>.Data/PDF/
        return path.with_suffix(".Data") / "PDF" / unquote(link[len("internal-pdf://") :])
    return local_path(link, path.parent)


def library_files(entries: Iterable[LibraryEntry]) -> list[Path]:
    """The attachment each entry will be read from (entries without one left out)."""
    return [f for f in (entry.readable_file() for entry in entries) if f is not None]
