"""Prefix affinity on the fake clock: PrefixAffinity against EarliestFinish and the bounds.

    uv run --no-sync python bench/bench_affinity.py [--seeds 7,1,2,3,4]

Runs the simulated labs of tests/test_affinity.py (10 and 35 mixed Macs whose slots keep a
prefix cache, 100 papers of 2,000-15,000 tokens x 5 paper-first prompts; no HTTP, no
sleeping) for each seed of the paper sizes (7 is the test's). Prints, as makespan over the
cache-oblivious ideal: EarliestFinish, PrefixAffinity with the cache reported as token
counts, as a shorter prefill only (LM Studio) or not at all (exo), and the cache ideal
(each paper read once); then, on the same labs without a cache, each scheduler's
efficiency (ideal / makespan).

``--handful`` prints instead a few papers (3, 5, 10, 20, seed 7) on the same labs: each
scheduler's makespan over the cache-oblivious ideal, with and without a cache. The ideal
is the fluid bound, out of reach when there are fewer prompts than slots.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dllm_notebook import EarliestFinish, PrefixAffinity, Scheduler  # noqa: E402
from tests.test_affinity import ideal, mac_lab, make_tasks, papers, simulate  # noqa: E402


def of_ideal(scheduler: Scheduler, count: int, tokens: list[int], **lab: Any) -> float:
    """Makespan over the cache-oblivious ideal, on ``count`` Macs for these papers."""
    run = simulate(scheduler, mac_lab(count, **lab), make_tasks(tokens))
    return run.makespan / ideal(mac_lab(count), tokens, cached=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="7,1,2,3,4", help="seeds of the paper sizes")
    parser.add_argument("--handful", action="store_true", help="batches of 3 to 20 papers")
    args = parser.parse_args()
    if args.handful:
        handful()
        return
    print(
        "| seed | Macs | EarliestFinish | PrefixAffinity (tokens) | (prefill) | (latency) "
        "| cache ideal | no cache: EarliestFinish | no cache: PrefixAffinity |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for seed in (int(s) for s in args.seeds.split(",")):
        tokens = papers(100, seed=seed)
        for count in (10, 35):
            cells = [
                of_ideal(EarliestFinish(), count, tokens),
                *(
                    of_ideal(PrefixAffinity(), count, tokens, reports=reports)
                    for reports in ("count", "prefill", "nothing")
                ),
                ideal(mac_lab(count), tokens, cached=True)
                / ideal(mac_lab(count), tokens, cached=False),
                1 / of_ideal(EarliestFinish(), count, tokens, cache=False),
                1 / of_ideal(PrefixAffinity(), count, tokens, cache=False),
            ]
            print(
                f"| {seed} | {count} | " + " | ".join(f"{c:.3f}" for c in cells) + " |", flush=True
            )


def handful() -> None:
    print(
        "| papers | Macs | EarliestFinish | PrefixAffinity | no cache: EarliestFinish "
        "| no cache: PrefixAffinity |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for count in (10, 35):
        for n in (3, 5, 10, 20):
            tokens = papers(n, seed=7)
            cells = [
                of_ideal(EarliestFinish(), count, tokens),
                of_ideal(PrefixAffinity(), count, tokens),
                of_ideal(EarliestFinish(), count, tokens, cache=False),
                of_ideal(PrefixAffinity(), count, tokens, cache=False),
            ]
            print(f"| {n} | {count} | " + " | ".join(f"{c:.2f}" for c in cells) + " |")


if __name__ == "__main__":
    main()
