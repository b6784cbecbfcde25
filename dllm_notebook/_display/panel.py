"""The live worker panel: one ipywidgets ``HTML`` widget, redrawn on a throttled thread.

The core never waits for the panel. Event listeners (run on the library's event-loop
thread) only set a dirty flag; one daemon thread redraws at most every
``REDRAW_INTERVAL`` seconds while something changed, and stops when the cluster closes or
is garbage collected (it holds the cluster only through a weak reference).

This module imports ipywidgets, so it is itself imported only when a panel is made.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import ipywidgets

from .._events import Event

__all__ = ["REDRAW_INTERVAL", "LivePanel"]

REDRAW_INTERVAL = 0.5
"""Seconds between two redraws, at the least."""

ALIVE_POLL = 1.0
"""How often an idle panel thread checks whether its cluster still exists."""

Render = Callable[[bool], tuple[str, bool]]
"""Draws the table: given ``closed``, returns its HTML and whether it must be redrawn soon
even if no event comes (a countdown is showing)."""


class LivePanel:
    """Keeps one widget showing a cluster's workers.

    ``render`` draws the HTML table; ``alive`` tells whether the cluster is still open;
    ``subscribe`` adds an event listener and returns its remover. None of them may hold
    the cluster strongly, or the cluster could never be collected while a panel exists.
    """

    def __init__(
        self,
        render: Render,
        alive: Callable[[], bool],
        subscribe: Callable[[Callable[[Event], None]], Callable[[], None]],
    ) -> None:
        self._render = render
        self._alive = alive
        self._draw_lock = threading.Lock()
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self.redraws = 0
        value, _ = render(not alive())
        self.widget: Any = ipywidgets.HTML(value=value)
        self._thread: threading.Thread | None = None
        if self._stop.is_set() or not alive():
            return
        self._unsubscribe = subscribe(self._note)
        self._thread = threading.Thread(target=self._run, name="dllm-panel", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        """Whether the redraw thread is still watching the cluster."""
        return self._thread is not None and self._thread.is_alive()

    def _note(self, event: Event) -> None:
        """The event listener: cheap enough for the event-loop thread."""
        self._dirty.set()

    def redraw(self) -> None:
        """Draw the current state now (from any thread)."""
        with self._draw_lock:
            value, countdown = self._render(self._stop.is_set() or not self._alive())
            if value != self.widget.value:
                self.widget.value = value
                self.redraws += 1
        if countdown:
            self._dirty.set()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if not self._dirty.wait(ALIVE_POLL):
                    if not self._alive():
                        break
                    continue
                if self._stop.is_set():
                    break
                self._dirty.clear()
                self.redraw()
                if not self._alive():
                    break
                self._stop.wait(REDRAW_INTERVAL)
        finally:
            self._stop.set()
            self._unsubscribe()
            self.redraw()  # the final state, marked closed

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the redraw thread after a last redraw; called when the cluster closes."""
        self._stop.set()
        self._dirty.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
