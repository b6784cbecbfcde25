"""The servers' prefix cache: emulated per slot, reported in each dialect's own field, and
read by each backend into ``Completion.cached_tokens``.

Real HTTP servers on loopback (dllm_notebook.testing) with ``prefix_cache`` on; the paper is
the text of a real PDF from the shared corpus, the prompts the research preset's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest

from dllm_notebook._config import WorkerConfig
from dllm_notebook._prompts.presets import load_preset
from dllm_notebook._reading.pdf import read_pdf
from dllm_notebook._running.backends import make_backend
from dllm_notebook._types import ChatRequest, Completion
from dllm_notebook.testing import CLIENT_TYPES, Behaviour, FakeLab, FakeServer

# Each dialect's cache report: the exact count, or only a shorter prefill (LM Studio), or
# nothing at all (exo).
COUNTED = ["openai", "llamacpp", "vllm", "ollama"]
PREFILL_TPS = 20000.0  # 6,000 characters (1,500 tokens) take 75 ms to read


def cached(**changes: object) -> Behaviour:
    """A server that keeps a prefix cache per slot and reads 20,000 prompt tokens a second."""
    settings: dict[str, object] = {
        "prefix_cache": True,
        "prefill_tps": PREFILL_TPS,
        "context_length": 8192,
    }
    return Behaviour.from_dict(settings | changes)


@pytest.fixture
def paper(corpus: Path) -> dict[str, str]:
    text = read_pdf(corpus / "acl2020-s2orc.pdf").text[:6000]
    return {"content": text, "title": "S2ORC", "filename": "acl2020-s2orc.pdf"}


def research_requests(paper: dict[str, str]) -> list[ChatRequest]:
    preset = load_preset("research")
    return [
        ChatRequest(
            p.render(paper),
            preset.system,
            {"max_tokens": 8},
            prompt_tokens_estimate=len(p.render(paper)) // 4 + 20,
        )
        for p in preset.prompts
    ]


def records_prompt(server: FakeServer, completion: Completion) -> int:
    """The prompt tokens the server counted for the request that got ``completion``."""
    short = completion.text.split()[1]
    (record,) = [r for r in server.log.generations() if (r.digest or "").startswith(short)]
    return int(record.prompt_tokens or 0)


def send_in_turn(
    server: FakeServer, dialect: str, requests: Sequence[ChatRequest]
) -> list[Completion]:
    """Send the requests one after another with the backend the cluster would use."""
    config = WorkerConfig(id="w", host="127.0.0.1", port=server.port, type=CLIENT_TYPES[dialect])

    async def send() -> list[Completion]:
        async with httpx.AsyncClient(base_url=config.base_url, timeout=10) as client:
            backend = make_backend(config, client)
            return [
                await backend.chat(r, model="fake-model", context_length=None) for r in requests
            ]

    return asyncio.run(send())


@pytest.mark.parametrize("dialect", COUNTED)
def test_a_papers_second_prompt_reports_the_paper_as_cached(
    lab: FakeLab, dialect: str, paper: dict[str, str]
) -> None:
    server = lab.add(dialect, behaviour=cached(slots=2))
    first, second, third = send_in_turn(server, dialect, research_requests(paper)[:3])
    assert first.cached_tokens == 0
    paper_tokens = len(paper["content"]) // 4
    for later in (second, third):  # the system message, the title and the paper
        assert later.cached_tokens is not None and later.cached_tokens >= paper_tokens
        assert later.cached_tokens < records_prompt(server, later)
    if dialect in ("llamacpp", "ollama"):  # the servers that report their prefill time
        assert first.prefill_seconds is not None and second.prefill_seconds is not None
        assert second.prefill_seconds < first.prefill_seconds / 10
    records = server.log.generations()
    if dialect != "ollama":
        assert [r.cached_tokens for r in records] == [0, second.cached_tokens, third.cached_tokens]
        assert second.prompt_tokens == records[1].prompt_tokens
    else:  # Ollama counts only what it read: the cache is judged against the estimate
        assert second.cached_tokens == pytest.approx(records[1].cached_tokens, rel=0.05)
        assert second.prompt_tokens is None
        assert [c.read_tokens for c in (first, second, third)] == [
            r.prompt_tokens - r.cached_tokens for r in records
        ]


def test_lm_studio_shows_the_cache_only_as_a_shorter_time_to_first_token(
    lab: FakeLab, paper: dict[str, str]
) -> None:
    server = lab.add("lm_studio", behaviour=cached())
    first, second = send_in_turn(server, "lm_studio", research_requests(paper)[:2])
    assert first.cached_tokens is None and second.cached_tokens is None
    assert first.prefill_seconds is not None and second.prefill_seconds is not None
    assert second.prefill_seconds < first.prefill_seconds / 10
    assert server.log.generations()[1].cached_tokens > 1000


@pytest.mark.parametrize("dialect", ["llamacpp", "ollama"])
def test_without_a_prefix_cache_every_prompt_reads_the_whole_paper(
    lab: FakeLab, dialect: str, paper: dict[str, str]
) -> None:
    server = lab.add(dialect, behaviour=cached(prefix_cache=False))
    first, second = send_in_turn(server, dialect, research_requests(paper)[:2])
    assert first.cached_tokens in (0, None) and second.cached_tokens in (0, None)
    assert second.prefill_seconds == pytest.approx(first.prefill_seconds, rel=0.05)


def test_a_request_takes_the_free_slot_that_read_its_paper(
    lab: FakeLab, paper: dict[str, str], corpus: Path
) -> None:
    """Two papers on two slots, interleaved: each prompt finds its own paper's slot."""
    other = {**paper, "content": read_pdf(corpus / "acl2020-s2orc.pdf").text[6000:12000]}
    a, b = research_requests(paper), research_requests(other)
    server = lab.add("llamacpp", behaviour=cached(slots=2))
    done = send_in_turn(server, "llamacpp", [a[0], b[0], a[1], b[1], a[2]])
    reused = [c.cached_tokens or 0 for c in done]
    assert reused[0] == 0 and reused[1] < 50  # b shares only the system message with a
    assert all(n > 1000 for n in reused[2:]), reused
    # a third paper evicts the least recently used slot (b's), not the one a just used
    third = {**paper, "content": "x" * 4000}
    done = send_in_turn(server, "llamacpp", [research_requests(third)[0], a[3], b[2]])
    assert [(c.cached_tokens or 0) > 1000 for c in done] == [False, True, False]


@pytest.mark.parametrize("mode", ["invalid_json", "out_of_schema"])
def test_a_retry_on_the_only_worker_is_never_left_waiting_for_its_chain(
    lab: FakeLab, mode: str
) -> None:
    # PrefixAffinity sends a retry away from the worker that read its paper; with one
    # worker it must come back to it. This once stalled a local run at 22 of 25 cells.
    from dllm_notebook import Cluster, Paper, PrefixAffinity

    server = lab.add("llamacpp", behaviour=cached(schema_answers=mode, slots=2))
    text = "Words of text. " * 200
    papers = [Paper.from_text(f"p{i}.txt", f"Paper {i}. {text}") for i in (1, 2)]
    prompts = {
        "n": {"template": "{content}\nHow many participants?", "type": "integer"},
        "yes": {"template": "{content}\nIs the code public?", "type": "boolean"},
    }
    url = server.url.replace("http://", "llamacpp://")
    with Cluster([url], scheduler=PrefixAffinity(), store=None, request_timeout=30) as cluster:
        long = cluster.analyze(papers, prompts=prompts, long=True, progress=False)
    assert list(long["status"]) == ["invalid"] * 4  # every cell settled, none pending
    generations = server.log.generations()
    assert len(generations) == 8  # each asked twice: the answer, and the one retry


def test_answers_from_a_silent_cache_do_not_cut_the_workers_limit(lab: FakeLab) -> None:
    # exo says nothing of its cache or its timings: a paper's follow-up comes back in a
    # tenth of the time of its first reading. Taken as the worker's best case, it made
    # every first reading look queued, and a 6-slot Studio on exo ran with 2.
    from dllm_notebook import Cluster, Paper, PrefixAffinity

    server = lab.add(
        "exo", behaviour=cached(slots=4, prefill_tps=5000.0, decode_tps=400.0, answer_tokens=16)
    )
    text = "Words of text. " * 800  # about 3,000 tokens: 0.6 s to read, 0.04 s to answer
    papers = [Paper.from_text(f"p{i}.txt", f"Paper {i}. {text}") for i in range(8)]
    prompts = {f"q{i}": f"{{content}}\nQuestion {i}?" for i in range(5)}
    worker = {
        "host": "127.0.0.1",
        "port": server.port,
        "type": CLIENT_TYPES["exo"],
        "max_concurrent_requests": 4,
        "context_length": 8192,  # exo does not say its window
    }
    with Cluster([worker], scheduler=PrefixAffinity(), store=None) as cluster:
        long = cluster.analyze(papers, prompts=prompts, long=True, progress=False)
        limit = cluster.workers[0].limit
    assert list(long["status"]) == ["ok"] * 40
    cached_answers = [r for r in server.log.generations() if (r.cached_tokens or 0) > 1000]
    assert len(cached_answers) >= 20  # the follow-ups did find their paper
    assert limit == 4
