"""Background jobs (cluster.submit) and the progress bar, over real HTTP servers on loopback."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from queue import Empty
from typing import Any, NamedTuple

import pandas as pd
import pytest

from dllm_notebook import Cluster, DllmError, Paper, TemplateError
from dllm_notebook._analysis.jobs import Job, JobCancelled
from dllm_notebook._display.progress import WAITING
from dllm_notebook.testing import Behaviour, FakeLab, FakeServer, expected_echo, prompt_digest

from .conftest import FAST

QUESTION = {"topic": "What is {title} about? {content}"}


def papers(count: int, tag: str = "") -> list[Paper]:
    return [Paper.from_text(f"p{i}.txt", f"Paper {i}{tag} on rivers.") for i in range(count)]


def slow(lab: FakeLab, *, seconds: float = 0.25, slots: int = 2) -> FakeServer:
    """A server that takes ``seconds`` per answer (16 tokens) and ``slots`` at once."""
    return lab.add("openai", behaviour=Behaviour(decode_tps=16 / seconds, slots=slots))


def url(server: FakeServer) -> str:
    return server.url.replace("http", "openai", 1)


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def answered(frame: pd.DataFrame) -> int:
    """Answers in a wide table."""
    return int(frame.dllm.answers().notna().sum().sum())


def test_submit_returns_at_once_and_the_notebook_stays_free(lab: FakeLab) -> None:
    # llama.cpp says its 2 slots, so the job keeps 2 requests out and the ask() takes
    # its turn between them (an openai worker would learn its limit, sending more).
    server = lab.add("llamacpp", behaviour=Behaviour(decode_tps=16 / 0.25, slots=2))
    with Cluster([server.url.replace("http", "llamacpp", 1)], **FAST) as cluster:
        job = cluster.submit(papers(12), prompts=QUESTION, progress=False)
        assert job.status in ("queued", "running") and not job.done()
        assert not any(r.generated for r in lab.log.generations())
        assert cluster.jobs == [job]

        # partial() grows while the job runs.
        seen = [answered(job.partial())]
        while len(set(seen)) < 3:
            assert not job.done(), f"the job ended before partial() grew twice: {seen}"
            time.sleep(0.02)
            seen.append(answered(job.partial()))
        assert seen == sorted(seen) and seen[0] == 0

        # Other calls work meanwhile, and share the server with the job.
        answer = cluster.ask("A question of its own")
        assert answer.text.startswith(expected_echo("A question of its own"))
        df = job.result()

    assert job.status == "finished" and job.done()
    assert answered(df) == 12 and list(df.dllm.answers().columns) == ["topic"]
    assert job.progress.done == job.progress.total == 12
    order = [r.digest for r in sorted(lab.log.generations(), key=lambda r: r.received_at)]
    ask = order.index(prompt_digest("A question of its own"))
    assert 0 < ask < len(order) - 1  # job requests went before and after it


def test_result_equals_what_analyze_returns(lab: FakeLab) -> None:
    server = lab.add("openai", behaviour=Behaviour(slots=2))
    given = papers(4)
    prompts = {"topic": "Topic of {title}? {content}", "method": "Method of {title}? {content}"}
    with Cluster([url(server)], **FAST) as cluster:
        long_job = cluster.submit(given, prompts=prompts, long=True, cache=False, progress=False)
        wide_job = cluster.submit(given, prompts=prompts, cache=False, progress=False)
        expected_long = cluster.analyze(
            given, prompts=prompts, long=True, cache=False, progress=False
        )
        expected_wide = cluster.analyze(given, prompts=prompts, cache=False, progress=False)
        got_long = long_job.result()
        got_wide = asyncio.run(wide_job.aresult())
    timing = ["latency_s"]
    pd.testing.assert_frame_equal(got_long.drop(columns=timing), expected_long.drop(columns=timing))
    pd.testing.assert_frame_equal(got_wide, expected_wide)
    assert set(got_long["status"]) == {"ok"}
    assert got_long.attrs["dllm_summary"].startswith("analyzed 4 papers x 2 prompts: 8/8")
    assert got_wide.dllm.long()["status"].eq("ok").all()  # one call away, as for analyze()
    assert long_job.result() is got_long  # result() can be asked again


def test_cancel_keeps_every_answer_that_arrived(lab: FakeLab, tmp_path: Path) -> None:
    servers = [slow(lab, seconds=0.4), slow(lab, seconds=0.4)]
    given = papers(30)
    with Cluster([url(s) for s in servers], store=tmp_path / "store.sqlite", **FAST) as cluster:
        job = cluster.submit(given, prompts=QUESTION, progress=False)
        wait_until(lambda: answered(job.partial()) >= 3, "three answers")
        assert job.cancel() is True
        assert job.status == "cancelled" and job.done()
        assert job.cancel() is False  # already ended
        with pytest.raises(JobCancelled, match=r"job\.partial\(\)"):
            job.result()

        kept = job.partial(long=True)
        counts = kept["status"].value_counts().to_dict()
        assert set(counts) == {"ok", "pending"} and counts["ok"] >= 3
        history = cluster.history(run=job.id)
        assert history["error"].isna().sum() == counts["ok"]  # each answer is in the store
        runs = cluster.runs().set_index("run_id")
        assert runs.loc[job.id, "status"] == "cancelled"
        assert runs.loc[job.id, "ok"] == counts["ok"]

        # The requests in flight were withdrawn: the servers saw the client go.
        wait_until(
            lambda: all(r.outcome != "pending" for r in lab.log.generations()),
            "the servers to see every request end",
        )
        assert any(r.outcome == "client_gone" for r in lab.log.generations())
        assert len(lab.log.generations()) < 30

        # Submitting the same call again resumes: the kept answers come from the store.
        again = cluster.submit(given, prompts=QUESTION, long=True, progress=False).result()
    assert again["status"].value_counts().to_dict() == {
        "cached": counts["ok"],
        "ok": 30 - counts["ok"],
    }


def test_two_jobs_at_once_share_the_workers(lab: FakeLab) -> None:
    server = slow(lab, seconds=0.1, slots=2)
    with Cluster([url(server)], **FAST) as cluster:
        first = cluster.submit(papers(10, " A"), prompts=QUESTION, progress=False, max_tokens=101)
        second = cluster.submit(papers(10, " B"), prompts=QUESTION, progress=False, max_tokens=102)
        assert cluster.jobs == [first, second]
        assert answered(first.result()) == 10 and answered(second.result()) == 10
    order = [r.max_tokens for r in sorted(server.log.generations(), key=lambda r: r.received_at)]
    assert sorted(order) == [101] * 10 + [102] * 10
    switches = sum(a != b for a, b in pairwise(order))
    # Interleaved (ABAB...), not one job after the other (AAAA...BBBB: one switch).
    assert switches >= 4, order


@pytest.mark.parametrize(
    ("source", "prompts", "error"),
    [
        ("missing-folder", QUESTION, DllmError),
        (None, {"bad": "{content.__class__} {content}"}, TemplateError),
    ],
    ids=["missing folder", "template injection"],
)
def test_a_failing_job_raises_what_analyze_raises(
    lab: FakeLab, tmp_path: Path, source: str | None, prompts: dict[str, str], error: type
) -> None:
    server = lab.add("openai")
    given = papers(2) if source is None else tmp_path / source
    with Cluster([url(server)], **FAST) as cluster:
        job = cluster.submit(given, prompts=prompts, progress=False)
        with pytest.raises(error) as from_analyze:
            cluster.analyze(given, prompts=prompts, progress=False)
        with pytest.raises(type(from_analyze.value), match=re.escape(str(from_analyze.value))):
            job.result()
    assert job.status == "failed" and job.error is not None
    assert f"failed: {type(job.error).__name__}" in repr(job)
    assert job.partial().empty
    assert len(server.log.generations()) == 0


def test_job_shows_its_progress_as_text_and_html(
    lab: FakeLab, capsys: pytest.CaptureFixture[str]
) -> None:
    server = slow(lab, seconds=0.2)
    with Cluster([url(server)], **FAST) as cluster:
        job = cluster.submit(papers(12), prompts=QUESTION)
        wait_until(lambda: job.progress.done >= 1, "a first answer")
        running = repr(job)
        assert re.fullmatch(rf"<Job {job.id} running: \d+/12 tasks, \d+\.\d s>", running), running
        html = job._repr_html_()
        assert "running" in html and re.search(r'<progress value="\d+" max="12">', html)
        df = job.result()
    out, err = capsys.readouterr()
    # Outside Jupyter: no live bar (it would garble the prompt), one line at the end.
    summary = df.attrs["dllm_summary"]
    assert summary.startswith("analyzed 12 papers x 1 prompt: 12/12 tasks answered")
    assert out == f"job {job.id} finished: {summary}\n"
    assert f"job {job.id}" not in err
    assert repr(job) == f"<Job {job.id} finished: {summary}>"
    assert "finished" in job._repr_html_()


def test_close_cancels_running_jobs(lab: FakeLab) -> None:
    server = slow(lab, seconds=0.3)
    cluster = Cluster([url(server)], **FAST)
    job = cluster.submit(papers(20), prompts=QUESTION, progress=False)
    wait_until(lambda: job.progress.done >= 1, "a first answer")
    cluster.close()
    assert job.status == "cancelled" and job.progress.done < 20


def dead_url() -> str:
    """An address where nothing listens: the cluster has no healthy worker."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"openai://127.0.0.1:{port}"


def test_progress_bar_says_when_it_waits_for_a_worker(capsys: pytest.CaptureFixture[str]) -> None:
    with Cluster([dead_url()], **FAST) as cluster:
        long = cluster.analyze(papers(1), prompts=QUESTION, long=True)
    assert long.loc[0, "status"] == "failed"
    assert "NoHealthyWorkers" in long.attrs["dllm_summary"]
    err = capsys.readouterr().err
    frames = [f for f in re.split(r"[\r\n]", err) if f.startswith("analyze")]
    assert any(WAITING in f for f in frames), err  # while no worker was healthy
    assert "1 failed" in frames[-1] and WAITING not in frames[-1]  # cleared once tasks ended


def test_a_waiting_job_says_so(lab: FakeLab) -> None:
    with Cluster([dead_url()], **FAST) as cluster:
        job: Job = cluster.submit(papers(1), prompts=QUESTION, progress=False)
        wait_until(lambda: WAITING in repr(job), "the job to wait for a worker")
        assert job.status == "running"
        job.result()
    assert job.progress.failed == 1 and WAITING not in repr(job)


class Message(NamedTuple):
    kind: str
    cell: str | None
    content: dict[str, Any]


@pytest.mark.notebook
def test_in_jupyter_the_job_draws_a_live_bar_in_its_own_cell(lab: FakeLab, tmp_path: Path) -> None:
    """A real kernel: submit() returns, the next cell runs, the bar (a widget) is updated
    from the job's thread, and the job's last line lands in the cell that submitted it."""
    pytest.importorskip("ipykernel", reason="needs ipykernel (dev group)")
    kernels = pytest.importorskip("jupyter_client.manager", reason="needs jupyter_client")
    server = slow(lab, seconds=0.2)
    manager, client = kernels.start_new_kernel(kernel_name="python3", cwd=str(tmp_path))
    messages: list[Message] = []
    try:
        submit = client.execute(
            "from dllm_notebook import Cluster, Paper\n"
            f"cluster = Cluster([{url(server)!r}], store=None)\n"
            "papers = [Paper.from_text(f'p{i}.txt', f'Paper {i}.') for i in range(10)]\n"
            "job = cluster.submit(papers, prompts=['What is it about?'])\n"
        )
        later = None
        deadline = time.monotonic() + 120
        while not any(m.kind == "stream" and m.cell == submit for m in messages):
            assert time.monotonic() < deadline, "the job never printed its last line"
            try:
                msg = client.get_iopub_msg(timeout=1)
            except Empty:
                continue
            message = Message(msg["msg_type"], msg["parent_header"].get("msg_id"), msg["content"])
            messages.append(message)
            if later is None and message.cell == submit and is_idle(message):
                later = client.execute("print('done?', job.done())\njob")  # submit() returned
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)

    def of(cell: str | None, kind: str) -> list[dict[str, Any]]:
        return [m.content for m in messages if m.cell == cell and m.kind == kind]

    widget = "application/vnd.jupyter.widget-view+json"
    assert any(widget in shown["data"] for shown in of(submit, "display_data"))
    assert [out["text"] for out in of(later, "stream")] == ["done? False\n"]
    (shown,) = of(later, "execute_result")
    assert {widget, "text/html", "text/plain"} <= set(shown["data"])
    (last,) = of(submit, "stream")
    assert "finished: analyzed 10 papers x 1 prompt: 10/10 tasks answered" in last["text"]
    ended = next(i for i, m in enumerate(messages) if m.cell == submit and is_idle(m))
    # The bar moved after its cell had ended: drawn from the job's thread.
    assert any(m.kind == "comm_msg" for m in messages[ended:])


def is_idle(message: Message) -> bool:
    return message.kind == "status" and message.content["execution_state"] == "idle"
