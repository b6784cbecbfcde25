"""``dllm report`` (the review report of a results file) and ``dllm synthesize``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

__all__ = ["read_results", "report"]


def read_results(path: Path) -> Any:
    """The table ``dllm analyze`` wrote (Parquet keeps the run id and store path with it,
    so the report finds each answer's worker, model, quotes and errors again)."""
    import pandas as pd

    if path.suffix.lower() != ".parquet":
        raise click.BadParameter(
            "give the .parquet file `dllm analyze -o results.parquet` wrote", param_hint="RESULTS"
        )
    return pd.read_parquet(path)


@click.command(short_help="Write the review report of a results file: HTML or Markdown.")
@click.argument("results", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("review.html"),
    show_default=True,
    help="The report: .html (one self-contained file) or .md (Markdown).",
)
@click.option(
    "--synthesis",
    "synthesis_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A synthesis to include (.json, as `dllm synthesize -o synthesis.json` writes).",
)
@click.option("--no-charts", is_flag=True, help="Leave out the charts (no matplotlib needed).")
def report(results: Path, output: Path, synthesis_path: Path | None, no_charts: bool) -> None:
    """Write the review report of RESULTS (a .parquet from `dllm analyze`).

    One HTML file with nothing to fetch: the run's summary, the table (filter, sort),
    a chart per typed column, every quote with its page and match (unverified ones
    flagged), the synthesis with its checked citations, and the failures. Open it
    offline or send it by e-mail.

    \b
    Examples:
      dllm report results.parquet -o review.html
      dllm report results.parquet -o review.md --synthesis synthesis.json
    """
    from .._results.synthesis import Synthesis

    synthesis = Synthesis.from_json(synthesis_path) if synthesis_path else None
    frame = read_results(results)
    written = frame.dllm.to_report(output, synthesis=synthesis, charts=not no_charts)
    click.echo(f"Wrote {written} ({len(frame)} papers).")
