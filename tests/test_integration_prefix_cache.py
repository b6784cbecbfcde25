"""Integration: llama.cpp's own server (the xllamacpp local worker) reuses a paper it read.

A paper's second prompt in the built-in layout, sent to the same server right after the
first, reports cached tokens (``timings.cache_n``) and reads its prompt in under a third of
the first's time. Needs the local worker on llama.cpp's server (xllamacpp); skipped
without it (llama-cpp-python's server reports no cache).
"""

from __future__ import annotations

import asyncio
import importlib.util

import httpx
import pytest

from dllm_notebook import Cluster, load_preset
from dllm_notebook._reading.papers import load_papers
from dllm_notebook._running.backends import make_backend
from dllm_notebook._types import ChatRequest, Completion

from .conftest import SAMPLE_PAPERS

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        importlib.util.find_spec("xllamacpp") is None,
        reason="needs the local worker on llama.cpp's server: pip install 'dllm-notebook[local]'",
    ),
]


def test_a_papers_second_prompt_reads_the_paper_from_the_cache() -> None:
    paper = load_papers(SAMPLE_PAPERS)[0]
    preset = load_preset("research")
    fields = {"content": paper.text[:6000], "title": paper.title, "filename": paper.name}
    requests = [
        ChatRequest(p.render(fields), preset.system, {"max_tokens": 8, "temperature": 0.0})
        for p in preset.prompts[:2]
    ]
    with Cluster.local(n_ctx=4096, request_timeout=240) as local:
        worker = local.workers[0]

        async def send() -> list[Completion]:
            config = worker.config
            async with httpx.AsyncClient(base_url=config.base_url, timeout=240) as client:
                backend = make_backend(config, client)
                return [
                    await backend.chat(r, model=worker.model or "", context_length=None)
                    for r in requests
                ]

        first, second = asyncio.run(send())
    assert not first.cached_tokens
    assert second.cached_tokens is not None and second.cached_tokens > 500
    assert first.prefill_seconds is not None and second.prefill_seconds is not None
    assert second.prefill_seconds < first.prefill_seconds / 3
