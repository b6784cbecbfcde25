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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ._chunking import (
    Budget,
    _part_note,
    combine_groups,
    combine_prompt,
    estimate_tokens,
    prompt_overhead,
    split_into_chunks,
    truncate_to_fit,
)
from ._dispatch import Task
from ._errors import ContextLengthExceeded
from ._papers import Paper
from ._pool import Health, Worker
from ._progress import Progress
from ._results import long_frame, wide_frame
from ._templates import Prompt
from ._types import Answer, ChatRequest

__all__ = ["DEFAULT_MAX_TOKENS", "UNKNOWN_WINDOW", "Analysis", "prepare"]

DEFAULT_MAX_TOKENS = 512
UNKNOWN_WINDOW = 4096
"""The window assumed for a worker that does not say its own (set ``context_length``)."""
FIT_MODES = ("chunk", "truncate")


@dataclass(eq=False)
class Cell:
    """One paper x prompt: its plan, its partial answers and its final answer."""

    paper: Paper
    prompt: Prompt
    fit: str | None = None
    answer: str | None = None
    status: str = "pending"
    error: str | None = None
    worker: str | None = None
    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_s: float = 0.0
    error_type: str | None = None
    parts: list[Answer | None] = field(default_factory=list)

    def add_usage(self, answer: Answer) -> None:
        if answer.prompt_tokens is not None:
            self.prompt_tokens = (self.prompt_tokens or 0) + answer.prompt_tokens
        if answer.completion_tokens is not None:
            self.completion_tokens = (self.completion_tokens or 0) + answer.completion_tokens
        self.latency_s += answer.latency_s or 0.0
        self.worker, self.model = answer.worker, answer.model

    def row(self) -> dict[str, Any]:
        return {
            "paper": self.paper.name,
            "title": self.paper.title,
            "prompt": self.prompt.name,
            "answer": self.answer,
            "status": self.status,
            "error": self.error,
            "worker": self.worker,
            "model": self.model,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "latency_s": self.latency_s if self.status == "ok" or self.latency_s else None,
            "fit": self.fit,
        }


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


class Analysis:
    """The tasks of one ``analyze()`` call and the cells they fill."""

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
        self.cells = [Cell(paper, prompt) for paper in papers for prompt in prompts]
        self._slots: dict[int, tuple[Cell, int]] = {}
        self._counter = itertools.count()
        self._combine_budget = Budget.for_request(UNKNOWN_WINDOW, self.max_tokens, system=system)

    # -- planning ---------------------------------------------------------------------
    def plan(self, workers: Sequence[Worker]) -> list[Task]:
        """The first tasks: one per cell, or one per chunk for cells too long to fit."""
        largest, chunk_window = planning_windows(workers)
        large = Budget.for_request(largest, self.max_tokens, system=self.system)
        small = Budget.for_request(chunk_window, self.max_tokens, system=self.system)
        self._combine_budget = small
        tasks: list[Task] = []
        for paper, cells in itertools.groupby(self.cells, key=lambda c: c.paper):
            group = list(cells)
            if not paper.ok:
                for cell in group:
                    cell.status, cell.error = paper.status, paper.message
                self.progress.add(failed=len(group))
                continue
            content_tokens = estimate_tokens(paper.text)
            chunks: list[str] | None = None
            for cell in group:
                fields = self._fields(paper)
                overhead = prompt_overhead(cell.prompt, {**fields, "content": ""})
                if content_tokens + overhead <= large.input_tokens:
                    cell.fit = "whole"
                    tasks.append(self._task(cell, 0, cell.prompt.render(fields)))
                    continue
                try:
                    if self.fit_mode == "truncate":
                        cell.fit = "truncated"
                        room = large.input_tokens - overhead
                        text = truncate_to_fit(paper.text, room)
                        tasks.append(
                            self._task(cell, 0, cell.prompt.render({**fields, "content": text}))
                        )
                        continue
                    if chunks is None:
                        chunks = self._chunks(paper, small)
                except ContextLengthExceeded as exc:
                    self._fail(cell, str(exc), "ContextLengthExceeded")
                    continue
                cell.fit = "chunked"
                cell.parts = [None] * len(chunks)
                for i, chunk in enumerate(chunks):
                    body = _part_note(i + 1, len(chunks)) + chunk.strip()
                    tasks.append(
                        self._task(cell, i, cell.prompt.render({**fields, "content": body}))
                    )
        return tasks

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

    def _task(self, cell: Cell, slot: int, prompt: str) -> Task:
        index = next(self._counter)
        self._slots[index] = (cell, slot)
        tokens = estimate_tokens(prompt) + (estimate_tokens(self.system) if self.system else 0)
        request = ChatRequest(prompt, self.system, self.options, prompt_tokens_estimate=tokens)
        return Task(index, request, needed_tokens=tokens + self.max_tokens)

    # -- results ----------------------------------------------------------------------
    def on_result(self, index: int, answer: Answer) -> list[Task] | None:
        """Settle one task's answer into its cell; return the combine tasks it unlocks."""
        cell, slot = self._slots.pop(index)
        cell.add_usage(answer)
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
                tasks.append(
                    self._task(cell, i, combine_prompt(cell.prompt, cell.paper.title, group))
                )
        if not tasks:  # every group was a lone answer: one round more is not needed
            cell.parts = []
            self._finish(cell, groups[0][0])
            return None
        return tasks

    def _finish(self, cell: Cell, text: str) -> None:
        cell.answer, cell.status, cell.parts = text.strip(), "ok", []
        self.progress.add(ok=1)

    def _fail(self, cell: Cell, error: str, error_type: str | None) -> None:
        cell.status, cell.error, cell.parts = "failed", error, []
        cell.error_type = error_type
        self.progress.add(failed=1)

    # -- summary ----------------------------------------------------------------------
    def rows(self) -> list[dict[str, Any]]:
        return [cell.row() for cell in self.cells]

    def frame(self, *, long: bool, elapsed: float) -> pd.DataFrame:
        """The results as the long form, or the wide paper x prompt table."""
        summary = self.summary(elapsed)
        table = long_frame(self.rows(), run_id=self.run_id, elapsed_s=elapsed)
        table.attrs["dllm_summary"] = summary
        if long:
            return table
        wide = wide_frame(table)
        wide.attrs["dllm_summary"] = summary
        return wide

    def summary(self, elapsed: float) -> str:
        total = len(self.cells)
        ok = sum(c.status == "ok" for c in self.cells)
        line = (
            f"analyzed {len(self.papers)} papers x {len(self.prompts)} prompts: "
            f"{ok}/{total} tasks answered in {elapsed:.1f} s"
        )
        unreadable = Counter(c.status for c in self.cells if c.status not in ("ok", "failed"))
        failed = Counter(c.error_type or "error" for c in self.cells if c.status == "failed")
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
    from ._papers import load_papers
    from ._presets import resolve_preset

    chosen = resolve_preset(preset, prompts)
    papers = load_papers(source, recursive=recursive, password=password)
    merged = {**chosen.options, **{k: v for k, v in options.items() if v is not None}}
    bar = Progress(len(papers) * len(chosen.prompts), enabled=progress)
    return Analysis(
        papers, chosen.prompts, system=chosen.system, options=merged, fit=fit, progress=bar
    )
