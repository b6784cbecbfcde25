"""The fake LLM servers themselves, exercised over real HTTP with httpx."""

from __future__ import annotations

import asyncio
import contextlib
import json
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dllm_notebook.testing import (
    DIALECTS,
    Behaviour,
    FakeLab,
    FakeServer,
    expected_echo,
    parse_spec,
    prompt_digest,
)

from .conftest import served_apart

PROMPT = "Summarise the paper [[paper-7]] in one line. [[q-2]]"
OPENAI_STYLE = [d for d in DIALECTS if d != "ollama"]

Factory = Callable[..., FakeServer]
HTTP = httpx.Client(timeout=5)


@pytest.fixture(scope="module", autouse=True)
def _close_http_client() -> Iterator[None]:
    yield
    HTTP.close()


@pytest.fixture
def make_server() -> Iterator[Factory]:
    servers: list[FakeServer] = []

    def make(dialect: str, **kwargs: Any) -> FakeServer:
        server = FakeServer(dialect, **kwargs)
        server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop(grace=0)


def chat(
    server: FakeServer, prompt: str = PROMPT, *, model: str = "fake-model", **extra: Any
) -> httpx.Response:
    """One non-streamed chat request in the server's main dialect."""
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": prompt}]}
    if server.dialect == "ollama":
        body["stream"] = False
        body.update(extra)
        return HTTP.post(server.url + "/api/chat", json=body)
    body.update(extra)
    return HTTP.post(server.url + "/v1/chat/completions", json=body)


def answer_text(server: FakeServer, response: httpx.Response) -> str:
    data = response.json()
    if server.dialect == "ollama":
        return str(data["message"]["content"])
    return str(data["choices"][0]["message"]["content"])


# -- the answer proves which prompt it belongs to -----------------------------------------


def test_expected_echo_is_the_digest_and_the_markers() -> None:
    assert expected_echo(PROMPT) == f"ECHO {prompt_digest(PROMPT)[:16]} [[paper-7]] [[q-2]]"
    assert expected_echo("no markers") == f"ECHO {prompt_digest('no markers')[:16]}"


@pytest.mark.parametrize("dialect", DIALECTS)
def test_every_dialect_answers_with_the_echo_of_its_own_prompt(
    make_server: Factory, dialect: str
) -> None:
    server = make_server(dialect)
    first, second = chat(server, "first [[a]]"), chat(server, "second [[b]]")

    assert first.status_code == second.status_code == 200
    assert answer_text(server, first).startswith(expected_echo("first [[a]]"))
    assert answer_text(server, second).startswith(expected_echo("second [[b]]"))
    assert server.log.times_generated("first [[a]]") == 1
    assert [r.outcome for r in server.log.generations()] == ["ok", "ok"]


@pytest.mark.parametrize("dialect", ["openai", "llamacpp", "vllm", "lm_studio"])
def test_openai_answers_report_usage_and_why_they_stopped(
    make_server: Factory, dialect: str
) -> None:
    server = make_server(dialect, behaviour=Behaviour(answer_tokens=16))
    prompt = "x" * 40  # 10 tokens

    capped = chat(server, prompt, max_tokens=5).json()
    natural = chat(server, prompt).json()

    assert capped["usage"] == {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15} | (
        {"prompt_tokens_details": None} if dialect == "vllm" else {}
    )
    assert capped["choices"][0]["finish_reason"] == "length"
    assert natural["usage"]["completion_tokens"] == 16
    assert natural["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize("dialect", OPENAI_STYLE)
def test_openai_streams_sse_chunks_then_done(make_server: Factory, dialect: str) -> None:
    server = make_server(dialect)
    body = {
        "model": "fake-model",
        "stream": True,
        "messages": [{"role": "user", "content": PROMPT}],
    }
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body) as response:
        lines = [line for line in response.iter_lines() if line]

    assert response.headers["content-type"].startswith("text/event-stream")
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text.startswith(expected_echo(PROMPT))
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


# -- what each dialect says about itself --------------------------------------------------


def test_llamacpp_reports_its_window_and_health(make_server: Factory) -> None:
    server = make_server("llamacpp", context_length=8192, behaviour=Behaviour(slots=4))
    props = httpx.get(server.url + "/props").json()
    assert props["default_generation_settings"]["n_ctx"] == 8192
    assert props["total_slots"] == 4
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}

    server.update(loaded=())
    loading = httpx.get(server.url + "/health")
    assert loading.status_code == 503
    assert loading.json()["error"] == {
        "code": 503,
        "message": "Loading model",
        "type": "unavailable_error",
    }


def test_vllm_lists_max_model_len(make_server: Factory) -> None:
    server = make_server("vllm", models=["Qwen/Qwen2.5-7B"], context_length=32768)
    entry = httpx.get(server.url + "/v1/models").json()["data"][0]
    assert (entry["id"], entry["max_model_len"]) == ("Qwen/Qwen2.5-7B", 32768)


def test_exo_lists_every_card_but_answers_only_loaded_models(make_server: Factory) -> None:
    server = make_server("exo", models=["llama-3.2-1b", "qwen-8b"], loaded=["llama-3.2-1b"])
    ids = [m["id"] for m in httpx.get(server.url + "/v1/models").json()["data"]]
    assert ids == ["llama-3.2-1b", "qwen-8b"]

    answer = chat(server, model="llama-3.2-1b").json()
    assert answer["model"] == "mlx-community/llama-3.2-1b"
    assert "usage" not in answer
    refused = chat(server, model="qwen-8b")
    assert refused.status_code == 404
    assert refused.json() == {
        "error": {
            "message": "No instance found for model mlx-community/qwen-8b",
            "type": "Not Found",
            "code": 404,
        }
    }


def test_lm_studio_v0_api_reports_state_context_and_stats(make_server: Factory) -> None:
    server = make_server(
        "lm_studio",
        models=["qwen3-8b", "gemma-3-12b"],
        loaded=["qwen3-8b"],
        context_length=8192,
        behaviour=Behaviour(max_context_length=32768, decode_tps=50, time_scale=0.01),
    )
    models = {m["id"]: m for m in httpx.get(server.url + "/api/v0/models").json()["data"]}
    assert models["qwen3-8b"]["state"] == "loaded"
    assert models["qwen3-8b"]["loaded_context_length"] == 8192
    assert models["gemma-3-12b"]["state"] == "not-loaded"
    assert models["gemma-3-12b"]["max_context_length"] == 32768
    assert "loaded_context_length" not in models["gemma-3-12b"]

    body = {"model": "qwen3-8b", "messages": [{"role": "user", "content": PROMPT}]}
    answer = httpx.post(server.url + "/api/v0/chat/completions", json=body).json()
    assert answer["stats"]["stop_reason"] == "eosFound"
    assert answer["stats"]["tokens_per_second"] == pytest.approx(50)
    assert answer["model_info"]["context_length"] == 8192
    assert answer["runtime"]["supported_formats"] == ["gguf"]


def test_lm_studio_loads_on_demand_or_says_no_models_loaded(make_server: Factory) -> None:
    server = make_server("lm_studio", models=["a", "b"], loaded=[])
    assert chat(server, model="a").status_code == 200  # just-in-time loading
    assert server.behaviour.loaded == ("a",)

    server.update(auto_load=False, loaded=())
    refused = chat(server, model="b")
    assert refused.status_code == 400
    assert refused.json() == {
        "error": (
            "No models loaded. Please load a model in the developer page or use the "
            "'lms load' command."
        )
    }


def test_lm_studio_can_answer_200_with_empty_content(make_server: Factory) -> None:
    server = make_server("lm_studio", behaviour=Behaviour(empty_answer=True))
    response = chat(server)
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == ""
    assert server.log.generations()[0].outcome == "empty"


def test_ollama_describes_its_models(make_server: Factory) -> None:
    server = make_server(
        "ollama",
        models=["llama3.2", "qwen3:8b"],
        loaded=["llama3.2"],
        behaviour=Behaviour(max_context_length=131072),
    )
    assert httpx.get(server.url + "/").text == "Ollama is running"
    assert "version" in httpx.get(server.url + "/api/version").json()
    tags = [m["name"] for m in httpx.get(server.url + "/api/tags").json()["models"]]
    assert tags == ["llama3.2:latest", "qwen3:8b"]
    running = httpx.get(server.url + "/api/ps").json()["models"]
    assert [(m["name"], m["context_length"]) for m in running] == [("llama3.2:latest", 2048)]
    show = httpx.post(server.url + "/api/show", json={"model": "llama3.2"}).json()
    assert show["model_info"]["llama.context_length"] == 131072
    missing = httpx.post(server.url + "/api/show", json={"model": "nope"})
    assert (missing.status_code, missing.json()) == (404, {"error": "model 'nope' not found"})

    load = httpx.post(server.url + "/api/chat", json={"model": "qwen3:8b", "messages": []})
    assert load.json()["done_reason"] == "load"
    running = httpx.get(server.url + "/api/ps").json()["models"]
    assert [m["name"] for m in running] == ["llama3.2:latest", "qwen3:8b"]


def test_ollama_reports_counts_and_nanosecond_durations(make_server: Factory) -> None:
    speeds = Behaviour(prefill_tps=100, decode_tps=20, time_scale=0.01)
    server = make_server("ollama", behaviour=speeds)
    reply = chat(server, "y" * 400, options={"num_ctx": 8192, "num_predict": 4}).json()
    assert (reply["prompt_eval_count"], reply["eval_count"]) == (100, 4)
    assert reply["done"] is True and reply["done_reason"] == "length"
    assert reply["prompt_eval_duration"] == 1_000_000_000
    assert reply["eval_duration"] == 200_000_000
    assert reply["total_duration"] >= reply["eval_duration"] + reply["prompt_eval_duration"]


# -- Ollama's quirks ----------------------------------------------------------------------


def test_ollama_streams_ndjson_unless_told_not_to(make_server: Factory) -> None:
    server = make_server("ollama")
    body = {"model": "fake-model", "messages": [{"role": "user", "content": PROMPT}]}
    response = httpx.post(server.url + "/api/chat", json=body)  # no "stream": false

    assert response.headers["content-type"] == "application/x-ndjson"
    with pytest.raises(json.JSONDecodeError):
        response.json()
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert all(not line["done"] for line in lines[:-1]) and lines[-1]["done"] is True
    assert "".join(line["message"]["content"] for line in lines).startswith(expected_echo(PROMPT))
    assert server.log.generations()[0].stream is True


def test_ollama_silently_truncates_a_prompt_beyond_num_ctx(make_server: Factory) -> None:
    server = make_server("ollama", behaviour=Behaviour(max_context_length=32768))
    long_prompt = "[[start]] " + "z" * 12_000  # 3003 tokens > the default 2048

    cut = chat(server, long_prompt)
    assert cut.status_code == 200
    assert cut.json()["prompt_eval_count"] == 2048
    assert not answer_text(server, cut).startswith(expected_echo(long_prompt))
    (record,) = server.log.truncated()
    assert (record.truncated, record.num_ctx, record.prompt_tokens) == (True, None, 3003)

    whole = chat(server, long_prompt, options={"num_ctx": 4096})
    assert whole.json()["prompt_eval_count"] == 3003
    assert answer_text(server, whole).startswith(expected_echo(long_prompt))
    assert server.log.generations()[-1].truncated is False


# -- error bodies, dialect by dialect -----------------------------------------------------

NOT_FOUND: dict[str, tuple[int, Callable[[Any], bool]]] = {
    "openai": (404, lambda b: b["error"]["code"] == "model_not_found"),
    "vllm": (404, lambda b: b["error"]["message"] == "The model `nope` does not exist."),
    "exo": (404, lambda b: b["error"]["type"] == "Not Found"),
    "lm_studio": (400, lambda b: b["error"]["code"] == "model_not_found"),
    "ollama": (404, lambda b: b == {"error": 'model "nope" not found, try pulling it first'}),
}


@pytest.mark.parametrize("dialect", sorted(NOT_FOUND))
def test_unknown_model_error_bodies(make_server: Factory, dialect: str) -> None:
    status, check = NOT_FOUND[dialect]
    response = chat(make_server(dialect), model="nope")
    assert response.status_code == status
    assert check(response.json())


def test_llamacpp_accepts_any_model_name(make_server: Factory) -> None:
    response = chat(make_server("llamacpp"), model="whatever")
    assert response.status_code == 200
    assert response.json()["model"] == "whatever"


CONTEXT: dict[str, Callable[[Any], bool]] = {
    "openai": lambda b: b["error"]["code"] == "context_length_exceeded",
    "llamacpp": lambda b: (
        b["error"]["type"] == "exceed_context_size_error"
        and (b["error"]["n_prompt_tokens"], b["error"]["n_ctx"]) == (125, 100)
    ),
    "vllm": lambda b: (
        "This model's maximum context length is 100 tokens. However, your request has 125 "
        "input tokens." in b["error"]["message"]
    ),
    "lm_studio": lambda b: (
        isinstance(b["error"], str) and "greater than the context length" in b["error"]
    ),
}


@pytest.mark.parametrize("dialect", sorted(CONTEXT))
def test_context_exceeded_error_bodies(make_server: Factory, dialect: str) -> None:
    server = make_server(dialect, context_length=100)
    response = chat(server, "w" * 500)  # 125 tokens
    assert response.status_code == 400
    assert CONTEXT[dialect](response.json())
    assert server.log.generations()[0].outcome == "context_exceeded"


def test_vllm_and_openai_count_max_tokens_against_the_window(make_server: Factory) -> None:
    for dialect in ("vllm", "openai"):
        server = make_server(dialect, context_length=100)
        assert chat(server, "w" * 200, max_tokens=40).status_code == 200  # 50 + 40
        assert chat(server, "w" * 200, max_tokens=60).status_code == 400  # 50 + 60
    assert "'max_tokens' or 'max_completion_tokens' is too large: 60." in (
        chat(make_server("vllm", context_length=100), "w" * 200, max_tokens=60).text
    )


def test_exo_has_no_context_check(make_server: Factory) -> None:
    assert chat(make_server("exo", context_length=100), "w" * 500).status_code == 200


SERVER_ERROR: dict[str, Callable[[Any], bool]] = {
    "openai": lambda b: b["error"]["type"] == "server_error",
    "llamacpp": lambda b: b["error"]["type"] == "server_error" and b["error"]["code"] == 500,
    "vllm": lambda b: b["error"]["type"] == "InternalServerError",
    "exo": lambda b: b["error"]["type"] == "Internal Server Error",
    "lm_studio": lambda b: isinstance(b["error"], str),
    "ollama": lambda b: isinstance(b["error"], str),
}


@pytest.mark.parametrize("dialect", DIALECTS)
def test_injected_500_and_overload_bodies(make_server: Factory, dialect: str) -> None:
    server = make_server(dialect, behaviour=Behaviour(error_rate=1.0))
    failed = chat(server)
    assert failed.status_code == 500
    assert SERVER_ERROR[dialect](failed.json())

    server.update(error_rate=0.0, overload=True, overload_status=503, retry_after=3)
    busy = chat(server)
    assert busy.status_code == 503
    assert busy.headers["retry-after"] == "3"
    assert "error" in busy.json()
    assert [r.outcome for r in server.log.generations()] == ["server_error", "overloaded"]


def test_openai_rate_limit_429(make_server: Factory) -> None:
    server = make_server("openai", behaviour=Behaviour(overload=True, overload_status=429))
    response = chat(server)
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "rate_limit_exceeded"


def test_error_rate_is_deterministic_for_a_seed(make_server: Factory) -> None:
    def statuses(seed: int) -> list[int]:
        server = make_server("openai", behaviour=Behaviour(error_rate=0.5, seed=seed))
        return [chat(server, f"p{i}").status_code for i in range(20)]

    first = statuses(seed=11)
    assert first == statuses(seed=11)
    assert set(first) == {200, 500}


@pytest.mark.parametrize("dialect", ["openai", "ollama"])
def test_garbage_is_200_with_malformed_json(make_server: Factory, dialect: str) -> None:
    response = chat(make_server(dialect, behaviour=Behaviour(garbage=True)))
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        response.json()


# -- hangs, deaths and restarts -----------------------------------------------------------


def test_hang_accepts_and_never_answers(make_server: Factory) -> None:
    server = make_server("openai", behaviour=Behaviour(hang=True))
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            server.url + "/v1/chat/completions",
            json={"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]},
            timeout=httpx.Timeout(5, read=0.3),
        )
    assert server.log.generations()[0].outcome == "hung"


def test_die_after_resets_connections_then_refuses_until_restart(make_server: Factory) -> None:
    server = make_server("ollama", behaviour=Behaviour(die_after=2))
    port = server.port
    assert [chat(server, f"q{i}").status_code for i in range(2)] == [200, 200]

    with pytest.raises(httpx.TransportError) as died:
        chat(server, "q2")
    assert not isinstance(died.value, httpx.TimeoutException)
    with pytest.raises(httpx.ConnectError):
        chat(server, "q3")
    assert not server.running

    server.update(die_after=None)
    server.restart()
    assert server.port == port
    assert chat(server, "q4").status_code == 200
    assert [r.outcome for r in server.log.generations()] == ["ok", "ok", "killed", "ok"]


def test_kill_cuts_a_request_in_progress(make_server: Factory) -> None:
    server = make_server("lm_studio", behaviour=Behaviour(hang=True))
    errors: list[BaseException] = []

    def call() -> None:
        try:
            chat(server)
        except httpx.HTTPError as exc:
            errors.append(exc)

    worker = threading.Thread(target=call)
    worker.start()
    _wait_for(lambda: len(server.log.generations()) == 1)
    server.kill()
    worker.join(timeout=5)

    assert len(errors) == 1
    assert isinstance(errors[0], httpx.TransportError)
    assert not isinstance(errors[0], httpx.TimeoutException)


def test_kill_resets_every_connection_even_those_accepted_in_its_last_moment(
    make_server: Factory,
) -> None:
    # Clients keep connecting while the server is killed. Each connection the server
    # accepted must be reset at once, never left open to hang its client.
    server = make_server("lm_studio")
    stop = threading.Event()
    clients: list[socket.socket] = []

    def connect() -> None:
        while not stop.is_set():
            client = socket.socket()
            client.settimeout(3)
            try:
                client.connect(("127.0.0.1", server.port))
            except OSError:  # the listener is gone
                client.close()
                return
            clients.append(client)

    connectors = [threading.Thread(target=connect) for _ in range(4)]
    for thread in connectors:
        thread.start()
    _wait_for(lambda: len(clients) >= 200)
    server.kill()
    stop.set()
    for thread in connectors:
        thread.join(timeout=5)

    # A client speaks first, as HTTP does: a connection the kernel never handed to
    # the server is refused then; only one the server accepted and kept would hang.
    waiting = selectors.DefaultSelector()
    for client in clients:
        with contextlib.suppress(OSError):  # refused already: an answer too
            client.sendall(b"GET /v1/models HTTP/1.1\r\nHost: lab\r\n\r\n")
        waiting.register(client, selectors.EVENT_READ)
    deadline = time.monotonic() + 3
    while waiting.get_map() and time.monotonic() < deadline:
        for key, _ in waiting.select(timeout=0.1):  # readable: reset or closed
            waiting.unregister(key.fileobj)
    hung = len(waiting.get_map())
    waiting.close()
    for client in clients:
        client.close()
    assert hung == 0, f"{hung} of {len(clients)} connections were left open by the kill"


# -- slots and queueing -------------------------------------------------------------------


@pytest.mark.parametrize("slots", [1, 2])
def test_requests_beyond_the_slots_queue_inside_the_server(
    make_server: Factory, slots: int
) -> None:
    server = make_server("llamacpp", behaviour=Behaviour(slots=slots, decode_tps=16 / 0.15))

    async def burst() -> list[int]:
        async with httpx.AsyncClient(timeout=10) as client:
            body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
            calls = [client.post(server.url + "/v1/chat/completions", json=body) for _ in range(5)]
            return [r.status_code for r in await asyncio.gather(*calls)]

    assert asyncio.run(burst()) == [200] * 5
    assert server.log.max_in_flight() == slots


def test_a_full_queue_is_refused_as_overloaded(make_server: Factory) -> None:
    server = make_server("ollama", behaviour=Behaviour(slots=1, max_queue=0, hang=True))
    worker = threading.Thread(target=lambda: _swallow(lambda: chat(server)))
    worker.start()
    _wait_for(lambda: len(server.log.generations()) == 1)

    server.update(hang=False)
    refused = chat(server)
    assert refused.status_code == 503
    assert refused.json() == {
        "error": "server busy, please try again.  maximum pending requests exceeded"
    }
    server.stop(grace=0)
    worker.join(timeout=5)


# -- labs and processes -------------------------------------------------------------------


def test_a_lab_serves_many_servers_on_one_thread_and_cleans_up() -> None:
    before = threading.active_count()
    with FakeLab() as lab:
        servers = [lab.add(d) for d in ("ollama", "lm_studio", "vllm")]
        servers.append(lab.add("openai", id="studio-mac"))
        for server in servers:
            assert chat(server, f"to {server.id}").status_code == 200
        assert len(lab.log.generations()) == 4
        assert lab.server("studio-mac").log.times_generated("to studio-mac") == 1
        assert threading.active_count() == before + 1
    assert threading.active_count() == before
    with pytest.raises(httpx.ConnectError):
        chat(servers[0])


def test_a_lab_spec_expands_counts_into_named_servers() -> None:
    spec = {
        "servers": [
            {"dialect": "ollama", "count": 2, "port": 20000, "behaviour": {"decode_tps": 9}},
            {"dialect": "exo", "id": "ring"},
        ]
    }
    entries = parse_spec(spec)
    assert [(e.get("id"), e.get("port")) for e in entries] == [
        ("ollama-01", 20000),
        ("ollama-02", 20001),
        ("ring", None),
    ]
    assert entries[0]["behaviour"].decode_tps == 9
    with pytest.raises(ValueError, match="unknown key"):
        parse_spec([{"dialect": "exo", "speed": 3}])


def test_behaviour_rejects_unknown_fields_and_bad_values() -> None:
    with pytest.raises(TypeError, match="Unknown behaviour field"):
        Behaviour().replace(slot=2)
    with pytest.raises(ValueError, match="error_rate must be between 0 and 1"):
        Behaviour(error_rate=2)
    with pytest.raises(ValueError, match="Unknown fake-server dialect 'gpt'"):
        FakeServer("gpt")


def test_cli_serves_in_another_process_until_sigterm() -> None:
    with served_apart("vllm", ["m1"], {"slots": 2}) as (process, info):
        assert info["dialect"] == "vllm" and info["models"] == ["m1"]
        body = {"model": "m1", "messages": [{"role": "user", "content": PROMPT}]}
        answer = httpx.post(info["url"] + "/v1/chat/completions", json=body).json()
        assert answer["choices"][0]["message"]["content"].startswith(expected_echo(PROMPT))
        log = httpx.get(info["url"] + "/_fake/log").json()["records"]
        assert [r["outcome"] for r in log] == ["ok"]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0


def _wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def _swallow(call: Callable[[], object]) -> None:
    with contextlib.suppress(httpx.HTTPError):
        call()


def test_a_lab_process_kills_on_command_and_still_gives_the_dead_servers_log(
    tmp_path: Path,
) -> None:
    spec = tmp_path / "lab.json"
    spec.write_text(json.dumps({"servers": [{"dialect": "openai", "id": s} for s in "ab"]}))
    command = [sys.executable, "-m", "dllm_notebook.testing", "lab", "--spec", str(spec)]
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE}
    with subprocess.Popen(command, text=True, **pipes) as lab:  # type: ignore[call-overload]
        try:
            lines = [json.loads(lab.stdout.readline()) for _ in "ab"]
            ports = {line["id"]: line["port"] for line in lines}

            def ask(line: str) -> dict[str, Any]:
                lab.stdin.write(line + "\n")
                lab.stdin.flush()
                answer: dict[str, Any] = json.loads(lab.stdout.readline())
                return answer

            body = {"model": "fake-model", "messages": [{"role": "user", "content": "hi [[k]]"}]}
            url = f"http://127.0.0.1:{ports['a']}/v1/chat/completions"
            assert httpx.post(url, json=body).status_code == 200
            assert ask("kill a") == {"killed": "a"}
            with pytest.raises(httpx.ConnectError):
                httpx.post(url, json=body)
            records = ask("log")["records"]
            assert [(r["server"], r["outcome"]) for r in records if r["digest"]] == [("a", "ok")]
            assert "unknown command" in ask("explode")["error"]
            assert "No fake server 'zz'" in ask("kill zz")["error"]
        finally:
            lab.terminate()
            lab.wait(10)
