"""The ``dllm`` command: the batch job and its helpers, for SSH sessions and cron.

Exit codes: 0 success; 1 an error (bad config, unreadable input, no worker); 2 wrong usage;
3 the job ran but some tasks failed (or, for ``check``, some workers are unhealthy);
130 interrupted (finished answers are kept).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from ._errors import DllmError

__all__ = ["main"]

EXIT_ERROR, EXIT_USAGE, EXIT_PARTIAL, EXIT_INTERRUPTED = 1, 2, 3, 130
CONFIG_HELP = (
    "Workers file (workers.json). Default: $DLLM_CONFIG; without one, a local llama.cpp worker."
)


def _open_cluster(config: str | None, **settings: Any) -> Any:
    from ._cluster import Cluster

    path = config or os.environ.get("DLLM_CONFIG")
    if path:
        return Cluster.from_config(path, **settings)
    click.echo(
        "No workers configured: starting a local llama.cpp worker (Cluster.local()).", err=True
    )
    return Cluster.local(**settings)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Debug logging (also LOG_LEVEL=DEBUG).")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.version_option(package_name="dllm-notebook")
@click.pass_context
def cli(ctx: click.Context, verbose: bool, debug: bool) -> None:
    """Spread LLM prompts over the lab's LM Studio, Ollama and exo machines."""
    level = "DEBUG" if verbose else os.environ.get("LOG_LEVEL", "WARNING").upper()
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if level != "DEBUG":
        logging.getLogger("httpx").setLevel(logging.WARNING)
    ctx.obj = {"debug": debug}


@cli.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(exists=True, path_type=Path))
@click.option("--preset", help="Preset name or .toml file (default: research).")
@click.option(
    "-p",
    "--prompt",
    "prompts",
    multiple=True,
    metavar="TEMPLATE",
    help="A prompt template or question; repeat for several. Replaces --preset.",
)
@click.option("-c", "--config", type=click.Path(dir_okay=False), help=CONFIG_HELP)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("results.parquet"),
    show_default=True,
    help="Output file: .parquet or .csv (paper x prompt table), .json (report).",
)
@click.option(
    "--max-concurrent",
    type=click.IntRange(min=1),
    help="At most this many requests in flight over the whole cluster.",
)
@click.option("-r", "--recursive", is_flag=True, help="Also read papers in subfolders.")
@click.option("--max-tokens", type=click.IntRange(min=1), help="Longest answer, in tokens.")
@click.pass_context
def analyze(
    ctx: click.Context,
    input_path: Path,
    preset: str | None,
    prompts: Sequence[str],
    config: str | None,
    output: Path,
    max_concurrent: int | None,
    recursive: bool,
    max_tokens: int | None,
) -> None:
    """Ask every prompt of every paper in INPUT (a folder or a file) and save the table."""
    suffix = output.suffix.lower()
    if suffix not in (".parquet", ".csv", ".json"):
        raise click.BadParameter("use a .parquet, .csv or .json file name", param_hint="--output")
    settings = {"max_concurrent_batch": max_concurrent} if max_concurrent else {}
    with _open_cluster(config, **settings) as cluster:
        long = cluster.analyze(
            input_path,
            preset=preset,
            prompts=list(prompts) or None,
            recursive=recursive,
            long=True,
            max_tokens=max_tokens,
        )
    wide = long.dllm.wide()
    if suffix == ".json":
        long.dllm.to_json_report(output)
    elif suffix == ".csv":
        wide.to_csv(output)
    else:
        wide.to_parquet(output)
    click.echo(_preview(wide))
    click.echo(f"Wrote {output} ({len(wide)} papers x {len(wide.columns)} prompts).")
    if (long["status"] != "ok").any():
        ctx.exit(EXIT_PARTIAL)


def _preview(wide: Any, width: int = 48) -> str:
    def short(value: Any) -> str:
        if not isinstance(value, str):
            return "<missing>"
        flat = " ".join(value.split())
        return flat if len(flat) <= width else flat[: width - 1] + "…"

    return str(wide.map(short).to_string(max_colwidth=width))


@cli.command()
def presets() -> None:
    """List the presets and their prompts."""
    from ._presets import list_presets

    for preset in list_presets():
        click.echo(f"{preset.name}: {preset.description}")
        for prompt in preset.prompts:
            click.echo(f"  - {prompt.name}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dllm`` console script; returns the exit code."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        result = cli.main(
            args=list(argv) if argv is not None else None, prog_name="dllm", standalone_mode=False
        )
    except click.exceptions.Abort:
        click.echo("Interrupted; finished answers are kept.", err=True)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        click.echo("Interrupted; finished answers are kept.", err=True)
        return EXIT_INTERRUPTED
    except click.ClickException as exc:
        exc.show()
        return EXIT_USAGE if isinstance(exc, click.UsageError) else EXIT_ERROR
    except DllmError as exc:
        if debug:
            raise
        first, _, rest = str(exc).partition("\n")
        click.echo(f"error: {first}{chr(10) + rest if rest else ''}", err=True)
        return EXIT_ERROR
    except click.exceptions.Exit as exc:
        return exc.exit_code
    return result if isinstance(result, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
