"""The default scheduler: learn speeds, largest work first where it finishes first, hedge.

A task placed on a worker that had never answered (a guess) and now expected to end well
after the batch could is copied where it ends clearly sooner, even while work waits (a
rescue); at the end, stragglers are hedged.
See ``_scheduler`` for the interface. Everything here is a decision on numbers passed in:
the time, the workers' slots and the attempts running on them.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from .scheduler import TaskQueue, can_take
from .sized_queue import SizedQueue, task_size
from .speed import Size, SpeedModel
from .tasks import Attempt, LabView, Placement, Task

if TYPE_CHECKING:
    from .._types import Completion
    from .worker import Worker

__all__ = ["Candidate", "EarliestFinish", "prompt_read"]

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
RESCUE_MARGIN = 2.0
"""A rescue copies a task only when it would end after the batch by at least this many
times the copy's own seconds: a copy takes a fast slot from the work that waits, so a
task only a little late is left to the hedges at the end (the fixed-answer Mac lab of
tests/test_affinity.py, 35 Macs: 0.86-0.91 of the ideal with 1, 0.92-0.94 as before
rescues with 2)."""
PLACE_RISK = 1.0
"""Share of an answer's spread (``Size.spread``: how much longer than the mean one answer
in ten is) that placing a task adds to its expected time: a long answer costs a slow
decoder more, so near-equal finishes go to the faster one. Backfilling a slower worker
adds all of it: that task must end by the batch's end even if its answer is long. (Varied
labs, fake clock, 10 Macs, seeds 6-12: worst 0.926 of the ideal with 1, 0.911 with 0.5.)"""
LOOKAHEAD = 256
"""Tasks examined per planning pass before free slots settle for what finishes in time."""


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

    def seconds(self, size: Size) -> float:
        return self.prefill * size.prompt + self.decode * size.answer


def lone_attempts(view: LabView) -> list[Attempt]:
    """The running attempts whose task has no other copy running."""
    copies: dict[int, int] = {}
    for attempts in view.running.values():
        for a in attempts:
            copies[id(a.task)] = copies.get(id(a.task), 0) + 1
    return [a for attempts in view.running.values() for a in attempts if copies[id(a.task)] == 1]


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
        self._answered_at: dict[str, float] = {}
        """When each worker first answered: requests sent before then were sent cold."""

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
        if isinstance(queue, SizedQueue) and self.hedging:
            self._rescue(queue, view, candidates, placements, budget)
            free = sum(c.free for c in candidates)
            if not free or len(placements) >= budget:
                return placements
        seen: set[int] = {id(p.task) for p in placements}
        self._planned_end = now
        plan = Plan(candidates)
        for task in queue:
            if id(task) in seen:
                continue
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

    def _rescue(
        self,
        queue: SizedQueue,
        view: LabView,
        candidates: list[Candidate],
        placements: list[Placement],
        budget: int,
    ) -> None:
        """Copy a task placed on a guess (before its worker had ever answered) and now
        expected to end well after the batch could, to where it ends clearly sooner: a
        large first task on a slow Mac no longer sets the end of the batch.

        Planned before the queue: its copy takes the earliest slot that finishes it, now or
        reserved (then it is planned again on the next pass).
        """
        now = view.now
        horizon = self._fluid_end(queue, candidates, now)
        blind = [a for a in lone_attempts(view) if self._sent_blind(a)]
        ends = ((now + self._remaining(a, now), a) for a in blind)
        late = sorted(((end, a) for end, a in ends if end > horizon), key=lambda e: -e[0])
        for end, attempt in late:
            if len(placements) >= budget:
                return
            task = attempt.task
            size = task_size(self.speeds, task)
            best: Candidate | None = None
            finish = float("inf")
            for c in candidates:
                if c.worker is attempt.worker or not c.slots or not can_take(c.worker, task):
                    continue
                at = c.slots[0] + c.seconds(size)
                if at < finish:
                    best, finish = c, at
            if best is None or finish >= now + HEDGE_GAIN * (end - now):
                continue
            if end - horizon < RESCUE_MARGIN * (finish - best.slots[0]):
                continue
            start = heapq.heapreplace(best.slots, finish)
            if start <= now and best.free > 0:
                best.free -= 1
                placements.append(Placement(task, best.worker, finish - now, hedge=True))

    def _fluid_end(self, queue: SizedQueue, candidates: list[Candidate], now: float) -> float:
        typical = queue.mean_size()
        reference = typical.reference_seconds
        work = queue.total_seconds
        rate = 0.0
        for c in candidates:
            seconds = c.seconds(typical)
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
            seconds = c.seconds(typical)
            slower = seconds / typical.reference_seconds if typical.reference_seconds else 1.0
            longest = 1.5 * (horizon - now) / slower if slower > 0 else float("inf")
            tasks = itertools.islice(queue.at_most(longest), LOOKAHEAD)

            def in_time(size: Size, seconds: float, c: Candidate = c) -> bool:
                return now + seconds + c.decode * size.spread <= horizon

            if not self._fill(c, tasks, now, placed, placements, budget, in_time):
                return

    def _fill(
        self,
        c: Candidate,
        tasks: Iterable[Task],
        now: float,
        placed: set[int],
        placements: list[Placement],
        budget: int,
        fits: Callable[[Size, float], bool] = lambda size, seconds: True,
    ) -> bool:
        """Start on ``c``'s free slots, in order, the ``tasks`` it can take and that ``fits``
        (given the task's size and its seconds there). False once the budget is spent."""
        for task in tasks:
            if len(placements) >= budget:
                return False
            if c.free <= 0:
                break
            if id(task) in placed or not can_take(c.worker, task):
                continue
            size = task_size(self.speeds, task)
            seconds = c.seconds(size)
            if fits(size, seconds):
                placements.append(Placement(task, c.worker, seconds))
                placed.add(id(task))
                heapq.heapreplace(c.slots, now + seconds)
                c.free -= 1
        return True

    def _place(self, task: Task, plan: Plan, now: float, placements: list[Placement]) -> bool:
        """Reserve the slot where ``task`` finishes first; True if that slot is free now."""
        size = task_size(self.speeds, task)
        # a long answer is as likely as a short one is harmless: place for the long one
        found = plan.earliest(task, Size(size.prompt, size.answer + PLACE_RISK * size.spread))
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
        # The LOOKAHEAD longest, not all of them sorted: a thousand workers' last wave.
        stragglers = heapq.nlargest(
            LOOKAHEAD,
            ((self._remaining(a, now), n, a) for n, a in enumerate(lone_attempts(view))),
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
            if seconds >= HEDGE_GAIN * remaining and not self._ends_sooner_if_long(
                attempt, now, worker_id, size
            ):
                continue
            worker = next(w for w in idle if w.id == worker_id)
            placements.append(Placement(task, worker, seconds, hedge=True))
            free[worker_id] -= 1
            if not free[worker_id]:
                del free[worker_id]
        return placements

    def _ends_sooner_if_long(self, attempt: Attempt, now: float, worker: str, size: Size) -> bool:
        """Whether a copy on ``worker`` would end clearly sooner than ``attempt`` should the
        answer be a long one (``Size.spread`` longer than the mean; a copy writes as much
        as the first). A slot free at the end of a batch costs nothing, and the batch ends
        with its long answers: a slow decoder writing one is worth copying to a fast one
        even when an answer of average length would end about as soon where it runs."""
        if size.spread <= 0:
            return False
        long = Size(size.prompt, size.answer + size.spread)
        elapsed = now - attempt.started
        left = self.speeds.speed(attempt.worker.id).seconds(long) - elapsed
        return self.speeds.speed(worker).seconds(long) < HEDGE_GAIN * left

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
            prompt=max(prompt_read(completion, size.prompt), 1.0),
            answer=completion.completion_tokens or size.answer,
        )
        self._learn_speed(attempt, actual, completion, latency)

    def _sent_blind(self, attempt: Attempt) -> bool:
        """Whether the attempt was placed before its worker had ever answered."""
        return attempt.started < self._answered_at.get(attempt.worker.id, float("inf"))

    def _learn_speed(
        self, attempt: Attempt, actual: Size, completion: Completion, latency: float
    ) -> None:
        """The worker's speed from one answer, marked cold if it was sent before the
        worker's first answer came (see :meth:`SpeedModel.observe`)."""
        worker = attempt.worker.id
        self._answered_at.setdefault(worker, attempt.started + latency)
        self.speeds.observe(
            worker,
            actual,
            latency,
            prefill_seconds=completion.prefill_seconds,
            decode_seconds=completion.generation_seconds,
            cold=self._sent_blind(attempt),
        )


def prompt_read(completion: Completion, expected: float) -> float:
    """The prompt tokens the server read for ``completion``, what it took from its prefix
    cache left out: its own count where it gives one (Ollama), else the prompt's size less
    the cached tokens. ``expected`` stands in for a size the server does not report.

    Ollama reports only what it read after a cache hit, and the cached part is judged
    against the client's estimate, so the two must not be mixed: the estimate is larger
    than the server's count, and their difference would leave almost nothing read.
    """
    if completion.read_tokens is not None:
        return float(completion.read_tokens)
    return (completion.prompt_tokens or expected) - (completion.cached_tokens or 0)
