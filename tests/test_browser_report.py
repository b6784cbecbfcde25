"""The review report as a person opens it: review.html in Debian's headless Chromium.

The table comes from ``analyze()`` over ``sample_papers/`` on emulated servers, plus a
``design`` prompt's rows built with ``long_frame`` (a category with quotes, exactly one of
them unverified), so the page has a known mix to check; tests/test_report.py covers a typed
preset analyzed end to end. The test checks that the
table, the charts, the evidence and the synthesis render, that the filter hides rows, and
that the page logs no console error and makes no network request (it is a ``file://``
page with everything inline). It saves a screenshot to docs/img/review-report.png.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from dllm_notebook import Cluster, Synthesis
from dllm_notebook._results.frames import PROMPTS_ATTR, long_frame
from dllm_notebook._results.synthesis import check_citations, row_anchor
from dllm_notebook.testing import FakeLab

from .conftest import FAST, ROOT, SAMPLE_PAPERS
from .test_browser import CHROMIUM, CHROMIUM_ARGS, missing_tools

pytestmark = [pytest.mark.browser]

SCREENSHOT = ROOT / "docs" / "img" / "review-report.png"
DESIGNS = ["experiment", "observational", "simulation", "other"]


@pytest.fixture(scope="module")
def tools() -> None:
    missing = [m for m in missing_tools() if not m.startswith("JupyterLab")]
    if missing:
        why = "the browser test needs " + ", ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(f"{why}; CI must install them (scripts/test does).")
        pytest.skip(why)


def review_table(lab: FakeLab) -> pd.DataFrame:
    """``analyze()`` over the sample papers, plus a typed ``design`` prompt with quotes."""
    server = lab.add("lm_studio", models=["qwen3-8b"], context_length=32768)
    prompts = {"method": "Which method does it use? {content}"}
    with Cluster([server.url], **FAST) as cluster:
        long = cluster.analyze(SAMPLE_PAPERS, prompts=prompts, long=True)
    papers = long.drop_duplicates("paper")
    typed: list[dict[str, Any]] = []
    for i, row in enumerate(papers.to_dict("records")):
        quotes = [{"text": f"{row['title']}", "page": 1, "match": "exact"}]
        if i == 0:
            quotes.append(
                {"text": "a sentence no page contains", "page": None, "match": "unverified"}
            )
        typed.append(
            {
                **{k: row[k] for k in ("paper", "title", "worker", "model")},
                "prompt": "design",
                "answer": json.dumps({"answer": DESIGNS[i % 3]}),
                "value": json.dumps(DESIGNS[i % 3]),
                "status": "ok",
                "evidence": "verified",
                "quotes": json.dumps(quotes),
            }
        )
    table = pd.concat([long, long_frame(typed)], ignore_index=True)
    table = long_frame(table.to_dict("records"), run_id=long.attrs["dllm_run"], elapsed_s=2.0)
    table.attrs["dllm_summary"] = long.attrs["dllm_summary"]
    table.attrs[PROMPTS_ATTR] = {
        "method": {"type": "text"},
        "design": {"type": "category", "choices": DESIGNS},
    }
    return table


def test_review_report_in_chromium(tools: None, lab: FakeLab, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    table = review_table(lab)
    keys = list(dict.fromkeys(table["paper"]))
    text = f"Two papers share a method [{keys[0]}; {keys[1]}]. One is cited wrongly [nope.pdf]."
    titles = dict(zip(table["paper"], table["title"], strict=True))
    synthesis = Synthesis(
        text=text,
        question="What do the papers share?",
        citations=check_citations(text, titles, set(keys)),
        titles=titles,
    )
    report = table.dllm.to_report(tmp_path / "review.html", synthesis=synthesis)

    errors: list[str] = []
    requests: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(report.as_uri())
            page.wait_for_load_state("load")

            rows = page.locator("#results tbody tr")
            assert rows.count() == 5
            assert page.locator("#results thead th").all_inner_texts()[:2] == ["paper", "title"]
            charts = page.locator("#charts img")
            assert charts.count() == 1
            assert charts.first.evaluate("img => img.complete && img.naturalWidth > 0")
            assert page.locator("#evidence blockquote.verified").count() == 5
            flagged = page.locator("#evidence blockquote.unverified")
            assert flagged.count() == 1 and "UNVERIFIED" in flagged.inner_text()
            assert page.locator("#synthesis a.citation.ok").count() == 2
            assert page.locator("#synthesis mark.citation.unknown").count() == 1
            assert page.locator("#shown").inner_text() == "5 of 5 papers"

            # A citation jumps to its row.
            page.locator("#synthesis a.citation.ok").first.click()
            assert page.evaluate("location.hash") == "#" + row_anchor(keys[0])
            assert page.locator("tr:target td").first.inner_text() == keys[0]

            # The filter: only the rows with every word stay visible.
            page.fill("#filter", "simulation")
            visible = page.locator("#results tbody tr:visible")
            assert visible.count() == 1
            assert page.locator("#shown").inner_text() == "1 of 5 papers"
            page.fill("#filter", "")
            assert page.locator("#results tbody tr:visible").count() == 5

            # Sorting by a column orders the rows; a second click reverses them.
            header = page.locator("#results thead th", has_text="paper")
            header.click()
            first = rows.first.locator("td").first.inner_text()
            header.click()
            assert rows.first.locator("td").first.inner_text() != first
            assert sorted(keys)[0] == first

            page.evaluate("window.scrollTo(0, 0)")
            shot = tmp_path / "review-report.png"
            page.screenshot(path=shot)
        finally:
            browser.close()
    assert errors == []
    assert [u for u in requests if not u.startswith(("file://", "data:"))] == []
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    if not SCREENSHOT.exists() or os.environ.get("DLLM_UPDATE_SCREENSHOTS"):
        shutil.copyfile(shot, SCREENSHOT)
