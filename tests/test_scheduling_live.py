"""The scheduler on real (loopback) servers: hedging, adaptive concurrency, shared batches."""

from __future__ import annotations

import asyncio
import concurrent.futures

import pytest

from dllm_notebook import Answer, ChatRequest, Cluster
from dllm_notebook._loop import submit
from dllm_notebook._running.backends import Backend
from dllm_notebook._types import Completion, ServerInfo
from dllm_notebook.testing import Behaviour, FakeLab, expected_echo
from dllm_notebook.testing._text import prompt_digest

from .conftest import FAST
from .test_faults import assert_each_answer_in_its_slot, prompts_for, spec

HEDGING = {**FAST, "hedge": True}


def test_a_straggler_on_a_slow_worker_is_hedged_and_recorded_once(lab: FakeLab) -> None:
    # 40 answer tokens: 2 s on the slow server, 0.1 s on the fast one.
    slow = lab.add("openai", behaviour=Behaviour(decode_tps=20, answer_tokens=40, slots=2))
    fast = lab.add("ollama", behaviour=Behaviour(decode_tps=400, answer_tokens=40, slots=4))
    specs = [spec(slow, "openai", "slow", max_concurrent_requests=2), spec(fast, "ollama", "fast")]
    prompts = prompts_for(12)
    with Cluster(specs, **HEDGING) as cluster:
        answers = cluster.map(prompts)
        metrics = cluster.metrics()
    assert all(a.ok for a in answers)
    assert_each_answer_in_its_slot(prompts, answers)
    # The fast worker answered every prompt, also those first sent to the slow one: they
    # were copied to it once it was idle, and the slow copies were cancelled.
    assert {a.worker for a in answers} == {"fast"}
    slow_records = slow.log.generations()
    assert slow_records, "the slow worker should have been tried first"
    assert {r.outcome for r in slow_records} == {"client_gone"}
    assert metrics.loc["slow", "successes"] == 0
    assert fast.log.generation_counts() == {d: 1 for d in fast.log.generation_counts()}


def test_no_second_copy_when_hedging_is_off(lab: FakeLab) -> None:
    slow = lab.add("openai", behaviour=Behaviour(decode_tps=40, answer_tokens=20, slots=2))
    fast = lab.add("ollama", behaviour=Behaviour(decode_tps=400, answer_tokens=20, slots=4))
    specs = [spec(slow, "openai", "slow", max_concurrent_requests=2), spec(fast, "ollama", "fast")]
    prompts = prompts_for(12)
    with Cluster(specs, **FAST) as cluster:
        answers = cluster.map(prompts)
    assert_each_answer_in_its_slot(prompts, answers)
    counts = slow.log.generation_counts() + fast.log.generation_counts()
    assert sorted(counts.values()) == [1] * 12


def test_a_worker_that_queues_internally_gets_fewer_requests_at_once(lab: FakeLab) -> None:
    # The server runs 2 requests at a time; the config claims 8, so 6 wait inside it and
    # their latency doubles, triples... The limit comes down towards 2.
    server = lab.add("openai", behaviour=Behaviour(decode_tps=400, answer_tokens=40, slots=2))
    with Cluster([spec(server, "openai", "w", max_concurrent_requests=8)], **FAST) as cluster:
        answers = cluster.map(prompts_for(80))
        worker = cluster._pool.workers[0]
        assert worker.limit < 8
    assert all(a.ok for a in answers)


def test_concurrent_batches_share_the_workers(lab: FakeLab) -> None:
    server = lab.add("openai", behaviour=Behaviour(decode_tps=400, answer_tokens=20, slots=4))
    first, second = prompts_for(40), [f"Other question {i}. [[b-{i}]]" for i in range(40)]

    async def both(cluster: Cluster) -> tuple[list[object], list[object]]:
        one = asyncio.ensure_future(cluster.amap(first))
        await asyncio.sleep(0.05)  # the first batch has taken every slot by now
        two = await cluster.amap(second)
        return await one, two

    with Cluster([spec(server, "openai", "w", max_concurrent_requests=4)], **FAST) as cluster:
        answers_one, answers_two = asyncio.run(both(cluster))
    assert_each_answer_in_its_slot(first, answers_one)  # type: ignore[arg-type]
    assert_each_answer_in_its_slot(second, answers_two)  # type: ignore[arg-type]
    # Fair share: once the second batch arrived, the server saw both batches' prompts
    # interleaved rather than all of the first, then all of the second.
    batch_of = {prompt_digest(p): "first" for p in first} | {
        prompt_digest(p): "second" for p in second
    }
    order = [batch_of[r.digest] for r in server.log.generations() if r.digest]
    assert sorted(order) == ["first"] * 40 + ["second"] * 40
    after = order[order.index("second") :]
    assert "first" in after[: len(after) // 2], order


def test_answers_that_arrived_when_a_batch_is_interrupted_are_kept(lab: FakeLab) -> None:
    server = lab.add("openai", behaviour=Behaviour(slots=4))
    release = asyncio.Event()

    class Together(Backend):
        """Holds each answer until the second request starts, so both arrive at once."""

        type = "together"

        def __init__(self, inner: Backend) -> None:
            super().__init__(inner.config, inner.client)
            self.inner, self.started = inner, 0

        async def probe(self, *, detailed: bool = False) -> ServerInfo:
            return await self.inner.probe(detailed=detailed)

        async def chat(
            self, request: ChatRequest, *, model: str, context_length: int | None
        ) -> Completion:
            self.started += 1
            if self.started == 2:
                release.set()
            await release.wait()
            return Completion(expected_echo(request.prompt), model, 1, 1)

    kept: dict[int, str] = {}

    def on_result(index: int, answer: Answer) -> None:
        kept[index] = answer.text
        if len(kept) == 1:
            raise asyncio.CancelledError  # the interrupt lands while the first is handled

    with Cluster([spec(server, "openai", "w", max_concurrent_requests=4)], **FAST) as cluster:
        cluster.check()
        worker = cluster._pool.workers[0]
        assert worker.backend is not None
        worker.backend = Together(worker.backend)
        prompts = prompts_for(2)
        tasks = [cluster._task(i, p, None, {}) for i, p in enumerate(prompts)]
        future = submit(cluster._dispatcher.run(tasks, on_result))
        with pytest.raises((asyncio.CancelledError, concurrent.futures.CancelledError)):
            future.result(timeout=10)
    assert kept == {i: expected_echo(p) for i, p in enumerate(prompts)}
