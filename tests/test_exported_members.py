"""The public namespace is exactly __all__, and importing it stays light."""

from __future__ import annotations

import inspect
import subprocess
import sys

import dllm_notebook


def test_public_names_match_all() -> None:
    public = {
        name
        for name in dir(dllm_notebook)
        if not name.startswith("_") and not inspect.ismodule(getattr(dllm_notebook, name))
    }
    assert public - {"annotations"} == set(dllm_notebook.__all__) - {"__version__"}
    assert dllm_notebook.__all__ == sorted(dllm_notebook.__all__)


def test_import_does_not_load_optional_heavy_packages() -> None:
    code = (
        "import sys, dllm_notebook; "
        "print(','.join(m for m in ('pymupdf', 'fitz', 'llama_cpp', 'ipywidgets', 'aiohttp', "
        "'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
