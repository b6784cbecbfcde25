"""Talking to one server directly, without a cluster: is it there, what is it, does it answer.

``discover`` and ``init`` use these before a workers file exists; ``check --test`` uses
:func:`say_hello` on the cluster's own backends. Every coroutine runs on the library's
loop (``run_sync``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field

import httpx

from .._config import DEFAULT_PORTS, WorkerConfig
from .._errors import WorkerError
from .._loop import wait_within
from .._running.backends import Backend, detect_type, make_backend
from .._types import ChatRequest, ModelInfo

__all__ = [
    "DISCOVER_PORTS",
    "Found",
    "Inspection",
    "inspect_worker",
    "say_hello",
    "scan",
]

DISCOVER_PORTS: dict[int, str] = {port: kind for kind, port in DEFAULT_PORTS.items()}
"""The default ports ``discover`` probes: LM Studio 1234, Ollama 11434, exo 52415,
llama.cpp 8080."""
HELLO = ChatRequest(
    "Reply with one short friendly greeting.",
    options={"max_tokens": 16, "temperature": 0.0},
    prompt_tokens_estimate=12,
)


async def say_hello(backend: Backend, model: str, context_length: int | None) -> float:
    """Send one tiny prompt; return the seconds it took (raises WorkerError)."""
    started = time.monotonic()
    await backend.chat(HELLO, model=model, context_length=context_length)
    return time.monotonic() - started


@contextlib.asynccontextmanager
async def direct_backend(config: WorkerConfig, timeout: float) -> AsyncIterator[Backend]:
    """A backend for ``config`` on its own short-lived HTTP client."""
    headers = {"Authorization": f"Bearer {config.api_key.reveal()}"} if config.api_key else {}
    async with httpx.AsyncClient(
        base_url=config.base_url,
        headers=headers,
        timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
    ) as client:
        yield make_backend(config, client)


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


async def inspect_worker(config: WorkerConfig, *, timeout: float, hello: bool = True) -> Inspection:
    """List the server's models and, with ``hello``, send it one tiny prompt."""
    result = Inspection()
    async with direct_backend(config, timeout) as backend:
        try:
            info = await wait_within(backend.probe(detailed=True), timeout)
        except asyncio.TimeoutError:
            result.error = f"no answer from {config.base_url} within {timeout:g} s"
            return result
        except WorkerError as exc:
            result.error = exc.detail
            return result
        result.models = info.models
        model = result.default_model(config.model)
        chosen = info.find(model) if model else None
        windows = [w for w in (chosen and chosen.context_length, info.context_length) if w]
        result.context_length = min(windows) if windows else None
        if not hello or model is None:
            return result
        try:
            result.hello_s = await wait_within(
                say_hello(backend, model, result.context_length), config.timeout or 120.0
            )
        except asyncio.TimeoutError:
            result.hello_error = "no answer to a tiny prompt within the timeout"
        except WorkerError as exc:
            result.hello_error = exc.detail
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
    http_timeout = max(3 * timeout, 3.0)
    base = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    async with httpx.AsyncClient(base_url=base, timeout=http_timeout) as client:
        try:
            kind = await detect_type(client, port, http_timeout)
        except (httpx.HTTPError, OSError):
            return None
        if kind is None:
            return None
        config = WorkerConfig(id=f"{host}:{port}", host=host, port=port, type=kind)
        models: tuple[ModelInfo, ...] = ()
        with contextlib.suppress(WorkerError, httpx.HTTPError, OSError):
            models = (await make_backend(config, client).probe()).models
    return Found(
        host,
        port,
        kind,
        tuple(m.id for m in models),
        tuple(m.id for m in models if m.loaded),
    )


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
