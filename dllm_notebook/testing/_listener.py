"""The fake servers' listener: it accepts connections itself and keeps every one.

asyncio's own server (``loop.create_server``) accepts a connection in one loop turn and
wraps it in a transport a turn later. If the server closes in between, the wrap fails
and the bare socket is dropped unclosed: a client sees a connection that never
answers, and the test sees a ``ResourceWarning`` wherever the garbage collector next
runs. A killed fake server must reset *every* connection it accepted, so this listener
records each socket in the same turn that accepts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Callable

__all__ = ["Listener"]

_ACCEPTS_PER_TURN = 64
_PRUNE_AT = 64


class Listener:
    """Serve ``protocol_factory`` on the bound socket ``sock`` until :meth:`close`."""

    def __init__(
        self,
        sock: socket.socket,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        *,
        backlog: int = 1024,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._sock = sock
        self._factory = protocol_factory
        # Every accepted socket, with its transport once it has one.
        self._connections: dict[socket.socket, asyncio.Transport | None] = {}
        self._prune_at = _PRUNE_AT
        self._wrapping: set[asyncio.Task[None]] = set()
        sock.setblocking(False)
        sock.listen(backlog)
        self._loop.add_reader(sock.fileno(), self._accept)

    def _accept(self) -> None:
        for _ in range(_ACCEPTS_PER_TURN):
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError:  # out of descriptors and the like: try again next turn
                return
            conn.setblocking(False)
            self._forget_closed()
            self._connections[conn] = None
            task = self._loop.create_task(self._wrap(conn))
            self._wrapping.add(task)
            task.add_done_callback(self._wrapping.discard)

    async def _wrap(self, conn: socket.socket) -> None:
        # close() cancels this task and waits for it before it closes the connections:
        # cancelled before it ran, the socket is closed bare; cancelled while the transport
        # is made, asyncio closes that transport.
        transport, _ = await self._loop.connect_accepted_socket(self._factory, conn)
        self._connections[conn] = transport

    def _forget_closed(self) -> None:
        """Drop the connections that have closed, once the record has doubled since the
        last time (so each accept costs O(1) on average)."""
        if len(self._connections) < self._prune_at:
            return
        for conn in [conn for conn in self._connections if conn.fileno() == -1]:
            del self._connections[conn]
        self._prune_at = max(_PRUNE_AT, 2 * len(self._connections))

    def stop_accepting(self) -> None:
        """Close the listening socket; connections already accepted carry on."""
        if self._sock.fileno() != -1:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()

    async def close(self, *, reset: bool) -> None:
        """Stop listening and close every connection accepted so far.

        With ``reset`` the clients see "connection reset" (SO_LINGER 0), as when a
        machine dies; without it, a plain close."""
        self.stop_accepting()
        for task in list(self._wrapping):
            task.cancel()
        if self._wrapping:
            await asyncio.gather(*self._wrapping, return_exceptions=True)
        connections, self._connections = self._connections, {}
        for conn, transport in connections.items():
            if conn.fileno() == -1:
                continue
            if reset:
                with contextlib.suppress(OSError):
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            if transport is not None:
                transport.abort()
            else:
                conn.close()
