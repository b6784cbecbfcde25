"""OpenAI-style dialects with their own quirks: llama.cpp's server, vLLM and exo."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from aiohttp import web

from ._engine import Call, ContextPolicy, Generation, Refusal, Refused, Resolved
from ._grammar import GrammarError, grammar_regex, grammar_schema
from ._openai import OpenAIDialect

__all__ = ["ExoDialect", "LlamaCppDialect", "VLLMDialect", "hugging_face_id"]


class LlamaCppDialect(OpenAIDialect):
    """llama.cpp's ``llama-server``: one model, any model name accepted.

    Adds ``GET /health``, ``GET /props`` (``default_generation_settings.n_ctx`` per slot,
    ``total_slots``, ``model_alias``), ``GET /slots`` (one entry per slot with its
    ``n_ctx`` and ``is_processing``; 501 ``not_supported_error`` with
    ``slots_endpoint=False``, like ``--no-slots``), ``GET /metrics`` (Prometheus text with
    ``llamacpp:requests_processing`` and ``llamacpp:requests_deferred``) and ``timings`` in
    answers (``cache_n``, ``prompt_n``, ``prompt_ms``, ``predicted_n``, ``predicted_ms``).
    A ``grammar`` (GBNF) constrains the answer: a grammar that does not parse is refused
    with 400; the answer is an instance of the JSON schema in the grammar's first-line
    comment (see ``_grammar``), written without whitespace, and it matches the grammar.
    Beside a ``response_format`` the grammar is ignored, as the real server does.
    A prompt of ``n_ctx`` tokens or more is refused with ``exceed_context_size_error``
    (with ``n_prompt_tokens`` and ``n_ctx``); an answer that would overflow the window is
    cut (``finish_reason: "length"``). While no model is loaded (``loaded=[]``, the server
    is "loading") every route answers 503 ``Loading model``.
    """

    name = "llamacpp"
    context_policy = ContextPolicy.REJECT_PROMPT
    schema_refusal = (
        'response_format type must be one of "text" or "json_object", but got: json_schema'
    )
    model_paths = ("/v1/models", "/models")

    def add_routes(self, app: web.Application) -> None:
        super().add_routes(app)
        app.router.add_get("/health", self.handle_health)
        app.router.add_get("/props", self.handle_props)
        app.router.add_get("/slots", self.handle_slots)
        app.router.add_get("/metrics", self.handle_metrics)

    def _loading(self) -> bool:
        return not self.host.behaviour.loaded_models()

    async def handle_health(self, request: web.Request) -> web.Response:
        if self._loading():
            return web.json_response(_loading_body(), status=503)
        return web.json_response({"status": "ok"})

    async def handle_props(self, request: web.Request) -> web.Response:
        if self._loading():
            return web.json_response(_loading_body(), status=503)
        b = self.host.behaviour
        model = b.models[0]
        return web.json_response(
            {
                "default_generation_settings": {
                    "params": {"n_predict": -1, "temperature": 0.8, "top_k": 40, "top_p": 0.95},
                    "n_ctx": b.context_length,
                },
                "total_slots": b.slots,
                "model_alias": model,
                "model_path": f"/models/{model}.gguf",
                "endpoint_slots": b.slots_endpoint,
                "endpoint_metrics": True,
                "chat_template": "{{ messages }}",
                "modalities": {"vision": False, "audio": False},
                "build_info": "b5000-fake",
                "is_sleeping": False,
            }
        )

    async def handle_slots(self, request: web.Request) -> web.Response:
        if not self.host.behaviour.slots_endpoint:
            message = "This server does not support slots endpoint. Start it with `--slots`"
            return web.json_response(_llama_error(501, message, "not_supported_error"), status=501)
        if self._loading():
            return web.json_response(_loading_body(), status=503)
        b = self.host.behaviour
        busy = self.host.engine.gate.active
        slots = [
            {
                "id": index,
                "n_ctx": b.context_length,
                "speculative": False,
                "is_processing": index < busy,
            }
            for index in range(b.slots)
        ]
        return web.json_response(slots)

    async def handle_metrics(self, request: web.Request) -> web.Response:
        if self._loading():
            return web.json_response(_loading_body(), status=503)
        gate = self.host.engine.gate
        lines = [
            "# HELP llamacpp:requests_processing Number of requests processing.",
            "# TYPE llamacpp:requests_processing gauge",
            f"llamacpp:requests_processing {gate.active}",
            "# HELP llamacpp:requests_deferred Number of requests deferred.",
            "# TYPE llamacpp:requests_deferred gauge",
            f"llamacpp:requests_deferred {gate.queued}",
        ]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    async def handle_models(self, request: web.Request) -> web.Response:
        if self._loading():
            return web.json_response(_loading_body(), status=503)
        b = self.host.behaviour
        meta = {"vocab_type": 2, "n_vocab": 32000, "n_ctx_train": b.trained_context}
        entry = {
            "id": b.models[0],
            "object": "model",
            "created": int(time.time()),
            "owned_by": "llamacpp",
            "meta": meta,
        }
        return web.json_response({"object": "list", "data": [entry]})

    def parse_call(self, body: Mapping[str, Any]) -> Call:
        call = super().parse_call(body)
        grammar = body.get("grammar")
        if grammar is None or call.schema is not None:
            return call
        if not isinstance(grammar, str):
            raise Refused(Refusal.BAD_REQUEST, message='"grammar" must be a string')
        try:
            regex = grammar_regex(grammar)
        except GrammarError as exc:
            raise Refused(Refusal.BAD_REQUEST, message=f"Failed to parse grammar: {exc}") from exc
        schema = grammar_schema(grammar)
        if schema is None:
            message = (
                "the emulated llama.cpp server honours a grammar only when its first line is "
                "a '# JSON schema: {...}' comment"
            )
            raise Refused(Refusal.BAD_REQUEST, message=message)
        return dataclasses.replace(call, schema=dict(schema), grammar=regex)

    def resolve_model(self, call: Call) -> Resolved:
        if self._loading():
            raise Refused(Refusal.MODEL_NOT_LOADED, model=call.model)
        return Resolved(call.model or self.host.behaviour.models[0])

    def completion_payload(
        self, request: web.Request, call: Call, generation: Generation
    ) -> dict[str, Any]:
        payload = super().completion_payload(request, call, generation)
        payload["system_fingerprint"] = "b5000-fake"
        payload["timings"] = _timings(generation)
        return payload

    def final_chunk_extras(self, request: web.Request, generation: Generation) -> dict[str, Any]:
        return {"timings": _timings(generation)}

    def error_parts(self, refused: Refused) -> tuple[int, Any]:
        kind = refused.kind
        if kind is Refusal.MODEL_NOT_LOADED:
            return 503, _loading_body()
        if kind is Refusal.CONTEXT_EXCEEDED:
            message = (
                f"request ({refused.prompt_tokens} tokens) exceeds the available context size "
                f"({refused.window} tokens), try increasing it"
            )
            body = _llama_error(400, message, "exceed_context_size_error")
            body["error"].update(n_prompt_tokens=refused.prompt_tokens, n_ctx=refused.window)
            return 400, body
        if kind is Refusal.OVERLOADED:
            status = refused.status or 503
            return status, _llama_error(status, "the server is busy", "unavailable_error")
        if kind is Refusal.SERVER_ERROR:
            return 500, _llama_error(500, "fake server error (injected fault)", "server_error")
        if kind is Refusal.MODEL_NOT_FOUND:
            return 404, _llama_error(404, "model not found", "not_found_error")
        return 400, _llama_error(400, refused.message, "invalid_request_error")


class VLLMDialect(OpenAIDialect):
    """vLLM's OpenAI server: ``max_model_len`` in ``/v1/models``, strict model names.

    Refuses a prompt that fills the window, or one whose ``max_tokens`` does not fit,
    with its own two wordings (400 ``BadRequestError``). Adds ``GET /health`` (empty
    200) and ``GET /version``.
    """

    name = "vllm"

    def add_routes(self, app: web.Application) -> None:
        super().add_routes(app)
        app.router.add_get("/health", self.handle_health)
        app.router.add_get("/version", self.handle_version)

    async def handle_health(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def handle_version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": "0.8.5"})

    def models_payload(self) -> dict[str, Any]:
        b = self.host.behaviour
        created = int(time.time())
        data: list[dict[str, Any]] = [
            {
                "id": model,
                "object": "model",
                "created": created,
                "owned_by": "vllm",
                "root": model,
                "parent": None,
                "max_model_len": b.context_length,
                "permission": [],
            }
            for model in b.loaded_models()
        ]
        return {"object": "list", "data": data}

    def resolve_model(self, call: Call) -> Resolved:
        if call.model is None:
            return Resolved(self.host.behaviour.loaded_models()[0])
        return super().resolve_model(call)

    def completion_payload(
        self, request: web.Request, call: Call, generation: Generation
    ) -> dict[str, Any]:
        payload = super().completion_payload(request, call, generation)
        payload["choices"][0]["stop_reason"] = None
        if generation.cached_tokens is None:  # vLLM reports it only with a prefix cache
            payload["usage"]["prompt_tokens_details"] = None
        return payload

    def error_parts(self, refused: Refused) -> tuple[int, Any]:
        kind = refused.kind
        if kind in (Refusal.MODEL_NOT_FOUND, Refusal.MODEL_NOT_LOADED):
            message = f"The model `{refused.model}` does not exist."
            return 404, _vllm_error(404, message, "NotFoundError", "model")
        if kind is Refusal.CONTEXT_EXCEEDED:
            window, prompt, wanted = refused.window, refused.prompt_tokens, refused.max_tokens
            if prompt >= window or wanted is None:
                message = (
                    f"This model's maximum context length is {window} tokens. However, your "
                    f"request has {prompt} input tokens. Please reduce the length of the input "
                    "messages."
                )
            else:
                message = (
                    f"'max_tokens' or 'max_completion_tokens' is too large: {wanted}. This "
                    f"model's maximum context length is {window} tokens and your request has "
                    f"{prompt} input tokens ({wanted} > {window} - {prompt})."
                )
            return 400, _vllm_error(400, message, "BadRequestError", None)
        if kind is Refusal.OVERLOADED:
            status = refused.status or 503
            type_ = "RateLimitError" if status == 429 else "ServiceUnavailableError"
            return status, _vllm_error(status, "The server is overloaded.", type_, None)
        if kind is Refusal.SERVER_ERROR:
            return 500, _vllm_error(500, "fake engine error", "InternalServerError", None)
        return 400, _vllm_error(400, refused.message, "BadRequestError", None)


class ExoDialect(OpenAIDialect):
    """exo (1.x): ``/v1/models`` lists every model card, answers name the Hugging Face id.

    Only loaded models ("instances") answer; others get 404 ``No instance found for
    model ...``. No context check, no ``usage`` in non-streamed answers. Errors are
    ``{"error": {"message", "type": <HTTP reason>, "code"}}``; a malformed body gets
    FastAPI's 422 ``{"detail": [...]}``. exo listens on port 52415 by default.
    """

    name = "exo"
    context_policy = ContextPolicy.NONE
    honours_schema = False  # no constrained decoding: the field is ignored
    model_paths = ("/v1/models", "/models")

    def models_payload(self) -> dict[str, Any]:
        data = [
            {
                "id": model,
                "hugging_face_id": hugging_face_id(model),
                "name": model,
                "description": "",
                "tags": [],
                "storage_size_megabytes": 4096,
                "supports_tensor": True,
            }
            for model in self.host.behaviour.models
        ]
        return {"object": "list", "data": data}

    def resolve_model(self, call: Call) -> Resolved:
        b = self.host.behaviour
        model = call.model or ""
        if model not in b.loaded_models():
            raise Refused(Refusal.MODEL_NOT_LOADED, model=hugging_face_id(model))
        return Resolved(hugging_face_id(model))

    def completion_payload(
        self, request: web.Request, call: Call, generation: Generation
    ) -> dict[str, Any]:
        payload = super().completion_payload(request, call, generation)
        payload["id"] = str(uuid.uuid4())
        del payload["usage"]
        return payload

    def error_parts(self, refused: Refused) -> tuple[int, Any]:
        kind = refused.kind
        if kind in (Refusal.MODEL_NOT_FOUND, Refusal.MODEL_NOT_LOADED):
            return 404, _exo_error(404, f"No instance found for model {refused.model}")
        if kind is Refusal.OVERLOADED:
            status = refused.status or 503
            return status, _exo_error(status, "The server is busy, try again later")
        if kind is Refusal.SERVER_ERROR:
            return 500, _exo_error(500, "Generation failed")
        detail = [{"type": "value_error", "loc": ["body"], "msg": refused.message}]
        return 422, {"detail": detail}


def hugging_face_id(model: str) -> str:
    """exo's answers name models by their Hugging Face repository."""
    return model if "/" in model else f"mlx-community/{model}"


def _timings(generation: Generation) -> dict[str, float]:
    """llama.cpp's ``timings``: ``prompt_n`` counts only the tokens it read, ``cache_n``
    those it reused from the slot's cache."""
    prompt_ms = max(generation.prefill_s, 1e-6) * 1000
    predicted_ms = max(generation.decode_s, 1e-6) * 1000
    cached = generation.cached_tokens or 0
    return {
        "cache_n": cached,
        "prompt_n": generation.prompt_tokens - cached,
        "prompt_ms": prompt_ms,
        "prompt_per_second": (generation.prompt_tokens - cached) / prompt_ms * 1000,
        "predicted_n": generation.completion_tokens,
        "predicted_ms": predicted_ms,
        "predicted_per_token_ms": predicted_ms / max(generation.completion_tokens, 1),
        "predicted_per_second": generation.completion_tokens / predicted_ms * 1000,
    }


def _loading_body() -> dict[str, Any]:
    return _llama_error(503, "Loading model", "unavailable_error")


def _llama_error(code: int, message: str, type_: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "type": type_}}


def _vllm_error(code: int, message: str, type_: str, param: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _exo_error(code: int, message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": HTTPStatus(code).phrase, "code": code}}
