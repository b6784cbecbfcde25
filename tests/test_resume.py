"""Nothing lost: an interrupted or killed analyze() resumes without asking anything twice."""

from __future__ import annotations

import _thread
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dllm_notebook import Cluster, Paper, ResultStore
from dllm_notebook.testing import Behaviour, FakeLab

from .conftest import FAST, stored_digests

PROMPTS = {f"q{j}": f"Question {j} [[q{j}]] about {{title}}:\n{{content}}" for j in range(5)}
CHILD = textwrap.dedent(
    """
    import json, sys
    from dllm_notebook import Cluster, Paper
    prompts = {f"q{j}": f"Question {j} [[q{j}]] about {{title}}:\\n{{content}}" for j in range(5)}
    papers = [Paper.from_text(f"paper-{i:02d}.txt", f"Paper {i} on soil [[p{i}]].")
              for i in range(40)]
    with Cluster(json.loads(sys.argv[1]), store=sys.argv[2], hedge=False) as cluster:
        long = cluster.analyze(papers, prompts=prompts, long=True, progress=False)
    print(json.dumps(long["status"].value_counts().to_dict()))
    """
)


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def lab_process(tmp_path: Path) -> Iterator[list[dict[str, Any]]]:
    """Two slow fake servers in another process, so their logs outlive a killed client."""
    spec = {
        "servers": [
            {"dialect": "openai", "count": 2, "behaviour": {"base_latency": 0.05, "slots": 2}}
        ]
    }
    (tmp_path / "lab.json").write_text(json.dumps(spec))
    lab = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dllm_notebook.testing",
            "lab",
            "--spec",
            str(tmp_path / "lab.json"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert lab.stdout is not None
        servers = [json.loads(lab.stdout.readline()) for _ in range(2)]
        yield [
            {
                "id": s["id"],
                "host": "127.0.0.1",
                "port": s["port"],
                "type": "openai",
                "max_concurrent_requests": 2,
            }
            for s in servers
        ]
    finally:
        lab.send_signal(signal.SIGTERM)
        lab.wait(timeout=30)
        if lab.stdout is not None:
            lab.stdout.close()


def generation_log(workers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for w in workers:
        reply = httpx.get(f"http://127.0.0.1:{w['port']}/_fake/log", timeout=10)
        records += [r for r in reply.json()["records"] if r["digest"]]
    return records


def test_sigkill_mid_run_then_rerun_finishes_without_asking_twice(
    lab_process: list[dict[str, Any]], tmp_path: Path
) -> None:
    path = tmp_path / "results.sqlite"
    args = [sys.executable, "-c", CHILD, json.dumps(lab_process), str(path)]
    child = subprocess.Popen(args, stdout=subprocess.DEVNULL, cwd=tmp_path)
    wait_until(lambda: len(stored_digests(path)) >= 60, "60 stored answers")
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL

    check = sqlite3.connect(path)
    assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    check.close()
    stored = stored_digests(path)
    assert 60 <= len(stored) < 200  # killed partway

    rerun_started = time.time()
    out = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, timeout=240)
    assert out.returncode == 0, out.stderr
    statuses = json.loads(out.stdout.strip().splitlines()[-1])
    assert statuses == {"cached": len(stored), "ok": 200 - len(stored)}

    records = generation_log(lab_process)
    after = [r for r in records if r["wall_time"] >= rerun_started]
    assert not {r["digest"] for r in after} & stored  # nothing stored was asked again
    answered = Counter(r["digest"] for r in after if r["outcome"] == "ok")
    assert max(answered.values()) == 1 and len(answered) == 200 - len(stored)
    assert stored_digests(path) == stored | set(answered)
    assert ResultStore(path).integrity_check() == "ok"


def test_interrupt_keeps_every_answer_and_rerun_resumes(
    lab: FakeLab, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    servers = [lab.add("openai", behaviour=Behaviour(base_latency=0.5, slots=2)) for _ in range(2)]
    workers = [
        {"id": f"w{i}", "host": "127.0.0.1", "port": s.port, "type": "openai"}
        for i, s in enumerate(servers)
    ]
    papers = [Paper.from_text(f"p{i}.txt", f"Paper {i} on rivers [[p{i}]].") for i in range(12)]
    path = tmp_path / "results.sqlite"

    def interrupt_after_some_answers() -> None:
        wait_until(lambda: len(stored_digests(path)) >= 5, "5 stored answers")
        _thread.interrupt_main()

    # Ctrl-C must raise KeyboardInterrupt here, whatever handler an earlier test left.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    request.addfinalizer(lambda: signal.signal(signal.SIGINT, previous))
    with Cluster(workers, store=path, **FAST) as cluster:
        threading.Thread(target=interrupt_after_some_answers, daemon=True).start()
        with pytest.raises(KeyboardInterrupt):
            cluster.analyze(papers, prompts=PROMPTS, progress=False)
        assert cluster.last_analysis is not None
        partial = cluster.last_analysis.frame(long=True)
        counts = partial["status"].value_counts().to_dict()
        assert set(counts) == {"ok", "pending"} and counts["ok"] >= 5
        # Every answer in the partial table is in the store, and only those.
        history = cluster.history(run="last")
        assert (history["error"].isna()).sum() == counts["ok"] == len(stored_digests(path))
        assert cluster.runs()["status"].tolist() == ["interrupted"]
        # The requests in flight were cancelled: the servers saw the client go.
        wait_until(
            lambda: all(r.outcome != "pending" for r in lab.log.generations()),
            "the servers to see every request end",
            timeout=10,
        )
        assert any(r.outcome == "client_gone" for r in lab.log.generations())

        stored = stored_digests(path)
        rerun_started = time.time()
        again = cluster.analyze(papers, prompts=PROMPTS, long=True, progress=False)
        assert again["status"].value_counts().to_dict() == {
            "cached": counts["ok"],
            "ok": 60 - counts["ok"],
        }
        assert cluster.runs()["status"].tolist() == ["interrupted", "finished"]
    asked_again = {r.digest for r in lab.log.generations() if r.wall_time >= rerun_started}
    assert not asked_again & stored  # nothing stored was sent again
    assert len(lab.log.generation_counts()) == 60
