"""The papers back to the reference manager: ``.bib`` (bibtexparser) and ``.ris`` (rispy).

Each paper of the wide table becomes one entry with its metadata and a note that holds
its answers, one line per prompt (``prompt: answer``), so a review's results can be
imported into Zotero, JabRef or EndNote next to the papers::

    df.dllm.to_bibtex("review.bib")
    df.dllm.to_ris("review.ris")      # Zotero makes each N1 note a child note

The entry key is the paper's citation key (the table's index when the papers came from a
library), or one made from its file name (``battery-degradation.pdf`` ->
``battery-degradation``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pandas as pd

from .._reading.paper import READ_EXTENSIONS
from . import frames
from .exports import cell_text, missing, write_text

__all__ = ["to_bibtex", "to_ris"]

_NOT_IN_KEY = re.compile(r"[^A-Za-z0-9_:.+-]+")


@dataclass(frozen=True)
class _Reference:
    """One paper of the table, as the exports need it."""

    key: str
    title: str | None
    authors: tuple[str, ...]
    year: int | None
    doi: str | None
    venue: str | None
    note: str


def entry_key(name: str) -> str:
    """A citation key from a paper's name: the key itself, or the file name's stem."""
    stem = name
    for suffix in READ_EXTENSIONS:
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return _NOT_IN_KEY.sub("_", stem).strip("_") or "paper"


def answers_note(row: pd.Series, prompts: list[str]) -> str:
    """The answers of one paper, one line per prompt: ``prompt: answer`` (line breaks in an
    answer become spaces). Prompts without an answer are left out."""
    lines = []
    for prompt in prompts:
        text = cell_text(row[prompt])
        if text is not None:
            lines.append(f"{prompt}: {' '.join(text.split())}")
    return "\n".join(lines)


def _references(wide: pd.DataFrame) -> Iterator[_Reference]:
    prompts = frames.prompt_columns(wide)
    seen: set[str] = set()
    for name, row in wide.iterrows():
        key = base = entry_key(str(name))
        count = 1
        while key in seen:  # two files with the same stem in different folders
            count += 1
            key = f"{base}_{count}"
        seen.add(key)
        year: Any = row.get("year")
        yield _Reference(
            key=key,
            title=_text(row.get("title")),
            authors=_authors(row.get("authors")),
            year=None if missing(year) else int(year),
            doi=_text(row.get("doi")),
            venue=_text(row.get("venue")),
            note=answers_note(row, prompts),
        )


def _authors(value: Any) -> tuple[str, ...]:
    """The authors: a list, or the JSON text ``to_csv`` wrote (a table read from CSV)."""
    if isinstance(value, str) and value.startswith("["):
        try:
            value = json.loads(value)
        except ValueError:
            return (value,)
    if hasattr(value, "tolist"):
        value = value.tolist()  # a list read back from Parquet is an array
    if isinstance(value, (list, tuple)):
        return tuple(str(a) for a in value if not missing(a))
    text = _text(value)
    return (text,) if text else ()


def _text(value: Any) -> str | None:
    """Metadata on one line (a title read from a PDF may hold line breaks)."""
    return None if missing(value) else " ".join(str(value).split()) or None


def to_bibtex(wide: pd.DataFrame, path: str | os.PathLike[str] | None = None) -> str:
    """The papers as BibTeX: ``@article`` when the venue is known (as ``journal``), else
    ``@misc``; ``author`` as "First Last and ..."; the answers in ``note``.

    Text is LaTeX-encoded by bibtexparser (``é`` -> ``\\'e``, ``{`` -> ``\\{``), so an
    answer with braces or ``%`` cannot break the file; the DOI is written as it is.
    Returns the text, and writes it (UTF-8) when ``path`` is given.
    """
    from bibtexparser import middlewares
    from bibtexparser.entrypoint import write_string
    from bibtexparser.library import Library
    from bibtexparser.model import Entry, Field

    library = Library()
    dois: dict[str, str] = {}
    for ref in _references(wide):
        fields = [Field("title", ref.title or ref.key)]
        if ref.authors:
            fields.append(Field("author", " and ".join(ref.authors)))
        if ref.year is not None:
            fields.append(Field("year", str(ref.year)))
        if ref.venue:
            fields.append(Field("journal", ref.venue))
        if ref.note:
            fields.append(Field("note", ref.note))
        if ref.doi:
            dois[ref.key] = ref.doi
        library.add(Entry("article" if ref.venue else "misc", ref.key, fields))
    library = middlewares.LatexEncodingMiddleware(keep_math=False).transform(library)
    for entry in library.entries:
        if entry.key in dois:  # after encoding: a DOI is verbatim (biblatex), "_" stays
            entry.set_field(Field("doi", dois[entry.key]))
    return write_text(write_string(library), path)


def to_ris(wide: pd.DataFrame, path: str | os.PathLike[str] | None = None) -> str:
    """The papers as RIS: ``JOUR`` when the venue is known (as ``JO``), else ``GEN``; the
    key in ``ID``; the answers in one ``N1`` note, one line per prompt.

    Returns the text, and writes it (UTF-8) when ``path`` is given.
    """
    import rispy

    records = []
    for ref in _references(wide):
        record: dict[str, Any] = {
            "type_of_reference": "JOUR" if ref.venue else "GEN",
            "id": ref.key,
            "title": ref.title or ref.key,
        }
        if ref.authors:
            record["authors"] = list(ref.authors)
        if ref.year is not None:
            record["year"] = str(ref.year)
        if ref.venue:
            record["journal_name"] = ref.venue
        if ref.doi:
            record["doi"] = ref.doi
        if ref.note:
            record["notes"] = [ref.note]
        records.append(record)
    text: str = rispy.dumps(records)
    return write_text(text, path)
