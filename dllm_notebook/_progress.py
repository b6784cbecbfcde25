"""One progress bar per analysis, fed from counters so that only the caller's thread draws.

The dispatcher (on the library's loop thread) only bumps counters; the thread that waits
for the result calls :meth:`Progress.refresh` every tenth of a second, so a notebook widget
is only ever touched from the thread that created it.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["Progress"]


class Progress:
    """Counts finished, failed and cached tasks and shows them in a ``tqdm.auto`` bar."""

    def __init__(self, total: int, *, desc: str = "analyze", enabled: bool = True) -> None:
        self.total = total
        self.ok = 0
        self.failed = 0
        self.cached = 0
        self.status = ""
        self._lock = threading.Lock()
        self._bar: Any = None
        self._shown = 0
        self._last: tuple[int, int, int, str] = (0, 0, 0, "")
        if enabled and total:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=desc, unit="task", dynamic_ncols=True)

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
        self.status = status

    def refresh(self) -> None:
        """Redraw the bar when something changed; call from the thread that created it."""
        bar = self._bar
        if bar is None:
            return
        with self._lock:
            done, failed, cached, status = self.done, self.failed, self.cached, self.status
        state = (done, failed, cached, status)
        if state == self._last:
            return
        self._last = state
        postfix: dict[str, Any] = {}
        if cached:
            postfix["cached"] = cached
        if failed:
            postfix["failed"] = failed
            bar.colour = "red"
        if status:
            postfix["status"] = status
        bar.set_postfix(postfix, refresh=False)
        bar.update(done - self._shown)  # redraws at most every mininterval
        self._shown = done

    def write(self, line: str) -> None:
        if self._bar is not None:
            self._bar.write(line)
        else:
            print(line)

    def close(self) -> None:
        if self._bar is not None:
            self.refresh()
            self._bar.refresh()
            self._bar.close()
            self._bar = None
