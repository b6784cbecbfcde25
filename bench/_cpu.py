"""The bench's client-cost measurements: dispatcher CPU per task, and import time.

Used by ``bench/bench_schedule.py`` (``cpu`` and ``import``).
"""

from __future__ import annotations

import functools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dllm_notebook import Cluster, Paper, Scheduler
from dllm_notebook.testing import RequestRecord, expected_echo, instant_answers

__all__ = ["LabProcess", "bench_cpu", "bench_import", "bench_stream_cpu", "lab_process"]

ROOT = Path(__file__).resolve().parents[1]


# -- dispatcher CPU ------------------------------------------------------------------------
class LabProcess:
    """Fake servers in their own process (their CPU is not ours), driven over its stdin."""

    def __init__(self, process: subprocess.Popen[str], ports: dict[str, int]) -> None:
        self.process = process
        self.ports = ports

    def _ask(self, command: str) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        answer: dict[str, Any] = json.loads(self.process.stdout.readline())
        if "error" in answer:
            raise RuntimeError(f"the lab refused {command!r}: {answer['error']}")
        return answer

    def kill(self, server_id: str) -> None:
        self._ask(f"kill {server_id}")

    def log(self) -> list[RequestRecord]:
        """Every server's request log, killed ones included."""
        return [RequestRecord(**r) for r in self._ask("log")["records"]]


@contextmanager
def lab_process(spec: dict[str, Any]) -> Iterator[LabProcess]:
    """Start a lab of fake servers in another process; yields it once every server is up."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lab.json"
        path.write_text(json.dumps(spec))
        command = [sys.executable, "-m", "dllm_notebook.testing", "lab", "--spec", str(path)]
        with subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        ) as lab:
            try:
                assert lab.stdout is not None
                count = sum(int(entry.get("count", 1)) for entry in spec["servers"])
                lines = [json.loads(lab.stdout.readline()) for _ in range(count)]
                yield LabProcess(lab, {line["id"]: line["port"] for line in lines})
            finally:
                lab.terminate()
                lab.wait(10)


def cpu_per_task(call: Callable[[], int]) -> tuple[float, float, int]:
    """(CPU ms per task, wall s, tasks) of one call returning its number of tasks."""
    cpu, wall = time.process_time(), time.perf_counter()
    tasks = call()
    return (time.process_time() - cpu) * 1000 / tasks, time.perf_counter() - wall, tasks


def instant_workers(ports: Mapping[str, int], **extra: Any) -> list[dict[str, Any]]:
    """The client's entries for the instant servers: 16 requests at once on each."""
    return [
        {
            "id": sid,
            "host": "127.0.0.1",
            "port": port,
            "type": "openai",
            "max_concurrent_requests": 16,
            **extra,
        }
        for sid, port in ports.items()
    ]


def bench_cpu(tasks: int, schedulers: Mapping[str, Callable[[], Scheduler | None]]) -> None:
    servers = 4
    spec = {
        "servers": [
            {
                "dialect": "openai",
                "id": f"instant-{i}",
                "behaviour": {"slots": 16, "answer_tokens": 8},
            }
            for i in range(servers)
        ]
    }
    prompts = {f"q{j}": f"Question {j} [[q{j}]]: {{content}}" for j in range(5)}
    papers = [
        Paper.from_text(f"p{i:05d}.txt", f"Paper {i}: soil moisture. [[p{i}]]")
        for i in range(max(1, tasks // len(prompts)))
    ]
    texts = [f"Prompt {i} [[t{i}]]" for i in range(tasks)]

    def analyze(cluster: Cluster, subset: Sequence[Paper]) -> Callable[[], int]:
        def call() -> int:
            frame = cluster.analyze(subset, prompts=prompts, cache=False, progress=False, long=True)
            assert (frame["status"] == "ok").all(), frame["status"].value_counts()
            return len(frame)

        return call

    def map_all(cluster: Cluster) -> int:
        answers = cluster.map(texts)
        assert all(
            a.ok and a.text.startswith(expected_echo(t))
            for a, t in zip(answers, texts, strict=True)
        )
        return len(answers)

    print(f"dispatcher CPU, {len(papers) * len(prompts)} tasks, {servers} instant fake servers")
    rows = []
    with lab_process(spec) as lab:
        ports = lab.ports
        workers = instant_workers(ports)
        for name, make in schedulers.items():
            with Cluster(workers, scheduler=make(), store=None, max_concurrent_batch=64) as c:
                c.check()
                analyze(c, papers[:20])()  # warm up: connections, first imports
                rows.append(
                    (
                        name,
                        "analyze(), HTTP to servers in another process",
                        *cpu_per_task(analyze(c, papers)),
                    )
                )
                with instant_answers(c):
                    rows.append(
                        (
                            name,
                            "analyze(), in-process instant backend",
                            *cpu_per_task(analyze(c, papers)),
                        )
                    )
                    rows.append(
                        (
                            name,
                            "map(), in-process instant backend",
                            *cpu_per_task(functools.partial(map_all, c)),
                        )
                    )
    print("| scheduler | what | tasks | wall s | client CPU ms/task |")
    print("|---|---|---:|---:|---:|")
    for name, what, ms, wall, count in rows:
        print(f"| {name} | {what} | {count} | {wall:.2f} | {ms:.3f} |")


# -- import time ---------------------------------------------------------------------------
def bench_stream_cpu(tasks: int) -> None:
    """Client CPU per task over HTTP, each answer whole (``stream: false``) or streamed
    (``stream: true``), with answers of 8 and of 256 tokens (one SSE event per token)."""
    servers = 4
    prompts = {f"q{j}": f"Question {j} [[q{j}]]: {{content}}" for j in range(5)}
    papers = [
        Paper.from_text(f"p{i:05d}.txt", f"Paper {i}: soil moisture. [[p{i}]]")
        for i in range(max(1, tasks // len(prompts)))
    ]
    print(f"streaming: client CPU per task, {len(papers) * len(prompts)} tasks over HTTP")
    print("| answer tokens | stream | wall s | client CPU ms/task |")
    print("|---:|---|---:|---:|")
    for answer_tokens in (8, 256):
        spec = {
            "servers": [
                {
                    "dialect": "openai",
                    "id": f"instant-{i}",
                    "behaviour": {"slots": 16, "answer_tokens": answer_tokens},
                }
                for i in range(servers)
            ]
        }
        with lab_process(spec) as lab:
            for stream in (False, True):
                workers = instant_workers(lab.ports, stream=stream)
                with Cluster(workers, store=None, max_concurrent_batch=64) as cluster:
                    cluster.check()

                    def call(subset: Sequence[Paper], cluster: Cluster = cluster) -> int:
                        frame = cluster.analyze(
                            subset, prompts=prompts, cache=False, progress=False, long=True
                        )
                        assert (frame["status"] == "ok").all(), frame["status"].value_counts()
                        return len(frame)

                    call(papers[:20])  # warm up: connections, first imports
                    ms, wall, _ = cpu_per_task(functools.partial(call, papers))
                print(f"| {answer_tokens} | {str(stream).lower()} | {wall:.2f} | {ms:.3f} |")


def bench_import(repeat: int) -> None:
    code = (
        "import time; t = time.perf_counter(); import dllm_notebook; print(time.perf_counter() - t)"
    )
    times = [
        float(
            subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
            ).stdout
        )
        for _ in range(repeat)
    ]
    trace = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import dllm_notebook"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stderr
    heavy: dict[str, int] = {}
    for line in trace.splitlines()[1:]:
        parts = [p.strip() for p in line.split("|")]
        if len(parts) == 3 and "." not in parts[2] and parts[2] != "dllm_notebook":
            name = parts[2].strip()
            heavy[name] = max(heavy.get(name, 0), int(parts[1]))
    top = sorted(heavy.items(), key=lambda kv: -kv[1])[:6]
    print(
        f"import dllm_notebook: best of {repeat} {min(times):.3f} s "
        f"(median {statistics.median(times):.3f} s)"
    )
    print(
        "  largest top-level imports (cumulative): "
        + ", ".join(f"{n} {us / 1e6:.2f} s" for n, us in top)
    )
