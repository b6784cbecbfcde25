"""Adaptive concurrency (AIMD): down when a worker queues or refuses, back up when it copes."""

from __future__ import annotations

from dllm_notebook._limits import AdaptiveLimit


def feed(limit: AdaptiveLimit, latency: float, times: int, concurrency: int | None = None) -> int:
    for _ in range(times):
        limit.on_success(latency, work=100.0, concurrency=concurrency or limit.limit)
    return limit.limit


def test_steady_latency_keeps_the_configured_limit() -> None:
    limit = AdaptiveLimit(8)
    assert feed(limit, 1.0, 50) == 8


def test_latency_climbing_with_requests_in_flight_lowers_the_limit() -> None:
    limit = AdaptiveLimit(8)
    feed(limit, 1.0, 5)
    assert feed(limit, 3.0, 40) < 8


def test_slow_answers_one_at_a_time_are_not_mistaken_for_queueing() -> None:
    limit = AdaptiveLimit(8)
    feed(limit, 1.0, 5)
    assert feed(limit, 3.0, 40, concurrency=1) == 8


def test_overload_halves_and_good_answers_bring_it_back_one_step_per_round() -> None:
    limit = AdaptiveLimit(8)
    feed(limit, 1.0, 5)
    assert limit.on_overload() == 4
    assert limit.on_overload() == 2
    assert limit.on_overload() == 1
    assert limit.on_overload() == 1  # never below one
    feed(limit, 1.0, 3)
    assert limit.limit == 2  # the cool-down, then one step
    assert feed(limit, 1.0, 200) == 8  # and never above the configured maximum


def test_the_floor_drifts_up_so_a_worker_that_became_slower_is_not_throttled_forever() -> None:
    limit = AdaptiveLimit(4)
    feed(limit, 1.0, 5)
    feed(limit, 3.0, 30)  # down while the floor catches up
    assert feed(limit, 3.0, 400) == 4
