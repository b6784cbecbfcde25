"""Streamed answers: the ChatStream behind ``cluster.stream()`` and ``dllm chat`` (each
backend's own ``stream()``: tests/test_backends.py)."""

from __future__ import annotations

import socket

import pytest

from dllm_notebook import (
    Cluster,
    NoHealthyWorkers,
    TaskFailed,
)
from dllm_notebook.testing import Behaviour, FakeLab, expected_echo

from .conftest import FAST


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_chat_stream_names_its_worker_and_yields_the_answer(lab: FakeLab) -> None:
    server = lab.add("lm_studio", models=["qwen"])
    with Cluster(
        [{"id": "studio", "host": "127.0.0.1", "port": server.port, "type": "lm_studio"}], **FAST
    ) as cluster:
        stream = cluster.stream("What is soil? [[c1]]")
        assert (stream.worker, stream.model) == ("studio", "qwen")
        text = "".join(stream)
    assert text.startswith(expected_echo("What is soil? [[c1]]"))
    assert stream.text == text


def test_chat_stream_moves_to_another_worker_when_the_first_fails(lab: FakeLab) -> None:
    broken = lab.add("openai", models=["m"], behaviour=Behaviour(error_rate=1.0))
    good = lab.add("ollama", models=["m"])
    workers = [
        {
            "id": "broken",
            "host": "127.0.0.1",
            "port": broken.port,
            "type": "openai",
            "max_concurrent_requests": 8,
        },
        {
            "id": "good",
            "host": "127.0.0.1",
            "port": good.port,
            "type": "ollama",
            "max_concurrent_requests": 1,
        },
    ]
    with Cluster(workers, **FAST) as cluster:
        cluster.check()
        stream = cluster.stream("hello [[m1]]")  # "broken" has more free slots
        assert stream.worker == "good"
        assert "".join(stream).startswith(expected_echo("hello [[m1]]"))
    assert len(broken.log.generations()) == 1


def test_chat_stream_says_why_when_every_worker_fails(lab: FakeLab) -> None:
    broken = lab.add("openai", models=["m"], behaviour=Behaviour(error_rate=1.0))
    spec = {"id": "broken", "host": "127.0.0.1", "port": broken.port, "type": "openai"}
    with Cluster([spec], **FAST) as cluster, pytest.raises(TaskFailed, match="dllm check"):
        cluster.stream("hello")


def test_chat_stream_without_a_healthy_worker_lists_the_workers() -> None:
    spec = {"id": "asleep", "host": "127.0.0.1", "port": free_port(), "type": "ollama"}
    settings = dict(FAST, no_worker_timeout=0.5)
    with Cluster([spec], **settings) as cluster, pytest.raises(NoHealthyWorkers, match="down"):
        cluster.stream("hello")


def test_chat_stream_refuses_a_question_larger_than_every_window(lab: FakeLab) -> None:
    small = lab.add("lm_studio", models=["m"], context_length=512)
    spec = {"id": "small", "host": "127.0.0.1", "port": small.port, "type": "lm_studio"}
    with Cluster([spec], **FAST) as cluster:
        cluster.check()
        with pytest.raises(TaskFailed, match="largest context window in the cluster is 512"):
            cluster.stream("soil " * 2000)
    assert small.log.generations() == []


def test_a_stream_pinned_to_a_worker_never_moves(lab: FakeLab) -> None:
    broken = lab.add("openai", models=["m"], behaviour=Behaviour(error_rate=1.0))
    good = lab.add("ollama", models=["m"])
    workers = [
        {"id": "broken", "host": "127.0.0.1", "port": broken.port, "type": "openai"},
        {"id": "good", "host": "127.0.0.1", "port": good.port, "type": "ollama"},
    ]
    with Cluster(workers, **FAST) as cluster:
        cluster.check()
        with cluster.stream("to the good one [[p1]]", worker="good") as stream:
            assert stream.worker == "good"
            assert "".join(stream).startswith(expected_echo("to the good one [[p1]]"))
            assert stream.first_piece_s is not None
        with pytest.raises(TaskFailed, match="dllm check"):
            cluster.stream("to the broken one [[p2]]", worker="broken")
    assert good.log.times_generated("to the good one [[p1]]") == 1
    assert good.log.times_generated("to the broken one [[p2]]") == 0  # not moved over
    assert len(broken.log.generations()) >= 1  # tried (and refused) there only
