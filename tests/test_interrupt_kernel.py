"""'Interrupt kernel' during analyze() in a real Jupyter kernel: the kernel lives on, every
finished answer is in the store, the partial table is reachable, and a re-run resumes."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dllm_notebook.testing import Behaviour, FakeLab

from .conftest import stored_digests

pytestmark = pytest.mark.notebook

jupyter_client = pytest.importorskip("jupyter_client", reason="needs jupyter_client (dev group)")
pytest.importorskip("ipykernel", reason="needs ipykernel (dev group)")


@pytest.fixture
def kernel(tmp_path: Path) -> Iterator[Any]:
    from jupyter_client.manager import start_new_kernel

    manager, client = start_new_kernel(kernel_name="python3", cwd=str(tmp_path))
    try:
        yield manager, client
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def collect(client: Any, msg_id: str, timeout: float = 120.0) -> tuple[str, dict[str, Any]]:
    """The cell's printed output and its execute_reply content."""
    output: list[str] = []
    while True:
        msg = client.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "stream":
            output.append(msg["content"]["text"])
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
    while True:
        reply = client.get_shell_msg(timeout=timeout)
        if reply["parent_header"].get("msg_id") == msg_id:
            return "".join(output), reply["content"]


def run_cell(client: Any, code: str) -> str:
    output, reply = collect(client, client.execute(code))
    assert reply["status"] == "ok", reply
    return output


def stored_answers(path: Path) -> int:
    return len(stored_digests(path))


def test_interrupt_kernel_mid_analyze(kernel: Any, lab: FakeLab, tmp_path: Path) -> None:
    manager, client = kernel
    servers = [lab.add("openai", behaviour=Behaviour(base_latency=0.25, slots=2)) for _ in range(2)]
    ports = [s.port for s in servers]
    store = tmp_path / "notebook-store.sqlite"
    run_cell(
        client,
        f"""
import json
from dllm_notebook import Cluster, Paper
workers = [{{"id": f"mac{{i}}", "host": "127.0.0.1", "port": p, "type": "openai"}}
           for i, p in enumerate({ports})]
cluster = Cluster(workers, store={str(store)!r}, health_check_interval=1.0)
papers = [Paper.from_text(f"p{{i}}.txt", f"Paper {{i}} on wetlands [[p{{i}}]].") for i in range(20)]
prompts = {{"aim": "Aim of {{title}}? [[aim]] {{content}}",
            "method": "Method of {{title}}? [[method]] {{content}}"}}
""",
    )
    analyze = "df = cluster.analyze(papers, prompts=prompts, progress=False)"
    msg_id = client.execute(analyze)
    deadline = time.monotonic() + 60
    while stored_answers(store) < 4:
        assert time.monotonic() < deadline, "no answers were stored"
        time.sleep(0.05)
    manager.interrupt_kernel()
    output, reply = collect(client, msg_id)
    assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt"
    assert "Interrupted:" in output and "run the same analyze() again to resume" in output
    assert manager.is_alive()

    # The in-flight requests were cancelled: every request the servers saw has ended.
    deadline = time.monotonic() + 10
    while any(r.outcome == "pending" for r in lab.log.generations()):
        assert time.monotonic() < deadline, "requests still in flight after the interrupt"
        time.sleep(0.05)
    assert any(r.outcome == "client_gone" for r in lab.log.generations())

    partial = json.loads(
        run_cell(
            client,
            "print(json.dumps(cluster.last_analysis.frame(long=True)"
            "['status'].value_counts().to_dict()))",
        )
    )
    assert set(partial) == {"ok", "pending"}
    assert partial["ok"] == stored_answers(store)  # every finished answer is in the store

    stored = stored_digests(store)
    rerun_started = time.time()
    counts = json.loads(
        run_cell(
            client,
            analyze.replace("progress=False", "progress=False, long=True")
            + "\nprint(json.dumps(df['status'].value_counts().to_dict()))",
        )
    )
    assert counts == {"cached": partial["ok"], "ok": 40 - partial["ok"]}
    asked_again = {r.digest for r in lab.log.generations() if r.wall_time >= rerun_started}
    assert not asked_again & stored  # nothing stored was sent again
    assert len(lab.log.generation_counts()) == 40
