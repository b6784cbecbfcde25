"""Cells per minute of the local worker: llama.cpp's server (xllamacpp) against the old one.

    uv run --no-sync python bench/bench_local.py --baseline-python /tmp/lcp/bin/python
    uv run --no-sync python bench/bench_local.py --papers 2 --n-parallel 4 --threads 1

Each contender analyses the same papers (default: sample_papers/) with the ``research``
preset, with no result store, on one server started for it: the new default
(:class:`dllm_notebook.LocalServer`, tuned with the options below) and, when
``--baseline-python`` names a Python that has ``llama-cpp-python[server]`` (a scratch
environment outside the project, e.g. ``uv venv /tmp/lcp && uv pip install --python /tmp/lcp
'llama-cpp-python[server]'``), the server ``Cluster.local()`` ran before: llama-cpp-python's
single-request server with the same Q/A prompt format and context window, and the threads
its launcher gave it (half the CPUs; ``--baseline-threads`` to change). The new server
runs with ``LocalServer``'s defaults, threads included (the CPUs idle when the bench
starts; ``--threads`` to change).
``--rounds N`` alternates the contenders N times (the machine may be shared, so alternating
spreads its noise over both); the table shows each contender's median. Every contender
is planned by ``PrefixAffinity``, ``Cluster.local()``'s scheduler; ``--with-earliest-finish``
adds the new server under ``EarliestFinish`` (the scheduler of a lab), to show what reading
each paper once per slot saves.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from dllm_notebook import (
    Cluster,
    EarliestFinish,
    LocalServer,
    Paper,
    PrefixAffinity,
    Scheduler,
    WorkerConfig,
    default_model_path,
    load_papers,
)

ROOT = Path(__file__).resolve().parents[1]
BASELINE_SERVER = Path(__file__).with_name("_lcp_server.py")
ALIAS = "gemma-3-270m-q4_k_m"


@dataclass
class Run:
    name: str
    cells: int
    ok: int
    seconds: float
    startup: float
    answer_tokens: int

    @property
    def per_minute(self) -> float:
        return 60.0 * self.ok / self.seconds


@contextmanager
def new_default(args: argparse.Namespace) -> Iterator[tuple[list[WorkerConfig], float]]:
    server = LocalServer(
        n_ctx=args.n_ctx,
        n_parallel=args.n_parallel,
        n_threads=args.threads,
        n_batch=args.n_batch,
        n_ubatch=args.n_ubatch,
    )
    with server:
        yield [server.worker_config()], server.startup_seconds or 0.0


@contextmanager
def baseline(args: argparse.Namespace) -> Iterator[tuple[list[WorkerConfig], float]]:
    port = _free_port()
    began = time.monotonic()
    command = [
        args.baseline_python, str(BASELINE_SERVER),
        "--model", str(default_model_path()),
        "--model_alias", ALIAS,
        "--host", "127.0.0.1",
        "--port", str(port),
        "--n_ctx", str(args.n_ctx),
        "--n_threads", str(args.baseline_threads),
        "--n_threads_batch", str(args.baseline_threads),
        "--n_batch", str(args.n_batch),
        "--n_ubatch", str(args.n_ubatch),
        "--interrupt_requests", "False",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k.upper() not in ("PORT", "HOST", "N_CTX")}
    proc = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=env,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/v1/models"
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"the baseline server exited with code {proc.returncode}")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        startup = time.monotonic() - began
        config = WorkerConfig(
            id="llama-cpp-python",
            host="127.0.0.1",
            port=port,
            type="openai",
            model=ALIAS,
            max_concurrent_requests=1,  # it serves one request at a time
            context_length=args.n_ctx,
        )
        yield [config], startup
    finally:
        proc.kill()
        proc.wait()
        if proc.stdin is not None:
            proc.stdin.close()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


Starter = Callable[[argparse.Namespace], AbstractContextManager[tuple[list[WorkerConfig], float]]]


def run_one(
    name: str,
    starter: Starter,
    scheduler: Callable[[], Scheduler],
    args: argparse.Namespace,
    papers: list[Paper],
) -> Run:
    with (
        starter(args) as (configs, startup),
        Cluster(configs, store=None, request_timeout=600, scheduler=scheduler()) as cluster,
    ):
        began = time.monotonic()
        table = cluster.analyze(papers, preset=args.preset, long=True, progress=False)
        seconds = time.monotonic() - began
    ok = int((table["status"] == "ok").sum())
    tokens = int(table["completion_tokens"].sum())
    return Run(name, len(table), ok, seconds, startup, tokens)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("papers_dir", nargs="?", default=str(ROOT / "sample_papers"))
    parser.add_argument("--papers", type=int, default=None, help="only the first N papers")
    parser.add_argument("--preset", default="research")
    parser.add_argument("--baseline-python", default=None, help="a Python with llama-cpp-python")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--with-earliest-finish",
        action="store_true",
        help="also run the new server under EarliestFinish (the scheduler of a lab)",
    )
    defaults = LocalServer()  # not started: its settings are Cluster.local()'s defaults
    parser.add_argument("--n-ctx", type=int, default=defaults.n_ctx)
    parser.add_argument("--n-parallel", type=int, default=defaults.n_parallel)
    parser.add_argument("--threads", type=int, default=defaults.n_threads)
    parser.add_argument(
        "--baseline-threads",
        type=int,
        default=max(1, (os.cpu_count() or 2) // 2),
        help="threads of llama-cpp-python's server (default: half the CPUs, as it was run)",
    )
    parser.add_argument("--n-batch", type=int, default=defaults.n_batch)
    parser.add_argument("--n-ubatch", type=int, default=defaults.n_ubatch)
    args = parser.parse_args()

    papers = load_papers(args.papers_dir)[: args.papers]
    # Cluster.local()'s scheduler, PrefixAffinity, for every server: each reads a paper
    # once per slot. --with-earliest-finish adds the new server under EarliestFinish.
    contenders: list[tuple[str, Starter, Callable[[], Scheduler]]] = []
    if args.baseline_python:
        contenders.append(("llama-cpp-python server (1 slot)", baseline, PrefixAffinity))
    new_name = f"xllamacpp, {args.n_parallel} slots"
    if args.with_earliest_finish:
        contenders.append((f"{new_name}, EarliestFinish", new_default, EarliestFinish))
    contenders.append((new_name, new_default, PrefixAffinity))
    runs: dict[str, list[Run]] = {name: [] for name, _, _ in contenders}
    for round_ in range(args.rounds):
        for name, starter, scheduler in contenders:
            run = run_one(name, starter, scheduler, args, papers)
            runs[name].append(run)
            sys.stderr.write(
                f"round {round_ + 1}: {name}: {run.ok}/{run.cells} cells in {run.seconds:.1f} s "
                f"({run.per_minute:.2f} cells/min)\n"
            )

    print(
        f"{len(papers)} papers x preset {args.preset!r}; n_ctx {args.n_ctx} per request, "
        f"{args.threads} threads (baseline {args.baseline_threads}), n_batch {args.n_batch}, "
        f"n_ubatch {args.n_ubatch}; "
        f"median of {args.rounds} round(s)\n"
    )
    print("| server | cells ok | seconds | cells/min | answer tokens | startup s | x baseline |")
    print("|---|---|---|---|---|---|---|")
    first = statistics.median(r.per_minute for r in next(iter(runs.values())))
    for name, results in runs.items():
        rate = statistics.median(r.per_minute for r in results)
        seconds = statistics.median(r.seconds for r in results)
        startup = statistics.median(r.startup for r in results)
        ok = min(r.ok for r in results)
        cells = results[0].cells
        tokens = statistics.median(r.answer_tokens for r in results)
        print(
            f"| {name} | {ok}/{cells} | {seconds:.1f} | {rate:.2f} | {tokens:.0f} "
            f"| {startup:.1f} | {rate / first:.2f} |"
        )


if __name__ == "__main__":
    main()
