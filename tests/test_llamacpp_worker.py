"""The ``llama_cpp`` worker type: llama-server's health, window, slots and timings.

Against the emulated ``llamacpp`` dialect (dllm_notebook.testing) on loopback.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from dllm_notebook import Cluster
from dllm_notebook._config import parse_config, parse_worker_spec
from dllm_notebook.cli._probe import DISCOVER_PORTS
from dllm_notebook.testing import Behaviour, FakeLab

from .conftest import FAST


def _health(cluster: Cluster) -> str:
    (row,) = cluster.snapshot()
    return str(row["health"])


def test_workers_json_type_llama_cpp_defaults_to_port_8080() -> None:
    workers, _ = parse_config({"workers": [{"id": "box", "host": "10.0.0.5", "type": "llama_cpp"}]})
    assert workers[0].base_url == "http://10.0.0.5:8080"
    assert workers[0].slots_from_server
    given, _ = parse_config(
        {"workers": [{"id": "box", "host": "h", "type": "llama_cpp", "max_concurrent_requests": 2}]}
    )
    assert not given[0].slots_from_server
    url = parse_worker_spec("llamacpp://10.0.0.5", 0)
    assert (url.type, url.base_url) == ("llama_cpp", "http://10.0.0.5:8080")
    assert DISCOVER_PORTS[8080] == "llama_cpp"


def test_an_http_url_is_detected_as_llama_cpp_with_window_and_slots(lab: FakeLab) -> None:
    server = lab.add("llamacpp", models=["qwen"], context_length=8192, behaviour=Behaviour(slots=3))
    with Cluster([server.url], **FAST) as cluster:
        frame = cluster.check()
        row = frame.loc[cluster.workers[0].id]
        assert row["type"] == "llama_cpp"
        assert row["healthy"] and row["model"] == "qwen"
        assert row["context_length"] == 8192
        assert cluster.workers[0].max_concurrent_requests == 3
        assert cluster.ask("hello [[h]]").ok


def test_without_max_concurrent_requests_the_server_slot_count_is_used(lab: FakeLab) -> None:
    server = lab.add("llamacpp", behaviour=Behaviour(slots=3, decode_tps=100, answer_tokens=20))
    spec = {"id": "box", "host": "127.0.0.1", "port": server.port, "type": "llama_cpp"}
    with Cluster([spec], **FAST) as cluster:
        answers = cluster.map([f"prompt {i}" for i in range(12)], max_tokens=20)
        snapshot = cluster.snapshot()[0]
    assert all(a.ok for a in answers)
    assert snapshot["max_concurrent"] == 3
    assert server.log.max_in_flight() == 3  # all three slots used, never more


def test_a_configured_max_concurrent_requests_wins_over_the_slots(lab: FakeLab) -> None:
    server = lab.add("llamacpp", behaviour=Behaviour(slots=4, decode_tps=200, answer_tokens=10))
    spec = {
        "id": "box",
        "host": "127.0.0.1",
        "port": server.port,
        "type": "llama_cpp",
        "max_concurrent_requests": 1,
    }
    with Cluster([spec], **FAST) as cluster:
        assert all(a.ok for a in cluster.map(["a", "b", "c", "d"], max_tokens=10))
        assert cluster.workers[0].max_concurrent_requests == 1
    assert server.log.max_in_flight() == 1


def test_with_slots_endpoint_off_total_slots_from_props_is_used(lab: FakeLab) -> None:
    server = lab.add("llamacpp", behaviour=Behaviour(slots=2, slots_endpoint=False))
    assert httpx.get(server.url + "/slots").status_code == 501
    with Cluster([f"llamacpp://127.0.0.1:{server.port}"], **FAST) as cluster:
        cluster.check()
        assert cluster.workers[0].max_concurrent_requests == 2


def test_a_server_loading_its_model_shows_as_loading_then_takes_work(lab: FakeLab) -> None:
    server = lab.add("llamacpp", models=["big"], loaded=[])
    with Cluster([f"llamacpp://127.0.0.1:{server.port}"], **FAST) as cluster:
        frame = cluster.check()
        row = frame.loc[cluster.workers[0].id]
        assert not row["healthy"]
        assert _health(cluster) == "loading"
        assert "loading the model" in row["error"]
        assert "loading" in str(cluster)  # the text table says so, not "down"
        server.update(loaded=None)
        deadline = time.monotonic() + 10
        while _health(cluster) != "healthy" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _health(cluster) == "healthy"
        assert cluster.ask("now [[n]]").ok


def test_timings_from_the_server_reach_the_answer(lab: FakeLab) -> None:
    server = lab.add("llamacpp", behaviour=Behaviour(prefill_tps=1000, decode_tps=100))
    with Cluster([f"llamacpp://127.0.0.1:{server.port}"], **FAST) as cluster:
        answer = cluster.ask("timed [[t]]", max_tokens=10)
    assert answer.ok and answer.tokens_per_second is not None
    assert answer.tokens_per_second == pytest.approx(100, rel=0.05)


def test_a_prompt_longer_than_the_window_from_props_is_not_sent(lab: FakeLab) -> None:
    server = lab.add("llamacpp", context_length=512)
    with Cluster([f"llamacpp://127.0.0.1:{server.port}"], **FAST) as cluster:
        answer = cluster.map(["word " * 2000])[0]
    assert not answer.ok
    assert answer.error_type == "ContextLengthExceeded"
    assert "the largest context window in the cluster is 512" in (answer.error or "")
    assert server.log.generations() == []


# -- the emulated dialect itself ----------------------------------------------------------


def test_emulated_slots_show_which_slot_is_busy(lab: FakeLab) -> None:
    server = lab.add("llamacpp", context_length=2048, behaviour=Behaviour(slots=2, decode_tps=20))
    idle = httpx.get(server.url + "/slots").json()
    assert [(s["id"], s["n_ctx"], s["is_processing"]) for s in idle] == [
        (0, 2048, False),
        (1, 2048, False),
    ]
    body = {"messages": [{"role": "user", "content": "slow"}], "max_tokens": 20}
    with ThreadPoolExecutor(3) as pool:
        futures = [
            pool.submit(httpx.post, server.url + "/v1/chat/completions", json=body, timeout=30)
            for _ in range(3)
        ]
        time.sleep(0.3)
        busy = httpx.get(server.url + "/slots").json()
        metrics = httpx.get(server.url + "/metrics").text
        replies = [f.result() for f in futures]
    assert [s["is_processing"] for s in busy] == [True, True]
    assert "llamacpp:requests_processing 2" in metrics
    assert "llamacpp:requests_deferred 1" in metrics
    timings = replies[0].json()["timings"]
    assert {"cache_n", "prompt_n", "prompt_ms", "predicted_n", "predicted_ms"} <= set(timings)
    assert timings["predicted_n"] == 16 and timings["cache_n"] == 0


def test_emulated_context_error_carries_the_counts(lab: FakeLab) -> None:
    server = lab.add("llamacpp", context_length=256)
    body = {"messages": [{"role": "user", "content": "word " * 1000}]}
    reply = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=30)
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["type"] == "exceed_context_size_error"
    assert error["n_ctx"] == 256 and error["n_prompt_tokens"] > 256
    props = httpx.get(server.url + "/props").json()
    assert props["default_generation_settings"]["n_ctx"] == 256
    assert props["total_slots"] == 1 and props["model_alias"] == "fake-model"


def test_a_worker_configured_above_its_slots_never_queues_in_the_server(
    lab: FakeLab, caplog: pytest.LogCaptureFixture
) -> None:
    server = lab.add("llamacpp", behaviour=Behaviour(slots=2, decode_tps=100, answer_tokens=20))
    spec = {
        "id": "box",
        "host": "127.0.0.1",
        "port": server.port,
        "type": "llama_cpp",
        "max_concurrent_requests": 4,
    }
    with Cluster([spec], **FAST) as cluster:
        answers = cluster.map([f"prompt {i}" for i in range(10)], max_tokens=20)
    assert all(a.ok for a in answers)
    assert server.log.max_in_flight() == 2
    waits = [r.started_at - r.received_at for r in server.log.generations() if r.started_at]
    assert len(waits) == 10 and max(waits) < 0.05  # none waited in the server's queue
    assert "configured for 4 requests at once but the server has 2 slots" in caplog.text
