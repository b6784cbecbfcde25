"""The window a server names when it refuses a prompt is read, and learned for the worker."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pandas as pd
import pytest

from dllm_notebook import Cluster, ContextLengthExceeded
from dllm_notebook._config import WorkerConfig
from dllm_notebook._running.backends import make_backend
from dllm_notebook._types import ChatRequest
from dllm_notebook.testing import CLIENT_TYPES, Behaviour, FakeLab, FakeServer

from .conftest import FAST

WINDOW = 2048


def refusal(server: FakeServer, dialect: str, prompt: str, **options: object) -> BaseException:
    """Send one prompt with the backend the cluster would use; return what it raised."""
    config = WorkerConfig(id="w", host="127.0.0.1", port=server.port, type=CLIENT_TYPES[dialect])

    async def send() -> BaseException:
        async with httpx.AsyncClient(base_url=config.base_url, timeout=10) as client:
            backend = make_backend(config, client)
            request = ChatRequest(prompt=prompt, options=options)
            try:
                await backend.chat(request, model="fake-model", context_length=None)
            except Exception as exc:
                return exc
        raise AssertionError("the server answered a prompt larger than its window")

    return asyncio.run(send())


@pytest.mark.parametrize("dialect", ["llamacpp", "vllm", "openai", "lm_studio"])
def test_the_window_in_each_servers_refusal_is_read(lab: FakeLab, dialect: str) -> None:
    server = lab.add(dialect, context_length=WINDOW)
    error = refusal(server, dialect, "word " * 3000)  # about 3,750 tokens
    assert isinstance(error, ContextLengthExceeded), error
    assert error.context_length == WINDOW
    assert [r.outcome for r in server.log.generations()] == ["context_exceeded"]


def test_vllm_refusing_the_answers_room_names_the_window(lab: FakeLab) -> None:
    # The prompt fits but prompt + max_tokens does not: vLLM's second wording.
    server = lab.add("vllm", context_length=WINDOW)
    error = refusal(server, "vllm", "word " * 1200, max_tokens=1000)  # 1,500 + 1,000 tokens
    assert isinstance(error, ContextLengthExceeded), error
    assert "'max_tokens' or 'max_completion_tokens' is too large" in str(error)
    assert error.context_length == WINDOW


def spec(server: FakeServer, dialect: str, wid: str) -> dict[str, object]:
    return {"id": wid, "host": "127.0.0.1", "port": server.port, "type": CLIENT_TYPES[dialect]}


def test_a_worker_configured_too_large_learns_the_window_from_one_refusal(lab: FakeLab) -> None:
    # The 10 MB case of issue 17: the tool believes 32,768 tokens, the server runs 4,096.
    server = lab.add("openai", context_length=4096)
    worker = spec(server, "openai", "narrow") | {"context_length": 32768}
    long_prompt = "word " * 8000  # 10,000 tokens: fits what the tool believed, not the server
    with Cluster([worker], **FAST) as c:
        assert c.check().loc["narrow", "context_length"] == 32768
        (refused,) = c.map([long_prompt])
        frame = c.check()  # a health check does not undo what was learned
        (again,) = c.map([long_prompt + "again"])
        (short,) = c.map(["A short question."])

    assert not refused.ok and refused.error_type == "ContextLengthExceeded"
    assert frame.loc["narrow", "context_length"] == 4096
    assert bool(frame.loc["narrow", "context_learned"])
    assert frame.loc["narrow", "healthy"]
    # Known too small now: not sent again; the short prompt still goes there.
    assert not again.ok and "largest context window in the cluster is 4096" in (again.error or "")
    assert short.ok and short.worker == "narrow"
    assert [r.outcome for r in server.log.generations()] == ["context_exceeded", "ok"]


def test_a_window_the_probe_implied_is_corrected_and_the_batch_moves_on(lab: FakeLab) -> None:
    # LM Studio lists a model it has not loaded with its trained window (32,768); loaded on
    # demand it runs with 4,096 and refuses in its own words ("n_ctx: 4096").
    jit = Behaviour(loaded=(), max_context_length=32768, context_length=4096)
    studio = lab.add("lm_studio", behaviour=jit)
    large = lab.add("vllm", context_length=16384)
    prompts = ["word " * 8000 + f"[[p{i}]]" for i in range(3)]  # 10,000 tokens each
    # One slot each: the first wave sends one prompt to each worker.
    one_slot = {"max_concurrent_requests": 1}
    workers = [
        spec(studio, "lm_studio", "studio") | one_slot,
        spec(large, "vllm", "large") | one_slot,
    ]
    with Cluster(workers, **FAST) as c:
        assert c.check().loc["studio", "context_length"] == 32768
        answers = c.map(prompts)
        frame = c.check()

    assert all(a.ok and a.worker == "large" for a in answers)
    assert frame.loc["studio", "context_length"] == 4096
    assert bool(frame.loc["studio", "context_learned"])
    assert len(studio.log.generations()) == 1  # one refusal, then never again


def test_the_issues_long_text_case_heals_and_check_shows_the_learned_window(
    lab: FakeLab, tmp_path: Path
) -> None:
    # Issue 17, smaller: an openai worker whose window the tool does not know (it assumes
    # 4,096; the server runs 2,048) beside an LM Studio worker that reports its 2,048.
    text = " ".join(f"Sentence {i} about soil moisture and drought." for i in range(1500))
    (tmp_path / "long.txt").write_text(text, encoding="utf-8")
    hidden = lab.add("openai", context_length=2048)
    studio = lab.add("lm_studio", context_length=2048)
    workers = [spec(hidden, "openai", "openai"), spec(studio, "lm_studio", "studio")]
    prompts = {"gist": "Gist: {content}", "method": "Method: {content}"}
    with Cluster(workers, store=tmp_path / "store.sqlite", **FAST) as c:
        assert pd.isna(c.check().loc["openai", "context_length"])  # unknown to the tool
        long = c.analyze(tmp_path, prompts=prompts, long=True, progress=False, max_tokens=64)
        frame = c.check()

    assert list(long["status"]) == ["ok", "ok"]
    assert frame.loc["openai", "context_length"] == 2048
    assert bool(frame.loc["openai", "context_learned"])
    assert not frame.loc["studio", "context_learned"]
    answered = [r for r in lab.log.records() if r.is_generation and r.outcome == "ok"]
    assert all((r.prompt_tokens or 0) <= 2048 for r in answered)
