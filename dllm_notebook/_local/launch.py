"""Run llama-cpp-python's server in a process that exits when its parent process dies.

:class:`dllm_notebook.LocalServer` starts this file by path, never by ``-m``, so that the
server process does not import dllm_notebook (nor pandas) and stays small::

    python -c BOOTSTRAP .../_local/launch.py --parent-pid PID -- [llama_cpp.server arguments]

Two watchdogs end the process as soon as the parent is gone, however it went (SIGKILL
included), so no llama.cpp server is ever orphaned:

- the parent holds the write end of our stdin and never writes to it, so reading stdin
  returns end-of-file exactly when the parent exits (works on every platform);
- on POSIX a second thread polls ``getppid()``: a forked copy of the parent (e.g. a
  ``multiprocessing`` worker) could keep the pipe open after the parent died.

Before the server starts, the launcher also removes environment variables that
llama-cpp-python's settings would read (``PORT``, ``HOST``, ``API_KEY``, ``N_CTX``...; its
settings have no prefix), and registers the ``dllm-qa`` chat format (see
:func:`format_qa`). Standard library only, besides llama_cpp itself.
"""

from __future__ import annotations

import os
import runpy
import sys
import threading
import time
from typing import Any

QA_CHAT_FORMAT = "dllm-qa"
QA_STOP = ["\n\n", "\nQ:", "\nB:"]
_PARENT_GONE = 3
_POLL_SECONDS = 0.5


def main(argv: list[str]) -> None:
    parent_pid, server_args = _parse(argv)
    _start_watchdogs(parent_pid)
    _scrub_environment()
    _register_qa_format()
    sys.argv = ["llama_cpp.server", *server_args]
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)


def format_qa(messages: list[dict[str, Any]], **kwargs: Any) -> Any:
    """A plain question-and-answer prompt, for base (not instruction-tuned) models.

    System messages come first, then each user turn as ``Q: ...`` and each assistant turn
    as ``A: ...``; the prompt ends with ``A:``. Generation stops at a blank line or at the
    next ``Q:`` (or ``B:``, which the model likes to invent). With the document in the
    system message and the bare question in the user message, this renders
    ``{document}\\n\\nQ: {question}\\nA:``, the layout that gave the
    most sensible short answers from Gemma 3 270M.
    """
    from llama_cpp.llama_chat_format import ChatFormatterResponse

    system = "\n\n".join(_text(m) for m in messages if m.get("role") == "system")
    prompt = f"{system.strip()}\n\n" if system.strip() else ""
    for message in messages:
        role = message.get("role")
        if role == "user":
            prompt += f"Q: {_text(message).strip()}\nA:"
        elif role == "assistant":
            prompt += f" {_text(message).strip()}\n\n"
    return ChatFormatterResponse(prompt=prompt, stop=list(QA_STOP))


def _text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def _parse(argv: list[str]) -> tuple[int, list[str]]:
    if len(argv) < 3 or argv[0] != "--parent-pid" or argv[2] != "--":
        sys.exit("usage: launch.py --parent-pid PID -- [llama_cpp.server arguments]")
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


def _scrub_environment() -> None:
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    names = {*ModelSettings.model_fields, *ServerSettings.model_fields, "config_file"}
    for key in list(os.environ):
        if key.lower() in names:
            del os.environ[key]


def _register_qa_format() -> None:
    from llama_cpp import llama_chat_format

    llama_chat_format.register_chat_format(QA_CHAT_FORMAT)(format_qa)


if __name__ == "__main__":
    main(sys.argv[1:])
