"""``dllm report`` (the review report of a results file) and ``dllm synthesize``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ._app import config_option, open_cluster

__all__ = ["read_results", "report", "synthesize"]


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
    from .. import Synthesis

    synthesis = Synthesis.from_json(synthesis_path) if synthesis_path else None
    frame = read_results(results)
    written = frame.dllm.to_report(output, synthesis=synthesis, charts=not no_charts)
    click.echo(f"Wrote {written} ({len(frame)} papers).")


@click.command(short_help="Answer a question over a results file, with checked citations.")
@click.argument("results", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "-q",
    "--question",
    help="The question (default: what agrees, what conflicts, which methods dominate, "
    "what the gaps are).",
)
@click.option(
    "--column",
    "columns",
    multiple=True,
    metavar="NAME",
    help="An answer column to use; repeat for several (default: every text column).",
)
@config_option
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write it: .md (Markdown) or .json (for `dllm report --synthesis`). "
    "Default: Markdown on standard output.",
)
@click.option("--refresh", is_flag=True, help="Ask again instead of using stored answers.")
def synthesize(
    results: Path,
    question: str | None,
    columns: tuple[str, ...],
    config: str | None,
    output: Path | None,
    refresh: bool,
) -> None:
    """Write a short answer to a question over RESULTS (a .parquet from `dllm analyze`).

    The papers are summarized in groups that fit the workers' windows, then the
    summaries together; every citation [key] in the answer is checked (ok, unknown,
    unsupported). Each step is stored, so running it again comes from the store.

    \b
    Examples:
      dllm synthesize results.parquet -q "Which methods dominate?" -c workers.json
      dllm synthesize results.parquet -c workers.json -o synthesis.json
      dllm report results.parquet -o review.html --synthesis synthesis.json
    """
    if output is not None and output.suffix.lower() not in {".md", ".json"}:
        raise click.BadParameter("use a .md or .json file name", param_hint="--output")
    frame = read_results(results)
    with open_cluster(config) as cluster:
        synthesis = cluster.synthesize(
            frame, question, list(columns) or None, progress=False, refresh=refresh
        )
    if output is None:
        click.echo(synthesis._repr_markdown_())
    elif output.suffix.lower() == ".json":
        synthesis.to_json(output)
    else:
        output.write_text(synthesis._repr_markdown_() + "\n", encoding="utf-8")
    flagged = len(synthesis.flagged)
    where = f"Wrote {output}: " if output is not None else ""
    click.echo(
        f"{where}{len(synthesis.citations)} citations, {flagged} flagged; "
        f"{int(synthesis.coverage['cited'].sum())} of {len(synthesis.coverage)} papers cited.",
        err=output is None,
    )
