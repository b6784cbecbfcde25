"""Comparing models: ``analyze(model=["m1", "m2"])`` on a lab whose workers serve either.

Each cell asks one model, so each model's prompts reach only its own workers (the emulated
servers' request logs say which server got what), both models are worked on at once, and
the table has one column per prompt x model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from dllm_notebook import Cluster, ModelListError, ModelNotServed, OneModelNeeded
from dllm_notebook.testing import Behaviour, FakeLab, FakeServer, RequestRecord

from .cli_helpers import dllm, worker, write_config
from .conftest import FAST, SAMPLE_PAPERS

PROMPTS = {
    "gist": "Paper:\n{content}\n\nGist in one sentence.",
    "design": {
        "template": "Paper:\n{content}\n\nWhich study design?",
        "type": "category",
        "choices": ["randomized trial", "cohort", "simulation", "other"],
    },
    "n": {"template": "Paper:\n{content}\n\nHow many samples?", "type": "integer"},
}
PAPERS = sorted(p.name for p in SAMPLE_PAPERS.iterdir())
GROUPS = {"mistral": ["mistral-7b-instruct-v0.2", "mistral:7b"]}
SETTINGS: dict[str, Any] = {**FAST, "probe_timeout": 5.0}
"""A worker down at the start would make a model unserved: the machine may be busy."""


def compare_lab(lab: FakeLab) -> tuple[FakeServer, FakeServer, FakeServer, list[dict[str, object]]]:
    """Two workers serving mistral (under two names, one model group) and one serving
    llama; each takes a little time per request so that their requests overlap."""
    slow = Behaviour(base_latency=0.05, slots=2)
    imac = lab.add("lm_studio", models=["mistral-7b-instruct-v0.2"], behaviour=slow)
    studio = lab.add("ollama", models=["mistral:7b"], behaviour=slow)
    mini = lab.add("openai", models=["llama-3.1-8b"], behaviour=slow)
    workers = [
        worker(imac, "imac", "lm_studio", max_concurrent_requests=2),
        worker(studio, "studio", "ollama", max_concurrent_requests=2),
        worker(mini, "mini", "openai", max_concurrent_requests=2),
    ]
    return imac, studio, mini, workers


def generations(server: FakeServer) -> list[RequestRecord]:
    return [r for r in server.log.records() if r.is_generation]


def test_each_models_prompts_reach_only_its_workers_and_both_run_at_once(lab: FakeLab) -> None:
    imac, studio, mini, workers = compare_lab(lab)
    with Cluster(workers, store=None, models=GROUPS, **SETTINGS) as cluster:
        wide = cluster.analyze(
            SAMPLE_PAPERS, prompts=PROMPTS, model=["mistral", "llama-3.1-8b"], progress=False
        )
    # every request names a model its server serves: no request went to the wrong one
    mistral_requests = generations(imac) + generations(studio)
    llama_requests = generations(mini)
    assert {r.model for r in generations(imac)} == {"mistral-7b-instruct-v0.2"}
    assert {r.model for r in generations(studio)} == {"mistral:7b"}
    assert {r.model for r in llama_requests} == {"llama-3.1-8b"}
    # each model answered every paper x prompt once
    assert len(mistral_requests) == len(llama_requests) == len(PAPERS) * len(PROMPTS)

    # both models were worked on at once: llama requests were open on their server while
    # mistral requests were open on theirs (the servers' own request times)
    # (run one model after the other, and at most one llama request would overlap)
    def window(r: RequestRecord) -> tuple[float, float]:
        assert r.finished_at is not None
        return r.received_at, r.finished_at

    mistral_windows = [window(r) for r in mistral_requests]
    overlapping = [
        a
        for a in map(window, llama_requests)
        if any(a[0] < b[1] and b[0] < a[1] for b in mistral_windows)
    ]
    assert len(overlapping) >= len(llama_requests) // 2
    assert wide.columns.names == ["prompt", "model"]
    assert list(wide.columns[:6]) == [
        ("gist", "mistral"), ("gist", "llama-3.1-8b"),
        ("design", "mistral"), ("design", "llama-3.1-8b"),
        ("n", "mistral"), ("n", "llama-3.1-8b"),
    ]  # fmt: skip
    assert ("title", "") in wide.columns
    assert sorted(wide.index) == PAPERS


def test_the_wide_comparison_keeps_each_columns_dtype(lab: FakeLab) -> None:
    *_, workers = compare_lab(lab)
    with Cluster(workers, store=None, models=GROUPS, **SETTINGS) as cluster:
        wide = cluster.analyze(
            SAMPLE_PAPERS, prompts=PROMPTS, model=["mistral", "llama-3.1-8b"], progress=False
        )
    side_by_side = wide["design"]
    assert list(side_by_side.columns) == ["mistral", "llama-3.1-8b"]
    for model in ("mistral", "llama-3.1-8b"):
        assert isinstance(wide[("design", model)].dtype, pd.CategoricalDtype)
        assert list(wide[("design", model)].cat.categories) == PROMPTS["design"]["choices"]  # type: ignore[index]
        assert str(wide[("n", model)].dtype) == "Int64"
        assert pd.api.types.is_string_dtype(wide[("gist", model)].dtype)
        assert wide[("gist", model)].notna().all()
    one = wide.xs("mistral", axis=1, level="model")
    assert list(one.columns[:3]) == ["gist", "design", "n"]
    assert list(wide.dllm.answers().columns.get_level_values("model")) == [
        "mistral", "llama-3.1-8b"
    ] * 3  # fmt: skip
    meta = wide.dllm.meta()
    assert list(meta.columns) == ["title", "authors", "year", "doi", "venue", "source"]
    assert meta["title"].notna().all()


def test_long_form_says_which_model_each_row_asked_and_round_trips(
    lab: FakeLab, tmp_path: Path
) -> None:
    *_, workers = compare_lab(lab)
    store = tmp_path / "results.sqlite"
    with Cluster(workers, store=store, models=GROUPS, **SETTINGS) as cluster:
        long = cluster.analyze(
            SAMPLE_PAPERS, prompts=PROMPTS, model=["mistral", "llama-3.1-8b"], long=True,
            progress=False, evidence=True,
        )  # fmt: skip
    assert len(long) == len(PAPERS) * len(PROMPTS) * 2
    assert set(long["status"]) == {"ok"}
    columns = list(long.columns)
    assert columns[columns.index("model") + 1] == "requested_model"
    mistral = long[long["requested_model"] == "mistral"]
    llama = long[long["requested_model"] == "llama-3.1-8b"]
    assert set(mistral["worker"]) <= {"imac", "studio"}
    assert set(mistral["model"]) <= {"mistral-7b-instruct-v0.2", "mistral:7b"}
    assert set(llama["worker"]) == {"mini"} and set(llama["model"]) == {"llama-3.1-8b"}
    assert "x 2 models" in long.attrs["dllm_summary"]

    wide = long.dllm.wide()
    assert wide.columns.names == ["prompt", "model"]
    path = tmp_path / "compare.parquet"
    wide.to_parquet(path)
    loaded = pd.read_parquet(path)
    assert loaded.columns.names == ["prompt", "model"]
    assert list(loaded.columns) == list(wide.columns)
    assert str(loaded[("n", "llama-3.1-8b")].dtype) == "Int64"
    back = loaded.dllm.long()  # provenance from the store the table names
    keys = ["paper", "prompt", "requested_model"]
    mine = long.sort_values(keys).reset_index(drop=True)
    theirs = back.sort_values(keys).reset_index(drop=True)
    assert list(theirs.columns) == list(mine.columns)
    for name in ("answer", "value", "worker", "model", "status", "requested_model"):
        assert theirs[name].tolist() == mine[name].tolist(), name
    # one model picked out of the comparison keeps its own provenance from the store
    llama = loaded.dllm.for_model("llama-3.1-8b")
    assert list(llama.columns[:3]) == ["gist", "design", "n"]
    llama_long = llama.dllm.long()
    assert "requested_model" not in llama_long.columns
    assert len(llama_long) == len(PAPERS) * len(PROMPTS)
    assert set(llama_long["worker"]) == {"mini"} and set(llama_long["status"]) == {"ok"}
    from_long = long.dllm.for_model("mistral")
    assert len(from_long) == len(PAPERS) * len(PROMPTS)
    assert set(from_long["worker"]) <= {"imac", "studio"}
    assert list(from_long.dllm.wide().columns[:3]) == ["gist", "design", "n"]
    quotes = loaded.dllm.evidence()
    assert list(quotes.columns[:3]) == ["paper", "prompt", "requested_model"]
    assert set(quotes["requested_model"]) == {"mistral", "llama-3.1-8b"}


def test_a_rerun_reuses_each_models_own_answers_only(lab: FakeLab, tmp_path: Path) -> None:
    *_, mini, workers = compare_lab(lab)
    store = tmp_path / "results.sqlite"
    prompts = {"gist": PROMPTS["gist"]}
    with Cluster(workers, store=store, models=GROUPS, **SETTINGS) as cluster:
        cluster.analyze(SAMPLE_PAPERS, prompts=prompts, model="mistral", progress=False)
        sent = len(generations(mini))
        long = cluster.analyze(
            SAMPLE_PAPERS, prompts=prompts, model=["mistral", "llama-3.1-8b"], long=True,
            progress=False,
        )  # fmt: skip
    # mistral's answers came from the store; llama was asked for every paper
    assert sent == 0
    assert set(long[long["requested_model"] == "mistral"]["status"]) == {"cached"}
    assert set(long[long["requested_model"] == "llama-3.1-8b"]["status"]) == {"ok"}
    assert len(generations(mini)) == len(PAPERS)


def test_an_unknown_model_in_the_list_fails_before_any_request(lab: FakeLab) -> None:
    *_, workers = compare_lab(lab)
    with Cluster(workers, store=None, **SETTINGS) as cluster, pytest.raises(ModelNotServed) as info:
        cluster.analyze(SAMPLE_PAPERS, prompts=PROMPTS, model=["llama-3.1-8b", "qwen2.5"])
    message = str(info.value)
    assert "qwen2.5" in message and "mini: llama-3.1-8b" in message and "studio:" in message
    assert not [r for r in lab.log.records() if r.is_generation]


@pytest.mark.parametrize(
    ("model", "said"),
    [
        (["llama-3.1-8b", "llama-3.1-8b"], "names one model twice"),
        (["mistral:7b", "mistral"], "'mistral:7b' and 'mistral' are one model"),
        ([], "give a model name, or a list"),
        (["llama-3.1-8b", ""], "is not a model name"),
    ],
)
def test_a_bad_model_list_fails_before_any_request(
    lab: FakeLab, model: list[str], said: str
) -> None:
    *_, workers = compare_lab(lab)
    with (
        Cluster(workers, store=None, models=GROUPS, **SETTINGS) as cluster,
        pytest.raises(ModelListError, match=said),
    ):
        cluster.analyze(SAMPLE_PAPERS, prompts=PROMPTS, model=model, progress=False)
    assert not [r for r in lab.log.records() if r.is_generation]


def test_a_preset_may_compare_models(lab: FakeLab, tmp_path: Path) -> None:
    *_, workers = compare_lab(lab)
    preset = tmp_path / "compare.toml"
    preset.write_text(
        'description = "compare"\nmodel = ["mistral", "llama-3.1-8b"]\n'
        '[[prompts]]\nname = "gist"\ntemplate = "Gist of {content}"\n',
        encoding="utf-8",
    )
    with Cluster(workers, store=None, models=GROUPS, **SETTINGS) as cluster:
        wide = cluster.analyze(SAMPLE_PAPERS, preset=str(preset), progress=False)
        single = cluster.analyze(
            SAMPLE_PAPERS, preset=str(preset), model="llama-3.1-8b", progress=False
        )
    assert list(wide.dllm.answers().columns) == [("gist", "mistral"), ("gist", "llama-3.1-8b")]
    assert list(single.dllm.answers().columns) == ["gist"]  # one model: today's flat table


def test_exports_of_a_comparison_work_or_say_how_to_pick_one_model(
    lab: FakeLab, tmp_path: Path
) -> None:
    *_, workers = compare_lab(lab)
    with Cluster(workers, store=None, models=GROUPS, **SETTINGS) as cluster:
        wide = cluster.analyze(
            SAMPLE_PAPERS, prompts=PROMPTS, model=["mistral", "llama-3.1-8b"], progress=False
        )
        sent = len(lab.log.records())
        with pytest.raises(OneModelNeeded, match=r"cluster\.synthesize\(\)"):
            cluster.synthesize(wide)
        assert len([r for r in lab.log.records()[sent:] if r.is_generation]) == 0
    csv = tmp_path / "compare.csv"
    wide.dllm.to_csv(csv)
    read = pd.read_csv(csv, header=[0, 1], index_col=0, encoding="utf-8-sig")
    assert ("gist", "llama-3.1-8b") in read.columns
    assert read[("gist", "mistral")].notna().all()
    markdown = wide.dllm.answers().dllm.to_markdown()
    assert markdown.splitlines()[0].startswith("| paper | gist [mistral] | gist [llama-3.1-8b] |")
    report = wide.dllm.to_json_report()
    assert report["total_tasks"] == len(PAPERS) * len(PROMPTS) * 2
    for export in ("to_excel", "to_bibtex", "to_ris", "to_report"):
        with pytest.raises(OneModelNeeded, match=r'df\.dllm\.for_model\("mistral"\)'):
            getattr(wide.dllm, export)(tmp_path / f"out.{export}")
    with pytest.raises(OneModelNeeded):
        wide.dllm.show()
    one = wide.dllm.for_model("mistral")
    assert list(one.columns) == [*PROMPTS, "title", "authors", "year", "doi", "venue", "source"]
    one.dllm.to_excel(tmp_path / "mistral.xlsx")  # one model's table exports as before
    assert (tmp_path / "mistral.xlsx").stat().st_size > 0
    with pytest.raises(OneModelNeeded, match="not one of the models compared"):
        wide.dllm.for_model("qwen2.5")


def test_cli_compares_models_with_a_repeated_model_option(lab: FakeLab, tmp_path: Path) -> None:
    imac, studio, mini, workers = compare_lab(lab)
    config = write_config(tmp_path / "workers.json", workers, models=GROUPS, probe_timeout=5.0)
    out = tmp_path / "compare.parquet"
    result = dllm(
        "analyze", str(SAMPLE_PAPERS), "-p", "Gist of {content}", "-o", str(out),
        "-c", str(config), "--model", "mistral", "--model", "llama-3.1-8b", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"({len(PAPERS)} papers x 1 prompts x 2 models)" in result.stdout
    wide = pd.read_parquet(out)
    assert wide.columns.names == ["prompt", "model"]
    assert {m for _, m in wide.dllm.answers().columns} == {"mistral", "llama-3.1-8b"}
    assert {r.model for r in generations(mini)} == {"llama-3.1-8b"}
    assert len(generations(imac)) + len(generations(studio)) == len(PAPERS)

    refused = dllm(
        "analyze", str(SAMPLE_PAPERS), "-p", "Gist of {content}", "-o", str(tmp_path / "x.xlsx"),
        "-c", str(config), "-m", "mistral", "-m", "llama-3.1-8b", cwd=tmp_path,
    )  # fmt: skip
    assert refused.returncode != 0
    assert ".xlsx holds one model's answers" in refused.stderr
    assert len(generations(mini)) == len(PAPERS)  # refused before any request


def test_json_report_names_the_model_that_answered(lab: FakeLab) -> None:
    *_, workers = compare_lab(lab)
    with Cluster(workers, store=None, models=GROUPS, **SETTINGS) as cluster:
        long = cluster.analyze(
            SAMPLE_PAPERS, prompts={"gist": PROMPTS["gist"]}, model=["mistral", "llama-3.1-8b"],
            long=True, progress=False,
        )  # fmt: skip
    report = long.dllm.to_json_report()
    models = {entry["response"]["model"] for entry in report["results"]}
    assert models <= {"mistral-7b-instruct-v0.2", "mistral:7b", "llama-3.1-8b"}
    assert "llama-3.1-8b" in models
    assert json.dumps(report)  # plain JSON


def test_an_unfinished_comparison_shows_each_cell_pending_under_its_model() -> None:
    from dllm_notebook._analysis.call import analyze_call, prepare

    call = analyze_call(SAMPLE_PAPERS, prompts=PROMPTS, model=["m1", "m2"], progress=False)
    analysis = prepare(call, progress=False)  # planned, nothing sent yet
    long = analysis.frame(long=True)
    assert len(long) == analysis.total == len(PAPERS) * len(PROMPTS) * 2
    assert set(long["status"]) == {"pending"}
    first = long[long["paper"] == long["paper"].iloc[0]]
    assert list(zip(first["prompt"], first["requested_model"], strict=True)) == [
        (p, m) for p in PROMPTS for m in ("m1", "m2")
    ]
    wide = analysis.frame()
    assert wide[("n", "m2")].isna().all() and str(wide[("n", "m2")].dtype) == "Int64"
