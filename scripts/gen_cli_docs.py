"""Write docs/cli.md from the ``--help`` of every ``dllm`` subcommand.

uv run --no-sync python scripts/gen_cli_docs.py           # rewrite docs/cli.md
uv run --no-sync python scripts/gen_cli_docs.py --check   # exit 1 if it is stale
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dllm_notebook.cli import cli
from dllm_notebook.cli._docs import REGENERATE, render_docs, write_docs

DOCS = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report whether it is stale")
    args = parser.parse_args()
    if args.check:
        current = DOCS.read_text(encoding="utf-8") if DOCS.exists() else ""
        if current != render_docs(cli):
            print(f"{DOCS} is stale; regenerate it with: {REGENERATE}", file=sys.stderr)
            return 1
        print(f"{DOCS} is up to date.")
        return 0
    changed = write_docs(cli, DOCS)
    print(f"{'Wrote' if changed else 'Unchanged:'} {DOCS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
