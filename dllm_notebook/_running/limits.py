"""How many requests a worker takes at once: the configured maximum, adapted to what it does.

A server that queues requests internally (more were sent than it runs in parallel) answers
each one later: with ``c`` requests in flight on ``s`` parallel slots, each takes ``c / s``
times its best latency (Little's law). So when latency per unit of work climbs well above
the best seen, the limit comes down to ``c x best / recent``, the slots the server really
has. A server that is out of capacity says so with 429 or 503: the limit halves. Then it is
probed back up, one request per round of answers, while latency stays near its best. This
is additive increase with a latency-gradient decrease, as TCP Vegas and Netflix's
concurrency-limits do.

Latency is compared per unit of work: the time the server says it spent on the request
(which leaves out its queue), or else tokens, a prompt token counting ``PREFILL_WEIGHT`` of a
generated one. The floor (the best seen) drifts up slowly so a worker that became slower for good
(a bigger model, a hot laptop) is not throttled forever.
"""

from __future__ import annotations

import math

__all__ = ["AdaptiveLimit"]

PREFILL_WEIGHT = 1 / 16
QUEUEING = 1.2
"""Recent latency this many times the floor, with requests in parallel: the server queues."""
QUEUED = 1.3
"""One answer this many times the best, by the server's own clock: it waited in a queue."""
MIN_WAIT = 0.25
"""Seconds over the best-case time an answer must take before it counts as queued: with
short answers from a fast server, fixed costs (HTTP, JSON) would otherwise look like a
queue."""
HOLD_ROUNDS = 20
"""After a queue was seen, rounds of answers before the limit is probed above it again."""
CLEAR = 1.1
"""Recent latency within this factor of the floor: room to try one more request."""
FLOOR_DRIFT = 1.01
RECENT_WEIGHT = 0.3


class AdaptiveLimit:
    """One worker's concurrency limit between 1 and ``maximum``."""

    def __init__(self, maximum: int) -> None:
        self.configured = max(1, maximum)
        self.maximum = self.configured
        self.limit = self.maximum
        self.floor: float | None = None
        self.recent: float | None = None
        self._cooldown = 0
        self._credit = 0
        self._in_flight: float | None = None
        self._ceiling = self.maximum
        self._hold = 0

    @staticmethod
    def work(prompt_tokens: float, answer_tokens: float) -> float:
        return prompt_tokens * PREFILL_WEIGHT + answer_tokens

    def on_success(
        self, latency: float, work: float, concurrency: int, *, exact: bool = False
    ) -> int:
        """An answer that took ``latency`` s for ``work`` units, sent with ``concurrency``
        requests in flight on this worker (itself included). Returns the new limit.

        ``exact``: ``work`` is the server's own time for the request, so one answer that
        took well over it waited in the server's queue: ``concurrency`` was too many. The
        limit then stays below that for a good while before it is probed again.
        """
        if work <= 0 or latency <= 0:
            return self.limit
        per_unit = latency / work
        self.floor = per_unit if self.floor is None else min(per_unit, self.floor * FLOOR_DRIFT)
        self.recent = (
            per_unit
            if self.recent is None
            else self.recent + RECENT_WEIGHT * (per_unit - self.recent)
        )
        self._in_flight = (
            concurrency
            if self._in_flight is None
            else self._in_flight + RECENT_WEIGHT * (concurrency - self._in_flight)
        )
        if self._hold > 0:
            self._hold -= 1
        waited = latency - self.floor * work > MIN_WAIT
        if exact and waited and concurrency > 1 and per_unit > QUEUED * self.floor:
            if concurrency - 1 < self.limit:
                self._decrease(self.limit - (concurrency - 1))
            self._ceiling, self._hold = self.limit, HOLD_ROUNDS * self.limit
            return self.limit
        if self._cooldown > 0:
            self._cooldown -= 1
            return self.limit
        if waited and concurrency > 1 and self.recent > QUEUEING * self.floor:
            slots = math.ceil(self._in_flight * self.floor / self.recent)
            self._decrease(max(1, min(self.limit - slots, self.limit // 2)))
            self.recent = self.floor * (QUEUEING + CLEAR) / 2  # judge the new limit afresh
        elif (
            self.limit < (self._ceiling if self._hold > 0 else self.maximum)
            and concurrency >= self.limit
            and self.recent < (CLEAR * self.floor)
        ):
            self._credit += 1
            if self._credit >= self.limit:  # one step per round of answers
                self.limit += 1
                self._credit = 0
        return self.limit

    def on_server_slots(self, slots: int) -> int:
        """The server says it runs ``slots`` requests at once (llama.cpp's ``/slots``): the
        maximum is the smaller of that and the configured one, from now on (a request above
        it would only wait in the server's queue). Returns the new limit."""
        self.maximum = max(1, min(self.configured, slots))
        self.limit = min(self.limit, self.maximum)
        self._ceiling = min(self._ceiling, self.maximum)
        return self.limit

    def on_overload(self) -> int:
        """The server refused a request as overloaded (429/503): halve."""
        self._decrease(self.limit - max(1, self.limit // 2))
        return self.limit

    def _decrease(self, step: int) -> None:
        self.limit = max(1, self.limit - step)
        self._cooldown = self.limit
        self._credit = 0
