"""The ``analyze()`` family of :class:`Cluster` methods: papers in, a DataFrame out.

Kept apart from ``_cluster`` so the cluster's core (workers, ask, map, lifecycle) and the
paper-analysis front end each have a module of their own. The heavy lifting lives in
``_analyze`` (planning), ``_cache`` (the result store), ``_jobs`` (background jobs) and
the dispatcher.

``analyze()``, ``aanalyze()`` and ``submit()`` take the same arguments. They are written
once, as the signature of :func:`analyze_call`, and :func:`_same_arguments_as` gives
each method that signature (for ``help()``, IDEs and mypy alike) and hands it the
arguments as one :class:`AnalyzeCall`.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar, cast

from .._loop import bridge, run_sync
from .jobs import Job
from .runner import CachedRun

if TYPE_CHECKING:
    import pandas as pd

    from .._config import ClusterSettings
    from .._display.progress import Progress
    from .._events import EventHub
    from .._results.store import ResultStore
    from .._running.dispatch import Dispatcher
    from .._running.pool import WorkerPool
    from .analysis import Analysis

__all__ = ["AnalyzeCall", "AnalyzeMethods", "analyze_call"]

P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S")


@dataclass(frozen=True)
class AnalyzeCall:
    """The arguments of one ``analyze()``, ``aanalyze()`` or ``submit()`` call."""

    source: Any
    preset: Any = None
    prompts: Any = None
    recursive: bool = False
    long: bool = False
    fit: str = "chunk"
    progress: bool = True
    password: str | None = None
    refresh: bool = False
    cache: bool = True
    options: Mapping[str, Any] = field(default_factory=dict)


def analyze_call(
    source: Any,
    *,
    preset: Any = None,
    prompts: Any = None,
    recursive: bool = False,
    long: bool = False,
    fit: str = "chunk",
    progress: bool = True,
    password: str | None = None,
    refresh: bool = False,
    cache: bool = True,
    **options: Any,
) -> AnalyzeCall:
    """The arguments of ``analyze()`` and its twins, gathered into one object (see
    :meth:`AnalyzeMethods.analyze` for what each means)."""
    return AnalyzeCall(
        source, preset, prompts, recursive, long, fit, progress, password, refresh, cache, options
    )


def _same_arguments_as(
    spec: Callable[P, AnalyzeCall],
) -> Callable[[Callable[[S, AnalyzeCall], R]], Callable[Concatenate[S, P], R]]:
    """Give a method ``method(self, call)`` the public signature of ``spec``: callers pass
    ``spec``'s arguments, the method gets them as one :class:`AnalyzeCall`."""

    def decorate(method: Callable[[S, AnalyzeCall], R]) -> Callable[Concatenate[S, P], R]:
        wrapper: Callable[..., Any]
        if inspect.iscoroutinefunction(method):

            async def wrapper(self: S, /, *args: P.args, **kwargs: P.kwargs) -> Any:
                return await cast(Any, method)(self, spec(*args, **kwargs))

        else:

            def wrapper(self: S, /, *args: P.args, **kwargs: P.kwargs) -> Any:
                return method(self, spec(*args, **kwargs))

        functools.update_wrapper(wrapper, method)
        signature = inspect.signature(spec)
        first = inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY)
        public = signature.replace(
            parameters=[first, *signature.parameters.values()],
            return_annotation=inspect.signature(method).return_annotation,
        )
        wrapper.__dict__["__signature__"] = public  # what help() and IDEs show
        return cast("Callable[Concatenate[S, P], R]", wrapper)

    return decorate


class AnalyzeMethods:
    """``analyze``, ``aanalyze``, ``submit`` and ``jobs``; mixed into :class:`Cluster`."""

    settings: ClusterSettings
    events: EventHub
    last_analysis: Analysis | None
    _store: ResultStore | None
    _pool: WorkerPool
    _dispatcher: Dispatcher

    def _ready(self) -> Coroutine[Any, Any, None]:
        raise NotImplementedError

    def add_cleanup(self, callback: Callable[[], None]) -> None:
        raise NotImplementedError

    @_same_arguments_as(analyze_call)
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
        run = self._start_run(call)
        job = run.job
        started = time.monotonic()
        status = "failed"
        try:
            run_sync(self._analyze(run), what="analyze()", on_tick=job.progress.refresh)
            status = "finished"
        except KeyboardInterrupt:
            status = "interrupted"
            job.progress.write(run.interrupted_message())
            raise
        finally:
            run.finish(status)
            job.progress.close()
        return self._frame(job, call, started=started)

    @_same_arguments_as(analyze_call)
    async def aanalyze(self, call: AnalyzeCall) -> pd.DataFrame:
        """The async twin of :meth:`analyze`, for ``await`` in a notebook cell."""
        run = await asyncio.to_thread(self._start_run, call)
        job = run.job
        started = time.monotonic()
        work = asyncio.ensure_future(bridge(self._analyze(run)))
        status = "failed"
        try:
            while not work.done():
                await asyncio.wait([work], timeout=0.1)
                job.progress.refresh()
            await work
            status = "finished"
        except (asyncio.CancelledError, KeyboardInterrupt):
            status = "interrupted"
            job.progress.write(run.interrupted_message())
            raise
        finally:
            if not work.done():
                work.cancel()
            await asyncio.to_thread(run.finish, status)
            job.progress.close()
        return self._frame(job, call, started=started)

    @_same_arguments_as(analyze_call)
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
        job = Job(
            call,
            prepare=lambda progress, run_id: self._start_run(
                call, progress=progress, run_id=run_id, remember=False
            ),
            execute=self._analyze,
        )
        jobs = self._job_list()
        if not jobs:
            self.add_cleanup(self._stop_jobs)
        jobs.append(job)
        return job

    @property
    def jobs(self) -> list[Job]:
        """Every job :meth:`submit` started on this cluster, oldest first."""
        return list(self._job_list())

    def _job_list(self) -> list[Job]:
        jobs: list[Job] | None = self.__dict__.get("_jobs")
        if jobs is None:
            jobs = self.__dict__["_jobs"] = []
        return jobs

    def _cancel_jobs(self) -> list[Job]:
        """Ask every running job to stop (without waiting); returns them."""
        running = [job for job in self._job_list() if not job.done()]
        for job in running:
            job.cancel(wait=False)
        return running

    def _stop_jobs(self) -> None:
        """Cancel the running jobs and give them a moment to withdraw their requests."""
        for job in self._cancel_jobs():
            job.wait(timeout=5)

    # -- shared by analyze, aanalyze and submit --------------------------------------
    def _start_run(
        self,
        call: AnalyzeCall,
        *,
        progress: Progress | None = None,
        run_id: str | None = None,
        remember: bool = True,
    ) -> CachedRun:
        """Read the papers, resolve the prompts, open the store: every error before any
        request. A job passes its own ``progress`` bar (made in the caller's cell) and
        ``run_id``, and is not remembered as ``cluster.last_analysis``."""
        from .analysis import prepare

        job = prepare(
            call.source,
            preset=call.preset,
            prompts=call.prompts,
            recursive=call.recursive,
            password=call.password,
            fit=call.fit,
            progress=call.progress and progress is None,
            options=call.options,
        )
        if progress is not None:
            job.progress = progress
            progress.set_total(job.total)
        if run_id is not None:
            job.run_id = run_id
        job.progress.watch(self.events)
        store = self._store if call.cache else None
        # Enough queued tasks for the scheduler to put the largest first across a whole
        # typical batch (100 papers x 5 prompts), still a bounded number for huge ones.
        window = max(1024, 4 * self.settings.max_concurrent_batch)
        run = CachedRun(job, store, reuse=not call.refresh, window=window)
        try:
            run.start()
        except BaseException:
            job.progress.close()
            raise
        if remember:
            self.last_analysis = job
        return run

    async def _analyze(self, run: CachedRun) -> None:
        await self._ready()
        await run.run(self._dispatcher, self._pool.workers)

    @staticmethod
    def _frame(job: Analysis, call: AnalyzeCall, *, started: float) -> pd.DataFrame:
        frame = job.frame(long=call.long, elapsed=time.monotonic() - started)
        if call.progress:
            print(frame.attrs["dllm_summary"])
        return frame
