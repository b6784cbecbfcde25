"""Which workers serve which model: the one place that decides whether two names are the same
model (Ollama's ``:latest`` tag, and the config's model groups).

>>> groups = {"mistral": ("mistral-7b-instruct-v0.2", "mistral:7b")}
>>> same_model("mistral:7b", "mistral", groups), same_model("llama3.2:latest", "llama3.2", {})
(True, True)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .._errors import ModelListError, ModelNotServed

if TYPE_CHECKING:
    from .worker import Worker

__all__ = ["ModelGroups", "aliases", "requested_models", "same_model", "serving"]

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


def requested_models(model: Any, groups: ModelGroups) -> tuple[str | None, ...]:
    """``analyze(model=...)`` as the models asked: ``(None,)`` for whatever each worker
    serves, one name, or several to compare (each its own columns). Raises
    :class:`ModelListError` for an empty list, a name that is not text, or one model named
    twice (also as two names of one model group).

    >>> requested_models(["m1", "m2"], {}), requested_models("m1", {})
    (('m1', 'm2'), ('m1',))
    """
    if model is None:
        return (None,)
    names = [model] if isinstance(model, str) else model
    if not isinstance(names, (list, tuple)) or not names:
        raise ModelListError(
            f"model={model!r}: give a model name, or a list of model names to compare "
            'them, e.g. model=["mistral-7b-instruct", "llama-3.1-8b"]'
        )
    bad = [n for n in names if not isinstance(n, str) or not n.strip()]
    if bad:
        raise ModelListError(
            f"model={model!r}: {bad[0]!r} is not a model name; each must be a non-empty "
            "name as the workers serve it (see cluster.check())"
        )
    chosen: list[str] = []
    for name in (n.strip() for n in names):
        twin = next((c for c in chosen if _plain(name) in aliases(c, groups)), None)
        if twin is not None:
            same = "twice" if twin == name else f"twice ({twin!r} and {name!r} are one model)"
            raise ModelListError(
                f"model={list(names)!r} names one model {same}: list each model to compare once"
            )
        chosen.append(name)
    return tuple(chosen)
