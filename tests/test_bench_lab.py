"""The scheduling bench's own arithmetic and checks (bench/_lab.py), on tiny labs.

No efficiency is asserted here: performance is measured in bench/bench_schedule.py only.
"""

from __future__ import annotations

import importlib.util
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd
import pytest

from dllm_notebook import Cluster
from dllm_notebook.testing import FakeLab

BENCH_LAB = Path(__file__).resolve().parents[1] / "bench" / "_lab.py"


def load_bench_lab() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_lab", BENCH_LAB)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_lab"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


bl = load_bench_lab()


def two_machines() -> list[Any]:
    slow = bl.Machine("slow", "openai", bl.Tier("a", slots=2, speed=1.0), client_limit=2)
    fast = bl.Machine("fast", "ollama", bl.Tier("b", slots=4, speed=3.0), client_limit=4)
    return [slow, fast]


def test_work_of_a_task_is_latency_prefill_and_decode_at_base_speed() -> None:
    # 600 prompt tokens at 300 tok/s, 30 answer tokens at 15 tok/s, 0.05 s latency
    assert bl.task_work(600, 30) == pytest.approx(0.05 + 2.0 + 2.0)


def test_ideal_of_a_two_machine_lab_is_total_work_over_capacity() -> None:
    machines = two_machines()
    work = 7 * bl.task_work(600, 30)  # 28.35 nominal seconds of speed-1 work
    # capacity = 2 slots x 1 + 4 slots x 3 = 14 work-seconds per second
    assert bl.ideal_makespan(work, machines) == pytest.approx(28.35 / 14)


def test_ideal_counts_a_dead_machines_capacity_until_its_death() -> None:
    machines = two_machines()
    work = 7 * bl.task_work(600, 30)
    # 1 s at capacity 14, then the remaining 14.35 at capacity 2
    assert bl.ideal_makespan(work, machines, {"fast": 1.0}) == pytest.approx(1.0 + 14.35 / 2)
    # a death after the work is done changes nothing
    assert bl.ideal_makespan(work, machines, {"fast": 5.0}) == pytest.approx(28.35 / 14)
    with pytest.raises(ValueError, match="every machine died"):
        bl.ideal_makespan(work, machines, {"fast": 0.5, "slow": 0.5})
    with pytest.raises(ValueError, match="not in the lab"):
        bl.ideal_makespan(work, machines, {"nobody": 1.0})


def test_ideal_counts_a_cold_machines_capacity_from_its_load() -> None:
    machines = two_machines()
    work = 7 * bl.task_work(600, 30)
    # 1 s at capacity 2 while the fast one loads, then the remaining 26.35 at capacity 14
    assert bl.ideal_makespan(work, machines, ready={"fast": 1.0}) == pytest.approx(1.0 + 26.35 / 14)
    # loaded at 1 s, dead at 2 s: capacity 14 for one second only
    assert bl.ideal_makespan(work, machines, {"fast": 2.0}, ready={"fast": 1.0}) == pytest.approx(
        2.0 + (28.35 - 2.0 - 14.0) / 2
    )


def test_ten_mac_lab_has_the_documented_tiers_and_two_queueing_workers() -> None:
    machines = bl.mixed_lab(10)
    assert sum(m.tier.slots for m in machines) == 40
    assert sum(m.capacity for m in machines) == pytest.approx(100.0)
    assert all(m.client_limit == m.tier.slots for m in machines)
    queueing = [m.id for m in bl.mixed_lab(10, extra=2) if m.client_limit == m.tier.slots + 2]
    assert len(queueing) == 2
    assert {"pro-05", "studio-10"} <= {m.id for m in machines}  # the bench kills these


def test_lab_spec_gives_every_server_its_tiers_speeds_and_the_client_sees_them() -> None:
    machines = bl.mixed_lab(10)
    with FakeLab.from_spec(bl.lab_spec(machines, time_scale=0.01)) as lab:
        by_id = {s.id: s for s in lab.servers}
        for m in machines:
            b = by_id[m.id].behaviour
            assert by_id[m.id].dialect == m.dialect
            assert b.slots == m.tier.slots
            assert b.prefill_tps == pytest.approx(bl.BASE_PREFILL_TPS * m.tier.speed)
            assert b.decode_tps == pytest.approx(bl.BASE_DECODE_TPS * m.tier.speed)
            assert b.base_latency == pytest.approx(bl.BASE_LATENCY_S / m.tier.speed)
            assert b.time_scale == 0.01
        ports = {s.id: s.port for s in lab.servers}
        with Cluster(bl.worker_configs(machines, ports), store=None) as cluster:
            health = cluster.check()
    assert health["healthy"].all(), health
    assert (health["context_length"] == bl.CONTEXT_LENGTH).all(), health["context_length"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, ...]]:
    """analyze() over 3 short papers x 5 prompts on a 2-machine lab: frame, logs, expected."""
    folder = tmp_path_factory.mktemp("papers")
    written = bl.write_papers(folder, 3, tokens=(100, 300))
    machines = bl.mixed_lab(2)
    with FakeLab.from_spec(bl.lab_spec(machines, time_scale=0.001)) as lab:
        ports = {s.id: s.port for s in lab.servers}
        with Cluster(bl.worker_configs(machines, ports), store=None) as cluster:
            frame = cluster.analyze(
                folder, prompts=bl.PROMPTS, cache=False, progress=False, long=True
            )
        records = lab.log.records()
    yield frame, records, bl.expected_cells(folder), written


def generated(records: list[Any]) -> Counter[str]:
    return Counter(r.digest for r in records if r.digest and r.generated)


def test_papers_carry_their_unique_marker(tiny_run: tuple[Any, ...]) -> None:
    _, _, expected, written = tiny_run
    assert len(set(written.values())) == 3
    for (paper, prompt), cell in expected.items():
        assert cell.markers == (f"[[prompt-{prompt}]]", written[paper])


def test_a_clean_run_passes_the_check_and_its_work_is_what_the_servers_counted(
    tiny_run: tuple[Any, ...],
) -> None:
    frame, records, expected, _ = tiny_run
    check = bl.check_answers(frame, expected, generated(records))
    assert check.ok, check.problems
    assert check.generations == 15
    work, problems = bl.logged_work(records, expected)
    assert problems == []
    assert work == pytest.approx(bl.expected_work(expected))


def test_the_check_finds_a_misplaced_answer(tiny_run: tuple[Any, ...]) -> None:
    frame, records, expected, _ = tiny_run
    swapped = frame.copy()
    answers = swapped["answer"].tolist()
    answers[0], answers[1] = answers[1], answers[0]
    swapped["answer"] = pd.array(answers, dtype="string")
    check = bl.check_answers(swapped, expected, generated(records))
    assert not check.ok
    assert sum("misplaced answer" in p for p in check.problems) == 2


def test_the_check_finds_lost_and_doubled_answers(tiny_run: tuple[Any, ...]) -> None:
    frame, records, expected, _ = tiny_run
    counts = generated(records)
    lost = bl.check_answers(frame.iloc[1:], expected, counts)
    assert any("1 cells lost" in p for p in lost.problems)
    doubled = bl.check_answers(pd.concat([frame, frame.iloc[:1]]), expected, counts)
    assert any("recorded more than once" in p for p in doubled.problems)


def test_the_check_allows_a_hedged_duplicate_but_not_more(tiny_run: tuple[Any, ...]) -> None:
    frame, records, expected, _ = tiny_run
    counts = generated(records)
    digest = next(iter(expected.values())).digest
    counts[digest] = 2
    hedged = bl.check_answers(frame, expected, counts)
    assert hedged.ok and hedged.duplicated == 1
    counts[digest] = 3
    assert any("generated 3 times" in p for p in bl.check_answers(frame, expected, counts).problems)
    counts[digest] = 0
    assert any("never generated" in p for p in bl.check_answers(frame, expected, counts).problems)
