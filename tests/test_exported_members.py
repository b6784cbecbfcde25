"""The public namespace is exactly __all__, importing it stays light, and `.dllm` is there for
every DataFrame anyway."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest

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
        "print(','.join(m for m in ('pymupdf', 'fitz', 'xllamacpp', 'ipywidgets', 'aiohttp', "
        "'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_import_loads_neither_pandas_nor_widgets() -> None:
    loaded = run(
        "import sys, dllm_notebook; "
        "print(sorted(m for m in ('pandas', 'pyarrow', 'ipywidgets', 'fitz', 'numpy') "
        "if m in sys.modules))"
    )
    assert loaded == "[]"


@pytest.mark.parametrize(
    "imports",
    ["import dllm_notebook; import pandas as pd", "import pandas as pd; import dllm_notebook"],
)
def test_dllm_accessor_works_on_a_frame_whichever_was_imported_first(imports: str) -> None:
    code = (
        f"{imports}\n"
        "wide = pd.DataFrame({'q': ['an answer']}, index=pd.Index(['a.pdf'], name='paper'))\n"
        "print(list(wide.dllm.long()['answer']))"
    )
    assert run(code) == "['an answer']"


def test_dllm_accessor_class_is_exported_lazily() -> None:
    assert run("import dllm_notebook as d; print(d.DllmAccessor.__name__)") == "DllmAccessor"
