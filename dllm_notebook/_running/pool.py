"""The workers: their live state, their health checks, and their slots.

A worker is in rotation only while ``healthy``. Connection failures or repeated bad answers
make it ``suspect`` (out of rotation, checked again at once); a failed check makes it
``down``, re-checked with exponential back-off up to ``health_check_interval``. A server
that says it is still loading its model (llama.cpp's ``/health`` 503) is ``loading``,
re-checked every :data:`LOADING_RECHECK` seconds. It comes back by itself when a check
passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

import httpx

from .._config import ClusterSettings, WorkerConfig
from .._errors import (
    ContextLengthExceeded,
    WorkerError,
    WorkerLoading,
    WorkerOverloaded,
    WorkerUnreachable,
)
from .._events import EventHub
from .._loop import wait_within
from .._types import Completion, ServerInfo
from .backends import detect_type, make_backend
from .limits import LEARN_MAXIMUM, AdaptiveLimit
from .transport import transport
from .worker import Health, Worker

__all__ = ["WorkerPool"]

log = logging.getLogger("dllm_notebook")

FAILURES_BEFORE_SUSPECT = 3
MAX_BACKOFF_TRIPS = 6
LOADING_RECHECK = 1.0


def _connections(config: WorkerConfig) -> int:
    """HTTP connections to one worker: its slots, plus a few for health checks. A llama.cpp
    server may report more slots than the configured default (see ``slots_from_server``);
    an ``openai`` worker (or one detected as such) may learn up to ``LEARN_MAXIMUM``."""
    if config.slots_from_server and config.type in ("openai", "auto"):
        return LEARN_MAXIMUM + 4
    server_slots = config.slots_from_server and config.type == "llama_cpp"
    return (64 if server_slots else config.max_concurrent_requests) + 4


class WorkerPool:
    """Owns the workers, their HTTP clients and the background health checks."""

    def __init__(self, configs: Sequence[WorkerConfig], settings: ClusterSettings, hub: EventHub):
        self.settings = settings
        self.hub = hub
        self.workers = [Worker(c) for c in configs]
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._watchers: list[asyncio.Task[None]] = []
        self._listeners: list[Callable[[], None]] = []
        self._closed = False
        self.in_flight = 0

    # -- lifecycle ------------------------------------------------------------------
    async def start(self) -> None:
        await asyncio.gather(*(self.check(w, detailed=True) for w in self.workers))
        if not self._closed:
            self._watchers = [asyncio.create_task(self._watch(w)) for w in self.workers]

    async def aclose(self) -> None:
        self._closed = True
        for task in self._watchers:
            task.cancel()
        for task in self._watchers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await asyncio.gather(*(c.aclose() for c in self._clients.values()))
        self._clients.clear()

    def add_listener(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Called whenever a slot frees up or a worker's health changes."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def notify(self) -> None:
        for listener in list(self._listeners):
            listener()

    # -- slots ----------------------------------------------------------------------
    def capacity_left(self) -> int:
        """Requests the cluster may still start: up to ``max_concurrent_batch``, or with
        ``"auto"`` up to every slot of every healthy worker."""
        cap = self.settings.max_concurrent_batch
        if cap == "auto":
            cap = sum(w.limit for w in self.workers if w.health is Health.HEALTHY)
        return cap - self.in_flight

    def acquire(self, worker: Worker) -> None:
        worker.in_flight += 1
        worker.stats.requests += 1
        self.in_flight += 1

    def release(self, worker: Worker) -> None:
        worker.in_flight -= 1
        self.in_flight -= 1
        self.notify()

    # -- outcomes reported by the dispatcher ----------------------------------------
    def record_success(
        self,
        worker: Worker,
        completion: Completion,
        latency: float,
        *,
        concurrency: int,
        prompt_tokens_estimate: int | None = None,
        adapt: bool = True,
    ) -> None:
        """Count one answer and adapt the worker's limit. ``concurrency``: requests in flight
        on the worker when this one started (itself included); ``prompt_tokens_estimate``:
        the prompt's size when the server did not report it; ``adapt=False``: count it but
        leave the limit alone (an answer served from the prefix cache)."""
        s = worker.stats
        s.successes += 1
        s.latency_total += latency
        s.prompt_tokens += completion.prompt_tokens or 0
        s.completion_tokens += completion.completion_tokens or 0
        s.generation_seconds += completion.generation_seconds or 0.0
        worker.consecutive_failures = 0
        if s.successes % 10 == 0:
            worker.trips = 0
        if not adapt:
            return
        exact = bool(completion.prefill_seconds and completion.generation_seconds)
        if exact:
            # The server's own time for this request, without its queue: the exact measure.
            work = (completion.prefill_seconds or 0.0) + (completion.generation_seconds or 0.0)
        else:
            prompt = completion.prompt_tokens or prompt_tokens_estimate or 0
            prompt = max(0, prompt - (completion.cached_tokens or 0))  # what it really read
            answer = completion.completion_tokens or len(completion.text) // 4
            work = AdaptiveLimit.work(prompt, answer)
        worker.limit = worker.concurrency.on_success(latency, work, concurrency, exact=exact)

    def record_first_token_overdue(self, worker: Worker, concurrency: int) -> None:
        """A streamed request sent with ``concurrency`` in flight on ``worker`` has no first
        token by its due time: it waits in the server's queue. The limit drops now."""
        before = worker.limit
        worker.limit = worker.concurrency.on_first_token(concurrency)
        if worker.limit < before:
            log.debug(
                "worker %s: a first token is overdue with %d in flight; limit %d -> %d",
                worker.id,
                concurrency,
                before,
                worker.limit,
            )

    def record_failure(self, worker: Worker, error: WorkerError) -> None:
        worker.stats.failures += 1
        if isinstance(error, ContextLengthExceeded) and error.context_length:
            self.learn_context_length(worker, error.context_length)
        if isinstance(error, WorkerUnreachable):
            self.set_suspect(worker, error.detail)
        elif error.worker_fault:
            worker.consecutive_failures += 1
            if worker.consecutive_failures >= FAILURES_BEFORE_SUSPECT:
                self.set_suspect(
                    worker, f"{worker.consecutive_failures} failures in a row: {error.detail}"
                )

    def learn_context_length(self, worker: Worker, window: int) -> None:
        """The server named its window when it refused a prompt: use it from now on.

        Only a smaller window than the one believed is learned (a refusal under a larger
        one was about the answer's room, not the window). Health checks keep it: a
        server's listing can name the model's trained window, not the one it runs with.
        """
        believed = worker.context_length
        if believed is not None and window >= believed:
            return
        worker.learned_context_length = worker.context_length = window
        log.warning(
            "worker %s: the server refused a prompt and reports a context window of %d "
            "tokens (%s); using %d from now on",
            worker.id,
            window,
            f"{believed} was believed" if believed else "it was unknown",
            window,
        )
        self.notify()

    def record_overload(
        self, worker: Worker, error: WorkerOverloaded, *, concurrency: int | None = None
    ) -> None:
        """A 429/503: the worker rests and its limit halves. ``concurrency``: requests in
        flight on it when the refused one was sent (itself included)."""
        worker.stats.failures += 1
        worker.last_error = error.detail
        if worker.concurrency.answered(concurrency):
            return  # one overload, many refusals: it rests and backs off once
        worker.limit = worker.concurrency.on_overload(concurrency)
        worker.trips = min(worker.trips + 1, MAX_BACKOFF_TRIPS)
        worker.paused_until = time.monotonic() + (error.retry_after or 0.5 * 2**worker.trips)

    def set_suspect(self, worker: Worker, reason: str) -> None:
        worker.trips = min(worker.trips + 1, MAX_BACKOFF_TRIPS)
        self._set_health(worker, Health.SUSPECT, reason)
        worker.wake.set()

    def set_model_missing(self, worker: Worker, reason: str) -> None:
        """The server refused the model: out of rotation until a check shows it loaded."""
        worker.model_error = reason
        worker.trips = min(worker.trips + 1, MAX_BACKOFF_TRIPS)
        self.set_down(worker, reason)

    def set_down(self, worker: Worker, reason: str) -> None:
        self._set_health(worker, Health.DOWN, reason)

    def _set_health(self, worker: Worker, health: Health, reason: str) -> None:
        changed = worker.health is not health
        worker.health, worker.reason = health, reason
        if health is not Health.HEALTHY:
            worker.last_error = reason
        if changed:
            level = logging.INFO if health is Health.HEALTHY else logging.WARNING
            log.log(
                level,
                "worker %s is %s%s",
                worker.id,
                health.value,
                f": {reason}" if health is not Health.HEALTHY else "",
            )
            self.hub.emit("worker", worker=worker.id, health=health.value, reason=reason)
            self.notify()

    # -- health checks --------------------------------------------------------------
    def _client(self, worker: Worker) -> httpx.AsyncClient:
        client = self._clients.get(worker.id)
        if client is None:
            cfg = worker.config
            timeout = cfg.timeout or self.settings.request_timeout
            headers = {"Authorization": f"Bearer {cfg.api_key.reveal()}"} if cfg.api_key else {}
            client = httpx.AsyncClient(
                base_url=cfg.base_url,
                headers=headers,
                timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
                transport=transport(_connections(cfg)),
            )
            self._clients[worker.id] = client
        return client

    async def check(self, worker: Worker, *, detailed: bool = False) -> None:
        """Probe one worker now and update its health."""
        started = time.monotonic()
        try:
            info = await wait_within(
                self._probe(worker, detailed or worker.health is not Health.HEALTHY),
                self.settings.probe_timeout,
            )
        except (asyncio.TimeoutError, WorkerError, httpx.HTTPError, OSError) as exc:
            if isinstance(exc, asyncio.TimeoutError) and worker.in_flight:
                # Busy with our own requests (llama.cpp's server answers /v1/models only
                # between generations): inconclusive; the requests' own timeouts judge it.
                log.debug("health check of busy worker %s timed out", worker.id)
                return
            if isinstance(exc, asyncio.TimeoutError):
                reason = f"no answer to a health check within {self.settings.probe_timeout:g} s"
            elif isinstance(exc, WorkerError):
                reason = exc.detail
            else:
                reason = f"cannot reach {worker.config.base_url} ({type(exc).__name__})"
            worker.checked_at = time.time()
            if isinstance(exc, WorkerLoading):
                self._set_health(worker, Health.LOADING, reason)
            else:
                self.set_down(worker, reason)
            return
        worker.checked_at = time.time()
        worker.probe_latency = time.monotonic() - started
        self._apply(worker, info)

    async def _probe(self, worker: Worker, detailed: bool) -> ServerInfo:
        client = self._client(worker)
        if worker.backend is None:
            kind = worker.config.type
            if kind == "auto":
                detected = await detect_type(
                    client, worker.config.port, self.settings.probe_timeout
                )
                if detected is None:
                    raise WorkerError(
                        f"{worker.config.base_url} answers, but not as LM Studio, Ollama or an "
                        "OpenAI-compatible server; give its type explicitly",
                        worker=worker.id,
                    )
                worker.config = replace(worker.config, type=detected)
                worker.learn_concurrency_if_unset()
                self.notify()
            worker.backend = make_backend(worker.config, client)
        return await worker.backend.probe(detailed=detailed)

    def _apply(self, worker: Worker, info: ServerInfo) -> None:
        worker.models = info.models
        names = ", ".join(m.id for m in info.models[:8]) or "none"
        wanted = worker.config.model
        chosen = (
            info.find(wanted)
            if wanted
            else (
                next((m for m in info.models if m.loaded), None)
                or (info.models[0] if info.models else None)
            )
        )
        if chosen is None:
            what = f"model {wanted!r} is not on this server" if wanted else "no model is available"
            self.set_down(
                worker,
                f'{what} (it has: {names}); load or pull it there, or set the worker\'s "model"',
            )
            return
        if worker.model_error and chosen.loaded is False:
            # It refused to load the model on demand before; a listing alone is no proof.
            self.set_down(worker, worker.model_error)
            return
        worker.model_error = None
        if worker.model != (wanted or chosen.id):
            worker.learned_context_length = None  # learned for another model
        worker.model = wanted or chosen.id
        worker.model_loaded = chosen.loaded
        windows = [
            w
            for w in (
                chosen.context_length,
                info.context_length,
                worker.config.context_length,
                worker.learned_context_length,
            )
            if w
        ]
        if windows:
            worker.context_length = min(windows)
        if info.batching and worker.concurrency.learning:
            worker.limit = worker.concurrency.on_batching_server()
        if info.slots and worker.config.slots_from_server:
            self._use_server_slots(worker, info.slots)
        elif info.slots and info.slots != worker.concurrency.maximum:
            self._cap_at_server_slots(worker, info.slots)
        if info.busy_slots:
            # Other clients' requests on the server (another notebook on the same lab):
            # start in the room they leave rather than queue behind them.
            others = info.busy_slots - worker.in_flight
            if others > 0:
                worker.limit = worker.concurrency.on_others_busy(others)
        if worker.health is not Health.HEALTHY and worker.trips:
            # A worker that failed requests sits out a while even when its checks pass.
            worker.paused_until = time.monotonic() + min(
                2.0**worker.trips, self.settings.health_check_interval
            )
        worker.consecutive_failures = 0
        self._set_health(worker, Health.HEALTHY, "")

    def _use_server_slots(self, worker: Worker, slots: int) -> None:
        """The config gave no ``max_concurrent_requests``: take the server's slot count."""
        if slots == worker.config.max_concurrent_requests:
            return
        log.info(
            "worker %s: %d slots on the server, so %d requests at once", worker.id, slots, slots
        )
        worker.config = replace(worker.config, max_concurrent_requests=slots)
        worker.concurrency = AdaptiveLimit(slots)
        worker.limit = worker.concurrency.limit
        self.notify()

    def _cap_at_server_slots(self, worker: Worker, slots: int) -> None:
        """Configured above the slots the server has: more would only queue there, seen
        late (when the answers come), so the limit is corrected before any is sent."""
        before = worker.concurrency.maximum
        worker.limit = worker.concurrency.on_server_slots(slots)
        if worker.concurrency.maximum < before:
            log.warning(
                "worker %s is configured for %d requests at once but the server has %d "
                "slots; sending at most %d (lower max_concurrent_requests to match)",
                worker.id,
                worker.config.max_concurrent_requests,
                slots,
                worker.concurrency.maximum,
            )
        self.notify()

    async def _watch(self, worker: Worker) -> None:
        backoff = 1.0
        while not self._closed:
            if worker.health is Health.HEALTHY:
                delay, backoff = self.settings.health_check_interval, 1.0
            elif worker.health is Health.SUSPECT:
                delay = 0.0
            elif worker.health is Health.LOADING:
                delay, backoff = LOADING_RECHECK, 1.0
            else:
                delay = backoff
                backoff = min(backoff * 2, self.settings.health_check_interval)
            if delay:
                with contextlib.suppress(asyncio.TimeoutError):
                    await wait_within(worker.wake.wait(), delay)
            worker.wake.clear()
            await self.check(worker)
