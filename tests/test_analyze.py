"""analyze(): papers in, DataFrame out, over real HTTP servers on loopback."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from dllm_notebook import Cluster, TemplateError
from dllm_notebook._prompts.presets import load_preset
from dllm_notebook._reading.paper import Paper
from dllm_notebook._reading.papers import load_papers
from dllm_notebook.testing import Behaviour, FakeLab, expected_echo

from .conftest import FAST, ORIGINAL_REPORT_FIELDS, SAMPLE_PAPERS

RESEARCH = ["research_question", "methodology", "key_findings", "limitations", "future_directions"]


def test_sample_papers_research_preset_every_cell_is_its_own(lab: FakeLab) -> None:
    servers = [
        lab.add("ollama", context_length=32768),
        lab.add("lm_studio", context_length=32768),
        lab.add("openai", context_length=32768),
    ]
    urls = [
        servers[0].url.replace("http", "ollama", 1),
        servers[1].url,
        {
            "id": "vllm-box",
            "host": "127.0.0.1",
            "port": servers[2].port,
            "type": "openai",
            "context_length": 32768,
        },
    ]
    with Cluster(urls, **FAST) as cluster:
        df = cluster.analyze(SAMPLE_PAPERS, preset="research", progress=False)
    papers = load_papers(SAMPLE_PAPERS)
    assert list(df.columns) == RESEARCH
    assert list(df.index) == [p.name for p in papers]
    assert len(df) == 5
    preset = load_preset("research")
    for paper in papers:
        fields = {"content": paper.text, "filename": paper.name, "title": paper.title}
        for prompt in preset.prompts:
            cell = df.loc[paper.name, prompt.name]
            assert cell.startswith(expected_echo(prompt.render(fields)))
    assert sum(lab.log.generation_counts().values()) == 25


def test_long_form_columns_and_provenance(lab: FakeLab) -> None:
    server = lab.add("lm_studio", context_length=32768)
    with Cluster([server.url], **FAST) as cluster:
        long = cluster.analyze(
            SAMPLE_PAPERS, prompts={"gist": "Gist of {title}: {content}"}, long=True, progress=False
        )
    assert list(long.columns) == [
        "paper",
        "title",
        "prompt",
        "answer",
        "status",
        "error",
        "worker",
        "model",
        "prompt_tokens",
        "completion_tokens",
        "latency_s",
        "fit",
    ]
    assert set(long["status"]) == {"ok"} and set(long["fit"]) == {"whole"}
    assert long["worker"].notna().all() and (long["completion_tokens"] > 0).all()
    assert long["title"].str.len().min() > 5
    wide = long.dllm.wide()
    assert list(wide.columns) == ["gist"] and len(wide) == 5
    pd.testing.assert_frame_equal(wide.dllm.long(), long)  # one call away, provenance kept


def test_wide_to_long_shows_edits_and_keeps_provenance_from_the_store(
    lab: FakeLab, tmp_path: Path
) -> None:
    server = lab.add("lm_studio", context_length=32768)
    with Cluster([server.url], store=tmp_path / "store.sqlite", **FAST) as cluster:
        wide = cluster.analyze(SAMPLE_PAPERS, prompts={"gist": "Gist: {content}"}, progress=False)
    first = wide.index[0]
    wide.loc[first, "gist"] = "corrected by hand"
    long = wide.drop(index=wide.index[-1]).dllm.long()
    assert len(long) == 4  # the dropped paper is gone
    edited = long.set_index("paper").loc[first]
    assert edited["answer"] == "corrected by hand"
    assert long["worker"].notna().all() and (long["completion_tokens"] > 0).all()


def test_a_parquet_table_rebuilds_its_long_form_in_a_new_process(
    lab: FakeLab, tmp_path: Path
) -> None:
    server = lab.add("openai", context_length=32768)
    store = tmp_path / "store.sqlite"
    with Cluster([server.url], store=store, **FAST) as cluster:
        long = cluster.analyze(
            SAMPLE_PAPERS, prompts={"gist": "Gist: {content}"}, long=True, progress=False
        )
    long.dllm.wide().to_parquet(tmp_path / "review.parquet")
    script = (
        "import pandas as pd, dllm_notebook, sys\n"
        "long = pd.read_parquet(sys.argv[1]).dllm.long()\n"
        "long.to_json(sys.argv[2], orient='records')\n"
    )
    out = tmp_path / "long.json"
    subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "review.parquet"), str(out)], check=True
    )
    rebuilt = pd.read_json(out, orient="records")
    assert list(rebuilt["worker"]) == list(long["worker"])
    assert list(rebuilt["completion_tokens"]) == list(long["completion_tokens"])
    assert list(rebuilt["answer"]) == list(long["answer"])


def test_long_paper_is_chunked_and_never_exceeds_a_window(lab: FakeLab) -> None:
    ollama = lab.add("ollama", context_length=2048)  # the model's trained window
    llama = lab.add("llamacpp", context_length=2048)
    text = " ".join(f"Sentence {i} reports a measurement of soil moisture." for i in range(900))
    paper = Paper.from_text("long.txt", text, title="A long paper")
    with Cluster(
        [ollama.url.replace("http", "ollama", 1), llama.url.replace("http", "openai", 1)], **FAST
    ) as cluster:
        cluster.check()
        long = cluster.analyze(
            [paper],
            prompts={"q": "Question about {title}:\n{content}"},
            long=True,
            progress=False,
            max_tokens=128,
        )
    (row,) = long.to_dict("records")
    assert row["status"] == "ok" and row["fit"] == "chunked"
    assert row["answer"]
    generations = lab.log.generations()
    assert len(generations) > 3  # several chunks and at least one combine round
    for record in generations:
        assert not record.truncated
        window = record.num_ctx if record.dialect == "ollama" else 2048
        assert record.prompt_tokens + (record.max_tokens or 0) <= window
    assert all(
        r.num_ctx and r.num_ctx >= r.prompt_tokens for r in generations if r.dialect == "ollama"
    )


def test_truncate_mode_is_flagged(lab: FakeLab) -> None:
    server = lab.add("lm_studio", context_length=2048)
    paper = Paper.from_text("long.txt", "word " * 10000, title="Long")
    with Cluster([server.url], **FAST) as cluster:
        long = cluster.analyze(
            [paper], prompts={"q": "{content}\nSummary:"}, fit="truncate", long=True, progress=False
        )
    assert long.loc[0, "fit"] == "truncated" and long.loc[0, "status"] == "ok"
    assert len(server.log.generations()) == 1


def test_bad_papers_are_listed_not_sent(lab: FakeLab, tmp_path: Path, corpus: Path) -> None:
    for name in (
        "bmc-trauma-2010-dvt-review.pdf",
        "bad-password-required-hindawi-2010-rehab.pdf",
        "bad-truncated-peerj-cs-2017-vespa.pdf",
    ):
        shutil.copy(corpus / name, tmp_path / name)
    (tmp_path / "empty.txt").write_text("")
    server = lab.add("ollama", context_length=32768)
    with Cluster([server.url], **FAST) as cluster:
        long = cluster.analyze(
            tmp_path, prompts=["What was studied?", "How?"], long=True, progress=False
        )
    long = long[long["prompt"] == long["prompt"].iloc[0]]
    status = dict(zip(long["paper"], long["status"], strict=True))
    assert status == {
        "bad-password-required-hindawi-2010-rehab.pdf": "encrypted",
        "bad-truncated-peerj-cs-2017-vespa.pdf": "corrupt",
        "bmc-trauma-2010-dvt-review.pdf": "ok",
        "empty.txt": "empty",
    }
    errors = dict(zip(long["paper"], long["error"], strict=True))
    assert "password" in errors["bad-password-required-hindawi-2010-rehab.pdf"]
    assert len(server.log.generations()) == 2
    summary = long.attrs["dllm_summary"]  # papers counted as papers, tasks as tasks
    assert "4 papers x 2 prompts: 2/8 tasks answered" in summary
    assert "1 paper unreadable (encrypted), 1 paper unreadable (corrupt)" in summary


def test_failed_tasks_do_not_hide_the_others(lab: FakeLab) -> None:
    good = lab.add("openai", context_length=32768)
    papers = [Paper.from_text(f"p{i}.txt", f"Paper number {i} about rivers.") for i in range(4)]
    one_at_a_time = {
        "id": "w",
        "host": "127.0.0.1",
        "port": good.port,
        "type": "openai",
        "max_concurrent_requests": 1,
    }
    with Cluster([one_at_a_time], max_retries=0, **FAST) as cluster:
        good.update(error_rate=0.5, seed=11)  # the same draws every run: some fail
        long = cluster.analyze(papers, prompts=["What is it about?"], long=True, progress=False)
    assert set(long["status"]) <= {"ok", "failed"}
    failed = long[long["status"] == "failed"]
    assert len(failed) >= 1 and failed["error"].str.contains("HTTP 500").all()
    assert long[long["status"] == "ok"]["answer"].notna().all()
    wide = long.dllm.wide()
    assert wide.iloc[:, 0].isna().sum() == len(failed)
    assert "failed (BadResponse)" in long.attrs["dllm_summary"]


def test_template_injection_is_refused_before_any_request(lab: FakeLab) -> None:
    server = lab.add("openai")
    with (
        Cluster([server.url.replace("http", "openai", 1)], **FAST) as cluster,
        pytest.raises(TemplateError, match=r"content\.__class__"),
    ):
        cluster.analyze(
            SAMPLE_PAPERS, prompts={"x": "{content.__class__} {content}"}, progress=False
        )
    assert len(server.log.generations()) == 0


def test_paper_text_is_never_read_as_a_template(lab: FakeLab) -> None:
    server = lab.add("openai", context_length=32768)
    text = "We study {title} and {content.__class__} and {0} and {{}} in the text."
    paper = Paper.from_text("tricky.txt", text, title="Tricky")
    template = "Title: {title}\n{content}\nAnswer:"
    with Cluster([server.url.replace("http", "openai", 1)], **FAST) as cluster:
        df = cluster.analyze([paper], prompts={"q": template}, progress=False)
    sent = template.replace("{title}", "Tricky").replace("{content}", paper.text)
    assert df.loc["tricky.txt", "q"].startswith(expected_echo(sent))


def test_exports_round_trip(lab: FakeLab, tmp_path: Path) -> None:
    server = lab.add("ollama", context_length=32768)
    papers = [Paper.from_text("a.txt", "Alpha paper."), Paper.from_text("b.txt", "Beta paper.")]
    with Cluster([server.url], **FAST) as cluster:
        long = cluster.analyze(
            papers, prompts=["What is it?", "Who wrote it?"], long=True, progress=False
        )
    wide = long.dllm.wide()
    for frame, name in ((long, "long"), (wide, "wide")):
        frame.to_parquet(tmp_path / f"{name}.parquet")
        back = pd.read_parquet(tmp_path / f"{name}.parquet")
        pd.testing.assert_frame_equal(back, frame, check_like=False)
        frame.to_csv(tmp_path / f"{name}.csv")
        assert (tmp_path / f"{name}.csv").read_text().count("\n") >= len(frame) + 1
    report = long.dllm.to_json_report(tmp_path / "report.json")
    assert set(report) >= ORIGINAL_REPORT_FIELDS
    assert report["files_processed"] == 2 and report["total_tasks"] == 4
    assert report["successful"] == 4 and report["success_rate"] == 100.0
    assert report["prompts_used"] == 2
    entry = report["results"][0]
    assert set(entry) >= {"file", "prompt_template", "success", "response"}
    assert set(entry["response"]) >= {"model", "response"}


def test_slow_and_fast_workers_share_an_analysis(lab: FakeLab) -> None:
    # Together they finish sooner than the fast one alone, so both must get work.
    fast = lab.add("openai", behaviour=Behaviour(base_latency=0.02, slots=4, context_length=32768))
    slow = lab.add("ollama", behaviour=Behaviour(base_latency=0.05, slots=2, context_length=32768))
    papers = [Paper.from_text(f"p{i}.txt", f"Paper {i}.") for i in range(20)]
    with Cluster([fast.url.replace("http", "openai", 1), slow.url], **FAST) as cluster:
        long = cluster.analyze(papers, prompts=["Topic?", "Method?"], long=True, progress=False)
    assert (long["status"] == "ok").all()
    assert long["worker"].nunique() == 2


def test_a_part_a_server_refuses_as_too_long_is_split_again_and_answered(
    lab: FakeLab, tmp_path: Path
) -> None:
    # The issue's 10 MB case, smaller: the workers' windows are believed to be 32,768 tokens
    # (the config says so) but the servers run with 2,048. Every whole-paper prompt is
    # refused; the part is split again until it fits, and every cell is answered.
    text = " ".join(f"Sentence {i} about soil moisture and drought." for i in range(900))
    (tmp_path / "long.txt").write_text(text, encoding="utf-8")
    servers = [lab.add("openai", context_length=2048) for _ in range(2)]
    workers = [
        {"id": f"w{i}", "host": "127.0.0.1", "port": s.port, "type": "openai",
         "context_length": 32768}
        for i, s in enumerate(servers)
    ]  # fmt: skip
    prompts = {"gist": "Gist: {content}", "method": "Method: {content}"}
    with Cluster(workers, store=tmp_path / "store.sqlite", **FAST) as cluster:
        long = cluster.analyze(tmp_path, prompts=prompts, long=True, progress=False, max_tokens=64)
    assert list(long["status"]) == ["ok", "ok"]
    assert list(long["fit"]) == ["chunked", "chunked"]
    refused = [r for r in lab.log.records() if r.outcome == "context_exceeded"]
    answered = [r for r in lab.log.records() if r.is_generation and r.outcome == "ok"]
    assert refused, "the servers never refused a part: the test does not test healing"
    assert answered and all((r.prompt_tokens or 0) <= 2048 for r in answered)
