"""Fault injection: every task ends exactly once, in its own slot, answered or clearly failed."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

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
