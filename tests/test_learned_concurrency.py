"""An ``openai`` worker with no ``max_concurrent_requests`` learns how many requests its
server takes (``_running/limits.py``, ``AdaptiveLimit.learned``): it drives a vLLM-like
server past a hundred in flight, keeps a 4-slot Mac near its 4 slots, and backs off when a
server refuses with 429/503. Real HTTP on loopback; each server's log is the judge."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from dllm_notebook import Cluster
from dllm_notebook._running.limits import BATCHING_START
from dllm_notebook.testing import Behaviour, FakeLab, FakeServer, RequestRecord, peak_in_flight

from .conftest import FAST, served_apart

TOKENS = 16
PAPER = " ".join(f"finding{j} of the study" for j in range(60))


def worker(server: FakeServer | int, **extra: Any) -> dict[str, Any]:
    port = server if isinstance(server, int) else server.port
    return {"id": "gpu", "host": "127.0.0.1", "port": port, "type": "openai", **extra}


@contextmanager
def vllm_apart(behaviour: Behaviour) -> Iterator[tuple[int, str]]:
    """A fake vLLM server in a process of its own (as a GPU server is another machine, its
    CPU is not the client's); yields its port and URL."""
    with served_apart("vllm", ["qwen"], behaviour.to_dict()) as (_, info):
        yield info["port"], info["url"]


def server_log(url: str) -> list[RequestRecord]:
    records = httpx.get(url + "/_fake/log", timeout=30).json()["records"]
    return [RequestRecord(**r) for r in records]


def prompts(count: int) -> list[str]:
    return [f"Summarise [[p{i}]]: {PAPER}" for i in range(count)]


def vllm(seconds: float, **changes: Any) -> Behaviour:
    """Continuous batching: 256 slots, flat latency up to 128 in flight, a short queue."""
    return Behaviour(
        slots=256,
        batch_size=128,
        max_queue=64,
        decode_tps=TOKENS / seconds,
        answer_tokens=TOKENS,
    ).replace(**changes)


def test_a_vllm_server_gets_well_over_a_hundred_requests_at_once() -> None:
    with vllm_apart(vllm(seconds=1.0)) as (port, url):
        with Cluster([worker(port)], **{**FAST, "request_timeout": 30.0}) as cluster:
            answers = cluster.map(prompts(700))
            limit = cluster.workers[0].limit
        records = server_log(url)
    assert all(a.ok for a in answers)
    assert peak_in_flight(records) > 100
    assert limit > 100


def test_a_four_slot_server_is_not_flooded(lab: FakeLab) -> None:
    seconds, slots, count = 0.4, 4, 60
    behaviour = Behaviour(slots=slots, decode_tps=TOKENS / seconds, answer_tokens=TOKENS)
    server = lab.add("lm_studio", models=["qwen"], behaviour=behaviour)
    with Cluster([worker(server)], **FAST) as cluster:
        started = time.monotonic()
        answers = cluster.map(prompts(count))
        took = time.monotonic() - started
    assert all(a.ok for a in answers)
    records = [r for r in server.log.generations() if r.generated]
    assert peak_in_flight(records, queued=True) <= 3 * slots  # slow start ends at a queue
    waited = [r for r in records if r.started_at and r.started_at - r.received_at > seconds / 2]
    assert len(waited) <= count // 3  # most requests found a free slot
    ideal = count / slots * seconds
    assert took < 2 * ideal  # (the old fixed 5 queued one request a round, too)


def test_short_answers_on_a_two_slot_server_do_not_hide_its_queue(lab: FakeLab) -> None:
    """Answers of a quarter of a second: a request that waits one answer in the queue has
    waited less than MIN_WAIT, yet it waited as long as it ran. (Before, the limit grew to
    10 on this server before it backed off.)"""
    seconds, slots, count = 0.25, 2, 40
    behaviour = Behaviour(slots=slots, decode_tps=TOKENS / seconds, answer_tokens=TOKENS)
    server = lab.add("lm_studio", models=["qwen"], behaviour=behaviour)
    with Cluster([worker(server)], **FAST) as cluster:
        answers = cluster.map(prompts(count))
        limit = cluster.workers[0].limit
    assert all(a.ok for a in answers)
    records = [r for r in server.log.generations() if r.generated]
    assert peak_in_flight(records, queued=True) <= 3 * slots
    assert limit <= slots + 1  # it ends near the server's slots


def test_refusals_halve_the_limit_once_and_every_prompt_is_answered(lab: FakeLab) -> None:
    # 16 slots and no queue: whatever the client sends beyond 16 is refused with 429. (A
    # plain OpenAI-compatible server: a vLLM one would be started at BATCHING_START.)
    behaviour = vllm(0.3, slots=16, batch_size=16, max_queue=0, overload_status=429)
    server = lab.add("openai", models=["qwen"], behaviour=behaviour.replace(retry_after=0))
    count = 240
    with Cluster([worker(server)], **{**FAST, "request_timeout": 30.0}) as cluster:
        answers = cluster.map(prompts(count))
    assert all(a.ok for a in answers)
    refused = [r for r in server.log.generations() if r.status == 429]
    assert refused  # it did go past the slots, and heard about it
    assert len(refused) < count // 5  # then stayed within them
    assert server.log.max_in_flight() >= 12  # without giving up the slots it has


def test_only_openai_workers_without_a_number_learn(lab: FakeLab) -> None:
    vllm_server = lab.add("vllm", models=["qwen"])
    plain = lab.add("openai", models=["qwen"])
    mac = lab.add("lm_studio", models=["qwen"])
    specs = [
        f"http://127.0.0.1:{vllm_server.port}",  # detected as openai: learns
        {**worker(plain), "id": "plain"},
        {**worker(vllm_server), "id": "fixed", "max_concurrent_requests": 8},
        {"id": "mac", "host": "127.0.0.1", "port": mac.port, "type": "lm_studio"},
    ]
    with Cluster(specs, **FAST) as cluster:
        cluster.check()
        workers = {w.id: w for w in cluster.workers}
        detected = workers[f"127.0.0.1:{vllm_server.port}"]
        assert (detected.config.type, detected.max_concurrent_requests) == ("openai", 1024)
        # vLLM says who it is in its model list (owned_by): a batching engine starts at
        # BATCHING_START; any other OpenAI-compatible server starts small
        assert detected.limit == BATCHING_START
        assert (workers["plain"].max_concurrent_requests, workers["plain"].limit) == (1024, 4)
        assert (workers["fixed"].max_concurrent_requests, workers["fixed"].limit) == (8, 8)
        assert (workers["mac"].max_concurrent_requests, workers["mac"].limit) == (5, 5)
