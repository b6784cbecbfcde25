"""One answer streamed piece by piece from one worker, for ``dllm chat``.

Batch work goes through the dispatcher; a chat answer is different: a person watches it
appear, so it goes to one worker (a healthy one with the most free slots) and is shown as
the server writes it. A failure before the first piece moves the question to another
worker; a failure in the middle ends the answer with the error.

The async core (:func:`open_stream`) runs on the library's loop and reads the worker pool
without changing it. :class:`ChatStream` is its blocking face: iterate it for the text
pieces, in short interruptible waits. ``Cluster.stream()`` makes one.

>>> stream = cluster.stream("What is a transformer?")
>>> stream.worker, stream.model           # who answers (known before the first piece)
>>> for piece in stream:
...     print(piece, end="", flush=True)
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._errors import NoHealthyWorkers, TaskFailed, WorkerError
from .._loop import submit
from .._reading.chunking import estimate_tokens
from .._types import ChatRequest
from .backends.options import no_worker_honours, unsupported_options

if TYPE_CHECKING:
    from .._config import ClusterSettings
    from .pool import WorkerPool
    from .worker import Worker

__all__ = ["ChatStream", "StreamStart", "astream", "chat_request", "open_stream", "pick_worker"]

WAIT_SLICE = 0.1
POLL_SECONDS = 0.2


@dataclass(frozen=True)
class StreamStart:
    """Which worker and model answer; the first item :func:`astream` yields."""

    worker: str
    model: str


def chat_request(prompt: str, *, system: str | None = None, **options: Any) -> ChatRequest:
    """A request with the token estimate the backends need (Ollama sizes ``num_ctx``)."""
    tokens = estimate_tokens(prompt) + estimate_tokens(system or "")
    return ChatRequest(prompt, system, dict(options), tokens)


def pick_worker(workers: list[Worker], excluded: set[str], needed: int | None) -> Worker | None:
    """A healthy, rested worker that fits the request, with the most free slots."""
    now = time.monotonic()
    ready = [
        w
        for w in workers
        if w.id not in excluded
        and w.dispatchable(now)
        and w.fits(needed)
        and w.backend is not None
        and w.model
    ]
    return max(ready, key=lambda w: w.free_slots, default=None)


def _states(workers: list[Worker]) -> str:
    return "; ".join(f"{w.id}: {w.health.value} ({w.status_reason() or 'busy'})" for w in workers)


async def _aclose(pieces: AsyncIterator[str]) -> None:
    close = getattr(pieces, "aclose", None)
    if close is not None:
        await close()


async def _chain(first: str, rest: AsyncIterator[str]) -> AsyncGenerator[str, None]:
    try:
        yield first
        async for piece in rest:
            yield piece
    finally:
        await _aclose(rest)


async def open_stream(
    pool: WorkerPool, settings: ClusterSettings, request: ChatRequest, worker: str | None = None
) -> tuple[Worker, AsyncGenerator[str, None]]:
    """Start the answer on the best worker; return it and the pieces (the first included).

    Runs on the library's loop. Tries up to ``max_retries`` other workers while no piece
    has arrived; waits up to ``no_worker_timeout`` for a healthy worker. ``worker`` pins
    the answer to that worker id: no other is tried.
    """
    needed = (request.prompt_tokens_estimate or 0) + (request.max_tokens or 0) or None
    excluded: set[str] = set()
    last: WorkerError | None = None
    deadline = time.monotonic() + settings.no_worker_timeout
    largest = max((w.context_length or 0 for w in pool.workers if w.context_length), default=0)
    if needed and largest and not any(w.fits(needed) for w in pool.workers):
        raise TaskFailed(
            f"the question needs about {needed} tokens, but the largest context window in "
            f"the cluster is {largest}; shorten it or ask for a shorter answer (max_tokens)"
        )
    # Workers whose server has no field for an option asked for are never chosen.
    unable = {w.id for w in pool.workers if unsupported_options(w.config.type, request.options)}
    if worker is not None:
        unable |= {w.id for w in pool.workers if w.id != worker}
    refusal = no_worker_honours([(w.id, w.config.type) for w in pool.workers], request.options)
    if refusal is not None:
        raise TaskFailed(refusal)
    while len(excluded) <= settings.max_retries:
        chosen = pick_worker(pool.workers, excluded | unable, needed)
        if chosen is None:
            if len(excluded | unable) == len(pool.workers) or time.monotonic() >= deadline:
                break
            await asyncio.sleep(POLL_SECONDS)
            continue
        excluded.add(chosen.id)
        assert chosen.backend is not None and chosen.model is not None  # pick_worker checks
        pieces = chosen.backend.stream(
            request, model=chosen.model, context_length=chosen.context_length
        )
        try:
            first = await pieces.__anext__()
        except StopAsyncIteration:
            await _aclose(pieces)
            continue
        except WorkerError as exc:
            await _aclose(pieces)
            last = exc
            if not exc.retryable:
                raise
            continue
        return chosen, _chain(first, pieces)
    if last is not None:
        raise TaskFailed(
            f"no worker could answer; the last error was: {last}. "
            "Run `dllm check` to see each worker's state",
            last_error=last,
        )
    raise NoHealthyWorkers(
        f"no healthy worker could take the question ({_states(pool.workers)}). "
        "Start or wake the servers, run `dllm check`, or raise no_worker_timeout"
    )


async def astream(
    pool: WorkerPool, settings: ClusterSettings, request: ChatRequest, worker: str | None = None
) -> AsyncIterator[StreamStart | str]:
    """Yield a :class:`StreamStart` (who answers), then the answer's text pieces.

    Must run on the library's loop (see ``_loop.bridge``).
    """
    chosen, pieces = await open_stream(pool, settings, request, worker)
    async with contextlib.aclosing(pieces):
        yield StreamStart(chosen.id, chosen.model or "")
        async for piece in pieces:
            yield piece


_DONE = object()


class ChatStream(Iterator[str]):
    """A streamed answer, consumed from a plain (non-loop) thread.

    ``worker`` and ``model`` are set by :meth:`start`; iterating yields the text pieces;
    ``text`` is what arrived so far. :meth:`close` (or Ctrl-C while iterating) cancels
    the request.
    """

    def __init__(self, items: AsyncIterator[StreamStart | str]) -> None:
        self.worker: str | None = None
        self.model: str | None = None
        self.text = ""
        self.started_at = time.monotonic()
        self.first_piece_s: float | None = None
        self._queue: queue.Queue[object] = queue.Queue()
        self._finished = False
        self._future = submit(self._produce(items))

    @classmethod
    def start(cls, items: AsyncIterator[StreamStart | str]) -> ChatStream:
        """Start consuming ``items`` (from :func:`astream`, on the library's loop); return
        once a worker has started answering."""
        stream = cls(items)
        try:
            item = stream._get()
        except BaseException:
            stream.close()
            raise
        if not isinstance(item, StreamStart):  # pragma: no cover - astream's contract
            raise AssertionError(f"expected the stream's start, got {item!r}")
        stream.worker, stream.model = item.worker, item.model
        return stream

    async def _produce(self, items: AsyncIterator[StreamStart | str]) -> None:
        try:
            async for item in items:
                self._queue.put(item)
        except BaseException as exc:
            self._queue.put(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            self._queue.put(_DONE)

    def _get(self) -> object:
        while True:
            try:
                item = self._queue.get(timeout=WAIT_SLICE)
            except queue.Empty:
                if self._future.done() and self._queue.empty():
                    return _DONE  # cancelled before it could say so
                continue
            if isinstance(item, BaseException):
                self._finished = True
                raise item
            return item

    def __next__(self) -> str:
        if self._finished:
            raise StopIteration
        try:
            item = self._get()
        except KeyboardInterrupt:
            self.close()
            raise
        if item is _DONE:
            self._finished = True
            raise StopIteration
        if not isinstance(item, str):  # pragma: no cover - astream's contract
            raise AssertionError(f"unexpected stream item {item!r}")
        if self.first_piece_s is None:
            self.first_piece_s = time.monotonic() - self.started_at
        self.text += item
        return item

    def close(self) -> None:
        """Stop the answer (cancels the request on the library's loop)."""
        self._finished = True
        self._future.cancel()

    def __enter__(self) -> ChatStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
