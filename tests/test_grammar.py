"""The compact GBNF grammar sent to llama.cpp servers for a typed answer."""

from __future__ import annotations

import json

import pytest

from dllm_notebook._prompts.schemas import ANSWER_TYPES, answer_schema
from dllm_notebook._running.backends.grammar import SCHEMA_COMMENT, compact_grammar
from dllm_notebook.testing._grammar import GrammarError, grammar_regex, grammar_schema

EXAMPLES = {
    "text": "a cohort of 120 adults",
    "integer": -120,
    "number": 0.25,
    "boolean": True,
    "category": 'the "other" design',
    "list": ["ImageNet", "C4"],
}


@pytest.mark.parametrize("type_", ANSWER_TYPES)
@pytest.mark.parametrize("evidence", [False, True])
def test_every_answer_type_gets_a_grammar_that_takes_only_compact_json(
    type_: str, evidence: bool
) -> None:
    choices = ["cohort", 'the "other" design'] if type_ == "category" else None
    schema = answer_schema(type_, choices, evidence=evidence)
    if schema is None:  # free text without evidence is not structured at all
        assert type_ == "text" and not evidence
        return
    grammar = compact_grammar(schema)
    assert grammar is not None and grammar.startswith(SCHEMA_COMMENT)
    assert grammar_schema(grammar) == schema
    answer: dict[str, object] = {"answer": EXAMPLES[type_]}
    if evidence:
        answer["quotes"] = ["We enrolled 120 adults.", 'a "quoted" word\\n']
    regex = grammar_regex(grammar)
    compact = json.dumps(answer, ensure_ascii=False, separators=(",", ":"))
    assert regex.fullmatch(compact), compact
    assert not regex.fullmatch(json.dumps(answer)), "whitespace between tokens is refused"
    assert not regex.fullmatch(compact + "\n"), "nothing after the closing brace"


def test_the_grammar_refuses_what_the_schema_refuses() -> None:
    regex = grammar_regex(compact_grammar(answer_schema("integer", evidence=True)) or "")
    assert regex.fullmatch('{"answer":42,"quotes":[]}')
    for wrong in (
        '{"answer":4.2,"quotes":[]}',  # not an integer
        '{"answer":042,"quotes":[]}',  # not JSON
        '{"answer":12345678901234567,"quotes":[]}',  # more than 16 digits
        '{"answer":42,"quotes":["a","b","c","d"]}',  # more than three quotes
        '{"quotes":[],"answer":42}',  # properties in the schema's order
        '{"answer":42}',  # every property is required
    ):
        assert not regex.fullmatch(wrong), wrong
    category = grammar_regex(compact_grammar(answer_schema("category", ["a", "b"])) or "")
    assert category.fullmatch('{"answer":"b"}') and not category.fullmatch('{"answer":"c"}')


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
        {
            "type": "object",
            "properties": {"a": {"type": "string"}, "b": {"type": "integer"}},
            "required": ["a"],
            "additionalProperties": False,
        },
        {
            "type": "object",
            "properties": {"a": {"anyOf": [{"type": "string"}, {"type": "null"}]}},
            "required": ["a"],
            "additionalProperties": False,
        },
    ],
    ids=["extra-properties-allowed", "optional-property", "anyOf"],
)
def test_a_schema_outside_the_compact_form_gets_no_grammar(schema: dict[str, object]) -> None:
    assert compact_grammar(schema) is None


def test_the_emulated_server_reads_grammars_strictly() -> None:
    for broken in ('root ::= ( "a"', 'item ::= "a"', 'root ::= item\nitem ::= "[" item? "]"'):
        with pytest.raises(GrammarError):
            grammar_regex(broken)
    assert grammar_schema('root ::= "a"') is None
