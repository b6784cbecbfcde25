"""Scale (#16): a batch streams through the dispatcher. ``map()`` reads a generator of
prompts as slots free up, and what a finished task held is released once its answer is
kept. The 1,000-worker, 1,000,000-task figures are ``bench/bench_scale.py``'s."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Iterator

import httpx
import pytest

from dllm_notebook import (
    Answer,
    ChatRequest,
    Cluster,
    ClusterSettings,
    EarliestFinish,
    Event,
    Task,
    WorkerConfig,
)
from dllm_notebook._events import EventHub
from dllm_notebook._running import dispatch
from dllm_notebook._running.dispatch import Dispatcher
from dllm_notebook._running.pool import WorkerPool
from dllm_notebook._running.worker import Health
from dllm_notebook.testing import (
    Behaviour,
    FakeLab,
    InstantBackend,
    expected_echo,
    prompt_digest,
)

from .conftest import FAST
from .test_faults import spec

AHEAD = 20
"""The dispatcher's window beyond the free slots, made small so that a few hundred prompts
are many windows."""
SLOTS = 4


@pytest.fixture
def small_window(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dispatch, "STREAM_AHEAD", AHEAD)


def test_map_reads_a_generator_as_slots_free_and_drops_finished_tasks(
    lab: FakeLab, small_window: None
) -> None:
    servers = [lab.add("openai", behaviour=Behaviour(slots=SLOTS, answer_tokens=4)) for _ in "ab"]
    capacity = SLOTS * len(servers)
    count = 300
    pulled = 0
    sent: list[weakref.ref[ChatRequest]] = []
    pulled_at_first_answer: int | None = None
    most_alive = 0

    def prompts() -> Iterator[ChatRequest]:
        nonlocal pulled
        for i in range(count):
            pulled += 1
            request = ChatRequest(f"Prompt {i} [[s{i}]]", prompt_tokens_estimate=8)
            sent.append(weakref.ref(request))
            yield request

    def watch(event: Event) -> None:
        nonlocal pulled_at_first_answer, most_alive
        if event.kind != "task_finished":
            return
        if pulled_at_first_answer is None:
            pulled_at_first_answer = pulled
        most_alive = max(most_alive, sum(ref() is not None for ref in sent))

    workers = [
        spec(s, "openai", f"w{i}", max_concurrent_requests=SLOTS) for i, s in enumerate(servers)
    ]
    with Cluster(workers, store=None, **FAST) as cluster:
        cluster.check()
        cluster.subscribe(watch)
        answers = cluster.map(prompts())

    # Lazily: when the first answer came, only the free slots and the window had been read.
    assert pulled_at_first_answer is not None
    assert pulled_at_first_answer <= capacity + AHEAD < count
    # Released: never more prompts alive than in flight, waiting in the window, and the one
    # being settled; not the hundreds already answered.
    assert most_alive <= capacity + AHEAD + 1
    # And every answer in its place, each prompt answered once.
    assert len(answers) == count
    for i, answer in enumerate(answers):
        assert answer.ok and answer.text.startswith(expected_echo(f"Prompt {i} [[s{i}]]"))
    assert sum(len(s.log.generations()) for s in servers) == count


def test_a_list_smaller_than_the_window_is_planned_as_a_whole(
    lab: FakeLab, small_window: None
) -> None:
    """Largest first still holds over a batch that fits the window: on one slot, the
    longest prompt goes first."""
    server = lab.add("openai", behaviour=Behaviour(slots=1, answer_tokens=2))
    sizes = [10, 400, 40, 200, 20]
    prompts = [f"{'word ' * n}[[n{n}]]" for n in sizes]
    workers = [spec(server, "openai", "one", max_concurrent_requests=1)]
    with Cluster(workers, store=None, **FAST) as cluster:
        answers = cluster.map(prompts)
    assert all(a.ok for a in answers)
    by_digest = {prompt_digest(p): n for p, n in zip(prompts, sizes, strict=True)}
    order = [by_digest[r.digest or ""] for r in server.log.generations()]
    assert order == sorted(sizes, reverse=True)


def test_a_finished_task_is_released_once_its_answer_is_kept(small_window: None) -> None:
    """The dispatcher itself, on workers answering in-process: a weak reference to each
    task dies once the task is answered (no list of every task held for the batch)."""
    asyncio.run(released())


async def released() -> None:
    settings = ClusterSettings()
    hub = EventHub()
    configs = [WorkerConfig(id=f"w{i}", host="127.0.0.1", port=1) for i in range(3)]
    pool = WorkerPool(configs, settings, hub)
    async with httpx.AsyncClient() as client:
        for worker in pool.workers:
            worker.backend = InstantBackend.standalone(worker.config, client)
            worker.health, worker.model = Health.HEALTHY, "m"
        capacity = sum(w.limit for w in pool.workers)
        refs: list[weakref.ref[Task]] = []
        alive_at_answer: list[int] = []

        def tasks() -> Iterator[Task]:
            for i in range(1000):
                request = ChatRequest(f"Prompt {i} [[d{i}]]", prompt_tokens_estimate=8)
                task = Task(i, request, needed_tokens=8)
                refs.append(weakref.ref(task))
                yield task

        def keep(index: int, answer: Answer) -> None:
            assert answer.ok and answer.text.startswith(
                expected_echo(f"Prompt {index} [[d{index}]]")
            )
            alive_at_answer.append(sum(r() is not None for r in refs))

        await Dispatcher(pool, settings, EarliestFinish(), hub).run(tasks(), keep)
    assert len(alive_at_answer) == 1000
    assert max(alive_at_answer) <= capacity + AHEAD + 1
    assert all(r() is None for r in refs)
