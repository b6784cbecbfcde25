"""Read-only, live views of the workers: what ``cluster.workers`` returns.

A :class:`WorkerView` reads the worker's state each time an attribute is asked for, so a
view kept in a variable stays current; it has no way to change anything. The panel, the
``check()`` and ``metrics()`` tables, the CLI and the benchmarks read workers through it.

>>> [(w.id, w.health, w.in_flight, w.limit) for w in cluster.workers]
>>> cluster.workers[0].stats.avg_latency
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .._config import WorkerConfig
    from .._types import ModelInfo
    from .worker import Worker, WorkerStats

__all__ = ["WorkerView"]


class WorkerView:
    """One worker as it is now: its config, health, limits, load, window and speed."""

    __slots__ = ("_worker",)

    def __init__(self, worker: Worker) -> None:
        self._worker = worker

    @property
    def id(self) -> str:
        return self._worker.id

    @property
    def config(self) -> WorkerConfig:
        """The worker's settings, as configured."""
        return self._worker.config

    @property
    def type(self) -> str:
        return self._worker.config.type

    @property
    def url(self) -> str:
        return self._worker.config.base_url

    @property
    def model(self) -> str | None:
        """The model requests go to: the configured one, or the one the server has loaded."""
        return self._worker.model

    @property
    def models(self) -> tuple[ModelInfo, ...]:
        """Every model the server listed at its last check."""
        return self._worker.models

    @property
    def model_loaded(self) -> bool | None:
        return self._worker.model_loaded

    @property
    def health(self) -> str:
        """``unknown``, ``healthy``, ``suspect`` or ``down``."""
        return self._worker.health.value

    @property
    def healthy(self) -> bool:
        return self.health == "healthy"

    @property
    def reason(self) -> str:
        """Why the worker is not taking work (empty when it is)."""
        return self._worker.status_reason()

    @property
    def resting(self) -> bool:
        """Healthy, but pausing after an overload or failures."""
        return self.healthy and self._worker.paused_until > time.monotonic()

    @property
    def last_error(self) -> str | None:
        return self._worker.last_error

    @property
    def max_concurrent_requests(self) -> int:
        """The configured maximum of requests in flight."""
        return self._worker.config.max_concurrent_requests

    @property
    def limit(self) -> int:
        """The adaptive limit now (at most ``max_concurrent_requests``)."""
        return self._worker.limit

    @property
    def in_flight(self) -> int:
        return self._worker.in_flight

    @property
    def free_slots(self) -> int:
        return self._worker.free_slots

    @property
    def context_length(self) -> int | None:
        """The context window in tokens, as configured, reported or learned."""
        return self._worker.context_length

    @property
    def context_learned(self) -> bool:
        """Whether ``context_length`` is the window the server named when it refused a
        prompt as too long (smaller than the configured or probed one)."""
        return self._worker.learned_context_length is not None

    @property
    def probe_latency(self) -> float | None:
        """Seconds the last health check took."""
        return self._worker.probe_latency

    @property
    def stats(self) -> WorkerStats:
        """A copy of the worker's counters now: requests, successes, failures, latency and
        tokens (``avg_latency`` and ``tokens_per_second`` are computed from them)."""
        return dataclasses.replace(self._worker.stats)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WorkerView) and other._worker is self._worker

    def __hash__(self) -> int:
        return hash(id(self._worker))

    def __repr__(self) -> str:
        w = self._worker
        return f"<WorkerView {w.id} {w.health.value} {w.in_flight}/{w.limit}>"
