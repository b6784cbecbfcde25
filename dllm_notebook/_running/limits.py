"""How many requests a worker takes at once: the configured maximum, adapted to what it does.

A server that queues requests internally (more were sent than it runs in parallel) answers
each one later: with ``c`` requests in flight on ``s`` parallel slots, each takes ``c / s``
times its best latency (Little's law). So when latency per unit of work climbs well above
the best seen, the limit comes down to ``c x best / recent``, the slots the server really
has. A server that is out of capacity says so with 429 or 503: the limit halves. Then it is
probed back up, one request per round of answers, while latency stays near its best. This
is additive increase with a latency-gradient decrease, as TCP Vegas and Netflix's
concurrency-limits do.

A limit that is *learned* (:meth:`AdaptiveLimit.learned`: an ``openai`` worker whose config
gives no ``max_concurrent_requests``, which may be a 4-slot Mac or a vLLM server with
hundreds) starts at :data:`LEARN_START` and grows in slow start: one more request per
answer while latency holds, so it doubles every round of answers, up to
:data:`LEARN_MAXIMUM`. The first sign of a limit (a queue in the latencies, or a
429/503) ends slow start; from then on it is the additive increase above, one step per
eighth of a round (about 12 % a round), so that hundreds of slots are found again quickly.
A queue is latency rising faster than throughput (requests in flight over latency): a
latency that rises more slowly is the price of more throughput and does not stop the
growth. Continuous batching (vLLM, SGLang) keeps each request's latency flat while
throughput grows; past the batch, latency grows as fast as the requests in flight and
throughput stays flat, so the limit comes back to the batch. A burst of refusals from one
overload counts once: a refused request sent while more were in flight than the limit
allows now was sent before the last back-off.

Several clients (notebooks in other processes or on other laptops) may share a server
without knowing of each other. Where the server reports its own time for a request
(llama.cpp, LM Studio, Ollama), one answer that took well over it waited in its queue: the
limit comes down to this client's part of the slots by Little's law (its requests in
flight times the share of their time spent being served; at most a halving per round),
and an answer that did not wait is room for one more, probed after a short hold. Every
client backs off in proportion to what it sends and grows by the same step, on the same
signal, so their limits converge to equal shares (AIMD, as TCP flows share a link). The
server's clock is the reference, not the best latency this client has seen: a client
that came to a server others kept busy never saw it idle (:data:`SERVED_FLOOR`).

Latency is compared per unit of work: the time the server says it spent on the request
(which leaves out its queue), or else tokens, a prompt token counting ``PREFILL_WEIGHT`` of a
generated one. The floor (the best seen) drifts up slowly so a worker that became slower for good
(a bigger model, a hot laptop) is not throttled forever.
"""

from __future__ import annotations

import math

__all__ = ["BATCHING_START", "LEARN_MAXIMUM", "LEARN_START", "AdaptiveLimit"]

LEARN_START = 4
"""Requests in flight a learned limit starts with: no more than a small Mac's slots."""
BATCHING_START = 32
"""Where a learned limit starts on an engine that batches (vLLM, SGLang): they run 256
sequences or more by default and queue the rest without refusing, so starting at a Mac's
few slots would only cost doubling rounds."""
LEARN_MAXIMUM = 1024
"""The most a learned limit grows to (the most ``max_concurrent_requests`` accepts)."""

PREFILL_WEIGHT = 1 / 16
QUEUEING = 1.2
"""Recent latency this many times the floor, with requests in parallel: the server queues."""
QUEUED = 1.3
"""One answer this many times the best, by the server's own clock: it waited in a queue."""
MIN_WAIT = 0.25
"""Seconds over the best-case time an answer must take before it counts as queued: with
short answers from a fast server, fixed costs (HTTP, JSON) would otherwise look like a
queue."""
LEARNED_WAIT = 0.5
"""A learned limit: a wait over this share of the answer's best time counts as queued even
when shorter than :data:`MIN_WAIT` (a 2-slot server answering in 0.25 s was sent 10 at
once before its waits passed :data:`MIN_WAIT`)."""
SERVED_FLOOR = 1.25
"""By the server's own clock, an answer that did not queue takes at most this many times the
time the server reports (its fixed costs: HTTP, tokenizing). A floor learned above it is a
queue the client never saw empty (it came to a server other clients kept busy), not a
floor: the server's own time is the truth, so the limit still sees the queue."""
HOLD_ROUNDS = 2
"""After a queue was seen, rounds of answers before the limit is probed above it again:
short, so that a client whose neighbours left (or that backed off further than its share)
takes the room back within a few rounds."""
CLEAR = 1.1
"""Recent latency within this factor of the floor: room to try one more request."""
LARGE_LIMIT = 32
"""A learned limit above this is judged as a batching server's (vLLM, SGLang): a higher
bar for a queue (:data:`LEARNED_QUEUEING`), and a cut only from answers sent under it."""
LEARNED_QUEUEING = 1.5
"""A learned limit above :data:`LARGE_LIMIT`: recent latency this many times the floor may
be a queue.
Higher than :data:`QUEUEING`: past a batch throughput stays flat, so growing a little too
far costs nothing, while the client's own costs at a hundred in flight would look like a
queue. A Mac's few slots are judged as before."""
GAINING = 1.1
"""A learned limit: throughput this many times its best so far is still growing."""
LEARN_STEP = 4
"""A learned limit below 32 grows by one per this many good answers."""
FLOOR_DRIFT = 1.01
RECENT_WEIGHT = 0.3


class AdaptiveLimit:
    """One worker's concurrency limit between 1 and ``maximum``.

    >>> AdaptiveLimit(5).limit          # a configured maximum: starts there
    5
    >>> AdaptiveLimit.learned().limit   # learned: starts small and grows
    4
    """

    def __init__(self, maximum: int, *, start: int | None = None) -> None:
        self.configured = max(1, maximum)
        self.maximum = self.configured
        self.limit = self.maximum if start is None else max(1, min(start, self.maximum))
        self.learning = start is not None
        """Started below its maximum, to find the server's capacity."""
        self.slow_start = self.learning
        self.floor: float | None = None
        self.recent: float | None = None
        self._cooldown = 0
        self._credit = 0
        self._in_flight: float | None = None
        self._ceiling = self.maximum
        self._hold = 0
        self._best_rate: float | None = None
        """A learned limit's best throughput (requests in flight / latency per unit)."""

    @classmethod
    def learned(cls) -> AdaptiveLimit:
        """A limit that starts at :data:`LEARN_START` and learns the server's capacity."""
        return cls(LEARN_MAXIMUM, start=LEARN_START)

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
        # A learned limit may see hundreds of answers per round: its floor drifts per round.
        drift = FLOOR_DRIFT ** (1 / self.limit) if self.learning else FLOOR_DRIFT
        self.floor = per_unit if self.floor is None else min(per_unit, self.floor * drift)
        if exact:
            # Another client's requests may have queued every answer seen so far.
            self.floor = min(self.floor, SERVED_FLOOR)
        # A learned limit averages over a few percent of a round, not over the last three
        # answers: a hiccup that slows a hundred answers at once is not a queue.
        weight = min(RECENT_WEIGHT, 4 / self.limit) if self.learning else RECENT_WEIGHT
        self.recent = (
            per_unit if self.recent is None else self.recent + weight * (per_unit - self.recent)
        )
        self._in_flight = (
            concurrency
            if self._in_flight is None
            else self._in_flight + weight * (concurrency - self._in_flight)
        )
        if self._hold > 0:
            self._hold -= 1
        best = self.floor * work
        # A learned limit may be far above a small server's slots: a wait of half the
        # answer's best time is already a queue there, however short the answers.
        waited = latency - best > (
            min(MIN_WAIT, LEARNED_WAIT * best) if self.learning else MIN_WAIT
        )
        if exact and waited and concurrency > 1 and per_unit > QUEUED * self.floor:
            if concurrency <= self.limit:  # sent since the last decrease: news about it
                self._decrease(self.limit - self._share(concurrency))
            self._ceiling, self._hold = self.limit, HOLD_ROUNDS * self.limit
            return self.limit
        if self._cooldown > 0:
            self._cooldown -= 1
            return self.limit
        large = self.learning and self.limit > LARGE_LIMIT
        queueing = LEARNED_QUEUEING if large else QUEUEING
        queued = waited and concurrency > 1 and self.recent > queueing * self.floor
        holds = self.recent < CLEAR * self.floor
        if exact:
            # The server's clock says this one did not queue: room for more (no band where
            # neither happens, or whoever backed off first would stay down: AIMD is fair
            # because every client both backs off and grows on the same signal).
            queued, holds = False, True
        if self.learning:
            # Latency rising faster than throughput is a queue; rising more slowly, it is
            # the price of more throughput (and of the client's own costs), worth paying.
            rate = self._in_flight / self.recent
            if queued and rate > GAINING * (self._best_rate or 0.0):
                queued = False
            if not queued:
                holds = True
                self._best_rate = max(rate, (self._best_rate or 0.0) / drift)
        if queued:
            # A large learned limit hears of a queue only from answers sent since its last
            # decrease: slow start's last doubling put up to twice the server's batch out,
            # and their answers keep coming for a round after the cut (vLLM fell from 268
            # to 81, a batch of 128, and took ten seconds to climb back). A few slots' worth
            # of such answers is a short round, and each cut brings it to the slots sooner.
            if concurrency <= self.limit or not large:
                self._decrease(self.limit - self._share(concurrency))
            self.recent = self.floor * (QUEUEING + CLEAR) / 2  # judge the new limit afresh
        elif self.slow_start:
            # One more per answer, while the server keeps up: twice the limit per round
            # of answers. Only while the limit is in use (answers sent with a quarter of it
            # in flight or more: the limit doubled since the earliest of them were sent).
            if self.limit < self.maximum and 4 * concurrency >= self.limit and holds:
                self.limit += 1
        elif (
            self.limit < (self._ceiling if self._hold > 0 else self.maximum)
            and (4 * concurrency >= 3 * self.limit if self.learning else concurrency >= self.limit)
            and holds
        ):
            self._credit += 1
            if self._credit >= self._step_answers():  # one step per round of answers
                self.limit += 1
                self._credit = 0
        return self.limit

    def _share(self, concurrency: int) -> int:
        """The requests this client keeps busy on the server, by Little's law: its requests
        in flight times the share of their time spent being served (the best time over the
        recent one); at least half the limit (one step is a multiplicative decrease, and
        one answer's wait depends on where it stood in the queue) and below
        ``concurrency``, which queued.

        Alone on a server configured above its slots, that is the server's slots. Shared
        with other clients that do the same, each one keeps its part of the slots: the
        decrease is in proportion to what each one sends, and the additive increase is the
        same for all, so their limits converge to equal shares (AIMD), without any of them
        knowing of the others."""
        assert self.floor is not None and self.recent is not None
        served = (self._in_flight or concurrency) * self.floor / self.recent
        return max(1, self.limit - self.limit // 2, min(concurrency - 1, math.ceil(served)))

    def on_first_token(self, concurrency: int) -> int:
        """A streamed request sent with ``concurrency`` requests in flight on this worker
        (itself included) had no first token when its prompt should have been read: it
        waits in the server's queue, so ``concurrency`` was too many. The same step as an
        answer that took well over the server's own time (``on_success(exact=True)``),
        taken before the answer ends. Returns the new limit."""
        if concurrency > 1:
            if concurrency <= self.limit:  # sent since the last decrease: news about it
                measured = self.floor is not None and self.recent is not None
                share = self._share(concurrency) if measured else concurrency - 1
                self._decrease(self.limit - share)
            self._ceiling, self._hold = self.limit, HOLD_ROUNDS * self.limit
        return self.limit

    def _step_answers(self) -> int:
        """Answers per step up: a round's, or for a learned limit an eighth of a round's (at
        least :data:`LEARN_STEP`), so that a limit of hundreds grows back in a few rounds."""
        return max(LEARN_STEP, self.limit // 8) if self.learning else self.limit

    def on_batching_server(self) -> int:
        """The server says it batches many requests (vLLM, SGLang): a learned limit still in
        slow start below :data:`BATCHING_START` jumps there. Returns the new limit."""
        if self.learning and self.slow_start and self.limit < BATCHING_START:
            self.limit = min(BATCHING_START, self.maximum)
        return self.limit

    def on_server_slots(self, slots: int) -> int:
        """The server says it runs ``slots`` requests at once (llama.cpp's ``/slots``): the
        maximum is the smaller of that and the configured one, from now on (a request above
        it would only wait in the server's queue). Returns the new limit."""
        self.maximum = max(1, min(self.configured, slots))
        self.limit = min(self.limit, self.maximum)
        self._ceiling = min(self._ceiling, self.maximum)
        return self.limit

    def on_others_busy(self, others: int) -> int:
        """The server says other clients' requests hold ``others`` of its slots now
        (llama.cpp's ``/slots``, read before any request is sent): take the free slots, or
        half the maximum where fewer are free, rather than queue a full share behind them.
        The answers then move it, as for every limit (AIMD converges to a fair share).
        Returns the new limit."""
        self.limit = min(self.limit, max(1, self.maximum - others, self.maximum // 2))
        return self.limit

    def on_overload(self, concurrency: int | None = None) -> int:
        """The server refused a request as overloaded (429/503): halve. ``concurrency``:
        requests in flight on this worker when the refused one was sent (itself included);
        a learned limit halves once per overload, not once per request it refused."""
        if self.answered(concurrency):
            return self.limit
        self._decrease(self.limit - max(1, self.limit // 2))
        return self.limit

    def answered(self, concurrency: int | None) -> bool:
        """Whether a learned limit already backed off below ``concurrency``: a refusal of a
        request sent with that many in flight was answered by that back-off."""
        return self.learning and concurrency is not None and concurrency > self.limit

    def _decrease(self, step: int) -> None:
        self.slow_start = False
        self.limit = max(1, self.limit - step)
        # Until the answers sent above the new limit are in (a learned limit may have had
        # twice as many out), they say nothing about it.
        self._cooldown = max(self.limit, math.ceil(self._in_flight or 0) if self.learning else 0)
        self._credit = 0
