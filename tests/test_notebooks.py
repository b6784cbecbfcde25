"""Every notebook in notebooks/ runs top to bottom in a real Jupyter kernel, against a lab of
fake servers on loopback, and shows what it promises: tables, exported files, plots and a
background job's result. A new notebook is picked up by the glob and run too."""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from dllm_notebook.testing import Behaviour, FakeLab

from .conftest import ROOT, SAMPLE_PAPERS

pytestmark = pytest.mark.notebook

nbclient = pytest.importorskip("nbclient", reason="needs nbclient (dev group)")
nbformat = pytest.importorskip("nbformat", reason="needs nbformat (dev group)")
pytest.importorskip("ipykernel", reason="needs ipykernel (dev group)")

NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
WORKER_IDS = ("imac-office", "mac-studio", "mac-mini")
PAPER_NAMES = sorted(p.name for p in SAMPLE_PAPERS.glob("*.pdf"))
CELL_TIMEOUT = 180


# -- running notebooks ---------------------------------------------------------------
def start_lab(lab: FakeLab, **behaviour: Any) -> list[dict[str, Any]]:
    """Three workers of three dialects, slow enough that work is really spread."""
    fast = Behaviour(base_latency=0.1, slots=2)
    servers = [
        lab.add("lm_studio", id="imac-office", behaviour=fast),
        lab.add("ollama", id="mac-studio", models=["llama3.1:8b"], behaviour=fast),
        lab.add("openai", id="mac-mini", behaviour=fast.replace(**behaviour)),
    ]
    return [{"id": s.id, "host": "127.0.0.1", "port": s.port, "type": s.dialect} for s in servers]


@pytest.fixture(autouse=True)
def _this_venvs_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Kernel "python3" is this venv's Python: hide any user-wide kernelspec of that name."""
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "jupyter-data"))


@pytest.fixture(scope="module")
def lab_workers() -> Iterator[list[dict[str, Any]]]:
    with FakeLab() as lab:
        yield start_lab(lab)


def use_lab(
    workers: list[dict[str, Any]], folder: Path, monkeypatch: pytest.MonkeyPatch, **settings: Any
) -> Path:
    """Point ``Cluster.auto()`` (in kernels started from now on) at ``workers``; returns the
    notebooks' export folder."""
    config = folder / "workers.json"
    config.write_text(json.dumps({"workers": workers, "health_check_interval": 2, **settings}))
    monkeypatch.setenv("DLLM_CONFIG", str(config))
    out = folder / "notebook-output"
    monkeypatch.setenv("DLLM_NOTEBOOK_OUT", str(out))
    return out


def execute(path: Path) -> Any:
    """Run the notebook in a fresh kernel of this venv's Python, from notebooks/ (the
    kernel inherits this process's environment: DLLM_CONFIG, DLLM_STORE ...)."""
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    )
    client.execute()
    return notebook


# -- reading outputs -----------------------------------------------------------------
def cell(notebook: Any, tag: str) -> Any:
    found = [c for c in notebook.cells if tag in c.get("metadata", {}).get("tags", [])]
    assert len(found) == 1, f"expected one cell tagged {tag!r}, found {len(found)}"
    return found[0]


def shown(code_cell: Any) -> str:
    """Everything a cell printed or displayed as text or HTML."""
    parts: list[str] = []
    for output in code_cell.get("outputs", []):
        if output["output_type"] == "stream":
            parts.append(output["text"])
        for mime in ("text/plain", "text/html"):
            value = output.get("data", {}).get(mime)
            if value:
                parts.append(value if isinstance(value, str) else "".join(value))
    return "\n".join(parts)


def printed(code_cell: Any) -> str:
    return "".join(o["text"] for o in code_cell.get("outputs", []) if o.get("name") == "stdout")


def html_rows(code_cell: Any) -> int:
    """Body rows of the (last) HTML table a cell displayed, as pandas renders a DataFrame."""
    tables = [
        o["data"]["text/html"]
        for o in code_cell.get("outputs", [])
        if "text/html" in o.get("data", {}) and "<tbody>" in o["data"]["text/html"]
    ]
    assert tables, "the cell displayed no table"
    body = tables[-1].split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return len(re.findall(r"<tr[ >]", body))


def images(code_cell: Any) -> int:
    return sum("image/png" in o.get("data", {}) for o in code_cell.get("outputs", []))


# -- what each notebook must show -----------------------------------------------------
def check_quickstart(notebook: Any, out: Path) -> None:
    panel = shown(cell(notebook, "panel"))
    assert all(worker in panel for worker in WORKER_IDS), panel[:500]
    check = cell(notebook, "check")
    assert html_rows(check) == 3 and all(w in shown(check) for w in WORKER_IDS)
    ask = printed(cell(notebook, "ask"))
    assert ask.startswith("ECHO "), ask  # the fake servers' answer
    assert re.search(r"-- answered by (imac-office|mac-studio|mac-mini) \(", ask), ask
    assert printed(cell(notebook, "map")).count("\n  -> [") == 3
    assert html_rows(cell(notebook, "metrics")) == 4  # three workers and the total


def check_review(notebook: Any, out: Path) -> None:
    analyze = cell(notebook, "analyze")
    assert "analyzed 5 papers x 5 prompts: 25/25 tasks answered" in printed(analyze)
    assert html_rows(analyze) == 5
    assert html_rows(cell(notebook, "long")) == 25

    assert "read back from Parquet unchanged: True" in printed(cell(notebook, "export"))
    assert "same dtypes: True" in printed(cell(notebook, "export"))
    table = pd.read_parquet(out / "review.parquet")
    assert sorted(table.index) == PAPER_NAMES
    assert list(table.columns)[:2] == ["research_question", "methodology"]
    assert table.dllm.answers().notna().all().all()
    assert len(pd.read_csv(out / "review.csv")) == 5
    assert len(pd.read_parquet(out / "review_long.parquet")) == 25
    assert json.loads((out / "report.json").read_text())["successful"] == 25

    result = cell(notebook, "result")
    assert html_rows(result) == 5
    assert all(c in shown(result) for c in ("summary", "key_points", "central_argument"))
    assert "same table as the background job's: True" in printed(cell(notebook, "again"))

    assert images(cell(notebook, "plot-time")) == 1
    assert images(cell(notebook, "plot-tokens")) == 1
    failures = cell(notebook, "plot-failures")
    assert "No failures: all 25 questions got an answer." in printed(failures)
    assert images(failures) == 0


def check_custom_prompts(notebook: Any, out: Path) -> None:
    preset = printed(cell(notebook, "write-preset"))
    assert "study_system" in preset and "one_line_summary" in preset
    rendered = printed(cell(notebook, "render"))
    first = PAPER_NAMES[0]
    assert f"File: {first}\n" in rendered
    assert "Title: A Semi-Empirical Model of Capacity Fade" in rendered  # {title} filled in
    assert "{" not in rendered
    broken = printed(cell(notebook, "broken"))
    assert "{titel}" in broken and "title" in broken.replace("{titel}", "")
    compare = cell(notebook, "compare")
    assert html_rows(compare) == 3
    assert all(c in shown(compare) for c in ("field_notes", "study_system", "key_findings"))
    one_paper = printed(cell(notebook, "one-paper"))
    assert one_paper.startswith(first) and one_paper.count("\n  ECHO ") == 4
    assert "field_notes / study_system:" in one_paper


def check_typed_review(notebook: Any, out: Path) -> None:
    dtypes = printed(cell(notebook, "analyze"))
    assert re.search(r"design\s+category", dtypes) and re.search(r"sample_size\s+Int64", dtypes)
    assert re.search(r"effect\s+Float64", dtypes) and re.search(r"replicated\s+boolean", dtypes)
    assert html_rows(cell(notebook, "analyze")) == 5
    counts = shown(cell(notebook, "counts"))
    assert "design" in counts and "count" in counts
    assert images(cell(notebook, "histogram")) == 1
    assert "20 of 20 answers have verified evidence" in printed(cell(notebook, "verified"))
    evidence = cell(notebook, "evidence")
    assert html_rows(evidence) == 10 and "exact" in shown(evidence)
    assert "unverified" not in shown(evidence)


def check_synthesis(notebook: Any, out: Path) -> None:
    assert html_rows(cell(notebook, "analyze")) == 5
    synthesis = shown(cell(notebook, "synthesize"))
    assert "Which methods do these papers use, and what do they find?" in synthesis
    assert "ECHO " in synthesis  # the fake servers' answer, shown
    citations = cell(notebook, "citations")
    assert printed(citations).startswith("<Synthesis: ")
    assert html_rows(citations) == 5  # the coverage: one row per paper
    assert "wrote review.html" in printed(cell(notebook, "report"))
    html = (out / "review.html").read_text(encoding="utf-8")
    assert '<section id="synthesis">' in html and html.count('<tr id="row-') == 5
    assert (out / "review.md").read_text(encoding="utf-8").startswith("# Review report")
    assert json.loads((out / "synthesis.json").read_text())["question"].startswith("Which")


CHECKS: dict[str, Callable[[Any, Path], None]] = {
    "01_quickstart": check_quickstart,
    "02_literature_review": check_review,
    "03_custom_prompts": check_custom_prompts,
    "04_typed_review": check_typed_review,
    "05_synthesis": check_synthesis,
}


# -- tests ----------------------------------------------------------------------------
def test_there_are_notebooks() -> None:
    assert {p.stem for p in NOTEBOOKS} >= set(CHECKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_committed_without_outputs(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    for code_cell in notebook.cells:
        if code_cell.cell_type == "code":
            assert code_cell.outputs == [], f"{path.name}: clear the outputs before committing"
            assert code_cell.execution_count is None, f"{path.name}: clear the outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_on_a_lab(
    path: Path,
    lab_workers: list[dict[str, Any]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = use_lab(lab_workers, tmp_path, monkeypatch)
    notebook = execute(path)
    for code_cell in notebook.cells:
        for output in code_cell.get("outputs", []):
            if output["output_type"] == "stream" and output["name"] == "stderr":
                assert "Warning" not in output["text"], output["text"]
    check = CHECKS.get(path.stem)
    if check is not None:
        check(notebook, out)


def test_review_notebook_plots_failures_by_cause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeLab() as lab:
        workers = start_lab(lab, error_rate=1.0)  # mac-mini answers every question with a 500
        use_lab(workers, tmp_path, monkeypatch, max_retries=0)
        notebook = execute(NOTEBOOK_DIR / "02_literature_review.ipynb")
    failures = cell(notebook, "plot-failures")
    assert images(failures) == 1
    assert "server error (HTTP 500)" in shown(failures)
    assert "mac-mini" in shown(failures)
    assert "No failures" not in printed(failures)


def local_servers() -> set[int]:
    """PIDs of every running llama.cpp server that Cluster.local() started."""
    found = set()
    for proc in Path("/proc").iterdir():
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if proc.name.isdigit() and any(a.endswith(b"_local/launch.py") for a in args):
            found.add(int(proc.name))
    return found


@pytest.mark.integration
@pytest.mark.skipif(
    importlib.util.find_spec("xllamacpp") is None,
    reason="needs the local extra: pip install 'dllm-notebook[local]'",
)
def test_quickstart_on_a_local_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no DLLM_CONFIG the quickstart starts a real llama.cpp worker and uses it."""
    monkeypatch.delenv("DLLM_CONFIG", raising=False)
    before = local_servers()
    notebook = execute(NOTEBOOK_DIR / "01_quickstart.ipynb")
    ask = printed(cell(notebook, "ask"))
    answer, by = ask.rsplit("-- answered by ", 1)
    assert answer.strip(), "the local model gave an empty answer"
    assert by.startswith("local")
    assert html_rows(cell(notebook, "check")) == 1
    assert printed(cell(notebook, "map")).count("\n  -> [local") == 3
    assert not local_servers() - before, "the notebook's llama.cpp server outlived close()"
