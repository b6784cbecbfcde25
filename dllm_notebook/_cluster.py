"""The :class:`Cluster`: every LLM server in the lab behind one object.

Each method has a blocking form for notebook cells and scripts (``ask``) and an async twin
(``aask``) for ``await``. Both run on the library's own event-loop thread (see ``_loop``).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ._analysis.analysis import Analysis
from ._analysis.methods import AnalyzeMethods
from ._config import ClusterSettings, WorkerConfig, load_config, make_settings, parse_worker_spec
from ._display.cluster import ClusterDisplay
from ._display.reports import check_frame, metrics_frame
from ._errors import ConfigError, ConfigProblem, TaskFailed
from ._events import Event, EventHub
from ._loop import bridge, run_sync, submit
from ._results.history import StoreAccess
from ._results.store import DEFAULT, resolve_store
from ._running.dispatch import Dispatcher, Task
from ._running.earliest_finish import EarliestFinish
from ._running.pool import WorkerPool
from ._running.scheduler import Scheduler
from ._types import Answer, ChatRequest

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Cluster"]

log = logging.getLogger("dllm_notebook")

PromptLike = str | ChatRequest


def estimate_tokens(text: str) -> int:
    """Conservative token estimate; see docs/prompts.md."""
    from ._reading.chunking import estimate_tokens as estimate

    return estimate(text)


class Cluster(AnalyzeMethods, ClusterDisplay, StoreAccess):
    """Every worker of the lab, kept healthy and busy.

    >>> cluster = Cluster.from_config("config/workers.json")
    >>> cluster = Cluster(["http://192.168.1.105:1234", "ollama://192.168.1.106"])
    >>> cluster.ask("What is a transformer?").text
    >>> answers = cluster.map(["prompt 1", "prompt 2"])
    >>> cluster.check()      # one row per worker: healthy, models, context length, error

    Settings (keyword arguments, or top-level keys of the config file):
    ``health_check_interval`` (30 s), ``request_timeout`` (300 s), ``max_retries`` (3),
    ``max_concurrent_batch`` (50), ``no_worker_timeout`` (120 s), ``probe_timeout`` (10 s),
    ``hedge`` (True: a straggler at the end of a batch gets a second copy on an idle faster
    worker; the first answer wins).

    ``scheduler`` decides where each task goes; the default, ``EarliestFinish``, learns each
    worker's speed and puts the largest work first where it finishes soonest (see
    docs/architecture.md).

    ``store`` is where ``analyze()`` keeps every answer (see docs/store.md): by default
    ``$DLLM_STORE`` or ``.dllm/results.sqlite`` in the current folder; a path, ``"user"``
    (the user cache folder), a :class:`ResultStore`, or ``None`` to keep nothing.
    """

    def __init__(
        self,
        workers: Sequence[str | Mapping[str, Any] | WorkerConfig],
        *,
        scheduler: Scheduler | None = None,
        settings: ClusterSettings | None = None,
        store: Any = DEFAULT,
        **options: Any,
    ) -> None:
        self._store = resolve_store(store)
        if isinstance(workers, (str, bytes, os.PathLike)):
            raise ConfigError(
                [
                    ConfigProblem(
                        "workers",
                        "expected a list of URLs; to read a file use Cluster.from_config(path)",
                    )
                ]
            )
        configs = [parse_worker_spec(spec, i) for i, spec in enumerate(workers)]
        if not configs:
            raise ConfigError([ConfigProblem("workers", "no workers given; pass at least one URL")])
        seen: set[str] = set()
        for i, cfg in enumerate(configs):
            if cfg.id in seen:
                raise ConfigError([ConfigProblem(f"worker #{i + 1}", f"duplicate id {cfg.id!r}")])
            seen.add(cfg.id)
        self.settings = make_settings(options, settings)
        slots = sum(c.max_concurrent_requests for c in configs)
        if slots > self.settings.max_concurrent_batch:
            log.warning(
                "the workers take %d requests at once, but max_concurrent_batch caps the "
                "cluster at %d; raise it (a top-level setting or keyword) to use every slot",
                slots,
                self.settings.max_concurrent_batch,
            )
        self.events = EventHub()
        self._pool = WorkerPool(configs, self.settings, self.events)
        self._dispatcher = Dispatcher(
            self._pool,
            self.settings,
            scheduler or EarliestFinish(hedge=self.settings.hedge),
            self.events,
        )
        self._start_task: asyncio.Task[None] | None = None
        self._closed = False
        self._cleanups: list[Callable[[], None]] = []
        self.last_analysis: Analysis | None = None
        """The latest ``analyze()`` run: its cells hold every answer so far, even after an
        interrupt."""
        self.local_servers: list[Any] = []
        """The llama.cpp servers that ``Cluster.local()`` started (empty otherwise)."""
        self._cleanups.append(lambda: self._store.close() if self._store is not None else None)
        submit(self._ready())  # health checks start now, in the background

    @classmethod
    def from_config(cls, path: str | os.PathLike[str], **options: Any) -> Cluster:
        """Read the lab's ``workers.json``; keyword arguments override its settings
        (``store=`` chooses the result store, as for the constructor)."""
        extra = {k: options.pop(k) for k in ("store", "scheduler") if k in options}
        workers, settings = load_config(path, overrides=options)
        return cls(workers, settings=settings, **extra)

    @classmethod
    def local(
        cls,
        workers: int = 1,
        *,
        model: str | os.PathLike[str] | None = None,
        n_ctx: int = 4096,
        n_parallel: int = 2,
        n_threads: int | None = None,
        **options: Any,
    ) -> Cluster:
        """Start real llama.cpp servers on this machine and use them as workers.

        No Macs needed: the default model is Gemma 3 270M (the ``[local]`` extra ships
        it), or give ``model=`` a path to any GGUF file. Each server is llama.cpp's own
        server (through ``xllamacpp``): ``n_parallel`` is how many requests it decodes at
        once (the worker's ``max_concurrent_requests``), ``n_ctx`` the context window of
        each, and ``n_threads`` its CPU threads. The servers stop when the cluster closes
        or Python exits.

        >>> with Cluster.local() as cluster:
        ...     print(cluster.ask("What is photosynthesis?").text)
        """
        from ._local.embedded import local_worker_configs, start_local_servers

        servers = start_local_servers(
            workers, model=model, n_ctx=n_ctx, n_parallel=n_parallel, n_threads=n_threads
        )
        try:
            cluster = cls(local_worker_configs(servers), **options)
        except BaseException:
            for server in servers:
                server.stop()
            raise
        for server in servers:
            cluster.add_cleanup(server.stop)
        cluster.local_servers = servers
        return cluster

    @classmethod
    def auto(cls, **options: Any) -> Cluster:
        """The lab's cluster when one is configured, else a local worker.

        Reads the workers file named by ``$DLLM_CONFIG``; without it, starts
        :meth:`local` and logs that it did. Notebooks use this so the same cell runs on
        the lab's Macs, on test servers, or on a laptop with nothing configured.
        """
        path = os.environ.get("DLLM_CONFIG")
        if path:
            return cls.from_config(path, **options)
        log.info("no DLLM_CONFIG: starting a local llama.cpp worker (Cluster.local())")
        return cls.local(**options)

    # -- state ----------------------------------------------------------------------
    @property
    def workers(self) -> list[WorkerConfig]:
        return [w.config for w in self._pool.workers]

    def subscribe(self, listener: Callable[[Event], None]) -> Callable[[], None]:
        """Watch worker and task events (for progress bars and panels)."""
        return self.events.subscribe(listener)

    def snapshot(self) -> list[dict[str, Any]]:
        """Each worker's live state as plain dicts (what the panel shows)."""
        return [w.snapshot() for w in self._pool.workers]

    async def _ready(self) -> None:
        if self._closed:
            raise RuntimeError("this Cluster is closed; create a new one")
        if self._start_task is None:
            self._start_task = asyncio.ensure_future(self._pool.start())
        await asyncio.shield(self._start_task)

    # -- check ----------------------------------------------------------------------
    async def _check(self) -> pd.DataFrame:
        await self._ready()
        await asyncio.gather(*(self._pool.check(w, detailed=True) for w in self._pool.workers))
        return check_frame(self._pool.workers)

    def check(self) -> pd.DataFrame:
        """Check every worker now: one row each with health, models, context and error."""
        return run_sync(self._check(), what="check()")

    async def acheck(self) -> pd.DataFrame:
        return await bridge(self._check())

    # -- ask and map ----------------------------------------------------------------
    def _task(
        self, index: int, prompt: PromptLike, system: str | None, options: Mapping[str, Any]
    ) -> Task:
        if isinstance(prompt, ChatRequest):
            request = prompt
        elif isinstance(prompt, str):
            request = ChatRequest(prompt=prompt, system=system, options=dict(options))
        else:
            raise TypeError(f"prompt #{index + 1} is {type(prompt).__name__}; expected a string")
        tokens = request.prompt_tokens_estimate
        if tokens is None:
            tokens = estimate_tokens(request.prompt) + estimate_tokens(request.system or "")
            request = ChatRequest(request.prompt, request.system, request.options, tokens)
        return Task(index, request, needed_tokens=tokens + (request.max_tokens or 0))

    async def _run(
        self, tasks: Sequence[Task], on_result: Callable[[int, Answer], Any] | None = None
    ) -> list[Answer]:
        await self._ready()
        results: list[Answer | None] = [None] * len(tasks)

        def keep(index: int, answer: Answer) -> None:
            if results[index] is not None:
                raise AssertionError(f"task {index} settled twice")
            results[index] = answer
            if on_result is not None:
                on_result(index, answer)

        await self._dispatcher.run(tasks, keep)
        missing = [i for i, r in enumerate(results) if r is None]
        if missing:
            raise AssertionError(f"tasks {missing[:5]} never settled")
        return [r for r in results if r is not None]

    async def _map(
        self, prompts: Iterable[PromptLike], system: str | None, options: Mapping[str, Any]
    ) -> list[Answer]:
        tasks = [self._task(i, p, system, options) for i, p in enumerate(prompts)]
        return await self._run(tasks)

    def map(
        self, prompts: Iterable[PromptLike], *, system: str | None = None, **options: Any
    ) -> list[Answer]:
        """Answer many prompts concurrently over all healthy workers, in input order.

        A prompt whose every try failed comes back as an Answer with ``ok == False`` and its
        last error in ``.error``; the others are unaffected.
        """
        return run_sync(self._map(prompts, system, options), what="map()")

    async def amap(
        self, prompts: Iterable[PromptLike], *, system: str | None = None, **options: Any
    ) -> list[Answer]:
        return await bridge(self._map(prompts, system, options))

    async def _ask(
        self, prompt: PromptLike, system: str | None, options: Mapping[str, Any]
    ) -> Answer:
        (answer,) = await self._map([prompt], system, options)
        if not answer.ok:
            raise TaskFailed(answer.error or "failed", last_error=None)
        return answer

    def ask(self, prompt: PromptLike, *, system: str | None = None, **options: Any) -> Answer:
        """One answer from the best available worker. Raises TaskFailed if every try failed.

        Options: ``max_tokens``, ``temperature``, ``top_p``, ``seed``, ``stop``.
        """
        return run_sync(self._ask(prompt, system, options), what="ask()")

    async def aask(
        self, prompt: PromptLike, *, system: str | None = None, **options: Any
    ) -> Answer:
        return await bridge(self._ask(prompt, system, options))

    # -- metrics --------------------------------------------------------------------
    def metrics(self, *, totals: bool = False) -> pd.DataFrame:
        """Per-worker requests, successes, failures, in flight, latency and tokens/s;
        ``totals=True`` adds a ``total`` row."""
        return metrics_frame(self._pool.workers, totals=totals)

    # -- lifecycle ------------------------------------------------------------------
    def add_cleanup(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` when the cluster closes (e.g. to stop local servers)."""
        self._cleanups.append(callback)

    async def _aclose(self) -> None:
        if self._start_task is not None and not self._start_task.done():
            self._start_task.cancel()
        await self._pool.aclose()

    def close(self) -> None:
        """Stop health checks, close connections, and stop any local servers."""
        if self._closed:
            return
        self._closed = True
        try:
            self._stop_jobs()  # before the pool closes, so their requests are withdrawn
            run_sync(self._aclose(), what="close()")
        finally:
            for cleanup in reversed(self._cleanups):
                cleanup()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await asyncio.to_thread(self._stop_jobs)
            await bridge(self._aclose())
        finally:
            for cleanup in reversed(self._cleanups):
                cleanup()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Cluster:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
