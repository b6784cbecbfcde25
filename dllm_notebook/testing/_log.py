"""The request log every fake server keeps, so tests can assert what the client sent.

Records are created and filled in on the server's event-loop thread; a test reads them
from its own thread. Appends and snapshots are guarded by a lock.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from ._text import prompt_digest

__all__ = ["RequestLog", "RequestRecord", "peak_in_flight", "peak_queued"]

OK_OUTCOMES = frozenset({"ok", "empty"})


@dataclass
class RequestRecord:
    """One HTTP request a fake server received.

    ``outcome`` is one of: ``pending``, ``ok``, ``empty`` (200, empty content),
    ``garbage`` (200, malformed JSON), ``server_error``, ``overloaded``,
    ``model_not_found``, ``model_not_loaded``, ``context_exceeded``, ``bad_request``,
    ``hung``, ``killed``, ``client_gone`` (the client disconnected first), ``info`` (a
    non-generation route). ``truncated`` is True when Ollama silently cut the prompt.
    ``digest`` is the SHA-256 (hex) of the last user message. ``schema`` is the JSON
    schema the server was asked to follow and honoured (``response_format`` json_schema,
    Ollama's ``format``). ``wall_time`` is
    ``time.time()`` at arrival; the other times are ``time.monotonic()`` values, and
    ``started_at``/``released_at`` bound the time the request held a generation slot.
    """

    seq: int
    server: str
    dialect: str
    method: str
    path: str
    received_at: float
    wall_time: float = 0.0
    model: str | None = None
    digest: str | None = None
    stream: bool | None = None
    max_tokens: int | None = None
    num_ctx: int | None = None
    options: dict[str, Any] = field(default_factory=dict)
    schema: dict[str, Any] | None = None
    prompt_tokens: int | None = None
    prompt_tokens_used: int | None = None
    cached_tokens: int | None = None
    """Prompt tokens the slot had cached (``Behaviour.prefix_cache``; else ``None``)."""
    truncated: bool = False
    completion_tokens: int | None = None
    status: int | None = None
    outcome: str = "pending"
    queued_at: float | None = None
    """When it asked for a slot (after ``base_latency``); it waited in the queue from then
    until ``started_at``."""
    started_at: float | None = None
    released_at: float | None = None
    finished_at: float | None = None

    @property
    def is_generation(self) -> bool:
        return self.digest is not None

    @property
    def generated(self) -> bool:
        """True when the server produced an answer (200 with a real or empty body)."""
        return self.outcome in OK_OUTCOMES and self.status == 200

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RequestLog:
    """Every request a server (or a whole lab) received, in arrival order.

    >>> server.log.generation_counts()[prompt_digest(prompt)]   # times generated
    >>> server.log.max_in_flight()                              # <= behaviour.slots
    """

    def __init__(self, parent: RequestLog | None = None) -> None:
        self._lock = threading.Lock()
        self._records: list[RequestRecord] = []
        self._parent = parent
        self._seq = 0

    def new(self, *, server: str, dialect: str, method: str, path: str) -> RequestRecord:
        with self._lock:
            self._seq += 1
            record = RequestRecord(
                seq=self._seq,
                server=server,
                dialect=dialect,
                method=method,
                path=path,
                received_at=time.monotonic(),
                wall_time=time.time(),
            )
            self._records.append(record)
        if self._parent is not None:
            self._parent._adopt(record)
        return record

    def _adopt(self, record: RequestRecord) -> None:
        with self._lock:
            self._records.append(record)

    def records(self) -> list[RequestRecord]:
        """A snapshot of all records."""
        with self._lock:
            return list(self._records)

    def __iter__(self) -> Iterator[RequestRecord]:
        return iter(self.records())

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)

    def clear(self) -> None:
        with self._lock:
            self._records.clear()

    def generations(self) -> list[RequestRecord]:
        """Records of generation requests (chat calls), whatever their outcome."""
        return [r for r in self.records() if r.is_generation]

    def generation_counts(self) -> Counter[str]:
        """How many times each prompt digest was answered (200 with an answer)."""
        return Counter(r.digest for r in self.records() if r.digest and r.generated)

    def times_generated(self, prompt: str) -> int:
        """How many times the user message ``prompt`` was answered."""
        return self.generation_counts()[prompt_digest(prompt)]

    def truncated(self) -> list[RequestRecord]:
        """Requests whose prompt the server silently truncated (Ollama)."""
        return [r for r in self.records() if r.truncated]

    def max_in_flight(self) -> int:
        """The most requests that held a generation slot at the same moment."""
        return peak_in_flight(self.records())


def peak_in_flight(records: Iterable[RequestRecord], *, queued: bool = False) -> int:
    """The most requests that held a generation slot at the same moment; ``queued``: the
    most the server held at once, waiting in its queue or running (from arrival)."""
    events: list[tuple[float, int]] = []
    for r in records:
        start = r.received_at if queued and r.started_at is not None else r.started_at
        if start is None:  # never reached a slot (refused): not held
            continue
        events.append((start, 1))
        if r.released_at is not None:
            events.append((r.released_at, -1))
    return _peak(events)


def _peak(events: list[tuple[float, int]]) -> int:
    """The highest running sum of ``(time, +1 or -1)`` events in time order."""
    # At equal times a release happened before the acquire it allowed.
    events.sort(key=lambda event: (event[0], event[1]))
    peak = current = 0
    for _, delta in events:
        current += delta
        peak = max(peak, current)
    return peak


def peak_queued(records: Iterable[RequestRecord]) -> int:
    """The most requests that waited in the server's queue at the same moment: asking for
    a slot, not yet given one (a request that left the queue unserved, abandoned by its
    client, counts until it left)."""
    events: list[tuple[float, int]] = []
    for r in records:
        if r.queued_at is None:
            continue
        left = r.started_at if r.started_at is not None else r.finished_at
        if left is None or left <= r.queued_at:
            continue
        events.append((r.queued_at, 1))
        events.append((left, -1))
    return _peak(events)
