"""The registry of fake server dialects."""

from __future__ import annotations

from ._lmstudio import LMStudioDialect
from ._ollama import OllamaDialect
from ._openai import Host, OpenAIDialect
from ._openai_variants import ExoDialect, LlamaCppDialect, VLLMDialect

__all__ = ["CLIENT_TYPES", "DEFAULT_PORTS", "DIALECTS", "make_dialect"]

_CLASSES: dict[str, type[OpenAIDialect]] = {
    "openai": OpenAIDialect,
    "llamacpp": LlamaCppDialect,
    "vllm": VLLMDialect,
    "exo": ExoDialect,
    "lm_studio": LMStudioDialect,
    "ollama": OllamaDialect,
}

DIALECTS: tuple[str, ...] = tuple(_CLASSES)
"""The dialect names a fake server accepts."""

DEFAULT_PORTS: dict[str, int] = {
    "openai": 8000,
    "llamacpp": 8080,
    "vllm": 8000,
    "exo": 52415,
    "lm_studio": 1234,
    "ollama": 11434,
}
"""The port each real server listens on by default (fakes use a free port unless told)."""

CLIENT_TYPES: dict[str, str] = {
    "openai": "openai",
    "llamacpp": "llama_cpp",
    "vllm": "openai",
    "exo": "exo",
    "lm_studio": "lm_studio",
    "ollama": "ollama",
}
"""The worker ``type`` a workers.json gives a server of each dialect (vLLM speaks the
OpenAI API)."""


def check_dialect(name: str) -> str:
    if name not in _CLASSES:
        raise ValueError(
            f"Unknown fake-server dialect {name!r}. Use one of: {', '.join(DIALECTS)}."
        )
    return name


def make_dialect(name: str, host: Host) -> OpenAIDialect:
    return _CLASSES[check_dialect(name)](host)
