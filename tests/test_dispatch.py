"""The dispatcher (``_running/dispatch.py``): a batch placed over the workers, each task
settled exactly once; what it does with each kind of failure (the table in
docs/architecture.md#failures). Whole-lab fault injection is in tests/test_faults.py."""

from __future__ import annotations

import threading
import time

import pytest

from dllm_notebook import Cluster
from dllm_notebook.testing import Behaviour, FakeLab, expected_echo

from .conftest import FAST
from .test_faults import prompts_for, spec


def test_overloaded_worker_backs_off_and_work_is_requeued(lab: FakeLab) -> None:
    good = lab.add("openai", behaviour=Behaviour(base_latency=0.01, slots=4))
    busy = lab.add("openai", behaviour=Behaviour(overload=True, overload_status=429, retry_after=1))
    prompts = prompts_for(30)
    with Cluster([spec(good, "openai", "good"), spec(busy, "openai", "busy")], **FAST) as c:
        answers = c.map(prompts)
        busy_worker = next(w for w in c.workers if w.id == "busy")
        assert busy_worker.limit < busy_worker.max_concurrent_requests
    assert all(a.ok and a.worker == "good" for a in answers)
    # Backing off: the busy worker was not hammered with every task.
    assert len(busy.log.generations()) < len(prompts)


def test_model_not_loaded_is_not_retried_there(lab: FakeLab) -> None:
    good = lab.add("lm_studio", models=["m"])
    unloaded = lab.add("lm_studio", models=["m"], behaviour=Behaviour(auto_load=False, loaded=()))
    prompts = prompts_for(20)
    with Cluster(
        [
            spec(good, "lm_studio", "good", model="m"),
            spec(unloaded, "lm_studio", "cold", model="m"),
        ],
        **FAST,
    ) as c:
        answers = c.map(prompts)
        frame = c.check()
    assert all(a.ok and a.worker == "good" for a in answers)
    # Only the first wave (its 5 slots) went there; then it left rotation.
    tries = [r for r in unloaded.log.records() if r.is_generation]
    assert 1 <= len(tries) <= 5
    assert {r.outcome for r in tries} == {"model_not_loaded"}
    assert not frame.loc["cold", "healthy"]
    assert "No models loaded" in frame.loc["cold", "error"]


def test_context_exceeded_moves_to_a_worker_with_a_larger_window(lab: FakeLab) -> None:
    small = lab.add("llamacpp", context_length=1024)
    large = lab.add("vllm", context_length=16384)
    prompt = "token " * 2000 + "[[long]]"
    with Cluster([spec(small, "llamacpp", "small"), spec(large, "vllm", "large")], **FAST) as c:
        c.check()
        answer = c.ask(prompt)
    assert answer.ok and answer.worker == "large"
    assert small.log.generations() == []  # known too small: never sent there


def test_context_exceeded_everywhere_fails_with_a_clear_message(lab: FakeLab) -> None:
    small = lab.add("lm_studio", context_length=1024)
    with Cluster([spec(small, "lm_studio", "small")], **FAST) as c:
        (answer,) = c.map(["word " * 5000])
    assert not answer.ok
    assert "context window" in (answer.error or "")
    assert answer.error_type == "ContextLengthExceeded"


def test_context_error_from_server_that_hides_its_window(lab: FakeLab) -> None:
    # When the window is unknown, the server's own 400 body is recognised.
    server = lab.add("llamacpp", context_length=1024)
    with Cluster([spec(server, "llamacpp", "w", context_length=None)], **FAST) as c:
        c.check()
        c._pool.workers[0].context_length = None  # pretend the window is unknown
        (answer,) = c.map(["word " * 3000])
    assert not answer.ok and answer.error_type == "ContextLengthExceeded"
    tries = [r for r in server.log.records() if r.is_generation]
    assert [r.outcome for r in tries] == ["context_exceeded"]  # not retried on that worker


def test_no_healthy_worker_waits_then_fails_clearly(lab: FakeLab) -> None:
    server = lab.add("openai")
    server.kill()
    settings = {**FAST, "no_worker_timeout": 1.0}
    with Cluster([spec(server, "openai", "gone")], **settings) as c:
        started = time.monotonic()
        answers = c.map(prompts_for(3))
        elapsed = time.monotonic() - started
    assert elapsed < 20
    for answer in answers:
        assert not answer.ok and answer.error_type == "NoHealthyWorkers"
        assert "gone" in (answer.error or "") and "cluster.check()" in (answer.error or "")


def test_tasks_wait_for_a_worker_that_wakes_up(lab: FakeLab) -> None:
    server = lab.add("openai")
    server.kill()
    settings = {**FAST, "no_worker_timeout": 30.0}
    with Cluster([spec(server, "openai", "sleepy")], **settings) as c:
        c.check()
        timer = threading.Timer(1.0, server.restart)
        timer.start()
        try:
            answers = c.map(prompts_for(5))
        finally:
            timer.join()
    assert all(a.ok for a in answers)


def test_map_spreads_over_workers_and_respects_their_limits(lab: FakeLab) -> None:
    servers = [lab.add("openai", behaviour=None, models=["m"]) for _ in range(3)]
    for s in servers:
        s.update(base_latency=0.05, slots=8)
    specs = [
        {
            "id": f"w{i}",
            "host": "127.0.0.1",
            "port": s.port,
            "type": "openai",
            "max_concurrent_requests": 2,
        }
        for i, s in enumerate(servers)
    ]
    with Cluster(specs, **FAST) as cluster:
        answers = cluster.map([f"p{i}" for i in range(30)])
    assert all(a.ok for a in answers)
    assert {a.worker for a in answers} == {"w0", "w1", "w2"}
    for s in servers:
        assert 1 <= s.log.max_in_flight() <= 2


def test_a_task_no_worker_could_take_fails_at_once_and_is_never_sent(lab: FakeLab) -> None:
    server = lab.add("llamacpp", context_length=1024)
    with Cluster([spec(server, "llamacpp", "small")], **FAST) as c:
        c.check()  # the window is known from /props
        started = time.monotonic()
        huge, small = c.map(["word " * 3000 + "[[huge]]", "a short one [[small]]"])
        elapsed = time.monotonic() - started
    assert not huge.ok and huge.error_type == "ContextLengthExceeded"
    assert "largest context window in the cluster is 1024" in (huge.error or "")
    assert small.ok and small.text.startswith(expected_echo("a short one [[small]]"))
    assert len(server.log.generations()) == 1  # only the short one went out
    assert elapsed < FAST["no_worker_timeout"]  # failed at once, not after waiting


def test_retries_go_to_an_untried_worker_and_stop_after_max_retries(lab: FakeLab) -> None:
    broken = [lab.add("openai", behaviour=Behaviour(error_rate=1.0)) for _ in range(3)]
    workers = [spec(s, "openai", f"b{i}") for i, s in enumerate(broken)]
    with Cluster(workers, **{**FAST, "max_retries": 1}) as c:
        (answer,) = c.map(["doomed [[d1]]"])
    assert not answer.ok and answer.error_type == "BadResponse"
    tries = [len(s.log.generations()) for s in broken]
    assert sum(tries) == 2  # the first try and one retry
    assert max(tries) == 1  # the retry went to a worker not yet tried


@pytest.mark.parametrize("hedge", [False, True])
def test_every_task_is_settled_once_in_its_own_slot(lab: FakeLab, hedge: bool) -> None:
    fast = lab.add("openai", behaviour=Behaviour(base_latency=0.01, slots=4))
    slow = lab.add("ollama", behaviour=Behaviour(base_latency=0.2, slots=2))
    prompts = prompts_for(24)
    workers = [spec(fast, "openai", "fast"), spec(slow, "ollama", "slow")]
    events: list[int] = []
    with Cluster(workers, **{**FAST, "hedge": hedge}) as c:
        c.subscribe(lambda e: events.append(e.data["index"]) if e.kind == "task_finished" else None)
        answers = c.map(prompts)
    assert [a.text[: len(expected_echo(p))] for a, p in zip(answers, prompts, strict=True)] == [
        expected_echo(p) for p in prompts
    ]
    assert sorted(events) == list(range(len(prompts)))  # each settled exactly once
