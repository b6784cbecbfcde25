"""Which workers may take a task, and the tasks no worker can take.

A worker may take a task when the task is not excluded from it (an option its server has
no field for, a refused model, a window found too small) and the task fits its context
window. The dispatcher asks here before it queues a task (one no worker could ever take
fails at once, with what to do next) and once a second for the queue (a task whose only
possible workers stay unhealthy for ``no_worker_timeout`` fails with ``NoHealthyWorkers``).

Neither question scans tasks x workers: a task no worker is excluded from is judged by the
largest context windows alone (of all workers, and of the healthy ones), and the options a
server lacks are looked up once per kind of server. A lab of a thousand workers and a
stream of a million tasks spent most of its time here before (performance.md, "Scale").
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .._config import ClusterSettings
from .._errors import ContextLengthExceeded, NoHealthyWorkers, RequestRejected, WorkerError
from .backends.options import no_worker_honours, unsupported_options, warn_lacking
from .pool import WorkerPool
from .tasks import Task
from .worker import Health, Worker

__all__ = ["Eligibility"]


def fits(task: Task, window: int | None) -> bool:
    """Whether ``task`` fits a window of ``window`` tokens (``None``: unbounded)."""
    return window is None or task.needed_tokens is None or task.needed_tokens <= window


def largest_window(workers: Iterable[Worker]) -> int | None:
    """The largest context window among ``workers``; ``None`` when one is unknown
    (unbounded), ``-1`` when there are none."""
    largest = -1
    for w in workers:
        if w.context_length is None:
            return None
        largest = max(largest, w.context_length)
    return largest


class Eligibility:
    """The workers each task may go to, for one pool."""

    def __init__(self, pool: WorkerPool, settings: ClusterSettings) -> None:
        self.pool = pool
        self.settings = settings
        self._warned_lacking: set[tuple[str, str]] = set()

    def admit(self, tasks: Sequence[Task]) -> tuple[list[Task], list[tuple[Task, WorkerError]]]:
        """Tasks some worker may take, and those none ever could (with why)."""
        ok: list[Task] = []
        never: list[tuple[Task, WorkerError]] = []
        largest = largest_window(self.pool.workers)
        kinds = {w.config.type for w in self.pool.workers}
        for task in tasks:
            self._exclude_lacking(task, kinds)
            error = None if not task.excluded and fits(task, largest) else self.never(task)
            if error is None:
                ok.append(task)
            else:
                never.append((task, error))
        return ok, never

    def _exclude_lacking(self, task: Task, kinds: set[str]) -> None:
        """A worker whose server has no field for an option the task sets never gets it.
        ``kinds``: the workers' types."""
        options = task.request.options
        if not options:
            return
        lacking = {kind for kind in kinds if unsupported_options(kind, options)}
        if not lacking:
            return  # one look per kind of server, not per worker: a lab has a handful
        for worker in self.pool.workers:
            kind = worker.config.type
            if kind in lacking and worker.id not in task.excluded:
                task.excluded.add(worker.id)
                warn_lacking(worker.id, kind, options, self._warned_lacking)

    def possible(self, task: Task) -> list[Worker]:
        """The workers that may take ``task``: not excluded from it, and with room for it."""
        return [
            w for w in self.pool.workers if w.id not in task.excluded and w.fits(task.needed_tokens)
        ]

    def never(self, task: Task) -> WorkerError | None:
        """Why no worker could ever take ``task``; ``None`` when one can."""
        if self.possible(task):
            return None
        if task.last_error is not None:
            return task.last_error
        workers = [(w.id, w.config.type) for w in self.pool.workers]
        message = no_worker_honours(workers, task.request.options)
        if message is not None:
            return RequestRejected(message)
        largest = max((w.context_length or 0 for w in self.pool.workers), default=0)
        return ContextLengthExceeded(
            f"the prompt needs about {task.needed_tokens} tokens, but the largest context "
            f"window in the cluster is {largest}; shorten it, let analyze() chunk it, or "
            "add a worker with a larger context_length",
        )

    def stuck(
        self, queued: Iterable[Task], now: float
    ) -> list[tuple[Task, WorkerError | NoHealthyWorkers]]:
        """Queued tasks that no longer fit any worker, or whose only possible workers have
        been unhealthy for ``no_worker_timeout`` (each task's ``waiting_since`` is kept
        here)."""
        out: list[tuple[Task, WorkerError | NoHealthyWorkers]] = []
        largest = largest_window(self.pool.workers)
        healthy = largest_window(w for w in self.pool.workers if w.health is Health.HEALTHY)
        for task in queued:
            error: WorkerError | NoHealthyWorkers | None = None
            if task.excluded or not fits(task, largest):
                error = self.never(task)
            if error is None:
                if task.excluded:
                    served = any(w.health is Health.HEALTHY for w in self.possible(task))
                else:
                    served = fits(task, healthy)
                if served:
                    task.waiting_since = None
                elif task.waiting_since is None:
                    task.waiting_since = now
                elif now - task.waiting_since > self.settings.no_worker_timeout:
                    error = self.no_workers_error(self.possible(task))
            if error is not None:
                out.append((task, error))
        return out

    def no_workers_error(self, workers: Sequence[Worker] | None = None) -> NoHealthyWorkers:
        states = "; ".join(
            f"{w.id}: {w.health.value} ({w.reason})" for w in (workers or self.pool.workers)
        )
        return NoHealthyWorkers(
            f"no healthy worker for {self.settings.no_worker_timeout:g} s ({states}). Start or "
            "wake the servers, check `cluster.check()`, or raise no_worker_timeout"
        )
