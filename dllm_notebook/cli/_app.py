"""The ``dllm`` group: global options, logging, exit codes and error messages.

Library errors reach the user as one ``error: ...`` line (a bad config: one line per
problem) that says what to do next; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from .. import ConfigError, DllmError

if TYPE_CHECKING:
    from .. import Cluster

__all__ = [
    "CONFIG_HELP",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_NONE",
    "EXIT_OK",
    "EXIT_PARTIAL",
    "EXIT_USAGE",
    "cli",
    "config_option",
    "error_lines",
    "main",
    "open_cluster",
]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3
EXIT_NONE = 4
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = """\b
Exit codes:
  0    success
  1    error: bad config, unreadable input, a failed library call
  2    wrong usage: unknown option or bad value
  3    partly failed: some tasks failed (analyze), some workers
       unhealthy (check) or not measured (bench)
  4    nothing works: no healthy worker (check, bench, chat),
       no server found (discover)
  130  interrupted (Ctrl-C); analyze still writes the finished answers"""

CONFIG_HELP = (
    "Workers file (workers.json). Default: $DLLM_CONFIG; without one, a local llama.cpp worker."
)

_debug = False


config_option = click.option(
    "-c", "--config", type=click.Path(dir_okay=False), metavar="FILE", help=CONFIG_HELP
)
"""The ``-c/--config`` option every worker-facing subcommand shares."""


def open_cluster(config: str | None, **settings: Any) -> Cluster:
    """The cluster from ``config`` (or $DLLM_CONFIG), else one local llama.cpp worker."""
    from .. import Cluster

    path = config or os.environ.get("DLLM_CONFIG")
    if path:
        return Cluster.from_config(path, **settings)
    click.echo(
        "No workers configured (--config or DLLM_CONFIG): starting a local llama.cpp worker "
        "(Cluster.local()).",
        err=True,
    )
    return Cluster.local(**settings)


def _setup_logging(verbose: bool) -> None:
    name = "DEBUG" if verbose else os.environ.get("LOG_LEVEL", "WARNING").strip().upper()
    level = logging.getLevelName(name)
    if not isinstance(level, int):
        click.echo(
            f"warning: LOG_LEVEL={name!r} is not a level; using WARNING "
            "(use DEBUG, INFO, WARNING or ERROR)",
            err=True,
        )
        level = logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if level > logging.DEBUG:
        logging.getLogger("httpx").setLevel(logging.WARNING)


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 88},
    epilog=EXIT_CODES_HELP,
)
@click.option("-v", "--verbose", is_flag=True, help="Debug logging (also LOG_LEVEL=DEBUG).")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.version_option(package_name="dllm-notebook")
def cli(verbose: bool, debug: bool) -> None:
    """Spread LLM prompts over the lab's LM Studio, Ollama and exo machines.

    Start with `dllm init` (or `dllm discover 192.168.1.0/24`) to write a workers file,
    check it with `dllm check --config FILE --test`, then run the batch job with
    `dllm analyze papers/ --preset research -c FILE -o results.parquet`.
    """
    global _debug
    _debug = debug
    _setup_logging(verbose)


def error_lines(exc: BaseException) -> list[str]:
    """What the user sees for a library error: one line, or one per config problem."""
    if isinstance(exc, ConfigError):
        if len(exc.problems) == 1:
            problem = str(exc.problems[0]).rstrip(".")
            hint = "" if "`dllm" in problem else " Fix it; `dllm check -c FILE` validates a file."
            return [f"error: invalid configuration: {problem}.{hint}"]
        lines = [f"error: invalid configuration ({len(exc.problems)} problems):"]
        lines += [f"  - {p}" for p in exc.problems]
        lines.append("  Fix these, then `dllm check --config FILE` validates the file.")
        return lines
    if isinstance(exc, OSError) and not isinstance(exc, DllmError):
        where = f": {exc.filename}" if exc.filename else ""
        reason = exc.strerror or str(exc)
        return [f"error: {reason}{where}. Check the path and its permissions."]
    text = " ".join(str(exc).split()) if isinstance(exc, DllmError) else ""
    if not text:
        text = (
            f"unexpected {type(exc).__name__}: {exc}. This is a bug: run again with --debug "
            "and report the traceback."
        )
    return [f"error: {text}"]


def _report(exc: BaseException) -> int:
    if _debug:
        traceback.print_exception(type(exc), exc, exc.__traceback__)
    for line in error_lines(exc):
        click.echo(line, err=True)
    return EXIT_ERROR


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dllm`` console script; returns the exit code."""
    global _debug
    _debug = False
    args = list(argv) if argv is not None else sys.argv[1:]
    try:
        result = cli.main(args=args, prog_name="dllm", standalone_mode=False)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("Interrupted.", err=True)
        return EXIT_INTERRUPTED
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except Exception as exc:  # every other error becomes one line; --debug shows more
        return _report(exc)
    return result if isinstance(result, int) else EXIT_OK
