"""The dispatcher's side of streamed answers: a timer per request awaiting its first token.

A streamed request's first token says when the server started on it. Each worker's usual
time to the first token (per prompt token) is learned from the first tokens themselves, as
they come (:class:`~.first_token.FirstTokenWatch`), so it is known within the first
prompt's reading, long before any answer ends. A request sent while others run on its
worker gets a timer for its due time; when it fires before the first token came, the
request waits in the server's queue and the pool lowers the worker's limit at once
(:meth:`~.pool.WorkerPool.record_first_token_overdue`), and the dispatcher takes the
request back to send it elsewhere. Requests already running when a
worker's first rate is learned get their timers then: at a cold start, those sent beyond
the server's slots are seen while they wait.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from .first_token import MARGIN

if TYPE_CHECKING:
    from .backends import FirstToken
    from .pool import WorkerPool
    from .tasks import Attempt

__all__ = ["FirstTokenTimers"]

LAG = 0.05
"""A timer that runs this many seconds late: the client's loop is behind, and so may be
the first tokens it has not read yet."""


def _prompt_tokens(attempt: Attempt) -> float:
    """The prompt's expected size where it was sent (smaller on a warm prefix cache)."""
    if attempt.size is not None:
        return attempt.size.prompt
    return float(attempt.task.request.prompt_tokens_estimate or 0)


class FirstTokenTimers:
    """The streamed requests in flight that have not had their first token yet."""

    def __init__(self, pool: WorkerPool, withdraw: Callable[[Attempt], None]) -> None:
        self.pool = pool
        self.withdraw = withdraw
        """Called with a request whose first token is overdue, after the limit dropped."""
        self._awaiting: dict[Attempt, asyncio.TimerHandle | None] = {}

    def start(self, attempt: Attempt) -> FirstToken | None:
        """The request is being sent: the callback its backend calls at the first token, or
        ``None`` where the worker does not stream."""
        backend = attempt.worker.backend
        if backend is None or not backend.streams:
            return None
        self._awaiting[attempt] = self._arm(attempt)
        return lambda seconds: self._came(attempt, seconds)

    def end(self, attempt: Attempt) -> None:
        """The request is over (answered, failed or cancelled)."""
        handle = self._awaiting.pop(attempt, None)
        if handle is not None:
            handle.cancel()

    def _arm(self, attempt: Attempt) -> asyncio.TimerHandle | None:
        if attempt.concurrency < 2:  # alone on its worker: nothing of ours to wait behind
            return None
        due = attempt.worker.first_token.due(_prompt_tokens(attempt))
        if due is None:
            return None
        delay = max(0.0, attempt.started + due - time.monotonic())
        return self._timer(attempt, delay)

    def _timer(self, attempt: Attempt, delay: float) -> asyncio.TimerHandle:
        loop = asyncio.get_running_loop()
        return loop.call_later(delay, self._overdue, attempt, loop.time() + delay)

    def _overdue(self, attempt: Attempt, when: float) -> None:
        if asyncio.get_running_loop().time() - when > LAG:
            # This process is behind (its own CPU): the first token may be waiting in the
            # socket. Ask again a little later instead of blaming the server.
            self._awaiting[attempt] = self._timer(attempt, MARGIN)
            return
        del self._awaiting[attempt]  # judged: its late first token teaches nothing
        self.pool.record_first_token_overdue(attempt.worker, attempt.concurrency)
        self.withdraw(attempt)

    def _came(self, attempt: Attempt, seconds: float) -> None:
        if attempt not in self._awaiting:
            return  # already judged overdue
        self.end(attempt)
        if attempt.warm:  # read from the prefix cache: faster than a reading
            return
        watch = attempt.worker.first_token
        first = watch.per_token is None
        watch.learn(seconds, _prompt_tokens(attempt))
        if first and watch.per_token is not None:
            for other, handle in list(self._awaiting.items()):
                if other.worker is attempt.worker and handle is None:
                    self._awaiting[other] = self._arm(other)
