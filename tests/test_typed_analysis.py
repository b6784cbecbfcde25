"""Typed columns and checked evidence through analyze(), on emulated servers.

The emulated servers answer a JSON-schema request with an instance of the schema whose
quotes are copied from the paper in the prompt; ``Behaviour.schema_answers`` makes them
answer with broken JSON, out-of-schema values or invented quotes instead.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from dllm_notebook import Cluster, TemplateError
from dllm_notebook.testing import Behaviour, FakeLab

from .conftest import FAST, SAMPLE_PAPERS

TYPED = {
    "sample_size": {
        "template": "Paper:\n{content}\n\nHow many participants or samples?",
        "type": "integer",
    },
    "effect": {"template": "Paper:\n{content}\n\nThe main effect size?", "type": "number"},
    "design": {
        "template": "Paper:\n{content}\n\nWhich study design?",
        "type": "category",
        "choices": ["randomized trial", "cohort", "simulation", "other"],
    },
    "replicated": {"template": "Paper:\n{content}\n\nWas it replicated?", "type": "boolean"},
    "datasets": {"template": "Paper:\n{content}\n\nWhich datasets?", "type": "list"},
    "summary": {"template": "Paper:\n{content}\n\nSummarize the findings."},
}


def analyze(lab: FakeLab, dialect: str, tmp_path: Path, **kwargs: object) -> pd.DataFrame:
    behaviour = kwargs.pop("behaviour", None)
    server = lab.add(dialect, context_length=32768, behaviour=behaviour)  # type: ignore[arg-type]
    url = server.url.replace("http", dialect, 1) if dialect == "ollama" else server.url
    with Cluster([url], store=tmp_path / "store.sqlite", **FAST) as cluster:
        frame: pd.DataFrame = cluster.analyze(SAMPLE_PAPERS, progress=False, **kwargs)
    return frame


@pytest.mark.parametrize("dialect", ["lm_studio", "ollama", "openai"])
def test_typed_columns_have_real_dtypes(lab: FakeLab, tmp_path: Path, dialect: str) -> None:
    wide = analyze(lab, dialect, tmp_path, prompts=TYPED, evidence=True)
    assert str(wide["sample_size"].dtype) == "Int64"
    assert str(wide["effect"].dtype) == "Float64"
    assert str(wide["replicated"].dtype) == "boolean"
    assert isinstance(wide["design"].dtype, pd.CategoricalDtype)
    assert list(wide["design"].cat.categories) == TYPED["design"]["choices"]
    assert all(isinstance(v, list) for v in wide["datasets"])
    assert str(wide["summary"].dtype).startswith("str") or wide["summary"].dtype == "string"
    assert wide[list(TYPED)].notna().all().all()  # every cell valid, none coerced
    # The analysis a reviewer wants works on them directly.
    assert wide["design"].value_counts().sum() == 5
    assert wide["sample_size"].sum() > 0
    # Parquet keeps the dtypes (list cells come back as arrays).
    wide.to_parquet(tmp_path / "typed.parquet")
    back = pd.read_parquet(tmp_path / "typed.parquet")
    assert (back.dtypes == wide.dtypes).all()
    pd.testing.assert_frame_equal(back.drop(columns=["datasets", "authors"]),
                                  wide.drop(columns=["datasets", "authors"]))  # fmt: skip


def test_the_long_form_keeps_the_text_and_the_typed_value(lab: FakeLab, tmp_path: Path) -> None:
    long = analyze(lab, "openai", tmp_path, prompts=TYPED, long=True)
    rows = long.set_index(["paper", "prompt"])
    first = long["paper"].iloc[0]
    number = rows.loc[(first, "sample_size")]
    assert isinstance(json.loads(number["value"]), int)
    assert number["answer"] == str(json.loads(number["value"]))
    assert pd.isna(rows.loc[(first, "summary"), "value"])  # a text prompt's value is its answer
    assert set(long["status"]) == {"ok"}
    assert set(long["evidence"].dropna()) <= {"none"}  # no quotes asked for


def test_quotes_are_checked_against_the_paper_with_their_page(lab: FakeLab, tmp_path: Path) -> None:
    wide = analyze(lab, "lm_studio", tmp_path, preset="research")  # the preset asks for quotes
    long = wide.dllm.long()
    assert set(long["evidence"]) == {"verified"}
    table = wide.dllm.evidence()
    assert list(table.columns) == ["paper", "prompt", "quote", "page", "match"]
    assert len(table) >= 25 and set(table["match"]) <= {"exact", "close"}
    from dllm_notebook._reading.papers import load_papers

    pages = {p.name: p.pages for p in load_papers(SAMPLE_PAPERS)}
    for row in table.itertuples():
        page_text = " ".join(pages[row.paper][row.page - 1].split())
        assert " ".join(row.quote.split())[:40] in page_text


def test_invented_quotes_are_never_shown_as_evidence(lab: FakeLab, tmp_path: Path) -> None:
    wide = analyze(
        lab,
        "openai",
        tmp_path,
        preset="research",
        behaviour=Behaviour(schema_answers="invented_quotes"),
    )
    long = wide.dllm.long()
    assert set(long["evidence"]) == {"unverified"}
    table = wide.dllm.evidence()
    assert len(table) > 0 and set(table["match"]) == {"unverified"}
    assert table["page"].isna().all()


def test_an_invalid_answer_is_asked_again_then_kept_as_invalid(
    lab: FakeLab, tmp_path: Path
) -> None:
    prompts = {"n": TYPED["sample_size"]}
    long = analyze(
        lab,
        "openai",
        tmp_path,
        prompts=prompts,
        long=True,
        behaviour=Behaviour(schema_answers="out_of_schema"),
    )
    assert set(long["status"]) == {"invalid"}
    assert long["value"].isna().all()  # never coerced into a wrong value
    assert long["answer"].str.len().min() > 0  # the raw text is kept
    assert long["error"].notna().all()
    generations = [r for r in lab.log.records() if r.is_generation]
    assert len(generations) == 2 * len(long)  # each asked once more
    assert "5 tasks failed (InvalidAnswer)" in long.attrs["dllm_summary"]
    wide = long.dllm.wide()
    assert wide["n"].isna().all() and str(wide["n"].dtype) == "Int64"


def test_broken_json_is_invalid_too(lab: FakeLab, tmp_path: Path) -> None:
    long = analyze(
        lab,
        "ollama",
        tmp_path,
        prompts={"design": TYPED["design"]},
        long=True,
        behaviour=Behaviour(schema_answers="invalid_json"),
    )
    assert set(long["status"]) == {"invalid"}


def test_an_answer_cut_at_max_tokens_says_to_raise_it_and_is_not_asked_again_in_vain(
    lab: FakeLab, tmp_path: Path
) -> None:
    long = analyze(
        lab, "openai", tmp_path, prompts={"design": TYPED["design"]}, long=True, max_tokens=1
    )
    assert set(long["status"]) == {"invalid"}
    assert long["error"].str.contains("cut off at max_tokens").all()
    assert long["error"].str.contains("raise max_tokens").all()
    generations = [r for r in lab.log.records() if r.is_generation]
    assert len(generations) == len(long)  # one worker: asking it again would cut again


def test_changing_a_prompts_type_asks_again(lab: FakeLab, tmp_path: Path) -> None:
    server = lab.add("openai", context_length=32768)
    template = "Paper:\n{content}\n\nHow many participants?"
    with Cluster([server.url], store=tmp_path / "s.sqlite", **FAST) as cluster:
        text = cluster.analyze(SAMPLE_PAPERS, prompts={"n": template}, progress=False, long=True)
        typed = cluster.analyze(
            SAMPLE_PAPERS,
            prompts={"n": {"template": template, "type": "integer"}},
            progress=False,
            long=True,
        )
    assert set(text["status"]) == {"ok"} and set(typed["status"]) == {"ok"}
    assert len([r for r in lab.log.records() if r.is_generation]) == 10


@pytest.mark.parametrize("name", ["year", "doi", "authors"])
def test_a_prompt_named_like_a_metadata_column_is_refused(name: str) -> None:
    from dllm_notebook._prompts.presets import resolve_preset

    with pytest.raises(TemplateError, match=rf"{name}.*metadata column"):
        resolve_preset(prompts={name: "Question about {content}"})


def test_a_chunked_paper_keeps_its_typed_value_and_evidence(lab: FakeLab) -> None:
    from dllm_notebook._reading.paper import Paper

    text = "\n\n".join(
        f"Section {i}. We measured soil moisture at site {i} during the drought of 2018."
        for i in range(300)
    )
    paper = Paper.from_text("long.txt", text, title="Soil moisture in a drought")
    server = lab.add("openai", context_length=2048)
    prompts = {"sites": {**TYPED["sample_size"], "evidence": True}}
    with Cluster([server.url], store=None, **FAST) as cluster:
        long = cluster.analyze([paper], prompts=prompts, long=True, progress=False, max_tokens=200)
    (row,) = long.to_dict("records")
    assert row["fit"] == "chunked" and row["status"] == "ok"
    assert isinstance(json.loads(row["value"]), int)
    assert row["evidence"] == "verified"
    quotes = json.loads(row["quotes"])
    assert 1 <= len(quotes) <= 3
    assert all(q["match"] in ("exact", "close") and q["page"] == 1 for q in quotes)
    combines = [r for r in lab.log.records() if r.is_generation and r.schema is not None]
    assert len(combines) == len([r for r in lab.log.records() if r.is_generation])


# -- one model per column -------------------------------------------------------------------
def two_model_lab(lab: FakeLab) -> list[dict[str, object]]:
    mistral = lab.add("lm_studio", models=["mistral-7b-instruct-v0.2"], context_length=32768)
    mistral_tag = lab.add("ollama", models=["mistral:7b"], context_length=32768)
    llama = lab.add("openai", models=["llama-3.1-8b"], context_length=32768)
    return [
        {"id": "imac", "host": "127.0.0.1", "port": mistral.port, "type": "lm_studio"},
        {"id": "studio", "host": "127.0.0.1", "port": mistral_tag.port, "type": "ollama"},
        {"id": "mini", "host": "127.0.0.1", "port": llama.port, "type": "openai"},
    ]


def test_model_sends_each_prompt_only_to_workers_serving_it(lab: FakeLab) -> None:
    workers = two_model_lab(lab)
    groups = {"mistral": ["mistral-7b-instruct-v0.2", "mistral:7b"]}
    with Cluster(workers, store=None, models=groups, **FAST) as cluster:
        long = cluster.analyze(
            SAMPLE_PAPERS, prompts={"gist": "Gist: {content}"}, model="mistral", long=True,
            progress=False,
        )  # fmt: skip
    assert set(long["status"]) == {"ok"}
    assert set(long["worker"]) <= {"imac", "studio"}
    served = {r.server for r in lab.log.records() if r.is_generation}
    assert all("openai" not in s for s in served)  # the llama worker got no request
    models = long.dllm.models()
    assert set(models.loc["gist", "models"]) <= {"mistral-7b-instruct-v0.2", "mistral:7b"}


def test_an_unknown_model_fails_before_any_request(lab: FakeLab) -> None:
    from dllm_notebook import ModelNotServed

    workers = two_model_lab(lab)
    with Cluster(workers, store=None, **FAST) as cluster, pytest.raises(ModelNotServed) as info:
        cluster.analyze(SAMPLE_PAPERS, prompts={"gist": "{content}"}, model="qwen2.5")
    message = str(info.value)
    assert "qwen2.5" in message and "mini: llama-3.1-8b" in message and "imac:" in message
    assert not [r for r in lab.log.records() if r.is_generation]


def test_mixed_models_warn_once_and_models_shows_them(
    lab: FakeLab, caplog: pytest.LogCaptureFixture
) -> None:
    workers = two_model_lab(lab)
    with Cluster(workers, store=None, **FAST) as cluster:
        long = cluster.analyze(
            SAMPLE_PAPERS, prompts={"gist": "Gist: {content}"}, long=True, progress=False
        )
    warnings = [r for r in caplog.records if "serve different models" in r.getMessage()]
    assert len(warnings) == 1
    models = long.dllm.models()
    assert sum(models.loc["gist", "cells"].values()) == 5
