"""Background jobs: ``cluster.submit()`` runs an analysis while the notebook stays free.

>>> job = cluster.submit("papers/", preset="research")
>>> job                      # status, counts; in Jupyter a live progress bar
>>> job.partial()            # the answers so far
>>> df = job.result()        # waits; the same DataFrame as analyze()

Three threads take part:

* The caller's thread runs ``submit()``: it makes the :class:`Job` and its progress bar, so
  that in Jupyter the bar's widget is displayed in the submitting cell, and returns.
* The job's own daemon thread reads the papers and opens the store (errors land in
  ``job.result()``), hands the analysis to the library's loop, and while it runs redraws
  the bar every tenth of a second. So the bar is updated from this thread, not from the
  thread that created it: in Jupyter that is safe (a widget update is a message to the
  front end). The thread runs in a copy of the caller's context, so that ipykernel
  routes its output to the submitting cell.
* The library's loop thread sends the requests, exactly as for ``analyze()``; several
  jobs (and ``ask()``/``map()`` calls) share the cluster's workers there.

In a terminal a bar drawn from a background thread would write over the user's prompt,
so outside Jupyter a job draws no live bar: it prints one line when it ends, and
``job.progress`` and ``repr(job)`` give the counts at any time. ``progress=False`` prints
nothing anywhere.

``cancel()`` stops sending and cancels the requests in flight; every answer that arrived
is in the result store and in ``partial()``, and submitting the same call again resumes.
A job records its run in the store (``cluster.runs()``) as ``analyze()`` does, with the
status ``finished``, ``failed`` or ``cancelled``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import html
import logging
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from .._display.kernel import execution_count, tqdm_draws_widgets
from .._display.progress import Progress
from .._errors import JobCancelled
from .._loop import get_loop, in_loop_thread, submit
from .._results.statuses import CANCELLED, FAILED, FINISHED, QUEUED, RUNNING

if TYPE_CHECKING:
    import pandas as pd

    from .analysis import Analysis
    from .call import AnalyzeCall
    from .runner import Runner

__all__ = ["Job", "JobCancelled"]

log = logging.getLogger("dllm_notebook")

TICK = 0.1
"""Seconds between redraws of a job's bar (and between checks of a waiting caller)."""
CANCEL_WAIT = 10.0
"""How long ``cancel()`` waits for the requests in flight to be withdrawn."""
_COLOURS = {FINISHED: "#2e7d32", FAILED: "#c62828", CANCELLED: "#9e6a03"}


class Job:
    """One ``analyze()`` running in the background; made by :meth:`Cluster.submit`.

    ``status`` is ``queued`` (reading the papers), ``running``, ``finished``, ``failed``
    or ``cancelled``. ``progress`` holds the counts (``done``, ``ok``, ``cached``,
    ``failed``, ``total``). ``id`` is also the run's id in ``cluster.runs()`` and
    ``cluster.history(run=job.id)``.
    """

    def __init__(
        self,
        call: AnalyzeCall,
        *,
        prepare: Callable[[Progress, str], Runner],
        execute: Callable[[Runner], Coroutine[Any, Any, None]],
    ) -> None:
        self.id = uuid.uuid4().hex[:12]
        self._call = call
        self.progress = Progress(
            None, desc=f"job {self.id}", enabled=call.progress and tqdm_draws_widgets()
        )
        self._prepare = prepare
        self._execute = execute
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._status = QUEUED
        self._drawing = True
        self._cancel_requested = False
        self._task: asyncio.Task[None] | None = None
        self._analysis: Analysis | None = None
        self._result: pd.DataFrame | None = None
        self._error: BaseException | None = None
        self._callbacks: list[Callable[[], None]] = []
        self._submitted = time.monotonic()
        self._sending_since: float | None = None
        self._ended: float | None = None
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run, args=(self._main,), name=f"dllm-job-{self.id}", daemon=True
        )
        self._thread.start()

    # -- state ----------------------------------------------------------------------
    @property
    def status(self) -> str:
        """``queued``, ``running``, ``finished``, ``failed`` or ``cancelled``."""
        return self._status

    @property
    def error(self) -> BaseException | None:
        """Why the job failed (``None`` unless ``status == "failed"``)."""
        return self._error

    @property
    def elapsed(self) -> float:
        """Seconds since it was submitted (until it ended)."""
        end = self._ended if self._ended is not None else time.monotonic()
        return end - self._submitted

    def done(self) -> bool:
        """True once the job has finished, failed or been cancelled."""
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the job ends (at most ``timeout`` seconds); True if it has ended.

        Waits in short slices, so "Interrupt kernel" stops the waiting (not the job).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._done.is_set():
            left = TICK if deadline is None else min(TICK, deadline - time.monotonic())
            if left <= 0:
                break
            self._done.wait(left)
        return self._done.is_set()

    # -- results --------------------------------------------------------------------
    def result(self, timeout: float | None = None) -> pd.DataFrame:
        """Wait for the job and return its DataFrame, the same that ``analyze()`` returns.

        Re-raises the job's error if it failed, raises :class:`JobCancelled` if it was
        cancelled, and ``TimeoutError`` if it is still running after ``timeout`` seconds.
        """
        if not self.wait(timeout):
            raise TimeoutError(
                f"job {self.id} is still running after {timeout:g} s "
                f"({self._counts()}); call job.result() again, or job.cancel() to stop it"
            )
        return self._outcome()

    async def aresult(self) -> pd.DataFrame:
        """The async twin of :meth:`result`, for ``await`` in a notebook cell."""
        loop = asyncio.get_running_loop()
        ended = loop.create_future()

        def wake() -> None:
            if not ended.done():
                ended.set_result(None)

        def ended_elsewhere() -> None:
            loop.call_soon_threadsafe(wake)

        self.add_done_callback(ended_elsewhere)
        await ended
        return self._outcome()

    def add_done_callback(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` (on the job's thread) when the job ends; at once if it has."""
        with self._lock:
            if not self._done.is_set():
                self._callbacks.append(callback)
                return
        callback()

    def _outcome(self) -> pd.DataFrame:
        if self._error is not None:
            raise self._error
        if self._result is None:
            raise JobCancelled(
                f"job {self.id} was cancelled ({self._counts()}); job.partial() has the "
                "answers that arrived, and submitting the same call again resumes"
            )
        return self._result

    def partial(self, long: bool = False) -> pd.DataFrame:
        """The answers so far, in the shape of the final result.

        The wide table (paper x prompt) with unfinished cells missing, or with
        ``long=True`` one row per paper x prompt, unfinished ones ``pending``. Empty while
        the job is still reading its papers.
        """
        analysis = self._analysis
        if analysis is None:
            from .._results.frames import long_frame, wide_frame

            empty = long_frame([])
            return empty if long else wide_frame(empty)
        since = self._sending_since or self._submitted
        end = self._ended if self._ended is not None else time.monotonic()
        return analysis.frame(long=long, elapsed=end - since)

    # -- cancelling -----------------------------------------------------------------
    def cancel(self, *, wait: bool = True) -> bool:
        """Stop sending and cancel the requests in flight; keep every answer that arrived.

        Waits (up to a few seconds) until the requests are withdrawn, unless
        ``wait=False``. Returns False if the job had already ended.
        """
        with self._lock:
            if self._done.is_set():
                return False
            self._cancel_requested = True
            task = self._task
        if task is not None:
            get_loop().call_soon_threadsafe(task.cancel)
        if wait and not in_loop_thread():
            self.wait(CANCEL_WAIT)
        return True

    # -- the job's thread -----------------------------------------------------------
    def _main(self) -> None:
        run: Runner | None = None
        outcome = FAILED
        try:
            run = self._prepare(self.progress, self.id)
            self._analysis = run.analysis
            self._sending_since = time.monotonic()
            self._status = RUNNING
            future = submit(self._drive(run))
            while True:
                try:
                    future.result(timeout=TICK)
                    break
                except concurrent.futures.TimeoutError:
                    self._draw()
            outcome = FINISHED
        except (concurrent.futures.CancelledError, asyncio.CancelledError):
            outcome = CANCELLED
        except BaseException as exc:  # kept for result(), like analyze() would raise it
            if self._cancel_requested and run is not None:
                outcome = CANCELLED
            else:
                self._error = exc
        self._end(run, outcome)

    def _draw(self) -> None:
        """Redraw the bar; if the front end fails, stop drawing (the job goes on)."""
        if self._drawing:
            try:
                self.progress.refresh()
            except Exception:
                self._drawing = False
                log.exception("job %s: its progress bar failed; it goes on without", self.id)

    async def _drive(self, run: Runner) -> None:
        with self._lock:
            if self._cancel_requested:
                raise asyncio.CancelledError
            self._task = asyncio.current_task()
        await self._execute(run)

    def _end(self, run: Runner | None, outcome: str) -> None:
        """Record the run, close the bar, say how it ended, and wake the waiters."""
        try:
            if outcome == "finished":
                try:
                    self._result = self.partial(long=self._call.long)
                except Exception as exc:
                    outcome, self._error = FAILED, exc
            if run is not None:  # the answers are stored already; this is bookkeeping
                self._quietly("note the end of its run", lambda: run.finish(outcome))
            failed = outcome != FINISHED
            self._quietly("close its progress bar", lambda: self.progress.close(failed=failed))
            self._ended = time.monotonic()
            self._status = outcome
            if self._call.progress:
                self._quietly("write its last line", lambda: self.progress.write(self._line()))
        finally:
            self._status = outcome
            with self._lock:
                callbacks, self._callbacks = self._callbacks, []
                self._done.set()
            for callback in callbacks:
                self._quietly("run a done callback", callback)

    def _quietly(self, what: str, step: Callable[[], object]) -> None:
        """Run one step of the ending; a failure is logged, never left to stop the rest."""
        try:
            step()
        except Exception:
            log.exception("job %s could not %s", self.id, what)

    # -- display --------------------------------------------------------------------
    def _counts(self) -> str:
        progress = self.progress
        total = "?" if progress.total is None else str(progress.total)
        extra = progress.postfix()
        return f"{progress.done}/{total} tasks" + (f" ({extra})" if extra else "")

    def _line(self) -> str:
        """One line on how the job stands."""
        status = self._status
        if status == "queued":
            return f"job {self.id} queued: reading the papers"
        if status == FINISHED and self._result is not None:
            return f"job {self.id} finished: {self._result.attrs.get('dllm_summary', '')}"
        if status == FAILED and self._error is not None:
            error = self._error
            return f"job {self.id} failed: {type(error).__name__}: {error} (job.result() raises it)"
        if status == "cancelled":
            return (
                f"job {self.id} cancelled: {self._counts()}; job.partial() has the answers, "
                "and submitting the same call again resumes"
            )
        return f"job {self.id} {status}: {self._counts()}, {self.elapsed:.1f} s"

    def __repr__(self) -> str:
        return f"<Job {self._line().removeprefix('job ')}>"

    def _repr_html_(self) -> str:
        status = self._status
        colour = _COLOURS.get(status, "#1565c0")
        progress = self.progress
        shown = ""
        if progress.total:
            shown = f'<progress value="{progress.done}" max="{progress.total}"></progress> '
        text = html.escape(self._line().removeprefix(f"job {self.id} {status}").lstrip(": "))
        return (
            f'<div class="dllm-job"><b>Job {self.id}</b> '
            f'<span style="color:{colour};font-weight:bold">{status}</span><br>'
            f"{shown}{text}</div>"
        )

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        """The live bar's widget, where Jupyter can show widgets (else the HTML above); in
        the cell that submitted the job, which shows the bar already, only its status."""
        widget = self.progress.widget()
        if widget is None:
            return {}
        if self.progress.cell is not None and self.progress.cell == execution_count():
            note = f"job {self.id} submitted: its bar above follows it; job.result() waits"
            return {"text/plain": note, "text/html": f'<div class="dllm-job">{note}</div>'}
        bundle: dict[str, Any] = widget._repr_mimebundle_()
        key = "application/vnd.jupyter.widget-view+json"
        return {key: bundle[key]} if key in bundle else {}
