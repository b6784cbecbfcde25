"""Asking one server what it is, without a cluster: ``dllm_notebook.probe()``.

``dllm init`` and ``dllm discover`` use it before a workers file exists; a notebook can use
it to see what a machine serves before adding it. It sends only the cheap model-list
requests a health check sends, never a prompt.

>>> server = dllm_notebook.probe("http://192.168.1.20:1234")
>>> server.type, [m.id for m in server.models], server.context_length
('lm_studio', ['qwen2.5-7b-instruct'], 32768)
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import httpx

from .._config import WorkerConfig, parse_worker_spec
from .._errors import WorkerError, WorkerUnreachable
from .._loop import bridge, run_sync, wait_within
from .._types import ModelInfo
from .backends import detect_type, make_backend
from .transport import tls_context

__all__ = ["ServerProbe", "aprobe", "probe"]

PROBE_TIMEOUT = 10.0


@dataclass(frozen=True)
class ServerProbe:
    """What one server said about itself: its dialect, its models and its context window.

    ``context_length`` is the window of ``model`` (the configured or first loaded model)
    where the server reports one, else its server-wide window, else ``None``.
    """

    url: str
    type: str
    models: tuple[ModelInfo, ...] = ()
    context_length: int | None = None
    model: str | None = None
    """The model a worker at this address would use: the one asked for, else the first
    loaded, else the first listed."""

    @property
    def loaded(self) -> tuple[str, ...]:
        """The ids of the models the server says are loaded."""
        return tuple(m.id for m in self.models if m.loaded)


def _config(server: str | WorkerConfig, model: str | None) -> WorkerConfig:
    config = parse_worker_spec(server, 0)
    return replace(config, model=model) if model else config


async def _probe(config: WorkerConfig, timeout: float) -> ServerProbe:
    headers = {"Authorization": f"Bearer {config.api_key.reveal()}"} if config.api_key else {}
    async with httpx.AsyncClient(
        base_url=config.base_url,
        headers=headers,
        timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
        verify=tls_context(),
    ) as client:
        if config.type == "auto":
            try:
                kind = await detect_type(client, config.port, timeout)
            except (httpx.HTTPError, OSError) as exc:
                raise WorkerUnreachable(
                    f"cannot reach {config.base_url} ({type(exc).__name__}); is the server "
                    "running and the machine awake?",
                    worker=config.id,
                ) from exc
            if kind is None:
                raise WorkerError(
                    f"{config.base_url} answers, but not as LM Studio, Ollama, llama.cpp, exo "
                    "or an OpenAI-compatible server; give its type explicitly "
                    "(e.g. ollama://host)",
                    worker=config.id,
                )
            config = replace(config, type=kind)
        info = await make_backend(config, client).probe(detailed=True)
    loaded = [m.id for m in info.models if m.loaded]
    model = config.model or next(iter(loaded or [m.id for m in info.models]), None)
    chosen = info.find(model) if model else None
    windows = [w for w in (chosen and chosen.context_length, info.context_length) if w]
    return ServerProbe(
        config.base_url, config.type, info.models, min(windows) if windows else None, model
    )


async def _within(config: WorkerConfig, timeout: float) -> ServerProbe:
    try:
        return await wait_within(_probe(config, timeout), timeout)
    except TimeoutError:
        raise WorkerUnreachable(
            f"no answer from {config.base_url} within {timeout:g} s; is the server running "
            "and the machine awake?",
            worker=config.id,
        ) from None


def probe(
    server: str | WorkerConfig, *, model: str | None = None, timeout: float = PROBE_TIMEOUT
) -> ServerProbe:
    """Ask one server what it is: its type, its models and its context window.

    ``server`` is a URL as ``Cluster([...])`` takes it (``http://host:1234`` detects the
    type; ``ollama://host`` names it) or a :class:`WorkerConfig`. Raises a
    :class:`WorkerError` (``WorkerUnreachable`` when nothing answers in ``timeout``
    seconds) and :class:`ConfigError` for a malformed URL.

    >>> probe("ollama://gpu-box").models
    """
    return run_sync(_within(_config(server, model), timeout), what="probe()")


async def aprobe(
    server: str | WorkerConfig, *, model: str | None = None, timeout: float = PROBE_TIMEOUT
) -> ServerProbe:
    """The async twin of :func:`probe` (``await dllm_notebook.aprobe(url)`` in a cell)."""
    return await bridge(_within(_config(server, model), timeout))
