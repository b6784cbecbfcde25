"""The OpenAI-compatible dialect, and the base the other OpenAI-style dialects refine.

Routes: ``GET /v1/models`` and ``POST /v1/chat/completions`` (SSE when ``stream``).
Errors are ``{"error": {"message", "type", "param", "code"}}`` as OpenAI writes them.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any, Protocol

from aiohttp import web

from ._behaviour import Behaviour
from ._engine import Call, ContextPolicy, Engine, Generation, Refusal, Refused, Resolved
from ._log import RequestRecord

__all__ = ["CURRENT_RECORD", "Host", "OpenAIDialect", "json_error", "read_json"]

CURRENT_RECORD: ContextVar[RequestRecord] = ContextVar("dllm_fake_record")
"""The log record of the request the current handler task serves (set by middleware)."""


class Host(Protocol):
    """What a dialect needs from the server it serves."""

    id: str

    @property
    def behaviour(self) -> Behaviour: ...

    @property
    def engine(self) -> Engine: ...


def record_of(request: web.Request) -> RequestRecord:
    return CURRENT_RECORD.get()


async def read_json(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object, or :class:`Refused` (bad request)."""
    try:
        body = json.loads(await request.read() or b"null")
    except ValueError as exc:
        raise Refused(Refusal.BAD_REQUEST, message=f"invalid JSON body: {exc}") from exc
    if not isinstance(body, dict):
        raise Refused(Refusal.BAD_REQUEST, message="the request body must be a JSON object")
    return body


def json_error(status: int, body: Any, retry_after: int = 0) -> web.Response:
    headers = {"Retry-After": str(retry_after)} if status in (429, 503) and retry_after else None
    return web.json_response(body, status=status, headers=headers)


def sse(payload: Mapping[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def parse_messages(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not all(
        isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages
    ):
        raise Refused(
            Refusal.BAD_REQUEST,
            message="'messages' must be a list of objects with 'role' and 'content'",
        )
    return messages


def as_int(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise Refused(Refusal.BAD_REQUEST, message=f"'{name}' must be an integer")
    return value


class OpenAIDialect:
    """A generic OpenAI-compatible server (``openai``)."""

    name = "openai"
    context_policy = ContextPolicy.REJECT_PROMPT_AND_MAX
    chat_paths: tuple[str, ...] = ("/v1/chat/completions",)
    model_paths: tuple[str, ...] = ("/v1/models",)
    honours_schema = True
    """Whether ``response_format`` json_schema constrains the answer (exo ignores it)."""
    schema_refusal = "Unrecognized request argument supplied: response_format"
    """How the server refuses a schema when ``Behaviour.reject_schema`` is set."""

    def __init__(self, host: Host) -> None:
        self.host = host

    # -- routes -------------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        for path in self.model_paths:
            app.router.add_get(path, self.handle_models)
        for path in self.chat_paths:
            app.router.add_post(path, self.handle_chat)

    async def handle_models(self, request: web.Request) -> web.Response:
        return web.json_response(self.models_payload())

    async def handle_chat(self, request: web.Request) -> web.StreamResponse:
        record = record_of(request)
        try:
            call = self.parse_call(await read_json(request))
            async with self.host.engine.generation(record, call, self) as generation:
                if call.stream:
                    return await self.write_stream(request, call, generation)
                await generation.finish()
                if generation.garbage:
                    return web.Response(text=self.garbage_text(), content_type="application/json")
                return web.json_response(self.completion_payload(request, call, generation))
        except Refused as refused:
            record.outcome = refused.kind.value
            return self.error_response(request, refused)

    # -- models -------------------------------------------------------------------------

    def models_payload(self) -> dict[str, Any]:
        created = int(time.time())
        return {
            "object": "list",
            "data": [
                {"id": model, "object": "model", "created": created, "owned_by": "organization"}
                for model in self.host.behaviour.loaded_models()
            ],
        }

    def resolve_model(self, call: Call) -> Resolved:
        b = self.host.behaviour
        if call.model is None:
            raise Refused(Refusal.BAD_REQUEST, message="you must provide a model parameter")
        if call.model not in b.loaded_models():
            raise Refused(Refusal.MODEL_NOT_FOUND, model=call.model)
        return Resolved(call.model)

    def context_window(self, call: Call, model: str) -> int:
        return self.host.behaviour.context_length

    # -- requests -----------------------------------------------------------------------

    def parse_call(self, body: Mapping[str, Any]) -> Call:
        messages = parse_messages(body)
        model = body.get("model")
        max_tokens = as_int(body.get("max_completion_tokens"), "max_completion_tokens")
        if max_tokens is None:
            max_tokens = as_int(body.get("max_tokens"), "max_tokens")
        if max_tokens is not None and max_tokens < 0:
            max_tokens = None  # LM Studio's -1: no limit
        options = {k: v for k, v in body.items() if k not in ("model", "messages", "stream")}
        return Call(
            model=model if isinstance(model, str) and model else None,
            messages=messages,
            stream=bool(body.get("stream", False)),
            max_tokens=max_tokens,
            options=options,
            schema=self.requested_schema(body.get("response_format")),
        )

    def requested_schema(self, response_format: Any) -> dict[str, Any] | None:
        """The schema of a ``response_format`` json_schema the server honours, if any."""
        if not isinstance(response_format, dict) or response_format.get("type") != "json_schema":
            return None
        if self.host.behaviour.reject_schema:
            raise Refused(Refusal.BAD_REQUEST, message=self.schema_refusal)
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            message = "response_format.json_schema.schema is missing"
            raise Refused(Refusal.BAD_REQUEST, message=message)
        return schema if self.honours_schema else None

    # -- answers ------------------------------------------------------------------------

    def completion_payload(
        self, request: web.Request, call: Call, generation: Generation
    ) -> dict[str, Any]:
        return {
            "id": "chatcmpl-" + uuid.uuid4().hex[:24],
            "object": "chat.completion",
            "created": int(time.time()),
            "model": generation.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": generation.content},
                    "logprobs": None,
                    "finish_reason": generation.finish_reason,
                }
            ],
            "usage": usage(generation),
        }

    def final_chunk_extras(self, request: web.Request, generation: Generation) -> dict[str, Any]:
        """Fields added to the last streamed chunk (llama.cpp timings, LM Studio stats)."""
        return {}

    async def write_stream(
        self, request: web.Request, call: Call, generation: Generation
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        cid, created = "chatcmpl-" + uuid.uuid4().hex[:24], int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": generation.model,
                "choices": [choice],
            }

        await response.write(sse(chunk({"role": "assistant", "content": ""}, None)))
        if generation.garbage:
            await response.write(b'data: {"id": "' + cid.encode() + b'", "choices": [{"delta"\n\n')
            await response.write_eof()
            return response
        async for piece in generation.stream():
            await response.write(sse(chunk({"content": piece}, None)))
        final = chunk({}, generation.finish_reason)
        final.update(self.final_chunk_extras(request, generation))
        await response.write(sse(final))
        stream_options = call.options.get("stream_options")
        if isinstance(stream_options, dict) and stream_options.get("include_usage"):
            usage_chunk = chunk({}, None)
            usage_chunk["choices"] = []
            usage_chunk["usage"] = usage(generation)
            await response.write(sse(usage_chunk))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    def garbage_text(self) -> str:
        return '{"id": "chatcmpl-0", "object": "chat.completion", "choices": [{"message": {"con'

    # -- errors -------------------------------------------------------------------------

    def error_response(self, request: web.Request, refused: Refused) -> web.Response:
        status, body = self.error_parts(refused)
        return json_error(status, body, refused.retry_after)

    def error_parts(self, refused: Refused) -> tuple[int, Any]:
        """``(status, JSON body)`` for a refusal, in this dialect's words."""
        kind = refused.kind
        if kind in (Refusal.MODEL_NOT_FOUND, Refusal.MODEL_NOT_LOADED):
            message = f"The model `{refused.model}` does not exist or you do not have access to it."
            return 404, _openai_error(message, "invalid_request_error", None, "model_not_found")
        if kind is Refusal.CONTEXT_EXCEEDED:
            completion = refused.max_tokens or 0
            message = (
                f"This model's maximum context length is {refused.window} tokens. However, you "
                f"requested {refused.prompt_tokens + completion} tokens "
                f"({refused.prompt_tokens} in the messages, {completion} in the completion). "
                "Please reduce the length of the messages or completion."
            )
            return 400, _openai_error(
                message, "invalid_request_error", "messages", "context_length_exceeded"
            )
        if kind is Refusal.OVERLOADED:
            if refused.status == 429:
                message = (
                    f"Rate limit reached for requests. Please try again in {refused.retry_after}s."
                )
                return 429, _openai_error(message, "requests", None, "rate_limit_exceeded")
            message = "The engine is currently overloaded, please try again later"
            return 503, _openai_error(message, "server_error", None, None)
        if kind is Refusal.SERVER_ERROR:
            message = "The server had an error while processing your request. Sorry about that!"
            return 500, _openai_error(message, "server_error", None, None)
        return 400, _openai_error(refused.message, "invalid_request_error", None, None)


def usage(generation: Generation) -> dict[str, Any]:
    """OpenAI's ``usage``; with a prefix cache, ``prompt_tokens_details.cached_tokens``."""
    out: dict[str, Any] = {
        "prompt_tokens": generation.prompt_tokens,
        "completion_tokens": generation.completion_tokens,
        "total_tokens": generation.prompt_tokens + generation.completion_tokens,
    }
    if generation.cached_tokens is not None:
        out["prompt_tokens_details"] = {"cached_tokens": generation.cached_tokens}
    return out


def _openai_error(message: str, type_: str, param: str | None, code: str | None) -> Any:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}
