"""Which task goes where, and when to start a second copy: the cluster's decisions.

The dispatcher executes; a :class:`Scheduler` decides. It owns each batch's queue of
waiting tasks, and on every call it looks at the workers (their free slots and the attempts
running on them, with the time each was expected to take) and returns placements. It never
sends a request, sleeps or reads the clock: ``now`` is passed in, which is what lets
tests/test_scheduler.py simulate a whole lab on a fake clock.

:class:`EarliestFinish` (the default, in ``_earliest``) learns each worker's speed from its
answers, takes the largest work first, and puts each task where it is expected to *finish*
first: a big task may wait a moment for a fast Mac rather than start at once on a slow one,
which then takes a smaller task. When nothing is left to start it hedges: a task expected
to finish much later on a slow worker gets a second copy on an idle fast one; the first
answer wins.

:class:`LeastLoaded` is the original tool's strategy (input order, the worker with most
free slots); the benchmark compares against it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Protocol

from .tasks import Attempt, LabView, Placement, Task

if TYPE_CHECKING:
    from .._types import Completion
    from .worker import Worker

__all__ = ["LeastLoaded", "Scheduler", "TaskQueue"]


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
