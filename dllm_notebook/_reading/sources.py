"""Where papers come from: folders, files, reference libraries and Zotero, in input order.

:func:`collect` turns what :func:`~dllm_notebook._reading.papers.load_papers` was given into
files to read, loaded :class:`Paper` objects and reference-library entries;
:func:`unique_names` makes the papers' names unique afterwards.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import TypeAlias

from .._errors import DllmError
from .paper import READ_EXTENSIONS, Paper
from .references import LIBRARY_SUFFIXES, LibraryEntry, read_library
from .zotero import Zotero, parse_zotero

__all__ = ["PaperSource", "collect", "unique_names"]

PaperSource: TypeAlias = (
    "str | os.PathLike[str] | Paper | Zotero | Iterable[str | os.PathLike[str] | Paper | Zotero]"
)
"""A folder or file path (``.bib`` and ``.ris`` files are reference libraries), a Paper,
a Zotero collection (``zotero(...)`` or ``"zotero:NAME"``), or a list mixing any of those."""


def collect(source: PaperSource, recursive: bool) -> list[Path | Paper | LibraryEntry]:
    """Files, Papers and library entries, in the order given (each file once)."""
    entries: Iterable[str | os.PathLike[str] | Paper | Zotero]
    entries = [source] if isinstance(source, (str, os.PathLike, Paper, Zotero)) else source
    items: list[Path | Paper | LibraryEntry] = []
    seen: set[Path] = set()
    for entry in entries:
        if isinstance(entry, str) and (library := parse_zotero(entry)) is not None:
            entry = library
        if isinstance(entry, Paper):
            items.append(entry)
            continue
        if isinstance(entry, Zotero):
            items.extend(entry.entries())
            continue
        path = Path(entry).expanduser()
        if not path.exists():
            raise DllmError(
                f"no such file or folder: {str(path)!r} (relative paths start at {os.getcwd()}); "
                "check the path"
            )
        if path.is_file() and path.suffix.lower() in LIBRARY_SUFFIXES:
            items.extend(read_library(path))
            continue
        for file in _scan(path, recursive) if path.is_dir() else [path]:
            key = file.resolve()
            if key not in seen:
                seen.add(key)
                items.append(file)
    return items


def _scan(folder: Path, recursive: bool) -> list[Path]:
    found: list[tuple[str, Path]] = []
    has_subfolders = False
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        has_subfolders = has_subfolders or bool(dirs)
        for name in files:
            if not name.startswith(".") and Path(name).suffix.lower() in READ_EXTENSIONS:
                path = Path(root, name)
                found.append((path.relative_to(folder).as_posix(), path))
        if not recursive:
            break
    if not found:
        hint = (
            "; pass recursive=True to read its subfolders"
            if has_subfolders and not recursive
            else ""
        )
        raise DllmError(
            f"no papers to read in {str(folder)!r}: dllm_notebook reads .pdf, .txt and .md files "
            f"(hidden files are skipped){hint}"
        )
    return [path for _, path in sorted(found)]


def unique_names(papers: list[Paper]) -> list[Paper]:
    """Give papers that share a file name longer names: their paths' last parts, then a number."""
    names = [paper.name for paper in papers]
    counts = Counter(names)
    for name in [n for n, count in counts.items() if count > 1]:
        group = [i for i, n in enumerate(names) if n == name]
        for depth in range(2, 64):
            candidates = {i: _path_suffix(papers[i], depth) for i in group}
            if len(set(candidates.values())) == len(group):
                break
        for i in group:
            names[i] = candidates[i]
    taken: set[str] = set()
    for i, name in enumerate(names):
        unique, n = name, 1
        while unique in taken:
            n += 1
            unique = f"{name} ({n})"
        taken.add(unique)
        names[i] = unique
    return [p if p.name == n else replace(p, name=n) for p, n in zip(papers, names, strict=True)]


def _path_suffix(paper: Paper, depth: int) -> str:
    if paper.path is None:
        return paper.name
    return "/".join(paper.path.absolute().parts[-depth:])
