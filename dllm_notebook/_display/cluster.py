"""How a :class:`Cluster` shows itself: a live panel in Jupyter, a table everywhere else.

``cluster`` as the last line of a cell shows one row per worker (health light and reason,
requests in flight, done, failed, latency, tokens per second) and a totals row. In a
Jupyter kernel with ipywidgets installed it is a live widget; elsewhere (a terminal,
nbconvert, GitHub) the same object prints a text table and a static HTML table.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any

from .._errors import PanelUnavailable
from .._events import Event
from .._running.pool import WorkerPool
from .kernel import in_kernel as _in_kernel
from .reports import any_resting, html_table, panel_rows, rows_html, text_table

if TYPE_CHECKING:
    from .panel import LivePanel

__all__ = ["ClusterDisplay"]

_panel_lock = threading.Lock()


def _widgets_installed() -> bool:
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


def _caption(name: str, workers: int, closed: bool) -> str:
    return f"{name}: {workers} worker{'s' * (workers != 1)}" + (", closed" if closed else "")


class ClusterDisplay:
    """Mixin giving :class:`Cluster` its ``repr``, its HTML and its live panel."""

    _pool: WorkerPool
    _closed: bool
    subscribe: Callable[[Callable[[Event], None]], Callable[[], None]]
    _live_panel: LivePanel | None = None

    # -- text and static HTML ---------------------------------------------------------
    def _caption(self) -> str:
        return _caption(type(self).__name__, len(self._pool.workers), self._closed)

    def __repr__(self) -> str:
        return f"<{self._caption()}>\n{text_table(self._pool.workers)}"

    def _repr_html_(self) -> str:
        return html_table(self._pool.workers, caption=self._caption())

    def _repr_mimebundle_(
        self, include: Collection[str] | None = None, exclude: Collection[str] | None = None
    ) -> dict[str, Any]:
        """The live panel's view in a Jupyter kernel, with text and HTML fallbacks."""
        bundle: dict[str, Any] = {"text/plain": repr(self), "text/html": self._repr_html_()}
        if _in_kernel() and _widgets_installed():
            panel = self._panel()
            panel.redraw()  # a new view starts from the current state
            view = panel.widget._repr_mimebundle_()
            bundle.update({k: v for k, v in view.items() if k != "text/plain"})
        return {
            k: v
            for k, v in bundle.items()
            if (include is None or k in include) and (exclude is None or k not in exclude)
        }

    # -- the live panel ---------------------------------------------------------------
    def panel(self) -> Any:
        """The live worker panel, an ipywidgets widget (one per cluster).

        Showing ``cluster`` as the last line of a cell shows it too; call this to place it
        elsewhere, e.g. ``display(cluster.panel())`` above a long ``analyze()``. It updates
        at most twice a second while work runs, and stops when the cluster closes.
        """
        return self._panel().widget

    def _panel(self) -> LivePanel:
        with _panel_lock:
            panel = self._live_panel
            if panel is None:
                panel = self._live_panel = self._make_panel()
            return panel

    def _make_panel(self) -> LivePanel:
        if not _widgets_installed():
            raise PanelUnavailable()
        try:
            from .panel import LivePanel
        except ImportError as exc:
            raise PanelUnavailable() from exc

        owner = weakref.ref(self)
        workers = self._pool.workers  # the list, not the cluster: no strong reference
        name = type(self).__name__

        def alive() -> bool:
            cluster = owner()
            return cluster is not None and not cluster._closed

        def render(closed: bool) -> tuple[str, bool]:
            rows, total = panel_rows(workers)
            table = rows_html(rows, total, caption=_caption(name, len(workers), closed))
            return table, not closed and any_resting(rows)

        panel = LivePanel(render, alive, self.subscribe)
        add_cleanup = getattr(self, "add_cleanup", None)
        if callable(add_cleanup) and panel.running:
            add_cleanup(panel.stop)
        return panel
