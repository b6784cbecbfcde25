"""OpenAI-compatible servers: llama.cpp, vLLM, exo, LM Studio's /v1, and others."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import replace
from typing import Any

from ..._types import ChatRequest, Completion, ModelInfo, ServerInfo
from .base import Backend, FirstToken, positive_int
from .options import wire_options
from .structured import response_format

__all__ = ["ExoBackend", "OpenAIBackend", "cached_tokens"]


def chat_messages(request: ChatRequest) -> list[dict[str, str]]:
    messages = []
    if request.system:
        messages.append({"role": "system", "content": request.system})
    messages.append({"role": "user", "content": request.prompt})
    return messages


BATCHING = ("vllm", "sglang")
"""``owned_by`` in the model list of engines that batch hundreds of requests at once."""


class OpenAIBackend(Backend):
    """``GET /v1/models`` and ``POST /v1/chat/completions`` with ``usage``.

    The context window comes from vLLM's ``max_model_len`` in ``/v1/models`` or from
    llama.cpp's ``/props`` (``default_generation_settings.n_ctx``) where the server has them.
    """

    type = "openai"
    chat_path = "/v1/chat/completions"
    models_path = "/v1/models"

    async def probe(self, *, detailed: bool = False) -> ServerInfo:
        data = await self.request_json("GET", self.models_path)
        entries = data.get("data") if isinstance(data, dict) else None
        if not isinstance(entries, list):
            raise self.malformed(f"{self.models_path} has no 'data' list")
        models = tuple(
            ModelInfo(
                id=str(e["id"]),
                context_length=positive_int(e.get("max_model_len") or e.get("context_length")),
            )
            for e in entries
            if isinstance(e, dict) and "id" in e
        )
        server_ctx = await self._props_context() if detailed else None
        batching = any(isinstance(e, dict) and e.get("owned_by") in BATCHING for e in entries)
        return ServerInfo(models=models, context_length=server_ctx, batching=batching)

    async def _props_context(self) -> int | None:
        """llama.cpp's native server says its window in /props; others 404, which is fine."""
        with contextlib.suppress(Exception):
            props = await self.request_json("GET", "/props", timeout=5.0)
            settings = (
                props.get("default_generation_settings", {}) if isinstance(props, dict) else {}
            )
            return positive_int(settings.get("n_ctx") or props.get("n_ctx"))
        return None

    def payload(self, request: ChatRequest, model: str) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model, "messages": chat_messages(request), "stream": False}
        body |= wire_options(self.type, request.options)
        if request.schema is not None:
            body["response_format"] = response_format(request.schema)
        return body

    async def chat(
        self, request: ChatRequest, *, model: str, context_length: int | None
    ) -> Completion:
        async def send(prepared: ChatRequest) -> Completion:
            data = await self.request_json(
                "POST",
                self.chat_path,
                json_body=self.payload(prepared, model),
                model=model,
                timeout=self.config.timeout,
            )
            return self.parse_completion(data, model)

        return await self.send_structured(request, send)

    def stream(
        self, request: ChatRequest, *, model: str, context_length: int | None
    ) -> AsyncIterator[str]:
        """Server-sent events: ``data: {chunk}`` lines with ``choices[0].delta.content``,
        ended by ``data: [DONE]``."""
        body = self.payload(self.prepared(request), model) | {"stream": True}
        return self.stream_pieces(self._chunks(body, model), _delta_content, model)

    async def streamed(
        self,
        request: ChatRequest,
        *,
        model: str,
        context_length: int | None,
        first_token: FirstToken | None = None,
    ) -> Completion:
        """The chunks joined into the answer :meth:`parse_completion` reads: the text of
        every delta, and the last chunk's ``usage`` (asked for with ``stream_options``),
        llama.cpp's ``timings`` and LM Studio's ``stats`` wherever the server put them."""
        body = self.payload(request, model) | {
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        whole: dict[str, Any] = {}
        finish: list[Any] = [None]

        def each(chunk: dict[str, Any]) -> None:
            choices = chunk.get("choices")
            if isinstance(choices, list) and choices and isinstance(choices[0], dict):
                finish[0] = choices[0].get("finish_reason") or finish[0]
            whole.update((k, v) for k, v in chunk.items() if k != "choices" and v is not None)

        text, first = await self.read_stream(
            self._chunks(body, model), _delta_content, first_token=first_token, each=each
        )
        message = {"role": "assistant", "content": text}
        whole["choices"] = [{"index": 0, "message": message, "finish_reason": finish[0]}]
        return replace(self.parse_completion(whole, model), first_token_seconds=first)

    async def _chunks(self, body: dict[str, Any], model: str) -> AsyncGenerator[dict[str, Any]]:
        """The stream's chunks, decoded; an error the server writes into it is raised."""
        lines = self.stream_lines(
            self.chat_path, json_body=body, model=model, timeout=self.config.timeout
        )
        async with contextlib.aclosing(lines):
            async for line in lines:
                field, _, data = line.partition(":")
                if field not in ("data", "error"):
                    continue  # blank separators, comments, "event:" lines
                data = data.strip()
                if data == "[DONE]":
                    break
                try:
                    chunk = json.loads(data)
                except ValueError as exc:
                    raise self.malformed(
                        f"a streamed chunk is not JSON: {data[:80]!r}", model
                    ) from exc
                if field == "error":  # llama.cpp's way to report a failure mid-stream
                    chunk = {"error": chunk}
                error = self.stream_error(chunk, model)
                if error is not None:
                    raise error
                if isinstance(chunk, dict):
                    yield chunk

    def parse_completion(self, data: Any, model: str) -> Completion:
        try:
            choice = data["choices"][0]
            text = choice["message"]["content"]
        except (KeyError, IndexError, TypeError) as exc:
            raise self.malformed("no choices[0].message.content", model) from exc
        if not isinstance(text, str) or not text.strip():
            raise self.empty_answer(model)
        usage = data.get("usage") or {}
        timings = data.get("timings")  # llama.cpp's server adds these
        prefill = decode = None
        if isinstance(timings, dict):
            prefill, decode = (
                _seconds(timings.get("prompt_ms")),
                _seconds(timings.get("predicted_ms")),
            )
        return Completion(
            text=text,
            model=str(data.get("model") or model),
            prompt_tokens=positive_int(usage.get("prompt_tokens")),
            completion_tokens=positive_int(usage.get("completion_tokens")),
            finish_reason=choice.get("finish_reason"),
            generation_seconds=decode,
            prefill_seconds=prefill,
            cached_tokens=cached_tokens(usage, timings),
        )


def cached_tokens(usage: Any, timings: Any) -> int | None:
    """Prompt tokens served from the prefix cache: OpenAI-style
    ``usage.prompt_tokens_details.cached_tokens``, else llama.cpp's ``timings.cache_n``."""
    details = usage.get("prompt_tokens_details") if isinstance(usage, dict) else None
    for value in (
        details.get("cached_tokens") if isinstance(details, dict) else None,
        timings.get("cache_n") if isinstance(timings, dict) else None,
    ):
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
            return int(value)
    return None


def _seconds(milliseconds: Any) -> float | None:
    if isinstance(milliseconds, (int, float)) and milliseconds >= 0:
        return float(milliseconds) / 1000
    return None


def _delta_content(chunk: Any) -> str | None:
    choices = chunk.get("choices") if isinstance(chunk, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None  # e.g. the final usage chunk
    delta = choices[0].get("delta")
    content = delta.get("content") if isinstance(delta, dict) else None
    return content if isinstance(content, str) else None


class ExoBackend(OpenAIBackend):
    """exo serves the OpenAI API (default port 52415), without constrained decoding: a
    request's schema is described in the prompt."""

    type = "exo"
    constrains_output = False
