"""Run llama.cpp's own server (xllamacpp) in a process that exits when its parent dies.

:class:`dllm_notebook.LocalServer` starts this file by path, never by ``-m``, so that the
server process does not import dllm_notebook (nor pandas) and stays small::

    python -c BOOTSTRAP .../_local/launch.py --parent-pid PID -- --model M --port P ...

The server is llama.cpp's C++ HTTP server (the engine of ``llama-server``), run in this
process by ``xllamacpp.Server``: continuous batching over ``--parallel`` slots, JSON-schema
constrained output, and the native ``/health``, ``/props``, ``/slots`` and ``/metrics``.

Two watchdogs end the process as soon as the parent is gone, however it went (SIGKILL
included), so no llama.cpp server is ever orphaned:

- the parent holds the write end of our stdin and never writes to it, so reading stdin
  returns end-of-file exactly when the parent exits (works on every platform);
- on POSIX a second thread polls ``getppid()``: a forked copy of the parent (e.g. a
  ``multiprocessing`` worker) could keep the pipe open after the parent died.

Standard library only, besides xllamacpp itself.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from typing import Any

QA_CHAT_FORMAT = "dllm-qa"
"""The name that selects :data:`QA_CHAT_TEMPLATE` (with :data:`QA_STOP` and
:data:`QA_DRY_MULTIPLIER`)."""
QA_STOP = ["\n\n", "\nQ:", "\nB:"]
QA_DRY_MULTIPLIER = 0.8
"""The DRY sampler's strength with :data:`QA_CHAT_FORMAT` (llama.cpp's default is 0, off).

DRY ("don't repeat yourself") makes a token that would extend a sequence already repeated
in the last 64 tokens less likely, the more the longer the repeat. Without it Gemma 3 270M
wrote 11 of the research preset's 25 answers (JSON, grammar-constrained) as
``{"answer":"1000000000...`` until ``max_tokens``; with 0.8 (the value its authors
suggest, with base 1.75 and 2 tokens allowed) 1 of 25 ran out (docs/performance.md)."""
QA_CHAT_TEMPLATE = (
    "{%- set ns = namespace(system='') -%}"
    "{%- for m in messages if m['role'] == 'system' -%}"
    "{%- set ns.system = ns.system ~ ('\n\n' if ns.system else '') ~ m['content'] -%}"
    "{%- endfor -%}"
    "{%- if ns.system | trim %}{{ ns.system | trim }}\n\n{% endif -%}"
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'user' -%}{{ 'Q: ' ~ m['content'] | trim ~ '\nA:' }}"
    "{%- elif m['role'] == 'assistant' -%}{{ ' ' ~ m['content'] | trim ~ '\n\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
)
"""A plain question-and-answer prompt, for base (not instruction-tuned) models.

System messages come first, then each user turn as ``Q: ...`` and each assistant turn as
``A: ...``; the prompt ends with ``A:``. Generation stops (:data:`QA_STOP`, the server's
default stop words) at a blank line or at the next ``Q:`` (or ``B:``, which the model likes
to invent). With the document in the system message and the bare question in the user
message, this renders ``{document}\\n\\nQ: {question}\\nA:``, the layout that gave the most
sensible short answers from Gemma 3 270M."""

_PARENT_GONE = 3
_POLL_SECONDS = 0.5


def main(argv: list[str]) -> None:
    parent_pid, server_args = _parse(argv)
    _start_watchdogs(parent_pid)
    options = _options(server_args)
    import xllamacpp

    server = xllamacpp.Server(_params(xllamacpp, options))
    sys.stderr.write(f"dllm: serving on {server.listening_address}\n")
    sys.stderr.flush()
    threading.Event().wait()  # the server runs on its own threads; the watchdogs end us


def _options(args: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="launch.py")
    parser.add_argument("--model", required=True)
    parser.add_argument("--alias", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ctx-size", type=int, required=True, help="all slots together")
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--threads-batch", type=int, required=True)
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--ubatch-size", type=int, default=512)
    parser.add_argument("--chat-template", default=None, help=f"Jinja, or {QA_CHAT_FORMAT!r}")
    return parser.parse_args(args)


def _params(xllamacpp: Any, options: argparse.Namespace) -> Any:
    params = xllamacpp.CommonParams()
    params.model.path = options.model
    params.model_alias = {options.alias}
    params.hostnames = [options.host]
    params.port = options.port
    params.n_ctx = options.ctx_size
    params.n_parallel = options.parallel
    params.cpuparams.n_threads = options.threads
    params.cpuparams_batch.n_threads = options.threads_batch
    params.n_batch = options.batch_size
    params.n_ubatch = options.ubatch_size
    params.endpoint_slots = True
    params.endpoint_metrics = True
    params.use_jinja = True
    if options.chat_template == QA_CHAT_FORMAT:
        params.chat_template = QA_CHAT_TEMPLATE
        params.antiprompt = list(QA_STOP)  # default stop words when a request sets none
        params.sampling.dry_multiplier = QA_DRY_MULTIPLIER  # a request may set its own
    elif options.chat_template:
        params.chat_template = options.chat_template
    return params


def _parse(argv: list[str]) -> tuple[int, list[str]]:
    if len(argv) < 3 or argv[0] != "--parent-pid" or argv[2] != "--":
        sys.exit("usage: launch.py --parent-pid PID -- [server options]")
    return int(argv[1]), argv[3:]


def _start_watchdogs(parent_pid: int) -> None:
    if os.name == "posix" and os.getppid() != parent_pid:
        os._exit(_PARENT_GONE)
    threading.Thread(target=_watch_stdin, name="dllm-stdin-watchdog", daemon=True).start()
    if os.name == "posix":
        threading.Thread(
            target=_watch_parent, args=(parent_pid,), name="dllm-ppid-watchdog", daemon=True
        ).start()


def _watch_stdin() -> None:
    try:
        while sys.stdin.buffer.read(4096):
            pass
    except (OSError, ValueError, AttributeError):
        pass
    os._exit(_PARENT_GONE)


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(_POLL_SECONDS)
    os._exit(_PARENT_GONE)


if __name__ == "__main__":
    main(sys.argv[1:])
