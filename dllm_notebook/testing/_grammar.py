"""GBNF grammars as llama.cpp's server reads them, for the emulated ``llama_cpp`` dialect.

A request with a ``grammar`` is constrained by it. The emulated server parses the grammar
(a broken one is refused, as llama.cpp refuses it) and turns it into a regular expression,
so it can check that what it writes is a sentence of the grammar. Only grammars without
recursion are supported, which is every grammar for a flat JSON answer.

What to write is read from the grammar's first line, ``# JSON schema: {...}``, the comment
dllm_notebook puts there: the answer is an instance of that schema, written compactly.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["GrammarError", "grammar_regex", "grammar_schema"]

_COMMENT = "# JSON schema: "
_TOKEN = re.compile(
    r"""\s*(?:
      (?P<string>"(?:[^"\\]|\\.)*")
    | (?P<cls>\[(?:[^\]\\]|\\.)*\])
    | (?P<repeat>\{\d+(?:,\d*)?\})
    | (?P<name>[A-Za-z][A-Za-z0-9-]*)
    | (?P<op>[()|?*+])
    )""",
    re.VERBOSE,
)
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"', "[": "[", "]": "]"}


class GrammarError(ValueError):
    """The grammar cannot be parsed (llama.cpp answers 400 to it)."""


def grammar_schema(grammar: str) -> Mapping[str, Any] | None:
    """The JSON schema in the grammar's first-line comment, if it has one."""
    first = grammar.lstrip().partition("\n")[0]
    if not first.startswith(_COMMENT):
        return None
    try:
        schema = json.loads(first[len(_COMMENT) :])
    except ValueError:
        return None
    return schema if isinstance(schema, dict) else None


def grammar_regex(grammar: str) -> re.Pattern[str]:
    """A regular expression matching exactly the sentences of ``grammar`` (from ``root``)."""
    rules: dict[str, str] = {}
    current: str | None = None
    for raw in grammar.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, body = line.partition("::=")
        if sep:
            current = name.strip()
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9-]*", current):
                raise GrammarError(f"bad rule name {current!r}")
            rules[current] = body
        elif current is None:
            raise GrammarError(f"expected a rule, found {line!r}")
        else:
            rules[current] += " " + line
    if "root" not in rules:
        raise GrammarError("the grammar has no 'root' rule")
    return re.compile(_Compiler(rules).rule("root", ()), re.DOTALL)


class _Compiler:
    def __init__(self, rules: Mapping[str, str]) -> None:
        self.rules = rules

    def rule(self, name: str, stack: tuple[str, ...]) -> str:
        if name not in self.rules:
            raise GrammarError(f"undefined rule {name!r}")
        if name in stack:
            raise GrammarError(f"rule {name!r} is recursive; only flat grammars are emulated")
        tokens = self.tokens(self.rules[name])
        regex, rest = self.alternatives(tokens, (*stack, name))
        if rest:
            raise GrammarError(f"unexpected {rest[0][1]!r} in rule {name!r}")
        return regex

    @staticmethod
    def tokens(body: str) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        position = 0
        while body[position:].strip():
            match = _TOKEN.match(body, position)
            if match is None:
                raise GrammarError(f"cannot parse {body[position:].strip()[:20]!r}")
            kind = match.lastgroup or ""
            found.append((kind, match.group(kind)))
            position = match.end()
        return found

    def alternatives(
        self, tokens: list[tuple[str, str]], stack: tuple[str, ...]
    ) -> tuple[str, list[tuple[str, str]]]:
        options = []
        while True:
            sequence, tokens = self.sequence(tokens, stack)
            options.append(sequence)
            if tokens and tokens[0] == ("op", "|"):
                tokens = tokens[1:]
                continue
            return "(?:" + "|".join(options) + ")", tokens

    def sequence(
        self, tokens: list[tuple[str, str]], stack: tuple[str, ...]
    ) -> tuple[str, list[tuple[str, str]]]:
        parts: list[str] = []
        while tokens and tokens[0] not in (("op", "|"), ("op", ")")):
            kind, text = tokens[0]
            tokens = tokens[1:]
            if kind == "string":
                part = re.escape(_unescape(text[1:-1]))
            elif kind == "cls":
                part = text
            elif kind == "name":
                part = "(?:" + self.rule(text, stack) + ")"
            elif (kind, text) == ("op", "("):
                part, tokens = self.alternatives(tokens, stack)
                if not tokens or tokens[0] != ("op", ")"):
                    raise GrammarError("unclosed '('")
                tokens = tokens[1:]
            else:
                raise GrammarError(f"unexpected {text!r}")
            while tokens and (tokens[0][0] == "repeat" or tokens[0][1] in ("?", "*", "+")):
                part = f"(?:{part}){tokens[0][1]}"
                tokens = tokens[1:]
            parts.append(part)
        return "".join(parts), tokens


def _unescape(text: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text):
            code = text[i + 1]
            if code == "x":
                out.append(chr(int(text[i + 2 : i + 4], 16)))
                i += 4
                continue
            out.append(_ESCAPES.get(code, code))
            i += 2
            continue
        out.append(char)
        i += 1
    return "".join(out)
