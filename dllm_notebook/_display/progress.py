"""One progress bar per analysis: a model (counters) fed from any thread, and a view.

The model: the dispatcher, on the library's loop thread, only bumps counters
(:meth:`Progress.add`) and notes events (:meth:`Progress.on_event`). The view: a
``tqdm.auto`` bar that one thread redraws, by calling :meth:`Progress.refresh` every tenth
of a second. For ``analyze()`` that thread is the caller's, which waits anyway; for a
background job (``cluster.submit()``) it is the job's own thread, so the caller is free. In
Jupyter, tqdm.auto draws an ipywidgets bar; the widget is created (and displayed) by the
caller in its own cell, and updating it from the job's thread is safe (widget updates are
messages to the front end). In a terminal, only ``analyze()`` draws a live bar: see
``_jobs`` for background jobs.

The bar is one bar for the whole run, counts finished, cached and failed tasks, turns red
once a task failed, and says ``waiting for a worker`` while the cluster has no healthy
worker (the dispatcher's ``waiting`` event), until tasks start or finish again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .kernel import execution_count

if TYPE_CHECKING:
    from .._events import Event, EventHub

__all__ = ["WAITING", "Progress"]

WAITING = "waiting for a worker"
"""The bar's status while no worker is healthy."""


class Progress:
    """Counts finished, failed and cached tasks and shows them in a ``tqdm.auto`` bar.

    ``total=None`` starts a bar whose total is not known yet (a job still reading its
    papers); :meth:`set_total` gives it later.
    """

    def __init__(self, total: int | None, *, desc: str = "analyze", enabled: bool = True) -> None:
        self.total = total
        self.ok = 0
        self.failed = 0
        self.cached = 0
        self.status = ""
        self._lock = threading.Lock()
        self._bar: Any = None
        self._widget: Any = None
        self.cell: int | None = None
        self._shown = 0
        self._last: tuple[int, int, int, str] = (0, 0, 0, "")
        self._unsubscribe: Callable[[], None] | None = None
        if enabled and total != 0:
            from tqdm.auto import tqdm

            # refresh() is called at most every tenth of a second and only on a change, so
            # the bar draws every time it is asked to (no throttling of its own).
            self._bar = tqdm(
                total=total,
                desc=desc,
                unit="task",
                dynamic_ncols=True,
                mininterval=0,
                miniters=1,
            )
            self._widget = getattr(self._bar, "container", None)  # the notebook's widget
            self.cell = execution_count() if self._widget is not None else None
            """The cell whose output shows the bar (tqdm displayed it on creation)."""

    @property
    def done(self) -> int:
        return self.ok + self.failed + self.cached

    def add(self, *, ok: int = 0, failed: int = 0, cached: int = 0) -> None:
        """Record finished tasks (safe from any thread)."""
        with self._lock:
            self.ok += ok
            self.failed += failed
            self.cached += cached

    def set_status(self, status: str) -> None:
        """A short note shown after the counts (safe from any thread; ``""`` clears it)."""
        with self._lock:
            self.status = status

    def set_total(self, total: int) -> None:
        """The number of tasks, once known; call from the drawing thread."""
        self.total = total
        if self._bar is not None:
            self._bar.reset(total=total)
            self._shown = 0
            self._last = (0, 0, 0, "")

    # -- events ---------------------------------------------------------------------
    def watch(self, events: EventHub) -> None:
        """Follow the cluster's events (until :meth:`close`) to show when it waits."""
        if self._unsubscribe is None:
            self._unsubscribe = events.subscribe(self.on_event)

    def on_event(self, event: Event) -> None:
        """Note ``waiting`` (no healthy worker); clear it when tasks move again.

        Runs on the library's loop thread: it only notes, :meth:`refresh` draws.
        """
        if event.kind == "waiting":
            self.set_status(WAITING)
        elif event.kind in ("task_started", "task_finished") and self.status == WAITING:
            self.set_status("")

    # -- the view -------------------------------------------------------------------
    def postfix(self) -> str:
        """The text after the counts: ``2 cached, 1 failed, waiting for a worker``."""
        with self._lock:
            parts = [f"{self.cached} cached"] if self.cached else []
            if self.failed:
                parts.append(f"{self.failed} failed")
            if self.status:
                parts.append(self.status)
        return ", ".join(parts)

    def refresh(self) -> None:
        """Redraw the bar when something changed; call from the drawing thread only."""
        bar = self._bar
        if bar is None:
            return
        with self._lock:
            state = (self.done, self.failed, self.cached, self.status)
        if state == self._last:
            return
        self._last = state
        done, failed = state[0], state[1]
        if failed:
            bar.colour = "red"
        bar.set_postfix_str(self.postfix(), refresh=False)
        if done != self._shown:
            bar.update(done - self._shown)  # draws (rate and ETA follow the counts)
            self._shown = done
        else:
            bar.refresh()  # only the postfix changed

    def widget(self) -> Any:
        """The notebook's bar widget (``None`` outside Jupyter or without a bar)."""
        return self._widget

    def write(self, line: str) -> None:
        """Show one line under the bar (or alone, once the bar is closed)."""
        if self._bar is not None:
            self._bar.write(line)
        else:
            from tqdm.auto import tqdm

            tqdm.write(line)

    def close(self, *, failed: bool = False) -> None:
        """Stop following events, draw the final state and close the bar (red if
        ``failed``, e.g. a job that failed before it knew its total)."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        bar = self._bar
        if bar is None:
            return
        if failed:
            bar.colour = "red"
        self.refresh()
        bar.refresh()
        bar.close()
        self._bar = None
        if failed and self._widget is not None:
            bar.disp(bar_style="danger")  # the notebook bar turns green on close otherwise
