"""LM Studio: the OpenAI routes plus its own REST API under ``/api/v0``.

``/api/v0/models`` tells loaded from not-loaded models and both context lengths;
``/api/v0/chat/completions`` adds ``stats``, ``model_info`` and ``runtime`` to the
answer. LM Studio writes most errors as a bare string, ``{"error": "..."}``; an unknown
model gets the OpenAI-style object with ``code: "model_not_found"`` (status 400).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ._engine import Call, ContextPolicy, Generation, Refusal, Refused, Resolved
from ._openai import OpenAIDialect

__all__ = ["LMStudioDialect"]

NO_MODELS_LOADED = (
    "No models loaded. Please load a model in the developer page or use the 'lms load' command."
)


class LMStudioDialect(OpenAIDialect):
    """LM Studio's server (``lm_studio``).

    A known model that is not loaded is loaded on first use when ``auto_load`` (LM
    Studio's just-in-time loading) is on; otherwise the request is refused. A prompt of
    the loaded context length or more is refused in LM Studio's words.
    """

    name = "lm_studio"
    context_policy = ContextPolicy.REJECT_PROMPT
    chat_paths = ("/v1/chat/completions", "/api/v0/chat/completions")

    def add_routes(self, app: web.Application) -> None:
        super().add_routes(app)
        app.router.add_get("/api/v0/models", self.handle_v0_models)
        app.router.add_get("/api/v0/models/{model:.+}", self.handle_v0_model)

    def models_payload(self) -> dict[str, Any]:
        b = self.host.behaviour
        listed = b.models if b.auto_load else b.loaded_models()
        data = [{"id": m, "object": "model", "owned_by": "organization_owner"} for m in listed]
        return {"data": data, "object": "list"}

    async def handle_v0_models(self, request: web.Request) -> web.Response:
        models = [self._v0_entry(model) for model in self.host.behaviour.models]
        return web.json_response({"object": "list", "data": models})

    async def handle_v0_model(self, request: web.Request) -> web.Response:
        model = request.match_info["model"]
        if model not in self.host.behaviour.models:
            error = {
                "message": f'Model "{model}" not found. Please specify a valid model.',
                "type": "invalid_request_error",
                "param": "model",
                "code": "model_not_found",
            }
            return web.json_response({"error": error}, status=404)
        return web.json_response(self._v0_entry(model))

    def _v0_entry(self, model: str) -> dict[str, Any]:
        b = self.host.behaviour
        entry: dict[str, Any] = {
            "id": model,
            "object": "model",
            "type": "llm",
            "publisher": "lmstudio-community",
            "arch": "llama",
            "compatibility_type": "gguf",
            "quantization": "Q4_K_M",
            "state": "loaded" if b.is_loaded(model) else "not-loaded",
            "max_context_length": b.trained_context,
        }
        if b.is_loaded(model):
            entry["loaded_context_length"] = b.context_length
        return entry

    def resolve_model(self, call: Call) -> Resolved:
        b = self.host.behaviour
        loaded = b.loaded_models()
        if call.model is None:
            if not loaded:
                raise Refused(Refusal.MODEL_NOT_LOADED)
            return Resolved(loaded[0])
        if call.model not in b.models:
            raise Refused(Refusal.MODEL_NOT_FOUND, model=call.model)
        if call.model in loaded:
            return Resolved(call.model)
        if not b.auto_load:
            raise Refused(Refusal.MODEL_NOT_LOADED, model=call.model)
        b.loaded = (*loaded, call.model)
        return Resolved(call.model, load_seconds=b.load_seconds)

    def completion_payload(
        self, request: web.Request, call: Call, generation: Generation
    ) -> dict[str, Any]:
        payload = super().completion_payload(request, call, generation)
        # LM Studio shows a cache hit only as a shorter time_to_first_token in its stats
        payload["usage"].pop("prompt_tokens_details", None)
        if request.path.startswith("/api/v0/"):
            payload.update(self._v0_extras(generation))
        return payload

    def final_chunk_extras(self, request: web.Request, generation: Generation) -> dict[str, Any]:
        return self._v0_extras(generation) if request.path.startswith("/api/v0/") else {}

    def _v0_extras(self, generation: Generation) -> dict[str, Any]:
        stop = "maxPredictedTokensReached" if generation.finish_reason == "length" else "eosFound"
        return {
            "stats": {
                "tokens_per_second": generation.tokens_per_second,
                "time_to_first_token": round(generation.load_s + generation.prefill_s, 3),
                "generation_time": round(generation.decode_s, 3),
                "stop_reason": stop,
            },
            "model_info": {
                "arch": "llama",
                "quant": "Q4_K_M",
                "format": "gguf",
                "context_length": self.host.behaviour.context_length,
            },
            "runtime": {
                "name": "llama.cpp-mac-arm64-apple-metal-advsimd",
                "version": "1.3.0",
                "supported_formats": ["gguf"],
            },
        }

    def error_parts(self, refused: Refused) -> tuple[int, Any]:
        kind = refused.kind
        b = self.host.behaviour
        if kind is Refusal.MODEL_NOT_FOUND:
            return 400, _invalid_identifier(refused.model, "downloaded", b.models)
        if kind is Refusal.MODEL_NOT_LOADED:
            loaded = b.loaded_models()
            if not loaded:
                return 400, {"error": NO_MODELS_LOADED}
            return 400, _invalid_identifier(refused.model, "loaded", loaded)
        if kind is Refusal.CONTEXT_EXCEEDED:
            message = (
                "The number of tokens to keep from the initial prompt is greater than the "
                f"context length (n_keep: {refused.prompt_tokens}>= n_ctx: {refused.window}). "
                "Try to load the model with a larger context length, or provide a shorter input."
            )
            return 400, {"error": message}
        if kind is Refusal.OVERLOADED:
            return refused.status or 503, {"error": "The server is busy. Try again later."}
        if kind is Refusal.SERVER_ERROR:
            message = "The model has crashed without additional information. (Exit code: null)"
            return 500, {"error": message}
        return 400, {"error": refused.message}


def _invalid_identifier(model: str | None, kind: str, models: tuple[str, ...]) -> Any:
    message = (
        f'Invalid model identifier "{model}". Please specify a valid {kind} model '
        f"(e.g., {', '.join(models[:3])})."
    )
    error = {
        "message": message,
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_not_found",
    }
    return {"error": error}
