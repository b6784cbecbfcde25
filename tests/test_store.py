"""The result store: where it lives, keys, history, migrations (reuse and resume through
``analyze()``: tests/test_runner.py)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from dllm_notebook import Cluster, DllmError, Paper, ResultStore
from dllm_notebook._results.store import (
    DEFAULT,
    MIGRATIONS,
    migrate,
    request_key,
    resolve_store,
    task_key,
)
from dllm_notebook.testing import Behaviour, FakeLab, FakeServer

from .conftest import FAST

PROMPTS = {
    "aim": "What is the aim of {title}? [[aim]]\n{content}",
    "method": "Which method does {title} use? [[method]]\n{content}",
}


def papers(n: int = 3) -> list[Paper]:
    return [
        Paper.from_text(f"paper-{i}.txt", f"Paper {i} measures soil moisture [[p{i}]].")
        for i in range(n)
    ]


def sent(lab: FakeLab) -> int:
    """Answers the fake servers generated so far."""
    return sum(lab.log.generation_counts().values())


def worker(server: FakeServer, wid: str = "w1", **extra: Any) -> dict[str, Any]:
    return {"id": wid, "host": "127.0.0.1", "port": server.port, "type": "openai", **extra}


# -- where it lives ------------------------------------------------------------------------
def test_default_store_is_project_local_and_created_on_first_use(
    lab: FakeLab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DLLM_STORE", raising=False)
    monkeypatch.chdir(tmp_path)
    server = lab.add("openai")
    with Cluster([worker(server)], **FAST) as cluster:
        assert cluster.store is not None
        assert cluster.store.path == tmp_path / ".dllm" / "results.sqlite"
        cluster.ask("Hello [[x]]")  # ask() does not use the store
        assert not (tmp_path / ".dllm").exists()
        cluster.analyze(papers(1), prompts=PROMPTS, progress=False)
    assert (tmp_path / ".dllm" / "results.sqlite").is_file()


def test_store_locations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DLLM_STORE", "off")
    assert resolve_store(DEFAULT) is None
    monkeypatch.setenv("DLLM_STORE", str(tmp_path / "env.sqlite"))
    store = resolve_store(DEFAULT)
    assert store is not None and store.path == tmp_path / "env.sqlite"
    monkeypatch.setenv("DLLM_CACHE_DIR", str(tmp_path / "cache"))
    user = resolve_store("user")
    assert user is not None and user.path == tmp_path / "cache" / "results.sqlite"
    folder = resolve_store(tmp_path)
    assert folder is not None and folder.path == tmp_path / "results.sqlite"
    assert resolve_store(None) is None and resolve_store(False) is None
    mine = ResultStore(tmp_path / "mine.sqlite")
    assert resolve_store(mine) is mine
    with pytest.raises(TypeError, match="give a path"):
        resolve_store(42)


# -- keys -----------------------------------------------------------------------------------
def test_key_changes_with_every_input_and_only_those() -> None:
    base = request_key("paper-sha", "Prompt", "System", {"max_tokens": 512, "temperature": 0.2})
    assert base == request_key(
        "paper-sha", "Prompt", "System", {"temperature": 0.2, "max_tokens": 512.0}
    )
    for changed in (
        request_key("other-paper", "Prompt", "System", {"max_tokens": 512, "temperature": 0.2}),
        request_key("paper-sha", "Prompt!", "System", {"max_tokens": 512, "temperature": 0.2}),
        request_key("paper-sha", "Prompt", None, {"max_tokens": 512, "temperature": 0.2}),
        request_key("paper-sha", "Prompt", "System", {"max_tokens": 512, "temperature": 0.3}),
    ):
        assert changed != base
    assert task_key(base, "llama3.2") == task_key(base, "llama3.2:latest")
    assert task_key(base, "llama3.2") != task_key(base, "mistral")


# -- the long form ---------------------------------------------------------------------------
def test_long_form_from_the_store_matches_the_in_memory_one(lab: FakeLab, tmp_path: Path) -> None:
    server = lab.add("openai")
    bad = Paper.from_text("empty.txt", "   ")
    with Cluster([worker(server)], store=tmp_path / "s.sqlite", **FAST) as cluster:
        stored = cluster.analyze([*papers(), bad], prompts=PROMPTS, long=True, progress=False)
        memory = cluster.analyze(
            [*papers(), bad], prompts=PROMPTS, long=True, progress=False, cache=False
        )
    assert stored.dtypes.tolist() == memory.dtypes.tolist()
    columns = ["paper", "title", "prompt", "answer", "status", "error", "fit"]
    assert stored[columns].equals(memory[columns])
    assert stored["status"].tolist()[-2:] == ["empty", "empty"]
    stored.to_parquet(tmp_path / "long.parquet")


# -- history ---------------------------------------------------------------------------------
def test_history_filters_clear_and_export(lab: FakeLab, tmp_path: Path) -> None:
    one = lab.add("openai")
    two = lab.add("openai", behaviour=Behaviour(base_latency=0.01))
    store = ResultStore(tmp_path / "results.sqlite")
    with Cluster([worker(one, "one"), worker(two, "two")], store=store, **FAST) as cluster:
        cluster.analyze(papers(), prompts=PROMPTS, progress=False)
        first_run = cluster.last_analysis.run_id if cluster.last_analysis else ""
        cluster.analyze(papers(), prompts=PROMPTS, progress=False, refresh=True)
        history = cluster.history()
        assert len(history) == 12 and history["at"].is_monotonic_increasing
        assert set(history["worker"]) == {"one", "two"}
        assert history["completion_tokens"].gt(0).all() and history["latency_s"].gt(0).all()
        assert history["prompt_text"].isna().all()  # only hashes unless keep_prompts=True
        assert len(cluster.history(run=first_run)) == 6
        assert set(cluster.history(run="last")["run_id"]) != {first_run}
        assert set(cluster.history(paper="paper-1.txt")["paper"]) == {"paper-1.txt"}
        assert len(cluster.history(worker=["one", "two"])) == 12
        assert cluster.history()["cached"].sum() == 6  # the newest answer of each task
        runs = cluster.runs()
        assert runs["status"].tolist() == ["finished", "finished"]
        assert runs["ok"].tolist() == [6, 6] and runs["tasks"].tolist() == [6, 6]
        history.to_parquet(tmp_path / "history.parquet")
        copy = store.backup(tmp_path / "copy.sqlite")
        assert len(ResultStore(copy).history()) == 12
        assert store.clear_history() == 6  # the six answers the cache needs stay
        again = cluster.analyze(papers(), prompts=PROMPTS, long=True, progress=False)
        assert set(again["status"]) == {"cached"}
        store.clear()
        assert cluster.history().empty and cluster.runs().empty
        fresh = cluster.analyze(papers(), prompts=PROMPTS, long=True, progress=False)
        assert set(fresh["status"]) == {"ok"}


def test_keep_prompts_and_no_store(lab: FakeLab, tmp_path: Path) -> None:
    server = lab.add("openai")
    store = ResultStore(tmp_path / "results.sqlite", keep_prompts=True)
    with Cluster([worker(server)], store=store, **FAST) as cluster:
        cluster.analyze(papers(1), prompts=PROMPTS, progress=False)
        texts = cluster.history()["prompt_text"].tolist()
    assert all("[[p0]]" in t for t in texts)
    with Cluster([worker(server)], store=None, **FAST) as cluster:
        frame = cluster.analyze(papers(1), prompts=PROMPTS, long=True, progress=False)
        assert set(frame["status"]) == {"ok"}
        with pytest.raises(DllmError, match="no result store"):
            cluster.history()


def test_api_keys_never_reach_the_store(lab: FakeLab, tmp_path: Path) -> None:
    server = lab.add("openai")
    secret = "sk-do-not-store-4f9a1c"
    path = tmp_path / "results.sqlite"
    with Cluster([worker(server, api_key=secret)], store=path, **FAST) as cluster:
        cluster.analyze(papers(), prompts=PROMPTS, progress=False)
        for name in ("results.sqlite", "results.sqlite-wal"):
            file = tmp_path / name
            assert not file.exists() or secret.encode() not in file.read_bytes()
    assert secret.encode() not in path.read_bytes()


# -- the file ---------------------------------------------------------------------------------
def test_a_store_from_migration_1_opens_after_the_later_ones(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    assert migrate(conn, upto=1) == 1
    conn.execute(
        "INSERT INTO runs (run_id, started_at, status, papers, prompts, tasks, options) "
        "VALUES ('r1', 1700000000, 'finished', 1, 1, 1, '{}')"
    )
    conn.execute(
        "INSERT INTO calls (run_id, at, key, request_key, paper, prompt_sha256, worker, answer) "
        "VALUES ('r1', 1700000001, 'k1', 'rk1', 'old.txt', 'ps', 'mac', 'An old answer')"
    )
    conn.execute("INSERT INTO cache (key, call_id) VALUES ('k1', 1)")
    conn.close()
    store = ResultStore(path)
    assert store.schema_version() == len(MIGRATIONS) == 3
    indexes = {row[0] for row in store.connection().execute("SELECT name FROM sqlite_master")}
    assert {"calls_by_paper", "calls_by_worker"} <= indexes
    cells = {row[1] for row in store.connection().execute("PRAGMA table_info(cells)")}
    assert {"value", "evidence", "quotes", "authors", "year", "doi", "venue", "source"} <= cells
    history = store.history(paper="old.txt", worker="mac")
    assert history["answer"].tolist() == ["An old answer"] and history["cached"].all()
    assert store.lookup(["k1"])["k1"][1].text == "An old answer"
    assert store.integrity_check() == "ok"


def test_unusable_files_say_what_to_do(tmp_path: Path) -> None:
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database, just some text " * 100)
    with pytest.raises(DllmError, match="move it away"):
        ResultStore(junk).history()
    newer = tmp_path / "newer.sqlite"
    with sqlite3.connect(newer) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(DllmError, match="newer dllm_notebook"):
        ResultStore(newer).runs()
    blocked = tmp_path / "file"
    blocked.write_text("a file where the folder should be")
    with pytest.raises(DllmError, match="store=None"):
        ResultStore(blocked / "results.sqlite").history()


WRITER = textwrap.dedent(
    """
    import sys, time
    from dllm_notebook._results.cells import ROW_FIELDS
    from dllm_notebook._results.store import CallRecord, ResultStore
    store = ResultStore(sys.argv[1])
    store.connection()
    start = float(sys.argv[3])
    while time.time() < start:
        time.sleep(0.001)
    empty = dict.fromkeys(CallRecord.__dataclass_fields__)
    for i in range(int(sys.argv[4])):
        key = f"{sys.argv[2]}-{i}"
        call = CallRecord(**{**empty, "run_id": "r", "at": time.time(), "key": key,
                             "request_key": key, "prompt_sha256": key, "answer": "yes"})
        store.record(call, [("r-" + sys.argv[2], i) + (None,) * len(ROW_FIELDS)])
    """
)


def test_two_processes_write_the_same_store_at_once(tmp_path: Path) -> None:
    import time

    path = tmp_path / "shared.sqlite"
    ResultStore(path).integrity_check()  # create it
    start = str(time.time() + 2.0)  # both start writing at the same moment
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(path), name, start, "400"])
        for name in ("left", "right")
    ]
    assert [w.wait(timeout=120) for w in writers] == [0, 0]
    store = ResultStore(path)
    assert store.integrity_check() == "ok"
    conn = store.connection()
    assert conn.execute("SELECT count(*) FROM calls").fetchone()[0] == 800
    assert conn.execute("SELECT count(*) FROM cells").fetchone()[0] == 800
    assert set(store.lookup([f"left-{i}" for i in range(400)])) == {f"left-{i}" for i in range(400)}


def test_threads_opening_a_new_store_at_once_all_get_in(tmp_path: Path) -> None:
    # Two jobs (or notebooks) that open a new store together each switch it to WAL;
    # SQLite refuses one of them at once unless the store waits its turn.
    import threading

    failures: list[BaseException] = []
    for attempt in range(40):
        store = ResultStore(tmp_path / f"new-{attempt}.sqlite")
        start = threading.Barrier(4)

        def open_it(store: ResultStore = store, start: threading.Barrier = start) -> None:
            start.wait()
            try:
                store.connection().execute("SELECT count(*) FROM calls").fetchone()
            except BaseException as exc:
                failures.append(exc)

        threads = [threading.Thread(target=open_it) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        store.close()
    assert failures == []


def test_async_twin_reads_and_writes_the_same_store(lab: FakeLab, tmp_path: Path) -> None:
    import asyncio

    server = lab.add("openai")

    async def twice() -> list[set[str]]:
        async with Cluster([worker(server)], store=tmp_path / "s.sqlite", **FAST) as cluster:
            first = await cluster.aanalyze(papers(), prompts=PROMPTS, long=True, progress=False)
            again = await cluster.aanalyze(papers(), prompts=PROMPTS, long=True, progress=False)
        return [set(first["status"]), set(again["status"])]

    assert asyncio.run(twice()) == [{"ok"}, {"cached"}]
    assert sent(lab) == 6
    assert ResultStore(tmp_path / "s.sqlite").runs()["status"].tolist() == ["finished"] * 2
