"""What the dispatcher and a scheduler pass between them: tasks, attempts, placements and
the view of the lab.

These are the types a custom :class:`~dllm_notebook.Scheduler` works with; they are exported
from the public namespace. Nothing here does anything: the dispatcher (``dispatch``)
executes, the scheduler (``scheduler``, ``earliest_finish``) decides.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .._errors import WorkerError
from .._types import ChatRequest

if TYPE_CHECKING:
    from .speed import Size
    from .worker import Worker

__all__ = ["Attempt", "LabView", "Placement", "Task"]


@dataclass(eq=False)
class Task:
    """One request's journey through the cluster."""

    index: int
    request: ChatRequest
    needed_tokens: int | None = None
    """Prompt plus answer, in estimated tokens: workers with a smaller window are skipped."""
    kind: str = ""
    """Tasks of one kind (the same prompt) have answers of similar length."""
    group: str = ""
    """Tasks of one group start with the same text (a paper, or chunk k of a paper, under
    each prompt of a preset): a worker that read one of them has the rest in its prefix
    cache. ``""``: a task of its own."""
    validate: Callable[[str], str | None] | None = None
    """What is wrong with an answer's text (``None``: nothing). An answer with a problem is
    asked again once, preferably on another worker; the next answer is kept either way."""
    attempts: int = 0
    overloads: int = 0
    invalid_retries: int = 0
    tried: set[str] = field(default_factory=set)
    excluded: set[str] = field(default_factory=set)
    last_error: WorkerError | None = None
    waiting_since: float | None = None
    settled: bool = False
    withdrawals: int = 0
    """Times a request of it was taken back from a server's queue before it started."""


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
    warm: bool = False
    """Sent to the worker that read the task's group: the server may answer it from its
    prefix cache."""
    withdrawn: bool = False
    """Taken back while it waited in the server's queue: its task goes back to the batch."""

    @property
    def expected_end(self) -> float:
        return self.started + self.expected


@dataclass(frozen=True)
class Placement:
    task: Task
    worker: Worker
    expected: float = 0.0
    hedge: bool = False
    size: Size | None = None
    """The size the scheduler expects there (smaller when the worker's cache holds the
    prompt's beginning); becomes the attempt's ``size``."""
    warm: bool = False
    """The worker read the task's group: its server may answer from its prefix cache.
    Becomes the attempt's ``warm``."""


@dataclass(frozen=True)
class LabView:
    """What the scheduler sees: the time, the workers that may take work now (healthy and
    not resting; some may have no free slot), and every attempt running on them."""

    now: float
    workers: Sequence[Worker]
    running: Mapping[str, Sequence[Attempt]]
