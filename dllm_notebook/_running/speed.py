"""How fast each worker is and how big each task is, learned from the answers.

A worker's speed is two numbers: wall-clock seconds per prompt token (reading the prompt)
and per generated token. They start from a cheap prior, the median of the workers already
measured (else a typical laptop), and follow each answer with a decaying average. A worker
that has not answered yet but has been busy longer than its prior allows is slower than
that: its prior is stretched to what it has shown, before its first answer arrives.
(Scaling the prior by each worker's configured slots, since bigger Macs get more, was
tried: in the fake-clock Mac lab of tests/test_scheduler.py it made cold starts worse.) When the
server reports its own split (llama.cpp's ``timings``, LM Studio's ``stats``, Ollama's
durations), the wall-clock latency is shared out in that proportion; otherwise both rates
are scaled together so the prediction matches what was seen.

A task's size is its prompt tokens, estimated before sending and corrected by how the
servers' counts compared with earlier estimates, plus the expected length of its answer:
the average answer to the same prompt so far, capped by ``max_tokens``.

Everything here is plain arithmetic on numbers passed in: no clock, no I/O.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass

__all__ = ["PRIOR", "Size", "Speed", "SpeedModel"]

ANSWER_SAMPLES = 64
"""Recent answer lengths kept per kind, for their spread."""
ALPHA = 0.3
"""Weight of the newest observation once a worker has a few."""
DEFAULT_ANSWER_TOKENS = 256


@dataclass(frozen=True)
class Size:
    """A task's expected prompt and answer tokens."""

    prompt: float
    answer: float
    spread: float = 0.0
    """Answer tokens beyond ``answer`` that about one answer in ten reaches (the answers to
    one prompt vary in length, and no client can tell by how much before they come)."""

    @property
    def reference_seconds(self) -> float:
        """Its duration on the prior worker: the order largest-first dispatch uses."""
        return PRIOR.seconds(self)


@dataclass
class Speed:
    """Seconds per prompt token and per generated token, in wall-clock time."""

    prefill: float
    decode: float
    samples: int = 0

    def seconds(self, size: Size) -> float:
        return self.prefill * size.prompt + self.decode * size.answer

    def tokens_per_second(self) -> tuple[float, float]:
        return 1 / self.prefill, 1 / self.decode


PRIOR = Speed(prefill=1 / 500, decode=1 / 30)
"""A typical laptop: 500 prompt tokens/s, 30 generated tokens/s."""


class SpeedModel:
    """Per-worker speeds and per-prompt answer lengths, learned online."""

    def __init__(self, alpha: float = ALPHA) -> None:
        self.alpha = alpha
        self._speeds: dict[str, Speed] = {}
        self._provisional: dict[str, Speed] = {}
        self._prior: Speed | None = None
        self._prompt_ratio = 1.0
        self._ratio_samples = 0
        self._answers: dict[str, tuple[float, int]] = {}
        self._lengths: dict[str, deque[int]] = {}

    # -- speeds ---------------------------------------------------------------------
    def speed(self, worker: str) -> Speed:
        known = self._speeds.get(worker) or self._provisional.get(worker)
        if known is not None:
            return known
        if self._prior is None:
            self._prior = self._median_prior()
        return self._prior

    def known(self) -> dict[str, Speed]:
        return dict(self._speeds)

    def measured(self, worker: str) -> bool:
        """Whether the worker has answered, so its speed is its own and not a guess."""
        return worker in self._speeds

    def _median_prior(self) -> Speed:
        if not self._speeds:
            return PRIOR
        speeds = list(self._speeds.values())
        return Speed(
            prefill=statistics.median(s.prefill for s in speeds),
            decode=statistics.median(s.decode for s in speeds),
        )

    def running_for(self, worker: str, size: Size, elapsed: float) -> None:
        """A task of ``size`` has run ``elapsed`` s on a worker that has not answered yet:
        if its prior expected less, stretch the prior (the answer will correct it)."""
        if worker in self._speeds:
            return
        current = self.speed(worker)
        expected = current.seconds(size)
        if expected > 0 and elapsed > expected:
            stretch = 1.25 * elapsed / expected
            self._provisional[worker] = Speed(current.prefill * stretch, current.decode * stretch)

    def observe(
        self,
        worker: str,
        size: Size,
        latency: float,
        *,
        prefill_seconds: float | None = None,
        decode_seconds: float | None = None,
        cold: bool = False,
    ) -> Speed:
        """Learn from one answer that took ``latency`` seconds end to end.

        ``cold``: the request was sent before the worker had ever answered, so its latency
        may hold a one-off delay (the server loading its model, every early request waiting
        for it). Such an answer replaces the guess, and the first answer to a request sent
        since replaces it in turn; once that has come, cold answers are left out.
        """
        if latency <= 0 or (size.prompt <= 0 and size.answer <= 0):
            return self.speed(worker)
        current = self.speed(worker)
        if cold and current.samples > 0:
            return current
        first = worker not in self._speeds or current.samples == 0
        reported = (prefill_seconds or 0.0) + (decode_seconds or 0.0)
        if prefill_seconds and decode_seconds and size.prompt > 0 and size.answer > 0:
            scale = latency / reported  # the server's own split, stretched to wall time
            prefill = prefill_seconds * scale / size.prompt
            decode = decode_seconds * scale / size.answer
        else:
            scale = latency / max(current.seconds(size), 1e-9)
            prefill, decode = current.prefill * scale, current.decode * scale
        samples = 1 if first else current.samples + 1
        weight = max(self.alpha, 1 / samples)
        learned = Speed(
            prefill=current.prefill + weight * (prefill - current.prefill),
            decode=current.decode + weight * (decode - current.decode),
            samples=0 if cold else samples,
        )
        self._speeds[worker] = learned
        self._provisional.pop(worker, None)
        self._prior = None
        return learned

    # -- sizes ----------------------------------------------------------------------
    def size(self, estimated_prompt: int, kind: str, max_tokens: int | None) -> Size:
        """Expected tokens of a task whose prompt was estimated at ``estimated_prompt``."""
        mean, _ = self._answers.get(kind, (float(DEFAULT_ANSWER_TOKENS), 0))
        answer = min(mean, max_tokens) if max_tokens else mean
        lengths = self._lengths.get(kind)
        if lengths is not None and len(lengths) >= 8:
            high: float = sorted(lengths)[(9 * len(lengths)) // 10]
        elif lengths:  # a few answers: the longest so far
            high = max(lengths)
        else:  # none yet: one may be twice as long as the mean
            high = 2 * answer
        if max_tokens:
            high = min(high, max_tokens)
        spread = max(0.0, high - answer)
        return Size(prompt=estimated_prompt * self._prompt_ratio, answer=answer, spread=spread)

    def observe_tokens(
        self, estimated_prompt: int, kind: str, prompt_tokens: int | None, answer_tokens: int | None
    ) -> None:
        """Learn how estimates compare with the server's counts and how long answers are."""
        if prompt_tokens and estimated_prompt > 0:
            self._ratio_samples += 1
            weight = max(0.05, 1 / self._ratio_samples)
            ratio = prompt_tokens / estimated_prompt
            self._prompt_ratio += weight * (ratio - self._prompt_ratio)
        if answer_tokens:
            mean, count = self._answers.get(kind, (0.0, 0))
            count += 1
            weight = max(0.1, 1 / count)
            self._answers[kind] = (mean + weight * (answer_tokens - mean), count)
            lengths = self._lengths.setdefault(kind, deque(maxlen=ANSWER_SAMPLES))
            lengths.append(answer_tokens)
