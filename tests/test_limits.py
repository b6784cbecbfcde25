"""Adaptive concurrency (AIMD): down when a worker queues or refuses, back up when it copes."""

from __future__ import annotations

from dllm_notebook._running.limits import AdaptiveLimit


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


def test_one_answer_that_waited_in_the_servers_queue_lowers_the_limit_at_once() -> None:
    limit = AdaptiveLimit(6)
    for _ in range(4):  # the server says 1 s of work, and 1 s it took
        limit.on_success(1.0, 1.0, concurrency=6, exact=True)
    assert limit.limit == 6
    # Sent as the 6th in flight, it took 2 s for 1 s of work: it waited; 5 at once is the
    # most that ran.
    assert limit.on_success(2.0, 1.0, concurrency=6, exact=True) == 5
    # Not probed above that again for a while, however well the next answers go ...
    for _ in range(9):
        limit.on_success(1.0, 1.0, concurrency=5, exact=True)
    assert limit.limit == 5
    # ... but probed again after that (the room may have been another client's, gone now).
    for _ in range(60):
        limit.on_success(1.0, 1.0, concurrency=5, exact=True)
    assert limit.limit == 6


def test_a_client_that_came_to_a_busy_server_still_sees_its_queue() -> None:
    limit = AdaptiveLimit(8)
    # Every answer so far waited as long again as the server worked on it (another
    # client keeps the server busy): that is a queue, not this server's speed.
    for _ in range(5):
        limit.on_success(2.0, 1.0, concurrency=8, exact=True)
    assert limit.limit < 8


def test_fixed_costs_of_short_answers_are_not_taken_for_a_queue() -> None:
    # A fast server: 5 ms for a big answer, 4 ms for a tiny one (HTTP and JSON).
    limit = AdaptiveLimit(5)
    for _ in range(30):
        limit.on_success(0.005, work=500.0, concurrency=5)
        limit.on_success(0.004, work=5.0, concurrency=5, exact=False)
        limit.on_success(0.004, work=0.0001, concurrency=5, exact=True)
    assert limit.limit == 5


def test_a_learned_limit_starts_small_and_doubles_each_round_while_latency_holds() -> None:
    limit = AdaptiveLimit.learned()
    assert limit.limit == 4
    for _ in range(5):  # five rounds of answers, each as many as the limit
        feed(limit, 1.0, limit.limit)
    assert limit.limit == 4 * 2**5


def test_a_learned_limit_halves_once_for_a_burst_of_refusals() -> None:
    limit = AdaptiveLimit.learned()
    for _ in range(4):
        feed(limit, 1.0, limit.limit)
    sent = limit.limit
    assert limit.on_overload(concurrency=sent) == sent // 2
    # The rest of the burst was sent before that back-off: it answered them too.
    for concurrency in range(sent // 2 + 1, sent):
        assert limit.on_overload(concurrency=concurrency) == sent // 2


def test_a_learned_limit_stops_where_latency_grows_with_the_requests_in_flight() -> None:
    # Four slots: with c requests in flight each takes c / 4 as long (Little's law).
    limit = AdaptiveLimit.learned()
    for _ in range(200):
        c = limit.limit
        limit.on_success(max(1.0, c / 4), work=1.0, concurrency=c)
    assert limit.limit <= 6


def test_a_learned_limit_hears_of_a_queue_only_from_answers_sent_under_it() -> None:
    """Continuous batching of 128 (vLLM): slow start's last doubling puts twice the batch
    out, and each of those answers takes twice as long. The first of them cut the limit;
    the rest were sent before the cut and say nothing about it. Cut again by each of them,
    the limit fell to 81 over HTTP (bench/bench_vllm.py) and took ten seconds to climb back
    to the batch."""
    limit = AdaptiveLimit.learned()
    limit.on_batching_server()
    while limit.limit < 256:  # rounds that held: slow start doubles the limit
        feed(limit, 1.0, limit.limit, concurrency=limit.limit)
    sent = limit.limit
    limit.on_success(2.0, work=1.0, concurrency=sent)  # past the batch: twice as long
    cut = limit.limit
    assert 128 <= cut < sent and not limit.slow_start
    for _ in range(4 * sent):  # the rest of that round, and more of the same
        limit.on_success(2.0, work=1.0, concurrency=sent)
    assert limit.limit == cut
    limit.on_success(2.0 * cut / 128, work=1.0, concurrency=cut)  # sent under the cut
    assert limit.limit < cut
