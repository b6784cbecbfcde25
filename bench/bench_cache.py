"""The result store: a fully cached re-run, and peak memory over 100,000 short tasks.

    uv run --no-sync python bench/bench_cache.py [cached] [memory] [interrupt]
        [--tasks 500] [--repeat 5] [--sizes 10000,30000,100000] [--servers 4] [--no-store]

``cached``: analyze() over ``--tasks`` tasks (papers x 5 prompts) against loopback fake
servers, then the same call again ``--repeat`` times with every answer in the store; prints
the first run's time and the median re-run time (and that no request was sent again).

``memory``: for each size in ``--sizes``, a fresh Python process runs analyze() over that
many short tasks (tiny in-memory papers x 5 prompts, 8-token answers) with the store on,
against fake servers running in another process (so their request logs do not count).
It samples its own RSS every 0.1 s and reports: RSS before the run, the highest RSS while
tasks were running, the peak RSS of the whole call (including building the DataFrame),
and the DataFrame's own size. ``--no-store`` repeats it with ``cache=False``.

``interrupt``: analyze() against slow fake servers (2 s per answer) is interrupted
(KeyboardInterrupt, as "Interrupt kernel" sends) while 8 requests are in flight; prints how
long until analyze() raised and until the servers saw the last request end (median of
``--repeat``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from _cpu import lab_process

ROOT = Path(__file__).resolve().parents[1]
BENCHES = ("cached", "memory", "interrupt")
PROMPTS = {f"q{j}": f"Question {j} about {{title}}: {{content}}" for j in range(5)}


def rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


@contextmanager
def fake_lab(servers: int, slots: int = 16) -> Iterator[list[dict[str, Any]]]:
    """Fake OpenAI-compatible servers in their own process; yields worker specs."""
    spec = {
        "servers": [
            {
                "dialect": "openai",
                "count": servers,
                "behaviour": {"slots": slots, "answer_tokens": 8},
            }
        ]
    }
    with lab_process(spec) as lab:
        yield [
            {
                "id": f"w{i}",
                "host": "127.0.0.1",
                "port": port,
                "type": "openai",
                "max_concurrent_requests": slots,
            }
            for i, port in enumerate(lab.ports.values())
        ]


def papers_for(tasks: int) -> list[Any]:
    from dllm_notebook import Paper

    return [
        Paper.from_text(f"paper-{i:06d}.txt", f"Paper {i}: soil moisture and crop yield.")
        for i in range(max(1, tasks // len(PROMPTS)))
    ]


# -- cached re-run --------------------------------------------------------------------------
def bench_cached(tasks: int, repeat: int, servers: int) -> None:
    from dllm_notebook import Cluster, ResultStore

    papers = papers_for(tasks)
    with tempfile.TemporaryDirectory() as folder, fake_lab(servers) as workers:
        store = ResultStore(Path(folder) / "results.sqlite")
        with Cluster(workers, store=store) as cluster:
            started = time.perf_counter()
            first = cluster.analyze(papers, prompts=PROMPTS, long=True, progress=False)
            first_s = time.perf_counter() - started
            times = []
            for _ in range(repeat):
                started = time.perf_counter()
                again = cluster.analyze(papers, prompts=PROMPTS, long=True, progress=False)
                times.append(time.perf_counter() - started)
                assert set(again["status"]) == {"cached"}, set(again["status"])
            sent = int(cluster.metrics()["requests"].sum())
    print(f"cached re-run: {len(first)} tasks, {servers} fake servers")
    print(f"  first run (all sent):      {first_s:8.3f} s  ({len(first) / first_s:,.0f} tasks/s)")
    print(f"  re-run, all cached:        {statistics.median(times):8.3f} s  (median of {repeat})")
    print(f"  requests sent in total:    {sent:8d}  (= the first run's tasks)")


# -- memory ---------------------------------------------------------------------------------
def memory_child(tasks: int, workers: list[dict[str, Any]], store_path: str | None) -> None:
    """Runs in a fresh process: one analyze() with RSS sampling; prints one JSON line."""
    from dllm_notebook import Cluster, Event

    papers = papers_for(tasks)
    samples: list[float] = []
    running = {"on": True, "until": 0}

    def sample() -> None:
        while running["on"]:
            samples.append(rss_mib())
            time.sleep(0.1)

    def mark(event: Event) -> None:
        if event.kind == "task_finished":  # the samples taken until the last task settled
            running["until"] = len(samples)

    before = rss_mib()
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    started = time.perf_counter()
    with Cluster(workers, store=store_path, max_concurrent_batch=64) as cluster:
        cluster.subscribe(mark)
        df = cluster.analyze(
            papers, prompts=PROMPTS, long=True, progress=False, cache=store_path is not None
        )
    seconds = time.perf_counter() - started
    running["on"] = False
    thread.join()
    result = {
        "tasks": len(df),
        "ok": int((df["status"] == "ok").sum()),
        "seconds": seconds,
        "rss_before_mib": before,
        "rss_running_max_mib": max(samples[: int(running["until"]) + 1] or [before]),
        "peak_rss_mib": peak_rss_mib(),
        "frame_mib": df.memory_usage(deep=True).sum() / 2**20,
    }
    print(json.dumps(result))


def bench_memory(sizes: list[int], servers: int, store: bool) -> None:
    label = "store on" if store else "store off (cache=False)"
    print(f"peak memory, {label}, {servers} fake servers in another process")
    print(
        f"  {'tasks':>8} {'seconds':>8} {'before':>8} {'running':>8} {'peak':>8} "
        f"{'frame':>7} {'peak-before-frame':>18}  (MiB)"
    )
    with fake_lab(servers) as workers, tempfile.TemporaryDirectory() as folder:
        for size in sizes:
            path = str(Path(folder) / f"store-{size}.sqlite") if store else None
            out = subprocess.run(
                [sys.executable, __file__, "_child", str(size), json.dumps(workers), str(path)],
                check=True,
                capture_output=True,
                text=True,
                cwd=folder,
            ).stdout
            r = json.loads(out.strip().splitlines()[-1])
            assert r["ok"] == r["tasks"] == size, r
            extra = r["peak_rss_mib"] - r["rss_before_mib"] - r["frame_mib"]
            print(
                f"  {size:>8,} {r['seconds']:>8.1f} {r['rss_before_mib']:>8.1f} "
                f"{r['rss_running_max_mib']:>8.1f} {r['peak_rss_mib']:>8.1f} "
                f"{r['frame_mib']:>7.1f} {extra:>18.1f}"
            )


# -- interrupt --------------------------------------------------------------------------------
def interrupt_soon(lab: Any, sent_at: list[float]) -> None:
    """Once 8 requests are in flight, wait half a second and interrupt the main thread."""
    import _thread

    while sum(r.outcome == "pending" for r in lab.log.generations()) < 8:
        time.sleep(0.01)
    time.sleep(0.5)
    sent_at.append(time.monotonic())
    _thread.interrupt_main()


def bench_interrupt(repeat: int) -> None:
    from dllm_notebook import Cluster, ResultStore
    from dllm_notebook.testing import Behaviour, FakeLab

    raised, ended = [], []
    for round_ in range(repeat):
        with FakeLab() as lab, tempfile.TemporaryDirectory() as folder:
            slow = Behaviour(base_latency=2.0, slots=4)
            servers = [lab.add("openai", behaviour=slow) for _ in range(2)]
            workers = [
                {
                    "id": f"w{i}",
                    "host": "127.0.0.1",
                    "port": s.port,
                    "type": "openai",
                    "max_concurrent_requests": 4,
                }
                for i, s in enumerate(servers)
            ]
            store = ResultStore(Path(folder) / "results.sqlite")
            papers = papers_for(50 + round_)  # new prompts each round: nothing cached
            sent_at: list[float] = []
            with Cluster(workers, store=store) as cluster:
                threading.Thread(target=interrupt_soon, args=(lab, sent_at), daemon=True).start()
                try:
                    with contextlib.redirect_stdout(io.StringIO()):  # the "Interrupted" line
                        cluster.analyze(papers, prompts=PROMPTS, progress=False)
                except KeyboardInterrupt:
                    raised.append(time.monotonic() - sent_at[0])
                while any(r.outcome == "pending" for r in lab.log.generations()):
                    time.sleep(0.005)
                last = max(r.finished_at or 0.0 for r in lab.log.generations())
                ended.append(last - sent_at[0])
    print(f"interrupt with 8 requests in flight (median of {repeat}):")
    print(f"  analyze() raised KeyboardInterrupt after  {statistics.median(raised):.3f} s")
    print(f"  the servers saw the last request end after {statistics.median(ended):.3f} s")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        store = None if sys.argv[4] == "None" else sys.argv[4]
        memory_child(int(sys.argv[2]), json.loads(sys.argv[3]), store)
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", nargs="*", help="cached, memory, interrupt (default: all)")
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--sizes", default="10000,30000,100000")
    parser.add_argument("--servers", type=int, default=4)
    parser.add_argument("--no-store", action="store_true", help="also measure cache=False")
    args = parser.parse_args()
    what = args.what or list(BENCHES)
    unknown = set(what) - set(BENCHES)
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(sorted(unknown))}; choose from {BENCHES}")
    if "cached" in what:
        bench_cached(args.tasks, args.repeat, args.servers)
    if "memory" in what:
        sizes = [int(s) for s in args.sizes.split(",")]
        bench_memory(sizes, args.servers, store=True)
        if args.no_store:
            bench_memory(sizes, args.servers, store=False)
    if "interrupt" in what:
        bench_interrupt(args.repeat)


if __name__ == "__main__":
    main()
