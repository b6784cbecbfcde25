"""docs/cli.md, generated from the ``--help`` of every subcommand.

Regenerate with ``uv run --no-sync python scripts/gen_cli_docs.py``; a test fails when the
file is stale.
"""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["REGENERATE", "render_docs", "write_docs"]

REGENERATE = "uv run --no-sync python scripts/gen_cli_docs.py"
WIDTH = 88


def _help(command: click.Command, name: str, parent: click.Context | None) -> str:
    ctx = click.Context(
        command, info_name=name, parent=parent, terminal_width=WIDTH, max_content_width=WIDTH
    )
    return command.get_help(ctx)


def render_docs(group: click.Group) -> str:
    """The whole page: the group's help, then each subcommand's, in a fixed width."""
    root = click.Context(
        group,
        info_name="dllm",
        terminal_width=WIDTH,
        max_content_width=WIDTH,
        help_option_names=["-h", "--help"],
    )
    parts = [
        "# The `dllm` command",
        "",
        "<!-- Generated from `dllm --help` by scripts/gen_cli_docs.py; do not edit. -->",
        f"<!-- Regenerate: {REGENERATE} -->",
        "",
        "Also runnable as `python -m dllm_notebook`. Every subcommand takes `-h/--help`.",
        "",
        "```text",
        group.get_help(root),
        "```",
    ]
    for name in group.list_commands(root):
        command = group.get_command(root, name)
        if command is None or command.hidden:
            continue
        parts += ["", f"## dllm {name}", "", "```text", _help(command, name, root), "```"]
    return "\n".join(parts) + "\n"


def write_docs(group: click.Group, path: Path) -> bool:
    """Write the page to ``path``; return whether it changed."""
    text = render_docs(group)
    old = path.read_text(encoding="utf-8") if path.exists() else None
    if old == text:
        return False
    path.write_text(text, encoding="utf-8")
    return True
