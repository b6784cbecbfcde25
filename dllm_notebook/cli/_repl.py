"""``dllm chat``: ask questions one by one and watch the answers stream in."""

from __future__ import annotations

import contextlib
import sys
import time
from typing import TYPE_CHECKING, Any

import click

from .. import DllmError
from ._app import EXIT_NONE, config_option, error_lines, open_cluster
from ._workers import healthy_workers

if TYPE_CHECKING:
    from .. import Cluster

__all__ = ["chat"]

LEAVE = {"exit", "quit", ":q"}
PROMPT = "you> "


def _read_question() -> str | None:
    """The next line typed, or None at end of input (Ctrl-D)."""
    try:
        line = input(PROMPT)
    except EOFError:
        click.echo()
        return None
    if not sys.stdin.isatty():
        click.echo(line)  # keep a piped session readable: the question, then its answer
    return line


def _answer(cluster: Cluster, question: str, system: str | None, options: Any) -> None:
    """Stream one answer to stdout; errors and Ctrl-C end only this answer."""
    try:
        stream = cluster.stream(question, system=system, **options)
    except DllmError as exc:
        click.echo("\n".join(error_lines(exc)), err=True)
        return
    except KeyboardInterrupt:
        click.echo("\n[stopped]")
        return
    click.echo(f"[{stream.worker} · {stream.model}]")
    try:
        for piece in stream:
            click.echo(piece, nl=False)
            sys.stdout.flush()
    except KeyboardInterrupt:
        click.echo("\n[stopped]")
        return
    except DllmError as exc:
        click.echo()
        click.echo("\n".join(error_lines(exc)) + " (the answer above is cut off)", err=True)
        return
    finally:
        stream.close()
    seconds = time.monotonic() - stream.started_at
    click.echo(f"\n({stream.worker}, {seconds:.1f} s)\n")


@click.command(
    short_help="Ask questions; each answer streams in as it is written.",
)
@config_option
@click.option("--system", metavar="TEXT", help="A system prompt sent with every question.")
@click.option("--max-tokens", type=click.IntRange(min=1), help="Longest answer, in tokens.")
@click.option("--temperature", type=click.FloatRange(min=0.0), help="Sampling temperature.")
def chat(
    config: str | None, system: str | None, max_tokens: int | None, temperature: float | None
) -> None:
    """Ask questions interactively; each answer streams in as it is generated.

    Each question goes to the healthy worker with the most free slots; its name and model
    are shown before the answer. Questions are answered on their own (no history).
    Type `status` to see the workers; `exit`, `quit` or Ctrl-D leaves; Ctrl-C stops the
    current answer. Exit code 4: no worker is healthy.
    """
    pairs = (("max_tokens", max_tokens), ("temperature", temperature))
    options = {k: v for k, v in pairs if v is not None}
    if sys.stdin.isatty():
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401  (line editing and history for input())
    with open_cluster(config) as cluster:
        cluster.check()
        ready, total = len(healthy_workers(cluster)), len(cluster.workers)
        if not ready:
            click.echo(repr(cluster), err=True)
            click.echo(f"No healthy worker among {total}; run `dllm check` to see why.", err=True)
            click.get_current_context().exit(EXIT_NONE)
        click.echo(
            f"dllm chat: {ready} of {total} workers healthy. Type a question; `exit` or "
            "Ctrl-D leaves, `status` shows the workers."
        )
        while True:
            line = _read_question()
            if line is None:
                break
            question = line.strip()
            if not question:
                continue
            if question.lower() in LEAVE:
                break
            if question.lower() == "status":
                click.echo(repr(cluster))
                continue
            _answer(cluster, question, system, options)
    click.echo("Bye.")
