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
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from .._display.progress import Progress
from .._errors import ContextLengthExceeded
from .._prompts.templates import Prompt
from .._reading.chunking import (
    Budget,
    _part_note,
    combine_groups,
    combine_prompt,
    estimate_tokens,
    prompt_overhead,
    split_into_chunks,
    truncate_to_fit,
)
from .._reading.papers import Paper
from .._results.cells import Cell, CellSink, MemoryCells, Row, build_columns
from .._results.columns import LONG_COLUMNS
from .._running.dispatch import Task
from .._running.pool import Health, Worker
from .._types import Answer, ChatRequest

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["DEFAULT_MAX_TOKENS", "UNKNOWN_WINDOW", "Analysis", "Slot", "prepare"]

DEFAULT_MAX_TOKENS = 512
UNKNOWN_WINDOW = 4096
"""The window assumed for a worker that does not say its own (set ``context_length``)."""
FIT_MODES = ("chunk", "truncate")


def planning_windows(workers: Sequence[Worker]) -> tuple[int, int]:
    """(largest window, chunking window) over the healthy workers.

    Chunks are sized for the window that at least half of the cluster's slots can take,
    so that most workers share the work, instead of the largest (only one machine could
    take the chunks) or the smallest (one small machine would multiply the chunks).
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


class Slot(NamedTuple):
    """Where a task's answer goes: its cell, its part, and the step (for the history)."""

    cell: Cell
    part: int
    step: str


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
        self.total = len(papers) * len(prompts)
        self.statuses: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.sink: CellSink = MemoryCells()
        self._last_pending: tuple[int, Row] = (-1, ())
        self._slots: dict[int, Slot] = {}
        self._counter = itertools.count()
        self._system_tokens: int | None = None
        self._combine_budget = Budget.for_request(UNKNOWN_WINDOW, self.max_tokens, system=system)

    # -- planning ---------------------------------------------------------------------
    def plan(self, workers: Sequence[Worker]) -> Iterator[Task]:
        """The first tasks, made as they are taken: one per cell, or one per chunk.

        A generator, so that 100,000 tasks never exist at once: the caller takes a few
        more as answers come in.
        """
        largest, chunk_window = planning_windows(workers)
        large = Budget.for_request(largest, self.max_tokens, system=self.system)
        small = Budget.for_request(chunk_window, self.max_tokens, system=self.system)
        self._combine_budget = small
        for number, paper in enumerate(self.papers):
            start = number * len(self.prompts)
            group = [Cell(start + i, paper, prompt) for i, prompt in enumerate(self.prompts)]
            if not paper.ok:
                for cell in group:
                    cell.status, cell.error = paper.status, paper.message
                    self._settle(cell)
                continue
            content_tokens = estimate_tokens(paper.text)
            chunks: list[str] | None = None
            for cell in group:
                fields = self._fields(paper)
                overhead = prompt_overhead(cell.prompt, {**fields, "content": ""})
                if content_tokens + overhead <= large.input_tokens:
                    cell.fit = "whole"
                    prompt = cell.prompt.render(fields)
                    yield self._task(cell, 0, prompt, "whole", content_tokens + overhead)
                    continue
                text: str | None = None
                try:
                    if self.fit_mode == "truncate":
                        text = truncate_to_fit(paper.text, large.input_tokens - overhead)
                    elif chunks is None:
                        chunks = self._chunks(paper, small)
                except ContextLengthExceeded as exc:
                    self._fail(cell, str(exc), "ContextLengthExceeded")
                    continue
                if text is not None:
                    cell.fit = "truncated"
                    content = {**fields, "content": text}
                    yield self._task(cell, 0, cell.prompt.render(content), "truncated")
                    continue
                assert chunks is not None
                cell.fit = "chunked"
                cell.parts = [None] * len(chunks)
                for i, chunk in enumerate(chunks):
                    body = _part_note(i + 1, len(chunks)) + chunk.strip()
                    content = {**fields, "content": body}
                    yield self._task(
                        cell, i, cell.prompt.render(content), f"chunk {i + 1}/{len(chunks)}"
                    )

    def _chunks(self, paper: Paper, budget: Budget) -> list[str]:
        fields = {**self._fields(paper), "content": ""}
        overhead = max(prompt_overhead(p, fields) for p in self.prompts)
        room = budget.input_tokens - overhead - estimate_tokens(_part_note(99999, 99999))
        if room < 64:
            raise ContextLengthExceeded(
                f"a {budget.context_length}-token window leaves no room for the paper after "
                "the prompt and the answer; lower max_tokens or use a larger context_length",
                context_length=budget.context_length,
            )
        overlap = min(200, room // 10)
        return split_into_chunks(paper.text, room, overlap)

    @staticmethod
    def _fields(paper: Paper) -> dict[str, str]:
        return {"content": paper.text, "filename": paper.name, "title": paper.title}

    def _task(
        self, cell: Cell, slot: int, prompt: str, step: str, prompt_tokens: int | None = None
    ) -> Task:
        """``prompt_tokens``: the prompt's estimate when known (the paper's plus the
        template's, counted once per paper rather than once per rendered prompt)."""
        index = next(self._counter)
        self._slots[index] = Slot(cell, slot, step)
        if prompt_tokens is None:
            prompt_tokens = estimate_tokens(prompt)
        if self._system_tokens is None:
            self._system_tokens = estimate_tokens(self.system) if self.system else 0
        tokens = prompt_tokens + self._system_tokens
        request = ChatRequest(prompt, self.system, self.options, prompt_tokens_estimate=tokens)
        kind = f"{cell.prompt.name}:{step}"
        return Task(index, request, needed_tokens=tokens + self.max_tokens, kind=kind)

    # -- results ----------------------------------------------------------------------
    def slot(self, index: int) -> Slot:
        """Where task ``index`` (not settled yet) belongs."""
        return self._slots[index]

    def on_result(self, index: int, answer: Answer, *, cached: bool = False) -> list[Task] | None:
        """Settle one task's answer into its cell; return the combine tasks it unlocks.

        ``cached`` says the answer came from the result store, not from a worker now.
        """
        cell, slot, _ = self._slots.pop(index)
        cell.add_usage(answer)
        cell.fresh = cell.fresh or not cached
        if cell.status != "pending":
            return None  # the cell failed already through another part
        if not answer.ok:
            where = f"part {slot + 1} of {len(cell.parts)}: " if len(cell.parts) > 1 else ""
            self._fail(cell, where + (answer.error or "failed"), answer.error_type)
            return None
        if not cell.parts:
            self._finish(cell, answer.text)
            return None
        cell.parts[slot] = answer
        if any(p is None for p in cell.parts):
            return None
        texts = [p.text for p in cell.parts if p is not None]
        if len(texts) == 1:
            self._finish(cell, texts[0])
            return None
        return self._combine(cell, texts)

    def _combine(self, cell: Cell, texts: list[str]) -> list[Task] | None:
        try:
            groups = combine_groups(cell.prompt, cell.paper.title, texts, self._combine_budget)
        except ContextLengthExceeded as exc:
            self._fail(cell, str(exc), "ContextLengthExceeded")
            return None
        cell.parts = [None] * len(groups)
        tasks = []
        for i, group in enumerate(groups):
            if len(group) == 1:
                cell.parts[i] = Answer(text=group[0], worker=cell.worker, model=cell.model)
            else:
                prompt = combine_prompt(cell.prompt, cell.paper.title, group)
                tasks.append(self._task(cell, i, prompt, f"combine {i + 1}/{len(groups)}"))
        if not tasks:  # every group was a lone answer: one round more is not needed
            cell.parts = []
            self._finish(cell, groups[0][0])
            return None
        return tasks

    def _finish(self, cell: Cell, text: str) -> None:
        cell.answer, cell.parts = text.strip(), []
        cell.status = "ok" if cell.fresh else "cached"
        self._settle(cell)

    def _fail(self, cell: Cell, error: str, error_type: str | None) -> None:
        cell.status, cell.error, cell.parts = "failed", error, []
        cell.error_type = error_type
        self._settle(cell)

    def _settle(self, cell: Cell) -> None:
        """A cell is done: count it and hand its row to the sink."""
        self.statuses[cell.status] += 1
        if cell.status == "ok":
            self.progress.add(ok=1)
        elif cell.status == "cached":
            self.progress.add(cached=1)
        else:
            self.progress.add(failed=1)
            if cell.status == "failed":
                self.failures[cell.error_type or "error"] += 1
        self.sink.add(cell.position, cell.values())

    # -- summary ----------------------------------------------------------------------
    def _pending(self, position: int) -> Row:
        """The row of a cell that has not finished."""
        if self._last_pending[0] != position:
            paper = self.papers[position // len(self.prompts)]
            prompt = self.prompts[position % len(self.prompts)]
            self._last_pending = (position, Cell(position, paper, prompt).values())
        return self._last_pending[1]

    def frame(self, *, long: bool = False, elapsed: float | None = None) -> pd.DataFrame:
        """The results as the long form, or the wide paper x prompt table.

        Works during or after an interrupted run too: unfinished cells are ``pending``.
        """
        from .._results.frames import long_frame, wide_frame

        elapsed = 0.0 if elapsed is None else elapsed
        summary = self.summary(elapsed)
        columns = build_columns(self.sink, self.total, self._pending, LONG_COLUMNS)
        table = long_frame(columns, run_id=self.run_id, elapsed_s=elapsed)
        table.attrs["dllm_summary"] = summary
        if long:
            return table
        wide = wide_frame(table)
        wide.attrs["dllm_summary"] = summary
        return wide

    def summary(self, elapsed: float) -> str:
        total = self.total
        counts = Counter(self.statuses)  # copies: the loop thread may be adding to them
        ok = counts["ok"] + counts["cached"]
        line = (
            f"analyzed {len(self.papers)} papers x {len(self.prompts)} prompts: "
            f"{ok}/{total} tasks answered in {elapsed:.1f} s"
        )
        if counts["cached"]:
            line += f" ({counts['cached']} from the result store)"
        pending = total - sum(counts.values())
        if pending:
            line += f"; {pending} not finished"
        unreadable = {k: n for k, n in counts.items() if k not in ("ok", "cached", "failed")}
        failed = Counter(self.failures)
        reasons = [f"{n} unreadable ({kind})" for kind, n in unreadable.items()]
        reasons += [f"{n} failed ({kind})" for kind, n in failed.items()]
        if reasons:
            line += "; " + ", ".join(reasons) + ". See .dllm.failures() for each error"
        return line


def prepare(
    source: Any,
    *,
    preset: Any,
    prompts: Any,
    recursive: bool,
    password: str | None,
    fit: str,
    progress: bool,
    options: Mapping[str, Any],
) -> Analysis:
    """Resolve the prompts and read the papers: every error here comes before any request."""
    from .._prompts.presets import resolve_preset
    from .._reading.papers import load_papers

    chosen = resolve_preset(preset, prompts)
    papers = load_papers(source, recursive=recursive, password=password)
    merged = {**chosen.options, **{k: v for k, v in options.items() if v is not None}}
    bar = Progress(len(papers) * len(chosen.prompts), enabled=progress)
    return Analysis(
        papers, chosen.prompts, system=chosen.system, options=merged, fit=fit, progress=bar
    )
