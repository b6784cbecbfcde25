"""Varied labs (bench/_varied.py, issue #16) and the scheduler on them, on the fake clock.

The labs are data: a random tier mix per seed, answers whose length no client can tell
from the prompt, cold starts, and servers that count a request's wait in their timings.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import _varied as varied  # noqa: E402
from _lab import task_work  # noqa: E402

SEEDS = (1, 2, 3, 4, 5)


@pytest.mark.parametrize("seed", SEEDS)
def test_a_varied_lab_is_mixed_cold_and_half_counts_its_queue(seed: int) -> None:
    lab = varied.varied_lab(seed, 10)
    assert lab == varied.varied_lab(seed, 10)  # data: the same lab for the same seed
    tiers = [m.machine.tier.name for m in lab.machines]
    assert "air" in tiers
    assert sum(m.counts_queue for m in lab.machines) == 5
    colds = [m.cold_start for m in lab.machines]
    assert min(colds) >= varied.COLD_START[0] and max(colds) <= varied.COLD_START[1]
    assert len(set(colds)) == len(colds)
    spec = lab.spec(time_scale=0.1)
    behaviour = spec["servers"][0]["behaviour"]
    assert behaviour["answer_tokens_range"] == list(varied.ANSWER_RANGE)
    assert behaviour["cold_start_seconds"] == colds[0]


def test_the_mixes_differ_between_seeds() -> None:
    mixes = {tuple(m.machine.tier.name for m in varied.varied_lab(s, 10).machines) for s in SEEDS}
    assert len(mixes) == len(SEEDS)


@pytest.mark.parametrize("seed", SEEDS)
def test_the_largest_paper_on_the_slowest_mac_outlasts_the_ideal_of_35_macs(seed: int) -> None:
    lab = varied.varied_lab(seed, 35)
    tokens = lab.paper_tokens(100)
    prompts = [t + varied.QUESTION_TOKENS for t in tokens for _ in range(5)]
    answers = varied.answer_tokens(seed, [f"cell-{i}" for i in range(len(prompts))])
    ideal = lab.ideal(varied.work_of(prompts, answers))
    air = min(m.machine.tier.speed for m in lab.machines)
    assert task_work(max(prompts), sum(answers) / len(answers)) / air > ideal


def test_answer_lengths_are_skewed_short_within_their_range() -> None:
    answers = varied.answer_tokens(1, [f"cell-{i}" for i in range(2000)])
    low, high = varied.ANSWER_RANGE
    assert low <= min(answers) and max(answers) <= high
    mean = sum(answers) / len(answers)
    assert mean < (low + high) / 2
    assert sorted(answers)[len(answers) // 2] < mean  # a long tail
