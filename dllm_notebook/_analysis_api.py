"""The ``analyze()`` family of :class:`Cluster` methods: papers in, a DataFrame out.

Kept apart from ``_cluster`` so the cluster's core (workers, ask, map, lifecycle) and the
paper-analysis front end each have a module of their own. The heavy lifting lives in
``_analyze`` (planning), ``_cache`` (the result store) and the dispatcher.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Mapping
from typing import TYPE_CHECKING, Any

from ._cache import CachedRun
from ._loop import bridge, run_sync

if TYPE_CHECKING:
    import pandas as pd

    from ._analyze import Analysis
    from ._config import ClusterSettings
    from ._dispatch import Dispatcher
    from ._pool import WorkerPool
    from ._store import ResultStore

__all__ = ["AnalyzeMethods"]


class AnalyzeMethods:
    """``analyze`` and ``aanalyze``; mixed into :class:`Cluster`."""

    settings: ClusterSettings
    last_analysis: Analysis | None
    _store: ResultStore | None
    _pool: WorkerPool
    _dispatcher: Dispatcher

    def _ready(self) -> Coroutine[Any, Any, None]:
        raise NotImplementedError

    def analyze(
        self,
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
    ) -> pd.DataFrame:
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
        """
        choices = dict(preset=preset, prompts=prompts, recursive=recursive, fit=fit)
        choices.update(password=password, progress=progress, refresh=refresh, cache=cache)
        run = self._start_run(source, choices, options)
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
        return self._frame(job, long=long, progress=progress, started=started)

    async def aanalyze(
        self,
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
    ) -> pd.DataFrame:
        """The async twin of :meth:`analyze`, for ``await`` in a notebook cell."""
        choices = dict(preset=preset, prompts=prompts, recursive=recursive, fit=fit)
        choices.update(password=password, progress=progress, refresh=refresh, cache=cache)
        run = await asyncio.to_thread(self._start_run, source, choices, options)
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
        return self._frame(job, long=long, progress=progress, started=started)

    def _start_run(
        self, source: Any, choices: dict[str, Any], options: Mapping[str, Any]
    ) -> CachedRun:
        """Read the papers, resolve the prompts, open the store: every error before any
        request."""
        from ._analyze import prepare

        refresh, cache = choices.pop("refresh"), choices.pop("cache")
        job = prepare(source, options=options, **choices)
        store = self._store if cache else None
        window = max(64, 2 * self.settings.max_concurrent_batch)
        run = CachedRun(job, store, reuse=not refresh, window=window)
        try:
            run.start()
        except BaseException:
            job.progress.close()
            raise
        self.last_analysis = job
        return run

    async def _analyze(self, run: CachedRun) -> None:
        await self._ready()
        await run.run(self._dispatcher, self._pool.workers)

    @staticmethod
    def _frame(job: Analysis, *, long: bool, progress: bool, started: float) -> pd.DataFrame:
        frame = job.frame(long=long, elapsed=time.monotonic() - started)
        if progress:
            print(frame.attrs["dllm_summary"])
        return frame
