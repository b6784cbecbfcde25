"""A compact GBNF grammar for an answer schema, for llama.cpp's own server.

Sent a ``response_format`` json_schema, llama.cpp builds its own grammar, and that grammar
allows up to two newlines and twenty spaces or tabs between any two JSON tokens and after
the closing brace. A small model then spends much of its token budget on whitespace, and
is cut off before the object ends (the cell comes back ``invalid``). The grammar written
here allows no whitespace outside strings, bounds an integer to 16 digits, and keeps the
properties in the schema's order, so every token the model writes is part of the answer.

It covers the schemas the tool asks with (:func:`dllm_notebook._prompts.schemas.answer_schema`)
and any schema built from the same parts: an object whose properties are all required
and nothing else allowed; strings (with ``enum``, ``maxLength``), integers, numbers,
booleans, and arrays of those (with ``maxItems``). For anything else
:func:`compact_grammar` returns ``None`` and the caller sends the schema as it is.

The first line is a comment holding the schema itself, so the server's log (and the
emulated server in :mod:`dllm_notebook.testing`) can tell what the grammar stands for.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = ["SCHEMA_COMMENT", "compact_grammar"]

SCHEMA_COMMENT = "# JSON schema: "
"""How the grammar's first line starts; the schema follows as one line of JSON."""

_CHAR = r'char ::= [^"\\\x7F\x00-\x1F] | "\\" ( ["\\/bfnrt] | "u" [0-9a-fA-F]{4} )'
_INTEGER = r'integer ::= "-"? ( "0" | [1-9] [0-9]{0,15} )'
_NUMBER = r'number ::= integer ( "." [0-9]{1,15} )? ( [eE] [-+]? [0-9]{1,3} )?'


class _Unsupported(Exception):
    """The schema uses something this grammar does not cover."""


def compact_grammar(schema: Mapping[str, Any]) -> str | None:
    """GBNF for JSON following ``schema`` with no whitespace between tokens, or ``None``
    when the schema is outside what this grammar covers."""
    rules: dict[str, str] = {}
    try:
        root = _value(schema, rules)
    except _Unsupported:
        return None
    lines = [SCHEMA_COMMENT + json.dumps(schema, ensure_ascii=False), f"root ::= {root}"]
    lines += [rule for name, rule in sorted(rules.items()) if name != "char"]
    if "char" in rules:
        lines.append(rules["char"])
    return "\n".join(lines) + "\n"


def _value(schema: Mapping[str, Any], rules: dict[str, str]) -> str:
    """The GBNF expression for one value of ``schema``; shared rules go into ``rules``."""
    if not isinstance(schema, Mapping):
        raise _Unsupported
    if "enum" in schema:
        choices = schema["enum"]
        if not choices or not all(isinstance(c, str) for c in choices):
            raise _Unsupported
        literals = (_literal(json.dumps(c, ensure_ascii=False)) for c in choices)
        return "( " + " | ".join(literals) + " )"
    kind = schema.get("type")
    if kind == "object":
        return _object(schema, rules)
    if kind == "array":
        return _array(schema, rules)
    if kind == "string":
        rules["char"] = _CHAR
        bound = schema.get("maxLength")
        count = f"{{0,{bound}}}" if isinstance(bound, int) and bound >= 0 else "*"
        return f'"\\"" char{count} "\\""'
    if kind == "integer":
        rules["integer"] = _INTEGER
        return "integer"
    if kind == "number":
        rules["integer"] = _INTEGER
        rules["number"] = _NUMBER
        return "number"
    if kind == "boolean":
        return '( "true" | "false" )'
    raise _Unsupported


def _object(schema: Mapping[str, Any], rules: dict[str, str]) -> str:
    properties = schema.get("properties")
    if not isinstance(properties, Mapping) or not properties:
        raise _Unsupported
    if schema.get("additionalProperties") is not False:
        raise _Unsupported
    if set(schema.get("required") or ()) != set(properties):
        raise _Unsupported
    parts = []
    for i, (name, sub) in enumerate(properties.items()):
        key = ("," if i else "") + json.dumps(name, ensure_ascii=False) + ":"
        parts.append(f"{_literal(key)} {_value(sub, rules)}")
    return '"{" ' + " ".join(parts) + ' "}"'


def _array(schema: Mapping[str, Any], rules: dict[str, str]) -> str:
    if schema.get("minItems", 0) not in (0, None):
        raise _Unsupported
    item = _value(schema.get("items", {}), rules)
    bound = schema.get("maxItems")
    if isinstance(bound, int) and bound <= 0:
        return '"[]"'
    more = f"{{0,{bound - 1}}}" if isinstance(bound, int) else "*"
    return f'"[" ( {item} ( "," {item} ){more} )? "]"'


def _literal(text: str) -> str:
    """``text`` as a GBNF string literal."""
    escaped = (
        text.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("\t", "\\t")
    )
    return f'"{escaped}"'
