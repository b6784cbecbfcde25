"""Typed prompts as data: declared in TOML or code, their JSON schema, and parsing answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dllm_notebook._errors import PresetError
from dllm_notebook._prompts.presets import ENV_VAR, Prompt, load_preset, resolve_prompts
from dllm_notebook._prompts.schemas import answer_schema, answer_validator, parse_answer

DESIGNS = ["randomized trial", "cohort", "case-control", "other"]
TYPED_PRESET = """
description = "typed"
[[prompts]]
name = "sample_size"
type = "integer"
template = "{content}\\nHow many participants?"

[[prompts]]
name = "design"
type = "category"
choices = ["randomized trial", "cohort", "case-control", "other"]
evidence = true
template = "{content}\\nWhich study design was used?"

[[prompts]]
name = "summary"
template = "{content}\\nSummarise."
"""


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "typed.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_preset_declares_types_choices_and_evidence(tmp_path: Path) -> None:
    preset = load_preset(write(tmp_path, TYPED_PRESET))
    size, design, summary = preset.prompts
    assert (size.type, size.choices, size.evidence) == ("integer", None, False)
    assert (design.type, design.choices, design.evidence) == ("category", tuple(DESIGNS), True)
    assert (summary.type, summary.evidence) == ("text", False)
    assert summary.schema is None  # free text is sent as it always was
    assert size.schema == {
        "type": "object",
        "properties": {"answer": {"type": "integer"}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    assert design.schema is not None
    assert design.schema["properties"] == {
        "answer": {"type": "string", "enum": DESIGNS},
        "quotes": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
    }
    assert design.schema["required"] == ["answer", "quotes"]


def test_str_of_a_typed_preset_shows_what_each_prompt_returns(tmp_path: Path) -> None:
    lines = str(load_preset(write(tmp_path, TYPED_PRESET))).splitlines()
    assert lines[1] == "  sample_size (integer): How many participants?"
    assert lines[2] == (
        "  design (category: randomized trial | cohort | case-control | other, evidence): "
        "Which study design was used?"
    )
    assert lines[3] == "  summary: summary"  # no line of three words: the name stands in


def test_preset_evidence_applies_to_every_prompt_that_does_not_say_otherwise(
    tmp_path: Path,
) -> None:
    text = 'evidence = true\n[[prompts]]\nname = "a"\ntemplate = "{content}"\n'
    text += '[[prompts]]\nname = "b"\nevidence = false\ntemplate = "{content}"\n'
    preset = load_preset(write(tmp_path, text))
    assert preset.evidence is True
    assert [p.evidence for p in preset.prompts] == [True, False]
    a = preset.prompts[0]
    assert a.schema is not None and a.schema["properties"]["answer"] == {"type": "string"}


def test_the_research_preset_asks_for_evidence_on_every_prompt() -> None:
    preset = load_preset("research")
    assert preset.evidence
    assert all(p.evidence and p.type == "text" for p in preset.prompts)


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ('type = "integr"', "prompt #1 'x': 'type' = 'integr' is not one of text, integer"),
        ('type = "category"', "prompt #1 'x': a category needs 'choices'"),
        ('type = "category"\nchoices = []', "'choices' must be a non-empty list"),
        ('type = "category"\nchoices = ["a", "a"]', "'choices' lists the same answer twice"),
        ('type = "integer"\nchoices = ["a"]', "'choices' is only for type = \"category\""),
        ('evidence = "yes"', "prompt #1 'x': 'evidence' must be true or false"),
        ('tpye = "integer"', "prompt #1 'x': unknown key 'tpye'"),
    ],
)
def test_a_wrong_declaration_names_the_file_the_prompt_and_the_key(
    tmp_path: Path, table: str, expected: str
) -> None:
    path = write(tmp_path, f'[[prompts]]\nname = "x"\ntemplate = "{{content}}"\n{table}\n')
    with pytest.raises(PresetError) as caught:
        load_preset(path)
    assert str(path) in str(caught.value)
    assert expected in str(caught.value)


def test_the_python_form_takes_the_same_tables_and_plain_strings() -> None:
    prompts = resolve_prompts(
        prompts={
            "sample_size": {"template": "How many participants were studied?", "type": "integer"},
            "design": {"template": "{content}\nDesign?", "type": "category", "choices": DESIGNS},
            "aim": "What is the aim?",
        }
    )
    size, design, aim = prompts
    assert size.type == "integer" and "{content}" in size.template  # a bare question, wrapped
    assert size.instruction() == "How many participants were studied?"
    assert design.choices == tuple(DESIGNS)
    assert (aim.type, aim.schema) == ("text", None)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"template": "{content}", "type": "float"}, "prompt #1 'n': 'type' = 'float'"),
        ({"template": "{content}", "type": "category", "choices": []}, "'choices' must be"),
        ({"template": "{content}", "kind": "integer"}, "prompt #1 'n': unknown key 'kind'"),
    ],
)
def test_a_wrong_python_table_is_a_preset_error_naming_the_prompt_and_key(
    spec: dict[str, Any], expected: str
) -> None:
    with pytest.raises(PresetError) as caught:
        resolve_prompts(prompts={"n": spec})
    assert "prompts=" in str(caught.value) and expected in str(caught.value)


def test_a_prompt_object_checks_its_declaration_too() -> None:
    with pytest.raises(PresetError, match="'type' = 'int'"):
        Prompt("n", "{content}", type="int")
    prompt = Prompt("n", "{content}", type="list")
    assert prompt.with_evidence().evidence and not prompt.evidence


@pytest.mark.parametrize(
    ("type_", "raw", "value"),
    [
        ("integer", '{"answer": 120}', 120),
        ("integer", '{"answer": 120.0}', 120),
        ("number", '{"answer": 0.25}', 0.25),
        ("number", '{"answer": 3}', 3.0),
        ("boolean", '{"answer": false}', False),
        ("category", '{"answer": "cohort"}', "cohort"),
        ("list", '{"answer": ["rice", "wheat"]}', ["rice", "wheat"]),
        ("text", '{"answer": "It is about rice."}', "It is about rice."),
        ("integer", 'Here is my answer:\n```json\n{"answer": 7}\n```\nHope it helps.', 7),
        ("integer", 'The object {"wrong": 1} is not it; {"answer": 8}', None),
    ],
)
def test_valid_answers_become_python_values(type_: str, raw: str, value: object) -> None:
    schema = answer_schema(type_, DESIGNS if type_ == "category" else None, evidence=False)
    if type_ == "text":
        schema = answer_schema("text", evidence=True)
        raw = raw[:-1] + ', "quotes": []}'
    parsed = parse_answer(raw, schema)
    if value is None:  # the first object breaks the schema: the answer is not searched for
        assert not parsed.ok and "wrong" in (parsed.error or "")
        return
    assert parsed.ok, parsed.error
    assert parsed.value == value and type(parsed.value) is type(value)
    assert parsed.raw == raw and parsed.status == "ok"


@pytest.mark.parametrize(
    ("type_", "raw", "why"),
    [
        ("integer", '{"answer": "about 120"}', "'about 120' is not of type 'integer'"),
        ("integer", '{"answer": "120"}', "is not of type 'integer'"),
        ("integer", '{"answer": 12.5}', "is not of type 'integer'"),
        ("integer", '{"answer": true}', "is not of type 'integer'"),
        ("boolean", '{"answer": "yes"}', "is not of type 'boolean'"),
        ("category", '{"answer": "Cohort study"}', "is not one of"),
        ("list", '{"answer": "rice, wheat"}', "is not of type 'array'"),
        ("integer", '{"answer": 3, "note": "x"}', "Additional properties"),
        ("integer", "{}", "'answer' is a required property"),
        ("integer", "one hundred and twenty", "not a JSON object"),
        ("integer", '{"answer": 12', "not a JSON object"),
    ],
)
def test_wrong_answers_are_invalid_and_never_coerced(type_: str, raw: str, why: str) -> None:
    schema = answer_schema(type_, DESIGNS if type_ == "category" else None)
    parsed = parse_answer(raw, schema)
    assert not parsed.ok and parsed.status == "invalid"
    assert parsed.value is None and parsed.raw == raw
    assert why in (parsed.error or "")


def test_quotes_come_back_and_more_than_three_are_invalid() -> None:
    schema = answer_schema("boolean", evidence=True)
    parsed = parse_answer('{"answer": true, "quotes": ["We did.", "It worked."]}', schema)
    assert parsed.ok and parsed.quotes == ("We did.", "It worked.")
    four = '{"answer": true, "quotes": ["a", "b", "c", "d"]}'
    assert "is too long" in (parse_answer(four, schema).error or "")
    assert not parse_answer('{"answer": true}', schema).ok  # quotes are required


def test_free_text_without_a_schema_is_the_text_itself() -> None:
    parsed = parse_answer("  A plain answer.\n", None)
    assert parsed.ok and parsed.value == "A plain answer." and parsed.quotes == ()


def test_the_validator_the_dispatcher_calls() -> None:
    check = answer_validator(answer_schema("category", ["a", "b"]))
    assert check('{"answer": "b"}') is None
    assert "is not one of" in (check('{"answer": "c"}') or "")
    assert answer_validator(None)("anything") is None
