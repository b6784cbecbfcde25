"""One worker's HTTP connections, in shards of at most :data:`SHARD` connections.

httpcore's connection pool (1.0.9) walks every connection, and for each idle one every
connection again, each time a request starts or ends (encode/httpcore#1035, open): with a
hundred requests in flight on one server (vLLM), that bookkeeping costs the client some
30 ms of CPU per request and caps it below what the server can do. Several small pools,
taken in turn, keep the same connections at a fraction of the cost. A worker with few
slots gets one pool, exactly as before.
"""

from __future__ import annotations

import itertools
import math

import httpx

__all__ = ["SHARD", "ShardedTransport", "transport"]

SHARD = 16
"""Connections per pool."""


class ShardedTransport(httpx.AsyncBaseTransport):
    """Requests go to the pools in turn; each pool keeps its connections alive."""

    def __init__(self, connections: int) -> None:
        count = max(1, math.ceil(connections / SHARD))
        size = math.ceil(connections / count)
        limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
        self.shards = [httpx.AsyncHTTPTransport(limits=limits) for _ in range(count)]
        self._turn = itertools.cycle(self.shards)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await next(self._turn).handle_async_request(request)

    async def aclose(self) -> None:
        for shard in self.shards:
            await shard.aclose()


def transport(connections: int) -> httpx.AsyncBaseTransport:
    """The transport for a worker that may hold ``connections`` connections at once."""
    if connections <= SHARD:
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        return httpx.AsyncHTTPTransport(limits=limits)
    return ShardedTransport(connections)
