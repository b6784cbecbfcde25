"""Integration: the Cluster against real llama.cpp servers (Gemma 3 270M) on loopback."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from dllm_notebook import ChatRequest, Cluster
from dllm_notebook._reading.paper import Paper
from dllm_notebook._reading.papers import load_papers

from .conftest import SAMPLE_PAPERS, llama_server_pids

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        importlib.util.find_spec("xllamacpp") is None,
        reason="needs the local extra: pip install 'dllm-notebook[local]'",
    ),
]

SHORT = {"max_tokens": 48, "temperature": 0.0}


@pytest.fixture(scope="module")
def local() -> Iterator[Cluster]:
    with Cluster.local(n_ctx=4096, request_timeout=240) as cluster:
        yield cluster


def test_health_and_model_listing(local: Cluster) -> None:
    frame = local.check()
    (row,) = frame.to_dict("records")
    assert row["healthy"] and row["type"] == "llama_cpp"
    assert "gemma-3-270m" in row["models"] and row["model"] == local.workers[0].model
    assert row["context_length"] == 4096
    assert local.workers[0].max_concurrent_requests == local.local_servers[0].n_parallel == 2


def test_ask_returns_text_and_real_token_counts(local: Cluster) -> None:
    answer = local.ask("What is the capital of France?", **SHORT)
    assert answer.text.strip()
    assert answer.prompt_tokens is not None and 5 <= answer.prompt_tokens <= 40
    assert answer.completion_tokens is not None and 1 <= answer.completion_tokens <= 48
    assert local.metrics().loc[answer.worker, "successes"] >= 1


def test_analyze_two_papers_two_prompts_fills_every_cell(local: Cluster) -> None:
    papers = load_papers(SAMPLE_PAPERS)[:2]
    prompts = {
        "topic": "Read the paper below.\n\nTitle: {title}\n\n{content}\n\n"
        "Question: What is the topic of this paper?\nAnswer:",
        "method": "Read the paper below.\n\nTitle: {title}\n\n{content}\n\n"
        "Question: What method did the authors use?\nAnswer:",
    }
    df = local.analyze(papers, prompts=prompts, progress=False, **SHORT).dllm.answers()
    assert df.shape == (2, 2)
    assert df.notna().all().all()
    assert all(len(cell.strip()) > 0 for cell in df.to_numpy().ravel())


TYPED_PRESET = """
description = "What kind of study, how big, and what it found, as typed values."
system = "You answer questions about research papers. Use only the paper's text."

[options]
max_tokens = 64
temperature = 0.0

[[prompts]]
name = "design"
type = "category"
choices = ["randomized trial", "cohort", "case-control", "cross-sectional", "simulation", "other"]
template = \"\"\"Title: {title}

{content}

Question: Which study design is this?
Answer:\"\"\"

[[prompts]]
name = "sample_size"
type = "integer"
template = \"\"\"Title: {title}

{content}

Question: How many participants, samples or units did the study have?
Answer:\"\"\"

[[prompts]]
name = "effect"
type = "number"
template = \"\"\"Title: {title}

{content}

Question: What is the main effect size or headline number the study reports?
Answer:\"\"\"

[[prompts]]
name = "replicated"
type = "boolean"
template = \"\"\"Title: {title}

{content}

Question: Is this study a replication of earlier work?
Answer:\"\"\"
"""


def test_a_typed_preset_gives_a_valid_value_of_its_type_in_every_cell(
    local: Cluster, tmp_path: Path
) -> None:
    # Real constrained decoding: the llama_cpp backend sends a compact grammar (no
    # whitespace between JSON tokens), so even the 270M base model finishes every object
    # well inside its 64 tokens.
    preset = tmp_path / "study.toml"
    preset.write_text(TYPED_PRESET, encoding="utf-8")
    wide = local.analyze(SAMPLE_PAPERS, preset=preset, progress=False)
    long = wide.dllm.long()
    assert len(long) == 5 * 4
    assert (long["status"] == "ok").all(), long[["paper", "prompt", "status", "answer"]]
    assert long["value"].notna().all()
    answers = wide.dllm.answers()
    assert answers.notna().all().all()
    assert str(answers["sample_size"].dtype) == "Int64"
    assert str(answers["effect"].dtype) == "Float64"
    assert str(answers["replicated"].dtype) == "boolean"
    assert str(answers["design"].dtype) == "category"
    assert set(answers["design"]) <= set(answers["design"].cat.categories)


def test_a_list_answer_is_a_list_or_invalid_with_its_raw_text_never_coerced(
    local: Cluster,
) -> None:
    # A list has no bound on its items: the base model may loop until max_tokens cuts it
    # off. Such a cell ends invalid with the raw text kept, never with a wrong value.
    paper = load_papers(SAMPLE_PAPERS)[0]
    prompts = {
        "datasets": {
            "template": "Title: {title}\n\n{content}\n\nQuestion: Which datasets were used?",
            "type": "list",
        }
    }
    (row,) = local.analyze(
        [paper], prompts=prompts, long=True, progress=False, max_tokens=48, temperature=0.0
    ).to_dict("records")
    assert row["status"] in ("ok", "invalid")
    if row["status"] == "ok":
        assert isinstance(json.loads(row["value"]), list)
    else:
        assert pd.isna(row["value"]) and row["error"] and row["answer"].startswith('{"answer":[')


def test_a_papers_second_prompt_is_read_from_the_servers_prefix_cache(local: Cluster) -> None:
    # Paper first, question last: the second prompt shares the whole paper with the first,
    # and llama.cpp puts it on the slot that holds it. The tag makes the first one new.
    paper = load_papers(SAMPLE_PAPERS)[2]
    head = f"Run {uuid.uuid4().hex}\nTitle: {paper.title}\n\n{paper.text[:5000]}\n\nQuestion: "
    first = local.ask(ChatRequest(head + "What is the topic?\nAnswer:", options=SHORT))
    second = local.ask(ChatRequest(head + "Which method is used?\nAnswer:", options=SHORT))
    assert first.ok and second.ok, (first.error, second.error)
    assert first.prompt_tokens is not None and first.prompt_tokens > 800
    assert first.cached_tokens is not None and first.cached_tokens < 100
    assert second.cached_tokens is not None
    assert second.cached_tokens >= first.prompt_tokens - 20  # all but the question
    assert first.prefill_s is not None and second.prefill_s is not None
    assert second.prefill_s < first.prefill_s / 3, (first.prefill_s, second.prefill_s)


def test_paper_longer_than_a_small_window_is_chunked() -> None:
    text = "\n\n".join(p.text for p in load_papers(SAMPLE_PAPERS)[:2])
    paper = Paper.from_text("two-papers.txt", text, title="Two sample papers")
    with Cluster.local(n_ctx=1024, request_timeout=240) as small:
        long = small.analyze(
            [paper], prompts=["What is this text about?"], long=True, progress=False, **SHORT
        )
    (row,) = long.to_dict("records")
    assert row["status"] == "ok", row["error"]
    assert row["fit"] == "chunked"
    assert row["answer"].strip()


def test_killing_a_server_mid_run_moves_work_to_the_other() -> None:
    prompts = [f"Name a colour that starts with the letter {c}." for c in "ABCDEFGHIJKL"]
    with Cluster.local(workers=2, n_ctx=1024, request_timeout=120) as cluster:
        victim = cluster.local_servers[0]
        killed = threading.Event()

        def kill_after_first(event: object) -> None:
            if getattr(event, "kind", "") == "task_finished" and not killed.is_set():
                killed.set()
                victim.kill()

        cluster.subscribe(kill_after_first)
        answers = cluster.map(prompts, **SHORT)
        frame = cluster.check()
    assert killed.is_set()
    assert all(a.ok for a in answers), [a.error for a in answers if not a.ok]
    assert not frame.loc["local-1", "healthy"]
    assert "cannot reach" in frame.loc["local-1", "error"]
    assert frame.loc["local-2", "healthy"]


def test_killing_the_only_server_fails_the_rest_clearly() -> None:
    with Cluster.local(
        n_ctx=1024, request_timeout=60, no_worker_timeout=2, health_check_interval=1
    ) as cluster:
        cluster.local_servers[0].kill()
        started = time.monotonic()
        answers = cluster.map(["One?", "Two?"], **SHORT)
        frame = cluster.check()
    assert time.monotonic() - started < 60
    for answer in answers:
        assert not answer.ok
        assert answer.error_type in ("NoHealthyWorkers", "WorkerUnreachable")
        assert "local-1" in (answer.error or "")
    assert not frame.loc["local-1", "healthy"]


def test_no_llama_server_is_left_after_clusters_close() -> None:
    with Cluster.local(n_ctx=512) as cluster:
        pids = [s.pid for s in cluster.local_servers]
        assert all(pid in llama_server_pids() for pid in pids)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and set(pids) & llama_server_pids():
        time.sleep(0.1)
    assert not set(pids) & llama_server_pids()


def test_main_job_command_falls_back_to_a_local_worker(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DLLM_CONFIG"}
    out = tmp_path / "results.parquet"
    paper = SAMPLE_PAPERS / "battery-degradation.pdf"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dllm_notebook",
            "analyze",
            str(paper),
            "-p",
            "What is this paper about?",
            "--max-tokens",
            "32",
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "starting a local llama.cpp worker" in proc.stderr
    table = pd.read_parquet(out)
    assert list(table.index) == ["battery-degradation.pdf"]
    assert table.iloc[0, 0].strip()
    assert "Wrote" in proc.stdout


def test_synthesize_over_the_sample_papers_classifies_every_citation(local: Cluster) -> None:
    """Whatever the small model writes, the synthesis has text and every citation in it
    (if any) is classified: the keys are the sample papers' file names."""
    prompts = {"finding": "{content}\n\nQuestion: What is the main finding?\nAnswer:"}
    table = local.analyze(SAMPLE_PAPERS, prompts=prompts, progress=False, **SHORT)
    synthesis = local.synthesize(table, "What do these papers find?", max_tokens=96, progress=False)
    assert synthesis.text.strip()
    assert list(synthesis.citations.columns)[:4] == ["sentence", "key", "title", "status"]
    assert set(synthesis.citations["status"]) <= {"ok", "unknown", "unsupported"}
    assert len(synthesis.coverage) == len(table)
