"""How much each worker's prefix cache saves, learned from its answers.

A server with a prefix cache (llama.cpp's server and LM Studio on it, Ollama, vLLM) reads
only the part of a prompt that differs from what the slot read last. Whether a worker has
one, and how much it saves, is never assumed: it is measured on *follow-ups*, requests
sent to the worker that had just read the same paper, in the first of these ways that
the answer allows:

1. the cached tokens the server reports (``Completion.cached_tokens``) over the prompt;
2. the prefill time the server reports, against its prefill time per token on requests
   that read their whole prompt (LM Studio's ``time_to_first_token``);
3. the latency, against what the speed model expects with and without the prefill (exo).

A worker starts *unknown*; one follow-up makes it known (a decaying average follows).
:meth:`CacheModel.typical` is the median over the workers known so far, what the planner
assumes for one not measured yet (nothing while no worker is measured).

Everything here is arithmetic on numbers passed in: no clock, no I/O.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from .._types import Completion
from .speed import Size, Speed

__all__ = ["MIN_SAVING", "CacheModel"]

MIN_SAVING = 0.3
"""A worker whose follow-ups save less than this share of their prefill is treated as one
without a cache: its tasks are spread like any other."""
_WEIGHT = 0.3


@dataclass
class _Worker:
    saving: float | None = None
    samples: int = 0
    cold_rate: float | None = None
    """Server-reported prefill seconds per prompt token, on requests that read it all."""


class CacheModel:
    """Per worker: the share of a follow-up's prefill that its prefix cache saves."""

    def __init__(self) -> None:
        self._workers: dict[str, _Worker] = {}

    def saving(self, worker: str) -> float | None:
        """The learned share (0 to 1), or ``None`` before the first follow-up."""
        state = self._workers.get(worker)
        return None if state is None else state.saving

    def typical(self) -> float | None:
        """The median share over the workers measured so far (``None``: none yet): what a
        worker not measured yet is planned with once others have shown their caches."""
        known = [state.saving for state in self._workers.values() if state.saving is not None]
        return statistics.median(known) if known else None

    def caches(self, worker: str) -> bool | None:
        """Whether the worker's cache is worth keeping a paper on it (``None``: unknown)."""
        saving = self.saving(worker)
        return None if saving is None else saving >= MIN_SAVING

    def observe_cold(self, worker: str, completion: Completion, prompt: float) -> None:
        """A request that read its whole prompt: note the server's prefill rate."""
        if completion.prefill_seconds and prompt > 0 and not completion.cached_tokens:
            state = self._workers.setdefault(worker, _Worker())
            rate = completion.prefill_seconds / prompt
            state.cold_rate = rate if state.cold_rate is None else min(state.cold_rate, rate)

    def observe_follow_up(
        self, worker: str, completion: Completion, size: Size, latency: float, speed: Speed
    ) -> float | None:
        """A follow-up answered: learn the share it saved; returns that share (``None``:
        nothing to judge it by)."""
        state = self._workers.setdefault(worker, _Worker())
        share = _share(completion, size, latency, speed, state.cold_rate)
        if share is None:
            return None
        state.samples += 1
        if state.saving is None:
            state.saving = share
        else:
            weight = max(_WEIGHT, 1 / state.samples)
            state.saving += weight * (share - state.saving)
        return share


def _share(
    completion: Completion, size: Size, latency: float, speed: Speed, cold_rate: float | None
) -> float | None:
    prompt = completion.prompt_tokens or size.prompt
    if completion.cached_tokens is not None and prompt > 0:
        total = max(prompt, completion.cached_tokens + 1)  # Ollama: estimate-based total
        return _clip(completion.cached_tokens / total)
    if completion.prefill_seconds is not None and cold_rate and prompt > 0:
        return _clip(1 - completion.prefill_seconds / (cold_rate * prompt))
    prefill = speed.prefill * size.prompt
    if prefill <= 0 or latency <= 0:
        return None
    return _clip(1 - (latency - speed.decode * size.answer) / prefill)


def _clip(value: float) -> float:
    return min(1.0, max(0.0, value))
