"""``dllm check``: validate the workers file and try every worker."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import click

from .. import ChatRequest, DllmError
from .._loop import run_sync, wait_within
from ._app import EXIT_NONE, EXIT_PARTIAL, config_option, open_cluster
from ._table import cell, table

if TYPE_CHECKING:
    from .. import Cluster, WorkerView

__all__ = ["HELLO", "check", "healthy_workers", "hello_all"]

HELLO_TIMEOUT = 120.0
HELLO = ChatRequest(
    "Reply with one short friendly greeting.",
    options={"max_tokens": 16, "temperature": 0.0},
    prompt_tokens_estimate=12,
)


def healthy_workers(cluster: Cluster) -> list[WorkerView]:
    """The workers whose last check passed (call after ``check()``)."""
    return [w for w in cluster.workers if w.healthy]


async def hello_all(cluster: Cluster, workers: list[WorkerView]) -> dict[str, float | str]:
    """One tiny prompt to each worker at once: seconds taken, or the error."""

    async def one(worker: WorkerView) -> float | str:
        timeout = worker.config.timeout or HELLO_TIMEOUT
        started = time.monotonic()
        try:
            await wait_within(cluster.aask(HELLO, worker=worker.id), timeout)
        except asyncio.TimeoutError:
            return f"no answer to a tiny prompt within {timeout:g} s"
        except DllmError as exc:
            return str(exc)
        return time.monotonic() - started

    results = await asyncio.gather(*(one(w) for w in workers))
    return {w.id: r for w, r in zip(workers, results, strict=True)}


def _int(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    return str(int(value))


@click.command(
    short_help="Validate the workers file and try every worker.",
    epilog="""\b
Exit codes: 0 every worker is healthy; 3 some are not; 4 none is;
1 the file is invalid (every problem is listed).""",
)
@config_option
@click.option(
    "-t", "--test", is_flag=True, help="Also send each healthy worker one tiny test prompt."
)
@click.pass_context
def check(ctx: click.Context, config: str | None, test: bool) -> None:
    """Validate the workers file and try every worker.

    For each worker: can it be reached, is its model there (and loaded), what context
    window it has, and how long a health probe took; with --test, how long it takes to
    answer one tiny prompt. Prints a table, the problems, then "Healthy workers: N/M".
    """
    with open_cluster(config) as cluster:
        frame = cluster.check()
        tests = run_sync(hello_all(cluster, healthy_workers(cluster)), what="check") if test else {}
    header = ["worker", "type", "url", "model", "loaded", "context", "probe s"]
    if test:
        header.append("test s")
    header.append("status")
    rows, problems = [], []
    healthy = 0
    for record in frame.reset_index().to_dict("records"):
        name = str(record["worker"])
        ok = bool(record["healthy"])
        reason = record["error"] if isinstance(record["error"], str) else ""
        tested = tests.get(name)
        if isinstance(tested, str):
            ok, reason = False, f"the test prompt failed: {tested}"
        healthy += ok
        if reason:
            problems.append(f"  {name}: {reason}")
        row = [
            name,
            str(record["type"]),
            str(record["url"]).split("://", 1)[-1],
            cell(record["model"]),
            cell(record["model_loaded"]),
            _int(record["context_length"]),
            cell(record["latency_s"]),
        ]
        if test:
            row.append(cell(tested))
        row.append("healthy" if ok else "UNHEALTHY")
        rows.append(row)
    click.echo(table(header, rows, numeric=[5, 6, 7] if test else [5, 6]))
    if problems:
        click.echo("\nProblems:")
        click.echo("\n".join(problems))
    total = len(rows)
    click.echo(f"\nHealthy workers: {healthy}/{total}")
    if healthy == 0:
        ctx.exit(EXIT_NONE)
    if healthy < total:
        ctx.exit(EXIT_PARTIAL)
