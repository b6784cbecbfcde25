"""``dllm_notebook.probe()``: what one server is, asked without a cluster."""

from __future__ import annotations

import asyncio
import socket

import pytest

from dllm_notebook import ConfigError, ServerProbe, WorkerConfig, WorkerUnreachable, aprobe, probe
from dllm_notebook.testing import FakeLab, FakeServer


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("dialect", "expected"),
    [
        ("lm_studio", "lm_studio"),
        ("ollama", "ollama"),
        ("llamacpp", "llama_cpp"),
        ("vllm", "openai"),
    ],
)
def test_probe_detects_the_type_and_lists_the_models(
    lab: FakeLab, dialect: str, expected: str
) -> None:
    server = lab.add(dialect, models=["alpha", "beta"])
    found = probe(server.url)
    assert isinstance(found, ServerProbe)
    assert found.type == expected
    assert found.url == server.url
    names = [m.id.removesuffix(":latest") for m in found.models]  # Ollama adds the tag
    assert names[0] == "alpha" and set(names) <= {"alpha", "beta"}  # llama.cpp serves one
    assert found.model is not None and found.model.removesuffix(":latest") == "alpha"
    assert found.context_length is None or found.context_length > 0


def test_probe_reports_the_loaded_model_and_its_window(lab: FakeLab) -> None:
    server = lab.add("lm_studio", models=["small", "big"], loaded=["big"], context_length=8192)
    found = probe(server.url)
    assert found.loaded == ("big",)
    assert found.model == "big"  # the loaded one, not the first listed
    assert found.context_length == 8192
    assert probe(server.url, model="small").model == "small"


def test_probe_takes_a_named_type_and_a_worker_config(lab: FakeLab) -> None:
    server = lab.add("ollama", models=["llama3.2"])
    by_scheme = probe(server.url.replace("http://", "ollama://"))
    config = WorkerConfig(id="box", host="127.0.0.1", port=server.port, type="ollama")
    assert by_scheme.type == probe(config).type == "ollama"
    assert [m.id for m in by_scheme.models] == ["llama3.2:latest"]


def test_probe_of_a_closed_port_says_the_server_is_unreachable() -> None:
    with pytest.raises(WorkerUnreachable, match="is the server running"):
        probe(f"http://127.0.0.1:{free_port()}", timeout=2.0)


def test_probe_of_a_malformed_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no host name"):
        probe("http://:1234")


def test_aprobe_works_from_a_running_event_loop() -> None:
    with FakeServer("ollama", models=["m"]) as server:

        async def cell() -> ServerProbe:
            return await aprobe(server.url)

        assert asyncio.run(cell()).type == "ollama"
