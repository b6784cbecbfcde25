"""Structured answers: what a fake server writes when it is asked for a JSON schema.

A server asked for a schema (``response_format`` json_schema, Ollama's ``format``)
answers with an instance of it, as constrained decoding would. A prompt that carries a
schema in its text (a client's fallback for servers without constrained decoding) is
answered the way a capable model does: the same instance, inside a Markdown ```json fence.

Instances are deterministic, derived from the user message like the echo answers:

* an ``integer`` is 1 to 1000, a ``number`` has two decimals, a ``boolean`` is a coin,
  a string with ``enum`` is one of its values, all chosen from the SHA-256 of the message;
* another string is the echo prefix (:func:`expected_echo`);
* ``quotes`` (an array of strings) holds sentences copied verbatim from the longest
  paragraphs of the message, i.e. from the paper in a paper prompt, so a test can verify
  them; other arrays of strings hold short tokens (``item-<hex4>``).

``Behaviour.schema_answers`` spoils the answer on purpose: ``invalid_json`` (cut off
mid-object, after a sentence), ``out_of_schema`` (the answer has the wrong type or is
not one of the choices), ``invented_quotes`` (well-formed, but the quotes are nowhere in
the message).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ._text import expected_echo

__all__ = [
    "INVENTED_QUOTES",
    "SCHEMA_ANSWERS",
    "paper_quotes",
    "schema_answer",
    "schema_in_text",
    "structured_text",
]

SCHEMA_ANSWERS = ("valid", "invalid_json", "out_of_schema", "invented_quotes")
INVENTED_QUOTES = (
    "The intervention reduced mortality by 43 percent across all twelve participating hospitals.",
    "Participants who received the placebo reported markedly higher satisfaction scores.",
    "Our results were replicated independently by three laboratories on two continents.",
    "The effect disappeared entirely once seasonal rainfall was controlled for.",
    "No adverse events were recorded during the eighteen-month follow-up period.",
)
"""Plausible sentences that no test paper contains."""
_SENTENCE = re.compile(r"[^.!?]*[.!?]")
_MIN_QUOTE, _MAX_QUOTE = 40, 240


def structured_text(
    schema: Mapping[str, Any] | None, prompt: str, mode: str, *, compact: bool = False
) -> str | None:
    """The whole answer to ``prompt``: an instance of ``schema`` (constrained decoding), or
    of a schema written in the prompt (fenced), or ``None`` for a free-text answer.
    ``compact``: no whitespace between JSON tokens, as a compact grammar forces."""
    if schema is not None:
        return schema_answer(schema, prompt, mode, compact=compact)
    found = schema_in_text(prompt)
    if found is None:
        return None
    shown, start = found
    before = prompt[: max(prompt.rfind("\n\n", 0, start), 0)]  # quotes come from the paper
    return "```json\n" + schema_answer(shown, prompt, mode, quote_from=before) + "\n```"


def schema_in_text(text: str) -> tuple[dict[str, Any], int] | None:
    """The last JSON schema of an object written in ``text``, and where it starts."""
    decoder = json.JSONDecoder()
    found: tuple[dict[str, Any], int] | None = None
    start = text.find("{")
    while start != -1:
        try:
            data, end = decoder.raw_decode(text, start)
        except ValueError:
            start = text.find("{", start + 1)
            continue
        if isinstance(data, dict) and data.get("type") == "object" and "properties" in data:
            found = (data, start)
        start = text.find("{", end)
    return found


def schema_answer(
    schema: Mapping[str, Any],
    prompt: str,
    mode: str = "valid",
    *,
    quote_from: str | None = None,
    compact: bool = False,
) -> str:
    """The JSON text a fake model writes for ``schema`` and the user message ``prompt``;
    quotes are copied from ``quote_from`` (default: the whole message)."""
    seed = hashlib.sha256(prompt.encode("utf-8")).digest()
    source = prompt if quote_from is None else quote_from
    value = _instance(schema, _Source(prompt, source), seed, "")
    if mode == "out_of_schema" and isinstance(value, dict) and "answer" in value:
        value["answer"] = _wrong(schema.get("properties", {}).get("answer", {}), value["answer"])
    if mode == "invented_quotes" and isinstance(value, dict) and "quotes" in value:
        value["quotes"] = [INVENTED_QUOTES[(seed[5] + i) % len(INVENTED_QUOTES)] for i in range(2)]
    separators = (",", ":") if compact else None
    text = json.dumps(value, ensure_ascii=False, separators=separators)
    if mode == "invalid_json":
        return "Sure, here is the answer: " + text[: max(len(text) // 2, 2)]
    return text


@dataclass(frozen=True)
class _Source:
    prompt: str
    """The whole user message (echoed by string answers)."""
    paper: str
    """The part quotes are copied from."""


def _instance(schema: Mapping[str, Any], source: _Source, seed: bytes, name: str) -> Any:
    kind = schema.get("type")
    if schema.get("enum"):
        choices = list(schema["enum"])
        return choices[seed[0] % len(choices)]
    if kind == "object":
        properties = schema.get("properties", {})
        return {key: _instance(sub, source, seed, key) for key, sub in properties.items()}
    if kind == "integer":
        return 1 + int.from_bytes(seed[1:3], "big") % 1000
    if kind == "number":
        return round(int.from_bytes(seed[3:5], "big") / 100, 2)
    if kind == "boolean":
        return seed[6] % 2 == 0
    if kind == "array":
        limit = int(schema.get("maxItems", 3))
        if name == "quotes":
            return paper_quotes(source.paper, min(limit, 3))
        digest = seed.hex()
        return [f"item-{digest[i * 4 : i * 4 + 4]}" for i in range(min(limit, 2))]
    return expected_echo(source.prompt)


def paper_quotes(prompt: str, count: int) -> list[str]:
    """Up to ``count`` sentences copied verbatim from the longest paragraphs of ``prompt``."""
    paragraphs = sorted(re.split(r"\n\s*\n", prompt), key=len, reverse=True)
    quotes: list[str] = []
    for paragraph in paragraphs:
        for match in _SENTENCE.finditer(paragraph):
            sentence = match.group().strip()
            if _MIN_QUOTE <= len(sentence) <= _MAX_QUOTE and sentence not in quotes:
                quotes.append(sentence)
                if len(quotes) == count:
                    return quotes
    return quotes


def _wrong(schema: Mapping[str, Any], value: Any) -> Any:
    """A value that breaks ``schema`` the way a model does when it ignores it."""
    if "enum" in schema:
        return f"something other than {schema['enum'][0]}"
    kind = schema.get("type")
    if kind in ("integer", "number"):
        return f"about {value}"
    if kind == "boolean":
        return "yes" if value else "no"
    if kind == "array":
        return ", ".join(str(v) for v in value)
    return 42
