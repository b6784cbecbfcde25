"""Scale: 1,000 workers and 1,000,000 tasks through the real dispatcher and scheduler.

    uv run --no-sync python bench/bench_scale.py [--tasks 100000,1000000] [--workers 1000]
    uv run --no-sync python bench/bench_scale.py --loopback [--tasks 100000] [--workers 200]

Simulated (the default): the real :class:`Dispatcher` and the default scheduler
(``EarliestFinish``) on ``--workers`` workers of 1 to 256 slots (mixed: powers of two, one
seed), each answering in-process at once (no server, no socket, no sleeping). The
dispatcher reads the real monotonic clock, so time is not virtual: answers arrive on the
next turn of the event loop, and what is measured is the client's own cost. Tasks come from
a generator (``Dispatcher.run`` takes any iterable and pulls from it as slots free up), and
each answer is checked (its echo and marker) and dropped. Each ``N`` runs in a fresh
subprocess, so its peak RSS (``ru_maxrss``) is its own. Prints wall time, the process's CPU
per task, the scheduler's planning CPU per task (``assign``, ``hedges``, ``observe``) and
peak RSS, and the growth from the first ``N`` to the last.

``--loopback``: ``--workers`` emulated OpenAI-compatible servers in ONE server process of
their own (``python -m dllm_notebook.testing lab``), 8 slots each, answering a few tokens at
once; ``Cluster.analyze()`` over ``--tasks`` / 5 in-memory papers x 5 tiny prompts, with no
store, then every cell checked by its markers against the servers' logs (``_lab.py``
``check_answers``: none lost, doubled or misplaced).

The dispatcher is driven directly here (no ``Cluster``: ``map()`` returns every answer, and
a list of a million answers is memory the user asked for, not the dispatcher's).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import httpx
from _cpu import lab_process
from _lab import PROMPTS, check_answers, expected_cells

from dllm_notebook import (
    Answer,
    Attempt,
    ChatRequest,
    Cluster,
    ClusterSettings,
    EarliestFinish,
    LabView,
    Paper,
    Placement,
    Task,
    TaskQueue,
    WorkerConfig,
)
from dllm_notebook._events import EventHub
from dllm_notebook._running.dispatch import Dispatcher
from dllm_notebook._running.pool import WorkerPool
from dllm_notebook._running.worker import Health
from dllm_notebook.testing import InstantBackend, expected_echo

SLOT_CHOICES = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# -- simulated -----------------------------------------------------------------------------
class TimedScheduler(EarliestFinish):
    """The default scheduler, with the CPU time of its decisions added up."""

    planning = 0.0

    def _timed(self, call: Callable[..., Any], *args: Any) -> Any:
        started = time.process_time()
        try:
            return call(*args)
        finally:
            self.planning += time.process_time() - started

    def assign(self, queue: TaskQueue, view: LabView, budget: int) -> list[Placement]:
        placements: list[Placement] = self._timed(super().assign, queue, view, budget)
        return placements

    def hedges(self, view: LabView, budget: int) -> list[Placement]:
        placements: list[Placement] = self._timed(super().hedges, view, budget)
        return placements

    def observe(self, attempt: Attempt, *outcome: Any) -> None:
        self._timed(super().observe, attempt, *outcome)


def prompt(index: int) -> str:
    return f"Prompt {index} [[t{index}]]"


def tasks(count: int) -> Iterator[Task]:
    for i in range(count):
        text = prompt(i)
        request = ChatRequest(text, options={"max_tokens": 16}, prompt_tokens_estimate=8)
        yield Task(i, request, needed_tokens=24)


async def simulate(count: int, workers: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    slots = [rng.choice(SLOT_CHOICES) for _ in range(workers)]
    settings = ClusterSettings()
    hub = EventHub()
    configs = [
        WorkerConfig(id=f"w{i:04d}", host="127.0.0.1", port=1, max_concurrent_requests=n)
        for i, n in enumerate(slots)
    ]
    pool = WorkerPool(configs, settings, hub)
    client = httpx.AsyncClient()  # never used: no answer leaves the process
    for worker in pool.workers:
        worker.backend = InstantBackend.standalone(worker.config, client)
        worker.health = Health.HEALTHY
        worker.model = "m"
    scheduler = TimedScheduler()
    dispatcher = Dispatcher(pool, settings, scheduler, hub)
    answered = wrong = 0

    def keep(index: int, answer: Answer) -> None:
        nonlocal answered, wrong
        answered += 1
        if not (answer.ok and answer.text.startswith(expected_echo(prompt(index)))):
            wrong += 1

    cpu, wall = time.process_time(), time.perf_counter()
    await dispatcher.run(tasks(count), keep)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    await client.aclose()
    return {
        "tasks": count,
        "workers": workers,
        "slots": sum(slots),
        "answered": answered,
        "wrong": wrong,
        "wall_s": wall,
        "cpu_ms_per_task": cpu * 1000 / count,
        "planning_ms_per_task": scheduler.planning * 1000 / count,
        "peak_rss_mib": peak_rss_mib(),
    }


def run_simulated(sizes: list[int], workers: int, seed: int) -> None:
    rows = []
    for count in sizes:
        command = [sys.executable, __file__, "--one", str(count), "--workers", str(workers)]
        command += ["--seed", str(seed)]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        row = json.loads(out.splitlines()[-1])
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"\nsimulated: {workers} workers ({rows[0]['slots']} slots, 1-256 each), instant answers")
    print("| tasks | wall s | CPU ms/task | planning ms/task | peak RSS MiB | answers ok |")
    print("|---:|---:|---:|---:|---:|---|")
    for r in rows:
        ok = r["answered"] == r["tasks"] and not r["wrong"]
        print(
            f"| {r['tasks']:,} | {r['wall_s']:.1f} | {r['cpu_ms_per_task']:.3f} | "
            f"{r['planning_ms_per_task']:.3f} | {r['peak_rss_mib']:.0f} | {'yes' if ok else 'NO'} |"
        )
    if len(rows) > 1:
        first, last = rows[0], rows[-1]
        growth = last["peak_rss_mib"] / first["peak_rss_mib"] - 1
        cost = last["cpu_ms_per_task"] / first["cpu_ms_per_task"]
        print(
            f"\npeak RSS {first['tasks']:,} -> {last['tasks']:,} tasks: {growth:+.1%}; "
            f"CPU per task x{cost:.2f} for x{last['tasks'] / first['tasks']:.0f} the tasks"
        )


# -- loopback ------------------------------------------------------------------------------
LOOPBACK_SLOTS = 8


def run_loopback(count: int, workers: int) -> None:
    papers = [
        Paper.from_text(f"p{i:06d}.txt", f"Paper {i}: soil moisture. [[paper-{i:06d}]]")
        for i in range(max(1, count // len(PROMPTS)))
    ]
    expected = expected_cells(papers)
    spec = {
        "servers": [
            {
                "dialect": "openai",
                "id": "vm",
                "count": workers,
                "behaviour": {"slots": LOOPBACK_SLOTS, "answer_tokens": 4},
            }
        ]
    }
    print(
        f"loopback: {workers} emulated servers in one process ({LOOPBACK_SLOTS} slots each), "
        f"{len(expected):,} tasks ({len(papers):,} papers x {len(PROMPTS)} prompts)",
        flush=True,
    )
    with lab_process(spec) as lab:
        configs = [
            {
                "id": sid,
                "host": "127.0.0.1",
                "port": port,
                "type": "openai",
                "max_concurrent_requests": LOOPBACK_SLOTS,
            }
            for sid, port in lab.ports.items()
        ]
        with Cluster(configs, store=None) as cluster:
            health = cluster.check()
            if not health["healthy"].all():
                raise SystemExit(f"the lab is not healthy before the run:\n{health}")
            cpu, wall = time.process_time(), time.perf_counter()
            frame = cluster.analyze(papers, prompts=PROMPTS, cache=False, progress=False, long=True)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        records = lab.log()
    generated = Counter(r.digest for r in records if r.digest and r.generated)
    check = check_answers(frame, expected, generated)
    print("| workers | tasks | completed | markers | wall s | client CPU ms/task | peak RSS MiB |")
    print("|---:|---:|---:|---|---:|---:|---:|")
    done = int((frame["status"] == "ok").sum())
    print(
        f"| {workers} | {len(expected):,} | {done:,} | {'ok' if check.ok else 'FAILED'} | "
        f"{wall:.1f} | {cpu * 1000 / len(expected):.3f} | {peak_rss_mib():.0f} |"
    )
    for problem in check.problems[:10]:
        print("  problem:", problem)
    if not check.ok:
        raise SystemExit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default=None, help="comma-separated task counts")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--loopback", action="store_true", help="200 servers in one process")
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        row = asyncio.run(simulate(args.one, args.workers or 1000, args.seed))
        print(json.dumps(row))
        return
    if args.loopback:
        run_loopback(int(args.tasks or 100_000), args.workers or 200)
        return
    sizes = [int(n) for n in (args.tasks or "100000,1000000").split(",")]
    run_simulated(sizes, args.workers or 1000, args.seed)


if __name__ == "__main__":
    main()
