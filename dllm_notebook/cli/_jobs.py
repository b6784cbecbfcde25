"""``dllm analyze`` (the batch job) and ``dllm presets``."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from ._app import EXIT_INTERRUPTED, EXIT_PARTIAL, config_option, open_cluster

__all__ = ["analyze", "presets"]

OUTPUT_KINDS = (".parquet", ".csv", ".xlsx", ".md", ".bib", ".ris", ".json")
ONE_MODEL_KINDS = (".xlsx", ".bib", ".ris")
"""Outputs that take one model's table (see ``frames.require_one_model``)."""


class PaperInput(click.ParamType):  # type: ignore[type-arg]  # generic from click 8.3
    """An existing path, or ``zotero:COLLECTION``."""

    name = "input"

    def convert(
        self, value: str, param: click.Parameter | None, ctx: click.Context | None
    ) -> Path | str:
        if str(value).lower().startswith("zotero:"):
            return str(value)
        return Path(click.Path(exists=True, path_type=Path).convert(value, param, ctx))


@click.command(short_help="Run every prompt over a folder of papers; save the table.")
@click.argument("input_path", metavar="INPUT", required=False, type=PaperInput())
@click.option(
    "-i",
    "--input",
    "input_option",
    type=PaperInput(),
    help="The same as INPUT (the original process_directory.py's spelling).",
)
@click.option("--preset", help="Preset name or .toml file (default: research).")
@click.option(
    "-p",
    "--prompt",
    "prompts",
    multiple=True,
    metavar="TEMPLATE",
    help="A prompt template ({content}, {title}, {filename}) or a question; repeat for "
    "several. Replaces --preset.",
)
@config_option
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("results.parquet"),
    show_default=True,
    help="Output file: .parquet, .csv (UTF-8 that Excel reads), .xlsx (table, evidence and "
    "provenance sheets) or .md (paper x prompt table); .bib or .ris (the papers with their "
    "answers in a note, for Zotero); .json (the original tool's report).",
)
@click.option(
    "--max-concurrent",
    type=click.IntRange(min=1),
    help="At most this many requests in flight over the whole cluster.",
)
@click.option("-r", "--recursive", is_flag=True, help="Also read papers in subfolders.")
@click.option("--max-tokens", type=click.IntRange(min=1), help="Longest answer, in tokens.")
@click.option(
    "--refresh", is_flag=True, help="Ask again even where the result store has an answer."
)
@click.option(
    "--no-cache", is_flag=True, help="Neither read nor write the result store for this run."
)
@click.option(
    "--evidence/--no-evidence",
    default=None,
    help="Ask for up to three supporting quotes per answer, checked against the paper with "
    "their pages (default: as the preset says; research asks for them).",
)
@click.option(
    "-m",
    "--model",
    "models",
    multiple=True,
    metavar="MODEL",
    help="Send every prompt only to the workers serving MODEL (a model group of the config "
    "counts); repeat to compare models: the table gets one column per prompt x model.",
)
@click.pass_context
def analyze(
    ctx: click.Context,
    input_path: Path | str | None,
    input_option: Path | str | None,
    preset: str | None,
    prompts: Sequence[str],
    config: str | None,
    output: Path,
    max_concurrent: int | None,
    recursive: bool,
    max_tokens: int | None,
    refresh: bool,
    no_cache: bool,
    evidence: bool | None,
    models: Sequence[str],
) -> None:
    """Ask every prompt of every paper in INPUT and save the table.

    INPUT is a folder or a file of papers (.pdf, .txt, .md), a reference library (.bib or
    .ris: one paper per entry, named by its citation key), or zotero:COLLECTION (Zotero 7,
    through its local API). A progress bar shows the ETA; a summary and a
    preview follow. Exit code 3 means some tasks failed: their cells are empty and the
    .json report lists their errors. Ctrl-C writes the answers finished so far. Answers
    are kept in the result store (.dllm/results.sqlite, or $DLLM_STORE), so running the
    same job again resumes it and sends only what is missing.

    \b
    Examples:
      dllm analyze papers/ --preset research -c workers.json -o review.parquet
      dllm analyze papers/ -p "What dataset does {title} use?" -o datasets.csv
      dllm analyze -i papers/ -c workers.json -o report.json --max-concurrent 20
      dllm analyze library.bib -c workers.json -o review.parquet
      dllm analyze "zotero:Review 2026" -c workers.json -o review.csv
      dllm analyze library.bib -c workers.json -o review.xlsx
      dllm analyze library.bib -c workers.json -o review.ris   # answers back to Zotero
      dllm analyze papers/ -c workers.json -m mistral -m llama3.1 -o compare.parquet
    """
    if input_path is not None and input_option is not None:
        raise click.UsageError("give the input once: either INPUT or --input")
    source = input_path or input_option
    if source is None:
        raise click.UsageError(
            "missing INPUT: a folder or a file of papers, a .bib or .ris file, or zotero:NAME"
        )
    if output.suffix.lower() not in OUTPUT_KINDS:
        raise click.BadParameter(
            "use a .parquet, .csv, .xlsx, .md, .bib, .ris or .json file name",
            param_hint="--output",
        )
    if len(models) > 1 and output.suffix.lower() in ONE_MODEL_KINDS:
        raise click.BadParameter(
            f"{output.suffix} holds one model's answers; to compare models write a .parquet, "
            ".csv, .md or .json file (or give one --model)",
            param_hint="--output",
        )
    output.parent.mkdir(parents=True, exist_ok=True)  # fail now, not after the job
    settings = {"max_concurrent_batch": max_concurrent} if max_concurrent else {}
    started = time.monotonic()
    with open_cluster(config, **settings) as cluster:
        try:
            long = cluster.analyze(
                source,
                preset=preset,
                prompts=list(prompts) or None,
                recursive=recursive,
                long=True,
                max_tokens=max_tokens,
                refresh=refresh,
                cache=not no_cache,
                evidence=evidence,
                model=_model_choice(models),
            )
        except KeyboardInterrupt:
            job = cluster.last_analysis
            if job is None:
                raise
            long = job.frame(long=True, elapsed=time.monotonic() - started)
            write_results(long, output)
            done = len(long) - len(long.dllm.failures())
            click.echo(
                f"\nInterrupted: wrote the {done} finished answers (of {len(long)}) to {output}.",
                err=True,
            )
            ctx.exit(EXIT_INTERRUPTED)
    wide = write_results(long, output)
    click.echo(_preview(wide))
    click.echo(f"Wrote {output} ({len(wide)} papers x {_shape(wide)}).")
    if len(long.dllm.failures()):
        ctx.exit(EXIT_PARTIAL)


def _shape(wide: Any) -> str:
    """``3 prompts``, or ``3 prompts x 2 models`` for a comparison."""
    columns = wide.dllm.answers().columns
    if columns.nlevels == 1:
        return f"{len(columns)} prompts"
    prompts, models = (len(set(columns.get_level_values(i))) for i in (0, 1))
    return f"{prompts} prompts x {models} models"


def _model_choice(models: Sequence[str]) -> str | list[str] | None:
    """``--model``: none (the preset's, or any), one, or several to compare."""
    if not models:
        return None
    return models[0] if len(models) == 1 else list(models)


def write_results(long: Any, output: Path) -> Any:
    """Write the long table to ``output`` by its extension; return the wide table."""
    wide = long.dllm.wide()
    suffix = output.suffix.lower()
    if suffix == ".json":
        long.dllm.to_json_report(output)
    elif suffix == ".xlsx":
        long.dllm.to_excel(output)  # its provenance sheet reads the long form
    elif suffix == ".parquet":
        wide.to_parquet(output)
    else:
        exports = wide.dllm
        write = {
            ".csv": exports.to_csv,
            ".md": exports.to_markdown,
            ".bib": exports.to_bibtex,
            ".ris": exports.to_ris,
        }[suffix]
        write(output)
    return wide


def _preview(wide: Any, width: int = 48) -> str:
    def short(value: Any) -> str:
        if not isinstance(value, str):
            return "<missing>"
        flat = " ".join(value.split())
        return flat if len(flat) <= width else flat[: width - 1] + "…"

    return str(wide.map(short).to_string(max_colwidth=width))


@click.command(short_help="List the presets and their prompts.")
@click.option("--templates", is_flag=True, help="Also print each prompt's template.")
def presets(templates: bool) -> None:
    """List the presets and their prompts (use one with `dllm analyze --preset NAME`)."""
    from .. import list_presets

    for preset in list_presets():
        click.echo(f"{preset.name}: {preset.description}")
        for prompt in preset.prompts:
            click.echo(f"  - {prompt.name}")
            if templates:
                for line in prompt.template.strip().splitlines():
                    click.echo(f"      {line}".rstrip())
        for problem in preset.check():
            click.echo(f"  note: {problem}")
