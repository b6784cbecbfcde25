"""The dispatcher: runs batches of requests over the pool, each settled exactly once.

One loop per batch owns its queue (made by the scheduler). Whenever a slot frees up or a
worker's health changes, it asks the scheduler what to start, starts it, and settles each
attempt's outcome: success, a retry elsewhere, or a final failure. A task may run twice at
once when the scheduler hedges a straggler: the first answer settles it and the other copy
is cancelled. Only in-flight requests exist as coroutines, so a batch of 100,000 prompts
costs no more than its in-flight part. Concurrent batches (background jobs) share the
workers' slots fairly.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from .._config import ClusterSettings
from .._errors import (
    BadResponse,
    ContextLengthExceeded,
    ModelNotAvailable,
    WorkerError,
    WorkerOverloaded,
)
from .._events import EventHub
from .._loop import wait_within
from .._types import Answer, Completion
from .eligibility import Eligibility
from .pool import WorkerPool
from .scheduler import Scheduler, TaskQueue
from .streaming import FirstTokenTimers
from .tasks import Attempt, LabView, Placement, Task
from .worker import Health

__all__ = ["Dispatcher", "Task"]

log = logging.getLogger("dllm_notebook")

MAX_OVERLOAD_REQUEUES = 50
MAX_INVALID_RETRIES = 1
"""An answer that fails its task's ``validate`` is asked again this many times."""
MAX_WITHDRAWALS = 1
"""A task's request is taken back from a server's queue at most this many times."""
SWEEP_SECONDS = 1.0
STREAM_AHEAD = 1024
"""Tasks read from a batch's iterable beyond the free slots: the scheduler's window. Largest
first (``EarliestFinish``) orders what is in the window, so a batch up to this size beyond
the lab's slots (every ``analyze()`` of a few hundred papers) is planned as a whole, and a
stream of a million prompts holds about a thousand waiting tasks, not a million."""
ResultCallback = Callable[[int, Answer], "Sequence[Task] | None"]
"""Called once per task with its answer; may return follow-up tasks (e.g. a combine step)."""


_Outcome = tuple[Attempt, Completion | WorkerError, float]


@dataclass(eq=False)
class _Batch:
    queue: TaskQueue
    inbox: asyncio.Queue[_Outcome | None]
    jobs: dict[Attempt, asyncio.Task[None]] = field(default_factory=dict)
    copies: dict[int, list[Attempt]] = field(default_factory=dict)
    """Live attempts of each running task (two while hedged), by ``id(task)``."""


def _served_from_cache(attempt: Attempt, completion: Completion) -> bool:
    """Whether most of the prompt may have come from the server's prefix cache, by its
    report, or else by where the attempt was sent. Such an answer's latency is mostly fixed
    costs, so it says nothing about the server's queue (the adaptive limit skips it: taken
    as a best case, it would make every full reading after it look queued). A server that
    reports its cached tokens is taken at its word (a count more than half the prompt); one
    that reports its own prefill and generation times is judged by them, which leave the
    cache out as they leave the queue out. Any other (exo) is given the benefit of the
    doubt whenever the attempt went to the worker that read its paper."""
    full = completion.prompt_tokens or attempt.task.request.prompt_tokens_estimate or 0
    if completion.cached_tokens is not None:
        return completion.cached_tokens > 0.5 * full
    if completion.prefill_seconds and completion.generation_seconds:
        return False
    return attempt.warm


class Dispatcher:
    def __init__(
        self, pool: WorkerPool, settings: ClusterSettings, scheduler: Scheduler, hub: EventHub
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.scheduler = scheduler
        self.hub = hub
        self._running: dict[str, list[Attempt]] = {w.id: [] for w in pool.workers}
        self._batches: list[_Batch] = []
        self.eligible = Eligibility(pool, settings)
        self._first_tokens = FirstTokenTimers(pool, self._withdraw)

    async def run(self, tasks: Iterable[Task], on_result: ResultCallback) -> None:
        """Run every task; call ``on_result(index, answer)`` exactly once per task.

        ``tasks`` may be any iterable, a generator included: it is read as slots free up,
        never more than :data:`STREAM_AHEAD` tasks beyond the free slots, so a stream of a
        million prompts holds only the tasks waiting or in flight. Tasks that
        ``on_result`` returns join the batch, and the call returns when they too have
        finished.
        """
        batch = _Batch(self.scheduler.queue(), asyncio.Queue())
        source = iter(tasks)
        exhausted = False
        remaining = 0
        stalled_since: float | None = None
        last_sweep = time.monotonic()
        remove_listener = self.pool.add_listener(lambda: batch.inbox.put_nowait(None))
        self._batches.append(batch)

        async def finish(task: Task, answer: Answer) -> None:
            nonlocal remaining
            task.settled = True
            remaining -= 1
            self.hub.emit("task_finished", index=task.index, ok=answer.ok, worker=answer.worker)
            follow_ups = on_result(task.index, answer)
            if follow_ups:
                remaining += len(follow_ups)
                for failed, answer in self._enqueue(batch, follow_ups):
                    await finish(failed, answer)

        async def pull() -> None:
            """Top the queue up from ``tasks``: the free slots, and a window beyond them."""
            nonlocal exhausted, remaining
            want = max(0, self.pool.capacity_left()) + STREAM_AHEAD - len(batch.queue)
            if exhausted or want <= 0:
                return
            taken = list(itertools.islice(source, want))
            exhausted = len(taken) < want
            remaining += len(taken)
            for task, answer in self._enqueue(batch, taken):
                await finish(task, answer)

        try:
            while remaining or not exhausted:
                await pull()
                if not remaining:
                    continue
                now = time.monotonic()
                self._start(batch, now)
                queued = len(batch.queue)
                if queued and not any(w.health is Health.HEALTHY for w in self.pool.workers):
                    if stalled_since is None:
                        stalled_since = now
                        self._warn_waiting(queued)
                    elif now - stalled_since > self.settings.no_worker_timeout:
                        stuck = list(batch.queue)
                        batch.queue.remove(stuck)
                        for task in stuck:
                            await finish(
                                task, self._failure(task, self.eligible.no_workers_error())
                            )
                        continue
                else:
                    stalled_since = None
                if queued and now - last_sweep >= SWEEP_SECONDS:
                    last_sweep = now
                    for task, answer in self._sweep(batch, now):
                        await finish(task, answer)
                    continue
                try:
                    # Wake now and then while anything is queued or running: to give up
                    # on a lost cause, or to hedge a straggler.
                    idle = not queued and not batch.copies
                    item = await wait_within(batch.inbox.get(), None if idle else 0.5)
                except asyncio.TimeoutError:
                    item = None
                # One at a time, so that what an interrupt leaves in the inbox is kept.
                while item is not None or not batch.inbox.empty():
                    outcome = item if item is not None else batch.inbox.get_nowait()
                    item = None
                    if outcome is not None:
                        settled = self._settle(batch, *outcome)
                        if settled is not None:
                            await finish(*settled)
        finally:
            remove_listener()
            self._batches.remove(batch)
            jobs = list(batch.jobs.values())
            for job in jobs:
                job.cancel()
            if jobs:
                await asyncio.gather(*jobs, return_exceptions=True)
            self._keep_arrived(batch, on_result)

    def _keep_arrived(self, batch: _Batch, on_result: ResultCallback) -> None:
        """On the way out (an interrupt, a cancel): answers that arrived but were not yet
        handled still go to ``on_result``, so no answer a worker sent is lost."""
        while not batch.inbox.empty():
            outcome = batch.inbox.get_nowait()
            if outcome is None or not isinstance(outcome[1], Completion):
                continue
            attempt, completion, latency = outcome
            if attempt.task.settled:
                continue
            settled = self._settle(batch, attempt, completion, latency)
            if settled is None:
                continue
            task, answer = settled
            task.settled = True
            try:
                on_result(task.index, answer)  # follow-up tasks are not started now
            except Exception:
                log.exception("could not keep the answer to task %d", task.index)

    # -- queueing -------------------------------------------------------------------
    def _enqueue(self, batch: _Batch, tasks: Sequence[Task]) -> list[tuple[Task, Answer]]:
        """Queue tasks; those no worker could ever take fail at once."""
        ok, never = self.eligible.admit(tasks)
        batch.queue.add(ok)
        return [(task, self._failure(task, error)) for task, error in never]

    def _sweep(self, batch: _Batch, now: float) -> list[tuple[Task, Answer]]:
        """Fail queued tasks that no longer fit any worker, or whose only possible workers
        have been unhealthy for ``no_worker_timeout``."""
        stuck = self.eligible.stuck(list(batch.queue), now)
        batch.queue.remove(task for task, _ in stuck)
        return [(task, self._failure(task, error)) for task, error in stuck]

    # -- starting attempts ----------------------------------------------------------
    def _view(self, now: float, running: dict[str, list[Attempt]] | None = None) -> LabView:
        workers = [
            w for w in self.pool.workers if w.health is Health.HEALTHY and now >= w.paused_until
        ]
        return LabView(now, workers, self._running if running is None else running)

    def _budget(self, batch: _Batch) -> int:
        """Slots this batch may fill now: its fair share when other batches wait too."""
        budget = self.pool.capacity_left()
        waiting = [b for b in self._batches if b is not batch and len(b.queue)]
        if waiting:
            total = sum(w.limit for w in self.pool.workers if w.health is Health.HEALTHY)
            share = math.ceil(total / (len(waiting) + 1))
            mine = sum(len(c) for c in batch.copies.values())
            budget = min(budget, share - mine)
        return budget

    def _start(self, batch: _Batch, now: float) -> None:
        if not any(w.dispatchable(now) for w in self.pool.workers):
            return
        budget = self._budget(batch)
        if budget <= 0:
            return
        if len(batch.queue):
            placements = self.scheduler.assign(batch.queue, self._view(now), budget)
            batch.queue.remove(p.task for p in placements)
            for placement in placements:
                self._launch(batch, placement, now)
            budget -= len(placements)
        idle_slots = any(w.dispatchable(now) for w in self.pool.workers)
        if not len(batch.queue) and budget > 0 and batch.copies and idle_slots:
            mine: dict[str, list[Attempt]] = {}
            for copies in batch.copies.values():
                for attempt in copies:
                    if not attempt.task.settled:  # a settled task's losers are being cancelled
                        mine.setdefault(attempt.worker.id, []).append(attempt)
            for placement in self.scheduler.hedges(self._view(now, mine), budget):
                if len(batch.copies.get(id(placement.task), ())) == 1:
                    self._launch(batch, placement, now)

    def _launch(self, batch: _Batch, placement: Placement, now: float) -> None:
        task, worker = placement.task, placement.worker
        if task.settled:  # never a copy of a task that has its answer
            return
        if not worker.dispatchable(now):  # a scheduler bug; keep the task
            if not placement.hedge:
                batch.queue.add([task])
            return
        task.waiting_since = None
        self.pool.acquire(worker)
        attempt = Attempt(
            task,
            worker,
            now,
            placement.expected,
            placement.hedge,
            concurrency=worker.in_flight,
            size=placement.size,
            warm=placement.warm,
        )
        self._running.setdefault(worker.id, []).append(attempt)
        batch.copies.setdefault(id(task), []).append(attempt)
        if placement.hedge:
            log.debug("hedging task %d on %s", task.index, worker.id)
        batch.jobs[attempt] = asyncio.create_task(self._attempt(attempt, batch))

    async def _attempt(self, attempt: Attempt, batch: _Batch) -> None:
        worker, task = attempt.worker, attempt.task
        assert worker.backend is not None and worker.model is not None
        self.hub.emit("task_started", index=task.index, worker=worker.id)
        started = time.monotonic()
        outcome: Completion | WorkerError
        try:
            outcome = await worker.backend.generate(
                task.request,
                model=worker.model,
                context_length=worker.context_length,
                first_token=self._first_tokens.start(attempt),
            )
        except WorkerError as exc:
            outcome = exc
        except asyncio.CancelledError:
            self._forget(attempt, batch)
            if attempt.withdrawn and not task.settled:
                batch.queue.add([task])  # it never started there: send it again
            raise
        except Exception as exc:  # a backend bug must not lose the task
            log.exception("unexpected error from worker %s", worker.id)
            outcome = BadResponse(f"unexpected error: {exc!r}", worker=worker.id)
        finally:
            self._first_tokens.end(attempt)
            self.pool.release(worker)
            self._running[worker.id].remove(attempt)
            batch.jobs.pop(attempt, None)
        batch.inbox.put_nowait((attempt, outcome, time.monotonic() - started))

    def _withdraw(self, attempt: Attempt) -> None:
        """Its first token is overdue: the request waits in the server's queue. Take it back
        (it has not started there, so the server loses no work and no answer can come) and
        queue its task again, once per task, unless a hedged copy runs too."""
        task = attempt.task
        if task.settled or task.withdrawals >= MAX_WITHDRAWALS:
            return
        for batch in self._batches:
            job = batch.jobs.get(attempt)
            if job is not None and len(batch.copies.get(id(task), ())) == 1:
                task.withdrawals += 1
                attempt.withdrawn = True
                job.cancel()
                return

    @staticmethod
    def _forget(attempt: Attempt, batch: _Batch) -> None:
        copies = batch.copies.get(id(attempt.task))
        if copies is not None and attempt in copies:
            copies.remove(attempt)
            if not copies:
                del batch.copies[id(attempt.task)]

    # -- settling outcomes ----------------------------------------------------------
    def _settle(
        self, batch: _Batch, attempt: Attempt, outcome: Completion | WorkerError, latency: float
    ) -> tuple[Task, Answer] | None:
        task, worker = attempt.task, attempt.worker
        self._forget(attempt, batch)
        others = batch.copies.get(id(task), [])
        task.tried.add(worker.id)
        if isinstance(outcome, Completion):
            self.pool.record_success(
                worker,
                outcome,
                latency,
                concurrency=attempt.concurrency,
                prompt_tokens_estimate=attempt.task.request.prompt_tokens_estimate,
                adapt=not _served_from_cache(attempt, outcome),
            )
            self.scheduler.observe(attempt, outcome, latency)
            if task.settled:
                return None  # the other copy won a moment earlier
            if self._ask_again(task, outcome, worker.id):
                return None if others else self._requeue(batch, task)
            for other in others:  # the hedge lost: stop it
                job = batch.jobs.get(other)
                if job is not None:
                    job.cancel()
            answer = Answer(
                text=outcome.text,
                worker=worker.id,
                model=outcome.model,
                prompt_tokens=outcome.prompt_tokens,
                completion_tokens=outcome.completion_tokens,
                latency_s=latency,
                finish_reason=outcome.finish_reason,
                tokens_per_second=outcome.tokens_per_second,
                attempts=task.attempts + 1,
                cached_tokens=outcome.cached_tokens,
                prefill_s=outcome.prefill_seconds,
            )
            return task, answer
        error = outcome
        if task.settled:
            return None
        task.last_error = error
        if isinstance(error, WorkerOverloaded):
            self.pool.record_overload(worker, error, concurrency=attempt.concurrency)
        else:
            self.pool.record_failure(worker, error)
        if others:
            return None  # the other copy may still answer
        if isinstance(error, WorkerOverloaded):
            task.overloads += 1
            if task.overloads <= MAX_OVERLOAD_REQUEUES:
                return self._requeue(batch, task)
            return task, self._failure(task, error)
        if isinstance(error, (ModelNotAvailable, ContextLengthExceeded)):
            task.excluded.add(worker.id)
            if isinstance(error, ModelNotAvailable):
                self.pool.set_model_missing(worker, error.detail)
            return self._requeue(batch, task)
        task.attempts += 1
        if not error.retryable or task.attempts > self.settings.max_retries:
            return task, self._failure(task, error)
        return self._requeue(batch, task)

    def _ask_again(self, task: Task, completion: Completion, worker: str) -> bool:
        """Whether an answer fails the task's check and may be asked for again: once, and
        not when the answer ran into ``max_tokens`` and no other worker could answer (the
        same model at the same limit runs out of tokens again: a minute lost for nothing)."""
        if task.validate is None or task.invalid_retries >= MAX_INVALID_RETRIES:
            return False
        problem = task.validate(completion.text)
        if problem is None:
            return False
        if completion.finish_reason == "length" and all(
            w.id in task.tried for w in self.eligible.possible(task)
        ):
            log.info(
                "task %d: invalid answer from %s (%s), cut at max_tokens; no other worker to ask",
                task.index,
                worker,
                problem,
            )
            return False
        task.invalid_retries += 1
        task.attempts += 1
        log.info("task %d: invalid answer from %s (%s); asking again", task.index, worker, problem)
        return True

    def _requeue(self, batch: _Batch, task: Task) -> tuple[Task, Answer] | None:
        failed = self._enqueue(batch, [task])
        return failed[0] if failed else None

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

    def _warn_waiting(self, count: int) -> None:
        states = ", ".join(f"{w.id}: {w.reason}" for w in self.pool.workers)
        log.warning(
            "waiting for a healthy worker for %d task(s), up to %g s (%s)",
            count,
            self.settings.no_worker_timeout,
            states,
        )
        self.hub.emit("waiting", tasks=count, reason=states)
