"""Structure on the wire: a request's JSON schema in its server's form, or in the prompt.

OpenAI-compatible servers (LM Studio, llama.cpp, vLLM) take ``response_format`` with a
``json_schema`` (:func:`response_format`); Ollama takes the schema itself as ``format``.
A server that cannot constrain its output (exo), or one that refused the field once
(:func:`rejects_schema`), gets the schema described at the end of the user message
instead (:func:`schema_in_prompt`); the caller validates the answer either way.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from typing import Any

from ..._errors import BadResponse, RequestRejected, WorkerError
from ..._reading.chunking import estimate_tokens
from ..._types import ChatRequest

__all__ = ["SCHEMA_NAME", "rejects_schema", "response_format", "schema_in_prompt"]

SCHEMA_NAME = "answer"
"""The ``json_schema.name`` sent to OpenAI-compatible servers."""
_REJECTED = re.compile(r"response_format|json_schema|\bformat\b|grammar", re.IGNORECASE)
_INSTRUCTION = "\n\nReply with one JSON object and nothing else. It must follow this JSON schema:\n"


def response_format(schema: Mapping[str, Any]) -> dict[str, Any]:
    """OpenAI's structured-output field, as LM Studio, llama.cpp and vLLM accept it."""
    return {
        "type": "json_schema",
        "json_schema": {"name": SCHEMA_NAME, "strict": True, "schema": dict(schema)},
    }


def schema_in_prompt(request: ChatRequest) -> ChatRequest:
    """The request with its schema described at the end of the prompt, and no schema field."""
    if request.schema is None:
        return request
    instruction = _INSTRUCTION + json.dumps(request.schema, ensure_ascii=False)
    estimate = request.prompt_tokens_estimate
    if estimate is not None:
        estimate += estimate_tokens(instruction)
    return dataclasses.replace(
        request, prompt=request.prompt + instruction, schema=None, prompt_tokens_estimate=estimate
    )


def rejects_schema(error: WorkerError) -> bool:
    """Whether ``error`` is a server refusing the schema field itself (a server without
    structured output: llama.cpp builds that only know ``json_object``, Ollama before 0.5)."""
    return (
        isinstance(error, (RequestRejected, BadResponse))
        and error.status_code in (400, 422, 500)
        and _REJECTED.search(error.detail) is not None
    )
