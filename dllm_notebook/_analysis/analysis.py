"""``analyze()``: every prompt of every paper as one task, and the answers as a table.

Planning happens before any request: each paper x prompt becomes a cell. A cell whose
prompt fits a worker's context window is one task. One that fits no window is, by default,
map-reduced: the paper is split into overlapping chunks, the prompt is asked of each chunk,
and the partial answers are combined by further prompts (in rounds, each fitting the
window) into one answer (``fit="chunked"``). With ``fit="truncate"`` the paper is cut to
fit instead (``fit="truncated"``). Nothing is cut silently.
"""

from __future__ import annotations

import itertools
import logging
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from .._display.progress import Progress
from .._errors import ContextLengthExceeded
from .._prompts.schemas import answer_validator
from .._prompts.templates import Prompt
from .._reading.chunking import (
    MIN_CHUNK_TOKENS,
    Budget,
    combine_groups,
    combine_prompt,
    content_room,
    estimate_tokens,
    part_note,
    plan_fit,
    prompt_overhead,
    split_into_chunks,
    split_paper,
    truncated_prompt,
    with_part_notes,
)
from .._reading.paper import Paper
from .._results.cells import Cell, CellSink, MemoryCells, Row, build_columns
from .._results.columns import LONG_COLUMNS
from .._results.statuses import CACHED, FAILED, INVALID, OK, PENDING
from .._running.tasks import Task
from .._running.worker import Health, Worker
from .._types import Answer, ChatRequest
from .outcome import Outcomes, as_text, run_summary
from .targets import ModelTargets

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["DEFAULT_MAX_TOKENS", "FIT_MODES", "UNKNOWN_WINDOW", "Analysis", "Slot"]

log = logging.getLogger("dllm_notebook")

DEFAULT_MAX_TOKENS = 512
UNKNOWN_WINDOW = 4096
"""The window assumed for a worker that does not say its own (set ``context_length``)."""
FIT_MODES = ("chunk", "truncate")


def planning_windows(workers: Sequence[Worker]) -> tuple[int, int]:
    """(largest window, chunking window) over the healthy workers.

    Chunks are sized for the window that at least half of the cluster's slots can take,
    so that most workers share the work, instead of the largest (only one machine could
    take the chunks) or the smallest (one small machine would multiply the chunks).
    Windows a server reported when it refused a prompt count as learned (see the pool).
    """
    pool = [w for w in workers if w.health is Health.HEALTHY] or list(workers)
    windows = sorted(
        ((w.context_length or UNKNOWN_WINDOW, w.config.max_concurrent_requests) for w in pool),
        reverse=True,
    )
    if not windows:
        return UNKNOWN_WINDOW, UNKNOWN_WINDOW
    half = sum(slots for _, slots in windows) / 2
    seen = 0
    for window, slots in windows:
        seen += slots
        if seen >= half:
            return windows[0][0], window
    return windows[0][0], windows[-1][0]


PartKey = tuple[int, ...]
"""Where a part sits in its cell: ``()`` for a whole paper, ``(i,)`` for chunk ``i``, and
``(i, j)`` for piece ``j`` of chunk ``i`` after a server refused chunk ``i`` as too long."""


class Slot(NamedTuple):
    """Where a task's answer goes: its cell, its part, the step (for the history), and the
    paper text the task carries (to split it again if a server refuses it as too long)."""

    cell: Cell
    part: PartKey
    step: str
    content: str | None = None


class Analysis:
    """The tasks of one ``analyze()`` call and the cells they fill.

    Cells are made as the plan reaches them and leave memory when they finish: their
    rows go to ``sink`` (the result store's, or memory). After an interrupt, ``frame()``
    shows every answer that arrived; unfinished cells are ``pending``.

    >>> cluster.last_analysis.frame(long=True)      # during or after an interrupted run
    """

    def __init__(
        self,
        papers: Sequence[Paper],
        prompts: Sequence[Prompt],
        *,
        system: str | None,
        options: Mapping[str, Any],
        fit: str,
        progress: Progress,
        model: str | Sequence[str] | None = None,
        model_groups: Mapping[str, Any] | None = None,
    ) -> None:
        if fit not in FIT_MODES:
            raise ValueError(f"fit={fit!r}: use 'chunk' (map-reduce, the default) or 'truncate'")
        self.run_id = uuid.uuid4().hex[:12]
        self.papers = papers
        self.prompts = prompts
        self.system = system
        self.options = dict(options)
        self.options.setdefault("max_tokens", DEFAULT_MAX_TOKENS)
        self.max_tokens = int(self.options["max_tokens"])
        self.fit_mode = fit
        self.progress = progress
        self.targets = ModelTargets(model, model_groups)
        """The models asked (several: one cell per paper x prompt x model)."""
        self.models = self.targets.models
        self.total = len(papers) * len(prompts) * len(self.models)
        self.statuses: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.unreadable: Counter[str] = Counter()
        """Papers that could not be read, by status (counted once per paper)."""
        self.sink: CellSink = MemoryCells()
        self.store_path: str | None = None
        """The result store that holds this run's rows (``None``: kept in memory only)."""
        self._last_pending: tuple[int, Row] = (-1, ())
        self._slots: dict[int, Slot] = {}
        self._counter = itertools.count()
        self._system_tokens: int | None = None
        self._workers: Sequence[Worker] = ()
        self.outcomes = Outcomes()
        self._combine_budget = self._budget(UNKNOWN_WINDOW)

    def _budget(self, window: int) -> Budget:
        return Budget.for_request(window, self.max_tokens, system=self.system)

    # -- planning ---------------------------------------------------------------------
    def plan(self, workers: Sequence[Worker]) -> Iterator[Task]:
        """The first tasks, made as they are taken: one per cell, or one per chunk.

        A generator, so that 100,000 tasks never exist at once: the caller takes a few
        more as answers come in. Whether a prompt fits, and how a paper is split, is
        decided by ``_reading.chunking`` (``plan_fit``, ``split_paper``,
        ``truncated_prompt``): the same functions its tests exercise.
        """
        self._workers = workers
        largest, chunk_window = planning_windows(workers)
        large, small = self._budget(largest), self._budget(chunk_window)
        self._combine_budget = small
        for number, paper in enumerate(self.papers):
            group = self._cells(number)
            if not paper.ok:
                self.unreadable[paper.status] += 1
                for cell in group:
                    cell.status, cell.error = paper.status, paper.message
                    self._settle(cell)
                continue
            fields = self._fields(paper)
            content_tokens = estimate_tokens(paper.text)
            chunks: list[str] | None = None
            for cell in group:
                overhead = prompt_overhead(cell.prompt, fields)
                fit = plan_fit(
                    content_tokens,
                    overhead,
                    large.context_length,
                    self.max_tokens,
                    reserve_tokens=large.reserve_tokens,
                )
                if fit.fits:
                    cell.fit = "whole"
                    prompt = cell.prompt.render(fields)
                    tokens = content_tokens + overhead
                    yield self._task(cell, (), prompt, "whole", tokens, content=paper.text)
                    continue
                try:
                    if self.fit_mode == "truncate":
                        prompt = truncated_prompt(cell.prompt, fields, large)
                        cell.fit = "truncated"
                        yield self._task(cell, (), prompt, "truncated")
                        continue
                    if chunks is None:
                        chunks = split_paper(paper.text, self._max_overhead(fields), small)
                except ContextLengthExceeded as exc:
                    self._fail(cell, str(exc), "ContextLengthExceeded")
                    continue
                cell.fit = "chunked"
                yield from self._chunk_tasks(cell, (), chunks)

    def _cells(self, number: int) -> list[Cell]:
        """Paper ``number``'s cells: each prompt, asked of each model, in position order."""
        per_prompt = len(self.models)
        start = number * len(self.prompts) * per_prompt
        return [
            Cell(start + i * per_prompt + j, self.papers[number], prompt, target=model)
            for i, prompt in enumerate(self.prompts)
            for j, model in enumerate(self.models)
        ]

    def choose_workers(self, workers: Sequence[Worker]) -> list[Worker]:
        """The workers that may take this run's tasks (see :meth:`ModelTargets.choose`).
        Call before :meth:`plan`."""
        return self.targets.choose(workers)

    def _max_overhead(self, fields: dict[str, str]) -> int:
        """The costliest template's overhead: chunks sized for it fit every prompt."""
        return max(prompt_overhead(p, fields) for p in self.prompts)

    def _chunk_tasks(self, cell: Cell, parent: PartKey, chunks: Sequence[str]) -> list[Task]:
        """One task per chunk; their parts replace ``parent`` in the cell."""
        fields = self._fields(cell.paper)
        cell.parts.pop(parent, None)
        tasks = []
        for i, body in enumerate(with_part_notes(chunks)):
            key = (*parent, i)
            cell.parts[key] = None
            prompt = cell.prompt.render({**fields, "content": body})
            step = f"chunk {'.'.join(str(k + 1) for k in key)}/{len(chunks)}"
            tasks.append(self._task(cell, key, prompt, step, content=chunks[i]))
        return tasks

    @staticmethod
    def _fields(paper: Paper) -> dict[str, str]:
        return {"content": paper.text, "filename": paper.name, "title": paper.title}

    def _task(
        self,
        cell: Cell,
        part: PartKey,
        prompt: str,
        step: str,
        prompt_tokens: int | None = None,
        *,
        content: str | None = None,
    ) -> Task:
        """``prompt_tokens``: the prompt's estimate when known (the paper's plus the
        template's, counted once per paper rather than once per rendered prompt)."""
        index = next(self._counter)
        self._slots[index] = Slot(cell, part, step, content)
        if prompt_tokens is None:
            prompt_tokens = estimate_tokens(prompt)
        if self._system_tokens is None:
            self._system_tokens = estimate_tokens(self.system) if self.system else 0
        tokens = prompt_tokens + self._system_tokens
        schema = cell.prompt.schema
        request = ChatRequest(
            prompt, self.system, self.options, prompt_tokens_estimate=tokens, schema=schema
        )
        kind = f"{cell.prompt.name}:{step}"
        validate = answer_validator(schema) if schema is not None else None
        # a paper's prompts (or chunk k of each) share their beginning: the prefix cache's key
        group = f"{cell.paper.name}#{'.'.join(map(str, part))}" if content is not None else ""
        return Task(
            index,
            request,
            needed_tokens=tokens + self.max_tokens,
            kind=kind,
            validate=validate,
            excluded=self.targets.excluded(cell.target),
            group=group,
        )

    # -- results ----------------------------------------------------------------------
    def slot(self, index: int) -> Slot:
        """Where task ``index`` (not settled yet) belongs."""
        return self._slots[index]

    def on_result(self, index: int, answer: Answer, *, cached: bool = False) -> list[Task] | None:
        """Settle one task's answer into its cell; return the tasks it unlocks (a combine
        step, or smaller parts after a server refused a part as too long).

        ``cached`` says the answer came from the result store, not from a worker now.
        """
        cell, part, _, content = self._slots.pop(index)
        cell.add_usage(answer)
        cell.fresh = cell.fresh or not cached
        if cell.status != PENDING:
            return None  # the cell failed already through another part
        if not answer.ok:
            if answer.error_type == "ContextLengthExceeded" and content is not None:
                smaller = self._split_again(cell, part, content)
                if smaller:
                    return smaller
            where = f"part {part[0] + 1} of {len(cell.parts)}: " if part else ""
            self._fail(cell, where + (answer.error or "failed"), answer.error_type)
            return None
        if not cell.parts:
            self._finish(cell, answer.text, cut=answer.finish_reason == "length")
            return None
        cell.parts[part] = answer
        if any(p is None for p in cell.parts.values()):
            return None
        answers = [a.text for _, a in sorted(cell.parts.items()) if a is not None]
        if len(answers) == 1:
            self._finish(cell, answers[0])
            return None
        return self._combine(cell, answers)

    def _split_again(self, cell: Cell, part: PartKey, content: str) -> list[Task] | None:
        """A server refused this part as longer than its window, though the estimate said it
        fit: the window it reported is now the worker's (see the pool), and the estimate
        was wrong for this text (code, tables, math, CJK). Split the part in pieces of at
        most half its size, within the windows the workers have now, and go on.

        ``None`` when it cannot get smaller, or the user asked to truncate instead.
        """
        if self.fit_mode != "chunk":
            return None
        largest, _ = planning_windows(self._workers)
        budget = self._budget(largest)
        fields = self._fields(cell.paper)
        try:
            room = content_room(prompt_overhead(cell.prompt, fields), budget)
        except ContextLengthExceeded:
            return None
        target = min(room, estimate_tokens(content) // 2)
        note = estimate_tokens(part_note(99999, 99999))
        if target - note < MIN_CHUNK_TOKENS:
            return None
        chunks = [c.strip() for c in split_into_chunks(content, target - note, 0)]
        if len(chunks) < 2:
            return None
        cell.fit = "chunked"
        return self._chunk_tasks(cell, part, chunks)

    def _combine(self, cell: Cell, raw: list[str]) -> list[Task] | None:
        """Combine the parts' answers. A typed prompt's parts answered in JSON: what goes
        into the combine prompt is each part's answer, and their quotes are kept (checked
        against the whole paper when the cell finishes)."""
        texts = []
        for text in raw:
            parsed = cell.prompt.parse_answer(text) if cell.prompt.schema else None
            if parsed is not None and parsed.ok:
                cell.part_quotes.extend(parsed.quotes)
                texts.append(as_text(parsed.value))
            else:
                texts.append(text)
        try:
            groups = combine_groups(cell.prompt, cell.paper.title, texts, self._combine_budget)
        except ContextLengthExceeded as exc:
            self._fail(cell, str(exc), "ContextLengthExceeded")
            return None
        cell.parts = {}
        tasks = []
        for i, group in enumerate(groups):
            if len(group) == 1:
                text = group[0] if len(groups) > 1 or not cell.prompt.schema else raw[0]
                cell.parts[(i,)] = Answer(text=text, worker=cell.worker, model=cell.model)
            else:
                cell.parts[(i,)] = None
                prompt = combine_prompt(cell.prompt, cell.paper.title, group)
                tasks.append(self._task(cell, (i,), prompt, f"combine {i + 1}/{len(groups)}"))
        if not tasks:  # every group was a lone answer: one round more is not needed
            cell.parts = {}
            self._finish(cell, raw[0] if len(raw) == 1 else groups[0][0])
            return None
        return tasks

    def _finish(self, cell: Cell, text: str, *, cut: bool = False) -> None:
        """The cell's final answer, typed and with its quotes checked (``outcome.py``)."""
        self.outcomes.finish(cell, text, cut=cut)
        self._settle(cell)

    def _fail(self, cell: Cell, error: str, error_type: str | None) -> None:
        cell.status, cell.error, cell.parts = FAILED, error, {}
        cell.error_type = error_type
        self._settle(cell)

    def _settle(self, cell: Cell) -> None:
        """A cell is done: count it and hand its row to the sink."""
        self.statuses[cell.status] += 1
        if cell.status == OK:
            self.progress.add(ok=1)
        elif cell.status == CACHED:
            self.progress.add(cached=1)
        else:
            self.progress.add(failed=1)
            if cell.status in (FAILED, INVALID):
                self.failures[cell.error_type or "error"] += 1
        self.sink.add(cell.position, cell.values())

    # -- summary ----------------------------------------------------------------------
    def _pending(self, position: int) -> Row:
        """The row of a cell that has not finished."""
        if self._last_pending[0] != position:
            number, rest = divmod(position, len(self.prompts) * len(self.models))
            prompt, model = divmod(rest, len(self.models))
            paper, target = self.papers[number], self.models[model]
            cell = Cell(position, paper, self.prompts[prompt], target=target)
            self._last_pending = (position, cell.values())
        return self._last_pending[1]

    def frame(self, *, long: bool = False, elapsed: float | None = None) -> pd.DataFrame:
        """The results as the long form, or the wide paper x prompt table (its columns
        ``(prompt, model)`` when models are compared).

        Works during or after an interrupted run too: unfinished cells are ``pending``.
        """
        from .._results.frames import (
            PROMPTS_ATTR,
            SUMMARY_ATTR,
            long_frame,
            mark_requested_models,
            wide_frame,
        )

        elapsed = 0.0 if elapsed is None else elapsed
        summary = self.summary(elapsed)
        columns = build_columns(self.sink, self.total, self._pending, LONG_COLUMNS)
        table = long_frame(columns, run_id=self.run_id, elapsed_s=elapsed, store=self.store_path)
        table.attrs[SUMMARY_ATTR] = summary
        table.attrs[PROMPTS_ATTR] = {
            p.name: {"type": p.type, "choices": list(p.choices or ()), "evidence": p.evidence}
            for p in self.prompts
        }
        if self.targets.compared:
            table = mark_requested_models(table, self.models, range(self.total))
        return table if long else wide_frame(table)

    def summary(self, elapsed: float) -> str:
        """One line: papers and prompts, tasks answered, and what went wrong."""
        return run_summary(
            papers=len(self.papers),
            prompts=len(self.prompts),
            models=len(self.models),
            total=self.total,
            statuses=self.statuses,
            failures=self.failures,
            unreadable=self.unreadable,
            elapsed=elapsed,
        )
