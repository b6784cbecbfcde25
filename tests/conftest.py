"""Shared fixtures: a lab of fake LLM servers on loopback, and clusters over them."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from dllm_notebook.testing import FakeLab

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus"
SAMPLE_PAPERS = ROOT / "sample_papers"

# The top-level fields of the original tool's JSON report (process_directory.py).
ORIGINAL_REPORT_FIELDS = {
    "timestamp",
    "files_processed",
    "total_tasks",
    "successful",
    "failed",
    "success_rate",
    "prompts_used",
    "total_time_seconds",
    "tasks_per_second",
    "results",
}

# Short waits so fault tests finish quickly; behaviour is the same as with the defaults.
FAST = {
    "health_check_interval": 1.0,
    "request_timeout": 5.0,
    "probe_timeout": 1.0,
    "no_worker_timeout": 3.0,
    # Each prompt is sent once (tests count generations); tests/test_hedging.py turns it on.
    "hedge": False,
}


@pytest.fixture
def lab() -> Iterator[FakeLab]:
    with FakeLab() as lab:
        yield lab


@pytest.fixture
def corpus() -> Path:
    if not CORPUS.is_dir():
        pytest.skip(f"the shared corpus is not at {CORPUS}")
    return CORPUS


def llama_server_pids(parent: int | None = None) -> set[int]:
    """PIDs of llama.cpp servers that ``parent`` (default: this process) started."""
    owner = str(parent or os.getpid())
    found = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        text = [a.decode(errors="replace") for a in args]
        if state in ("Z", "X") or not any(a.endswith("_local/launch.py") for a in text):
            continue
        if "--parent-pid" in text and text[text.index("--parent-pid") + 1] == owner:
            found.add(int(proc.name))
    return found


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if any llama.cpp server started by the tests outlives them."""
    deadline = time.monotonic() + 15
    left = llama_server_pids()
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = llama_server_pids()
    if left:
        print(f"\nERROR: llama.cpp servers left running after the tests: {sorted(left)}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(autouse=True, scope="session")
def _session_result_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Never write a result store into the project folder (module-scoped clusters too)."""
    patch = pytest.MonkeyPatch()
    patch.setenv("DLLM_STORE", str(tmp_path_factory.mktemp("store") / "session.sqlite"))
    yield
    patch.undo()


@pytest.fixture(autouse=True)
def _isolated_result_store(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each test starts with an empty result store: no answer is reused across tests."""
    monkeypatch.setenv("DLLM_STORE", str(tmp_path_factory.mktemp("store") / "results.sqlite"))


def stored_digests(path: Path) -> set[str]:
    """Prompt hashes of the answers committed to the store (read as another process would)."""
    if not path.exists():
        return set()
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        rows = conn.execute("SELECT prompt_sha256 FROM calls WHERE error IS NULL").fetchall()
    except sqlite3.OperationalError:  # not created yet
        return set()
    finally:
        conn.close()
    return {row[0] for row in rows}


@contextmanager
def served_apart(
    dialect: str, models: list[str], behaviour: dict[str, Any]
) -> Iterator[tuple[subprocess.Popen[str], dict[str, Any]]]:
    """A fake server in a process of its own (``python -m dllm_notebook.testing serve``),
    as another machine's server is: yields the process and the line it printed (its
    ``url``, ``port``, ``dialect`` and ``models``). Terminated on leaving, if still running."""
    command = [sys.executable, "-m", "dllm_notebook.testing", "serve", "--dialect", dialect]
    arguments = ["--models", *models, "--behaviour", json.dumps(behaviour)]
    with subprocess.Popen(
        [*command, *arguments],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    ) as process:
        try:
            assert process.stdout is not None
            yield process, json.loads(process.stdout.readline())
        finally:
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=10)
