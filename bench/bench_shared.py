"""Sharing a lab: several notebooks (separate processes) on the same Macs, none aware of the others.

    uv run --no-sync python bench/bench_shared.py [--papers 100] [--target 20]
        [--clients 3] [--stagger 5] [--repeat 1] [--verbose]

``shared10``: the 10-Mac lab of ``bench_schedule.py`` (``_lab.py``; its servers in a process
of their own) and ``--clients`` client processes, each its own ``Cluster`` over the same
``workers.json``, started ``--stagger`` seconds apart, each running
``analyze(its own --papers papers, 5 prompts)``. The baseline: one client process analyzing
all of those papers on a fresh lab. Time is scaled so that one client's share has an ideal
makespan of ``--target`` seconds (so all of them together about ``clients x target``).

Reports, against the acceptance of issue #16:

- the combined makespan (the first client's start to the last client's end) against the
  baseline's (within 10 %);
- each client's share of the work the servers finished while all of them ran (from the
  last one's start to the first one's end), against an equal share (within +-20 %);
- each server's longest queue (requests waiting for a slot at the same moment, from the
  servers' logs) against its slots + 2;
- the requests that failed (time-outs, refusals) on any client, and the marker check of
  every client's answers (none lost, doubled or misplaced).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from _cpu import lab_process
from _lab import (
    PROMPTS,
    AnswerCheck,
    Expected,
    Machine,
    check_answers,
    expected_cells,
    expected_work,
    ideal_makespan,
    lab_spec,
    logged_work,
    mixed_lab,
    settings_for,
    task_work,
    worker_configs,
    write_papers,
)

from dllm_notebook import Cluster
from dllm_notebook.testing import RequestRecord, peak_queued


# -- one client (a process of its own) ---------------------------------------------------
def client(config: Path, folder: Path, out: Path) -> None:
    """Get ready (imports), say so on stdout, read the time to start from stdin
    (time.monotonic(), the same clock in every process of the machine), then do what a
    notebook does: make the cluster, check it, analyze ``folder``; write what happened to
    ``out``."""
    logging.getLogger("dllm_notebook").setLevel(logging.ERROR)
    print("ready", flush=True)
    start_at = float(sys.stdin.readline())
    time.sleep(max(0.0, start_at - time.monotonic()))
    started = time.monotonic()
    with Cluster.from_config(config, store=None) as cluster:
        health = cluster.check()
        if not health["healthy"].all():
            raise SystemExit(f"the lab is not healthy before the run:\n{health}")
        frame = cluster.analyze(folder, prompts=PROMPTS, cache=False, progress=False, long=True)
        ended = time.monotonic()
        workers = {w.id: {"failures": w.stats.failures, "limit": w.limit} for w in cluster.workers}
    rows = frame[["paper", "prompt", "answer", "status", "fit"]].astype(object)
    out.write_text(
        json.dumps(
            {
                "started": started,
                "ended": ended,
                "workers": workers,
                "rows": rows.where(rows.notna(), None).to_dict("records"),
            }
        )
    )


# -- the bench ---------------------------------------------------------------------------
@dataclass
class Client:
    name: str
    started: float
    ended: float
    failures: int
    limits: dict[str, int]
    check: AnswerCheck
    digests: frozenset[str]


@dataclass
class Run:
    clients: list[Client]
    records: list[RequestRecord]
    ideal: float

    @property
    def start(self) -> float:
        return min(c.started for c in self.clients)

    @property
    def makespan(self) -> float:
        return max(c.ended for c in self.clients) - self.start

    @property
    def ok(self) -> bool:
        return all(c.check.ok for c in self.clients)


def run_clients(
    machines: Sequence[Machine],
    folders: Sequence[Path],
    expected: Sequence[Mapping[tuple[str, str], Expected]],
    time_scale: float,
    stagger: float,
    tmp: Path,
) -> Run:
    """One client process per folder on a fresh lab, the k-th starting k x ``stagger`` s
    after the first."""
    with lab_process(lab_spec(machines, time_scale=time_scale)) as lab:
        config = tmp / "workers.json"
        config.write_text(
            json.dumps({"workers": worker_configs(machines, lab.ports), **settings_for(machines)})
        )
        processes = []
        outs = [tmp / f"client-{k}.json" for k in range(len(folders))]
        for k, folder in enumerate(folders):
            command = [sys.executable, __file__, "client", str(config), str(folder), str(outs[k])]
            processes.append(
                subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            )
        for process in processes:
            assert process.stdout is not None
            if process.stdout.readline().strip() != "ready":
                raise SystemExit("a client failed before the run")
        first = time.monotonic() + 0.5
        for k, process in enumerate(processes):
            assert process.stdin is not None
            process.stdin.write(f"{first + k * stagger!r}\n")
            process.stdin.close()
        for process in processes:
            if process.wait() != 0:
                raise SystemExit(f"a client failed with exit code {process.returncode}")
        records = lab.log()
    generated = Counter(r.digest for r in records if r.digest and r.generated)
    clients, total = [], 0.0
    for k, (out, cells) in enumerate(zip(outs, expected, strict=True)):
        data = json.loads(out.read_text())
        mine = {e.digest for e in cells.values()}
        frame = pd.DataFrame(data["rows"])
        check = check_answers(frame, cells, Counter({d: generated[d] for d in mine}))
        work, problems = logged_work(records, cells)
        check.problems.extend(problems)
        total += work
        clients.append(
            Client(
                f"client {k + 1}" if len(folders) > 1 else "one client",
                data["started"],
                data["ended"],
                sum(w["failures"] for w in data["workers"].values()),
                {wid: w["limit"] for wid, w in data["workers"].items()},
                check,
                frozenset(mine),
            )
        )
    return Run(clients, records, ideal_makespan(total, machines) * time_scale)


def shares(run: Run) -> tuple[float, list[float]]:
    """The window in which every client ran (s) and each client's share of the work the
    servers finished in it (by each answer's tokens, as the ideal counts them)."""
    begin = max(c.started for c in run.clients)
    end = min(c.ended for c in run.clients)
    done = [0.0] * len(run.clients)
    for r in run.records:
        if not (r.generated and r.finished_at and begin <= r.finished_at <= end):
            continue
        for k, c in enumerate(run.clients):
            if r.digest in c.digests:
                done[k] += task_work(int(r.prompt_tokens or 0), int(r.completion_tokens or 0))
    total = sum(done) or 1.0
    return end - begin, [d / total for d in done]


def timeline(run: Run, step: float = 2.5) -> None:
    """Every ``step`` s: each client's requests holding a slot, and waiting in a queue,
    summed over the servers."""
    t = run.start
    end = run.start + run.makespan
    while t < end:
        cells = []
        for c in run.clients:
            mine = [r for r in run.records if r.digest in c.digests]
            running = sum(
                1
                for r in mine
                if r.started_at is not None and r.started_at <= t < (r.released_at or end)
            )
            waiting = sum(
                1
                for r in mine
                if r.queued_at is not None
                and r.queued_at <= t < (r.started_at or r.finished_at or end)
            )
            cells.append(f"{running:3d} running {waiting:3d} queued")
        print(f"    {t - run.start:5.1f} s: " + " | ".join(cells))
        t += step


def queues(run: Run, machines: Sequence[Machine]) -> list[tuple[Machine, int]]:
    """Each server's longest queue over the run."""
    return [
        (m, peak_queued(r for r in run.records if r.server == m.id and r.is_generation))
        for m in machines
    ]


def report(shared: Run, alone: Run, machines: Sequence[Machine], verbose: bool) -> bool:
    n = len(shared.clients)
    window, share = shares(shared)
    worst_share = max(abs(s * n - 1) for s in share)
    longest = queues(shared, machines)
    over = [(m, q) for m, q in longest if q > m.tier.slots + 2]
    failures = sum(c.failures for c in shared.clients)
    ratio = shared.makespan / alone.makespan
    print(
        f"  {n} clients: makespan {shared.makespan:6.2f} s (ideal {shared.ideal:.2f} s); one "
        f"client alone {alone.makespan:6.2f} s (ideal {alone.ideal:.2f} s): "
        f"{ratio:.3f}x [{'ok' if ratio <= 1.10 else 'MISS'}: <= 1.10]"
    )
    print(
        f"  while all ran ({window:.1f} s), shares of the work: "
        + ", ".join(f"{s:.3f}" for s in share)
        + f" (equal {1 / n:.3f}; worst {worst_share:+.0%} "
        f"[{'ok' if worst_share <= 0.20 else 'MISS'}: within 20%])"
    )
    print(
        "  longest queue per server (slots + 2): "
        + ", ".join(f"{m.id} {q} ({m.tier.slots + 2})" for m, q in longest)
        + f" [{'ok' if not over else 'MISS'}]"
    )
    print(
        f"  failed requests {failures} (alone {sum(c.failures for c in alone.clients)}) "
        f"[{'ok' if failures == 0 else 'MISS'}]; answers "
        + ("ok" if shared.ok and alone.ok else "PROBLEMS")
    )
    for c in [*shared.clients, *alone.clients]:
        line = (
            f"    {c.name}: {c.started - shared.start if c in shared.clients else 0.0:5.1f} s to "
            f"{c.ended - (shared.start if c in shared.clients else c.started):6.1f} s, "
            f"{c.failures} failed requests"
        )
        if verbose:
            line += f", limits at the end {c.limits}"
        if not c.check.ok:
            line += "; PROBLEMS: " + "; ".join(c.check.problems[:3])
        print(line)
    if verbose:
        timeline(shared)
    print(
        f"| {n} | {shared.makespan:.2f} | {alone.makespan:.2f} | {ratio:.3f} | "
        + " / ".join(f"{s * n:.2f}" for s in share)
        + f" | {max(q - m.tier.slots for m, q in longest):+d} | {failures} |"
    )
    return ratio <= 1.10 and worst_share <= 0.20 and not over and failures == 0


def bench(
    papers: int, target: float, clients: int, stagger: float, repeat: int, verbose: bool
) -> None:
    machines = mixed_lab(10)
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        folders = [tmp / f"papers-{k + 1}" for k in range(clients)]
        for k, folder in enumerate(folders):
            write_papers(folder, papers, seed=7 + k, first=k * papers)
        everything = tmp / "papers-all"
        everything.mkdir()
        for folder in folders:
            for path in folder.iterdir():
                shutil.copy(path, everything / path.name)
        expected = [expected_cells(folder) for folder in folders]
        time_scale = target / ideal_makespan(expected_work(expected[0]), machines)
        print(
            f"shared10: {clients} clients x {papers} papers x {len(PROMPTS)} prompts, "
            f"{stagger:g} s apart, one client's share scaled to an ideal of {target:g} s"
        )
        print(
            "| clients | makespan s | one client s | ratio | shares x clients "
            "| longest queue over slots | failed requests |"
        )
        passed = []
        for round_ in range(repeat):
            alone_expected = {k: v for cells in expected for k, v in cells.items()}
            runs = {}
            for what in ("shared", "alone") if round_ % 2 == 0 else ("alone", "shared"):
                if what == "shared":
                    runs[what] = run_clients(machines, folders, expected, time_scale, stagger, tmp)
                else:
                    runs[what] = run_clients(
                        machines, [everything], [alone_expected], time_scale, 0.0, tmp
                    )
            passed.append(report(runs["shared"], runs["alone"], machines, verbose))
        print(f"\nacceptance met in {sum(passed)} of {len(passed)} runs")


def main() -> None:
    if sys.argv[1:2] == ["client"]:
        config, folder, out = sys.argv[2:5]
        client(Path(config), Path(folder), Path(out))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--papers", type=int, default=100, help="papers per client")
    parser.add_argument(
        "--target", type=float, default=20.0, help="ideal makespan of one client's share, s"
    )
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--stagger", type=float, default=5.0, help="seconds between starts")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--verbose", action="store_true", help="each client's limits at the end")
    args = parser.parse_args()
    bench(args.papers, args.target, args.clients, args.stagger, args.repeat, args.verbose)


if __name__ == "__main__":
    main()
