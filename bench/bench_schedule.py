"""Scheduling on a mixed lab: the default scheduler against naive least-loaded and the ideal.

    uv run --no-sync python bench/bench_schedule.py [--quick] [--verbose]
        [--only mixed10,mixed35,plain35,queue10,queue35,slots10,die,cpu,import] [--papers 100]
        [--target 20] [--seeds 1,2,3,4,5]
        [--repeat 1] [--cpu-tasks 2000] [--stream]

``mixed10``, ``mixed35``: ``cluster.analyze(folder, prompts=5 prompts, cache=False)`` over
``--papers`` synthetic papers (2k-15k tokens) on a lab of 10 or 35 emulated Macs (fake
servers on loopback in a process of their own, as the Macs are other machines: Air 2 slots
1x, Pro 4 slots 2x, Studio 6 slots 3x, Ultra 8 slots 4x; prefill 300-1200 tok/s, decode
15-60 tok/s; every server queues the requests it cannot run at once). Time is scaled so the
ideal makespan is ``--target`` seconds. Each scheduler runs on a fresh lab; prints the
makespan, the ideal (total work / total capacity, from the tokens the servers counted) and
efficiency = ideal / makespan, and checks by the markers the servers echo that no answer
is lost, doubled or misplaced.

``plain35``: the 35-Mac lab as a new user would configure it: a workers.json that gives each
Mac's slots and nothing cluster-wide (every cluster setting at its default, so
``max_concurrent_batch`` is ``"auto"``).

``queue10``, ``queue35``: the 10- or 35-Mac lab, but two of every ten are configured for 2
requests more than they run at once, so the extra ones wait in the server's queue until the
adaptive limit finds out.

``slots10``: the 10-Mac lab whose two llama.cpp servers (a Studio and the Ultra) are
configured for 2 requests more than their slots; the client reads the real slot count
from their ``/slots`` and sends no more than that.

``cache10``, ``cache35``: the 10- or 35-Mac lab whose servers keep a prefix cache per slot
(``Behaviour.prefix_cache``: a request takes the free slot with the longest common prefix,
prefills only the rest and reports the cached tokens in its dialect's field), with the
prompts in the built-in presets' layout (title and paper first, the question last). Each
run is reported against two bounds: the cache-oblivious ideal (every prompt read in full,
the ``ideal`` of the other labs) and the cache ideal (each paper read once). Only today's
scheduler (``earliest-finish``) and ``PrefixAffinity`` (``prefix-affinity``, opt-in for a
lab) run here.
``nocache10``: the same prompts on the 10-Mac lab without a cache, the same two schedulers.

``varied10``, ``varied35``: the varied labs of ``_varied.py`` (issue #16), one per seed of
``--seeds``: a random tier mix, papers of 2k-14k tokens (written per seed), answers of
40-500 tokens drawn per cell that no client can tell from the prompt, a cold start on every
Mac, half the Macs counting a request's wait in their reported timings. The ideal counts
each Mac's capacity from the end of its cold start. Least-loaded and today's scheduler run
side by side; the table's ``worst`` column is the worst seed. The fake-clock twin of these
labs is ``bench/bench_varied.py``.

``die``: the 10-Mac lab, two Macs killed at 40% of the ideal makespan; the ideal counts
their capacity only until they died.

``cpu``: the client process's CPU time per task against instant fake servers in another
process (analyze over HTTP), and with each worker's backend swapped for an in-process
instant one (the dispatcher's own cost), for ``--cpu-tasks`` tasks.

``import``: ``import dllm_notebook`` in a fresh interpreter, best of 5.

``--stream``: each lab scenario runs the default scheduler twice, side by side, with every
worker's ``stream`` false (answers whole: a queue shows when an answer ends) and ``"auto"``
(the default: Ollama's answers streamed, so a first token that is overdue shows its
queue at once; the other dialects have better signals or cost more to stream); ``cpu``
adds the client's CPU per task with and without streaming.

The lab, papers, ideal bound and answer check are in ``_lab.py``; ``cpu`` and ``import``
in ``_cpu.py``.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from _cpu import bench_cpu, bench_import, bench_stream_cpu, lab_process
from _lab import (
    PAPER_FIRST,
    PROMPTS,
    QUEUE_EXTRA,
    AnswerCheck,
    Expected,
    Machine,
    cached_work,
    check_answers,
    expected_cells,
    expected_work,
    ideal_makespan,
    lab_spec,
    logged_work,
    mixed_lab,
    settings_for,
    worker_configs,
    write_papers,
)
from _varied import PAPER_TOKENS, VariedLab, varied_lab, varied_work

from dllm_notebook import Cluster, EarliestFinish, LeastLoaded, PrefixAffinity, Scheduler
from dllm_notebook.testing import RequestRecord

SCENARIOS = (
    "mixed10",
    "mixed35",
    "plain35",
    "queue10",
    "queue35",
    "slots10",
    "cache10",
    "cache35",
    "nocache10",
    "varied10",
    "varied35",
    "die",
    "cpu",
    "import",
)
SCHEDULERS: dict[str, Callable[[], Scheduler | None]] = {
    "least-loaded": LeastLoaded,
    "earliest-finish": EarliestFinish,
    "default": lambda: None,
}
CACHE_SCENARIOS = ("cache10", "cache35", "nocache10")
"""Scenarios with the paper-first prompts, run with today's scheduler and PrefixAffinity."""
CACHE_SCHEDULERS: dict[str, Callable[[], Scheduler | None]] = {
    "earliest-finish": EarliestFinish,
    "prefix-affinity": PrefixAffinity,
}
"""A lab's default is ``EarliestFinish`` while ``PrefixAffinity`` is opt-in: both by name."""
VARIED_SCENARIOS = ("varied10", "varied35")
VARIED_SCHEDULERS: dict[str, Callable[[], Scheduler | None]] = {
    "least-loaded": LeastLoaded,
    "earliest-finish": EarliestFinish,
}
KILLED = ("pro-05", "studio-10")
VERBOSE = False
KILL_AT = 0.4


@dataclass
class Run:
    scenario: str
    scheduler: str
    workers: int
    tasks: int
    makespan: float
    ideal: float
    first_request: float
    check: AnswerCheck
    requests: int
    """Generation requests the servers received (hedges and retries included)."""
    notes: list[str] = field(default_factory=list)
    cache_ideal: float = float("nan")
    """The bound if each paper's shared prefix were read once (a perfect prefix cache)."""
    seed: int | None = None
    """The varied lab's seed (``varied10``, ``varied35``)."""

    @property
    def efficiency(self) -> float:
        return self.ideal / self.makespan

    @property
    def of_ideal(self) -> float:
        """Makespan over the cache-oblivious ideal (the issue's acceptance measure)."""
        return self.makespan / self.ideal

    @property
    def serving_efficiency(self) -> float:
        """Efficiency counted from the first request (planning before it left out)."""
        return self.ideal / (self.makespan - self.first_request)


def run_lab(
    scenario: str,
    scheduler: str,
    machines: Sequence[Machine],
    folder: Path,
    expected: dict[tuple[str, str], Expected],
    time_scale: float,
    kill: Sequence[str] = (),
    *,
    prompts: dict[str, str] = PROMPTS,
    prefix_cache: bool = False,
    plain: bool = False,
    varied: VariedLab | None = None,
    stream: bool | str | None = None,
) -> Run:
    """One analyze() on a fresh lab; kills ``kill`` at KILL_AT of the predicted ideal.

    ``varied``: the lab is that varied lab (its spec, and its cold starts in the ideal).
    ``stream``: every worker's ``stream`` setting (``None``: its default)."""
    predicted = ideal_makespan(expected_work(expected), machines) * time_scale
    deaths: dict[str, float] = {}
    spec = lab_spec(machines, time_scale=time_scale, prefix_cache=prefix_cache)
    ready: dict[str, float] = {}
    if varied is not None:
        spec, ready = varied.spec(time_scale), varied.ready()
    with lab_process(spec) as lab:
        ports = lab.ports
        workers = worker_configs(machines, ports, stream=stream)
        with Cluster(
            workers,
            scheduler={**SCHEDULERS, **CACHE_SCHEDULERS}[scheduler](),
            store=None,
            **({} if plain else settings_for(machines)),
        ) as cluster:
            health = cluster.check()
            if not health["healthy"].all():
                raise SystemExit(f"the lab is not healthy before the run:\n{health}")
            started = time.monotonic()
            done = threading.Event()

            def killer() -> None:
                if done.wait(max(0.0, started + KILL_AT * predicted - time.monotonic())):
                    return
                for server_id in kill:
                    deaths[server_id] = (time.monotonic() - started) / time_scale
                    lab.kill(server_id)

            thread = threading.Thread(target=killer, daemon=True)
            if kill:
                thread.start()
            try:
                frame = cluster.analyze(
                    folder, prompts=prompts, cache=False, progress=False, long=True
                )
            finally:
                makespan = time.monotonic() - started
                done.set()
            if VERBOSE:
                print("    limits at the end:", {w.id: w.limit for w in cluster.workers})
        records = lab.log()
    if kill:
        thread.join()
    generated = Counter(r.digest for r in records if r.digest and r.generated)
    check = check_answers(frame, expected, generated)
    work, problems = logged_work(records, expected)
    check.problems.extend(problems)
    ideal = ideal_makespan(work, machines, deaths, ready) * time_scale
    cache_ideal = (
        ideal_makespan(cached_work(records, expected), machines, deaths, ready) * time_scale
    )
    arrivals = [r.received_at for r in records if r.is_generation]
    if VERBOSE:
        print_workers(records, machines, started, makespan)
    notes = [f"killed {k} at {t * time_scale:.2f} s" for k, t in deaths.items()]
    if prefix_cache:
        hits = sum(1 for r in records if r.generated and (r.cached_tokens or 0) > 100)
        notes.append(f"{hits} prompts found their paper in the slot's cache")
    if kill and len(deaths) < len(kill):
        notes.append("the run ended before the kill")
    return Run(
        scenario,
        scheduler if stream is None else f"{scheduler}, stream {str(stream).lower()}",
        len(machines),
        len(expected),
        makespan,
        ideal,
        (min(arrivals) - started) if arrivals else float("nan"),
        check,
        len(arrivals),
        notes,
        cache_ideal,
        None if varied is None else varied.seed,
    )


def print_workers(
    records: Sequence[RequestRecord], machines: Sequence[Machine], started: float, span: float
) -> None:
    """Per machine: requests, answers, cancelled copies, busy share of its slots, seconds
    requests waited in its queue (all of them together), last end."""
    for m in machines:
        mine = [r for r in records if r.server == m.id and r.is_generation]
        ends = [r.finished_at - started for r in mine if r.finished_at]
        busy = sum(
            min(r.finished_at, started + span) - max(r.started_at or r.received_at, started)
            for r in mine
            if r.finished_at
        )
        waited = sum(r.started_at - r.received_at for r in mine if r.started_at)
        print(
            f"    {m.id:10} {m.tier.slots} slots {len(mine):4} requests "
            f"{sum(r.generated for r in mine):4} answered "
            f"{sum(r.outcome == 'client_gone' for r in mine):3} cancelled, "
            f"slots busy {busy / (m.tier.slots * span):4.0%}, queued {waited:5.2f} s, last end "
            f"{max(ends, default=0.0):6.2f} s"
        )


def bench_varied(
    scenarios: Sequence[str], papers: int, target: float, repeat: int, seeds: Sequence[int]
) -> list[Run]:
    """The varied labs: per seed, its own papers and lab; both schedulers on each."""
    runs: list[Run] = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            folder = Path(tmp) / f"papers-{seed}"
            write_papers(folder, papers, seed=seed, tokens=PAPER_TOKENS)
            expected = expected_cells(folder)
            for scenario in scenarios:
                lab = varied_lab(seed, 35 if scenario.endswith("35") else 10)
                machines = lab.plain
                time_scale = target / lab.ideal(varied_work(expected, seed))
                order = list(VARIED_SCHEDULERS)
                for round_ in range(repeat):
                    for scheduler in order if round_ % 2 == 0 else order[::-1]:
                        run = run_lab(
                            scenario, scheduler, machines, folder, expected, time_scale, varied=lab
                        )
                        print_run(run)
                        runs.append(run)
    return runs


def bench_labs(
    scenarios: Sequence[str], papers: int, target: float, repeat: int, *, stream: bool = False
) -> list[Run]:
    runs: list[Run] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "papers"
        write_papers(folder, papers)
        expected = expected_cells(folder)
        paper_first = expected_cells(folder, PAPER_FIRST)
        for scenario in scenarios:
            machines = mixed_lab(
                35 if scenario.endswith("35") else 10,
                extra=QUEUE_EXTRA if scenario.startswith(("queue", "slots")) else 0,
                over="llamacpp" if scenario.startswith("slots") else None,
            )
            cells = paper_first if scenario in CACHE_SCENARIOS else expected
            prompts = PAPER_FIRST if scenario in CACHE_SCENARIOS else PROMPTS
            time_scale = target / ideal_makespan(expected_work(cells), machines)
            kill = KILLED if scenario == "die" else ()
            order: list[tuple[str, bool | str | None]] = [(name, None) for name in SCHEDULERS]
            if scenario in CACHE_SCENARIOS:
                order = [(name, None) for name in CACHE_SCHEDULERS]
            if stream:
                order = [("default", False), ("default", "auto")]
            for round_ in range(repeat):
                for scheduler, streamed in order if round_ % 2 == 0 else order[::-1]:
                    run = run_lab(
                        scenario,
                        scheduler,
                        machines,
                        folder,
                        cells,
                        time_scale,
                        kill,
                        prompts=prompts,
                        prefix_cache=scenario.startswith("cache"),
                        plain=scenario.startswith("plain"),
                        stream=streamed,
                    )
                    print_run(run)
                    runs.append(run)
    return runs


def print_run(run: Run) -> None:
    status = (
        "answers ok" if run.check.ok else "ANSWER PROBLEMS: " + "; ".join(run.check.problems[:5])
    )
    print(
        f"  {run.scenario:8}{'' if run.seed is None else f' seed {run.seed}'} "
        f"{run.scheduler:13} makespan {run.makespan:6.2f} s, ideal "
        f"{run.ideal:6.2f} s ({run.of_ideal:5.3f}x; cache ideal {run.cache_ideal:6.2f} s), "
        f"efficiency {run.efficiency:5.3f}, first request after "
        f"{run.first_request:.2f} s, {run.requests} requests and {run.check.generations} "
        f"generations for {run.tasks} tasks; {status}"
        + ("; " + ", ".join(run.notes) if run.notes else ""),
        flush=True,
    )


def print_lab_table(runs: Sequence[Run]) -> None:
    print()
    print(
        "| scenario | scheduler | workers | tasks | runs | makespan s | ideal s | cache ideal s "
        "| x ideal | efficiency | worst | first request s | efficiency from first request "
        "| requests | generations | answers |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    groups: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.scenario, run.scheduler), []).append(run)
    for (scenario, scheduler), group in groups.items():
        makespan = statistics.median(r.makespan for r in group)
        ideal = statistics.median(r.ideal for r in group)
        cache_ideal = statistics.median(r.cache_ideal for r in group)
        of_ideal = statistics.median(r.of_ideal for r in group)
        efficiency = statistics.median(r.efficiency for r in group)
        worst = min(r.efficiency for r in group)
        first = statistics.median(r.first_request for r in group)
        serving = statistics.median(r.serving_efficiency for r in group)
        generations = max(r.check.generations for r in group)
        requests = max(r.requests for r in group)
        ok = "ok" if all(r.check.ok for r in group) else "PROBLEMS"
        print(
            f"| {scenario} | {scheduler} | {group[0].workers} | {group[0].tasks} | {len(group)} "
            f"| {makespan:.2f} | {ideal:.2f} | {cache_ideal:.2f} | {of_ideal:.3f} "
            f"| {efficiency:.3f} | {worst:.3f} | {first:.2f} "
            f"| {serving:.3f} "
            f"| {requests} | {generations} | {ok} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="30 papers, 3 s ideal, fewer tasks")
    parser.add_argument("--only", default=",".join(SCENARIOS), help=",".join(SCENARIOS))
    parser.add_argument("--papers", type=int, default=None, help="default 100 (30 with --quick)")
    parser.add_argument(
        "--target",
        type=float,
        default=None,
        help="ideal makespan in real seconds (default 20, 3 with --quick)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per scheduler (median)")
    parser.add_argument("--seeds", default="1,2,3,4,5", help="seeds of the varied labs")
    parser.add_argument("--cpu-tasks", type=int, default=None, help="default 2000 (500 quick)")
    parser.add_argument("--verbose", action="store_true", help="a line per machine per run")
    parser.add_argument(
        "--stream",
        action="store_true",
        help="the default scheduler with every worker's stream off, then on, side by side",
    )
    args = parser.parse_args()
    global VERBOSE
    VERBOSE = args.verbose
    logging.getLogger("dllm_notebook").setLevel(logging.ERROR)  # the kills' warnings
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(only) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(sorted(unknown))}; choose from {SCENARIOS}")
    papers = args.papers or (30 if args.quick else 100)
    target = args.target or (3.0 if args.quick else 20.0)
    labs = [s for s in only if s not in ("cpu", "import", *VARIED_SCENARIOS)]
    varied = [s for s in only if s in VARIED_SCENARIOS]
    if labs or varied:
        print(f"scheduling: {papers} papers x {len(PROMPTS)} prompts, ideal scaled to {target:g} s")
        runs = bench_labs(labs, papers, target, args.repeat, stream=args.stream) if labs else []
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        runs += bench_varied(varied, papers, target, args.repeat, seeds) if varied else []
        print_lab_table(runs)
        if not all(r.check.ok for r in runs):
            print("\nsome runs lost, doubled or misplaced answers (see above)")
    if "cpu" in only:
        print()
        bench_cpu(args.cpu_tasks or (500 if args.quick else 2000), SCHEDULERS)
        if args.stream:
            print()
            bench_stream_cpu(args.cpu_tasks or (500 if args.quick else 2000))
    if "import" in only:
        print()
        bench_import(3 if args.quick else 5)


if __name__ == "__main__":
    main()
