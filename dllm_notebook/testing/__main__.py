"""Run fake LLM servers in their own process, until SIGTERM or SIGINT.

    python -m dllm_notebook.testing serve --dialect ollama --port 0 \\
        --models llama3.2 --behaviour '{"decode_tps": 30}'
    python -m dllm_notebook.testing lab --spec lab.json

Prints one JSON line per server on stdout, then serves:
``{"id": "...", "dialect": "...", "url": "http://127.0.0.1:PORT", "port": PORT,
"models": [...], "pid": PID}``. Each server also answers ``GET /_fake/log``,
``GET``/``POST /_fake/behaviour`` and ``POST /_fake/kill``.

A lab also reads commands on stdin, one a line, and answers each with one JSON line:
``kill ID`` kills that server (``{"killed": ID}``); ``log`` prints every server's request
log, killed ones included (``{"records": [...]}``), which ``GET /_fake/log`` cannot give
once the server is dead.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._dialects import DIALECTS
from ._lab import FakeLab


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dllm_notebook.testing",
        description="Run fake LLM servers on 127.0.0.1 until SIGTERM or SIGINT.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run one fake server")
    serve.add_argument("--dialect", required=True, choices=DIALECTS)
    serve.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    serve.add_argument("--id", default=None, help="the server's name in logs and output")
    serve.add_argument("--models", default=None, help="comma-separated model names")
    serve.add_argument("--context-length", type=int, default=None)
    serve.add_argument(
        "--behaviour", default=None, help="JSON object of Behaviour fields, e.g. '{\"slots\": 2}'"
    )
    lab = commands.add_parser("lab", help="run many fake servers from a JSON spec")
    lab.add_argument("--spec", required=True, type=Path, help="path to the lab spec (JSON)")
    return parser


def spec_from_args(args: argparse.Namespace) -> Any:
    if args.command == "lab":
        try:
            return json.loads(args.spec.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SystemExit(
                f"Cannot read the lab spec {args.spec}: {exc}. Fix the file."
            ) from None
    entry: dict[str, Any] = {"dialect": args.dialect, "port": args.port}
    if args.id:
        entry["id"] = args.id
    if args.models:
        entry["models"] = [m.strip() for m in args.models.split(",") if m.strip()]
    if args.context_length:
        entry["context_length"] = args.context_length
    if args.behaviour:
        try:
            entry["behaviour"] = json.loads(args.behaviour)
        except ValueError as exc:
            raise SystemExit(
                f"--behaviour is not valid JSON ({exc}); pass a JSON object."
            ) from None
    return [entry]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    spec = spec_from_args(args)
    try:
        lab = FakeLab.from_spec(spec)
    except (ValueError, TypeError, OSError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        for server in lab.servers:
            line = {
                "id": server.id,
                "dialect": server.dialect,
                "url": server.url,
                "port": server.port,
                "models": list(server.behaviour.models),
                "pid": os.getpid(),
            }
            _send(line)
        threading.Thread(target=_commands, args=(lab,), daemon=True).start()
        while not stop.wait(0.2):
            pass
    finally:
        lab.close()
    return 0


def _commands(lab: FakeLab) -> None:
    """Answer ``kill ID`` and ``log`` lines from stdin until it closes."""
    for line in sys.stdin:
        words = line.split()
        try:
            if words[:1] == ["kill"] and len(words) == 2:
                lab.server(words[1]).kill()
                answer: dict[str, Any] = {"killed": words[1]}
            elif words == ["log"]:
                answer = {"records": [r.to_dict() for r in lab.log.records()]}
            else:
                answer = {"error": f"unknown command {line.strip()!r}; use: kill ID, log"}
        except (KeyError, ValueError) as exc:
            answer = {"error": str(exc)}
        _send(answer)


def _send(message: dict[str, Any]) -> None:
    """One JSON line to the parent process that reads this server's stdout."""
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
