"""The :class:`Cluster`: every LLM server in the lab behind one object.

Each method has a blocking form for notebook cells and scripts (``ask``) and an async twin
(``aask``) for ``await``. Both run on the library's own event-loop thread (see ``_loop``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import (
    AsyncIterator,
    Callable,
    Collection,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from typing import TYPE_CHECKING, Any

from ._analysis.analysis import Analysis
from ._analysis.call import AnalyzeCall, analyze_call
from ._analysis.jobs import Job
from ._analysis.methods import Analyses, same_arguments_as
from ._config import ClusterSettings, WorkerConfig, load_config, make_settings, parse_worker_spec
from ._display.cluster import ClusterView
from ._display.reports import check_frame, metrics_frame
from ._errors import ConfigError, ConfigProblem, DllmError, TaskFailed
from ._events import Event, EventHub
from ._loop import bridge, run_sync, submit
from ._prompts.schemas import answer_validator
from ._results.history import Filter
from ._results.store import DEFAULT, ResultStore, resolve_store
from ._running.affinity import PrefixAffinity
from ._running.chat import ChatStream, StreamStart, astream, chat_request
from ._running.dispatch import Dispatcher
from ._running.earliest_finish import EarliestFinish
from ._running.pool import WorkerPool
from ._running.scheduler import Scheduler
from ._running.tasks import Task
from ._running.views import WorkerView
from ._types import Answer, ChatRequest

if TYPE_CHECKING:
    import pandas as pd

    from ._results.synthesis import Synthesis

__all__ = ["Cluster"]

log = logging.getLogger("dllm_notebook")

PromptLike = str | ChatRequest


def estimate_tokens(text: str) -> int:
    """Conservative token estimate; see docs/prompts.md."""
    from ._reading.chunking import estimate_tokens as estimate

    return estimate(text)


class Cluster:
    """Every worker of the lab, kept healthy and busy.

    >>> cluster = Cluster.from_config("config/workers.json")
    >>> cluster = Cluster(["http://192.168.1.105:1234", "ollama://192.168.1.106"])
    >>> cluster.ask("What is a transformer?").text
    >>> answers = cluster.map(["prompt 1", "prompt 2"])
    >>> cluster.check()      # one row per worker: healthy, models, context length, error

    Settings (keyword arguments, or top-level keys of the config file):
    ``health_check_interval`` (30 s), ``request_timeout`` (300 s), ``max_retries`` (3),
    ``max_concurrent_batch`` (``"auto"``: every slot of every healthy worker; a number caps
    it), ``no_worker_timeout`` (120 s), ``probe_timeout`` (10 s), ``hedge`` (True: a
    straggler at the end of a batch gets a second copy on an idle faster worker; the first
    answer wins).

    ``scheduler`` decides where each task goes; the default, ``EarliestFinish``, learns each
    worker's speed and puts the largest work first where it finishes soonest.
    ``PrefixAffinity()`` (opt-in while it is tuned) also keeps a paper's prompts on the
    worker that read it when that worker's prefix cache saves time (docs/architecture.md).

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
        cap = self.settings.max_concurrent_batch
        if cap != "auto" and slots > cap:
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
        self._views = [WorkerView(w) for w in self._pool.workers]
        self._display = ClusterView(self, self._views)
        self._analyses = Analyses(
            settings=self.settings,
            events=self.events,
            pool=self._pool,
            dispatcher=self._dispatcher,
            store=lambda: self._store,
            ready=self._ready,
        )
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
        or Python exits. Unless ``scheduler=`` says otherwise it is
        :class:`PrefixAffinity`: llama.cpp keeps a prefix cache per slot, so a paper's
        prompts go back to back to the slot that read the paper.

        >>> with Cluster.local() as cluster:
        ...     print(cluster.ask("What is photosynthesis?").text)
        """
        from ._local.embedded import local_worker_configs, start_local_servers

        servers = start_local_servers(
            workers, model=model, n_ctx=n_ctx, n_parallel=n_parallel, n_threads=n_threads
        )
        options.setdefault("scheduler", PrefixAffinity())
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
    def workers(self) -> list[WorkerView]:
        """Live, read-only views of the workers: config, health, limits, in flight,
        window and counters (see :class:`WorkerView`).

        >>> [(w.id, w.health, w.in_flight, w.limit) for w in cluster.workers]
        """
        return list(self._views)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._closed

    @property
    def last_analysis(self) -> Analysis | None:
        """The latest ``analyze()`` run: its cells hold every answer so far, even after an
        interrupt (``cluster.last_analysis.frame()``)."""
        return self._analyses.last

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
        return check_frame(self._views)

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
            request = dataclasses.replace(request, prompt_tokens_estimate=tokens)
        return Task(
            index,
            request,
            needed_tokens=tokens + (request.max_tokens or 0),
            validate=answer_validator(request.schema) if request.schema is not None else None,
        )

    async def _run(
        self, tasks: Iterable[Task], on_result: Callable[[int, Answer], Any] | None = None
    ) -> list[Answer]:
        """Every task's answer, by index. ``tasks`` may be a generator: the dispatcher reads
        it as slots free up, and each task is dropped once its answer is kept."""
        await self._ready()
        results: list[Answer | None] = []

        def counted(source: Iterable[Task]) -> Iterator[Task]:
            for task in source:
                results.extend([None] * (task.index + 1 - len(results)))
                yield task

        def keep(index: int, answer: Answer) -> None:
            if results[index] is not None:
                raise AssertionError(f"task {index} settled twice")
            results[index] = answer
            if on_result is not None:
                on_result(index, answer)

        await self._dispatcher.run(counted(tasks), keep)
        missing = [i for i, r in enumerate(results) if r is None]
        if missing:
            raise AssertionError(f"tasks {missing[:5]} never settled")
        return [r for r in results if r is not None]

    async def _map(
        self, prompts: Iterable[PromptLike], system: str | None, options: Mapping[str, Any]
    ) -> list[Answer]:
        tasks = (self._task(i, p, system, options) for i, p in enumerate(prompts))
        return await self._run(tasks)

    def map(
        self, prompts: Iterable[PromptLike], *, system: str | None = None, **options: Any
    ) -> list[Answer]:
        """Answer many prompts concurrently over all healthy workers, in input order.

        A prompt whose every try failed comes back as an Answer with ``ok == False`` and its
        last error in ``.error``; the others are unaffected. ``prompts`` may be a generator:
        it is read as slots free up (about a thousand prompts ahead of them), so a stream
        of prompts is never held whole, and each is dropped once it has its answer.

        >>> answers = cluster.map(f"Summarise: {t}" for t in texts)
        """
        return run_sync(self._map(prompts, system, options), what="map()")

    async def amap(
        self, prompts: Iterable[PromptLike], *, system: str | None = None, **options: Any
    ) -> list[Answer]:
        return await bridge(self._map(prompts, system, options))

    def _pin(self, worker: str | None) -> set[str]:
        """The worker ids a request pinned to ``worker`` must never go to."""
        if worker is None:
            return set()
        ids = [w.id for w in self._views]
        if worker not in ids:
            raise ConfigError(
                [
                    ConfigProblem(
                        "worker=", f"no worker {worker!r}; the workers are {', '.join(ids)}"
                    )
                ]
            )
        return {i for i in ids if i != worker}

    async def _ask(
        self,
        prompt: PromptLike,
        system: str | None,
        options: Mapping[str, Any],
        worker: str | None = None,
    ) -> Answer:
        task = self._task(0, prompt, system, options)
        task.excluded |= self._pin(worker)
        (answer,) = await self._run([task])
        if not answer.ok:
            raise TaskFailed(answer.error or "failed", last_error=None)
        return answer

    def ask(
        self,
        prompt: PromptLike,
        *,
        system: str | None = None,
        worker: str | None = None,
        **options: Any,
    ) -> Answer:
        """One answer from the best available worker. Raises TaskFailed if every try failed.

        Options: ``max_tokens``, ``temperature``, ``top_p``, ``seed``, ``stop``. A
        :class:`ChatRequest` with a ``schema`` is sent in each server's structured-output
        form; an answer that does not follow the schema is asked again once, preferably on
        another worker, and the second answer is returned as it came. ``worker="id"`` sends
        it to that worker only (retries too; ``dllm check --test`` does this); an unknown
        id raises :class:`ConfigError`.

        >>> cluster.ask("Say hello.", worker="imac-office", max_tokens=8).latency_s
        """
        self._pin(worker)  # an unknown id fails here, before the loop
        return run_sync(self._ask(prompt, system, options, worker), what="ask()")

    async def aask(
        self,
        prompt: PromptLike,
        *,
        system: str | None = None,
        worker: str | None = None,
        **options: Any,
    ) -> Answer:
        self._pin(worker)
        return await bridge(self._ask(prompt, system, options, worker))

    def stream(
        self,
        prompt: str,
        *,
        system: str | None = None,
        worker: str | None = None,
        **options: Any,
    ) -> ChatStream:
        """Stream one answer from the best worker, piece by piece (what ``dllm chat`` shows).

        Returns once a worker has started answering; iterate for the text pieces. A failure
        before the first piece moves the question to another worker, unless ``worker="id"``
        pins it to that one (``dllm bench`` does this); an unknown id raises
        :class:`ConfigError`. ``stream.first_piece_s`` is the time to the first piece.

        >>> stream = cluster.stream("What is a transformer?")
        >>> stream.worker, stream.model
        >>> for piece in stream:
        ...     sys.stdout.write(piece)
        """
        self._pin(worker)
        request = chat_request(prompt, system=system, **options)

        async def items() -> AsyncIterator[StreamStart | str]:
            await self._ready()
            async for item in astream(self._pool, self.settings, request, worker):
                yield item

        return ChatStream.start(items())

    # -- metrics --------------------------------------------------------------------
    def metrics(self, *, totals: bool = False) -> pd.DataFrame:
        """Per-worker requests, successes, failures, in flight, latency and tokens/s;
        ``totals=True`` adds a ``total`` row."""
        return metrics_frame(self._views, totals=totals)

    # -- analyze ----------------------------------------------------------------------
    @same_arguments_as(analyze_call)
    def analyze(self, call: AnalyzeCall) -> pd.DataFrame:
        """Ask every prompt of every paper, spread over the cluster; return a DataFrame.

        ``source`` is a folder, a file, a list of paths or of loaded ``Paper`` objects
        (``.pdf``, ``.txt``, ``.md``). Prompts come from ``preset`` (default ``research``)
        or ``prompts`` (``{name: template}`` or a list of templates or questions).
        Returns the wide table (one row per paper, one column per prompt; a failed cell is
        missing), or with ``long=True`` one row per paper x prompt with its status,
        error, worker, model, tokens, latency and ``fit`` (``whole``, ``chunked`` or
        ``truncated``). Papers too long for a worker's window are map-reduced over chunks,
        or cut with ``fit="truncate"``. Options (``max_tokens``, ``temperature`` ...)
        override the preset's.

        A typed prompt (``type = "integer"``, ``"category"`` ... in its preset, or
        ``prompts={"n": {"template": ..., "type": "integer"}}``) gets a column with a real
        dtype; an answer that does not match its type is asked again once, then kept as
        ``invalid`` with its raw text. ``evidence=True`` (or ``evidence = true`` in the
        preset; ``False`` turns it off) asks for up to three supporting quotes per answer;
        the tool checks each against the paper and gives its page
        (``df.dllm.evidence()``). A ``.bib`` or ``.ris`` file or ``zotero(...)`` as
        ``source`` reads a reference library; ``crossref=True`` fills metadata from
        Crossref by DOI. ``model="..."`` (a model, or a group from the settings'
        ``models``) sends every prompt only to the workers serving it. ``model=["m1",
        "m2"]`` compares models: each prompt gets one column per model (columns
        ``(prompt, model)``; ``df["design"]`` shows them side by side, and the long form's
        ``requested_model`` says which column a row is), and each model's workers work on
        its cells at the same time.

        >>> df = cluster.analyze("papers/", preset="research")
        >>> df.to_parquet("review.parquet")
        >>> df.dllm.long()          # provenance: worker, tokens, errors

        Every answer is saved to the result store (``cluster.store``) as it arrives. Run
        the same call again and stored answers come back at once (status ``cached`` in the
        long form); only missing or failed tasks are sent. ``refresh=True`` asks again
        anyway, ``cache=False`` neither reads nor writes the store. After an interrupt,
        ``cluster.last_analysis.frame()`` holds what had arrived, and re-running resumes.
        To keep the notebook free while it runs, use :meth:`submit` instead.
        """
        return self._analyses.analyze(call)

    @same_arguments_as(analyze_call)
    async def aanalyze(self, call: AnalyzeCall) -> pd.DataFrame:
        """The async twin of :meth:`analyze`, for ``await`` in a notebook cell."""
        return await self._analyses.aanalyze(call)

    def synthesize(
        self,
        df: pd.DataFrame,
        question: str | None = None,
        columns: Sequence[str] | None = None,
        *,
        max_tokens: int = 400,
        progress: bool = True,
        refresh: bool = False,
    ) -> Synthesis:
        """A short answer to ``question`` over the whole table, with checked citations.

        The default question asks which findings agree, where the papers conflict, which
        methods dominate and what the gaps are. ``columns`` chooses the answers that go in
        (default: every text column, each with its verified quotes). The table is reduced
        in groups sized to the smallest window among the workers, then groups of group
        summaries, so no request exceeds a window; each level runs like ``analyze()``
        (in parallel, with its progress bar, stored and cached: a re-run with the same
        inputs comes from the store, ``refresh=True`` asks again).

        >>> s = cluster.synthesize(df, "Which methods dominate?")
        >>> s.citations[s.citations.status != "ok"]   # unknown or unsupported citations
        >>> s.coverage[~s.coverage.cited]             # papers it never cites
        >>> df.dllm.to_report("review.html", synthesis=s)
        """
        from ._analysis.synthesis import synthesize

        return synthesize(
            self, df, question, columns, max_tokens=max_tokens, progress=progress, refresh=refresh
        )

    async def asynthesize(
        self,
        df: pd.DataFrame,
        question: str | None = None,
        columns: Sequence[str] | None = None,
        *,
        max_tokens: int = 400,
        progress: bool = True,
        refresh: bool = False,
    ) -> Synthesis:
        """The async twin of :meth:`synthesize`, for ``await`` in a notebook cell."""
        from ._analysis.synthesis import asynthesize

        return await asynthesize(
            self, df, question, columns, max_tokens=max_tokens, progress=progress, refresh=refresh
        )

    @same_arguments_as(analyze_call)
    def submit(self, call: AnalyzeCall) -> Job:
        """Start :meth:`analyze` in the background and return its :class:`Job` at once.

        Takes the same arguments as :meth:`analyze`. The notebook stays free: other cells
        (and other ``cluster`` calls) run while the job works, and several jobs share the
        cluster's workers. In Jupyter the job shows a live progress bar in the cell that
        submitted it; elsewhere it prints one line when it ends.

        >>> job = cluster.submit("papers/", preset="research")
        >>> job.partial()           # the answers so far (unfinished cells are missing)
        >>> df = job.result()       # waits; the same DataFrame analyze() returns
        >>> job.cancel()            # stop sending; every answer that arrived is kept

        Errors (a missing folder, an unknown preset) are raised by ``job.result()``.
        """
        return self._analyses.submit(call)

    @property
    def jobs(self) -> list[Job]:
        """Every job :meth:`submit` started on this cluster, oldest first."""
        return list(self._analyses.jobs)

    # -- the result store -------------------------------------------------------------
    @property
    def store(self) -> ResultStore | None:
        """Where ``analyze()`` keeps answers (``None``: off). Assign a path to move it:
        ``cluster.store = "review.sqlite"`` (or ``"user"``, or ``None``)."""
        return self._store

    @store.setter
    def store(self, value: Any) -> None:
        if self._store is not None:
            self._store.close()
        self._store = resolve_store(value)

    def _require_store(self) -> ResultStore:
        if self._store is None:
            raise DllmError(
                "this cluster has no result store (store=None or DLLM_STORE=off); set one "
                "with `cluster.store = '.dllm/results.sqlite'` to keep answers and history"
            )
        return self._store

    def history(
        self, run: Filter = None, paper: Filter = None, worker: Filter = None
    ) -> pd.DataFrame:
        """Every request ``analyze()`` sent, one row each: answer, worker, model, tokens,
        latency and error. Filter by run id (or ``"last"``), paper file name or worker id.

        >>> cluster.history(run="last", worker="imac-office")
        >>> cluster.history().to_parquet("history.parquet")      # export
        >>> cluster.store.clear_history()                        # clear (keeps the cache)
        """
        return self._require_store().history(run=run, paper=paper, worker=worker)

    def runs(self) -> pd.DataFrame:
        """One row per ``analyze()`` recorded in the store: counts, status and times."""
        return self._require_store().runs()

    # -- how the cluster shows itself ---------------------------------------------------
    def __repr__(self) -> str:
        return self._display.text()

    def _repr_html_(self) -> str:
        return self._display.html()

    def _repr_mimebundle_(
        self, include: Collection[str] | None = None, exclude: Collection[str] | None = None
    ) -> dict[str, Any]:
        """The live panel in a Jupyter kernel, with text and HTML fallbacks."""
        return self._display.mimebundle(include, exclude)

    def panel(self) -> Any:
        """The live worker panel, an ipywidgets widget (one per cluster).

        Showing ``cluster`` as the last line of a cell shows it too; call this to place it
        elsewhere, e.g. ``display(cluster.panel())`` above a long ``analyze()``. It updates
        at most twice a second while work runs, and stops when the cluster closes.
        """
        return self._display.live_panel().widget

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
            self._analyses.stop_jobs()  # before the pool closes, so their requests are withdrawn
            run_sync(self._aclose(), what="close()")
        finally:
            for cleanup in reversed(self._cleanups):
                cleanup()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await asyncio.to_thread(self._analyses.stop_jobs)
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
