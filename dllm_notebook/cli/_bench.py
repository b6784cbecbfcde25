"""``dllm bench``: each worker's latency, prompt-processing and generation speed.

Measured with fixed prompts, one worker at a time (workers may share a machine):

- latency: time to the first streamed piece of a tiny prompt (median of three);
- prompt processing: the extra time to the first piece of a long prompt, per prompt token
  (the server's own count where it reports one);
- generation: pieces per second after the first piece (servers stream about one token
  per piece);
- concurrency: total pieces per second with 1, 2, 4 ... answers at once. The suggested
  ``max_concurrent_requests`` is the level after which doubling gains less than 15 %.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import click

from .. import ChatRequest, ChatStream, DllmError, estimate_tokens
from ._app import EXIT_NONE, EXIT_PARTIAL, config_option, open_cluster
from ._table import cell, table
from ._workers import healthy_workers

if TYPE_CHECKING:
    from .. import Cluster, WorkerView

__all__ = ["BenchResult", "bench", "bench_worker", "suggest_concurrency"]

GAIN = 1.15
TINY = "Say hello."
GENERATE = "Count from one to one thousand in words, separated by commas."
PASSAGE = (
    "Soil microbes respond to drought by changing which genes they express, how fast they "
    "grow and which partners they keep. Field plots that were watered less for three "
    "summers held fewer fungal species but more drought-tolerant bacteria, and the plants "
    "growing there recovered faster after the next dry spell. "
)


@dataclass
class BenchResult:
    """One worker's measurements (``None`` where a step could not be measured)."""

    worker: str
    model: str | None
    configured: int
    latency_s: float | None = None
    prompt_tps: float | None = None
    generation_tps: float | None = None
    throughput: dict[int, float] = field(default_factory=dict)
    """Total pieces per second with that many answers at once."""
    suggested: int | None = None
    error: str | None = None
    note: str | None = None
    """Why the concurrency steps stopped early (e.g. the server refused as overloaded)."""


def suggest_concurrency(throughput: Mapping[int, float], gain: float = GAIN) -> int:
    """The concurrency after which doubling no longer raises throughput by ``gain``.

    >>> suggest_concurrency({1: 20.0, 2: 39.0, 4: 41.0, 8: 40.0})
    2
    """
    levels = sorted(throughput)
    best = levels[0] if levels else 1
    for level in levels[1:]:
        if throughput[level] < throughput[best] * gain:
            break
        best = level
    return best


def long_prompt(tokens: int) -> str:
    """A fixed passage, repeated to about ``tokens`` estimated tokens; a fresh first line
    keeps servers from reusing a cached prompt of an earlier run."""
    unit = max(estimate_tokens(PASSAGE), 1)
    body = PASSAGE * max(1, tokens // unit)
    return f"Benchmark {uuid.uuid4().hex}.\n\n{body}\n\nIn one word, what is this about?"


def _first_piece(cluster: Cluster, worker: WorkerView, request: ChatRequest) -> float:
    """Seconds to the first streamed piece (the stream is then dropped)."""
    with cluster.stream(request.prompt, worker=worker.id, **request.options) as stream:
        next(stream, None)
        return stream.first_piece_s or time.monotonic() - stream.started_at


def _generate(stream: ChatStream) -> tuple[float, int]:
    """(seconds from the first piece to the last, number of pieces)."""
    first: float | None = None
    count = 0
    for _ in stream:
        count += 1
        if first is None:
            first = time.monotonic()
    return (time.monotonic() - first if first is not None else 0.0), count


def _all_at_once(
    cluster: Cluster, worker: WorkerView, level: int, max_tokens: int
) -> list[tuple[float, int]]:
    """``level`` answers at once on one worker; on the first failure stop the others and
    raise it."""
    streams: list[ChatStream] = []

    def one() -> tuple[float, int]:
        stream = cluster.stream(GENERATE, worker=worker.id, max_tokens=max_tokens, temperature=0.0)
        streams.append(stream)
        with stream:
            return _generate(stream)

    with ThreadPoolExecutor(level, thread_name_prefix="dllm-bench") as pool:
        runs = [pool.submit(one) for _ in range(level)]
        try:
            return [run.result() for run in runs]
        except BaseException:
            for run in runs:
                run.cancel()
            for stream in streams:
                stream.close()
            raise


def _prompt_tokens(cluster: Cluster, worker: WorkerView, request: ChatRequest) -> int:
    """The server's count of the prompt's tokens, or the estimate."""
    try:
        done = cluster.ask(request, worker=worker.id)
    except DllmError:
        done = None
    if done is not None and done.prompt_tokens:
        return done.prompt_tokens
    return request.prompt_tokens_estimate or estimate_tokens(request.prompt)


def bench_worker(
    cluster: Cluster, worker: WorkerView, *, max_tokens: int, max_concurrency: int
) -> BenchResult:
    """Measure one worker (every request pinned to it); a failure ends its measurement
    with ``error`` set."""
    result = BenchResult(worker.id, worker.model, worker.max_concurrent_requests)
    if worker.model is None:
        result.error = "not checked yet"
        return result
    try:
        tiny = ChatRequest(TINY, options={"max_tokens": 8}, prompt_tokens_estimate=8)
        result.latency_s = statistics.median(
            [_first_piece(cluster, worker, tiny) for _ in range(3)]
        )
        size = min(1024, max(64, (worker.context_length or 4096) // 2 - max_tokens))
        text = long_prompt(size)
        long = ChatRequest(text, options={"max_tokens": 8}, prompt_tokens_estimate=size)
        extra = _first_piece(cluster, worker, long) - result.latency_s
        tokens = _prompt_tokens(cluster, worker, long)
        result.prompt_tps = tokens / extra if extra > 0.001 else None
        level = 1
        while level <= max_concurrency:
            started = time.monotonic()
            try:
                runs = _all_at_once(cluster, worker, level, max_tokens)
            except DllmError as exc:
                if level == 1:
                    raise
                result.note = f"with {level} at once: {exc}"
                break
            wall = time.monotonic() - started
            if level == 1 and runs[0][0] > 0:
                result.generation_tps = (runs[0][1] - 1) / runs[0][0]
            result.throughput[level] = sum(count for _, count in runs) / max(wall, 1e-6)
            level *= 2
    except DllmError as exc:
        result.error = str(exc)
    if result.throughput:
        result.suggested = suggest_concurrency(result.throughput)
    return result


def _bench_all(
    cluster: Cluster, workers: Sequence[WorkerView], max_tokens: int, max_concurrency: int
) -> list[BenchResult]:
    results = []
    for worker in workers:  # one at a time: workers may share a machine
        click.echo(f"Measuring {worker.id} ...", err=True)
        results.append(
            bench_worker(cluster, worker, max_tokens=max_tokens, max_concurrency=max_concurrency)
        )
    return results


def _levels(max_concurrency: int) -> list[int]:
    levels, level = [], 1
    while level <= max_concurrency:
        levels.append(level)
        level *= 2
    return levels


@click.command(
    short_help="Measure each worker's speed; suggest its concurrency.",
    epilog="""\b
Exit codes: 0 every worker was measured; 3 some could not be;
4 no worker is healthy.""",
)
@config_option
@click.option(
    "--max-tokens",
    type=click.IntRange(min=8, max=4096),
    default=64,
    show_default=True,
    help="Length of each generated answer.",
)
@click.option(
    "--max-concurrency",
    type=click.IntRange(min=1, max=64),
    default=8,
    show_default=True,
    help="Highest number of answers at once to try (powers of two up to it).",
)
@click.pass_context
def bench(ctx: click.Context, config: str | None, max_tokens: int, max_concurrency: int) -> None:
    """Measure each worker's latency, prompt-processing and generation speed.

    Uses fixed prompts, one worker at a time, then tries 1, 2, 4 ... answers at once and
    suggests a max_concurrent_requests for each worker: the level after which doubling
    gains less than 15 % throughput. Speeds count streamed pieces, about one token each.
    """
    with open_cluster(config) as cluster:
        cluster.check()
        workers = healthy_workers(cluster)
        total = len(cluster.workers)
        if not workers:
            click.echo(f"No healthy worker among {total}; run `dllm check` to see why.", err=True)
            ctx.exit(EXIT_NONE)
        results = _bench_all(cluster, workers, max_tokens, max_concurrency)
    levels = _levels(max_concurrency)
    header = ["worker", "model", "latency s", "prompt tok/s", "gen tok/s"]
    header += [f"x{n} tok/s" for n in levels] + ["suggested (now)"]
    rows = []
    for r in results:
        row = [r.worker, cell(r.model), cell(r.latency_s), cell(r.prompt_tps, 0)]
        row += [cell(r.generation_tps, 1)] + [cell(r.throughput.get(n), 1) for n in levels]
        row.append(f"{cell(r.suggested)} ({r.configured})")
        rows.append(row)
    click.echo(table(header, rows, numeric=list(range(2, len(header)))))
    failed = [r for r in results if r.error]
    for r in results:
        if r.error or r.note:
            click.echo(f"  {r.worker}: {r.error or r.note}")
    changes = {
        r.worker: r.suggested for r in results if r.suggested and r.suggested != r.configured
    }
    if changes:
        click.echo(
            '\nSuggested "max_concurrent_requests" in workers.json: '
            + ", ".join(f"{name}: {n}" for name, n in changes.items())
        )
    unmeasured = total - len(results) + len(failed)
    if unmeasured:
        click.echo(f"\nMeasured {total - unmeasured} of {total} workers.")
        ctx.exit(EXIT_PARTIAL)
