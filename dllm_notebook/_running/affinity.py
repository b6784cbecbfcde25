"""Prefix affinity: a paper's prompts go to the worker that read the paper, back to back.

Every prompt of a paper starts with the same text (the built-in layout: system message,
title, paper, then the question), so a server that keeps a prefix cache reads the paper
once if the paper's prompts reach the same slot one after another. Tasks carry a
``group`` (the paper, or chunk k of it) for this. :class:`PrefixAffinity` keeps
:class:`~.earliest_finish.EarliestFinish` as its frame (learned speeds, largest work first
where it finishes first, hedging at the end) and changes the unit it plans:

1. **Follow-ups first.** When the worker that last read a group has a free slot and no
   task of that group is running, the group's next task goes there; the server puts it on
   the slot that holds the paper (the free slot with the longest common prefix).
2. **A new group is planned whole.** Its tasks run back to back on one slot: the chain
   costs one full prefill, then for each further prompt only what the cache does not save
   there. Chains go largest first to where they finish first, and the group stays with
   that worker.
3. **The end game splits chains.** The last task of the chain expected to end last moves
   to the slot where, read in full, it ends first: one free now, or one of another worker
   once its planned work is done (a reservation, planned again on the next pass). It moves
   while the chain then ends clearly sooner (:data:`MOVE_GAIN`), so on a lab with more
   slots than papers the slow workers' chains are cut early and the fast ones read those
   papers again. A reader with a free slot keeps its chain's next task while other work
   waits. The end game starts once a follow-up has answered: before that nothing says
   what a cache saves, and a chain costed as full readings looks long enough to move.

Before a worker has answered, its speed is a guess. Equal guesses put the larger work on
the worker with more slots (most likely the larger machine), and a worker not measured
yet fills a free slot only with a unit that ends in time even at twice the guessed time
(:data:`UNMEASURED_SLOWDOWN`), else with the smallest: an Air that looks like an Ultra
must not start the batch on its largest paper. A second reading of a paper (rule 3) goes
only to a worker whose speed is measured.

Whether a worker caches is learned (``cache.py``), never assumed: a worker starts unknown
and keeps its groups so that follow-ups measure it. Until then it plans with the median
saving of the workers already measured, or with none while no worker is. A worker whose
follow-ups save little is treated as having no cache, and when no worker caches the plan
is exactly ``EarliestFinish``'s, as it is for a new batch with a free slot for every task.

Like the rest of the family this is pure: ``now`` is passed in (tests/test_affinity.py
runs whole labs with slot caches on a fake clock).
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .cache import CacheModel
from .earliest_finish import LOOKAHEAD, Candidate, EarliestFinish, prompt_read
from .scheduler import TaskQueue, can_take
from .sized_queue import SizedQueue, task_size
from .speed import Size, SpeedModel
from .tasks import Attempt, LabView, Placement, Task

if TYPE_CHECKING:
    from .._types import Completion

__all__ = ["PrefixAffinity"]

MOVE_GAIN = 0.25
"""The end game moves a chain's task only when the chain then ends sooner by at least this
share of what the task costs its reader: a move on an estimate's edge adds a reading for
nothing."""

UNMEASURED_SLOWDOWN = 2.0
"""How much slower than the lab's typical speed a worker that has not answered yet may
turn out to be, when it fills a free slot with work planned for others."""


class PrefixAffinity(EarliestFinish):
    """``EarliestFinish`` that keeps a paper's prompts on the worker that read the paper.

    ``speeds`` and ``cache`` are shared by the cluster's batches, so what one batch
    learns the next uses.
    """

    def __init__(
        self,
        speeds: SpeedModel | None = None,
        *,
        hedge: bool = True,
        cache: CacheModel | None = None,
    ) -> None:
        super().__init__(speeds, hedge=hedge)
        self.cache = cache or CacheModel()
        self._reader: dict[str, str] = {}
        """Group -> the worker that last started one of its tasks (and keeps it)."""
        self._follow_ups: set[tuple[int, str]] = set()
        """(id(task), worker) of attempts placed where their group had been read."""
        self._sizes: dict[int, Size] = {}
        """id(task) -> its expected size, for one planning pass (a chain is costed on every
        candidate, and the speed model answers the same within a pass)."""

    def _size(self, task: Task) -> Size:
        size = self._sizes.get(id(task))
        if size is None:
            size = self._sizes[id(task)] = task_size(self.speeds, task)
        return size

    # -- costs ------------------------------------------------------------------------
    def _saving(self, worker: str) -> float:
        """The share of a follow-up's prefill to plan with: the worker's own once measured,
        else the median of the workers measured so far, else 0."""
        saving = self.cache.saving(worker)
        if saving is None:
            saving = self.cache.typical()
        return saving or 0.0

    def _holds(self, worker: str) -> bool:
        """Whether groups stay with this worker: it caches, or it is not measured yet."""
        return self.cache.caches(worker) is not False

    def _seconds(self, c: Candidate, size: Size, cached: bool) -> float:
        prefill = c.prefill * size.prompt
        if cached:
            prefill *= 1 - self._saving(c.id)
        return prefill + c.decode * size.answer

    def _chain(self, c: Candidate, tasks: Sequence[Task], read: bool = False) -> float:
        """Seconds ``tasks`` take back to back on one slot of ``c`` (``read``: the slot
        holds their paper already)."""
        if not tasks:
            return 0.0
        sizes = [self._size(t) for t in tasks]
        prompt = sum(size.prompt for size in sizes)
        answer = sum(size.answer for size in sizes)
        if self._holds(c.id):
            first = 0.0 if read else sizes[0].prompt
            prompt = first + (prompt - first) * (1 - self._saving(c.id))
        return c.prefill * prompt + c.decode * answer

    @staticmethod
    def _fits_at_once(queue: TaskQueue, view: LabView) -> bool:
        """Every task of a new batch has a free slot: a paper read on several slots at once
        ends sooner than a chain on one (whose answers are decoded in turn)."""
        free = sum(max(0, w.free_slots) for w in view.workers)
        return not any(view.running.values()) and len(queue) <= free

    # -- placing ----------------------------------------------------------------------
    def assign(self, queue: TaskQueue, view: LabView, budget: int) -> list[Placement]:
        if (
            not isinstance(queue, SizedQueue)
            or not self._any_cache(view)
            or not any(task.group for task in queue)
            or self._fits_at_once(queue, view)
        ):
            return super().assign(queue, view, budget)
        candidates = self._candidates(view)
        if not sum(c.free for c in candidates) or budget <= 0 or not len(queue):
            return []
        self._sizes = {}
        now = view.now
        by_id = {c.id: c for c in candidates}
        running = Counter(
            (a.task.group, worker)
            for worker, attempts in view.running.items()
            for a in attempts
            if a.task.group
        )
        groups: dict[str, list[Task]] = {}
        units: list[list[Task]] = []
        for task in queue:  # largest first
            if task.group:
                groups.setdefault(task.group, []).append(task)
            else:
                units.append([task])
        placements: list[Placement] = []
        held: dict[str, Candidate] = {}
        ready: list[str] = []
        """Groups whose reader has a slot free for their next task: it is kept for them
        while the plan is made, and given back when the end game sends the rest away."""
        for group, tasks in groups.items():
            reader = by_id.get(self._reader.get(group, ""))
            if reader is None or not self._holds(reader.id):
                units.append(tasks)
                continue
            held[group] = reader
            # A retry (an error, or an invalid answer) and a task the reader may not take
            # leave the chain: planned alone, they go elsewhere when they can, and back to
            # the reader when it is the only worker (never left waiting for a chain).
            away = [t for t in tasks if not can_take(reader.worker, t) or reader.id in t.tried]
            for task in away:
                tasks.remove(task)
                units.append([task])
            if running[group, reader.id]:  # the slot reading it is busy: the chain follows
                self._extend(reader, group, tasks, view, now)
            elif tasks and reader.free > 0 and len(ready) < budget:
                ready.append(group)
                reader.free -= 1
                heapq.heapreplace(reader.slots, now + self._chain(reader, tasks, read=True))
        units.sort(key=lambda u: -sum(self._size(t).reference_seconds for t in u))
        budget -= len(ready)
        end = self._plan(units, candidates, now, placements, budget)
        waiting = any(units)
        self._split(
            groups, held, running, ready, waiting, view, candidates, now, placements, budget
        )
        for group in ready:
            reader, tasks = held[group], groups[group]
            reader.free += 1
            if not tasks:
                continue  # the end game sent the rest to faster workers
            follow = tasks.pop(0)
            seconds = self._seconds(reader, self._size(follow), True)
            self._start(placements, follow, reader, now, seconds, 0.0, follow_up=True)
        self._backfill_units(units, candidates, now, placements, budget + len(ready), end)
        return placements

    def _any_cache(self, view: LabView) -> bool:
        """Plan by groups unless every answer so far says no worker caches."""
        known = [self.cache.caches(w.id) for w in view.workers]
        return any(known) or not any(k is False for k in known)

    def _start(
        self,
        placements: list[Placement],
        task: Task,
        c: Candidate,
        now: float,
        seconds: float,
        reserve: float,
        *,
        follow_up: bool,
    ) -> None:
        """Start ``task`` on a free slot of ``c``, which is then busy for ``reserve`` s."""
        size = None
        if follow_up:
            full = self._size(task)
            size = Size(full.prompt * (1 - self._saving(c.id)), full.answer)
        placements.append(Placement(task, c.worker, seconds, size=size, warm=follow_up))
        c.free -= 1
        if reserve and c.slots and c.slots[0] <= now:
            heapq.heapreplace(c.slots, now + reserve)
        if follow_up:
            self._follow_ups.add((id(task), c.id))
        if task.group and self._holds(c.id):
            self._reader[task.group] = c.id

    def _extend(
        self, reader: Candidate, group: str, tasks: Sequence[Task], view: LabView, now: float
    ) -> None:
        """The slot running ``group`` on ``reader`` stays busy for the rest of its chain."""
        mine = [a for a in view.running.get(reader.id, ()) if a.task.group == group]
        if not mine or not tasks:
            return
        ends = now + self._remaining(mine[0], now) + 1e-6  # as ``_candidates`` computed it
        for index, slot in enumerate(reader.slots):
            if abs(slot - ends) < 1e-9:
                reader.slots[index] = slot + self._chain(reader, tasks, read=True)
                heapq.heapify(reader.slots)
                return

    def _plan(
        self,
        units: list[list[Task]],
        candidates: list[Candidate],
        now: float,
        placements: list[Placement],
        budget: int,
    ) -> float:
        """Each unit (a group's chain, or one task) where it finishes first; start the
        first task of those whose slot is free now. Returns the plan's end."""
        end = now
        for unit in units[:LOOKAHEAD]:
            if len(placements) >= budget or not any(c.free > 0 for c in candidates):
                break
            first = unit[0]
            best: Candidate | None = None
            best_key: tuple[bool, float, int] = (True, float("inf"), 0)
            for c in candidates:
                if not c.slots or not can_take(c.worker, first):
                    continue
                finish = c.slots[0] + self._chain(c, unit)
                # equal finishes (speeds not measured yet): the machine with more slots,
                # most likely the larger one, takes the larger work
                key = (c.id in first.tried, finish, -c.worker.limit)
                if key < best_key:
                    best, best_key = c, key
            if best is None:
                continue
            end = max(end, best_key[1])
            start = heapq.heapreplace(best.slots, best_key[1])
            if start <= now and best.free > 0:
                unit.remove(first)
                seconds = self._seconds(best, self._size(first), False)
                placements.append(Placement(first, best.worker, seconds))
                best.free -= 1
                if first.group and self._holds(best.id):
                    self._reader[first.group] = best.id
        return end

    def _split(
        self,
        groups: dict[str, list[Task]],
        held: dict[str, Candidate],
        running: Counter[tuple[str, str]],
        ready: list[str],
        waiting: bool,
        view: LabView,
        candidates: list[Candidate],
        now: float,
        placements: list[Placement],
        budget: int,
    ) -> None:
        """The end game: the last task of the chain expected to end last moves to the slot
        where, read in full, it ends first (free now, or once its planned work is done),
        while that is sooner than the chain would reach it. Moved to a free slot, it starts
        now; else it waits, and the next pass plans it again."""
        known = self.speeds.known()  # a second reading pays only on a worker known to be fast
        targets = [c for c in candidates if c.id in known and c.slots]
        if not targets or self.cache.typical() is None:
            return  # before any follow-up has shown what a cache saves, chains stay whole
        chains: list[tuple[float, str]] = []
        for group, reader in held.items():
            if not groups[group]:
                continue
            start = now
            if running[group, reader.id]:
                mine = [a for a in view.running.get(reader.id, ()) if a.task.group == group]
                start += max((self._remaining(a, now) for a in mine), default=0.0)
            ends = start + self._chain(reader, groups[group], read=True)
            heapq.heappush(chains, (-ends, group))
        while chains:
            negative_end, group = heapq.heappop(chains)
            chain_end, reader, tasks = -negative_end, held[group], groups[group]
            task = tasks[-1]
            size = self._size(task)
            options = [
                (max(c.slots[0], now) + self._seconds(c, size, False), -c.worker.limit, c)
                for c in targets
                if c is not reader and can_take(c.worker, task)
            ]
            if not options:
                continue
            finish, _, c = min(options, key=lambda o: o[:2])
            if finish >= chain_end - MOVE_GAIN * self._seconds(reader, size, True):
                continue  # a second reading would not end clearly sooner than the chain
            if c.slots[0] > now and group in ready and len(tasks) == 1 and waiting:
                continue  # its reader is free now and other work waits: it stays busy
            if c.slots[0] <= now:
                if c.free <= 0 or len(placements) >= budget:
                    continue
                placements.append(Placement(task, c.worker, finish - now))
                c.free -= 1
            heapq.heapreplace(c.slots, finish)
            tasks.remove(task)
            if tasks:
                left = chain_end - self._seconds(reader, size, True)
                heapq.heappush(chains, (-left, group))

    def _backfill_units(
        self,
        units: list[list[Task]],
        candidates: list[Candidate],
        now: float,
        placements: list[Placement],
        budget: int,
        horizon: float,
    ) -> None:
        """A slot still free takes the largest unit waiting for another worker that it
        finishes by the plan's end."""
        known = self.speeds.known()
        for c in sorted(candidates, key=lambda c: -c.worker.limit):
            # a worker not measured yet may be much slower than it looks: it takes the
            # largest unit that ends in time even at UNMEASURED_SLOWDOWN, else the smallest
            slowdown = 1.0 if c.id in known else UNMEASURED_SLOWDOWN
            while c.free > 0 and len(placements) < budget:
                fits = (
                    u
                    for u in units
                    if u
                    and can_take(c.worker, u[0])
                    and now + slowdown * self._chain(c, u) <= horizon
                )
                unit = next(fits, None)
                if unit is None and c.id not in known:
                    unit = next(
                        (u for u in reversed(units) if u and can_take(c.worker, u[0])), None
                    )
                if unit is None:
                    break
                first = unit.pop(0)
                seconds = self._seconds(c, self._size(first), False)
                reserve = seconds + self._chain(c, unit, read=True)
                self._start(placements, first, c, now, seconds, reserve, follow_up=False)

    # -- learning -----------------------------------------------------------------------
    def _remaining(self, attempt: Attempt, now: float) -> float:
        if attempt.size is None and (id(attempt.task), attempt.worker.id) in self._follow_ups:
            size = task_size(self.speeds, attempt.task)
            attempt.size = Size(size.prompt * (1 - self._saving(attempt.worker.id)), size.answer)
        return super()._remaining(attempt, now)

    def observe(self, attempt: Attempt, completion: Completion, latency: float) -> None:
        task, worker = attempt.task, attempt.worker.id
        key = (id(task), worker)
        follow_up = key in self._follow_ups
        self._follow_ups.discard(key)
        size = task_size(self.speeds, task)
        estimated = task.request.prompt_tokens_estimate or 0
        self.speeds.observe_tokens(
            estimated, task.kind, completion.prompt_tokens, completion.completion_tokens
        )
        if follow_up:
            speed = self.speeds.speed(worker)
            self.cache.observe_follow_up(worker, completion, size, latency, speed)
            if completion.cached_tokens is None:
                return  # the cache and the speed cannot be told apart in this answer
        else:
            self.cache.observe_cold(worker, completion, completion.prompt_tokens or size.prompt)
        actual = Size(
            prompt=max(prompt_read(completion, size.prompt), 1.0),
            answer=completion.completion_tokens or size.answer,
        )
        self._learn_speed(attempt, actual, completion, latency)
