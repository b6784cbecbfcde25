"""The ``dllm`` command end to end: each subcommand as a subprocess on loopback fakes."""

from __future__ import annotations

import json
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from dllm_notebook import Cluster
from dllm_notebook.cli import cli, main
from dllm_notebook.cli._docs import REGENERATE, render_docs
from dllm_notebook.testing import Behaviour, FakeLab, FakeZotero, expected_echo

from .cli_helpers import dllm, free_port, worker, write_config
from .conftest import ORIGINAL_REPORT_FIELDS, ROOT, SAMPLE_PAPERS


# -- analyze ------------------------------------------------------------------------------
def test_analyze_writes_the_original_tools_json_report(lab: FakeLab, tmp_path: Path) -> None:
    studio = lab.add("lm_studio", models=["qwen"])
    ollama = lab.add("ollama", models=["llama3.2"])
    config = write_config(
        tmp_path / "workers.json",
        [worker(studio, "studio", "lm_studio"), worker(ollama, "ollama", "ollama")],
    )
    out = tmp_path / "out.json"
    result = dllm(
        "analyze", str(SAMPLE_PAPERS), "--preset", "research", "-o", str(out), "-c", str(config),
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"Wrote {out}" in result.stdout
    report = json.loads(out.read_text(encoding="utf-8"))
    assert set(report) >= ORIGINAL_REPORT_FIELDS
    assert report["files_processed"] == 5
    assert report["total_tasks"] == report["successful"] == 25
    assert report["failed"] == 0 and report["success_rate"] == 100.0
    assert report["total_time_seconds"] > 0 and report["tasks_per_second"] > 0
    papers = {p.name for p in SAMPLE_PAPERS.iterdir() if p.suffix == ".pdf"}
    assert {r["file"] for r in report["results"]} == papers
    assert len({r["prompt_template"] for r in report["results"]}) == 5
    for entry in report["results"]:
        assert entry["success"] is True
        assert entry["response"]["response"].startswith("ECHO ")
        assert entry["response"]["model"] in ("qwen", "llama3.2:latest")

    # Running the same job again is answered from the result store and still succeeds.
    sent = sum(lab.log.generation_counts().values())
    again = dllm(
        "analyze", str(SAMPLE_PAPERS), "--preset", "research", "-o", str(out), "-c", str(config),
        cwd=tmp_path,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert sum(lab.log.generation_counts().values()) == sent
    assert json.loads(out.read_text(encoding="utf-8"))["successful"] == 25
    refreshed = dllm(
        "analyze", str(SAMPLE_PAPERS), "--preset", "research", "-o", str(out), "-c", str(config),
        "--refresh", cwd=tmp_path,
    )  # fmt: skip
    assert refreshed.returncode == 0, refreshed.stderr
    assert sum(lab.log.generation_counts().values()) == sent + 25


def test_analyze_exits_3_when_tasks_fail_and_accepts_dash_i(lab: FakeLab, tmp_path: Path) -> None:
    broken = lab.add("openai", models=["m"], behaviour=Behaviour(error_rate=1.0))
    config = write_config(
        tmp_path / "workers.json", [worker(broken, "broken", "openai")], max_retries=0
    )
    papers = tmp_path / "papers"
    papers.mkdir()
    (papers / "note.txt").write_text("A short paper about soil.", encoding="utf-8")
    out = tmp_path / "deep" / "table.csv"
    result = dllm(
        "analyze", "-i", str(papers), "-p", "Summarise {content}", "-c", str(config),
        "-o", str(out), cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 3, result.stderr
    assert out.exists()
    assert "Traceback" not in result.stderr


def test_analyze_rejects_an_unknown_output_type(tmp_path: Path) -> None:
    result = dllm("analyze", str(SAMPLE_PAPERS), "-o", "results.txt", cwd=tmp_path)
    assert result.returncode == 2
    assert "use a .parquet, .csv, .xlsx, .md, .bib, .ris or .json file name" in result.stderr


# -- check --------------------------------------------------------------------------------
def test_check_with_test_passes_when_every_worker_is_healthy(lab: FakeLab, tmp_path: Path) -> None:
    studio = lab.add("lm_studio", models=["qwen"], context_length=8192)
    config = write_config(tmp_path / "w.json", [worker(studio, "studio", "lm_studio")])
    result = dllm("check", "--config", str(config), "--test", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Healthy workers: 1/1" in result.stdout
    line = next(x for x in result.stdout.splitlines() if x.startswith("studio"))
    assert "qwen" in line and "8192" in line and "healthy" in line
    assert len(studio.log.generations()) == 1  # the --test prompt


def test_check_test_sends_each_prompt_to_its_own_worker_and_names_a_failure(
    lab: FakeLab, tmp_path: Path
) -> None:
    good = lab.add("openai", models=["m"])
    broken = lab.add("openai", models=["m"], behaviour=Behaviour(error_rate=1.0))
    config = write_config(
        tmp_path / "w.json", [worker(good, "good", "openai"), worker(broken, "broken", "openai")]
    )
    result = dllm("check", "-c", str(config), "--test", cwd=tmp_path)
    assert result.returncode == 3, result.stderr
    assert "Healthy workers: 1/2" in result.stdout
    problem = next(x for x in result.stdout.splitlines() if "broken:" in x)
    assert "the test prompt failed" in problem and "HTTP 500" in problem
    assert len(good.log.generations()) == 1  # its own test prompt, not the broken one's
    assert len(broken.log.generations()) >= 1


def test_check_names_the_dead_worker_and_exits_3(lab: FakeLab, tmp_path: Path) -> None:
    alive = lab.add("ollama", models=["llama3.2"])
    config = write_config(
        tmp_path / "w.json",
        [worker(alive, "alive", "ollama"), worker(free_port(), "mac-asleep", "ollama")],
    )
    result = dllm("-v", "check", "-c", str(config), cwd=tmp_path)
    assert result.returncode == 3
    assert "DEBUG " in result.stderr  # -v turns on debug logging
    assert "Healthy workers: 1/2" in result.stdout
    problem = next(x for x in result.stdout.splitlines() if "mac-asleep:" in x)
    assert "cannot reach" in problem and "is the server running" in problem


def test_check_exits_4_when_no_worker_is_healthy(tmp_path: Path) -> None:
    config = write_config(tmp_path / "w.json", [worker(free_port(), "gone", "lm_studio")])
    result = dllm("check", "-c", str(config), cwd=tmp_path, env={"LOG_LEVEL": "DEBUG"})
    assert result.returncode == 4
    assert "Healthy workers: 0/1" in result.stdout
    assert "DEBUG " in result.stderr


def test_a_bad_config_is_one_line_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "broken.json"
    bad.write_text('{"workers": [', encoding="utf-8")
    result = dllm("check", "-c", str(bad), cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: invalid configuration: ")
    assert "broken.json: line 1" in lines[0] and "invalid JSON" in lines[0]
    assert "Traceback" not in result.stderr


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "broken.json"
    bad.write_text('{"workers": [{"id": "a", "host": "h", "type": "lmstudio"}]}', "utf-8")
    result = dllm("--debug", "check", "-c", str(bad), cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert "ConfigError" in result.stderr
    assert "did you mean 'lm_studio'?" in result.stderr


# -- chat ---------------------------------------------------------------------------------
def test_chat_names_the_worker_and_streams_the_answer(lab: FakeLab, tmp_path: Path) -> None:
    studio = lab.add("lm_studio", models=["qwen"], behaviour=Behaviour(answer_tokens=20))
    config = write_config(tmp_path / "w.json", [worker(studio, "studio", "lm_studio")])
    question = "What is soil made of? [[c1]]"
    result = dllm("chat", "-c", str(config), cwd=tmp_path, stdin=f"{question}\nexit\n")
    assert result.returncode == 0, result.stderr
    assert "[studio · qwen]" in result.stdout
    assert expected_echo(question) in result.stdout
    assert result.stdout.rstrip().endswith("Bye.")
    (record,) = studio.log.generations()
    assert record.stream is True  # streamed, not sent whole


def test_chat_leaves_cleanly_at_end_of_input(lab: FakeLab, tmp_path: Path) -> None:
    ollama = lab.add("ollama", models=["llama3.2"])
    config = write_config(tmp_path / "w.json", [worker(ollama, "mac", "ollama")])
    result = dllm("chat", "-c", str(config), cwd=tmp_path, stdin="first [[e1]]\nsecond [[e2]]\n")
    assert result.returncode == 0, result.stderr
    assert expected_echo("first [[e1]]") in result.stdout
    assert expected_echo("second [[e2]]") in result.stdout
    assert "Bye." in result.stdout and "Traceback" not in result.stderr


def test_chat_without_a_healthy_worker_exits_4(tmp_path: Path) -> None:
    config = write_config(tmp_path / "w.json", [worker(free_port(), "gone", "ollama")])
    result = dllm("chat", "-c", str(config), cwd=tmp_path, stdin="hello\n")
    assert result.returncode == 4
    assert "No healthy worker among 1" in result.stderr


# -- bench, presets, init -----------------------------------------------------------------
def test_bench_prints_a_table_and_suggestions(lab: FakeLab, tmp_path: Path) -> None:
    mac = lab.add("ollama", models=["llama3.2"], behaviour=Behaviour(slots=2, answer_tokens=8))
    config = write_config(tmp_path / "w.json", [worker(mac, "mac", "ollama")])
    result = dllm("bench", "-c", str(config), "--max-concurrency", "4", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    header, _, row = result.stdout.splitlines()[:3]
    for column in ("latency s", "prompt tok/s", "gen tok/s", "x1 tok/s", "x4 tok/s", "suggested"):
        assert column in header
    assert row.startswith("mac ") and row.rstrip().endswith("(5)")  # configured: the default
    assert mac.log.max_in_flight() <= 2


def test_bench_measures_each_worker_on_its_own_server(lab: FakeLab, tmp_path: Path) -> None:
    servers = [lab.add("openai", behaviour=Behaviour(slots=2, answer_tokens=8)) for _ in range(2)]
    config = write_config(
        tmp_path / "w.json", [worker(s, f"mac-{i}", "openai") for i, s in enumerate(servers)]
    )
    result = dllm("bench", "-c", str(config), "--max-concurrency", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = [x for x in result.stdout.splitlines() if x.startswith("mac-")]
    assert [r.split()[0] for r in rows] == ["mac-0", "mac-1"]
    # three tiny, one long, one counted, then 1 + 2 answers at once: 8 each, none moved
    assert [len(s.log.generations()) for s in servers] == [8, 8]


def test_presets_lists_the_three_presets(tmp_path: Path) -> None:
    result = dllm("presets", cwd=tmp_path)
    assert result.returncode == 0
    names = [line.split(":")[0] for line in result.stdout.splitlines() if ":" in line]
    assert {"research", "summary", "critical"} <= set(names)
    assert "  - research_question" in result.stdout
    assert "note:" not in result.stdout  # the built-ins share their prefix


def test_presets_points_out_a_prompt_that_defeats_the_cache(tmp_path: Path) -> None:
    folder = tmp_path / "presets"
    folder.mkdir()
    (folder / "mine.toml").write_text(
        'description = "x"\n'
        '[[prompts]]\nname = "aim"\ntemplate = "{content}\\nWhat is the aim?"\n'
        '[[prompts]]\nname = "data"\ntemplate = "{content}\\nWhich data?"\n'
        '[[prompts]]\nname = "methods"\ntemplate = "Methods of:\\n{content}"\n',
        encoding="utf-8",
    )
    result = dllm("presets", cwd=tmp_path)
    assert result.returncode == 0
    assert "  note: prompt 'methods' puts 'Methods of:' before {content}" in result.stdout


def test_init_writes_a_workers_file_that_cluster_reads(lab: FakeLab, tmp_path: Path) -> None:
    ollama = lab.add("ollama", models=["llama3.2"])
    studio = lab.add("lm_studio", models=["qwen", "gemma"], loaded=["qwen"])
    answers = [
        "",  # no network scan
        "127.0.0.1", "ollama", str(ollama.port), "", "mac-ollama", "2",
        f"127.0.0.1:{studio.port}", "lm_studio", "", "gemma", "", "",
        "127.0.0.1", "ollama", str(free_port()), "n",  # unreachable: not kept
        "",  # done
    ]  # fmt: skip
    path = tmp_path / "config" / "workers.json"
    result = dllm("init", "-o", str(path), cwd=tmp_path, stdin="\n".join(answers) + "\n")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "answered in" in result.stdout and "cannot reach" in result.stdout
    assert f"Wrote {path} (2 workers)" in result.stdout
    with Cluster.from_config(path) as cluster:
        configs = {w.id: w for w in cluster.workers}
    assert set(configs) == {"mac-ollama", "lmstudio-127.0.0.1"}
    assert configs["mac-ollama"].model == "llama3.2:latest"
    assert configs["mac-ollama"].max_concurrent_requests == 2
    assert (configs["lmstudio-127.0.0.1"].type, configs["lmstudio-127.0.0.1"].model) == (
        "lm_studio",
        "gemma",
    )
    assert len(studio.log.generations()) == 1  # tested as it was added


# -- the command itself -------------------------------------------------------------------
def test_help_documents_every_subcommand_and_the_exit_codes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for name in ("analyze", "bench", "chat", "check", "discover", "init", "presets"):
        assert f"  {name} " in text
    assert "Exit codes:" in text and "130  interrupted" in text


def test_the_console_script_points_at_main() -> None:
    (script,) = entry_points(group="console_scripts", name="dllm")
    assert script.load() is main


def test_docs_cli_md_is_generated_from_the_help() -> None:
    docs = ROOT / "docs" / "cli.md"
    current = docs.read_text(encoding="utf-8") if docs.exists() else ""
    assert current == render_docs(cli), f"docs/cli.md is stale; regenerate it: {REGENERATE}"


# -- reference libraries as INPUT ---------------------------------------------------------
def test_analyze_a_bib_file_and_a_zotero_collection(
    lab: FakeLab, tmp_path: Path, corpus: Path
) -> None:
    server = lab.add("ollama", models=["llama3.2"], context_length=65536)
    config = write_config(tmp_path / "workers.json", [worker(server, "ollama", "ollama")])
    library = tmp_path / "refs.bib"
    library.write_text(
        f"@article{{webb2017, title={{VESPA}}, file={{:{corpus}/peerj-cs-2017-vespa.pdf:PDF}}}}\n"
        "@book{mcelreath2020, title={Statistical Rethinking}}\n",
        encoding="utf-8",
    )
    out = tmp_path / "bib.csv"
    result = dllm(
        "analyze", str(library), "-p", "What was studied?", "-c", str(config), "-o", str(out),
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 3, result.stderr  # like any unreadable paper: no_file
    assert "unreadable (no_file)" in result.stdout + result.stderr
    assert out.read_text(encoding="utf-8-sig").splitlines()[1].startswith("webb2017,")
    assert "mcelreath2020" in out.read_text(encoding="utf-8-sig")
    assert len(server.log.generations()) == 1

    zot = FakeZotero()
    zot.add_item("Review 2026", title="NAR", citation_key="nar2024",
                 pdf=corpus / "nar-2024-gkae252.pdf")  # fmt: skip
    with zot:
        out = tmp_path / "zotero.csv"
        result = dllm(
            "analyze", "zotero:Review 2026", "-p", "What was studied?", "-c", str(config),
            "-o", str(out), cwd=tmp_path, env={"DLLM_ZOTERO_URL": zot.url},
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert out.read_text(encoding="utf-8-sig").splitlines()[1].startswith("nar2024,")
        absent = dllm(
            "analyze", "zotero:Nope", "-p", "What?", "-c", str(config), "-o", str(out),
            cwd=tmp_path, env={"DLLM_ZOTERO_URL": zot.url},
        )  # fmt: skip
    assert absent.returncode == 1 and "no Zotero collection named 'Nope'" in absent.stderr
    assert "Traceback" not in absent.stderr
