"""``Cluster.local()``: real llama.cpp servers on this machine, registered as workers.

The servers are ordinary ``llama_cpp``-type workers: the panel, ``check()`` and
``metrics()`` show them like any other. Each is llama.cpp's own server with ``n_parallel``
slots that it decodes together, so each local worker takes ``n_parallel`` requests at once.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .._config import WorkerConfig
from .server import DEFAULT_N_CTX, DEFAULT_N_PARALLEL, LocalServer, default_threads

__all__ = ["local_worker_configs", "start_local_servers"]

log = logging.getLogger("dllm_notebook")


def start_local_servers(
    count: int = 1,
    *,
    model: str | os.PathLike[str] | None = None,
    n_ctx: int = DEFAULT_N_CTX,
    n_parallel: int = DEFAULT_N_PARALLEL,
    n_threads: int | None = None,
) -> list[LocalServer]:
    """Start ``count`` servers in parallel; if one fails, stop the others and raise.

    Without ``n_threads``, the servers share the CPUs other work leaves idle (one thread
    each at least).
    """
    if count < 1:
        raise ValueError(f"workers={count}: start at least one local worker")
    if n_threads is None and count > 1:
        n_threads = default_threads(servers=count)
    servers = [
        LocalServer(
            Path(model) if model is not None else None,
            n_ctx=n_ctx,
            n_parallel=n_parallel,
            n_threads=n_threads,
        )
        for _ in range(count)
    ]
    with ThreadPoolExecutor(max_workers=count) as pool:
        futures = [pool.submit(server.start) for server in servers]
        errors = [f.exception() for f in futures]
    failed = [e for e in errors if e is not None]
    if failed:
        for server in servers:
            server.stop()
        raise failed[0]
    for server in servers:
        log.info("local worker %s ready in %.1f s", server.url, server.startup_seconds or 0.0)
    return servers


def local_worker_configs(servers: list[LocalServer]) -> list[WorkerConfig]:
    return [server.worker_config(f"local-{i + 1}") for i, server in enumerate(servers)]
