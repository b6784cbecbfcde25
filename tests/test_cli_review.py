"""``dllm report``: the review report of a results file, as a person runs it in a shell."""

from __future__ import annotations

import json
from pathlib import Path

from dllm_notebook.testing import FakeLab

from .cli_helpers import dllm, worker, write_config
from .conftest import SAMPLE_PAPERS


def test_report_of_an_analyzed_folder_with_a_synthesis(lab: FakeLab, tmp_path: Path) -> None:
    server = lab.add("ollama", models=["llama3.2"], context_length=16384)
    config = write_config(tmp_path / "workers.json", [worker(server, "mac", "ollama")])
    results = tmp_path / "results.parquet"
    analyzed = dllm(
        "analyze", str(SAMPLE_PAPERS), "-p", "Which method? {content}", "-o", str(results),
        "-c", str(config), cwd=tmp_path,
    )  # fmt: skip
    assert analyzed.returncode == 0, analyzed.stderr
    synthesis = tmp_path / "synthesis.json"
    synthesis.write_text(
        json.dumps(
            {
                "question": "What do they share?",
                "text": "Both measure things [battery-degradation.pdf].",
                "citations": [
                    {
                        "sentence": "Both measure things [battery-degradation.pdf].",
                        "key": "battery-degradation.pdf",
                        "title": "Battery",
                        "status": "ok",
                    }
                ],
                "titles": {"battery-degradation.pdf": "Battery"},
            }
        )
    )
    out = tmp_path / "review.html"
    done = dllm("report", str(results), "-o", str(out), "--synthesis", str(synthesis), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"Wrote {out} (5 papers)."
    html = out.read_text(encoding="utf-8")
    assert "Workers</dt><dd>mac" in html  # provenance found again through the store
    assert 'href="#row-battery-degradation.2e.pdf"' in html
    assert html.count('<tr id="row-') == 5

    markdown = dllm("report", str(results), "-o", str(tmp_path / "review.md"), cwd=tmp_path)
    assert markdown.returncode == 0, markdown.stderr
    assert (tmp_path / "review.md").read_text(encoding="utf-8").startswith("# Review report")


def test_report_refuses_what_it_cannot_read_and_says_what_to_give(tmp_path: Path) -> None:
    csv = tmp_path / "results.csv"
    csv.write_text("paper,q\na.pdf,x\n")
    wrong = dllm("report", str(csv), cwd=tmp_path)
    assert wrong.returncode == 2
    assert "give the .parquet file `dllm analyze -o results.parquet` wrote" in wrong.stderr

    import pandas as pd

    results = tmp_path / "results.parquet"
    pd.DataFrame({"q": ["x"]}, index=pd.Index(["a.pdf"], name="paper")).to_parquet(results)
    bad = tmp_path / "synthesis.json"
    bad.write_text("not json")
    refused = dllm("report", str(results), "--synthesis", str(bad), cwd=tmp_path)
    assert refused.returncode == 1
    assert refused.stderr.startswith(f"error: {bad} is not a synthesis file (not JSON")
    assert "dllm synthesize" in refused.stderr


def test_synthesize_then_report_with_the_synthesis(lab: FakeLab, tmp_path: Path) -> None:
    from dllm_notebook.testing import Behaviour

    plain = lab.add("lm_studio", id="plain", context_length=16384)
    citing = lab.add(
        "lm_studio", id="citing", context_length=2048, behaviour=Behaviour(cite_prompt_keys=True)
    )
    results = tmp_path / "results.parquet"
    analyzed = dllm(
        "analyze", str(SAMPLE_PAPERS), "-p", "Which method? {content}", "-o", str(results),
        "-c", str(write_config(tmp_path / "a.json", [worker(plain, "plain", "lm_studio")])),
        cwd=tmp_path,
    )  # fmt: skip
    assert analyzed.returncode == 0, analyzed.stderr
    config = write_config(tmp_path / "s.json", [worker(citing, "citing", "lm_studio")])
    out = tmp_path / "synthesis.json"
    done = dllm(
        "synthesize", str(results), "-q", "What do they share?", "-c", str(config), "-o", str(out),
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"Wrote {out}: 5 citations, 0 flagged; 5 of 5 papers cited."
    saved = json.loads(out.read_text(encoding="utf-8"))
    assert saved["question"] == "What do they share?"
    assert {c["key"] for c in saved["citations"]} == {p.name for p in SAMPLE_PAPERS.glob("*.pdf")}

    shown = dllm("synthesize", str(results), "-q", "What do they share?", "-c", str(config),
                 cwd=tmp_path)  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("**What do they share?**")
    assert "[battery-degradation.pdf](#row-battery-degradation.2e.pdf)" in shown.stdout

    review = dllm("report", str(results), "-o", str(tmp_path / "r.html"), "--synthesis", str(out),
                  cwd=tmp_path)  # fmt: skip
    assert review.returncode == 0, review.stderr
    assert 'class="citation ok" href="#row-battery-degradation.2e.pdf"' in (
        tmp_path / "r.html"
    ).read_text(encoding="utf-8")
