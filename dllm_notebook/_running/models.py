"""Which workers serve which model: the one place that decides whether two names are the same
model (Ollama's ``:latest`` tag, and the config's model groups).

>>> groups = {"mistral": ("mistral-7b-instruct-v0.2", "mistral:7b")}
>>> same_model("mistral:7b", "mistral", groups), same_model("llama3.2:latest", "llama3.2", {})
(True, True)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from .._errors import ModelNotServed

if TYPE_CHECKING:
    from .pool import Worker

__all__ = ["ModelGroups", "aliases", "same_model", "serving"]

ModelGroups = Mapping[str, Iterable[str]]


def _plain(name: str) -> str:
    return name[: -len(":latest")] if name.endswith(":latest") else name


def aliases(name: str, groups: ModelGroups) -> frozenset[str]:
    """Every name ``name`` goes by: itself, and its group's name and members."""
    names = {_plain(name)}
    for group, members in groups.items():
        everyone = {_plain(group), *(_plain(m) for m in members)}
        if _plain(name) in everyone:
            names |= everyone
    return frozenset(names)


def same_model(served: str | None, wanted: str, groups: ModelGroups) -> bool:
    """Whether a worker that serves ``served`` serves the model ``wanted``."""
    return served is not None and _plain(served) in aliases(wanted, groups)


def serving(workers: Iterable[Worker], wanted: str, groups: ModelGroups) -> list[Worker]:
    """The healthy workers that serve ``wanted``; raises :class:`ModelNotServed` (naming the
    workers and the models they have) when none does."""
    pool = list(workers)
    found = [w for w in pool if w.health.value == "healthy" and same_model(w.model, wanted, groups)]
    if found:
        return found
    have = (
        "; ".join(f"{w.id}: {w.model or 'no model'} ({w.health.value})" for w in pool)
        or "no workers"
    )
    raise ModelNotServed(
        f"no healthy worker serves the model {wanted!r} (workers: {have}). Load it on a "
        "worker, pick one of those models, or name the same model as different servers call "
        'it with a model group in workers.json: "models": {"name": ["id-1", "id-2"]}'
    )
