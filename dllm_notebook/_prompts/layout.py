"""Prompt layout: whether a paper's prompts share their beginning, so servers can cache it.

Every server our users run (llama.cpp, LM Studio, Ollama, vLLM) keeps a prefix cache per
slot: a request whose beginning matches what the slot read last prefills only the rest.
A preset whose prompts all start with the same text (system message, title, paper) and
differ only after ``{content}`` lets a worker read each paper once for all its prompts.
Text before ``{content}`` that differs between prompts defeats that: every prompt reads
the whole paper again. This module finds such prompts; it never changes them.

>>> from dllm_notebook._prompts.templates import Prompt
>>> cache_problems([Prompt("a", "Title: {title}\\n\\n{content}\\n\\nQuestion: Why?"),
...                 Prompt("b", "Summarise this.\\n\\n{content}")])[0][:40]
"prompt 'b' puts 'Summarise this.' before"
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from .templates import Prompt

__all__ = ["cache_problems", "shared_prefix"]

_CONTENT = "{content}"


def shared_prefix(prompt: Prompt) -> str | None:
    """The template's text before ``{content}`` (placeholders kept), or ``None`` when it
    does not include the paper."""
    if "content" not in prompt.placeholders:
        return None
    return prompt.template.split(_CONTENT, 1)[0]


def cache_problems(prompts: Sequence[Prompt]) -> list[str]:
    """One line per prompt whose text before ``{content}`` differs from the others'.

    The most common beginning is taken as the preset's; a prompt that starts otherwise
    makes the servers read the paper again for it. Empty when the prompts share their
    beginning, or when there is only one prompt with the paper.
    """
    prefixes = {p.name: shared_prefix(p) for p in prompts}
    known = [v for v in prefixes.values() if v is not None]
    if len(known) < 2 or len(set(known)) == 1:
        return []
    common, _ = Counter(known).most_common(1)[0]
    problems = []
    for name, prefix in prefixes.items():
        if prefix is None or prefix == common:
            continue
        extra = " ".join(prefix.split()) or "nothing"
        problems.append(
            f"prompt {name!r} puts {_short(extra)!r} before {{content}}, unlike the other "
            "prompts: the servers read the paper again for it instead of reusing their "
            "prefix cache. Put the paper first and the question after {content} "
            "(see docs/prompts.md, Prompt layout)."
        )
    return problems


def _short(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
