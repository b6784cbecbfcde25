"""Talking to one server before a workers file exists: is it there, what is it, does it answer.

``discover`` and ``init`` use the public :func:`dllm_notebook.aprobe` (type, models,
context window) and, for ``init``'s test prompt, a one-worker :class:`~dllm_notebook.Cluster`.
Every coroutine runs on the library's loop (``run_sync``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace

from .. import Cluster, DllmError, ModelInfo, WorkerConfig, WorkerError, aprobe
from .._config import DEFAULT_PORTS
from .._loop import wait_within
from ._workers import HELLO

__all__ = [
    "DISCOVER_PORTS",
    "Found",
    "Inspection",
    "inspect_worker",
    "scan",
]

DISCOVER_PORTS: dict[int, str] = {port: kind for kind, port in DEFAULT_PORTS.items()}
"""The default ports ``discover`` probes: LM Studio 1234, Ollama 11434, exo 52415,
llama.cpp 8080."""


@dataclass
class Inspection:
    """What ``init`` learned about one server."""

    models: tuple[ModelInfo, ...] = ()
    context_length: int | None = None
    error: str | None = None
    hello_s: float | None = None
    hello_error: str | None = None

    def default_model(self, wanted: str | None = None) -> str | None:
        if wanted:
            return wanted
        loaded = [m.id for m in self.models if m.loaded]
        names = loaded or [m.id for m in self.models]
        return names[0] if names else None


async def _hello(config: WorkerConfig, model: str, timeout: float) -> float:
    """Seconds one tiny prompt took on a one-worker cluster (raises DllmError)."""
    cluster = Cluster([replace(config, model=model)], store=None, no_worker_timeout=5.0)
    try:
        started = time.monotonic()
        await wait_within(cluster.aask(HELLO, worker=config.id), timeout)
        return time.monotonic() - started
    finally:
        await cluster.aclose()


async def inspect_worker(config: WorkerConfig, *, timeout: float, hello: bool = True) -> Inspection:
    """List the server's models and, with ``hello``, send it one tiny prompt."""
    result = Inspection()
    try:
        server = await aprobe(config, timeout=timeout)
    except WorkerError as exc:
        result.error = exc.detail
        return result
    result.models, result.context_length = server.models, server.context_length
    if not hello or server.model is None:
        return result
    try:
        result.hello_s = await _hello(config, server.model, config.timeout or 120.0)
    except asyncio.TimeoutError:
        result.hello_error = "no answer to a tiny prompt within the timeout"
    except DllmError as exc:
        result.hello_error = exc.detail if isinstance(exc, WorkerError) else str(exc)
    return result


@dataclass(frozen=True)
class Found:
    """A server that ``discover`` identified."""

    host: str
    port: int
    type: str
    models: tuple[str, ...] = field(default_factory=tuple)
    loaded: tuple[str, ...] = field(default_factory=tuple)

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def entry(self) -> dict[str, object]:
        """A ready-to-use entry for workers.json."""
        suffix = "" if DEFAULT_PORTS.get(self.type) == self.port else f"-{self.port}"
        out: dict[str, object] = {
            "id": f"{self.type.replace('_', '')}-{self.host}{suffix}",
            "host": self.host,
            "port": self.port,
            "type": self.type,
        }
        model = (self.loaded or self.models or (None,))[0]
        if model:
            out["model"] = model
        return out


async def _port_open(host: str, port: int, timeout: float) -> bool:
    try:
        _, writer = await wait_within(asyncio.open_connection(host, port), timeout)
    except (OSError, asyncio.TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def identify(host: str, port: int, timeout: float) -> Found | None:
    """Which LLM server listens at ``host:port``, if any, and its models."""
    if not await _port_open(host, port, timeout):
        return None
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        server = await aprobe(f"http://{address}", timeout=max(3 * timeout, 3.0))
    except DllmError:
        return None
    return Found(host, port, server.type, tuple(m.id for m in server.models), server.loaded)


async def scan(
    targets: Iterable[tuple[str, int]], *, timeout: float, concurrency: int
) -> list[Found]:
    """Probe every ``(host, port)`` with at most ``concurrency`` connections at once."""
    source: Iterator[tuple[str, int]] = iter(targets)
    found: list[Found] = []

    async def probe_next() -> None:
        for host, port in source:  # the iterator is shared: each target is taken once
            server = await identify(host, port, timeout)
            if server is not None:
                found.append(server)

    await asyncio.gather(*(probe_next() for _ in range(concurrency)))
    return sorted(found, key=lambda f: (_sort_key(f.host), f.port))


def _sort_key(host: str) -> tuple[int, ...]:
    address = ipaddress.ip_address(host)
    return (address.version, int(address))
