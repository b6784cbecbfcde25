"""Which task goes where, and when to start a second copy: the cluster's decisions.

The dispatcher executes; a :class:`Scheduler` decides. It owns each batch's queue of
waiting tasks, and on every call it looks at the workers (their free slots and the attempts
running on them, with the time each was expected to take) and returns placements. It never
sends a request, sleeps or reads the clock: ``now`` is passed in, which is what lets
tests/test_scheduler.py simulate a whole lab on a fake clock.

:class:`EarliestFinish` (the default) learns each worker's speed from its answers, takes the
largest work first, and puts each task where it is expected to *finish* first: a big task
may wait a moment for a fast Mac rather than start at once on a slow one, which then takes
a smaller task. When nothing is left to start it hedges: a task expected to finish much
later on a slow worker gets a second copy on an idle fast one; the first answer wins.

:class:`LeastLoaded` is the original tool's strategy (input order, the worker with most
free slots); the benchmark compares against it.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ._speed import Size, SpeedModel

if TYPE_CHECKING:
    from ._dispatch import Task
    from ._pool import Worker
    from ._types import Completion

__all__ = [
    "Attempt",
    "EarliestFinish",
    "LabView",
    "LeastLoaded",
    "Placement",
    "Scheduler",
    "TaskQueue",
]

HEDGE_GAIN = 0.75
"""Hedge only when the copy is expected to finish in under this share of the time the
running attempt still needs."""
HEDGE_MIN_SECONDS = 0.05
LOOKAHEAD = 256
"""Tasks examined per free slot before the slot's worker settles for a small task."""


@dataclass(eq=False)
class Attempt:
    """One request in flight: a task on a worker, started at ``started``."""

    task: Task
    worker: Worker
    started: float
    expected: float
    """Seconds it was expected to take when it started."""
    hedge: bool = False
    concurrency: int = 1
    """Requests in flight on the worker once this one started (itself included)."""
    size: Size | None = None
    """The task's expected size, noted by the scheduler."""

    @property
    def expected_end(self) -> float:
        return self.started + self.expected


@dataclass(frozen=True)
class Placement:
    task: Task
    worker: Worker
    expected: float = 0.0
    hedge: bool = False


@dataclass(frozen=True)
class LabView:
    """What the scheduler sees: the time, the workers that may take work now (healthy and
    not resting; some may have no free slot), and every attempt running on them."""

    now: float
    workers: Sequence[Worker]
    running: Mapping[str, Sequence[Attempt]]


class TaskQueue(Protocol):
    def add(self, tasks: Iterable[Task]) -> None: ...

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[Task]: ...

    def remove(self, tasks: Iterable[Task]) -> None: ...


class Scheduler(Protocol):
    def queue(self) -> TaskQueue:
        """A new, empty queue for one batch."""
        ...

    def assign(self, queue: TaskQueue, view: LabView, budget: int) -> list[Placement]:
        """Up to ``budget`` tasks of ``queue`` to start now, each on a worker with a free
        slot that can take it (not excluded, prompt fits its window). The dispatcher removes
        them from the queue."""
        ...

    def hedges(self, view: LabView, budget: int) -> list[Placement]:
        """Second copies of running tasks to start on free slots (may be empty)."""
        ...

    def observe(self, attempt: Attempt, completion: Completion, latency: float) -> None:
        """Learn from a successful attempt."""
        ...


def can_take(worker: Worker, task: Task) -> bool:
    return worker.id not in task.excluded and worker.fits(task.needed_tokens)


class FifoQueue:
    """Tasks in the order they came; retries go to the front."""

    def __init__(self) -> None:
        self._tasks: deque[Task] = deque()

    def add(self, tasks: Iterable[Task]) -> None:
        for task in tasks:
            if task.attempts or task.overloads or task.excluded:
                self._tasks.appendleft(task)
            else:
                self._tasks.append(task)

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[Task]:
        return iter(self._tasks)

    def remove(self, tasks: Iterable[Task]) -> None:
        gone = {id(t) for t in tasks}
        if gone:
            self._tasks = deque(t for t in self._tasks if id(t) not in gone)


class LeastLoaded:
    """Input order; each task to the worker with the most free slots (a retry prefers a
    worker it has not tried). No learning, no hedging: the original tool's strategy."""

    def queue(self) -> TaskQueue:
        return FifoQueue()

    def assign(self, queue: TaskQueue, view: LabView, budget: int) -> list[Placement]:
        free = {w.id: w.free_slots for w in view.workers if w.free_slots > 0}
        placements: list[Placement] = []
        for task in queue:
            if len(placements) >= budget or not free:
                break
            eligible = [w for w in view.workers if free.get(w.id, 0) > 0 and can_take(w, task)]
            if not eligible:
                continue
            worker = max(eligible, key=lambda w: (w.id not in task.tried, free[w.id]))
            placements.append(Placement(task, worker))
            free[worker.id] -= 1
            if not free[worker.id]:
                del free[worker.id]
        return placements

    def hedges(self, view: LabView, budget: int) -> list[Placement]:
        return []

    def observe(self, attempt: Attempt, completion: Completion, latency: float) -> None:
        return None


class SizedQueue:
    """Tasks largest first, by expected duration on a typical worker."""

    def __init__(self, model: SpeedModel) -> None:
        self._model = model
        self._entries: list[tuple[float, int, Task]] = []
        self._sorted = True
        self._seq = itertools.count()

    def add(self, tasks: Iterable[Task]) -> None:
        for task in tasks:
            size = task_size(self._model, task)
            self._entries.append((-size.reference_seconds, next(self._seq), task))
            self._sorted = False

    def __len__(self) -> int:
        return len(self._entries)

    def _sort(self) -> list[tuple[float, int, Task]]:
        if not self._sorted:
            self._entries.sort(key=lambda e: (e[0], e[1]))
            self._sorted = True
        return self._entries

    def __iter__(self) -> Iterator[Task]:
        return (task for _, _, task in self._sort())

    def smallest_first(self) -> Iterator[Task]:
        return (task for _, _, task in reversed(self._sort()))

    def remove(self, tasks: Iterable[Task]) -> None:
        gone = {id(t) for t in tasks}
        if gone:
            self._entries = [e for e in self._entries if id(e[2]) not in gone]


def task_size(model: SpeedModel, task: Task) -> Size:
    request = task.request
    estimated = request.prompt_tokens_estimate or 0
    return model.size(estimated, task.kind, request.max_tokens)


class _Candidate:
    """A worker during one planning pass: when each of its slots frees up."""

    __slots__ = ("decode", "free", "id", "prefill", "slots", "window", "worker")

    def __init__(self, worker: Worker, slots: list[float], free: int, model: SpeedModel):
        speed = model.speed(worker.id)
        self.worker = worker
        self.id = worker.id
        self.window = worker.context_length
        self.slots = slots
        self.free = free
        self.prefill = speed.prefill
        self.decode = speed.decode


class EarliestFinish:
    """Largest work first, each task where it is expected to finish first; hedges at the end.

    ``speeds`` is shared by the cluster's batches, so what one batch learns the next uses.
    """

    def __init__(self, speeds: SpeedModel | None = None, *, hedge: bool = True) -> None:
        self.speeds = speeds or SpeedModel()
        self.hedging = hedge
        self._planned_end = 0.0

    def queue(self) -> SizedQueue:
        return SizedQueue(self.speeds)

    def expected(self, task: Task, worker: Worker) -> float:
        return self.speeds.speed(worker.id).seconds(task_size(self.speeds, task))

    # -- placing --------------------------------------------------------------------
    def _candidates(self, view: LabView) -> list[_Candidate]:
        now = view.now
        candidates = []
        for worker in view.workers:
            if worker.limit <= 0:
                continue
            running = view.running.get(worker.id, ())
            ends = sorted(now + self._remaining(a, now) + 1e-6 for a in running)
            free = max(0, worker.free_slots)
            busy = ends[: max(0, worker.limit - free)]
            if len(busy) < worker.limit - free:  # slots held by requests we do not track
                busy += [now + 1e-6] * (worker.limit - free - len(busy))
            slots = [now] * free + busy
            heapq.heapify(slots)
            candidates.append(_Candidate(worker, slots, free, self.speeds))
        return candidates

    def assign(self, queue: TaskQueue, view: LabView, budget: int) -> list[Placement]:
        candidates = self._candidates(view)
        free = sum(c.free for c in candidates)
        if not free or budget <= 0 or not len(queue):
            return []
        now = view.now
        placements: list[Placement] = []
        seen: set[int] = set()
        self._planned_end = now
        for task in queue:
            seen.add(id(task))
            if self._place(task, candidates, now, placements):
                free -= 1
            if not free or len(placements) >= budget or len(seen) >= LOOKAHEAD:
                break
        if free and len(placements) < budget and len(seen) == len(queue):
            # Every waiting task has a place in the plan, and some slots here are still
            # free: a slower worker may still take a task that it finishes before the plan
            # as a whole does. Its finish is later than on the fast worker the plan chose,
            # but that worker has other work until the end anyway.
            self._backfill(queue, candidates, now, placements, budget)
        elif free and len(placements) < budget and isinstance(queue, SizedQueue):
            # Slots still free after a long look: the big tasks are better off waiting for
            # faster workers, so these take the smallest ones, if they finish soonest here.
            for task in itertools.islice(queue.smallest_first(), LOOKAHEAD):
                if id(task) in seen:
                    break
                if self._place(task, candidates, now, placements):
                    free -= 1
                if not free or len(placements) >= budget:
                    break
        return placements

    def _backfill(
        self,
        queue: TaskQueue,
        candidates: list[_Candidate],
        now: float,
        placements: list[Placement],
        budget: int,
    ) -> None:
        horizon = self._planned_end
        placed = {id(p.task) for p in placements}
        for c in candidates:
            if c.free <= 0:
                continue
            for task in queue:
                if len(placements) >= budget:
                    return
                if id(task) in placed or not can_take(c.worker, task):
                    continue
                size = task_size(self.speeds, task)
                seconds = c.prefill * size.prompt + c.decode * size.answer
                if now + seconds <= horizon:
                    placements.append(Placement(task, c.worker, seconds))
                    placed.add(id(task))
                    c.free -= 1
                    if c.free <= 0:
                        break

    def _place(
        self, task: Task, candidates: list[_Candidate], now: float, placements: list[Placement]
    ) -> bool:
        """Reserve the slot where ``task`` finishes first; True if that slot is free now."""
        size = task_size(self.speeds, task)
        prompt, answer = size.prompt, size.answer
        needed, excluded, tried = task.needed_tokens, task.excluded, task.tried
        best: _Candidate | None = None
        best_key = (True, float("inf"))
        for c in candidates:  # the hot loop of planning: kept to plain arithmetic
            if not c.slots or (excluded and c.id in excluded):
                continue
            if needed is not None and c.window is not None and needed > c.window:
                continue
            finish = c.slots[0] + c.prefill * prompt + c.decode * answer
            key = (bool(tried) and c.id in tried, finish)
            if key < best_key:
                best, best_key = c, key
        if best is None:
            return False
        self._planned_end = max(self._planned_end, best_key[1])
        start = heapq.heapreplace(best.slots, best_key[1])
        if start > now or best.free <= 0:
            return False  # reserved: it waits for that worker
        best.free -= 1
        placements.append(Placement(task, best.worker, best_key[1] - now))
        return True

    # -- hedging --------------------------------------------------------------------
    def hedges(self, view: LabView, budget: int) -> list[Placement]:
        if not self.hedging or budget <= 0:
            return []
        free = {w.id: w.free_slots for w in view.workers if w.free_slots > 0}
        if not free:
            return []
        now = view.now
        copies: dict[int, int] = {}
        for attempts in view.running.values():
            for a in attempts:
                copies[id(a.task)] = copies.get(id(a.task), 0) + 1
        stragglers = sorted(
            (a for attempts in view.running.values() for a in attempts if copies[id(a.task)] == 1),
            key=lambda a: self._remaining(a, now),
            reverse=True,
        )
        placements: list[Placement] = []
        for attempt in stragglers:
            if len(placements) >= budget or not free:
                break
            remaining = self._remaining(attempt, now)
            if remaining < HEDGE_MIN_SECONDS:
                break
            task = attempt.task
            options = [
                (self.expected(task, w), w.id)
                for w in view.workers
                if free.get(w.id, 0) > 0 and w is not attempt.worker and can_take(w, task)
            ]
            if not options:
                continue
            seconds, worker_id = min(options)
            if seconds >= HEDGE_GAIN * remaining:
                continue
            worker = next(w for w in view.workers if w.id == worker_id)
            placements.append(Placement(task, worker, seconds, hedge=True))
            free[worker_id] -= 1
            if not free[worker_id]:
                del free[worker_id]
        return placements

    def _remaining(self, attempt: Attempt, now: float) -> float:
        """Seconds an attempt still needs, by what is known of its worker now; once overdue,
        half as long again as it has run (a late worker is slower than we thought)."""
        if attempt.size is None:
            attempt.size = task_size(self.speeds, attempt.task)
        expected = self.speeds.speed(attempt.worker.id).seconds(attempt.size)
        elapsed = now - attempt.started
        return max(expected - elapsed, 0.5 * elapsed)

    def observe(self, attempt: Attempt, completion: Completion, latency: float) -> None:
        task = attempt.task
        estimated = task.request.prompt_tokens_estimate or 0
        size = task_size(self.speeds, task)
        self.speeds.observe_tokens(
            estimated, task.kind, completion.prompt_tokens, completion.completion_tokens
        )
        actual = Size(
            prompt=completion.prompt_tokens or size.prompt,
            answer=completion.completion_tokens or size.answer,
        )
        self.speeds.observe(
            attempt.worker.id,
            actual,
            latency,
            prefill_seconds=completion.prefill_seconds,
            decode_seconds=completion.generation_seconds,
        )
