"""Structure on the wire: each dialect gets the schema in its own form, or in the prompt.

Real HTTP servers on loopback (dllm_notebook.testing) answer a schema with an instance of
it; the paper text is a real PDF from the shared corpus, so quotes can be checked.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from dllm_notebook import Cluster
from dllm_notebook._prompts.presets import Prompt, load_preset
from dllm_notebook._reading.pdf import read_pdf
from dllm_notebook._running.backends import classify_error
from dllm_notebook._running.backends.structured import rejects_schema
from dllm_notebook._types import ChatRequest
from dllm_notebook.testing import (
    INVENTED_QUOTES,
    Behaviour,
    FakeLab,
    FakeServer,
    RequestRecord,
)

from .conftest import FAST
from .test_cluster import DIALECTS, url_for

DESIGNS = ["randomized trial", "cohort", "case-control", "simulation", "other"]
DESIGN = Prompt(
    "design",
    "Read the paper below.\n\n{content}\n\nQuestion: Which study design was used?\nAnswer:",
    type="category",
    choices=DESIGNS,
    evidence=True,
)
CONSTRAINED = [d for d in DIALECTS if d != "exo"]
WINDOW = {"context_length": 32768}
# FAST, with room for a loaded machine: these tests count requests, so a timeout's retry
# would read as a wrong answer's.
SETTINGS = {**FAST, "request_timeout": 30.0, "probe_timeout": 5.0, "no_worker_timeout": 20.0}


@pytest.fixture
def paper(corpus: Path) -> str:
    """The first pages of a real paper, as the analysis would send them."""
    return read_pdf(corpus / "acl2020-s2orc.pdf").text[:6000]


def request(prompt: Prompt, paper: str) -> ChatRequest:
    text = prompt.render({"content": paper, "title": "S2ORC"})
    return ChatRequest(text, options={"max_tokens": 400}, schema=prompt.schema)


def chat_records(server: FakeServer) -> list[RequestRecord]:
    """Every chat request the server received, refused ones too."""
    return [r for r in server.log.records() if r.path.endswith(("/chat/completions", "/api/chat"))]


@pytest.mark.parametrize("dialect", DIALECTS)
def test_each_dialect_gets_the_schema_in_its_form_and_answers_an_instance(
    lab: FakeLab, paper: str, dialect: str
) -> None:
    server = lab.add(dialect, models=["m-1"], **WINDOW)
    with Cluster([url_for(server.url, dialect)], **SETTINGS) as cluster:
        answer = cluster.ask(request(DESIGN, paper))
    parsed = DESIGN.parse_answer(answer.text)
    assert parsed.ok, parsed.error
    assert parsed.value in DESIGNS
    assert 1 <= len(parsed.quotes) <= 3
    assert all(quote in paper for quote in parsed.quotes)  # verbatim from the paper
    (record,) = server.log.generations()
    if dialect == "exo":  # no constrained decoding: the schema is described in the prompt
        assert record.schema is None and "response_format" not in record.options
        assert answer.text.startswith("```json")
    elif dialect == "ollama":
        assert record.schema == DESIGN.schema  # Ollama's `format`
    elif dialect == "llamacpp":  # a compact grammar: no whitespace for the model to spend
        assert "response_format" not in record.options
        assert record.options["grammar"].startswith("# JSON schema: ")
        assert record.schema == DESIGN.schema
        assert answer.text.startswith('{"answer":"')
    else:
        assert record.options["response_format"] == {
            "type": "json_schema",
            "json_schema": {"name": "answer", "strict": True, "schema": DESIGN.schema},
        }
        assert record.schema == DESIGN.schema
    assert answer.attempts == 1


@pytest.mark.parametrize("dialect", ["llamacpp", "ollama", "exo"])
def test_every_type_comes_back_as_its_python_value(lab: FakeLab, paper: str, dialect: str) -> None:
    prompts = [
        Prompt("n", "{content}\nHow many participants?", type="integer"),
        Prompt("x", "{content}\nWhat effect size?", type="number"),
        Prompt("b", "{content}\nIs the code public?", type="boolean"),
        Prompt("l", "{content}\nWhich datasets?", type="list"),
        Prompt("t", "{content}\nWhat is the aim?", evidence=True),
    ]
    server = lab.add(dialect, models=["m-1"], **WINDOW)
    with Cluster([url_for(server.url, dialect)], **SETTINGS) as cluster:
        answers = cluster.map([request(p, paper) for p in prompts])
    values = [p.parse_answer(a.text).value for p, a in zip(prompts, answers, strict=True)]
    assert [type(v) for v in values] == [int, float, bool, list, str]
    assert 1 <= values[0] <= 1000 and all(isinstance(item, str) for item in values[3])


def test_llama_cpp_gets_a_compact_grammar_or_else_the_schema_as_it_is(
    lab: FakeLab, paper: str
) -> None:
    server = lab.add("llamacpp", models=["m-1"], **WINDOW)
    # minItems is outside what the compact grammar covers: the schema goes as it is
    wide = {
        "type": "object",
        "properties": {"answer": {"type": "array", "items": {"type": "string"}, "minItems": 1}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    with Cluster([url_for(server.url, "llamacpp")], **SETTINGS) as cluster:
        compact = cluster.ask(request(DESIGN, paper))
        fallback = cluster.ask(ChatRequest(paper + "\nWhich datasets?", schema=wide))
    first, second = server.log.generations()
    assert "grammar" in first.options and "response_format" not in first.options
    assert " " not in compact.text.partition('"quotes":')[0]  # nothing spent on whitespace
    assert "grammar" not in second.options
    assert second.options["response_format"]["json_schema"]["schema"] == wide
    assert isinstance(json.loads(fallback.text)["answer"], list)


def test_a_grammar_the_server_cannot_parse_is_refused_like_llama_cpp(lab: FakeLab) -> None:
    server = lab.add("llamacpp", models=["m-1"], **WINDOW)
    body = {"messages": [{"role": "user", "content": "hi"}], "grammar": 'root ::= ( "a"'}
    response = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=10)
    assert response.status_code == 400
    assert "Failed to parse grammar" in response.json()["error"]["message"]


# llama.cpp gets a grammar, which every build takes; what an old build refuses is the
# response_format json_schema, tested for the other OpenAI-style servers here.
@pytest.mark.parametrize("dialect", [d for d in CONSTRAINED if d != "llamacpp"])
def test_a_server_that_refuses_the_schema_gets_it_in_the_prompt_from_then_on(
    lab: FakeLab, paper: str, dialect: str
) -> None:
    server = lab.add(dialect, models=["m-1"], behaviour=Behaviour(reject_schema=True), **WINDOW)
    with Cluster([url_for(server.url, dialect)], **SETTINGS) as cluster:
        first = cluster.ask(request(DESIGN, paper))
        assert [(r.status, r.outcome) for r in chat_records(server)] == [
            (400, "bad_request"),  # the schema field, refused
            (200, "ok"),  # asked again at once, with the schema in the prompt
        ]
        second = cluster.ask(request(DESIGN, paper[:3000]))
    assert len(chat_records(server)) == 3  # learned: the field is never sent again
    for answer in (first, second):
        assert answer.text.startswith("```json")
        parsed = DESIGN.parse_answer(answer.text)
        assert parsed.ok and parsed.value in DESIGNS
        assert parsed.quotes and all(quote in paper for quote in parsed.quotes)
    assert all(r.schema is None for r in server.log.generations())


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("mode", ["invalid_json", "out_of_schema"])
def test_an_invalid_answer_is_asked_again_once_then_kept_as_it_came(
    lab: FakeLab, paper: str, dialect: str, mode: str
) -> None:
    server = lab.add(dialect, models=["m-1"], behaviour=Behaviour(schema_answers=mode), **WINDOW)
    with Cluster([url_for(server.url, dialect)], **SETTINGS) as cluster:
        answer = cluster.ask(request(DESIGN, paper))
    assert answer.ok and answer.attempts == 2
    assert len(server.log.generations()) == 2  # asked once more, then kept
    parsed = DESIGN.parse_answer(answer.text)
    assert not parsed.ok and parsed.raw == answer.text
    expected = "not a JSON object" if mode == "invalid_json" else "is not one of"
    assert expected in (parsed.error or "")


@pytest.mark.parametrize("dialect", DIALECTS)
def test_invented_quotes_are_well_formed_but_not_in_the_paper(
    lab: FakeLab, paper: str, dialect: str
) -> None:
    server = lab.add(
        dialect, models=["m-1"], behaviour=Behaviour(schema_answers="invented_quotes"), **WINDOW
    )
    with Cluster([url_for(server.url, dialect)], **SETTINGS) as cluster:
        answer = cluster.ask(request(DESIGN, paper))
    parsed = DESIGN.parse_answer(answer.text)
    assert parsed.ok and answer.attempts == 1  # the schema cannot tell: verification will
    assert parsed.quotes and all(q in INVENTED_QUOTES and q not in paper for q in parsed.quotes)


def test_an_invalid_answer_is_asked_again_on_another_worker(lab: FakeLab, paper: str) -> None:
    bad = lab.add(
        "ollama", models=["m-1"], behaviour=Behaviour(schema_answers="out_of_schema"), **WINDOW
    )
    # 4 slots, fewer than the bad worker's 5: before any answer the larger share of the
    # work goes to the worker with more slots, so the bad one takes some.
    good = lab.add("llamacpp", models=["m-1"], behaviour=Behaviour(slots=4), **WINDOW)
    prompt = load_preset("research").prompts[0]  # text with evidence
    papers = [paper[i * 500 : i * 500 + 3000] for i in range(6)]
    workers = [url_for(bad.url, "ollama"), url_for(good.url, "llamacpp")]
    with Cluster(workers, **SETTINGS) as cluster:
        answers = cluster.map([request(prompt, p) for p in papers])
        good_id = cluster.workers[1].id
    assert bad.log.generations(), "the bad worker took some of the work"
    for text, answer in zip(papers, answers, strict=True):
        parsed = prompt.parse_answer(answer.text)
        assert parsed.ok and answer.worker == good_id, parsed.error
        assert all(quote in text for quote in parsed.quotes)
    retried = [a for a in answers if a.attempts == 2]
    assert len(retried) == len(bad.log.generations())  # each bad answer asked again once
    assert len(good.log.generations()) == len(papers)


def test_an_answer_cut_at_max_tokens_is_asked_again_only_where_another_worker_can_answer(
    lab: FakeLab, paper: str
) -> None:
    cut = ChatRequest(
        DESIGN.render({"content": paper, "title": "S2ORC"}),
        options={"max_tokens": 3},  # the JSON answer needs more: cut mid-object
        schema=DESIGN.schema,
    )
    alone = lab.add("llamacpp", models=["m-1"], **WINDOW)
    with Cluster([url_for(alone.url, "llamacpp")], **SETTINGS) as cluster:
        answer = cluster.ask(cut)
    assert answer.finish_reason == "length" and not DESIGN.parse_answer(answer.text).ok
    assert answer.attempts == 1  # the same model at the same limit would be cut again
    assert len(alone.log.generations()) == 1

    first = lab.add("llamacpp", models=["m-1"], **WINDOW)
    second = lab.add("llamacpp", models=["m-1"], **WINDOW)
    urls = [url_for(first.url, "llamacpp"), url_for(second.url, "llamacpp")]
    with Cluster(urls, **SETTINGS) as cluster:
        answer = cluster.ask(cut)
    assert answer.attempts == 2  # another worker might not run out: asked there once
    assert len(first.log.generations()) == len(second.log.generations()) == 1


@pytest.mark.parametrize(
    ("status", "body", "rejected"),
    [
        (
            400,
            '{"error": {"code": 400, "message": "Unrecognized request argument supplied: '
            'response_format"}}',
            True,
        ),
        (
            500,
            '{"error": {"code": 500, "message": "response_format type must be one of \\"text\\" '
            'or \\"json_object\\", but got: json_schema", "type": "server_error"}}',
            True,
        ),
        (
            400,
            '{"error": "json: cannot unmarshal object into Go struct field ChatRequest.format '
            'of type string"}',
            True,
        ),
        (
            400,
            '{"error": {"message": "This model\'s maximum context length is 4096 tokens. '
            'However, you requested 5000 tokens (json_schema)."}}',
            False,
        ),
        (401, '{"error": "invalid api key for response_format"}', False),
        (400, '{"error": "messages must be a list"}', False),
        (503, '{"error": "response_format: server busy"}', False),
    ],
)
def test_which_refusals_mean_the_server_cannot_take_a_schema(
    status: int, body: str, rejected: bool
) -> None:
    error = classify_error(status, body, worker="w", model="m")
    assert rejects_schema(error) is rejected
