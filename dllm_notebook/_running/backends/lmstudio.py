"""LM Studio: its ``/api/v0`` REST API (model state, context length, ``stats``)."""

from __future__ import annotations

from typing import Any

from ..._errors import WorkerError
from ..._types import Completion, ModelInfo, ServerInfo
from .base import positive_int
from .openai import OpenAIBackend

__all__ = ["LMStudioBackend"]


class LMStudioBackend(OpenAIBackend):
    """``/api/v0/models`` says which models are loaded and their context windows;
    ``/api/v0/chat/completions`` adds ``stats`` (tokens per second, generation time).
    Older LM Studio versions without ``/api/v0`` fall back to the OpenAI routes."""

    type = "lm_studio"
    chat_path = "/api/v0/chat/completions"
    models_path = "/api/v0/models"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._legacy = False

    async def probe(self, *, detailed: bool = False) -> ServerInfo:
        if self._legacy:
            return await super().probe(detailed=detailed)
        try:
            data = await self.request_json("GET", self.models_path)
        except WorkerError as exc:
            if exc.status_code == 404:
                self._legacy = True
                self.chat_path, self.models_path = "/v1/chat/completions", "/v1/models"
                return await super().probe(detailed=detailed)
            raise
        entries = data.get("data") if isinstance(data, dict) else None
        if not isinstance(entries, list):
            raise self.malformed("/api/v0/models has no 'data' list")
        models = []
        for e in entries:
            if not isinstance(e, dict) or "id" not in e or e.get("type") == "embeddings":
                continue
            state = e.get("state")
            loaded = state == "loaded" if isinstance(state, str) else None
            ctx = positive_int(e.get("loaded_context_length")) if loaded else None
            models.append(
                ModelInfo(
                    id=str(e["id"]),
                    loaded=loaded,
                    context_length=ctx or positive_int(e.get("max_context_length")),
                )
            )
        return ServerInfo(models=tuple(models))

    def parse_completion(self, data: Any, model: str) -> Completion:
        base = super().parse_completion(data, model)
        stats = data.get("stats") if isinstance(data, dict) else None
        if not isinstance(stats, dict):
            return base
        tps = stats.get("tokens_per_second")
        gen = stats.get("generation_time")
        ttft = stats.get("time_to_first_token")
        return Completion(
            text=base.text,
            model=base.model,
            prompt_tokens=base.prompt_tokens,
            completion_tokens=base.completion_tokens,
            finish_reason=base.finish_reason or stats.get("stop_reason"),
            generation_seconds=float(gen) if isinstance(gen, (int, float)) else None,
            tokens_per_second=float(tps) if isinstance(tps, (int, float)) else None,
            prefill_seconds=float(ttft) if isinstance(ttft, (int, float)) else None,
            cached_tokens=base.cached_tokens,
        )
