"""Fault injection: every task ends exactly once, in its own slot, answered or clearly failed."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest

from dllm_notebook import Answer, Cluster
from dllm_notebook.testing import CLIENT_TYPES, Behaviour, FakeLab, FakeServer, expected_echo

from .conftest import FAST


def spec(server: FakeServer, kind: str, wid: str, **extra: object) -> dict[str, object]:
    return {
        "id": wid,
        "host": "127.0.0.1",
        "port": server.port,
        "type": CLIENT_TYPES[kind],
        **extra,
    }


def assert_each_answer_in_its_slot(prompts: Sequence[str], answers: Sequence[Answer]) -> None:
    assert len(answers) == len(prompts)
    for prompt, answer in zip(prompts, answers, strict=True):
        if answer.ok:
            assert answer.text.startswith(expected_echo(prompt)), (prompt, answer.text[:40])


def prompts_for(n: int) -> list[str]:
    return [f"Summarise paper {i}. [[task-{i}]]" for i in range(n)]


def test_worker_that_dies_mid_batch(lab: FakeLab) -> None:
    slow = Behaviour(base_latency=0.01, slots=4)
    good = lab.add("openai", behaviour=slow)
    dying = lab.add("ollama", behaviour=slow.replace(die_after=10))
    prompts = prompts_for(80)
    with Cluster([spec(good, "openai", "good"), spec(dying, "ollama", "dying")], **FAST) as c:
        answers = c.map(prompts)
        frame = c.check()
    assert all(a.ok for a in answers)
    assert_each_answer_in_its_slot(prompts, answers)
    assert {a.worker for a in answers[-20:]} == {"good"}
    assert not frame.loc["dying", "healthy"]
    assert "cannot reach" in frame.loc["dying", "error"]


def test_worker_that_returns_500s(lab: FakeLab) -> None:
    good = lab.add("lm_studio")
    bad = lab.add("lm_studio", behaviour=Behaviour(error_rate=1.0))
    prompts = prompts_for(40)
    with Cluster([spec(good, "lm_studio", "good"), spec(bad, "lm_studio", "bad")], **FAST) as c:
        answers = c.map(prompts)
        metrics = c.metrics()
    assert all(a.ok and a.worker == "good" for a in answers)
    assert_each_answer_in_its_slot(prompts, answers)
    assert metrics.loc["bad", "failures"] >= 1
    assert metrics.loc["bad", "successes"] == 0


def test_worker_that_hangs(lab: FakeLab) -> None:
    good = lab.add("openai")
    hung = lab.add("openai", behaviour=Behaviour(hang=True, slots=10))
    prompts = prompts_for(10)
    settings = {**FAST, "request_timeout": 1.0}
    with Cluster([spec(good, "openai", "good"), spec(hung, "openai", "hung")], **settings) as c:
        started = time.monotonic()
        answers = c.map(prompts)
        elapsed = time.monotonic() - started
    assert all(a.ok and a.worker == "good" for a in answers)
    assert_each_answer_in_its_slot(prompts, answers)
    assert elapsed < 30  # bounded by the timeout, never forever


def test_worker_that_returns_garbage_json(lab: FakeLab) -> None:
    good = lab.add("ollama")
    garbage = lab.add("ollama", behaviour=Behaviour(garbage=True))
    prompts = prompts_for(30)
    with Cluster([spec(good, "ollama", "good"), spec(garbage, "ollama", "junk")], **FAST) as c:
        answers = c.map(prompts)
        frame = c.metrics()
    assert all(a.ok and a.worker == "good" for a in answers)
    assert_each_answer_in_its_slot(prompts, answers)
    assert frame.loc["junk", "failures"] >= 1


def test_worker_that_is_slow_gets_less_work(lab: FakeLab) -> None:
    fast = lab.add("openai", behaviour=Behaviour(base_latency=0.005, slots=5))
    slow = lab.add("openai", behaviour=Behaviour(base_latency=0.3, slots=5))
    prompts = prompts_for(100)
    with Cluster([spec(fast, "openai", "fast"), spec(slow, "openai", "slow")], **FAST) as c:
        answers = c.map(prompts)
    assert all(a.ok for a in answers)
    assert_each_answer_in_its_slot(prompts, answers)
    by_worker = [a.worker for a in answers]
    assert by_worker.count("fast") > by_worker.count("slow")


def test_empty_answers_are_retried_elsewhere(lab: FakeLab) -> None:
    good = lab.add("lm_studio")
    empty = lab.add("lm_studio", behaviour=Behaviour(empty_answer=True))
    prompts = prompts_for(20)
    with Cluster([spec(good, "lm_studio", "good"), spec(empty, "lm_studio", "empty")], **FAST) as c:
        answers = c.map(prompts)
    assert all(a.ok and a.worker == "good" for a in answers)


def test_overloaded_worker_backs_off_and_work_is_requeued(lab: FakeLab) -> None:
    good = lab.add("openai", behaviour=Behaviour(base_latency=0.01, slots=4))
    busy = lab.add("openai", behaviour=Behaviour(overload=True, overload_status=429, retry_after=1))
    prompts = prompts_for(30)
    with Cluster([spec(good, "openai", "good"), spec(busy, "openai", "busy")], **FAST) as c:
        answers = c.map(prompts)
        busy_worker = next(w for w in c._pool.workers if w.id == "busy")
        assert busy_worker.limit < busy_worker.config.max_concurrent_requests
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


def test_worker_comes_back_by_itself(lab: FakeLab) -> None:
    server = lab.add("ollama")
    with Cluster([spec(server, "ollama", "mac")], **FAST) as c:
        assert c.check().loc["mac", "healthy"]
        server.kill()
        assert not c.check().loc["mac", "healthy"]
        server.restart()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and c.snapshot()[0]["health"] != "healthy":
            time.sleep(0.1)
        assert c.snapshot()[0]["health"] == "healthy"
        assert c.ask("back?").ok


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


def test_acceptance_ten_mixed_workers_500_prompts(lab: FakeLab) -> None:
    kinds = ["lm_studio", "ollama", "openai", "llamacpp", "vllm"] * 2
    servers = [lab.add(k, behaviour=Behaviour(base_latency=0.002, slots=4)) for k in kinds]
    specs = [
        spec(s, k, f"w{i}-{k}", max_concurrent_requests=4)
        for i, (s, k) in enumerate(zip(servers, kinds, strict=True))
    ]
    prompts = prompts_for(500)
    with Cluster(specs, **FAST) as c:
        answers = c.map(prompts)
    assert all(a.ok for a in answers)
    assert_each_answer_in_its_slot(prompts, answers)
    assert len({a.worker for a in answers}) == 10
    assert sum(lab.log.generation_counts().values()) == 500  # nothing sent twice


def test_acceptance_two_killed_and_one_flaky(lab: FakeLab) -> None:
    kinds = ["lm_studio", "ollama", "openai", "llamacpp", "vllm"] * 2
    servers = [lab.add(k, behaviour=Behaviour(base_latency=0.01, slots=4)) for k in kinds]
    servers[3].update(error_rate=0.05, seed=3)
    specs = [
        spec(s, k, f"w{i}", max_concurrent_requests=4)
        for i, (s, k) in enumerate(zip(servers, kinds, strict=True))
    ]
    prompts = prompts_for(500)
    with Cluster(specs, **FAST) as c:
        c.check()
        killer = threading.Timer(0.3, lambda: (servers[0].kill(), servers[1].kill()))
        killer.start()
        try:
            answers = c.map(prompts)
        finally:
            killer.join()
        frame = c.check()
    assert all(a.ok for a in answers), [a.error for a in answers if not a.ok][:3]
    assert_each_answer_in_its_slot(prompts, answers)
    assert not frame.loc["w0", "healthy"] and not frame.loc["w1", "healthy"]
    assert "cannot reach" in frame.loc["w0", "error"]
    assert frame["healthy"].sum() == 8


@pytest.mark.parametrize("kind", ["openai", "ollama", "lm_studio"])
def test_unreachable_worker_message_says_what_to_do(kind: str) -> None:
    url = {
        "openai": "openai://127.0.0.1:9",
        "ollama": "ollama://127.0.0.1:9",
        "lm_studio": "lmstudio://127.0.0.1:9",
    }[kind]
    with Cluster([url], **FAST) as c:
        frame = c.check()
    error = frame.iloc[0]["error"]
    assert "cannot reach http://127.0.0.1:9" in error
    assert "is the server running" in error
