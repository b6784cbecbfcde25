"""The dispatcher: runs a batch of requests over the pool, each exactly once.

One loop per batch owns the queue of pending tasks. It hands tasks to workers with free
slots (the scheduler decides which), and settles each attempt's outcome: success, requeue
on another worker, or final failure. Only in-flight requests exist as coroutines, so a
batch of 100,000 prompts costs no more than its in-flight part.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ._config import ClusterSettings
from ._errors import (
    BadResponse,
    ContextLengthExceeded,
    ModelNotAvailable,
    NoHealthyWorkers,
    WorkerError,
    WorkerOverloaded,
)
from ._events import EventHub
from ._loop import wait_within
from ._pool import Health, Worker, WorkerPool
from ._scheduler import Scheduler
from ._types import Answer, ChatRequest, Completion

__all__ = ["Dispatcher", "Task"]

log = logging.getLogger("dllm_notebook")

MAX_OVERLOAD_REQUEUES = 50
ResultCallback = Callable[[int, Answer], "Sequence[Task] | None"]
"""Called once per task with its answer; may return follow-up tasks (e.g. a combine step)."""


@dataclass(eq=False)
class Task:
    """One request's journey through the cluster."""

    index: int
    request: ChatRequest
    needed_tokens: int | None = None
    """Prompt plus answer, in estimated tokens: workers with a smaller window are skipped."""
    attempts: int = 0
    overloads: int = 0
    tried: set[str] = field(default_factory=set)
    excluded: set[str] = field(default_factory=set)
    last_error: WorkerError | None = None
    waiting_since: float | None = None


_Outcome = tuple[Task, Worker, Completion | WorkerError, float]


class Dispatcher:
    def __init__(
        self, pool: WorkerPool, settings: ClusterSettings, scheduler: Scheduler, hub: EventHub
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.scheduler = scheduler
        self.hub = hub

    async def run(self, tasks: Sequence[Task], on_result: ResultCallback) -> None:
        """Run every task; call ``on_result(index, answer)`` exactly once per task.

        Tasks that ``on_result`` returns join the batch, and the call returns when they
        too have finished.
        """
        pending: deque[Task] = deque(tasks)
        inbox: asyncio.Queue[_Outcome | None] = asyncio.Queue()
        running: set[asyncio.Task[None]] = set()
        remaining = len(pending)
        stalled_since: float | None = None
        remove_listener = self.pool.add_listener(lambda: inbox.put_nowait(None))

        async def finish(task: Task, answer: Answer) -> None:
            nonlocal remaining
            remaining -= 1
            self.hub.emit("task_finished", index=task.index, ok=answer.ok, worker=answer.worker)
            follow_ups = on_result(task.index, answer)
            if follow_ups:
                pending.extend(follow_ups)
                remaining += len(follow_ups)

        try:
            while remaining:
                now = time.monotonic()
                for task, answer in self._assign(pending, running, inbox, now):
                    await finish(task, answer)
                if not remaining:
                    break
                if pending and not any(w.health is Health.HEALTHY for w in self.pool.workers):
                    if stalled_since is None:
                        stalled_since = now
                        self._warn_waiting(len(pending))
                    elif now - stalled_since > self.settings.no_worker_timeout:
                        while pending:
                            task = pending.popleft()
                            await finish(task, self._failure(task, self._no_workers_error()))
                        continue
                else:
                    stalled_since = None
                timeout = 0.5 if pending else None
                try:
                    item = await wait_within(inbox.get(), timeout)
                except asyncio.TimeoutError:
                    item = None
                items = [item]
                while not inbox.empty():
                    items.append(inbox.get_nowait())
                for outcome in items:
                    if outcome is not None:
                        settled = self._settle(*outcome, pending)
                        if settled is not None:
                            await finish(outcome[0], settled)
        finally:
            remove_listener()
            for job in running:
                job.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)

    # -- placing tasks --------------------------------------------------------------
    def _assign(
        self,
        pending: deque[Task],
        running: set[asyncio.Task[None]],
        inbox: asyncio.Queue[_Outcome | None],
        now: float,
    ) -> list[tuple[Task, Answer]]:
        failed: list[tuple[Task, Answer]] = []
        mono = time.monotonic()
        free = [w for w in self.pool.workers if w.dispatchable(mono)]
        if not free or self.pool.capacity_left() <= 0:
            return failed
        skipped: list[Task] = []
        while pending and free and self.pool.capacity_left() > 0:
            task = pending.popleft()
            eligible = [w for w in free if w.id not in task.excluded and w.fits(task.needed_tokens)]
            if not eligible:
                error = self._unplaceable(task, now)
                if error is not None:
                    failed.append((task, self._failure(task, error)))
                else:
                    skipped.append(task)
                continue
            task.waiting_since = None
            worker = self.scheduler.pick(task, eligible)
            self.pool.acquire(worker)
            if worker.free_slots <= 0:
                free.remove(worker)
            job = asyncio.create_task(self._attempt(task, worker, inbox))
            running.add(job)
            job.add_done_callback(running.discard)
        pending.extendleft(reversed(skipped))
        return failed

    def _unplaceable(self, task: Task, now: float) -> WorkerError | NoHealthyWorkers | None:
        """Why no worker can ever take this task, or None if one may free up."""
        possible = [
            w for w in self.pool.workers if w.id not in task.excluded and w.fits(task.needed_tokens)
        ]
        if not possible:
            if task.last_error is not None:
                return task.last_error
            largest = max((w.context_length or 0 for w in self.pool.workers), default=0)
            return ContextLengthExceeded(
                f"the prompt needs about {task.needed_tokens} tokens, but the largest context "
                f"window in the cluster is {largest}; shorten it, let analyze() chunk it, or "
                "add a worker with a larger context_length",
            )
        if any(w.health is Health.HEALTHY for w in possible):
            task.waiting_since = None
            return None
        if task.waiting_since is None:
            task.waiting_since = now
        elif now - task.waiting_since > self.settings.no_worker_timeout:
            return self._no_workers_error(possible)
        return None

    async def _attempt(
        self, task: Task, worker: Worker, inbox: asyncio.Queue[_Outcome | None]
    ) -> None:
        assert worker.backend is not None and worker.model is not None
        self.hub.emit("task_started", index=task.index, worker=worker.id)
        started = time.monotonic()
        outcome: Completion | WorkerError
        try:
            outcome = await worker.backend.chat(
                task.request, model=worker.model, context_length=worker.context_length
            )
        except WorkerError as exc:
            outcome = exc
        except Exception as exc:  # a backend bug must not lose the task
            log.exception("unexpected error from worker %s", worker.id)
            outcome = BadResponse(f"unexpected error: {exc!r}", worker=worker.id)
        finally:
            self.pool.release(worker)
        inbox.put_nowait((task, worker, outcome, time.monotonic() - started))

    # -- settling outcomes ----------------------------------------------------------
    def _settle(
        self,
        task: Task,
        worker: Worker,
        outcome: Completion | WorkerError,
        latency: float,
        pending: deque[Task],
    ) -> Answer | None:
        task.tried.add(worker.id)
        if isinstance(outcome, Completion):
            self.pool.record_success(
                worker,
                latency,
                outcome.prompt_tokens,
                outcome.completion_tokens,
                outcome.generation_seconds,
            )
            return Answer(
                text=outcome.text,
                worker=worker.id,
                model=outcome.model,
                prompt_tokens=outcome.prompt_tokens,
                completion_tokens=outcome.completion_tokens,
                latency_s=latency,
                finish_reason=outcome.finish_reason,
                tokens_per_second=outcome.tokens_per_second,
                attempts=task.attempts + 1,
            )
        error = outcome
        task.last_error = error
        if isinstance(error, WorkerOverloaded):
            self.pool.record_overload(worker, error)
            task.overloads += 1
            if task.overloads <= MAX_OVERLOAD_REQUEUES:
                pending.appendleft(task)
                return None
            return self._failure(task, error)
        self.pool.record_failure(worker, error)
        if isinstance(error, (ModelNotAvailable, ContextLengthExceeded)):
            task.excluded.add(worker.id)
            if isinstance(error, ModelNotAvailable):
                self.pool.set_model_missing(worker, error.detail)
            pending.appendleft(task)
            return None
        task.attempts += 1
        if not error.retryable or task.attempts > self.settings.max_retries:
            return self._failure(task, error)
        pending.appendleft(task)
        return None

    def _failure(self, task: Task, error: BaseException) -> Answer:
        if isinstance(error, WorkerError) and task.attempts > 1:
            message = f"failed after {task.attempts} tries; last error: {error}"
        else:
            message = str(error)
        return Answer(
            text="",
            worker=getattr(error, "worker", None) or None,
            model=getattr(error, "model", None),
            attempts=task.attempts,
            error=message,
            error_type=type(error).__name__,
        )

    def _no_workers_error(self, workers: Sequence[Worker] | None = None) -> NoHealthyWorkers:
        states = "; ".join(
            f"{w.id}: {w.health.value} ({w.reason})" for w in (workers or self.pool.workers)
        )
        return NoHealthyWorkers(
            f"no healthy worker for {self.settings.no_worker_timeout:g} s ({states}). Start or "
            "wake the servers, check `cluster.check()`, or raise no_worker_timeout"
        )

    def _warn_waiting(self, count: int) -> None:
        states = ", ".join(f"{w.id}: {w.reason}" for w in self.pool.workers)
        log.warning(
            "waiting for a healthy worker for %d task(s), up to %g s (%s)",
            count,
            self.settings.no_worker_timeout,
            states,
        )
        self.hub.emit("waiting", tasks=count, reason=states)
