"""llama.cpp's own server (``llama-server``, and the local worker): OpenAI chat plus its extras.

Generation is the OpenAI-compatible ``POST /v1/chat/completions`` (with llama.cpp's
``timings``). The probe reads what only this server says about itself:

- ``GET /health``: 200 when ready, **503 while the model loads** (the worker then shows as
  ``loading``, not down: :class:`~dllm_notebook.WorkerLoading`);
- ``GET /v1/models``: the model id (its ``--alias``, or the file name);
- ``GET /props``: the context window of one request (``default_generation_settings.n_ctx``)
  and ``total_slots``;
- ``timings`` in each answer: the server's own prompt and decode time (the scheduler's
  exact measure) and its decode speed;
- a typed prompt's schema goes as a compact ``grammar`` (:mod:`.grammar`) rather than
  ``response_format``, whose grammar lets a small model waste its tokens on whitespace;
- ``GET /slots`` (unless the server runs with ``--no-slots``): one entry per slot, so the
  number of requests it decodes at once. It becomes the worker's
  ``max_concurrent_requests`` when the config gives none.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import Any

import httpx

from ..._errors import WorkerError, WorkerLoading
from ..._types import ChatRequest, Completion, ServerInfo
from .base import positive_int
from .grammar import compact_grammar
from .openai import OpenAIBackend

__all__ = ["LlamaCppBackend"]


class LlamaCppBackend(OpenAIBackend):
    """``llama-server``: health from ``/health``, window and slots from ``/props`` and
    ``/slots``, answers from ``/v1/chat/completions``."""

    type = "llama_cpp"

    async def probe(self, *, detailed: bool = False) -> ServerInfo:
        await self._health()
        listed = await super().probe(detailed=False)
        if not detailed:
            return listed
        props = await self._optional_json("/props")
        settings = props.get("default_generation_settings") if isinstance(props, dict) else None
        n_ctx = positive_int(settings.get("n_ctx")) if isinstance(settings, dict) else None
        slots = await self._optional_json("/slots")
        count = len(slots) if isinstance(slots, list) and slots else None
        busy = (
            sum(1 for slot in slots if isinstance(slot, dict) and slot.get("is_processing"))
            if count
            else None
        )
        if count is None and isinstance(props, dict):
            count = positive_int(props.get("total_slots"))
        return ServerInfo(models=listed.models, context_length=n_ctx, slots=count, busy_slots=busy)

    def payload(self, request: ChatRequest, model: str) -> dict[str, Any]:
        body = super().payload(request, model)
        grammar = compact_grammar(request.schema) if request.schema is not None else None
        if grammar is not None:  # llama.cpp refuses a grammar beside a json_schema
            del body["response_format"]
            body["grammar"] = grammar
        return body

    def parse_completion(self, data: Any, model: str) -> Completion:
        """The OpenAI answer, with the decode speed from llama.cpp's ``timings``."""
        completion = super().parse_completion(data, model)
        timings = data.get("timings") if isinstance(data, dict) else None
        speed = timings.get("predicted_per_second") if isinstance(timings, dict) else None
        if isinstance(speed, (int, float)) and speed > 0:
            completion = replace(completion, tokens_per_second=float(speed))
        return completion

    async def _health(self) -> None:
        try:
            response = await self.client.get("/health", timeout=httpx.Timeout(10.0))
        except (httpx.TransportError, OSError) as exc:
            raise self.unreachable(exc, None, "cannot reach") from exc
        if response.status_code == 503:
            raise WorkerLoading(
                "loading the model (llama.cpp's /health answers 503); it takes work as soon "
                "as it is ready",
                worker=self.config.id,
                status_code=503,
            )
        if response.status_code >= 400:
            raise WorkerError(
                f"/health answered HTTP {response.status_code}: {response.text[:200]!r}; "
                "check the server's log",
                worker=self.config.id,
                status_code=response.status_code,
            )

    async def _optional_json(self, path: str) -> Any:
        """A llama.cpp extra endpoint, or None where it is turned off (501) or missing."""
        with contextlib.suppress(WorkerError):
            return await self.request_json("GET", path, timeout=10.0)
        return None
