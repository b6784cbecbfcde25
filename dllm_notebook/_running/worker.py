"""One worker: its configuration, health, live counters and learned limits.

The pool (``pool.py``) owns the workers' health checks and decides their state; a worker
only holds it, with what the dispatcher and the display read: its slots, its speed
counters (``WorkerStats``) and its snapshot for ``cluster.workers``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

from .._config import WorkerConfig
from .._types import ModelInfo
from .backends import Backend
from .first_token import FirstTokenWatch
from .limits import LEARN_MAXIMUM, AdaptiveLimit

__all__ = ["Health", "Worker", "WorkerStats"]


class Health(str, Enum):
    UNKNOWN = "unknown"
    HEALTHY = "healthy"
    SUSPECT = "suspect"
    LOADING = "loading"
    DOWN = "down"


@dataclass
class WorkerStats:
    """A worker's counters since the cluster started."""

    requests: int = 0
    successes: int = 0
    failures: int = 0
    latency_total: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    generation_seconds: float = 0.0

    @property
    def avg_latency(self) -> float | None:
        return self.latency_total / self.successes if self.successes else None

    @property
    def tokens_per_second(self) -> float | None:
        seconds = self.generation_seconds or self.latency_total
        return self.completion_tokens / seconds if seconds and self.completion_tokens else None


class Worker:
    """One server's live state. Mutated only on the library's event-loop thread."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.id = config.id
        self.backend: Backend | None = None
        self.health = Health.UNKNOWN
        self.reason = "not checked yet"
        self.models: tuple[ModelInfo, ...] = ()
        self.model: str | None = config.model
        self.model_loaded: bool | None = None
        self.context_length: int | None = config.context_length
        self.learned_context_length: int | None = None
        """The window the server named when it refused a prompt as too long (it wins over
        the configured or probed one from then on, as long as the model stays the same)."""
        self.concurrency = AdaptiveLimit(config.max_concurrent_requests)
        self.limit = self.concurrency.limit
        self.learn_concurrency_if_unset()
        self.first_token = FirstTokenWatch()
        """When a streamed request's first token is overdue (it waits in the queue)."""
        self.in_flight = 0
        self.paused_until = 0.0
        self.consecutive_failures = 0
        self.trips = 0
        self.last_error: str | None = None
        self.model_error: str | None = None
        self.probe_latency: float | None = None
        self.checked_at: float | None = None
        self.stats = WorkerStats()
        self.wake = asyncio.Event()

    def learn_concurrency_if_unset(self) -> None:
        """An ``openai`` worker with no ``max_concurrent_requests`` learns its limit (see
        ``WorkerConfig.learns_concurrency``): from a few requests up to the server's
        capacity, whose cap becomes the worker's maximum."""
        if self.config.learns_concurrency and not self.concurrency.learning:
            self.config = replace(self.config, max_concurrent_requests=LEARN_MAXIMUM)
            self.concurrency = AdaptiveLimit.learned()
            self.limit = self.concurrency.limit

    @property
    def free_slots(self) -> int:
        return self.limit - self.in_flight

    def dispatchable(self, now: float) -> bool:
        return self.health is Health.HEALTHY and self.free_slots > 0 and now >= self.paused_until

    def fits(self, needed_tokens: int | None) -> bool:
        return (
            needed_tokens is None
            or self.context_length is None
            or (needed_tokens <= self.context_length)
        )

    def status_reason(self) -> str:
        """Why the worker is not taking work, or an empty string when it is."""
        if self.health is not Health.HEALTHY:
            return self.reason
        rest = self.paused_until - time.monotonic()
        if rest > 0:
            return f"resting {rest:.0f} s after: {self.last_error or 'overload'}"
        return ""

    def snapshot(self) -> dict[str, Any]:
        """A plain dict of what a panel or a DataFrame shows."""
        return {
            "worker": self.id,
            "url": self.config.base_url,
            "type": self.config.type,
            "model": self.model,
            "health": self.health.value,
            "reason": self.status_reason(),
            "in_flight": self.in_flight,
            "max_concurrent": self.config.max_concurrent_requests,
            "requests": self.stats.requests,
            "successes": self.stats.successes,
            "failures": self.stats.failures,
            "avg_latency_s": self.stats.avg_latency,
            "tokens_per_s": self.stats.tokens_per_second,
            "context_length": self.context_length,
            "context_learned": self.learned_context_length is not None,
        }

    def __repr__(self) -> str:
        return f"<Worker {self.id} {self.health.value} {self.in_flight}/{self.limit}>"
