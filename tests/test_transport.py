"""A worker's connections (``_running/transport.py``): with many requests out, every one of
them reaches the server at once. Real HTTP on loopback; the server's log is the judge."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from dllm_notebook._running.transport import SHARD, transport
from dllm_notebook.testing import Behaviour, FakeLab, peak_in_flight


@pytest.mark.parametrize("at_once", [SHARD, 64, 100])
def test_requests_started_together_all_reach_the_server_together(
    lab: FakeLab, at_once: int
) -> None:
    """The pools of a worker that may hold hundreds of connections are filled evenly:
    taken in turn, 64 requests started at once put 33 on the first pool of 16, and 19
    waited in the client while the server (vLLM) had room; it saw 45 at once."""
    server = lab.add("vllm", behaviour=Behaviour(slots=256, decode_tps=5.0, answer_tokens=5))

    async def send() -> None:
        async with httpx.AsyncClient(base_url=server.url, transport=transport(512)) as client:
            body = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}

            async def one() -> None:
                reply = await client.post("/v1/chat/completions", json=body, timeout=30)
                reply.raise_for_status()

            await asyncio.gather(*(one() for _ in range(at_once)))

    asyncio.run(send())
    assert peak_in_flight(server.log.generations()) == at_once
