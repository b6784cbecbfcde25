"""Shared fixtures: a lab of fake LLM servers on loopback, and clusters over them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dllm_notebook.testing import FakeLab

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus"
SAMPLE_PAPERS = ROOT / "sample_papers"

# Short waits so fault tests finish quickly; behaviour is the same as with the defaults.
FAST = {
    "health_check_interval": 1.0,
    "request_timeout": 5.0,
    "probe_timeout": 1.0,
    "no_worker_timeout": 3.0,
}


@pytest.fixture
def lab() -> Iterator[FakeLab]:
    with FakeLab() as lab:
        yield lab


@pytest.fixture
def corpus() -> Path:
    if not CORPUS.is_dir():
        pytest.skip(f"the shared corpus is not at {CORPUS}")
    return CORPUS
