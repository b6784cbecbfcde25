"""Typed answers: the JSON schema a prompt asks for, and the check of what came back.

A prompt declares the type of its answer (``text``, ``integer``, ``number``, ``boolean``,
``category`` with ``choices``, or ``list``) and whether it wants ``evidence`` (up to three
quotes from the paper). Such a prompt is sent with the schema of one answer object::

    >>> answer_schema("integer", evidence=True)["properties"]["answer"]
    {'type': 'integer'}

The model's raw text is parsed and validated with ``jsonschema``, then turned into the
Python value. The usual wrappers (a Markdown ```json fence, a sentence before the object)
are tolerated; a wrong value is never coerced into a right one ("about 120" is not an
integer, a category outside the choices is not a category)::

    >>> parse_answer('```json\\n{"answer": 120}\\n```', answer_schema("integer")).value
    120
    >>> parse_answer('{"answer": "about 120"}', answer_schema("integer")).ok
    False
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jsonschema.protocols import Validator

__all__ = [
    "ANSWER_TYPES",
    "MAX_QUOTES",
    "AnswerSpec",
    "ParsedAnswer",
    "answer_problems",
    "answer_schema",
    "answer_validator",
    "parse_answer",
]

ANSWER_TYPES: tuple[str, ...] = ("text", "integer", "number", "boolean", "category", "list")
"""What a prompt may declare as ``type``; ``text`` is the default."""
MAX_QUOTES = 3
"""At most this many supporting quotes are asked for."""

_JSON_TYPES = {
    "text": {"type": "string"},
    "integer": {"type": "integer"},
    "number": {"type": "number"},
    "boolean": {"type": "boolean"},
    "list": {"type": "array", "items": {"type": "string"}},
}
_QUOTES = {
    "type": "array",
    "items": {"type": "string"},
    "maxItems": MAX_QUOTES,
}


def answer_problems(type_: object, choices: object, evidence: object) -> list[tuple[str, str]]:
    """What is wrong with a declared answer, as ``(key, message)`` pairs (empty if fine)."""
    problems: list[tuple[str, str]] = []
    if type_ not in ANSWER_TYPES:
        problems.append(("type", f"'type' = {type_!r} is not one of {', '.join(ANSWER_TYPES)}"))
    if type_ == "category":
        if choices is None:
            problems.append(("choices", "a category needs 'choices', the allowed answers"))
        elif (
            isinstance(choices, str)
            or not isinstance(choices, Sequence)
            or not choices
            or not all(isinstance(c, str) and c.strip() for c in choices)
        ):
            problems.append(("choices", "'choices' must be a non-empty list of non-empty strings"))
        elif len(set(choices)) != len(choices):
            problems.append(("choices", "'choices' lists the same answer twice"))
    elif choices is not None and type_ in ANSWER_TYPES:
        problems.append(("choices", f"'choices' is only for type = \"category\", not {type_!r}"))
    if not isinstance(evidence, bool):
        problems.append(("evidence", "'evidence' must be true or false"))
    return problems


def answer_schema(
    type_: str = "text", choices: Sequence[str] | None = None, *, evidence: bool = False
) -> dict[str, Any] | None:
    """The JSON schema of one answer object, or ``None`` for free text without evidence.

    ``{"answer": <typed value>}``, plus ``"quotes"`` (up to three strings) with evidence.
    Every property is required and no other is allowed, as OpenAI's ``strict`` mode wants.
    """
    if type_ == "text" and not evidence:
        return None
    if type_ == "category":
        answer: dict[str, Any] = {"type": "string", "enum": list(choices or ())}
    else:
        answer = json.loads(json.dumps(_JSON_TYPES[type_]))  # a fresh copy
    properties: dict[str, Any] = {"answer": answer}
    if evidence:
        properties["quotes"] = dict(_QUOTES)
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


@dataclass(frozen=True)
class ParsedAnswer:
    """A model's raw answer, parsed against a prompt's schema.

    ``ok`` is False when the answer is not valid JSON or breaks the schema; ``error`` then
    says why, ``value`` is ``None`` and ``raw`` keeps the text exactly as it came.
    """

    ok: bool
    value: Any
    quotes: tuple[str, ...]
    raw: str
    error: str | None = None

    @property
    def status(self) -> str:
        """``"ok"`` or ``"invalid"``."""
        return "ok" if self.ok else "invalid"


def parse_answer(raw: str, schema: Mapping[str, Any] | None) -> ParsedAnswer:
    """Parse and validate ``raw`` against ``schema`` (from :func:`answer_schema`).

    With no schema (a free-text prompt) the stripped text is the value. Otherwise the JSON
    object is found (inside a ```json fence or after leading text), validated, and its
    ``answer`` converted: ``int``, ``float``, ``bool``, ``str`` or ``list[str]``.
    """
    if schema is None:
        return ParsedAnswer(True, raw.strip(), (), raw)
    data = _find_object(raw)
    if data is None:
        return _invalid(raw, "the answer is not a JSON object")
    errors = sorted(_validator(_key(schema)).iter_errors(data), key=lambda e: list(e.path))
    if errors:
        error = errors[0]
        where = "/".join(str(p) for p in error.absolute_path) or "the object"
        return _invalid(raw, f"{where}: {error.message}")
    value = _convert(data.get("answer"), schema.get("properties", {}).get("answer", {}))
    if isinstance(value, float) and not math.isfinite(value):
        return _invalid(raw, "answer: not a finite number")
    quotes = tuple(data.get("quotes", ()))
    return ParsedAnswer(True, value, quotes, raw)


def answer_validator(schema: Mapping[str, Any] | None) -> Callable[[str], str | None]:
    """A check for the dispatcher: the text's problem against ``schema``, or ``None``.

    >>> check = answer_validator(answer_schema("boolean"))
    >>> check('{"answer": true}') is None, check("yes")
    (True, 'the answer is not a JSON object')
    """

    def check(text: str) -> str | None:
        return parse_answer(text, schema).error

    return check


@dataclass(frozen=True)
class AnswerSpec:
    """What a prompt declares about its answer; see :class:`~.templates.Prompt`."""

    type: str = "text"
    choices: tuple[str, ...] | None = None
    evidence: bool = False

    @property
    def schema(self) -> dict[str, Any] | None:
        return answer_schema(self.type, self.choices, evidence=self.evidence)

    def parse(self, raw: str) -> ParsedAnswer:
        return parse_answer(raw, self.schema)


def _invalid(raw: str, error: str) -> ParsedAnswer:
    return ParsedAnswer(False, None, (), raw, error)


def _find_object(raw: str) -> dict[str, Any] | None:
    """The first JSON object in ``raw``: the whole text, or one after a fence or a preamble."""
    decoder = json.JSONDecoder()
    start = raw.find("{")
    while start != -1:
        try:
            data, _ = decoder.raw_decode(raw, start)
        except ValueError:
            start = raw.find("{", start + 1)
            continue
        if isinstance(data, dict):
            return data
        start = raw.find("{", start + 1)
    return None


def _convert(value: Any, schema: Mapping[str, Any]) -> Any:
    kind = schema.get("type")
    if kind == "integer":
        return int(value)  # 120.0 is an integer to JSON Schema; it becomes 120
    if kind == "number":
        return float(value)
    if kind == "array":
        return list(value)
    return value


def _key(schema: Mapping[str, Any]) -> str:
    return json.dumps(schema, sort_keys=True)


@functools.lru_cache(maxsize=256)
def _validator(key: str) -> Validator:
    from jsonschema import Draft202012Validator

    schema = json.loads(key)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)
