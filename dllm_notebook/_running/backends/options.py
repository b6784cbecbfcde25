"""Generation options on the wire: the one table of which dialect takes which option, and
under which name.

A preset's ``[options]`` (validated in ``_prompts/presets.py``) or ``ask(..., **options)``
go out in every dialect that supports them, under that dialect's name. Where a dialect has
no such field, the option is not sent there, and the dispatcher never gives that worker a
prompt that sets it (its answer would not be what was asked for, yet the store would
record it under those options); a prompt no worker can honour fails with a message that
names the option and the servers that lack it.

Sources: llama.cpp's server README (``/v1/chat/completions`` takes its native sampling
fields: ``top_k``, ``min_p``, ``repeat_penalty``), vLLM's extra sampling parameters
(``top_k``, ``min_p``, ``repetition_penalty``), LM Studio's "supported payload parameters"
(``top_k`` and ``repeat_penalty``, no ``min_p``), Ollama's ``options`` (``num_predict``,
``top_k``, ``min_p``, ``repeat_penalty`` ...) and exo's ``ChatCompletionRequest`` (the
OpenAI fields plus ``top_k``). The ``openai`` type serves both llama.cpp and vLLM, so it
sends ``repeat_penalty`` under both names; each server ignores the name it does not know.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "DIALECTS",
    "OPTION_NAMES",
    "lacking",
    "no_worker_honours",
    "unsupported_options",
    "warn_lacking",
    "wire_options",
]

log = logging.getLogger("dllm_notebook")

DIALECTS = ("openai", "llama_cpp", "lm_studio", "ollama", "exo")
"""The worker types, in the order of the table's columns."""

_ALL = DIALECTS

OPTION_NAMES: dict[str, dict[str, tuple[str, ...]]] = {
    # option: {dialect: the field(s) it is sent as}; a dialect left out lacks it.
    "max_tokens": {
        "openai": ("max_tokens",),
        "llama_cpp": ("max_tokens",),
        "lm_studio": ("max_tokens",),
        "ollama": ("num_predict",),
        "exo": ("max_tokens",),
    },
    "temperature": {d: ("temperature",) for d in _ALL},
    "top_p": {d: ("top_p",) for d in _ALL},
    "top_k": {d: ("top_k",) for d in _ALL},
    "min_p": {"openai": ("min_p",), "llama_cpp": ("min_p",), "ollama": ("min_p",)},
    "repeat_penalty": {
        "openai": ("repeat_penalty", "repetition_penalty"),  # llama.cpp's name, vLLM's
        "llama_cpp": ("repeat_penalty",),
        "lm_studio": ("repeat_penalty",),
        "ollama": ("repeat_penalty",),
    },
    "seed": {d: ("seed",) for d in _ALL},
    "stop": {d: ("stop",) for d in _ALL},
    "presence_penalty": {d: ("presence_penalty",) for d in _ALL},
    "frequency_penalty": {d: ("frequency_penalty",) for d in _ALL},
}
"""Each option a preset accepts, and the name(s) each dialect takes it under."""


def unsupported_options(dialect: str, options: Mapping[str, Any]) -> list[str]:
    """The options set (not ``None``) that ``dialect`` has no field for, in order.

    An option outside the table, or a dialect not in it (``auto`` before the probe), is
    not judged here.
    """
    if dialect not in DIALECTS:
        return []
    return [
        key
        for key, value in options.items()
        if value is not None and key in OPTION_NAMES and dialect not in OPTION_NAMES[key]
    ]


def lacking(option: str) -> list[str]:
    """The dialects that have no field for ``option``."""
    return [d for d in DIALECTS if d not in OPTION_NAMES.get(option, {})]


def warn_lacking(
    worker: str, dialect: str, options: Mapping[str, Any], warned: set[tuple[str, str]]
) -> None:
    """Log, once per worker and option (``warned`` remembers), that the worker is skipped."""
    for option in unsupported_options(dialect, options):
        if (worker, option) not in warned:
            warned.add((worker, option))
            log.warning(
                "worker %s (%s) takes no prompt with option %r: its server has no such "
                "field; other workers answer those",
                worker,
                dialect,
                option,
            )


def no_worker_honours(workers: Sequence[tuple[str, str]], options: Mapping[str, Any]) -> str | None:
    """What to tell the user when no worker (``(id, type)`` pairs) takes every option set;
    ``None`` when the options are not the reason."""
    unable = [(wid, kind, m) for wid, kind in workers if (m := unsupported_options(kind, options))]
    if not unable or len(unable) < len(workers):
        return None
    option = unable[0][2][0]
    names = ", ".join(f"{wid!r} ({kind})" for wid, kind, m in unable if option in m)
    return (
        f"no worker can honour the option {option!r}: {' and '.join(lacking(option))} "
        f"servers have no such field (workers {names}). Remove {option} from the preset's "
        "[options] (or the call), or add a worker whose server takes it (the option table "
        "is in docs/prompts.md)"
    )


def wire_options(dialect: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The options as ``dialect`` names them, ready for the request body (Ollama: for its
    ``options`` object). Options it lacks are left out, with a warning: the dispatcher
    keeps them from such workers, so only a direct call gets here."""
    wire: dict[str, Any] = {}
    for key, value in options.items():
        if value is None or key not in OPTION_NAMES:
            continue
        names = OPTION_NAMES[key].get(dialect)
        if names is None:
            log.warning("option %r is not sent: a %s server has no such field", key, dialect)
            continue
        for name in names:
            wire[name] = value
    return wire
