"""The ``analyze()`` family behind :class:`Cluster`: papers in, a DataFrame out.

:class:`Analyses` is the object a :class:`Cluster` owns for this: it is handed the pool,
the dispatcher, the settings, the events and the store, and runs ``analyze()``,
``aanalyze()`` and ``submit()`` with them. The cluster's public methods only delegate.

The three take the same arguments. They are written once, as the signature of
:func:`~.analysis.analyze_call`, and :func:`same_arguments_as` gives each public method
that signature (for ``help()``, IDEs and mypy alike) and hands it the arguments as one
:class:`~.analysis.AnalyzeCall`.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar, cast

from .._loop import bridge, run_sync
from .._results.statuses import FAILED, FINISHED, INTERRUPTED
from .analysis import Analysis
from .call import AnalyzeCall, prepare
from .jobs import Job
from .runner import Runner

if TYPE_CHECKING:
    import pandas as pd

    from .._config import ClusterSettings
    from .._display.progress import Progress
    from .._events import EventHub
    from .._results.store import ResultStore
    from .._running.dispatch import Dispatcher
    from .._running.pool import WorkerPool

__all__ = ["Analyses", "same_arguments_as"]

log = logging.getLogger("dllm_notebook")

P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S")


def same_arguments_as(
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


class Analyses:
    """Runs ``analyze()``, ``aanalyze()`` and ``submit()`` for one cluster.

    ``store`` is called for the cluster's current result store (it can be reassigned);
    ``ready`` waits until the workers have been checked once.
    """

    def __init__(
        self,
        *,
        settings: ClusterSettings,
        events: EventHub,
        pool: WorkerPool,
        dispatcher: Dispatcher,
        store: Callable[[], ResultStore | None],
        ready: Callable[[], Coroutine[Any, Any, None]],
    ) -> None:
        self.settings = settings
        self.events = events
        self.pool = pool
        self.dispatcher = dispatcher
        self.store = store
        self.ready = ready
        self.last: Analysis | None = None
        self.jobs: list[Job] = []

    def analyze(self, call: AnalyzeCall) -> pd.DataFrame:
        run = self.start_run(call)
        analysis = run.analysis
        started = time.monotonic()
        status = FAILED
        try:
            run_sync(self._execute(run), what="analyze()", on_tick=analysis.progress.refresh)
            status = FINISHED
        except KeyboardInterrupt:
            status = INTERRUPTED
            analysis.progress.write(run.interrupted_message())
            raise
        finally:
            run.finish(status)
            analysis.progress.close()
        return self._frame(analysis, call, started=started)

    async def aanalyze(self, call: AnalyzeCall) -> pd.DataFrame:
        run = await asyncio.to_thread(self.start_run, call)
        analysis = run.analysis
        started = time.monotonic()
        work = asyncio.ensure_future(bridge(self._execute(run)))
        status = FAILED
        try:
            while not work.done():
                await asyncio.wait([work], timeout=0.1)
                analysis.progress.refresh()
            await work
            status = FINISHED
        except (asyncio.CancelledError, KeyboardInterrupt):
            status = INTERRUPTED
            analysis.progress.write(run.interrupted_message())
            raise
        finally:
            if not work.done():
                work.cancel()
            await asyncio.to_thread(run.finish, status)
            analysis.progress.close()
        return self._frame(analysis, call, started=started)

    def submit(self, call: AnalyzeCall) -> Job:
        job = Job(
            call,
            prepare=lambda progress, run_id: self.start_run(
                call, progress=progress, run_id=run_id, remember=False
            ),
            execute=self._execute,
        )
        self.jobs.append(job)
        return job

    def stop_jobs(self) -> None:
        """Cancel the running jobs and give them a moment to withdraw their requests."""
        running = [job for job in self.jobs if not job.done()]
        for job in running:
            job.cancel(wait=False)
        for job in running:
            job.wait(timeout=5)

    # -- shared by analyze, aanalyze and submit --------------------------------------
    def start_run(
        self,
        call: AnalyzeCall,
        *,
        progress: Progress | None = None,
        run_id: str | None = None,
        remember: bool = True,
    ) -> Runner:
        """Read the papers, resolve the prompts, open the store: every error before any
        request. A job passes its own ``progress`` bar (made in the caller's cell) and
        ``run_id``, and is not remembered as ``cluster.last_analysis``."""
        analysis = prepare(
            call,
            progress=call.progress and progress is None,
            model_groups=self.settings.models,
        )
        if progress is not None:
            analysis.progress = progress
            progress.set_total(analysis.total)
        if run_id is not None:
            analysis.run_id = run_id
        analysis.progress.watch(self.events)
        store = self.store() if call.cache else None
        # Enough queued tasks for the scheduler to put the largest first across a whole
        # typical batch (100 papers x 5 prompts), still a bounded number for huge ones.
        cap = self.settings.max_concurrent_batch
        slots = sum(w.config.max_concurrent_requests for w in self.pool.workers)
        window = max(1024, 4 * (slots if cap == "auto" else cap))
        run = Runner(analysis, store, reuse=not call.refresh, window=window)
        try:
            run.start()
        except BaseException:
            analysis.progress.close()
            raise
        if remember:
            self.last = analysis
        return run

    async def _execute(self, run: Runner) -> None:
        await self.ready()
        await run.run(self.dispatcher, self.pool.workers)

    @staticmethod
    def _frame(analysis: Analysis, call: AnalyzeCall, *, started: float) -> pd.DataFrame:
        frame = analysis.frame(long=call.long, elapsed=time.monotonic() - started)
        summary = frame.attrs["dllm_summary"]
        log.info("%s", summary)
        if call.progress:
            analysis.progress.write(summary)
        return frame
