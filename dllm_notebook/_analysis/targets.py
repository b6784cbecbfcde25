"""Which model each cell asks, and which workers may answer it.

``analyze(model=...)`` takes nothing (whatever each worker serves), one model (every
prompt goes only to the workers serving it) or a list of models to compare: each paper x
prompt then becomes one cell per model, and each cell's tasks are kept from the workers
that do not serve its model, so every model is worked on at once by its own workers.
Whether two names are one model is decided in ``_running.models``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from .._results.store import normalise_model
from .._running.models import requested_models, serving
from .._running.worker import Health, Worker

__all__ = ["ModelTargets"]

log = logging.getLogger("dllm_notebook")


class ModelTargets:
    """The models one ``analyze()`` call asks, and the workers each may go to.

    >>> targets = ModelTargets(["m1", "m2"], {})
    >>> targets.models, targets.compared
    (('m1', 'm2'), True)
    """

    def __init__(self, model: Any, groups: Mapping[str, Any] | None = None) -> None:
        self.groups: Mapping[str, Any] = groups or {}
        self.models = requested_models(model, self.groups)
        """The models asked, in the order given; ``(None,)``: whatever each worker serves."""
        self._excluded: dict[str | None, frozenset[str]] = {}
        self._served: dict[str | None, list[str]] = {}

    @property
    def compared(self) -> bool:
        """Whether several models are compared (each prompt has one column per model)."""
        return len(self.models) > 1

    def choose(self, workers: Sequence[Worker]) -> list[Worker]:
        """The workers that may take this run's tasks: for each model asked, those serving
        it (raises :class:`ModelNotServed` before any request when none does); without a
        model, all of them, and a warning when they serve different models."""
        if self.models == (None,):
            served = sorted({w.model for w in workers if w.health is Health.HEALTHY and w.model})
            if len(served) > 1:
                log.warning(
                    "the workers serve different models (%s): a column may hold answers from "
                    "several. Pass model=... to analyze() (or model = ... in the preset) for "
                    "one model per column, or model=[...] to compare them; df.dllm.models() "
                    "shows which models answered each",
                    ", ".join(served),
                )
            self._served[None] = _names(workers)
            return list(workers)
        chosen: dict[str, Worker] = {}
        for model in self.models:
            assert model is not None
            serving_it = serving(workers, model, self.groups)
            ids = {w.id for w in serving_it}
            self._excluded[model] = frozenset(w.id for w in workers if w.id not in ids)
            self._served[model] = _names(serving_it)
            chosen.update((w.id, w) for w in serving_it)
        return [w for w in workers if w.id in chosen]

    def excluded(self, model: str | None) -> set[str]:
        """The workers a task asking ``model`` must not go to."""
        return set(self._excluded.get(model, ()))

    def served_names(self, model: str | None) -> list[str]:
        """The names the chosen workers give ``model`` (what stored answers are keyed by):
        an answer stored under any of them may be reused for a cell asking ``model``."""
        return self._served.get(model, [])


def _names(workers: Sequence[Worker]) -> list[str]:
    return sorted({normalise_model(w.model) for w in workers if w.model})
