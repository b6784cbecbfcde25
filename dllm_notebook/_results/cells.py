"""Cells (one paper x prompt each), and where finished cells wait for the table.

A finished cell becomes one row of the long form and leaves memory. With a result store,
rows go to the store's ``cells`` table as cells finish (``StoredCells`` in ``_cache``), so
a run of 100,000 tasks never holds 100,000 rows; without a store they stay in
:class:`MemoryCells`. The long form is built from those rows at the end, and cells that
never finished (an interrupted run) appear as ``pending``.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Protocol, cast

from .._prompts.templates import Prompt
from .._reading.paper import Paper
from .._types import Answer
from .columns import JSON_COLUMNS, LONG_COLUMNS
from .statuses import PENDING

__all__ = [
    "ROW_FIELDS",
    "Cell",
    "CellSink",
    "MemoryCells",
    "build_columns",
    "decode_json",
    "merge_rows",
]

ROW_FIELDS = (*LONG_COLUMNS, "error_type")
"""A finished cell's values, in this order: the long form's columns, then ``error_type``."""

BLOCK = 8192

Row = tuple[Any, ...]


@dataclass(eq=False, slots=True)
class Cell:
    """One paper x prompt (x model, when models are compared): its plan, its partial
    answers and its final answer.

    ``position`` is its place in the paper x prompt x model order. ``fresh`` is True once any of
    its tasks was answered by a worker in this run; a cell whose every task came from the
    result store ends ``cached`` instead of ``ok``.
    """

    position: int
    paper: Paper
    prompt: Prompt
    fit: str | None = None
    answer: str | None = None
    status: str = PENDING
    error: str | None = None
    worker: str | None = None
    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_s: float = 0.0
    error_type: str | None = None
    fresh: bool = False
    value: Any = None
    """The typed value (``None`` for a text prompt: the answer is its value)."""
    quotes: list[dict[str, Any]] | None = None
    """Supporting quotes, checked against the paper: ``{text, page, match}`` each."""
    evidence: str | None = None
    """``verified``, ``unverified`` or ``none`` when the prompt asks for evidence."""
    part_quotes: list[str] = field(default_factory=list)
    """Quotes the parts of a chunked paper gave, kept through the combine step."""
    parts: dict[tuple[int, ...], Answer | None] = field(default_factory=dict)
    """The answers of its parts while it is chunked, by part (see ``_analysis``)."""
    target: str | None = None
    """The model this cell asks (``analyze(model=...)``; ``None``: whatever a worker serves).
    Not in its row: the row's ``model`` is the one that answered."""

    def add_usage(self, answer: Answer) -> None:
        if answer.prompt_tokens is not None:
            self.prompt_tokens = (self.prompt_tokens or 0) + answer.prompt_tokens
        if answer.completion_tokens is not None:
            self.completion_tokens = (self.completion_tokens or 0) + answer.completion_tokens
        self.latency_s += answer.latency_s or 0.0
        self.worker, self.model = answer.worker, answer.model

    def values(self) -> Row:
        """This cell's row, in :data:`ROW_FIELDS` order."""
        latency = self.latency_s if self.answer is not None or self.latency_s else None
        paper = self.paper
        authors = list(paper.authors) if paper.authors else None
        return (
            paper.name,
            paper.title,
            self.prompt.name,
            self.answer,
            _json(self.value),
            self.status,
            self.error,
            self.worker,
            self.model,
            self.prompt_tokens,
            self.completion_tokens,
            latency,
            self.fit,
            self.evidence,
            _json(self.quotes),
            _json(authors),
            paper.year,
            paper.doi,
            paper.venue,
            str(paper.source) or None,
            self.error_type,
        )


def _json(value: Any) -> str | None:
    """A Python value as the store keeps it (see ``columns.JSON_COLUMNS``)."""
    return None if value is None else json.dumps(value, ensure_ascii=False)


def decode_json(text: Any) -> Any:
    """The Python value of a JSON column's stored text."""
    return json.loads(text) if isinstance(text, str) else None


class CellSink(Protocol):
    """Where finished cells' rows go until the table is built."""

    def add(self, position: int, values: Row) -> None: ...

    def column(self, name: str) -> Iterator[tuple[int, Any]]:
        """``(position, value)`` of one field of every row so far, in position order."""
        ...


class MemoryCells:
    """Rows kept in memory (no result store)."""

    def __init__(self) -> None:
        self._rows: dict[int, Row] = {}

    def add(self, position: int, values: Row) -> None:
        self._rows[position] = values

    def column(self, name: str) -> Iterator[tuple[int, Any]]:
        field = ROW_FIELDS.index(name)
        for position in sorted(self._rows):
            yield position, self._rows[position][field]


def merge_rows(*sources: Iterable[tuple[int, Any]]) -> Iterator[tuple[int, Any]]:
    """Items of several position-ordered sources, in position order; of two items with the
    same position, the one from the later source wins."""
    previous: tuple[int, Any] | None = None
    for item in heapq.merge(*sources, key=lambda row: row[0]):
        if previous is not None and previous[0] != item[0]:
            yield previous
        previous = item
    if previous is not None:
        yield previous


def _values(sink: CellSink, name: str, total: int, pending: Callable[[int], Row]) -> Iterator[Any]:
    """Every position's value of one field, in order; positions without a row are pending."""
    field = ROW_FIELDS.index(name)
    expected = 0
    for position, value in sink.column(name):
        while expected < position:
            yield pending(expected)[field]
            expected += 1
        yield value
        expected = position + 1
    while expected < total:
        yield pending(expected)[field]
        expected += 1


def _blocks(values: Iterator[Any]) -> Iterator[list[Any]]:
    while block := list(islice(values, BLOCK)):
        yield block


def build_columns(
    sink: CellSink, total: int, pending: Callable[[int], Row], dtypes: Mapping[str, str]
) -> dict[str, Any]:
    """The long form's columns as pandas arrays.

    One column at a time, and text columns in blocks of :data:`BLOCK` values straight
    into Arrow, so that only a block's Python strings exist at once: 100,000 rows read
    back from the store cost little more than the finished DataFrame.
    """
    import pandas as pd
    import pyarrow as pa  # type: ignore[import-untyped]

    arrays: dict[str, Any] = {}
    for name, dtype in dtypes.items():
        values = _values(sink, name, total, pending)
        if dtype == "string":
            pool = pa.system_memory_pool()  # Arrow's default (mimalloc) holds far more RSS
            chunks = [
                pa.array(b, type=pa.large_string(), memory_pool=pool) for b in _blocks(values)
            ]
            text = pa.chunked_array(chunks, type=pa.large_string())
            arrays[name] = pd.arrays.ArrowStringArray(text)
        elif name in JSON_COLUMNS:
            decoded = [decode_json(v) for v in values]
            arrays[name] = pd.array(decoded, dtype=object)
        else:
            arrays[name] = pd.array(list(values), dtype=cast(Any, dtype))
    return arrays
