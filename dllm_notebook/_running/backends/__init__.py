"""One backend per wire format, behind the small :class:`Backend` interface."""

from __future__ import annotations

import httpx

from ..._config import WorkerConfig
from .base import Backend, FirstToken, classify_error
from .llamacpp import LlamaCppBackend
from .lmstudio import LMStudioBackend
from .ollama import OllamaBackend, num_ctx_for
from .openai import ExoBackend, OpenAIBackend

__all__ = ["Backend", "FirstToken", "classify_error", "detect_type", "make_backend", "num_ctx_for"]

_BACKENDS: dict[str, type[Backend]] = {
    "openai": OpenAIBackend,
    "lm_studio": LMStudioBackend,
    "ollama": OllamaBackend,
    "exo": ExoBackend,
    "llama_cpp": LlamaCppBackend,
}


def make_backend(config: WorkerConfig, client: httpx.AsyncClient) -> Backend:
    return _BACKENDS[config.type](config, client)


async def detect_type(client: httpx.AsyncClient, port: int | None, timeout: float) -> str | None:
    """Which dialect answers at this address: LM Studio, Ollama, llama.cpp, exo or plain
    OpenAI."""

    async def answers(path: str, key: str) -> bool:
        # Transport errors propagate: an unreachable server is not an unknown dialect.
        r = await client.get(path, timeout=timeout)
        if r.status_code != 200:
            return False
        try:
            data = r.json()
        except ValueError:
            return False
        return isinstance(data, dict) and key in data

    if await answers("/api/v0/models", "data"):
        return "lm_studio"
    if await answers("/api/tags", "models"):
        return "ollama"
    if await answers("/props", "default_generation_settings"):
        return "llama_cpp"
    if await answers("/v1/models", "data"):
        return "exo" if port == 52415 else "openai"
    return None
