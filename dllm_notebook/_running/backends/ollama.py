"""Ollama's native API: ``/api/tags``, ``/api/ps``, ``/api/show`` and ``/api/chat``."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import replace
from typing import Any

import httpx

from ..._config import WorkerConfig
from ..._types import ChatRequest, Completion, ModelInfo, ServerInfo
from .base import Backend, FirstToken, positive_int
from .openai import chat_messages
from .options import wire_options

__all__ = ["OllamaBackend", "num_ctx_for", "ollama_cached"]

MIN_NUM_CTX = 4096
"""Ollama reloads a model whenever ``num_ctx`` changes, so windows come in a few sizes only,
and a worker's never shrinks: a run of papers of mixed lengths reloads the model at most
once per doubling, not at every switch between a short and a long one."""
DEFAULT_MAX_TOKENS = 512


def num_ctx_for(needed_tokens: int, context_length: int | None) -> int:
    """The ``num_ctx`` to send: a power of two that covers the prompt, at least 4096, and at
    most the model's window. Without it Ollama silently cuts long prompts to its default."""
    size = MIN_NUM_CTX
    while size < needed_tokens:
        size *= 2
    return min(size, context_length) if context_length else size


class OllamaBackend(Backend):
    """Always sends ``options.num_ctx``, and ``stream: false`` unless the worker streams
    (Ollama streams unless told not to)."""

    type = "ollama"
    streams_by_default = True

    def __init__(self, config: WorkerConfig, client: httpx.AsyncClient) -> None:
        super().__init__(config, client)
        self._num_ctx = 0

    async def probe(self, *, detailed: bool = False) -> ServerInfo:
        data = await self.request_json("GET", "/api/tags")
        entries = data.get("models") if isinstance(data, dict) else None
        if not isinstance(entries, list):
            raise self.malformed("/api/tags has no 'models' list")
        names = [str(e.get("name") or e.get("model")) for e in entries if isinstance(e, dict)]
        if not detailed:
            return ServerInfo(models=tuple(ModelInfo(id=n) for n in names))
        loaded: set[str] = set()
        with contextlib.suppress(Exception):
            ps = await self.request_json("GET", "/api/ps", timeout=5.0)
            loaded = {str(m.get("name")) for m in ps.get("models", []) if isinstance(m, dict)}
        wanted = self.config.model
        models = []
        for name in names:
            ctx = (
                await self._show_context(name)
                if wanted in (None, name) or (wanted and name == f"{wanted}:latest")
                else None
            )
            models.append(ModelInfo(id=name, loaded=name in loaded, context_length=ctx))
        return ServerInfo(models=tuple(models))

    async def _show_context(self, model: str) -> int | None:
        with contextlib.suppress(Exception):
            info = await self.request_json(
                "POST", "/api/show", json_body={"model": model}, timeout=5.0, model=model
            )
            details = info.get("model_info", {}) if isinstance(info, dict) else {}
            for key, value in details.items():
                if key.endswith(".context_length"):
                    return positive_int(value)
        return None

    def payload(
        self, request: ChatRequest, model: str, context_length: int | None
    ) -> dict[str, Any]:
        options = wire_options(self.type, request.options)
        out_tokens = int(options.get("num_predict") or DEFAULT_MAX_TOKENS)
        needed = (request.prompt_tokens_estimate or len(request.prompt) // 2) + out_tokens
        self._num_ctx = max(self._num_ctx, num_ctx_for(needed, context_length))
        options["num_ctx"] = min(self._num_ctx, context_length) if context_length else self._num_ctx
        body: dict[str, Any] = {
            "model": model,
            "messages": chat_messages(request),
            "stream": False,
            "options": options,
        }
        if request.schema is not None:
            body["format"] = dict(request.schema)  # Ollama's structured outputs (0.5+)
        return body

    async def chat(
        self, request: ChatRequest, *, model: str, context_length: int | None
    ) -> Completion:
        async def send(prepared: ChatRequest) -> Completion:
            data = await self.request_json(
                "POST",
                "/api/chat",
                json_body=self.payload(prepared, model, context_length),
                model=model,
                timeout=self.config.timeout,
            )
            return self._completion(data, model, prepared.prompt_tokens_estimate)

        return await self.send_structured(request, send)

    def _completion(self, data: Any, model: str, estimate: int | None = None) -> Completion:
        if not isinstance(data, dict):
            raise self.malformed("/api/chat did not return an object", model)
        message = data.get("message")
        text = message.get("content") if isinstance(message, dict) else None
        if not isinstance(text, str):
            raise self.malformed("no message.content", model)
        if not text.strip():
            raise self.empty_answer(model)
        eval_count = positive_int(data.get("eval_count"))
        eval_ns = positive_int(data.get("eval_duration"))
        seconds = eval_ns / 1e9 if eval_ns else None
        prompt_ns = positive_int(data.get("prompt_eval_duration"))
        evaluated = positive_int(data.get("prompt_eval_count"))
        cached = ollama_cached(evaluated, estimate)
        return Completion(
            text=text,
            model=str(data.get("model") or model),
            # after a cache hit Ollama counts only what it read: the prompt's size is unknown
            prompt_tokens=None if cached else evaluated,
            cached_tokens=cached,
            read_tokens=evaluated,
            completion_tokens=eval_count,
            finish_reason=data.get("done_reason"),
            generation_seconds=seconds,
            tokens_per_second=eval_count / seconds if eval_count and seconds else None,
            prefill_seconds=prompt_ns / 1e9 if prompt_ns else None,
        )

    def stream(
        self, request: ChatRequest, *, model: str, context_length: int | None
    ) -> AsyncIterator[str]:
        """NDJSON: one object per line with ``message.content``; the last has ``done``."""
        body = self.payload(self.prepared(request), model, context_length) | {"stream": True}
        return self.stream_pieces(self._lines(body, model), _content, model)

    async def streamed(
        self,
        request: ChatRequest,
        *,
        model: str,
        context_length: int | None,
        first_token: FirstToken | None = None,
    ) -> Completion:
        """The lines joined into the answer :meth:`chat` reads: every line's text, and the
        last line's counts and durations (``done: true``)."""
        body = self.payload(request, model, context_length) | {"stream": True}
        last: dict[str, Any] = {}
        text, first = await self.read_stream(
            self._lines(body, model), _content, first_token=first_token, each=last.update
        )
        whole = last | {"message": {"role": "assistant", "content": text}}
        completion = self._completion(whole, model, request.prompt_tokens_estimate)
        return replace(completion, first_token_seconds=first)

    async def _lines(self, body: dict[str, Any], model: str) -> AsyncGenerator[dict[str, Any]]:
        """The stream's objects, decoded, up to the one with ``done``; an error the server
        writes into it is raised."""
        lines = self.stream_lines(
            "/api/chat", json_body=body, model=model, timeout=self.config.timeout
        )
        async with contextlib.aclosing(lines):
            async for line in lines:
                if not line.strip():
                    continue
                try:
                    data = json.loads(line)
                except ValueError as exc:
                    raise self.malformed(
                        f"a streamed line is not JSON: {line[:80]!r}", model
                    ) from exc
                error = self.stream_error(data, model)
                if error is not None:
                    raise error
                if not isinstance(data, dict):
                    continue
                yield data
                if data.get("done"):
                    break


def _content(data: dict[str, Any]) -> str | None:
    message = data.get("message")
    piece = message.get("content") if isinstance(message, dict) else None
    return piece if isinstance(piece, str) else None


CACHE_HIT_SHARE = 0.5
"""Ollama counts only the prompt tokens it evaluated: a count below this share of the
prompt's estimate means the rest came from its cache (estimates are within ~20%)."""


def ollama_cached(evaluated: int | None, estimate: int | None) -> int | None:
    """Prompt tokens Ollama took from its cache, judged from ``prompt_eval_count``: ``None``
    when either number is missing, 0 when it read about the whole prompt."""
    if evaluated is None or not estimate:
        return None
    if evaluated >= CACHE_HIT_SHARE * estimate:
        return 0
    return estimate - evaluated
