"""The scheduler as a pure unit: a simulated lab on a fake clock, no servers, no sleeping.

The simulator (``tests/sim.py``) runs each task in ``prompt/prefill + answer/decode``
seconds per slot and does what the dispatcher does (asks for placements, starts them,
reports answers back) while checking the rules the dispatcher relies on.
"""

from __future__ import annotations

import random

import pytest

from dllm_notebook._running.earliest_finish import EarliestFinish
from dllm_notebook._running.scheduler import (
    Attempt,
    LabView,
    LeastLoaded,
    Scheduler,
)
from dllm_notebook._running.speed import Size, SpeedModel
from dllm_notebook._types import Completion

from .sim import ANSWER, SimWorker, make_task, make_worker, simulate


def ideal(sims: list[SimWorker], prompts: list[int]) -> float:
    """Total work over total capacity (every worker here has the same prefill:decode
    ratio, so work is one number)."""
    base = sims[0]
    work = sum(base.seconds(p, ANSWER) for p in prompts)
    capacity = sum(s.slots * (s.decode_tps / base.decode_tps) for s in sims)
    return work / capacity


def mac_lab() -> list[SimWorker]:
    """Four MacBook Airs, two Pros, two Studios: 2/4/8 slots at 1x/2x/4x."""
    airs = [SimWorker(f"air{i}", 2, 300, 15) for i in range(4)]
    pros = [SimWorker(f"pro{i}", 4, 600, 30) for i in range(2)]
    studios = [SimWorker(f"studio{i}", 8, 1200, 60) for i in range(2)]
    return airs + pros + studios


def paper_lengths(n: int, seed: int = 1) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(2000, 15000) for _ in range(n)]


def test_earliest_finish_gets_close_to_the_ideal_where_least_loaded_does_not() -> None:
    sims, prompts = mac_lab(), paper_lengths(300)
    bound = ideal(sims, prompts)
    ours = simulate(EarliestFinish(), sims, prompts)
    naive = simulate(LeastLoaded(), sims, prompts)
    assert len(ours.winners) == len(naive.winners) == 300
    assert bound / ours.makespan >= 0.9
    assert ours.makespan < 0.9 * naive.makespan


def test_never_more_in_flight_than_a_worker_takes() -> None:
    sims = mac_lab()
    result = simulate(EarliestFinish(), sims, paper_lengths(120))
    assert result.max_in_flight == {s.id: s.slots for s in sims}


def test_largest_tasks_go_first() -> None:
    sims = [SimWorker("only", 2, 500, 30)]
    prompts = [1000, 9000, 3000, 12000, 500]
    result = simulate(EarliestFinish(hedge=False), sims, prompts)
    order = [index for _, index, _, _ in result.starts]
    assert order == [3, 1, 2, 0, 4]


def test_least_loaded_keeps_input_order() -> None:
    sims = [SimWorker("only", 1, 500, 30)]
    result = simulate(LeastLoaded(), sims, [1000, 9000, 3000])
    assert [index for _, index, _, _ in sorted(result.starts)] == [0, 1, 2]


def test_learns_each_workers_speed_from_its_answers() -> None:
    scheduler = EarliestFinish()
    simulate(scheduler, mac_lab(), paper_lengths(200))
    speeds = scheduler.speeds.known()
    air, studio = speeds["air0"], speeds["studio0"]
    assert air.decode / studio.decode == pytest.approx(4, rel=0.1)
    expected = SimWorker("x", 1, 1200, 60).seconds(10_000, ANSWER)
    assert studio.seconds(Size(10_000, ANSWER)) == pytest.approx(expected, rel=0.1)


def test_a_big_task_waits_for_a_fast_worker_and_the_slow_one_takes_a_small_one() -> None:
    scheduler = EarliestFinish(hedge=False)
    for _ in range(3):  # known speeds: slow 4x slower
        for sim in (SimWorker("slow", 1, 300, 15), SimWorker("fast", 1, 1200, 60)):
            worker = make_worker(sim)
            attempt = Attempt(make_task(0, 5000), worker, 0.0, 1.0)
            completion = Completion("ok", "m", 5000, ANSWER)
            scheduler.observe(attempt, completion, sim.seconds(5000, ANSWER))
    slow, fast = (
        make_worker(SimWorker("slow", 1, 300, 15)),
        make_worker(SimWorker("fast", 1, 1200, 60)),
    )
    busy = Attempt(make_task(9, 2000), fast, 0.0, scheduler.expected(make_task(9, 2000), fast))
    fast.in_flight = 1
    big, small = make_task(1, 15000), make_task(2, 2000)
    queue = scheduler.queue()
    queue.add([small, big])
    view = LabView(1.0, [slow, fast], {"slow": [], "fast": [busy]})
    placements = scheduler.assign(queue, view, 10)
    assert [(p.task.index, p.worker.id) for p in placements] == [(2, "slow")]


def test_a_straggler_on_a_slow_worker_is_hedged_once_on_an_idle_fast_one() -> None:
    scheduler = EarliestFinish()
    slow, fast = (
        make_worker(SimWorker("slow", 1, 300, 15)),
        make_worker(SimWorker("fast", 2, 1200, 60)),
    )
    scheduler.speeds.observe(
        "slow", Size(5000, ANSWER), SimWorker("s", 1, 300, 15).seconds(5000, ANSWER)
    )
    scheduler.speeds.observe(
        "fast", Size(5000, ANSWER), SimWorker("f", 1, 1200, 60).seconds(5000, ANSWER)
    )
    task = make_task(0, 15000)
    straggler = Attempt(task, slow, 0.0, scheduler.expected(task, slow))
    slow.in_flight = 1
    view = LabView(1.0, [slow, fast], {"slow": [straggler], "fast": []})
    hedges = scheduler.hedges(view, 10)
    assert [(h.task.index, h.worker.id, h.hedge) for h in hedges] == [(0, "fast", True)]

    copy = Attempt(task, fast, 1.0, hedges[0].expected, hedge=True)
    fast.in_flight = 1
    view = LabView(1.5, [slow, fast], {"slow": [straggler], "fast": [copy]})
    assert scheduler.hedges(view, 10) == []  # never a third copy
    assert EarliestFinish(scheduler.speeds, hedge=False).hedges(view, 10) == []


def test_no_hedge_when_the_copy_would_not_finish_clearly_sooner() -> None:
    scheduler = EarliestFinish()
    a, b = make_worker(SimWorker("a", 1, 600, 30)), make_worker(SimWorker("b", 1, 600, 30))
    for worker_id in ("a", "b"):
        scheduler.speeds.observe(worker_id, Size(5000, ANSWER), 20.0)
    task = make_task(0, 5000)
    running = Attempt(task, a, 0.0, scheduler.expected(task, a))
    a.in_flight = 1
    view = LabView(5.0, [a, b], {"a": [running], "b": []})
    assert scheduler.hedges(view, 10) == []


@pytest.mark.parametrize("answers", [[150] * 20, [40, 60, 80, 100, 450] * 4])
def test_a_slow_decoder_near_its_expected_end_is_copied_when_answers_run_long(
    answers: list[int],
) -> None:
    # The mean answer (150 tokens) would end on the slow worker about when a copy on the
    # idle fast one would; when one answer in five runs to 450 tokens, the copy ends far
    # sooner in that case, and a slot free at the end of a batch costs nothing.
    scheduler = EarliestFinish()
    slow = make_worker(SimWorker("slow", 1, 600, 15))
    fast = make_worker(SimWorker("fast", 1, 1200, 60))
    for sim in (SimWorker("slow", 1, 600, 15), SimWorker("fast", 1, 1200, 60)):
        scheduler.speeds.observe(sim.id, Size(2000, 150), sim.seconds(2000, 150))
    for tokens in answers:
        scheduler.speeds.observe_tokens(2000, "q", 2000, tokens)
    task = make_task(0, 2000)
    running = Attempt(task, slow, 0.0, scheduler.expected(task, slow))
    slow.in_flight = 1
    view = LabView(11.0, [slow, fast], {"slow": [running], "fast": []})
    hedged = [(h.worker.id, h.hedge) for h in scheduler.hedges(view, 10)]
    assert hedged == ([("fast", True)] if max(answers) > 150 else [])


def test_hedging_ends_the_batch_sooner_when_a_slow_worker_holds_the_last_tasks() -> None:
    sims = [SimWorker("slow", 4, 100, 5), SimWorker("fast", 4, 1200, 60)]
    prompts = paper_lengths(10, seed=3)
    with_hedges = simulate(EarliestFinish(), sims, prompts)
    without = simulate(EarliestFinish(hedge=False), sims, prompts)
    assert any(hedge for *_, hedge in with_hedges.starts)
    assert with_hedges.makespan < without.makespan
    assert sorted(with_hedges.winners) == list(range(10))


def test_tasks_go_only_where_they_fit_and_not_where_excluded() -> None:
    scheduler = EarliestFinish()
    small = make_worker(SimWorker("small", 4, 1200, 60, context_length=4096))
    large = make_worker(SimWorker("large", 4, 100, 5, context_length=32768))
    excluded = make_worker(SimWorker("excluded", 4, 1200, 60, context_length=32768))
    long_task = make_task(0, 10_000)
    long_task.excluded.add("excluded")
    queue = scheduler.queue()
    queue.add([long_task])
    view = LabView(0.0, [small, large, excluded], {"small": [], "large": [], "excluded": []})
    placements = scheduler.assign(queue, view, 10)
    assert [(p.task.index, p.worker.id) for p in placements] == [(0, "large")]


@pytest.mark.parametrize(
    "scheduler", [LeastLoaded(), EarliestFinish()], ids=lambda s: type(s).__name__
)
def test_budget_caps_the_number_of_placements(scheduler: Scheduler) -> None:
    worker = make_worker(SimWorker("w", 8, 500, 30))
    queue = scheduler.queue()
    queue.add([make_task(i, 1000) for i in range(6)])
    view = LabView(0.0, [worker], {"w": []})
    assert len(scheduler.assign(queue, view, 3)) == 3


def test_answer_length_and_prompt_estimates_are_learned_per_kind() -> None:
    model = SpeedModel()
    assert model.size(1000, "summary", 512).answer == 256  # the prior
    for _ in range(20):
        model.observe_tokens(1000, "summary", prompt_tokens=800, answer_tokens=120)
    size = model.size(1000, "summary", 512)
    assert size.answer == pytest.approx(120, rel=0.05)
    assert size.prompt == pytest.approx(800, rel=0.05)
    assert model.size(1000, "other", 64).answer == 64  # capped by max_tokens


def test_a_server_reported_split_sets_prefill_and_decode_apart() -> None:
    model = SpeedModel()
    # 4,000 prompt tokens in 2 s, 200 answer tokens in 8 s, 10 s on the wall clock.
    speed = model.observe("w", Size(4000, 200), 10.0, prefill_seconds=2.0, decode_seconds=8.0)
    assert speed.prefill == pytest.approx(2.0 / 4000)
    assert speed.decode == pytest.approx(8.0 / 200)
    # A new worker starts from what the cluster has measured, not from the laptop prior.
    assert model.speed("new").seconds(Size(1, 1)) == model.speed("w").seconds(Size(1, 1))
