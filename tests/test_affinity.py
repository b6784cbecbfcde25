"""Prefix affinity as a pure unit: simulated labs whose slots keep a prefix cache, on a
fake clock (no servers, no sleeping).

Each simulated worker has slots that remember the group (paper) they read last. A task
goes to the free slot that read its group, else to the least recently used one (as
llama.cpp's server does), and takes ``(prompt - cached) / prefill + answer / decode``
seconds. The simulator does what the dispatcher does and checks its rules: no slot is
overbooked, no settled task starts again.
"""

from __future__ import annotations

import heapq
import itertools
import random
from dataclasses import dataclass, field, replace

import pytest

from dllm_notebook._running.affinity import PrefixAffinity
from dllm_notebook._running.earliest_finish import EarliestFinish
from dllm_notebook._running.scheduler import Attempt, LabView, Scheduler
from dllm_notebook._running.tasks import Task
from dllm_notebook._running.worker import Worker
from dllm_notebook._types import ChatRequest, Completion

from .sim import SimWorker, make_worker

ANSWER = 256
PROMPTS = 5
QUESTION = 30
OVERESTIMATE = 1.4
"""The client's token estimate over an Ollama server's own count (``reports="ollama"``)."""
"""Tokens of a prompt after the paper (the question): never cached."""


@dataclass
class CacheWorker(SimWorker):
    cache: bool = True
    reports: str = "count"
    """How the server tells of a hit: ``count`` (cached tokens), ``prefill`` (a shorter
    reported prefill only), ``nothing`` (only the latency shows it) or ``ollama`` (its own
    count of what it read, and a prompt size only when it read it all; the client's
    estimate is :data:`OVERESTIMATE` times that count, and the backend judges the cached
    part against the estimate)."""
    _slots: list[tuple[str, int]] = field(default_factory=list)  # (group, last used)
    _busy: set[int] = field(default_factory=set)

    def take(self, group: str, clock: int) -> tuple[int, bool]:
        if not self._slots:
            self._slots = [("", 0)] * self.slots
        free = [i for i in range(self.slots) if i not in self._busy]
        hit = [i for i in free if self.cache and group and self._slots[i][0] == group]
        slot = hit[0] if hit else min(free, key=lambda i: self._slots[i][1])
        self._busy.add(slot)
        self._slots[slot] = (group, clock)
        return slot, bool(hit)

    def release(self, slot: int, clock: int) -> None:
        self._busy.discard(slot)
        self._slots[slot] = (self._slots[slot][0], clock)


@dataclass
class Run:
    makespan: float
    generations: int
    cached: int
    """Tasks that found their paper in the slot's cache."""
    starts: list[tuple[float, Task, str]] = field(default_factory=list)
    hits: list[float] = field(default_factory=list)
    """When each answer that found its paper in the slot's cache came back."""


def papers(count: int, seed: int = 7) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(2000, 15000) for _ in range(count)]


def make_tasks(paper_tokens: list[int], prompts: int = PROMPTS) -> list[Task]:
    tasks = []
    for p, tokens in enumerate(paper_tokens):
        for q in range(prompts):
            estimate = tokens + QUESTION
            request = ChatRequest("x", options={"max_tokens": 512}, prompt_tokens_estimate=estimate)
            index = p * prompts + q
            tasks.append(Task(index, request, estimate + 512, kind=f"q{q}", group=f"paper-{p}"))
    return tasks


def simulate(scheduler: Scheduler, sims: list[CacheWorker], tasks: list[Task]) -> Run:
    workers = {s.id: make_worker(s) for s in sims}
    truth = {s.id: s for s in sims}
    queue = scheduler.queue()
    queue.add(tasks)
    running: dict[str, list[Attempt]] = {w: [] for w in workers}
    events: list[tuple[float, int, Attempt, int, bool]] = []
    slots: dict[int, int] = {}  # id(attempt) -> its slot
    seq, clock = itertools.count(), itertools.count(1)
    now = 0.0
    winners: dict[int, str] = {}
    run = Run(0.0, 0, 0)

    def start(task: Task, worker: Worker, expected: float, hedge: bool) -> None:
        assert worker.free_slots > 0, f"{worker.id} has no free slot"
        assert task.index not in winners, "a settled task started again"
        worker.in_flight += 1
        attempt = Attempt(task, worker, now, expected, hedge, worker.in_flight)
        running[worker.id].append(attempt)
        sim = truth[worker.id]
        slot, hit = sim.take(task.group, next(clock))
        prompt = task.request.prompt_tokens_estimate or 0
        read = QUESTION if hit else prompt
        seconds = read / sim.prefill_tps + ANSWER / sim.decode_tps
        heapq.heappush(events, (now + seconds, next(seq), attempt, slot, hit))
        slots[id(attempt)] = slot
        run.starts.append((now, task, worker.id))

    while len(winners) < len(tasks):
        view = LabView(now, list(workers.values()), running)
        placements = scheduler.assign(queue, view, 10_000)
        queue.remove(p.task for p in placements)
        for p in placements:
            start(p.task, p.worker, p.expected, p.hedge)
        if not len(queue):
            for p in scheduler.hedges(LabView(now, list(workers.values()), running), 10_000):
                assert all(a.task is not p.task for a in running[p.worker.id])
                start(p.task, p.worker, p.expected, True)
        assert events, "nothing running, yet tasks remain: the scheduler stalled"
        if events[0][0] > now + 1.0:  # the dispatcher looks again every second
            now += 1.0
            continue
        now, _, attempt, slot, hit = heapq.heappop(events)
        sim = truth[attempt.worker.id]
        if attempt not in running[attempt.worker.id]:
            continue  # a cancelled copy (its slot was freed when it was cancelled)
        sim.release(slot, next(clock))
        running[attempt.worker.id].remove(attempt)
        attempt.worker.in_flight -= 1
        run.generations += 1
        run.cached += hit
        if hit:
            run.hits.append(now)
        prompt = attempt.task.request.prompt_tokens_estimate or 0
        cached = prompt - QUESTION if hit else 0
        read = prompt - cached
        completion = Completion(
            "ok",
            "m",
            prompt,
            ANSWER,
            prefill_seconds=read / sim.prefill_tps if sim.reports != "nothing" else None,
            generation_seconds=ANSWER / sim.decode_tps if sim.reports != "nothing" else None,
            cached_tokens=(cached if sim.cache else 0) if sim.reports == "count" else None,
        )
        if sim.reports == "ollama":
            counted = round(read / OVERESTIMATE)  # the server counts fewer than estimated
            completion = replace(
                completion,
                prompt_tokens=None if hit else counted,
                cached_tokens=prompt - counted if hit else 0,
                read_tokens=counted,
            )
        scheduler.observe(attempt, completion, now - attempt.started)
        if attempt.task.index in winners:
            continue
        winners[attempt.task.index] = attempt.worker.id
        for others in running.values():  # cancel the other copy at once
            for other in [a for a in others if a.task is attempt.task]:
                others.remove(other)
                other.worker.in_flight -= 1
                truth[other.worker.id].release(slots[id(other)], next(clock))
    run.makespan = now
    return run


TIERS = {"air": (2, 1.0), "pro": (4, 2.0), "studio": (6, 3.0), "ultra": (8, 4.0)}
GROUP = ("air", "pro", "air", "studio", "pro", "air", "ultra", "pro", "air", "studio")


def mac_lab(count: int, *, cache: bool = True, reports: str = "count") -> list[CacheWorker]:
    """The bench's mixed Macs (bench/_lab.py): 300-1200 prefill, 15-60 decode tokens/s."""
    lab = []
    for i in range(count):
        slots, speed = TIERS[GROUP[i % len(GROUP)]]
        name = f"{GROUP[i % 10]}-{i}"
        lab.append(CacheWorker(name, slots, 300 * speed, 15 * speed, cache=cache, reports=reports))
    return lab


def ideal(sims: list[CacheWorker], paper_tokens: list[int], *, cached: bool) -> float:
    """Total work over the lab's capacity: every prompt read in full, or each paper once."""
    capacity = sum(s.slots * s.prefill_tps / 300 for s in sims)
    work = 0.0
    for tokens in paper_tokens:
        reads = tokens + PROMPTS * QUESTION if cached else PROMPTS * (tokens + QUESTION)
        work += reads / 300 + PROMPTS * ANSWER / 15
    return work / capacity


@pytest.mark.parametrize("reports", ["count", "prefill", "nothing"])
@pytest.mark.parametrize(("count", "bound", "today_share"), [(10, 0.56, 0.6), (35, 0.70, 0.7)])
def test_on_a_caching_lab_a_paper_is_read_about_once(
    count: int, bound: float, today_share: float, reports: str
) -> None:
    """Measured (fake clock, 100 papers x 5 prompts): 10 Macs 0.552 of the cache-oblivious
    ideal (today's scheduler 1.00; the bound with each paper read once 0.51); 35 Macs 0.672
    (today 1.07; the issue's target 0.70). Learned from cached-token counts, reported
    prefill times or latency."""
    paper_tokens = papers(100)
    today = simulate(EarliestFinish(), mac_lab(count), make_tasks(paper_tokens))
    new = simulate(PrefixAffinity(), mac_lab(count, reports=reports), make_tasks(paper_tokens))
    oblivious = ideal(mac_lab(count), paper_tokens, cached=False)
    assert new.makespan <= bound * oblivious, (new.makespan / oblivious, today.makespan / oblivious)
    assert new.makespan <= today_share * today.makespan
    assert new.cached >= 0.45 * len(paper_tokens) * (PROMPTS - 1)
    assert new.generations <= 1.05 * len(paper_tokens) * PROMPTS  # hedges only at the end
    assert today.cached <= 0.02 * new.cached  # today's scheduler spreads a paper's prompts


@pytest.mark.parametrize("scheduler", [EarliestFinish, PrefixAffinity])
def test_ollamas_count_of_what_it_read_gives_its_true_prefill_rate(
    scheduler: type[EarliestFinish],
) -> None:
    """After a cache hit Ollama counts only the tokens it read, and the cached part is
    judged against the client's larger estimate: the speed comes from the server's count.
    (The estimate less the cached part left about one token read, so a follow-up's short
    prefill looked ten times slow per token, and Ollama Macs got a fifth of their share.)"""
    lab = mac_lab(10, reports="ollama")
    chooser = scheduler()
    run = simulate(chooser, lab, make_tasks(papers(60)))
    if scheduler is PrefixAffinity:
        assert run.cached >= 100  # the follow-ups found their paper: the case that misled
    for sim in lab:
        learned = chooser.speeds.speed(sim.id).prefill  # seconds per token the server counts
        assert learned == pytest.approx(OVERESTIMATE / sim.prefill_tps, rel=0.2), sim.id


@pytest.mark.parametrize("count", [10, 35])
def test_without_a_cache_it_plans_as_earliest_finish_does(count: int) -> None:
    """It never assumes a cache: the first follow-ups show none, and it plans as today."""
    paper_tokens = papers(100)
    today = simulate(EarliestFinish(), mac_lab(count, cache=False), make_tasks(paper_tokens))
    new = simulate(PrefixAffinity(), mac_lab(count, cache=False), make_tasks(paper_tokens))
    oblivious = ideal(mac_lab(count), paper_tokens, cached=False)
    assert oblivious / new.makespan >= oblivious / today.makespan - 0.02


def test_tasks_without_a_group_are_planned_as_earliest_finish_plans_them() -> None:
    prompts = [random.Random(3).randint(500, 9000) for _ in range(120)]
    tasks = [t for t in make_tasks(prompts, prompts=1)]
    for task in tasks:
        task.group = ""
    today = simulate(EarliestFinish(), mac_lab(10), tasks)
    for task in tasks:
        task.attempts, task.tried = 0, set()
    again = [t for t in make_tasks(prompts, prompts=1)]
    for task in again:
        task.group = ""
    new = simulate(PrefixAffinity(), mac_lab(10), again)
    assert new.makespan == pytest.approx(today.makespan)


def test_before_any_answer_the_largest_papers_go_to_the_largest_machines() -> None:
    """Speeds are unknown until a worker answers. The largest papers then start on the
    workers with the most slots, and a worker not measured yet fills its free slots only
    with work that ends in time even if it is twice as slow as it looks: no 2-slot Air
    starts the batch on one of the 20 largest papers."""
    paper_tokens = papers(100)
    run = simulate(PrefixAffinity(), mac_lab(35), make_tasks(paper_tokens))
    size = {f"paper-{i}": tokens for i, tokens in enumerate(paper_tokens)}
    started = [(w, size[t.group]) for now, t, w in run.starts if now == 0]
    largest = sorted(paper_tokens)[-20:]
    on_airs = [tokens for w, tokens in started if w.startswith("air")]
    assert on_airs, "the Airs work from the start too"
    assert max(on_airs) < min(largest)
    biggest = max(paper_tokens)
    assert {w for w, tokens in started if tokens == biggest} <= {
        s.id for s in mac_lab(35) if s.slots == max(TIERS.values())[0]
    }


def test_when_slots_outnumber_papers_the_slow_chains_are_read_again_elsewhere() -> None:
    """35 Macs have 138 slots for 100 papers, and five answers on one Air slot take 85 s
    of writing alone, longer than the whole batch may (0.70 of the ideal is about 47 s).
    The end game reads those chains' last prompts again on faster workers: some papers
    are read twice, none is left to the Airs' pace, and every prompt is answered once."""
    paper_tokens = papers(100)
    tasks = make_tasks(paper_tokens)
    run = simulate(PrefixAffinity(), mac_lab(35), tasks)
    reads = len(tasks) - run.cached
    assert len(paper_tokens) < reads <= 2 * len(paper_tokens)
    assert run.makespan <= 0.70 * ideal(mac_lab(35), paper_tokens, cached=False)
    assert run.generations == len(tasks)  # no hedge needed, no prompt generated twice
    readers: dict[str, set[str]] = {}
    for _, task, worker in run.starts:
        readers.setdefault(task.group, set()).add(worker)
    assert max(len(r) for r in readers.values()) >= 2


@pytest.mark.parametrize("seed", [7, 1])
def test_no_paper_is_read_again_before_a_follow_up_shows_what_the_cache_saves(
    seed: int,
) -> None:
    """Until a follow-up answers, nothing says whether a cache saves anything, and the end
    game planned a chain's follow-ups as full readings: a Pro's free slot took the last
    prompt of a Studio's 14,600-token paper, read from scratch, and ended the batch (cache35
    over HTTP: 0.72 of the ideal). Now chains stay whole until the first follow-up shows
    the saving, and then the end game splits them."""
    paper_tokens = papers(100, seed=seed)
    run = simulate(PrefixAffinity(), mac_lab(35), make_tasks(paper_tokens))
    shown = min(run.hits)
    readers: dict[str, set[str]] = {}
    again = []  # a paper read on a worker that had not read it, after the first plan
    for started, task, worker in run.starts:
        known = readers.setdefault(task.group, set())
        if started > 0 and worker not in known:
            again.append(started)
        known.add(worker)
    assert again, "the end game still reads the slow chains again elsewhere"
    assert min(again) >= shown
    assert run.makespan <= 0.70 * ideal(mac_lab(35), paper_tokens, cached=False)


def test_a_worker_not_measured_yet_is_planned_with_what_the_others_showed() -> None:
    """Before any follow-up nothing is assumed; after a batch on the caching lab the
    scheduler knows a follow-up there reads next to nothing, and on the lab without a cache
    that it saves nothing. That median is what a worker is planned with until its own
    follow-ups answer."""
    assert PrefixAffinity().cache.typical() is None
    caching = PrefixAffinity()
    simulate(caching, mac_lab(10), make_tasks(papers(20)))
    assert (caching.cache.typical() or 0.0) >= 0.9
    plain = PrefixAffinity()
    simulate(plain, mac_lab(10, cache=False), make_tasks(papers(20)))
    assert plain.cache.typical() == 0.0


@pytest.mark.parametrize("scheduler", [EarliestFinish, PrefixAffinity])
@pytest.mark.parametrize(("count", "papers_", "bound"), [(10, 5, 2.0), (35, 10, 3.0), (35, 3, 8.0)])
def test_a_handful_of_papers_on_a_big_lab_starts_on_the_large_macs(
    scheduler: type[EarliestFinish], count: int, papers_: int, bound: float
) -> None:
    """A notebook cell with a few papers, before any Mac has answered: the largest work
    goes to the workers with the most slots, and a first task still running on a worker
    that never answered is copied to a fast idle one early. Before, the Airs (first in the
    config) got the largest papers and their copies came late: 5 papers on 10 Macs ended
    at 5.4x the ideal, 10 papers on 35 Macs at 9.0x, 3 on 35 at 25.8x."""
    tokens = papers(papers_, seed=7)
    run = simulate(scheduler(), mac_lab(count, cache=False), make_tasks(tokens))
    assert run.generations <= papers_ * PROMPTS * 1.5  # copies, not a flood
    assert run.makespan <= bound * ideal(mac_lab(count), tokens, cached=False)
    first = {worker for started, _, worker in run.starts if started == 0.0}
    assert all(w.startswith(("ultra", "studio", "pro")) for w in first)
