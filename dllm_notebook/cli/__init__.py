"""The ``dllm`` command: the batch job and its helpers, for SSH sessions and cron.

One module per group of subcommands: ``_jobs`` (analyze, presets), ``_workers`` (check),
``_bench``, ``_repl`` (chat), ``_discover``, ``_init`` and ``_review`` (report, synthesize);
``_app`` holds the group, the exit codes and the error messages. ``docs/cli.md`` is
generated from the help texts (``_docs``).

Exit codes: 0 success; 1 an error; 2 wrong usage; 3 partly failed (some tasks failed,
some workers unhealthy); 4 nothing works (no healthy worker, no server found);
130 interrupted.
"""

from __future__ import annotations

from ._app import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_NONE,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_USAGE,
    cli,
    main,
)
from ._bench import bench
from ._discover import discover
from ._init import init
from ._jobs import analyze, presets
from ._repl import chat
from ._review import report, synthesize
from ._workers import check

__all__ = [
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_NONE",
    "EXIT_OK",
    "EXIT_PARTIAL",
    "EXIT_USAGE",
    "cli",
    "main",
]

for _command in (analyze, bench, chat, check, discover, init, presets, report, synthesize):
    cli.add_command(_command)
