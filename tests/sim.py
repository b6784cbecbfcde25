"""A lab on a fake clock: the scheduler's dispatcher, simulated (no servers, no sleeping).

Each simulated worker runs a task in ``latency + prompt/prefill + answer/decode`` seconds
per slot. The simulator does what the dispatcher does (asks for placements, starts them,
reports answers back) while checking the rules the dispatcher relies on. A worker may
start cold (its first request loads the model and every request waits for the load) and
report the server's own prefill and generation times, with or without the time a request
waited. Used by tests/test_scheduler.py, tests/test_varied.py and the benches.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

from dllm_notebook._config import WorkerConfig
from dllm_notebook._running.scheduler import Attempt, LabView, Scheduler
from dllm_notebook._running.tasks import Task
from dllm_notebook._running.worker import Health, Worker
from dllm_notebook._types import ChatRequest, Completion

__all__ = ["ANSWER", "SimResult", "SimWorker", "make_task", "make_worker", "simulate"]

ANSWER = 300


@dataclass
class SimWorker:
    id: str
    slots: int
    prefill_tps: float
    decode_tps: float
    context_length: int | None = None
    latency: float = 0.0
    """Seconds every request takes before it reaches a slot."""
    load_seconds: float = 0.0
    """A cold start: the first request starts loading the model, and no request runs on
    this worker before the load is done."""
    timings: str = "none"
    """What the answers report: ``none``; ``split``, the server's prefill and generation
    seconds; ``queued``, the same with the time the request waited (for the load) counted
    in the prefill."""

    def seconds(self, prompt: int, answer: int) -> float:
        return self.latency + prompt / self.prefill_tps + answer / self.decode_tps


@dataclass
class SimResult:
    makespan: float
    winners: dict[int, str]
    starts: list[tuple[float, int, str, bool]] = field(default_factory=list)
    """(time, task index, worker, hedge) of every attempt started."""
    max_in_flight: dict[str, int] = field(default_factory=dict)
    generations: int = 0
    """Answers the workers finished (copies that lost included, cancelled ones not)."""


def make_worker(sim: SimWorker) -> Worker:
    config = WorkerConfig(
        id=sim.id,
        host="127.0.0.1",
        max_concurrent_requests=sim.slots,
        context_length=sim.context_length,
    )
    worker = Worker(config)
    worker.health = Health.HEALTHY
    worker.model = "m"
    return worker


def make_task(index: int, prompt_tokens: int, kind: str = "q") -> Task:
    request = ChatRequest("x", options={"max_tokens": 512}, prompt_tokens_estimate=prompt_tokens)
    return Task(index, request, needed_tokens=prompt_tokens + 512, kind=kind)


def prompt_of(task: Task) -> int:
    return task.request.prompt_tokens_estimate or 0


def simulate(
    scheduler: Scheduler,
    sims: list[SimWorker],
    prompts: Sequence[int] | Sequence[Task],
    *,
    answers: Sequence[int] | None = None,
    budget: int = 10_000,
    tick: float = 1.0,
) -> SimResult:
    """Run every task to completion on a fake clock; return when the last one finished.

    ``prompts``: each task's prompt tokens (or the tasks themselves); ``answers``: each
    task's true answer tokens, by task index (default :data:`ANSWER`), which the scheduler
    learns only from the answers. Like the dispatcher, it looks again every ``tick``
    seconds even when nothing finished.
    """
    workers = {s.id: make_worker(s) for s in sims}
    truth = {s.id: s for s in sims}
    tasks = [t if isinstance(t, Task) else make_task(i, t) for i, t in enumerate(prompts)]
    queue = scheduler.queue()
    queue.add(tasks)
    running: dict[str, list[Attempt]] = {w: [] for w in workers}
    events: list[tuple[float, int, Attempt, float]] = []
    ready: dict[str, float] = {}  # when each worker's model is loaded
    seq = itertools.count()
    now = 0.0
    result = SimResult(0.0, {}, max_in_flight={w: 0 for w in workers})

    def answer_of(task: Task) -> int:
        return ANSWER if answers is None else answers[task.index]

    def start(placement_task: Task, worker: Worker, expected: float, hedge: bool) -> None:
        assert worker.free_slots > 0, f"{worker.id} has no free slot"
        assert placement_task.index not in result.winners, "a settled task started again"
        worker.in_flight += 1
        result.max_in_flight[worker.id] = max(result.max_in_flight[worker.id], worker.in_flight)
        attempt = Attempt(placement_task, worker, now, expected, hedge, worker.in_flight)
        running[worker.id].append(attempt)
        sim = truth[worker.id]
        arrived = now + sim.latency
        begins = max(arrived, ready.setdefault(worker.id, arrived + sim.load_seconds))
        work = sim.seconds(prompt_of(placement_task), answer_of(placement_task)) - sim.latency
        heapq.heappush(events, (begins + work, next(seq), attempt, begins - arrived))
        result.starts.append((now, placement_task.index, worker.id, hedge))

    while len(result.winners) < len(tasks):
        view = LabView(now, list(workers.values()), running)
        placements = scheduler.assign(queue, view, budget)
        queue.remove(p.task for p in placements)
        for p in placements:
            start(p.task, p.worker, p.expected, p.hedge)
        if not len(queue):
            for p in scheduler.hedges(LabView(now, list(workers.values()), running), budget):
                copies = sum(a.task is p.task for a in running[p.worker.id])
                assert copies == 0, "a hedge on the worker already running the task"
                start(p.task, p.worker, p.expected, True)
        assert events, "nothing running, yet tasks remain: the scheduler stalled"
        if events[0][0] > now + tick:
            now += tick
            continue
        now, _, attempt, waited = heapq.heappop(events)
        if attempt not in running[attempt.worker.id]:
            continue  # cancelled copy
        running[attempt.worker.id].remove(attempt)
        attempt.worker.in_flight -= 1
        result.generations += 1
        scheduler.observe(
            attempt,
            _completion(truth[attempt.worker.id], attempt, answer_of(attempt.task), waited),
            now - attempt.started,
        )
        if attempt.task.index in result.winners:
            continue
        result.winners[attempt.task.index] = attempt.worker.id
        for others in running.values():  # cancel the other copy at once
            for other in [a for a in others if a.task is attempt.task]:
                others.remove(other)
                other.worker.in_flight -= 1
    result.makespan = now
    return result


def _completion(sim: SimWorker, attempt: Attempt, answer: int, waited: float) -> Completion:
    prompt = prompt_of(attempt.task)
    if sim.timings == "none":
        return Completion("ok", "m", prompt, answer)
    prefill = prompt / sim.prefill_tps + (waited if sim.timings == "queued" else 0.0)
    return Completion(
        "ok",
        "m",
        prompt,
        answer,
        prefill_seconds=prefill,
        generation_seconds=answer / sim.decode_tps,
    )
