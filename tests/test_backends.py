"""The backends (``_running/backends/``): each wire format behind ``probe()``, ``chat()`` and
``stream()``, against a real fake server of its dialect; errors translated once, at the
boundary, into the error tree."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest

from dllm_notebook import (
    BadResponse,
    Cluster,
    ContextLengthExceeded,
    ModelNotAvailable,
    RequestRejected,
    WorkerConfig,
    WorkerOverloaded,
    WorkerUnreachable,
)
from dllm_notebook._running.backends import classify_error, make_backend, num_ctx_for
from dllm_notebook._running.chat import chat_request
from dllm_notebook.testing import CLIENT_TYPES, Behaviour, FakeLab, expected_echo

from .conftest import FAST

KINDS = CLIENT_TYPES


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def collect(kind: str, port: int, model: str, prompt: str) -> list[str]:
    config = WorkerConfig(id="w", host="127.0.0.1", port=port, type=kind)
    async with httpx.AsyncClient(base_url=config.base_url, timeout=10) as client:
        backend = make_backend(config, client)
        return [
            piece
            async for piece in backend.stream(
                chat_request(prompt, max_tokens=12), model=model, context_length=4096
            )
        ]


@pytest.mark.parametrize("dialect", list(KINDS))
def test_each_backend_streams_the_answer_in_pieces(lab: FakeLab, dialect: str) -> None:
    server = lab.add(dialect, models=["m-1"], behaviour=Behaviour(answer_tokens=12))
    model = "m-1:latest" if dialect == "ollama" else "m-1"
    pieces = asyncio.run(collect(KINDS[dialect], server.port, model, "Tell me [[s1]]"))
    assert len(pieces) > 3  # several pieces, not one block
    assert "".join(pieces).startswith(expected_echo("Tell me [[s1]]"))
    (record,) = server.log.generations()
    assert record.stream is True


@pytest.mark.parametrize(
    ("dialect", "behaviour", "error"),
    [
        ("openai", Behaviour(garbage=True), BadResponse),
        ("ollama", Behaviour(garbage=True), BadResponse),
        ("lm_studio", Behaviour(overload=True, overload_status=429), WorkerOverloaded),
        ("ollama", Behaviour(empty_answer=True), BadResponse),
        ("vllm", Behaviour(), ModelNotAvailable),
    ],
)
def test_stream_failures_become_the_same_errors_as_chat(
    lab: FakeLab, dialect: str, behaviour: Behaviour, error: type[Exception]
) -> None:
    server = lab.add(dialect, models=["m-1"], behaviour=behaviour)
    model = "no-such-model" if error is ModelNotAvailable else "m-1"
    with pytest.raises(error):
        asyncio.run(collect(KINDS[dialect], server.port, model, "hi"))


def test_stream_to_a_closed_port_is_unreachable() -> None:
    with pytest.raises(WorkerUnreachable, match="is the server running"):
        asyncio.run(collect("openai", free_port(), "m", "hi"))


@pytest.mark.parametrize(
    ("body", "window"),
    [
        # LM Studio 0.3 and later, as its users report it
        (
            '{"error": "Trying to keep the first 111490 tokens when context the overflows. '
            "However, the model is loaded with context length of only 32768 tokens, which is "
            'not enough. Try to load the model with a larger context length."}',
            32768,
        ),
        # Ollama with truncation off names the overflow only: never taken for the window
        ('{"error": "prompt too long; exceeded max context length by 4021 tokens"}', None),
    ],
)
def test_wordings_the_fakes_do_not_speak(body: str, window: int | None) -> None:
    error = classify_error(400, body, worker="w", model="m")
    assert isinstance(error, ContextLengthExceeded)
    assert error.context_length == window


def test_ollama_always_gets_num_ctx_and_no_silent_truncation(lab: FakeLab) -> None:
    server = lab.add("ollama", models=["llama3.2"], context_length=32768)
    long_prompt = "word " * 6000  # ~7,500 fake tokens: beyond Ollama's 2048 default
    with Cluster([server.url.replace("http", "ollama", 1)], **FAST) as cluster:
        answer = cluster.ask(long_prompt)
    assert answer.ok
    (record,) = server.log.generations()
    assert record.num_ctx is not None and record.num_ctx >= 7500
    assert record.stream is True  # stream "auto": Ollama's answer read from its NDJSON
    assert server.log.truncated() == []


def test_ollama_num_ctx_never_shrinks_so_the_model_is_not_reloaded_back_and_forth(
    lab: FakeLab,
) -> None:
    server = lab.add("ollama", behaviour=Behaviour(context_length=32768))
    prompts = ["short question [[a]]", "x " * 6000 + "[[b]]", "short again [[c]]"]
    with Cluster([server.url.replace("http", "ollama", 1)], **FAST) as cluster:
        for prompt in prompts:  # one at a time, in this order
            assert cluster.ask(prompt).ok
    sizes = [r.num_ctx for r in server.log.generations()]
    assert sizes[0] == 4096 and sizes[1] is not None and sizes[1] > 4096
    assert sizes[2] == sizes[1]  # the short one after the long one keeps the larger window


@pytest.mark.parametrize(
    ("status", "body", "retry_after", "error", "retryable"),
    [
        (429, '{"error": "slow down"}', "7", WorkerOverloaded, True),
        (503, '{"error": {"message": "busy"}}', None, WorkerOverloaded, True),
        (413, "payload too large", None, ContextLengthExceeded, True),
        (404, '{"error": "not found"}', None, ModelNotAvailable, True),
        (401, '{"error": "bad key"}', None, RequestRejected, False),
        (502, "<html>bad gateway</html>", None, BadResponse, True),
        (422, '{"error": "messages must be a list"}', None, RequestRejected, False),
    ],
)
def test_each_status_becomes_the_error_the_cluster_acts_on(
    status: int, body: str, retry_after: str | None, error: type[Exception], retryable: bool
) -> None:
    found = classify_error(status, body, worker="mac-1", model="m", retry_after=retry_after)
    assert type(found) is error
    assert found.worker == "mac-1" and found.status_code == status
    assert found.retryable is retryable
    assert f"HTTP {status}" in str(found)
    if retry_after is not None:
        assert isinstance(found, WorkerOverloaded) and found.retry_after == 7.0
    if status == 401:
        assert "api_key" in str(found)  # says what to fix


@pytest.mark.parametrize(
    ("needed", "window", "num_ctx"),
    [(10, None, 4096), (4096, None, 4096), (4097, None, 8192), (20000, 16384, 16384)],
)
def test_ollama_num_ctx_is_a_power_of_two_at_least_4096_within_the_window(
    needed: int, window: int | None, num_ctx: int
) -> None:
    assert num_ctx_for(needed, window) == num_ctx


@pytest.mark.parametrize("dialect", ["openai", "llamacpp", "vllm", "exo", "lm_studio", "ollama"])
def test_probe_lists_the_models_and_chat_names_the_model_that_answered(
    lab: FakeLab, dialect: str
) -> None:
    server = lab.add(dialect, models=["m-1"])
    config = WorkerConfig(id="w", host="127.0.0.1", port=server.port, type=KINDS[dialect])

    async def probe_then_chat() -> tuple[list[str], str, str | None]:
        async with httpx.AsyncClient(base_url=config.base_url, timeout=10) as client:
            backend = make_backend(config, client)
            info = await backend.probe(detailed=True)
            model = info.models[0].id
            done = await backend.chat(chat_request("Hi [[b1]]"), model=model, context_length=None)
            return [m.id for m in info.models], done.text, done.model

    models, text, answered_by = asyncio.run(probe_then_chat())
    assert [m.removesuffix(":latest") for m in models] == ["m-1"]
    assert text.startswith(expected_echo("Hi [[b1]]"))
    assert answered_by is not None and "m-1" in answered_by
