"""Sharing a lab: clients that never talk to each other share a server's slots fairly.

The limits are AIMD (``_running/limits.py``): each client backs off in proportion to what it
sends when the server's own clock shows a queue, and every client grows by the same step
when it shows none. First on a fake clock (one FIFO server, three clients arriving one after
another), then two clusters in two processes against real fake servers on loopback.
"""

from __future__ import annotations

import heapq
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx

from dllm_notebook import Cluster
from dllm_notebook._running.limits import AdaptiveLimit
from dllm_notebook.testing import Behaviour, FakeLab, peak_queued, prompt_digest

from .conftest import FAST


@dataclass
class SimClient:
    limit: AdaptiveLimit
    arrives: float
    in_flight: int = 0
    served: list[float] = field(default_factory=list)
    """When each of its answers came back."""


def share_one_server(
    slots: int, arrivals: Sequence[float], until: float, service: float = 1.0
) -> tuple[list[SimClient], list[tuple[float, int]]]:
    """A FIFO server with ``slots`` slots, every request ``service`` s of work (as the
    server reports it), and clients configured for all of its slots, each keeping its limit
    in flight from its arrival on. Returns the clients and the queue's length over time."""
    clients = [SimClient(AdaptiveLimit(slots), at) for at in arrivals]
    events: list[tuple[float, int, str, int, float, int]] = []  # time, seq, kind, client, sent, c
    queue: list[tuple[int, float, int]] = []
    running = 0
    seq = 0
    lengths: list[tuple[float, int]] = []

    def push(at: float, kind: str, who: int, sent: float = 0.0, concurrency: int = 0) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(events, (at, seq, kind, who, sent, concurrency))

    def fill(now: float, who: int) -> None:
        nonlocal running
        client = clients[who]
        while client.in_flight < client.limit.limit:
            client.in_flight += 1
            queue.append((who, now, client.in_flight))
        while running < slots and queue:
            owner, sent, concurrency = queue.pop(0)
            running += 1
            push(now + service, "done", owner, sent, concurrency)
        lengths.append((now, len(queue)))

    for who, client in enumerate(clients):
        push(client.arrives, "arrive", who)
    while events:
        now, _, kind, who, sent, concurrency = heapq.heappop(events)
        if now > until:
            break
        client = clients[who]
        if kind == "done":
            running -= 1
            client.in_flight -= 1
            client.served.append(now)
            client.limit.on_success(now - sent, service, concurrency, exact=True)
        fill(now, who)
    return clients, lengths


def test_three_clients_arriving_at_a_busy_server_converge_to_equal_shares() -> None:
    clients, lengths = share_one_server(8, arrivals=[0.0, 5.0, 10.0], until=120.0)
    late = [sum(1 for t in c.served if 60.0 <= t < 120.0) for c in clients]
    # Each gets a third of the server's 8 x 60 answers, give or take 20 %.
    assert all(abs(n - 160) <= 32 for n in late), late
    # ... and nobody keeps the others waiting: the queue stays within the slots + 2.
    assert max(n for t, n in lengths if t >= 60.0) <= 8 + 2


def test_a_client_alone_again_takes_the_whole_server_back() -> None:
    clients, _ = share_one_server(8, arrivals=[0.0, 0.0], until=40.0)
    assert clients[0].limit.limit + clients[1].limit.limit <= 8 + 2
    alone, _ = share_one_server(8, arrivals=[0.0], until=40.0)
    assert alone[0].limit.limit == 8


CLIENT = """
import json, sys
from dllm_notebook import Cluster
workers, settings, count = json.loads(sys.argv[1])
with Cluster(workers, **settings) as cluster:
    cluster.check()
    print("ready", flush=True)
    answers = cluster.map([f"Other client's prompt [[b{i}]]" for i in range(count)])
    failures = sum(w.stats.failures for w in cluster.workers)
print(json.dumps({"ok": sum(a.ok for a in answers), "failures": failures}))
"""


def test_two_clusters_in_two_processes_share_the_lab_and_neither_starves() -> None:
    # Half a second an answer, by the servers' own clocks (llama.cpp timings, Ollama's
    # durations); each cluster is configured for every slot.
    behaviour = Behaviour(slots=4, decode_tps=100.0, answer_tokens=50)
    dialects = {"mac-a": ("llamacpp", "llama_cpp"), "mac-b": ("ollama", "ollama")}
    spec = {
        "servers": [
            {"dialect": dialect, "id": name, "behaviour": behaviour.to_dict()}
            for name, (dialect, _) in dialects.items()
        ]
    }
    count = 60
    with FakeLab.from_spec(spec) as lab:
        workers = [
            {
                "id": s.id,
                "host": "127.0.0.1",
                "port": s.port,
                "type": dialects[s.id][1],
                "max_concurrent_requests": 4,
            }
            for s in lab.servers
        ]
        settings = {**FAST, "request_timeout": 30.0, "store": None}
        with subprocess.Popen(
            [sys.executable, "-c", CLIENT, json.dumps([workers, settings, count])],
            stdout=subprocess.PIPE,
            text=True,
        ) as other:
            try:
                assert other.stdout is not None
                assert other.stdout.readline().strip() == "ready"
                with Cluster(workers, **settings) as cluster:
                    mine = cluster.map([f"My prompt [[a{i}]]" for i in range(count)])
                    failures = sum(w.stats.failures for w in cluster.workers)
                theirs = json.loads(other.communicate(timeout=120)[0])
            finally:
                if other.poll() is None:
                    other.kill()
        records = lab.log.records()
    assert sum(a.ok for a in mine) == count and theirs["ok"] == count
    assert failures == 0 and theirs["failures"] == 0  # nothing timed out or was refused
    # While both ran, neither starved: each got at least half as many answers as the other
    # (a short run: the limits settle over a few rounds of answers; bench/bench_shared.py
    # measures the shares over a long one).
    a = {prompt_digest(f"My prompt [[a{i}]]") for i in range(count)}
    b = {prompt_digest(f"Other client's prompt [[b{i}]]") for i in range(count)}
    generated = [r for r in records if r.generated and r.finished_at is not None]
    end = min(max(r.finished_at or 0.0 for r in generated if r.digest in d) for d in (a, b))
    both = [r.digest for r in generated if (r.finished_at or 0.0) <= end]
    share = sum(d in a for d in both) / len(both)
    assert 1 / 3 <= share <= 2 / 3, share
    # And no server's queue held more than its slots + 2.
    for server in dialects:
        assert peak_queued(r for r in records if r.server == server) <= 4 + 2


def test_a_notebook_that_comes_to_a_busy_llama_cpp_server_does_not_queue_a_full_share(
    lab: FakeLab,
) -> None:
    # Another notebook keeps all 4 slots busy; llama.cpp's /slots says so.
    server = lab.add("llamacpp", behaviour=Behaviour(slots=4, decode_tps=20, answer_tokens=40))
    body = {"messages": [{"role": "user", "content": "someone else's"}], "max_tokens": 40}
    config = {"id": "mac", "host": "127.0.0.1", "port": server.port, "type": "llama_cpp"}
    with ThreadPoolExecutor(4) as pool:
        others = [
            pool.submit(httpx.post, server.url + "/v1/chat/completions", json=body, timeout=30)
            for _ in range(4)
        ]
        time.sleep(0.3)
        with Cluster([{**config, "max_concurrent_requests": 4}], **FAST) as cluster:
            cluster.check()
            (worker,) = cluster.workers
            assert worker.limit == 2  # half its slots, not all 4 behind the others' 4
            answers = cluster.map([f"mine [[m{i}]]" for i in range(4)])
        assert all(f.result().status_code == 200 for f in others)
    assert all(a.ok for a in answers)
    assert peak_queued(server.log.records()) <= 2

    # Alone, the same notebook takes every slot.
    with Cluster([{**config, "max_concurrent_requests": 4}], **FAST) as cluster:
        cluster.check()
        assert cluster.workers[0].limit == 4
