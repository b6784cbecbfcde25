"""Every status a cell of the result table can have, named once.

A cell is ``ok`` (answered now), ``cached`` (answered from the result store), ``failed``
(every try failed; ``error`` says why), ``invalid`` (a typed answer that did not match its
type even after a retry; the raw text is kept), ``pending`` (not finished: an interrupted
run), or one of the paper statuses of ``_reading.papers`` (``encrypted``, ``corrupt`` ...)
when its paper could not be read.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "ANSWERED",
    "CACHED",
    "CANCELLED",
    "FAILED",
    "FINISHED",
    "INTERRUPTED",
    "INVALID",
    "OK",
    "PENDING",
    "QUEUED",
    "RUNNING",
]

OK: Final = "ok"
CACHED: Final = "cached"
FAILED: Final = "failed"
INVALID: Final = "invalid"
PENDING: Final = "pending"

ANSWERED: Final = frozenset({OK, CACHED})
"""The statuses of a cell that holds its answer."""

# A run (``analyze()``, or a background job) is queued (reading the papers), running, and
# ends finished, failed, interrupted (Ctrl-C / "Interrupt kernel") or cancelled (a job).
QUEUED: Final = "queued"
RUNNING: Final = "running"
FINISHED: Final = "finished"
INTERRUPTED: Final = "interrupted"
CANCELLED: Final = "cancelled"
