"""The baseline for bench/bench_local.py: llama-cpp-python's server, with the Q/A format.

Run by the scratch environment's Python (llama-cpp-python is no longer a dependency)::

    /tmp/lcp/bin/python bench/_lcp_server.py --model M.gguf --port P --n_ctx 4096 ...

It is what ``Cluster.local()`` ran before it moved to xllamacpp: llama-cpp-python's
single-request server with the ``dllm-qa`` chat format (the same prompt layout and stop
words as ``QA_CHAT_TEMPLATE`` now). It exits when its stdin closes, so it never outlives
the bench.
"""

from __future__ import annotations

import os
import runpy
import sys
import threading
from typing import Any

QA_STOP = ["\n\n", "\nQ:", "\nB:"]


def format_qa(messages: list[dict[str, Any]], **kwargs: Any) -> Any:
    from llama_cpp.llama_chat_format import ChatFormatterResponse

    def text(message: dict[str, Any]) -> str:
        content = message.get("content")
        return content if isinstance(content, str) else ""

    system = "\n\n".join(text(m) for m in messages if m.get("role") == "system")
    prompt = f"{system.strip()}\n\n" if system.strip() else ""
    for message in messages:
        if message.get("role") == "user":
            prompt += f"Q: {text(message).strip()}\nA:"
        elif message.get("role") == "assistant":
            prompt += f" {text(message).strip()}\n\n"
    return ChatFormatterResponse(prompt=prompt, stop=list(QA_STOP))


def _exit_when_stdin_closes() -> None:
    while sys.stdin.buffer.read(4096):
        pass
    os._exit(3)


if __name__ == "__main__":
    threading.Thread(target=_exit_when_stdin_closes, daemon=True).start()
    from llama_cpp import llama_chat_format

    llama_chat_format.register_chat_format("dllm-qa")(format_qa)
    sys.argv = ["llama_cpp.server", *sys.argv[1:], "--chat_format", "dllm-qa"]
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
