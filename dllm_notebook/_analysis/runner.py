"""One ``analyze()`` call's traffic with the result store: reuse, record, and stream tasks.

Tasks are taken from the analysis's plan a few hundred at a time. Unless ``refresh=True``,
each is looked up in the store first: a stored answer settles it at once (its cell ends
``cached`` if every task of it was), and only the rest go to the dispatcher. The dispatcher
never holds more than a window of tasks: more are handed to it through its result callback
as answers arrive, so a run of 100,000 tasks holds a few hundred ``Task`` objects at a time.
Every answer a worker sends is committed to the store (one short transaction) before the
callback returns, so a killed process loses nothing that had been answered.

The model. The key of a stored answer includes the model the worker was asked for (its
configured ``model``, or the one it had loaded). A lookup accepts an answer from any model
the workers that may take the task use now, so changing the model recomputes, while a
cluster whose Macs serve two models reuses answers from either; when models are compared
(``model=[...]``), a cell reuses only answers of its own model.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import Any, NamedTuple

from .._errors import DllmError
from .._results.cells import ROW_FIELDS, Row, merge_rows
from .._results.store import (
    CallRecord,
    ResultStore,
    canonical_options,
    request_key,
    sha256_text,
    task_key,
)
from .._running.dispatch import Dispatcher
from .._running.tasks import Task
from .._running.worker import Worker
from .._types import Answer
from .analysis import Analysis, Slot

__all__ = ["Runner", "StoredCells"]

log = logging.getLogger("dllm_notebook")

BATCH = 256
Asked = tuple[str, str | None]
"""A request key and the model a cell asks (``None``: any the workers serve)."""
"""Tasks taken from the plan (and looked up in the store) at a time."""


class _Keys(NamedTuple):
    request: str
    prompt_sha256: str
    prompt_text: str | None


class StoredCells:
    """A run's finished rows, saved to the store's ``cells`` table in batches.

    Rows wait in a small buffer that goes out with the next answer's transaction (or
    every ``BATCH`` rows); a row that could not be written stays in the buffer, so the
    table built at the end still has it.
    """

    def __init__(self, store: ResultStore, run_id: str) -> None:
        self.store = store
        self.run_id = run_id
        self._buffer: list[tuple[Any, ...]] = []
        self._lock = threading.Lock()

    def add(self, position: int, values: Row) -> None:
        with self._lock:
            self._buffer.append((self.run_id, position, *values))
            full = len(self._buffer) >= BATCH
        if full:
            self.flush()

    def take(self) -> list[tuple[Any, ...]]:
        with self._lock:
            rows, self._buffer = self._buffer, []
        return rows

    def give_back(self, rows: list[tuple[Any, ...]]) -> None:
        with self._lock:
            self._buffer[:0] = rows

    def flush(self) -> bool:
        rows = self.take()
        try:
            self.store.add_cells(rows)
        except sqlite3.Error as exc:
            self.give_back(rows)
            log.warning("could not save finished rows to %s yet: %s", self.store.path, exc)
            return False
        return True

    def column(self, name: str) -> Iterator[tuple[int, Any]]:
        self.flush()
        field = ROW_FIELDS.index(name)
        with self._lock:
            unsaved = sorted((int(r[1]), r[2 + field]) for r in self._buffer)
        return merge_rows(self.store.cell_column(self.run_id, name), unsaved)


class Runner:
    """Runs an :class:`Analysis` through the dispatcher, with the store in front of it.

    ``store=None`` runs without a store; ``reuse=False`` (``refresh=True``) sends every
    task but still records the answers.
    """

    def __init__(
        self,
        analysis: Analysis,
        store: ResultStore | None,
        *,
        reuse: bool = True,
        window: int = 100,
    ) -> None:
        self.analysis = analysis
        self.store = store
        self.reuse = reuse and store is not None
        self.window = max(window, 1)
        self.write_errors = 0
        self._keys: dict[int, _Keys] = {}
        self._plan: Iterator[Task] | None = None
        self._outstanding = 0
        self._workers: dict[str, Worker] = {}
        self._options = canonical_options(analysis.options)
        self._cells: StoredCells | None = None
        if store is not None:
            self._cells = StoredCells(store, analysis.run_id)
            analysis.sink = self._cells
            analysis.store_path = str(Path(store.path).resolve())

    # -- the run record ------------------------------------------------------------------
    def start(self) -> None:
        """Open the store and note the run (before any request, so errors come first)."""
        if self.store is None:
            return
        try:
            self.store.start_run(
                self.analysis.run_id,
                papers=len(self.analysis.papers),
                prompts=len(self.analysis.prompts),
                tasks=self.analysis.total,
                options=self.analysis.options,
                system=self.analysis.system,
            )
        except sqlite3.Error as exc:
            raise DllmError(
                f"cannot write to the result store {self.store.path} ({exc}). If another "
                "program holds it locked, wait or close it; or pass store='another.sqlite', "
                "or cache=False to run without it"
            ) from exc

    def finish(self, status: str) -> None:
        """Note how the run ended: ``finished`` or ``interrupted``."""
        if self.store is None or self._cells is None:
            return
        progress = self.analysis.progress
        self._cells.flush()
        try:
            self.store.finish_run(
                self.analysis.run_id,
                status=status,
                ok=progress.ok,
                cached=progress.cached,
                failed=progress.failed,
            )
        except sqlite3.Error as exc:  # the answers are stored already; this is bookkeeping
            log.warning(
                "could not note the end of run %s in %s: %s", self.analysis.run_id, self.store, exc
            )

    def interrupted_message(self) -> str:
        progress = self.analysis.progress
        kept = progress.ok + progress.cached
        where = f" and in {self.store.path}" if self.store is not None else ""
        resume = (
            "run the same analyze() again to resume"
            if self.store is not None
            else "the store was off, so a re-run starts over"
        )
        return (
            f"Interrupted: {kept} of {progress.total} answers kept (in "
            f"cluster.last_analysis.frame(){where}); {resume}."
        )

    # -- running -------------------------------------------------------------------------
    async def run(self, dispatcher: Dispatcher, workers: Sequence[Worker]) -> None:
        self._workers = {w.id: w for w in workers}
        chosen = self.analysis.choose_workers(workers)
        self._plan = self.analysis.plan(chosen)
        await dispatcher.run(self._refill(), self._on_result)

    def _refill(self) -> list[Task]:
        """Take tasks from the plan until the dispatcher holds about a window of them."""
        out: list[Task] = []
        while self._plan is not None and self._outstanding + len(out) < self.window:
            batch = list(islice(self._plan, BATCH))
            if len(batch) < BATCH:
                self._plan = None
            out.extend(self._resolve(batch))
        self._outstanding += len(out)
        return out

    def _on_result(self, index: int, answer: Answer) -> list[Task]:
        self._outstanding -= 1
        slot = self.analysis.slot(index)
        more = self.analysis.on_result(index, answer)
        self._record(slot, self._keys.pop(index, None), answer)
        out = self._resolve(more) if more else []
        self._outstanding += len(out)
        out.extend(self._refill())
        return out

    # -- the store ----------------------------------------------------------------------
    def _key_of(self, task: Task) -> _Keys:
        paper = self.analysis.slot(task.index).cell.paper
        prompt = task.request.prompt
        text = prompt if self.store is not None and self.store.keep_prompts else None
        return _Keys(
            request_key(
                paper.sha256,
                prompt,
                task.request.system,
                task.request.options,
                task.request.schema,
            ),
            sha256_text(prompt),
            text,
        )

    def _resolve(self, tasks: Sequence[Task]) -> list[Task]:
        """Settle the tasks the store has answers for (and what they unlock); return the rest."""
        if self.store is None:
            return list(tasks)
        send: list[Task] = []
        todo = list(tasks)
        while todo:
            keys = {task.index: self._key_of(task) for task in todo}
            targets = {task.index: self.analysis.slot(task.index).cell.target for task in todo}
            asked = [(keys[i].request, targets[i]) for i in keys]
            found = self._lookup(asked) if self.reuse else {}
            unlocked: list[Task] = []
            for task in todo:
                key = keys[task.index]
                hit = found.get((key.request, targets[task.index]))
                if hit is None:
                    self._keys[task.index] = key
                    send.append(task)
                else:
                    unlocked.extend(self.analysis.on_result(task.index, hit, cached=True) or ())
            todo = unlocked
        return send

    def _lookup(self, asked: Iterable[tuple[str, str | None]]) -> dict[Asked, Answer]:
        """The newest stored answer for each (request key, model asked), from any name the
        workers serving that model give it now."""
        assert self.store is not None
        served = self.analysis.targets.served_names
        by_key = {task_key(r, m): (r, target) for r, target in asked for m in served(target)}
        if not by_key:
            return {}
        try:
            found = self.store.lookup(by_key)
        except sqlite3.Error as exc:  # a miss costs a request; a crash would cost the run
            log.warning("could not read the result store %s (%s); asking again", self.store, exc)
            return {}
        best: dict[Asked, tuple[int, Answer]] = {}
        for key, (call_id, answer) in found.items():
            request = by_key[key]
            if request not in best or call_id > best[request][0]:
                best[request] = (call_id, answer)
        return {request: answer for request, (_, answer) in best.items()}

    def _record(self, slot: Slot, keys: _Keys | None, answer: Answer) -> None:
        if self.store is None or self._cells is None or keys is None:
            return
        worker = self._workers.get(answer.worker or "")
        model = worker.model if worker is not None and worker.model else answer.model
        paper = slot.cell.paper
        call = CallRecord(
            run_id=self.analysis.run_id,
            at=time.time(),
            key=task_key(keys.request, model),
            request_key=keys.request,
            paper=paper.name,
            paper_sha256=paper.sha256,
            prompt=slot.cell.prompt.name,
            step=slot.step,
            prompt_sha256=keys.prompt_sha256,
            prompt_text=keys.prompt_text,
            options=self._options,
            worker=answer.worker,
            model=model,
            served_model=answer.model,
            answer=answer.text if answer.ok else None,
            error=answer.error,
            error_type=answer.error_type,
            prompt_tokens=answer.prompt_tokens,
            completion_tokens=answer.completion_tokens,
            latency_s=answer.latency_s,
            tokens_per_second=answer.tokens_per_second,
            finish_reason=answer.finish_reason,
            attempts=answer.attempts,
        )
        cells = self._cells.take()
        try:
            self.store.record(call, cells)
        except sqlite3.Error as exc:
            self._cells.give_back(cells)
            self.write_errors += 1
            if self.write_errors == 1:
                log.warning(
                    "could not save an answer to the result store %s (%s); the run goes on and "
                    "its answers stay in the DataFrame, but a re-run will ask again. Check the "
                    "disk, or pass store='another/path.sqlite'",
                    self.store.path,
                    exc,
                )
