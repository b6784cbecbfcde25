"""One worker's HTTP connections, in shards of at most :data:`SHARD` connections.

httpcore's connection pool (1.0.9) walks every connection, and for each idle one every
connection again, each time a request starts or ends (encode/httpcore#1035, open): with a
hundred requests in flight on one server (vLLM), that bookkeeping costs the client some
30 ms of CPU per request and caps it below what the server can do. Several small pools,
each request on the least busy one, keep the same connections at a fraction of the cost.
A worker with few slots gets one pool, exactly as before.

Every transport shares one TLS context (:func:`tls_context`): httpx builds a new one for
each transport it is not given one, reading and parsing the CA bundle (70 ms here, on the
event loop), which put 0.7 s before the first request of a 10-Mac lab and 2.4 s before a
35-Mac lab's. It is built the way httpx builds its own (certifi's bundle, ``SSL_CERT_FILE``
and ``SSL_CERT_DIR`` honoured), so certificates are checked exactly as before.
"""

from __future__ import annotations

import functools
import math
import ssl
from collections.abc import AsyncIterator

import httpx

__all__ = ["SHARD", "ShardedTransport", "tls_context", "transport"]

SHARD = 16
"""Connections per pool."""


class ShardedTransport(httpx.AsyncBaseTransport):
    """Each request goes to the pool with the fewest requests in flight, and a new pool
    (of at most :data:`SHARD` connections) is made when every pool has all of its
    connections busy, so a worker with a few requests out keeps using one pool and its
    few connections. Each pool keeps its connections alive.

    Pools taken in turn instead filled unevenly: 64 requests started at once put 33 on
    the first pool of 16 connections, and 19 of them waited in the client for a
    connection while the server had room (a vLLM server saw 45 in flight for a limit of
    64)."""

    def __init__(self, connections: int) -> None:
        self._count = max(1, math.ceil(connections / SHARD))
        self._size = math.ceil(connections / self._count)
        self._limits = httpx.Limits(
            max_connections=self._size, max_keepalive_connections=self._size
        )
        self.shards: list[httpx.AsyncHTTPTransport] = []
        self.busy: list[int] = []
        """Requests in flight on each pool (until the response body is closed)."""

    def _next(self) -> int:
        if self.shards:
            index = min(range(len(self.busy)), key=self.busy.__getitem__)
            if self.busy[index] < self._size or len(self.shards) >= self._count:
                return index
        self.shards.append(httpx.AsyncHTTPTransport(limits=self._limits, verify=tls_context()))
        self.busy.append(0)
        return len(self.shards) - 1

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        index = self._next()
        self.busy[index] += 1
        try:
            response = await self.shards[index].handle_async_request(request)
        except BaseException:
            self.busy[index] -= 1
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _Counted(response.stream, self, index)
        return response

    def _done(self, index: int) -> None:
        self.busy[index] -= 1

    async def aclose(self) -> None:
        for shard in self.shards:
            await shard.aclose()


class _Counted(httpx.AsyncByteStream):
    """A response body that counts its request out of its pool when closed."""

    def __init__(self, stream: httpx.AsyncByteStream, owner: ShardedTransport, index: int) -> None:
        self._stream = stream
        self._owner: ShardedTransport | None = owner
        self._index = index

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        if self._owner is not None:
            self._owner._done(self._index)
            self._owner = None
        await self._stream.aclose()


def transport(connections: int) -> httpx.AsyncBaseTransport:
    """The transport for a worker that may hold ``connections`` connections at once."""
    if connections <= SHARD:
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        return httpx.AsyncHTTPTransport(limits=limits, verify=tls_context())
    return ShardedTransport(connections)


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The TLS context every connection to a worker uses (built on first use)."""
    return httpx.create_ssl_context()
