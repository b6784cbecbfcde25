"""The fake tokenizer, and the answers the fake servers write.

Every fake server counts tokens the same deterministic way, so tests can predict them:

* a text of ``n`` characters is ``ceil(n / 4)`` tokens (:func:`count_tokens`);
* a prompt is the sum of its messages' contents (:func:`prompt_tokens`); roles and chat
  templates cost nothing.

An answer proves which prompt it belongs to. It starts with ``ECHO <hex16>``, where
``hex16`` is the first 16 hex digits of the SHA-256 of the *last user message* (UTF-8),
then repeats every ``[[marker]]`` found in that message, then filler words::

    >>> expected_echo("Summarise [[paper-7]] please")
    'ECHO 0b5b6d2b3c3d1f0e [[paper-7]]'    # (digits differ)

Each word of an answer is one completion token; the prefix is always written in full,
even when ``max_tokens`` is smaller than the prefix.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "answer_words",
    "common_prefix_length",
    "content_text",
    "count_tokens",
    "drawn_answer_tokens",
    "expected_echo",
    "last_user_message",
    "markers",
    "prompt_digest",
    "prompt_text",
    "prompt_tokens",
]

CHARS_PER_TOKEN = 4
_MARKER = re.compile(r"\[\[[^\[\]]*\]\]")
_FILLER = ("lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit")


def count_tokens(text: str) -> int:
    """Tokens in ``text`` for every fake server: ``ceil(len(text) / 4)``."""
    return -(-len(text) // CHARS_PER_TOKEN)


def content_text(content: Any) -> str:
    """The text of a message's ``content``: a string, or OpenAI-style parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts: list[str] = []
        for part in content:
            if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, str):
                parts.append(part)
        return "".join(parts)
    return str(content)


def prompt_tokens(messages: Iterable[Mapping[str, Any]]) -> int:
    """Tokens of a whole conversation: the sum of its messages' content tokens."""
    return sum(count_tokens(content_text(message.get("content"))) for message in messages)


def prompt_text(messages: Iterable[Mapping[str, Any]]) -> str:
    """A whole conversation as one text, in order (what a server's prefix cache compares)."""
    return "".join(
        f"<{message.get('role')}>{content_text(message.get('content'))}" for message in messages
    )


def common_prefix_length(a: str, b: str) -> int:
    """Characters at the start of ``a`` and ``b`` that are the same (binary search over
    slices, so long prompts compare at C speed)."""
    low, high = 0, min(len(a), len(b))
    while low < high:
        middle = (low + high + 1) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle - 1
    return low


def last_user_message(messages: Sequence[Mapping[str, Any]]) -> str:
    """The content of the last ``user`` message ("" when there is none)."""
    for message in reversed(messages):
        if message.get("role") == "user":
            return content_text(message.get("content"))
    return ""


def prompt_digest(prompt: str) -> str:
    """SHA-256 (hex) of a user message, as the request log records it."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()


def drawn_answer_tokens(key: str, seed: int, low: int, high: int) -> int:
    """An answer length from ``low`` to ``high`` tokens, skewed short, that no client can
    predict from the prompt yet is the same for every request keyed ``key`` (a prompt's
    digest: a hedged copy writes as much as the first). Mean about ``low + (high - low) / 3``.
    """
    draw = random.Random(f"{seed}:{key}").random()
    return low + round((high - low) * draw * draw)


def markers(prompt: str) -> list[str]:
    """The ``[[...]]`` markers in ``prompt``, in order."""
    return _MARKER.findall(prompt)


def expected_echo(prompt: str) -> str:
    """The prefix every fake answer to the user message ``prompt`` starts with.

    >>> answer.text.startswith(expected_echo("What is 2 + 2? [[q1]]"))
    True
    """
    return " ".join(_prefix_words(prompt))


def answer_words(prompt: str, completion_tokens: int) -> list[str]:
    """The words of the answer to ``prompt``: the echo prefix, then filler words.

    There are ``max(completion_tokens, len(prefix))`` words.
    """
    words = _prefix_words(prompt)
    index = 0
    while len(words) < completion_tokens:
        words.append(_FILLER[index % len(_FILLER)])
        index += 1
    return words


def _prefix_words(prompt: str) -> list[str]:
    return ["ECHO", prompt_digest(prompt)[:16], *markers(prompt)]
