"""A fake server's slots: admission and its queue, continuous batching, the prefix cache.

:class:`SlotGate` admits requests to the slots (FIFO, with an optional bounded queue);
:class:`BatchClock` shares the server's speed among the running requests when it batches
them (``Behaviour.batch_size``); :class:`SlotCache` remembers which prompt each slot read;
:class:`ColdStart` is the model's first load, which every early request waits for.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import deque
from collections.abc import Callable

from ._text import common_prefix_length

__all__ = ["BatchClock", "ColdStart", "QueueFull", "SlotCache", "SlotGate"]


class QueueFull(Exception):
    """The server's queue holds ``max_queue`` requests already: refuse as overloaded."""


class SlotGate:
    """A FIFO semaphore whose capacity is read live (``Behaviour.slots`` may change)."""

    def __init__(
        self, capacity: Callable[[], int], on_change: Callable[[], None] = lambda: None
    ) -> None:
        self._capacity = capacity
        self._on_change = on_change
        self.active = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def queued(self) -> int:
        return len(self._waiters)

    async def acquire(self, max_queue: int | None) -> None:
        if not self._waiters and self.active < self._capacity():
            self.active += 1
            self._on_change()
            return
        if max_queue is not None and len(self._waiters) >= max_queue:
            raise QueueFull
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # granted, then cancelled before it ran: give it back
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        self.active -= 1
        self.wake()

    def wake(self) -> None:
        while self._waiters and self.active < self._capacity():
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self.active += 1
        self._on_change()


class BatchClock:
    """Continuous batching: the requests holding slots share the server's speed.

    Up to ``size`` of them run at full speed; with ``n > size`` each runs ``size / n`` as
    fast (processor sharing), so throughput is flat past ``size``. A virtual clock counts
    the full-speed seconds each running request has received so far; a request that
    needs ``w`` more finishes when the clock has advanced by ``w``. One timer, set for the
    next finish, serves every request (no polling).
    """

    def __init__(self, size: Callable[[], int | None], running: Callable[[], int]) -> None:
        self._size = size
        self._running = running
        self._served = 0.0
        self._at: float | None = None
        self._rate = 1.0
        self._due: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._timer: asyncio.TimerHandle | None = None

    def changed(self) -> None:
        """The number of running requests changed: the rate changes from now on."""
        self._advance()
        self._rate = self._current_rate()
        self._schedule()

    async def serve(self, seconds: float) -> None:
        """Wait until this request has had ``seconds`` of full-speed work."""
        if seconds <= 0:
            return
        if self._size() is None:
            await asyncio.sleep(seconds)
            return
        self._advance()
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._due, (self._served + seconds, next(self._order), done))
        self._schedule()
        try:
            await done
        finally:
            done.cancel()  # a cancelled request's entry is dropped when it comes due

    def _current_rate(self) -> float:
        size, running = self._size(), self._running()
        return 1.0 if size is None or running <= size else size / running

    def _advance(self) -> None:
        now = asyncio.get_running_loop().time()
        if self._at is not None:
            self._served += (now - self._at) * self._rate
        self._at = now

    def _schedule(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._due and (self._due[0][2].done() or self._due[0][0] <= self._served + 1e-9):
            _, _, done = heapq.heappop(self._due)
            if not done.done():
                done.set_result(None)
        if self._due:
            delay = (self._due[0][0] - self._served) / self._rate
            self._timer = asyncio.get_running_loop().call_later(delay, self._tick)

    def _tick(self) -> None:
        self._timer = None
        self._advance()
        self._schedule()


SLOT_SIMILARITY = 0.5
"""llama.cpp's ``--slot-prompt-similarity`` default."""


class SlotCache:
    """Which prompt each slot read last, and which slots are busy (``prefix_cache``).

    Like llama.cpp's server: a request takes the free slot whose prompt shares the
    longest beginning with its own, if that is at least half of its prompt
    (``--slot-prompt-similarity``, 0.5); otherwise the least recently used free slot.
    """

    def __init__(self) -> None:
        self._texts: list[str] = []
        self._used: list[int] = []
        self._busy: set[int] = set()
        self._clock = 0

    def take(self, text: str, slots: int) -> tuple[int, int]:
        """A free slot for ``text`` and the characters it has cached already."""
        while len(self._texts) < slots:
            self._texts.append("")
            self._used.append(0)
        free = [i for i in range(slots) if i not in self._busy] or [len(self._texts)]
        if free[0] == len(self._texts):  # more requests than slots (slots shrank): a new one
            self._texts.append("")
            self._used.append(0)
        shared = {i: common_prefix_length(self._texts[i], text) for i in free}
        slot = max(free, key=lambda i: (shared[i], -self._used[i]))
        if shared[slot] < SLOT_SIMILARITY * len(text):  # too little in common: the LRU slot
            slot = min(free, key=lambda i: self._used[i])
        self._busy.add(slot)
        self._clock += 1
        self._used[slot] = self._clock
        return slot, shared[slot]

    def read(self, slot: int, text: str) -> None:
        """The slot has read ``text``: later requests may reuse it."""
        self._texts[slot] = text

    def release(self, slot: int) -> None:
        self._busy.discard(slot)


class ColdStart:
    """The model's load when a server starts (``Behaviour.cold_start_seconds``): the first
    generation starts it and every request waits until it is done. A client that gives up
    does not cancel the load."""

    def __init__(self) -> None:
        self._load: asyncio.Future[None] | None = None

    async def wait(self, seconds: float) -> None:
        if self._load is None:
            if seconds <= 0:
                return
            self._load = asyncio.ensure_future(asyncio.sleep(seconds))
        await asyncio.shield(self._load)
