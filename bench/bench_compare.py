"""Comparing models: one ``analyze(model=["m1", "m2"])`` against two single-model runs.

    uv run --no-sync python bench/bench_compare.py [--latency 0.25] [--prompts 4] [--repeat 3]

Two loopback fake servers, one serving ``m1`` and one ``m2`` (2 slots each, ``--latency``
seconds per answer), the sample papers x ``--prompts`` prompts. After one warm-up run, it
times ``model="m1"`` then ``model="m2"`` (one after the other), and the comparison in one
run; prints the medians of ``--repeat``. The comparison keeps both servers busy at once,
so it should take about half the time of the two runs.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from dllm_notebook import Cluster
from dllm_notebook.testing import Behaviour, FakeLab

PAPERS = Path(__file__).resolve().parents[1] / "sample_papers"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.25)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    prompts = {f"q{i}": f"Paper:\n{{content}}\n\nQuestion {i}?" for i in range(args.prompts)}
    behaviour = Behaviour(base_latency=args.latency, slots=2)
    with FakeLab() as lab:
        servers = [lab.add(kind, models=[m], behaviour=behaviour) for kind, m in
                   (("lm_studio", "m1"), ("openai", "m2"))]  # fmt: skip
        workers = [
            {"id": f"w{i}", "host": "127.0.0.1", "port": s.port, "type": s.dialect,
             "max_concurrent_requests": 2}
            for i, s in enumerate(servers)
        ]  # fmt: skip
        with Cluster(workers, store=None, hedge=False, probe_timeout=5.0) as cluster:
            cluster.analyze(PAPERS, prompts=prompts, model="m1", progress=False)  # warm-up
            apart, together = [], []
            for _ in range(args.repeat):
                started = time.monotonic()
                for model in ("m1", "m2"):
                    cluster.analyze(PAPERS, prompts=prompts, model=model, progress=False)
                apart.append(time.monotonic() - started)
                started = time.monotonic()
                cluster.analyze(PAPERS, prompts=prompts, model=["m1", "m2"], progress=False)
                together.append(time.monotonic() - started)
    papers = len([p for p in PAPERS.iterdir() if p.is_file()])
    print(
        f"{papers} papers x {args.prompts} prompts x 2 models, {args.latency} s per answer, "
        f"2 slots per server (median of {args.repeat}): two runs "
        f"{statistics.median(apart):.2f} s, one comparison {statistics.median(together):.2f} s"
    )


if __name__ == "__main__":
    main()
