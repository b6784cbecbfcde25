"""Where each task goes: the seam between deciding and doing.

The dispatcher asks a :class:`Scheduler` which of the workers that have a free slot should
take a task. Schedulers are pure: they look at worker state and decide, nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ._dispatch import Task
    from ._pool import Worker

__all__ = ["LeastLoaded", "Scheduler"]


class Scheduler(Protocol):
    def pick(self, task: Task, workers: Sequence[Worker]) -> Worker:
        """Choose one of ``workers`` (all healthy, with a free slot, able to take the task)."""
        ...


class LeastLoaded:
    """The worker with the most spare slots; a retry prefers a worker it has not tried."""

    def pick(self, task: Task, workers: Sequence[Worker]) -> Worker:
        return max(
            workers,
            key=lambda w: (w.id not in task.tried, w.free_slots, -w.stats.requests),
        )
