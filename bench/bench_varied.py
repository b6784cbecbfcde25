"""Varied labs on the fake clock: EarliestFinish against a seed-style LeastLoaded, per seed.

    uv run --no-sync python bench/bench_varied.py [--seeds 1,2,3,4,5] [--papers 100]

The labs of ``_varied.py`` (issue #16: a random tier mix per seed, answers of 40-500
tokens that no client can tell from the prompt, papers of 2k-14k tokens, a cold start on
every Mac, half the Macs counting a request's wait in their timings), 10 and 35 Macs,
``--papers`` x 5 prompts each, on the fake-clock twin of ``tests/sim.py`` (no HTTP, no
sleeping, deterministic). Prints each scheduler's efficiency (ideal / makespan, ideal =
the fluid bound of the work actually done) per seed and lab, then the worst seed of each.
The same labs run over HTTP with ``bench/bench_schedule.py --only varied10,varied35``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _varied import FakeClockRun, fake_clock_run, varied_lab  # noqa: E402

from dllm_notebook import EarliestFinish, LeastLoaded  # noqa: E402

SCHEDULERS = {"least-loaded": LeastLoaded, "earliest-finish": EarliestFinish}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="1,2,3,4,5", help="seeds of the labs")
    parser.add_argument("--papers", type=int, default=100)
    parser.add_argument("--macs", default="10,35", help="lab sizes")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    print("| Macs | seed | ideal s | least-loaded | earliest-finish | gain | requests / tasks |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    worst: dict[tuple[int, str], float] = {}
    for count in (int(c) for c in args.macs.split(",")):
        for seed in seeds:
            lab = varied_lab(seed, count)
            runs: dict[str, FakeClockRun] = {
                name: fake_clock_run(make(), lab, args.papers) for name, make in SCHEDULERS.items()
            }
            for name, run in runs.items():
                key = (count, name)
                worst[key] = min(worst.get(key, 1.0), run.efficiency)
            ours, naive = runs["earliest-finish"], runs["least-loaded"]
            print(
                f"| {count} | {seed} | {ours.ideal:.1f} | {naive.efficiency:.3f} "
                f"| {ours.efficiency:.3f} | {ours.efficiency - naive.efficiency:+.3f} "
                f"| {ours.attempts} / {ours.tasks} |",
                flush=True,
            )
    print()
    print("| Macs | scheduler | worst seed |")
    print("|---:|---|---:|")
    for (count, name), value in worst.items():
        print(f"| {count} | {name} | {value:.3f} |")


if __name__ == "__main__":
    main()
