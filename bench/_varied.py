"""Varied labs: the scheduling benches' harder judge (issue #16), defined once as data.

For a seed and a number of Macs: a random mix of the four tiers of ``_lab.py`` (at least
one of the slowest, the MacBook Air), a random dialect per Mac, papers of 2k-14k tokens,
answers whose length is drawn per cell (40-500 tokens, skewed short) and cannot be told
from the prompt, a cold start on every Mac (its first request waits while the model
loads, a few nominal seconds, different per Mac), and half the Macs reporting timings
that include the time a request waited (in the queue, for the load), half not.

The fake-clock twin (``bench/bench_varied.py``, on ``tests/sim.py``) and the HTTP bench
(``bench/bench_schedule.py --only varied10,varied35``) both build their labs here:

>>> lab = varied_lab(seed=3, count=10)
>>> spec = lab.spec(time_scale=0.1)                  # for FakeLab.from_spec
>>> sims = lab.sim_workers()                         # for tests.sim.simulate
>>> tokens = lab.paper_tokens(100)                   # the fake clock's papers
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from _lab import (
    BASE_DECODE_TPS,
    BASE_LATENCY_S,
    BASE_PREFILL_TPS,
    TIERS,
    Expected,
    Machine,
    ideal_makespan,
    lab_spec,
    task_work,
)

from dllm_notebook.testing import drawn_answer_tokens

__all__ = [
    "ANSWER_RANGE",
    "PAPER_TOKENS",
    "REPORTS_SPLIT",
    "FakeClockRun",
    "VariedLab",
    "VariedMachine",
    "answer_tokens",
    "fake_clock_run",
    "varied_lab",
    "varied_work",
    "work_of",
]

ANSWER_RANGE = (40, 500)
"""Answer tokens per cell, skewed short (mean about 190); below the client's default
``max_tokens`` (512), so no answer is cut."""
PAPER_TOKENS = (2000, 14000)
COLD_START = (2.0, 8.0)
"""Nominal seconds a Mac's first request waits while the model loads."""
DIALECTS = ("lm_studio", "ollama", "openai", "llamacpp", "vllm", "exo")
REPORTS_SPLIT = ("lm_studio", "ollama", "llamacpp")
"""Dialects whose answers carry the server's own prefill and generation times."""
QUESTION_TOKENS = 30
"""Tokens of a prompt besides the paper, on the fake clock."""
PROMPTS = 5


@dataclass(frozen=True)
class VariedMachine:
    """One Mac of a varied lab: a ``_lab.Machine`` with a cold start and its timings."""

    machine: Machine
    cold_start: float
    """Nominal seconds its first request waits while the model loads."""
    counts_queue: bool
    """Its reported timings include the time a request waited (queue and load)."""

    @property
    def id(self) -> str:
        return self.machine.id

    def behaviour(self, time_scale: float, seed: int) -> dict[str, Any]:
        """The fake server's Behaviour fields (``_lab.Machine``'s, plus this lab's)."""
        return {
            **self.machine.behaviour(time_scale),
            "answer_tokens_range": list(ANSWER_RANGE),
            "seed": seed,
            "cold_start_seconds": self.cold_start,
            "timings_count_queue": self.counts_queue,
        }


@dataclass(frozen=True)
class VariedLab:
    seed: int
    machines: tuple[VariedMachine, ...]

    @property
    def plain(self) -> list[Machine]:
        """The ``_lab.Machine`` of each Mac (for ``ideal_makespan``, ``worker_configs``)."""
        return [m.machine for m in self.machines]

    def spec(self, time_scale: float) -> dict[str, Any]:
        """The JSON-like spec for ``FakeLab.from_spec`` (``_lab.lab_spec``, varied)."""
        spec = lab_spec(self.plain, time_scale=time_scale)
        for server, machine in zip(spec["servers"], self.machines, strict=True):
            server["behaviour"] = machine.behaviour(time_scale, self.seed)
        return spec

    def ready(self) -> dict[str, float]:
        """When each Mac's model is loaded, in nominal seconds (for ``ideal_makespan``)."""
        return {m.id: m.cold_start for m in self.machines}

    def paper_tokens(self, count: int) -> list[int]:
        """Paper sizes for the fake clock (the HTTP bench writes papers of the same range)."""
        rng = random.Random(f"papers:{self.seed}")
        return [rng.randint(*PAPER_TOKENS) for _ in range(count)]

    def ideal(self, work: float) -> float:
        """The fluid bound for ``work`` nominal speed-1 seconds: each Mac's capacity counts
        from the end of its cold start (loading a model is no work, and no scheduler can
        shorten it)."""
        return ideal_makespan(work, self.plain, ready=self.ready())

    def sim_workers(self) -> list[Any]:
        """The fake-clock twin of each Mac: a ``tests.sim.SimWorker``."""
        from tests.sim import SimWorker

        workers = []
        for m in self.machines:
            speed = m.machine.tier.speed
            reports = m.machine.dialect in REPORTS_SPLIT
            workers.append(
                SimWorker(
                    m.id,
                    m.machine.tier.slots,
                    BASE_PREFILL_TPS * speed,
                    BASE_DECODE_TPS * speed,
                    latency=BASE_LATENCY_S / speed,
                    load_seconds=m.cold_start,
                    timings=("queued" if m.counts_queue else "split") if reports else "none",
                )
            )
        return workers


def varied_lab(seed: int, count: int) -> VariedLab:
    """``count`` Macs of a random tier mix (at least one Air), drawn from ``seed``."""
    rng = random.Random(f"lab:{seed}:{count}")
    tiers = [rng.choice(list(TIERS)) for _ in range(count)]
    if "air" not in tiers:
        tiers[rng.randrange(count)] = "air"
    queued = [index < count // 2 for index in range(count)]
    rng.shuffle(queued)
    machines = []
    for index, name in enumerate(tiers):
        tier = TIERS[name]
        machine = Machine(f"{name}-{index + 1:02d}", rng.choice(DIALECTS), tier, tier.slots)
        cold = round(rng.uniform(*COLD_START), 2)
        machines.append(VariedMachine(machine, cold, queued[index]))
    return VariedLab(seed, tuple(machines))


def answer_tokens(seed: int, keys: Sequence[str]) -> list[int]:
    """Each cell's answer length, as the fake servers draw it (keyed by the prompt's
    digest there; any unique key on the fake clock)."""
    return [drawn_answer_tokens(key, seed, *ANSWER_RANGE) for key in keys]


@dataclass(frozen=True)
class FakeClockRun:
    """One scheduler's batch on a varied lab's fake-clock twin (nominal seconds)."""

    makespan: float
    ideal: float
    attempts: int
    """Requests started: one per task, plus copies (hedges, rescues)."""
    tasks: int

    @property
    def efficiency(self) -> float:
        return self.ideal / self.makespan


def fake_clock_run(scheduler: Any, lab: VariedLab, papers: int = 100) -> FakeClockRun:
    """``papers`` x 5 prompts on the lab's twin (``tests.sim.simulate``): every cell's
    answer drawn as the fake servers draw it; ideal = the fluid bound of that work."""
    from tests.sim import make_task, simulate

    prompts = [t + QUESTION_TOKENS for t in lab.paper_tokens(papers) for _ in range(PROMPTS)]
    answers = answer_tokens(lab.seed, [f"cell-{i}" for i in range(len(prompts))])
    tasks = [make_task(i, p, kind=f"q{i % PROMPTS}") for i, p in enumerate(prompts)]
    result = simulate(scheduler, lab.sim_workers(), tasks, answers=answers)
    ideal = lab.ideal(work_of(prompts, answers))
    return FakeClockRun(result.makespan, ideal, len(result.starts), len(tasks))


def varied_work(expected: Mapping[tuple[str, str], Expected], seed: int) -> float:
    """Total work predicted for these cells on the fake servers: each answer as long as
    they will draw it (keyed by the prompt's digest)."""
    return sum(
        task_work(e.prompt_tokens, drawn_answer_tokens(e.digest, seed, *ANSWER_RANGE))
        for e in expected.values()
    )


def work_of(prompts: Sequence[int], answers: Sequence[int]) -> float:
    """Total nominal speed-1 seconds of these tasks (``_lab.task_work``)."""
    return sum(task_work(p, a) for p, a in zip(prompts, answers, strict=True))
