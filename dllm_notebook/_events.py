"""Events the core emits, so user interfaces can watch without being called by the core.

Listeners run on the library's event-loop thread and must return quickly: a widget view
should only note the event and redraw on its own throttled schedule.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Event", "EventHub"]

log = logging.getLogger("dllm_notebook")


@dataclass(frozen=True)
class Event:
    """``kind`` is ``worker`` (health changed), ``task_started``, ``task_finished`` or
    ``waiting`` (no healthy worker); ``data`` holds the details."""

    kind: str
    data: dict[str, Any]


Listener = Callable[[Event], None]


class EventHub:
    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Add a listener; returns a function that removes it."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def emit(self, kind: str, **data: Any) -> None:
        if not self._listeners:
            return
        event = Event(kind, data)
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # a broken view must never stop the work
                log.exception("event listener %r failed", listener)
