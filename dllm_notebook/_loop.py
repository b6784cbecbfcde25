"""One event loop on a daemon thread, so the sync API works in scripts and in Jupyter alike.

Jupyter already runs an event loop on the main thread, so ``asyncio.run()`` fails in a cell.
Instead every coroutine of the library runs on this loop; a sync call submits it and waits
in short slices, so "Interrupt kernel" (KeyboardInterrupt) stops it promptly and cancels its
in-flight requests. Async twins (``await cluster.aask(...)``) bridge from any other loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from ._errors import SyncCallInLoop

__all__ = ["bridge", "get_loop", "run_sync", "wait_within"]

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None
WAIT_SLICE = 0.1
CANCEL_GRACE = 2.0


def get_loop() -> asyncio.AbstractEventLoop:
    """The library's loop, started on first use."""
    global _loop, _thread
    with _lock:
        if _loop is None or _thread is None or not _thread.is_alive():
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def serve() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            _thread = threading.Thread(target=serve, name="dllm-notebook-loop", daemon=True)
            _thread.start()
            ready.wait()
            _loop = loop
        return _loop


def in_loop_thread() -> bool:
    return _thread is not None and threading.current_thread() is _thread


def submit(coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
    """Schedule ``coro`` on the library's loop without waiting."""
    return asyncio.run_coroutine_threadsafe(coro, get_loop())


def run_sync(
    coro: Coroutine[Any, Any, T],
    *,
    what: str = "this call",
    on_tick: Callable[[], None] | None = None,
) -> T:
    """Run ``coro`` on the library's loop and wait for it, interruptibly.

    ``on_tick`` runs on the calling thread between waits (e.g. to redraw a progress bar).
    """
    if in_loop_thread():
        coro.close()
        raise SyncCallInLoop(
            f"{what} blocks, and was called from inside dllm_notebook's own event loop "
            "(probably from an event listener). Use the async twin (e.g. `await cluster.aask()`) "
            "or call it from another thread."
        )
    done = threading.Event()

    async def guarded() -> T:
        try:
            return await coro
        finally:
            done.set()

    future = submit(guarded())
    try:
        while True:
            try:
                return future.result(timeout=WAIT_SLICE)
            except concurrent.futures.TimeoutError:
                if on_tick is not None:
                    on_tick()
    except KeyboardInterrupt:
        future.cancel()
        done.wait(CANCEL_GRACE)  # let in-flight requests be cancelled and results be kept
        raise


async def bridge(coro: Coroutine[Any, Any, T]) -> T:
    """Await ``coro`` on the library's loop from whatever loop the caller runs (a cell)."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is get_loop():
        return await coro
    return await asyncio.wrap_future(submit(coro))


async def wait_within(awaitable: Awaitable[T], timeout: float | None) -> T:
    """Like ``asyncio.wait_for``, but a cancellation of the caller is never lost.

    Python 3.10 and 3.11's ``wait_for`` can swallow a cancellation that arrives just as the
    inner call finishes (gh-86296), which would leave a cancelled batch or health check
    running. Raises ``asyncio.TimeoutError`` after ``timeout`` seconds.
    """
    inner = asyncio.ensure_future(awaitable)
    try:
        done, _ = await asyncio.wait({inner}, timeout=timeout)
    finally:
        if not inner.done():
            inner.cancel()
    if not done:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await inner
        raise asyncio.TimeoutError
    return inner.result()
