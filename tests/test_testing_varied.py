"""The fake servers' knobs for varied labs: drawn answer lengths, cold starts, and reported
timings that count the time a request waited. Over real HTTP with httpx."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from dllm_notebook.testing import Behaviour, FakeServer, drawn_answer_tokens, prompt_digest


def ask(client: httpx.Client, server: FakeServer, prompt: str) -> dict[str, Any]:
    body = {"model": "fake-model", "messages": [{"role": "user", "content": prompt}]}
    reply = client.post(server.url + "/v1/chat/completions", json=body)
    reply.raise_for_status()
    data: dict[str, Any] = reply.json()
    return data


def test_answer_lengths_vary_per_prompt_and_agree_between_servers() -> None:
    """A hedged copy on another server writes as long an answer as the first."""
    varied = Behaviour(answer_tokens_range=(40, 500), seed=3)
    prompts = [f"Question {n} [[p{n}]]" for n in range(20)]
    with (
        FakeServer("llamacpp", behaviour=varied) as a,
        FakeServer("lm_studio", behaviour=varied) as b,
        httpx.Client(timeout=5) as client,
    ):
        first = [ask(client, a, p)["usage"]["completion_tokens"] for p in prompts]
        again = [ask(client, b, p)["usage"]["completion_tokens"] for p in prompts]
    assert first == again
    assert all(40 <= n <= 500 for n in first)
    assert len(set(first)) >= 15  # not one length, nor a few
    assert first == [drawn_answer_tokens(prompt_digest(p), 3, 40, 500) for p in prompts]
    with (
        FakeServer("llamacpp", behaviour=varied.replace(seed=4)) as other,
        httpx.Client(timeout=5) as client,
    ):
        reseeded = [ask(client, other, p)["usage"]["completion_tokens"] for p in prompts]
    assert reseeded != first


def test_a_cold_server_makes_every_early_request_wait_for_its_model_once() -> None:
    cold = Behaviour(slots=2, cold_start_seconds=0.4)
    with FakeServer("llamacpp", behaviour=cold) as server:

        async def burst() -> list[float]:
            async with httpx.AsyncClient(timeout=5) as client:

                async def one(n: int) -> float:
                    started = time.monotonic()
                    body = {
                        "model": "fake-model",
                        "messages": [{"role": "user", "content": f"q{n}"}],
                    }
                    (
                        await client.post(server.url + "/v1/chat/completions", json=body)
                    ).raise_for_status()
                    return time.monotonic() - started

                return list(await asyncio.gather(one(1), one(2)))

        early = asyncio.run(burst())
        with httpx.Client(timeout=5) as client:
            started = time.monotonic()
            ask(client, server, "later")
            later = time.monotonic() - started
    assert min(early) >= 0.4
    assert later < 0.2


def test_reported_prefill_counts_the_wait_only_where_the_server_does() -> None:
    base = Behaviour(prefill_tps=1000, cold_start_seconds=0.3)
    prompt = "x" * 400  # 100 tokens: 0.1 s of prefill
    prefill_ms = {}
    for counts in (False, True):
        behaviour = base.replace(timings_count_queue=counts)
        with FakeServer("llamacpp", behaviour=behaviour) as server, httpx.Client() as client:
            prefill_ms[counts] = ask(client, server, prompt)["timings"]["prompt_ms"]
    assert abs(prefill_ms[False] - 100) < 1
    assert 390 <= prefill_ms[True] <= 550  # the 0.3 s load it waited, then its prefill
