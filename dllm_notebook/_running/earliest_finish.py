"""The default scheduler: learn speeds, largest work first where it finishes first, hedge.

See ``_scheduler`` for the interface. Everything here is a decision on numbers passed in:
the time, the workers' slots and the attempts running on them.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

from .scheduler import TaskQueue, can_take
from .speed import Size, SpeedModel
from .tasks import Attempt, LabView, Placement, Task

if TYPE_CHECKING:
    from .._types import Completion
    from .pool import Worker

__all__ = ["EarliestFinish", "SizedQueue", "task_size"]

HEDGE_GAIN = 0.75
"""Hedge only when the copy is expected to finish in under this share of the time the
running attempt still needs."""
HEDGE_MIN_SECONDS = 0.05
OVERDUE = 0.5
"""An attempt past its expected time still needs this share of the time it has run."""
UNMEASURED_OVERDUE = 1.0
"""The same for a worker that has never answered: its speed was a guess, and Macs of one lab
differ four-fold, so an overdue first task is likely on a slow machine. A fast worker left
idle then copies it sooner (10 emulated Macs, 5 papers x 5 prompts: the batch ended at
5.2x the ideal with 0.5, as the Airs' first tasks were copied only after 4 to 7 s)."""
LOOKAHEAD = 256
"""Tasks examined per planning pass before free slots settle for what finishes in time."""


class SizedQueue:
    """Tasks largest first, by expected duration on a typical worker."""

    def __init__(self, model: SpeedModel) -> None:
        self._model = model
        self._entries: list[tuple[float, int, Task, Size]] = []
        self._sorted = True
        self._seq = itertools.count()
        self.total_seconds = 0.0
        """Sum of the tasks' reference seconds (their duration on the prior worker)."""
        self._prompt = self._answer = 0.0

    def add(self, tasks: Iterable[Task]) -> None:
        for task in tasks:
            size = task_size(self._model, task)
            self._entries.append((-size.reference_seconds, next(self._seq), task, size))
            self._count(size, 1)
            self._sorted = False

    def _count(self, size: Size, sign: int) -> None:
        self.total_seconds += sign * size.reference_seconds
        self._prompt += sign * size.prompt
        self._answer += sign * size.answer

    def mean_size(self) -> Size:
        n = max(1, len(self._entries))
        return Size(self._prompt / n, self._answer / n)

    def at_most(self, reference_seconds: float) -> Iterator[Task]:
        """Tasks no longer than ``reference_seconds``, largest first."""
        entries = self._sort()
        start = bisect.bisect_left(entries, -reference_seconds, key=lambda e: e[0])
        return (entries[i][2] for i in range(start, len(entries)))  # islice would walk to start

    def __len__(self) -> int:
        return len(self._entries)

    def _sort(self) -> list[tuple[float, int, Task, Size]]:
        if not self._sorted:
            self._entries.sort(key=lambda e: (e[0], e[1]))
            self._sorted = True
        return self._entries

    def __iter__(self) -> Iterator[Task]:
        return (e[2] for e in self._sort())

    def remove(self, tasks: Iterable[Task]) -> None:
        gone = {id(t) for t in tasks}
        if gone:
            kept = []
            for entry in self._entries:
                if id(entry[2]) in gone:
                    self._count(entry[3], -1)
                else:
                    kept.append(entry)
            self._entries = kept


def task_size(model: SpeedModel, task: Task) -> Size:
    request = task.request
    estimated = request.prompt_tokens_estimate or 0
    return model.size(estimated, task.kind, request.max_tokens)


class Candidate:
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


class Plan:
    """The candidates of one planning pass as arrays, so that finding where a task ends
    first costs a few vector operations instead of a Python loop over every worker (a lab
    of a thousand workers plans a task in microseconds, not milliseconds).

    The choice is the loop's: a worker not yet tried by the task first, then the earliest
    finish (its first free slot, plus the task's prefill and decode there), then the most
    slots (equal guesses: no worker measured yet), then the first in the lab's order.
    """

    def __init__(self, candidates: Sequence[Candidate]) -> None:
        import numpy as np  # here, not at import: `import dllm_notebook` stays light

        self._np = np
        self.candidates = candidates
        self.index = {c.id: i for i, c in enumerate(candidates)}
        self.first = np.array([c.slots[0] for c in candidates], dtype=np.float64)
        self.prefill = np.array([c.prefill for c in candidates], dtype=np.float64)
        self.decode = np.array([c.decode for c in candidates], dtype=np.float64)
        inf = float("inf")
        windows = [inf if c.window is None else c.window for c in candidates]
        self.window = np.array(windows, dtype=np.float64)
        self.limit = np.array([c.worker.limit for c in candidates], dtype=np.int64)

    def earliest(self, task: Task, size: Size) -> tuple[Candidate, float] | None:
        """The candidate where ``task`` of ``size`` finishes first, and when; ``None``
        when no candidate may take it."""
        np = self._np
        finish = self.first + self.prefill * size.prompt + self.decode * size.answer
        if task.needed_tokens is not None:
            finish[self.window < task.needed_tokens] = np.inf
        if task.excluded:
            finish[[self.index[w] for w in task.excluded if w in self.index]] = np.inf
        if task.tried:
            untried = finish.copy()
            untried[[self.index[w] for w in task.tried if w in self.index]] = np.inf
            if np.isfinite(untried.min()):
                finish = untried
        best = finish.min()
        if not np.isfinite(best):
            return None
        ties = np.flatnonzero(finish == best)
        i = int(ties[0]) if len(ties) == 1 else int(ties[np.argmax(self.limit[ties])])
        return self.candidates[i], float(best)

    def reserve(self, candidate: Candidate, until: float) -> float:
        """Hold ``candidate``'s first free slot until ``until``; returns when it was free."""
        start = heapq.heapreplace(candidate.slots, until)
        self.first[self.index[candidate.id]] = candidate.slots[0]
        return start


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
    def _candidates(self, view: LabView) -> list[Candidate]:
        now = view.now
        candidates = []
        for worker in view.workers:
            if worker.limit <= 0:
                continue
            running = view.running.get(worker.id, ())
            ends = sorted(self._ends(worker.id, running, now))
            free = max(0, worker.free_slots)
            busy = ends[: max(0, worker.limit - free)]
            if len(busy) < worker.limit - free:  # slots held by requests we do not track
                busy += [now + 1e-6] * (worker.limit - free - len(busy))
            slots = [now] * free + busy
            heapq.heapify(slots)
            candidates.append(Candidate(worker, slots, free, self.speeds))
        return candidates

    def _ends(self, worker: str, running: Iterable[Attempt], now: float) -> list[float]:
        """When each of ``running`` (on ``worker``) is expected to end: :meth:`_remaining`
        from ``now``. A measured worker's speed is read once, not once per attempt: with
        hundreds of requests in flight on each of a thousand workers, this is most of a
        planning pass."""
        if not self.speeds.measured(worker):
            return [now + self._remaining(a, now) + 1e-6 for a in running]
        speed = self.speeds.speed(worker)
        prefill, decode = speed.prefill, speed.decode
        ends = []
        for a in running:
            size = a.size
            if size is None:  # sized once, as a subclass sizes it
                ends.append(now + self._remaining(a, now) + 1e-6)
                continue
            elapsed = now - a.started
            expected = prefill * size.prompt + decode * size.answer
            ends.append(now + max(expected - elapsed, OVERDUE * elapsed) + 1e-6)
        return ends

    def assign(self, queue: TaskQueue, view: LabView, budget: int) -> list[Placement]:
        candidates = self._candidates(view)
        free = sum(c.free for c in candidates)
        if not free or budget <= 0 or not len(queue):
            return []
        now = view.now
        placements: list[Placement] = []
        seen: set[int] = set()
        self._planned_end = now
        plan = Plan(candidates)
        for task in queue:
            seen.add(id(task))
            if self._place(task, plan, now, placements):
                free -= 1
            if not free or len(placements) >= budget or len(seen) >= LOOKAHEAD:
                break
        if free and len(placements) < budget and isinstance(queue, SizedQueue):
            # Slots still free: every task looked at finishes sooner on a faster worker.
            # A slower worker may still take one that it finishes before the batch as a
            # whole does: later than on the fast worker, but that one has other work until
            # the end anyway. The end: the plan's, if it placed every task; else the fluid
            # estimate (remaining work over the cluster's speed).
            everything = len(seen) == len(queue)
            end = self._planned_end if everything else self._fluid_end(queue, candidates, now)
            self._backfill(queue, candidates, now, placements, budget, end)
        return placements

    def _fluid_end(self, queue: SizedQueue, candidates: list[Candidate], now: float) -> float:
        typical = queue.mean_size()
        reference = typical.reference_seconds
        work = queue.total_seconds
        rate = 0.0
        for c in candidates:
            seconds = c.prefill * typical.prompt + c.decode * typical.answer
            speed = reference / seconds if seconds > 0 else 0.0  # reference seconds per second
            rate += len(c.slots) * speed
            work += speed * sum(t - now for t in c.slots if t > now)
        return now + work / rate if rate > 0 else now

    def _backfill(
        self,
        queue: SizedQueue,
        candidates: list[Candidate],
        now: float,
        placements: list[Placement],
        budget: int,
        horizon: float,
    ) -> None:
        """Free slots take the largest task each finishes by ``horizon``."""
        placed = {id(p.task) for p in placements}
        typical = queue.mean_size()
        for c in candidates:
            if c.free <= 0:
                continue
            # Where to start looking: tasks about as long as the time left, on this worker.
            seconds = c.prefill * typical.prompt + c.decode * typical.answer
            slower = seconds / typical.reference_seconds if typical.reference_seconds else 1.0
            longest = 1.5 * (horizon - now) / slower if slower > 0 else float("inf")
            for task in itertools.islice(queue.at_most(longest), LOOKAHEAD):
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

    def _place(self, task: Task, plan: Plan, now: float, placements: list[Placement]) -> bool:
        """Reserve the slot where ``task`` finishes first; True if that slot is free now."""
        size = task_size(self.speeds, task)
        found = plan.earliest(task, size)
        if found is None:
            return False
        best, finish = found
        self._planned_end = max(self._planned_end, finish)
        start = plan.reserve(best, finish)
        if start > now or best.free <= 0:
            return False  # reserved: it waits for that worker
        best.free -= 1
        placements.append(Placement(task, best.worker, finish - now))
        return True

    # -- hedging --------------------------------------------------------------------
    def hedges(self, view: LabView, budget: int) -> list[Placement]:
        if not self.hedging or budget <= 0:
            return []
        free = {w.id: w.free_slots for w in view.workers if w.free_slots > 0}
        if not free:
            return []
        idle = [w for w in view.workers if w.id in free]
        now = view.now
        copies: dict[int, int] = {}
        for attempts in view.running.values():
            for a in attempts:
                copies[id(a.task)] = copies.get(id(a.task), 0) + 1
        # The LOOKAHEAD longest, not all of them sorted: a thousand workers' last wave.
        stragglers = heapq.nlargest(
            LOOKAHEAD,
            (
                (self._remaining(a, now), n, a)
                for n, a in enumerate(a for attempts in view.running.values() for a in attempts)
                if copies[id(a.task)] == 1
            ),
            key=lambda e: (e[0], -e[1]),
        )
        placements: list[Placement] = []
        for _, _, attempt in stragglers:
            if len(placements) >= budget or not free:
                break
            remaining = self._remaining(attempt, now)
            if remaining < HEDGE_MIN_SECONDS:
                break
            task = attempt.task
            size = task_size(self.speeds, task)
            options = [
                (self.speeds.speed(w.id).seconds(size), w.id)
                for w in idle
                if free.get(w.id, 0) > 0 and w is not attempt.worker and can_take(w, task)
            ]
            if not options:
                continue
            seconds, worker_id = min(options)
            if seconds >= HEDGE_GAIN * remaining:
                continue
            worker = next(w for w in idle if w.id == worker_id)
            placements.append(Placement(task, worker, seconds, hedge=True))
            free[worker_id] -= 1
            if not free[worker_id]:
                del free[worker_id]
        return placements

    def _remaining(self, attempt: Attempt, now: float) -> float:
        """Seconds an attempt still needs, by what is known of its worker now; once overdue,
        half as long again as it has run (a late worker is slower than we thought), or as
        long again on a worker that has never answered (:data:`UNMEASURED_OVERDUE`)."""
        if attempt.size is None:
            attempt.size = task_size(self.speeds, attempt.task)
        elapsed = now - attempt.started
        worker = attempt.worker.id
        self.speeds.running_for(worker, attempt.size, elapsed)
        expected = self.speeds.speed(worker).seconds(attempt.size)
        late = OVERDUE if self.speeds.measured(worker) else UNMEASURED_OVERDUE
        return max(expected - elapsed, late * elapsed)

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
