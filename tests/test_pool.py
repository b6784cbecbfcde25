"""The worker pool (``_running/pool.py``): each worker's health checks, the state they
leave it in (``healthy``, ``suspect``, ``down``, ``loading``), what ``check()`` reports,
and the cluster's slots."""

from __future__ import annotations

import time

import pytest

from dllm_notebook import Cluster, Event
from dllm_notebook.testing import Behaviour, FakeLab

from .conftest import FAST
from .test_cluster import url_for
from .test_faults import spec


def test_worker_comes_back_by_itself(lab: FakeLab) -> None:
    server = lab.add("ollama")
    with Cluster([spec(server, "ollama", "mac")], **FAST) as c:
        assert c.check().loc["mac", "healthy"]
        server.kill()
        assert not c.check().loc["mac", "healthy"]
        server.restart()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and c.snapshot()[0]["health"] != "healthy":
            time.sleep(0.1)
        assert c.snapshot()[0]["health"] == "healthy"
        assert c.ask("back?").ok


@pytest.mark.parametrize("kind", ["openai", "ollama", "lm_studio"])
def test_unreachable_worker_message_says_what_to_do(kind: str) -> None:
    url = {
        "openai": "openai://127.0.0.1:9",
        "ollama": "ollama://127.0.0.1:9",
        "lm_studio": "lmstudio://127.0.0.1:9",
    }[kind]
    with Cluster([url], **FAST) as c:
        frame = c.check()
    error = frame.iloc[0]["error"]
    assert "cannot reach http://127.0.0.1:9" in error
    assert "is the server running" in error


def test_check_reports_models_and_context(lab: FakeLab) -> None:
    lms = lab.add("lm_studio", models=["qwen", "mistral"], loaded=["mistral"], context_length=8192)
    oll = lab.add("ollama", models=["llama3.2:latest"])
    vll = lab.add("vllm", models=["big"], context_length=32768)
    with Cluster(
        [url_for(lms.url, "lm_studio"), url_for(oll.url, "ollama"), url_for(vll.url, "vllm")],
        **FAST,
    ) as cluster:
        frame = cluster.check()
    assert list(frame["healthy"]) == [True, True, True]
    rows = frame.to_dict("index")
    lm_row = rows[cluster.workers[0].id]
    assert lm_row["model"] == "mistral"  # the loaded one is chosen when none is configured
    assert lm_row["model_loaded"] is True
    assert lm_row["context_length"] == 8192
    assert "qwen" in lm_row["models"]
    assert rows[cluster.workers[1].id]["model"] == "llama3.2:latest"
    assert rows[cluster.workers[1].id]["context_length"] > 0
    assert rows[cluster.workers[2].id]["context_length"] == 32768


def test_configured_model_missing_makes_worker_unhealthy(lab: FakeLab) -> None:
    server = lab.add("ollama", models=["llama3.2"])
    spec = {
        "id": "mini",
        "host": "127.0.0.1",
        "port": server.port,
        "type": "ollama",
        "model": "qwen3:8b",
    }
    with Cluster([spec], **FAST) as cluster:
        frame = cluster.check()
    assert not frame.loc["mini", "healthy"]
    assert "qwen3:8b" in frame.loc["mini", "error"] and "llama3.2" in frame.loc["mini", "error"]


def test_repeated_bad_answers_take_a_worker_out_of_rotation_and_say_why(lab: FakeLab) -> None:
    good = lab.add("openai", behaviour=Behaviour(slots=4))
    broken = lab.add("openai", behaviour=Behaviour(error_rate=1.0, slots=8))
    workers = [
        spec(good, "openai", "good", max_concurrent_requests=2),
        spec(broken, "openai", "broken", max_concurrent_requests=8),
    ]
    changes: list[Event] = []
    with Cluster(workers, **FAST) as c:
        c.subscribe(lambda e: changes.append(e) if e.kind == "worker" else None)
        c.check()
        answers = c.map([f"prompt {i} [[r{i}]]" for i in range(12)])
    assert all(a.ok and a.worker == "good" for a in answers)
    left = [
        e.data for e in changes if e.data["worker"] == "broken" and e.data["health"] != "healthy"
    ]
    assert left and left[0]["health"] == "suspect"  # its first step out of rotation
    assert "3 failures in a row" in left[0]["reason"]
    # Out of rotation: it did not keep taking the batch.
    assert len(broken.log.generations()) < len(answers)


def test_max_concurrent_batch_caps_requests_over_the_whole_cluster(lab: FakeLab) -> None:
    servers = [lab.add("openai", behaviour=Behaviour(base_latency=0.05, slots=8)) for _ in range(2)]
    workers = [spec(s, "openai", f"w{i}", max_concurrent_requests=8) for i, s in enumerate(servers)]
    with Cluster(workers, **{**FAST, "max_concurrent_batch": 3}) as c:
        answers = c.map([f"p{i} [[c{i}]]" for i in range(24)])
    assert all(a.ok for a in answers)
    assert lab.log.max_in_flight() <= 3  # 16 slots, but the cluster takes 3 at once


def test_a_worker_view_is_live_and_read_only(lab: FakeLab) -> None:
    server = lab.add("lm_studio", models=["qwen"], context_length=8192)
    with Cluster([spec(server, "lm_studio", "mac", max_concurrent_requests=3)], **FAST) as c:
        (view,) = c.workers
        c.check()
        assert (view.healthy, view.model, view.context_length) == (True, "qwen", 8192)
        assert (view.limit, view.in_flight, view.free_slots) == (3, 0, 3)
        with pytest.raises(AttributeError):
            view.limit = 9  # type: ignore[misc]
        server.kill()
        c.check()
        assert not view.healthy and "cannot reach" in view.reason  # the same view, updated
        assert c.workers[0] is view
