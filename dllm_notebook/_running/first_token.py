"""When a streamed request's first token is late: it waits in the server's queue.

A request that gets a slot at once reads its prompt and writes its first token, so its time
to the first token is about its reading time. One sent while every slot is busy waits in
the server's queue first, for as long as a running answer still takes. Without streaming
that wait shows only when its answer ends (two task durations after it was sent, at
worst); with it, a first token that is overdue shows it as soon as the prompt should have
been read.

Each worker's time to the first token per prompt token is learned from its streamed
answers, by the client's clock (the one the due time is measured on): a decaying average,
which takes in what the client's own load adds to every first token, over the answers
that came in time (those that waited would teach it the queue). A request is due
:data:`SLACK` times that for its prompt plus :data:`MARGIN` seconds after it was sent; the
dispatcher tells the adaptive limit when one passes that without a token
(:meth:`~.limits.AdaptiveLimit.on_first_token`).

Plain arithmetic on numbers passed in: no clock, no I/O.
"""

from __future__ import annotations

__all__ = ["MARGIN", "SLACK", "FirstTokenWatch"]

SLACK = 1.3
"""A first token later than this many times its prompt's usual time waited. A queue wait
is a running answer's remaining time, so it is rarely short; reading times vary less (a
server slows its prefill a little while other slots decode). A false alarm costs the
worker a slot for a good while, so the bar is high."""
MARGIN = 0.25
"""Seconds added to every due time: fixed costs (HTTP, JSON, the server's own set-up) that
a short prompt's reading time does not cover."""
WEIGHT = 0.2
"""Weight of the newest answer in the average."""
MIN_TOKENS = 32
"""Prompts shorter than this teach nothing: their time is mostly fixed costs."""


class FirstTokenWatch:
    """One worker's time to the first token per prompt token, and when one is overdue.

    >>> watch = FirstTokenWatch()
    >>> watch.due(1000) is None          # nothing learned yet: no judgement
    True
    >>> watch.learn(seconds=2.0, read_tokens=1000)
    >>> watch.due(1000)                  # 2 x 2 s + 0.25 s
    4.25
    """

    def __init__(self) -> None:
        self.per_token: float | None = None
        """Seconds to the first token per prompt token read, on average."""

    def learn(self, seconds: float, read_tokens: float) -> None:
        """A streamed answer's first token came ``seconds`` after it was sent, and the server
        read ``read_tokens`` prompt tokens for it (those not in its prefix cache)."""
        if read_tokens < MIN_TOKENS or seconds <= 0:
            return
        if self.per_token is None:
            self.per_token = seconds / read_tokens
            return
        due = self.due(read_tokens)
        if due is not None and seconds > due:
            return  # it waited in the queue: that says nothing about reading
        self.per_token += WEIGHT * (seconds / read_tokens - self.per_token)

    def due(self, prompt_tokens: float) -> float | None:
        """Seconds after sending by which a prompt of ``prompt_tokens`` has its first token
        unless it waits in a queue; ``None`` until a streamed answer was measured."""
        if self.per_token is None:
            return None
        return SLACK * self.per_token * max(prompt_tokens, 0.0) + MARGIN
