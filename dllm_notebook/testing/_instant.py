"""Answers made in this process, for measuring what the client itself costs.

``bench/bench_schedule.py cpu`` measures the dispatcher's CPU per task twice: over HTTP to
fake servers in another process, and with every answer made in-process at once, so no
socket or JSON is counted. :func:`instant_answers` is that second mode: while it is open,
each worker of the cluster answers through an :class:`InstantBackend` (health checks still
go to the real server).

>>> with Cluster(urls) as cluster, instant_answers(cluster):
...     cluster.map(prompts)          # dispatcher and scheduler only
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from .._cluster import Cluster
from .._config import WorkerConfig
from .._running.backends import Backend
from .._types import ChatRequest, Completion, ModelInfo, ServerInfo
from ._text import expected_echo

__all__ = ["InstantBackend", "instant_answers"]


class InstantBackend(Backend):
    """Answers at once, in this process, as a fake server would; probes via the real one.

    :meth:`standalone` makes one with no server behind it at all (its probe lists one
    model, ``m``), for driving the dispatcher on thousands of simulated workers
    (``bench/bench_scale.py``).
    """

    type = "instant"

    def __init__(self, inner: Backend) -> None:
        super().__init__(inner.config, inner.client)
        self.inner: Backend | None = inner

    @classmethod
    def standalone(cls, config: WorkerConfig, client: httpx.AsyncClient) -> InstantBackend:
        """An instant backend with no server: nothing to probe, nothing to connect to.
        ``client`` is never used; one can serve every such backend."""
        backend = cls.__new__(cls)
        Backend.__init__(backend, config, client)
        backend.inner = None
        return backend

    async def probe(self, *, detailed: bool = False) -> ServerInfo:
        if self.inner is None:
            return ServerInfo(models=(ModelInfo("m", loaded=True),))
        return await self.inner.probe(detailed=detailed)

    async def chat(
        self, request: ChatRequest, *, model: str, context_length: int | None
    ) -> Completion:
        await asyncio.sleep(0)
        return Completion(
            text=expected_echo(request.prompt) + " lorem ipsum",
            model=model,
            prompt_tokens=len(request.prompt) // 4,
            completion_tokens=8,
            finish_reason="stop",
        )


@contextmanager
def instant_answers(cluster: Cluster) -> Iterator[Cluster]:
    """Every checked worker of ``cluster`` answers in-process until the block ends.

    Call ``cluster.check()`` first: a worker is swapped once its backend exists.
    """
    # The testing package is the library's own seam: it may reach the pool, callers may not.
    workers = [w for w in cluster._pool.workers if w.backend is not None]
    if not workers:
        raise RuntimeError("no worker has been checked yet; call cluster.check() first")
    originals = {w.id: w.backend for w in workers}
    for worker in workers:
        assert worker.backend is not None
        worker.backend = InstantBackend(worker.backend)
    try:
        yield cluster
    finally:
        for worker in workers:
            worker.backend = originals[worker.id]
