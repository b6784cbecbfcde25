"""Small value objects shared by the backends, the dispatcher and the user-facing API."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Answer", "ChatRequest", "Completion", "ModelInfo", "ServerInfo"]


@dataclass(frozen=True)
class ChatRequest:
    """One prompt to send: a user message, an optional system message and options.

    ``options`` holds generation options (``temperature``, ``max_tokens``, ``top_p``,
    ``seed``, ``stop`` ...). Each backend maps them onto its own wire format.
    ``prompt_tokens_estimate`` is the dispatcher's conservative estimate of the prompt's
    size; the Ollama backend uses it to size ``num_ctx``. ``schema`` is the JSON schema
    the answer must follow (a typed prompt's, see ``_prompts/schemas.py``): each backend
    sends it in its server's form, or describes it in the prompt where the server cannot
    constrain its output.
    """

    prompt: str
    system: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    prompt_tokens_estimate: int | None = None
    schema: Mapping[str, Any] | None = None

    @property
    def max_tokens(self) -> int | None:
        value = self.options.get("max_tokens")
        return int(value) if value is not None else None


@dataclass(frozen=True)
class Completion:
    """What a backend returns for one successful request, before the cluster adds context."""

    text: str
    model: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    generation_seconds: float | None = None
    """Time the server says it spent generating (Ollama's eval_duration, LM Studio's stats)."""
    tokens_per_second: float | None = None
    prefill_seconds: float | None = None
    """Time the server says it spent reading the prompt (Ollama's prompt_eval_duration, LM
    Studio's time_to_first_token, llama.cpp's timings.prompt_ms)."""
    cached_tokens: int | None = None
    """Prompt tokens the server reused from its prefix cache instead of reading them again
    (llama.cpp's ``timings.cache_n``, OpenAI-style
    ``usage.prompt_tokens_details.cached_tokens``, Ollama's ``prompt_eval_count`` below the
    prompt's size); ``None`` where the server does not say."""
    read_tokens: int | None = None
    """Prompt tokens the server says it read for this request, its cached part left out
    (Ollama's ``prompt_eval_count``), where it counts them apart from the prompt's size;
    ``None`` otherwise (the prompt's size less the cached tokens is then what it read)."""
    first_token_seconds: float | None = None
    """Seconds from sending the request to the answer's first token, by the client's clock
    (a streamed answer only; ``None`` otherwise). It includes any wait in the server's
    queue, which the server's own times leave out."""


@dataclass(frozen=True)
class Answer:
    """One answer, or the error that ended its last try.

    >>> answer = cluster.ask("What is 2 + 2?")
    >>> answer.text, answer.worker, answer.completion_tokens
    """

    text: str
    worker: str | None
    model: str | None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_s: float | None = None
    finish_reason: str | None = None
    tokens_per_second: float | None = None
    attempts: int = 1
    error: str | None = None
    error_type: str | None = None
    cached_tokens: int | None = None
    """Prompt tokens the server took from its prefix cache (``None`` where it does not say)."""
    prefill_s: float | None = None
    """Seconds the server says it spent reading the prompt (``None`` where it does not say)."""

    @property
    def ok(self) -> bool:
        return self.error is None

    def __str__(self) -> str:
        return self.text if self.ok else f"<failed: {self.error}>"


@dataclass(frozen=True)
class ModelInfo:
    """A model a server knows, and what it says about it."""

    id: str
    loaded: bool | None = None
    context_length: int | None = None


@dataclass(frozen=True)
class ServerInfo:
    """What one health probe learned about a worker."""

    models: tuple[ModelInfo, ...]
    context_length: int | None = None
    """The server-wide context window where the server reports one (llama.cpp ``/props``)."""
    slots: int | None = None
    """How many requests the server decodes at once, where it says (llama.cpp ``/slots``)."""
    busy_slots: int | None = None
    """How many of them are decoding now, any client's requests (llama.cpp ``/slots``
    ``is_processing``), where the server says."""
    batching: bool = False
    """The server is an engine that batches hundreds of requests (vLLM, SGLang: its model
    list says so in ``owned_by``)."""

    def find(self, model: str) -> ModelInfo | None:
        """The model with this id, ignoring Ollama's implicit ``:latest`` tag."""
        wanted = _normalise(model)
        for info in self.models:
            if _normalise(info.id) == wanted:
                return info
        return None


def _normalise(model: str) -> str:
    return model[: -len(":latest")] if model.endswith(":latest") else model
