"""How a :class:`Cluster` shows itself: a live panel in Jupyter, a table everywhere else.

``cluster`` as the last line of a cell shows one row per worker (health light and reason,
requests in flight, done, failed, latency, tokens per second) and a totals row. In a
Jupyter kernel with ipywidgets installed it is a live widget; elsewhere (a terminal,
nbconvert, GitHub) the same object prints a text table and a static HTML table.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from .._errors import PanelUnavailable
from .._events import Event
from .._running.views import WorkerView
from .kernel import in_kernel as _in_kernel
from .reports import any_resting, html_table, panel_rows, rows_html, text_table

if TYPE_CHECKING:
    from .panel import LivePanel

__all__ = ["ClusterView", "Shown"]

_panel_lock = threading.Lock()


def _widgets_installed() -> bool:
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


def _caption(name: str, workers: int, closed: bool) -> str:
    return f"{name}: {workers} worker{'s' * (workers != 1)}" + (", closed" if closed else "")


class Shown(Protocol):
    """What :class:`ClusterView` needs of the cluster it shows."""

    @property
    def closed(self) -> bool: ...

    def subscribe(self, listener: Callable[[Event], None]) -> Callable[[], None]: ...

    def add_cleanup(self, callback: Callable[[], None]) -> None: ...


class ClusterView:
    """A cluster's ``repr``, its HTML and its live panel.

    Holds the cluster only through a weak reference (the panel's thread must never keep
    a cluster alive) and reads the workers through their read-only views.
    """

    def __init__(self, owner: Shown, workers: Sequence[WorkerView]) -> None:
        self._owner = weakref.ref(owner)
        self._name = type(owner).__name__
        self._workers = list(workers)
        self._live_panel: LivePanel | None = None

    def _closed(self) -> bool:
        owner = self._owner()
        return owner is None or owner.closed

    # -- text and static HTML ---------------------------------------------------------
    def caption(self) -> str:
        return _caption(self._name, len(self._workers), self._closed())

    def text(self) -> str:
        return f"<{self.caption()}>\n{text_table(self._workers)}"

    def html(self) -> str:
        return html_table(self._workers, caption=self.caption())

    def mimebundle(
        self, include: Collection[str] | None = None, exclude: Collection[str] | None = None
    ) -> dict[str, Any]:
        """The live panel's view in a Jupyter kernel, with text and HTML fallbacks."""
        bundle: dict[str, Any] = {"text/plain": self.text(), "text/html": self.html()}
        if _in_kernel() and _widgets_installed():
            panel = self.live_panel()
            panel.redraw()  # a new view starts from the current state
            view = panel.widget._repr_mimebundle_()
            bundle.update({k: v for k, v in view.items() if k != "text/plain"})
        return {
            k: v
            for k, v in bundle.items()
            if (include is None or k in include) and (exclude is None or k not in exclude)
        }

    # -- the live panel ---------------------------------------------------------------
    def live_panel(self) -> LivePanel:
        """The one live panel of this cluster, made on first use."""
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

        owner, workers, name = self._owner, self._workers, self._name

        def alive() -> bool:
            cluster = owner()
            return cluster is not None and not cluster.closed

        def render(closed: bool) -> tuple[str, bool]:
            rows, total = panel_rows(workers)
            table = rows_html(rows, total, caption=_caption(name, len(workers), closed))
            return table, not closed and any_resting(rows)

        def subscribe(listener: Callable[[Event], None]) -> Callable[[], None]:
            cluster = owner()
            if cluster is None:
                return lambda: None
            return cluster.subscribe(listener)

        panel = LivePanel(render, alive, subscribe)
        cluster = owner()
        if cluster is not None and panel.running:
            cluster.add_cleanup(panel.stop)
        return panel
