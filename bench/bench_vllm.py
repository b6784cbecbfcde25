"""One vLLM-like server, side by side: its peak throughput, and what a learned limit reaches.

    uv run --no-sync python bench/bench_vllm.py [--tasks 1500] [--seconds 1.5]

The server (a fake ``vllm`` in a process of its own, on loopback): 256 slots, continuous
batching of 128 (each request takes ``--seconds`` while up to 128 run, and proportionally
longer beyond, so throughput peaks at 128 in flight), and a queue of 64 past its slots
(503 when full). Two runs over ``--tasks`` short prompts, each on a fresh server:

- ``peak``: a plain aiohttp client that keeps 128 requests out, the server's best;
- ``learned``: ``cluster.map()`` (the dispatcher ``analyze()`` runs on) with an ``openai``
  worker with no ``max_concurrent_requests`` (it starts at 4).

Prints each run's throughput over the whole batch and in its steady part (from the moment
the server first ran 90% of its batch at once to the 90th percentile of answers), the most
requests the server ran at once, the limit at the end and the refusals; then the learned
run's ratios to the peak.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiohttp
from _cpu import lab_process

from dllm_notebook import Cluster
from dllm_notebook.testing import RequestRecord, peak_in_flight

TOKENS = 16
PAPER = " ".join(f"finding{j} of the study" for j in range(60))


@dataclass
class Result:
    name: str
    tasks: int
    seconds: float
    steady: float
    in_flight: int
    limit: int
    refused: int
    failed: int

    @property
    def throughput(self) -> float:
        return self.tasks / self.seconds


def server_spec(seconds: float) -> dict[str, Any]:
    behaviour = {
        "slots": 256,
        "batch_size": 128,
        "max_queue": 64,
        "decode_tps": TOKENS / seconds,
        "answer_tokens": TOKENS,
    }
    return {
        "servers": [{"dialect": "vllm", "id": "vllm", "models": ["qwen"], "behaviour": behaviour}]
    }


def steady_rate(records: list[RequestRecord], batch: int = 128) -> float:
    """Answers per second once the server first ran 90% of its batch at once (the learned
    limit has found it), up to the 90th percentile of answers (before the batch's tail)."""
    events: list[tuple[float, int]] = []
    for r in records:
        if r.started_at is not None and r.released_at is not None:
            events += [(r.started_at, 1), (r.released_at, -1)]
    events.sort()
    current, since = 0, events[0][0]
    for at, delta in events:
        current += delta
        if current >= 0.9 * batch:
            since = at
            break
    done = sorted(r.released_at for r in records if r.generated and r.released_at is not None)
    until = done[len(done) * 9 // 10]
    return sum(1 for t in done if since < t <= until) / (until - since)


def prompt(index: int) -> str:
    return f"Summarise [[p{index}]]: {PAPER}"


def run(name: str, tasks: int, seconds: float) -> Result:
    """``cluster.map()`` through an openai worker with no ``max_concurrent_requests``."""
    with lab_process(server_spec(seconds)) as lab:
        worker = {"id": "vllm", "host": "127.0.0.1", "port": lab.ports["vllm"], "type": "openai"}
        with Cluster([worker], store=None, request_timeout=120.0) as cluster:
            cluster.check()
            started = time.monotonic()
            answers = cluster.map([prompt(i) for i in range(tasks)])
            took = time.monotonic() - started
            limit = cluster.workers[0].limit
        records = [r for r in lab.log() if r.is_generation]
    failed = sum(1 for a in answers if not a.ok)
    return summary(name, tasks, took, records, limit, failed)


def run_fixed(name: str, tasks: int, seconds: float, in_flight: int = 128) -> Result:
    """The server's peak: a plain aiohttp client that keeps ``in_flight`` requests out."""

    async def drive(url: str) -> float:
        gate = asyncio.Semaphore(in_flight)
        connector = aiohttp.TCPConnector(limit=in_flight)
        async with aiohttp.ClientSession(url, connector=connector) as session:

            async def one(index: int) -> None:
                body = {"model": "qwen", "messages": [{"role": "user", "content": prompt(index)}]}
                async with gate, session.post("/v1/chat/completions", json=body) as reply:
                    reply.raise_for_status()
                    await reply.read()

            started = time.monotonic()
            await asyncio.gather(*(one(i) for i in range(tasks)))
            return time.monotonic() - started

    with lab_process(server_spec(seconds)) as lab:
        took = asyncio.run(drive(f"http://127.0.0.1:{lab.ports['vllm']}"))
        records = [r for r in lab.log() if r.is_generation]
    return summary(name, tasks, took, records, in_flight, 0)


def summary(
    name: str, tasks: int, took: float, records: list[RequestRecord], limit: int, failed: int
) -> Result:
    refused = sum(1 for r in records if r.status in (429, 503))
    return Result(
        name, tasks, took, steady_rate(records), peak_in_flight(records), limit, refused, failed
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--tasks", type=int, default=1500)
    parser.add_argument("--seconds", type=float, default=1.5, help="one request, batched")
    args = parser.parse_args()
    print(
        f"vLLM-like server: 256 slots, batch 128, {args.seconds:g} s a request; "
        f"server peak {128 / args.seconds:.1f} tasks/s; {args.tasks} tasks"
    )
    results = [
        run_fixed("peak (128 fixed)", args.tasks, args.seconds),
        run("learned", args.tasks, args.seconds),
    ]
    header = ("run", "tasks/s", "steady", "in flight", "limit", "503", "failed")
    print("{:18} {:>8} {:>8} {:>10} {:>6} {:>5} {:>6}".format(*header))
    for r in results:
        print(
            f"{r.name:18} {r.throughput:8.1f} {r.steady:8.1f} {r.in_flight:10d} "
            f"{r.limit:6d} {r.refused:5d} {r.failed:6d}"
        )
    peak, learned = results
    print(
        f"learned / peak: {learned.throughput / peak.throughput:.2f} over the whole batch, "
        f"{learned.steady / peak.steady:.2f} in its steady part; "
        f"{learned.in_flight} in flight reached"
    )


if __name__ == "__main__":
    main()
