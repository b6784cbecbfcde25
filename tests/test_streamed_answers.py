"""Batch answers read from a stream (a worker's ``stream`` setting): the same completion as
a whole answer in each dialect, a queue seen at the first token instead of at the answer's
end, and exactly one recorded answer per task even when a copy is cancelled mid-stream."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
import time
from typing import Any

import httpx
import pytest

from dllm_notebook import ChatRequest, Cluster, WorkerConfig
from dllm_notebook._running.backends import make_backend
from dllm_notebook._types import Completion
from dllm_notebook.testing import CLIENT_TYPES, Behaviour, FakeLab, expected_echo

from .conftest import FAST
from .test_faults import assert_each_answer_in_its_slot, spec

PAPER = "The soil moisture of the plots was measured every week. " * 30  # ~400 tokens
SCHEMA = {
    "type": "object",
    "properties": {"finding": {"type": "string"}, "plots": {"type": "integer"}},
    "required": ["finding", "plots"],
}


async def answer_twice(config: WorkerConfig, model: str) -> list[Completion]:
    """A paper, then a typed question on the same paper (a prefix-cache hit), on one server."""
    async with httpx.AsyncClient(base_url=config.base_url, timeout=10) as client:
        backend = make_backend(config, client)
        first = ChatRequest(PAPER + "Summarise it. [[p1]]", prompt_tokens_estimate=420)
        typed = ChatRequest(
            PAPER + "How many plots? [[p2]]", prompt_tokens_estimate=420, schema=SCHEMA
        )
        return [
            await backend.generate(request, model=model, context_length=4096)
            for request in (first, typed)
        ]


@pytest.mark.parametrize("dialect", ["llamacpp", "vllm", "openai", "ollama"])
def test_a_streamed_answer_carries_the_same_counts_and_timings_as_a_whole_one(
    lab: FakeLab, dialect: str
) -> None:
    behaviour = Behaviour(
        prefill_tps=4000, decode_tps=400, answer_tokens=24, prefix_cache=True, slots=1
    )
    model = "m-1:latest" if dialect == "ollama" else "m-1"
    results: dict[bool, list[Completion]] = {}
    for stream in (False, True):
        server = lab.add(dialect, models=["m-1"], behaviour=behaviour)
        config = WorkerConfig(
            id="w", host="127.0.0.1", port=server.port, type=CLIENT_TYPES[dialect], stream=stream
        )
        results[stream] = asyncio.run(answer_twice(config, model))
        assert [r.stream for r in server.log.generations()] == [stream, stream]
    for whole, streamed in zip(results[False], results[True], strict=True):
        assert whole.first_token_seconds is None
        assert streamed.first_token_seconds is not None and streamed.first_token_seconds > 0
        assert dataclasses.replace(streamed, first_token_seconds=None) == whole
    # The typed answer follows its schema when streamed too (the server got the schema).
    typed = json.loads(results[True][1].text)
    assert set(typed) == {"finding", "plots"} and isinstance(typed["plots"], int)
    # The second prompt found the paper in the server's cache, and says so when streamed.
    if dialect != "openai":  # a plain OpenAI server reports no cache (the fake's too)
        assert (results[True][1].cached_tokens or 0) > 0


def test_stream_auto_streams_where_only_time_shows_the_servers_queue() -> None:
    def streams(kind: str, stream: Any = "auto") -> bool:
        config = WorkerConfig(id="w", host="127.0.0.1", port=1, type=kind, stream=stream)
        return make_backend(config, httpx.AsyncClient()).streams

    assert streams("ollama")  # it does not say its slots: its queue shows only in time
    # llama.cpp says its slots; LM Studio's streams carry no stats (its prefill time); a
    # vLLM server's hundreds of streams would cost the client CPU for every token.
    assert [streams(k) for k in ("llama_cpp", "lm_studio", "openai", "exo")] == [False] * 4
    assert streams("openai", True) and not streams("ollama", False)


def limit_over_time(
    cluster: Cluster, prompts: list[str]
) -> tuple[list[tuple[float, int]], list[Any]]:
    """``cluster.map(prompts)`` in a thread, the worker's limit sampled every 10 ms."""
    samples: list[tuple[float, int]] = []
    answers: list[Any] = []
    thread = threading.Thread(target=lambda: answers.extend(cluster.map(prompts)))
    thread.start()
    (worker,) = cluster.workers
    while thread.is_alive():
        samples.append((time.monotonic(), worker.limit))
        time.sleep(0.01)
    thread.join()
    samples.append((time.monotonic(), worker.limit))
    return samples, answers


@pytest.mark.parametrize("stream", [True, False])
def test_an_overdue_first_token_lowers_the_limit_and_takes_the_request_back(
    lab: FakeLab, stream: bool
) -> None:
    # Two slots, configured for four: two requests wait in the server's queue for a whole
    # answer (1 s), while a prompt is read in 0.1 s.
    server = lab.add(
        "ollama",
        models=["m"],
        behaviour=Behaviour(slots=2, prefill_tps=4000, decode_tps=40, answer_tokens=40),
    )
    worker = spec(server, "ollama", "w", max_concurrent_requests=4, stream=stream)
    prompts = [PAPER + f"Question {i}. [[q{i}]]" for i in range(4)]
    with Cluster([worker], **FAST) as cluster:
        assert cluster.ask(PAPER + "Warm up. [[w0]]").ok  # one answer alone: its reading time
        sent = time.monotonic()
        samples, answers = limit_over_time(cluster, prompts)
    assert all(a.ok for a in answers)
    assert_each_answer_in_its_slot(prompts, answers)
    records = server.log.generations()[1:]
    first_end = min(r.finished_at for r in records if r.outcome == "ok" and r.finished_at)
    dropped = next((t for t, limit in samples if limit < 4), None)
    assert dropped is not None, "the limit never came down"
    assert min(limit for _, limit in samples) == 2  # the server's slots
    assert set(server.log.generation_counts().values()) == {1}  # each prompt answered once
    taken_back = [r for r in records if r.outcome == "client_gone"]
    if stream:
        # Seen at the first token that did not come: well before any answer of the batch.
        assert dropped < first_end - 0.4, (dropped - sent, first_end - sent)
        # The two that waited were taken back from the queue before they started (no
        # work lost there) and sent again: every prompt still has one answer.
        assert len(taken_back) == 2 and all(r.started_at is None for r in taken_back)
    else:
        # A whole answer shows the wait only once answers end.
        assert dropped >= first_end
        assert not taken_back


def test_a_hedged_copy_cancelled_mid_stream_is_recorded_once(lab: FakeLab) -> None:
    # 40 answer tokens: 2 s on the slow server (its first token at once), 0.1 s on the fast.
    slow = lab.add("ollama", behaviour=Behaviour(decode_tps=20, answer_tokens=40, slots=2))
    fast = lab.add("llamacpp", behaviour=Behaviour(decode_tps=400, answer_tokens=40, slots=4))
    specs = [
        spec(slow, "ollama", "slow", max_concurrent_requests=2, stream=True),
        spec(fast, "llamacpp", "fast", stream=True),
    ]
    prompts = [f"Summarise paper {i}. [[task-{i}]]" for i in range(12)]
    finished: list[int] = []
    with Cluster(specs, **{**FAST, "hedge": True}) as cluster:
        cluster.subscribe(
            lambda e: finished.append(e.data["index"]) if e.kind == "task_finished" else None
        )
        answers = cluster.map(prompts)
        metrics = cluster.metrics()
    assert all(a.ok for a in answers)
    assert_each_answer_in_its_slot(prompts, answers)
    assert sorted(finished) == list(range(len(prompts)))  # each task settled exactly once
    slow_records = slow.log.generations()
    assert slow_records, "the slow worker should have been tried first"
    # Each slow copy was streaming (it held a slot and had read its prompt) when the fast
    # copy's answer settled the task, and was cancelled there: the server saw the client go.
    assert all(r.started_at is not None for r in slow_records)
    assert {r.outcome for r in slow_records} == {"client_gone"}
    assert metrics.loc["slow", "successes"] == 0
    assert {a.worker for a in answers} == {"fast"}
    assert set(fast.log.generation_counts().values()) == {1}
    assert all(a.text.startswith(expected_echo(p)) for a, p in zip(answers, prompts, strict=True))


def test_the_first_token_watch_learns_readings_and_not_waits() -> None:
    from dllm_notebook._running.first_token import MARGIN, SLACK, FirstTokenWatch

    watch = FirstTokenWatch()
    assert watch.due(1000) is None  # nothing measured: no judgement, no alarm
    watch.learn(seconds=1.0, read_tokens=1000)  # 1 ms a token
    assert watch.due(2000) == pytest.approx(SLACK * 2.0 + MARGIN)
    watch.learn(seconds=30.0, read_tokens=1000)  # it waited in the queue: not a reading
    assert watch.due(1000) == pytest.approx(SLACK * 1.0 + MARGIN)
    watch.learn(seconds=1.5, read_tokens=1000)  # a slower reading moves the average
    assert SLACK * 1.0 + MARGIN < watch.due(1000) < SLACK * 1.5 + MARGIN  # type: ignore[operator]
    watch.learn(seconds=0.001, read_tokens=10)  # a tiny prompt is fixed costs only
    assert watch.due(1000) > SLACK * 1.0 + MARGIN  # type: ignore[operator]
