"""The queue of the ``EarliestFinish`` family: tasks by expected size, largest first.

A task's size is its expected prompt and answer tokens (``SpeedModel.size``); the queue
orders tasks by their duration on the prior worker, hands out the largest first or those
that fit in a given time, and keeps the totals a fluid estimate of the batch's end needs.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Iterator

from .speed import Size, SpeedModel
from .tasks import Task

__all__ = ["SizedQueue", "task_size"]


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
