"""The review report: one self-contained HTML file (and Markdown) made from a result table.

Tables come from ``analyze()`` on the emulated servers (the run's summary, failures,
unreadable papers) or, where a test needs typed values and quotes of its own, straight from
``long_frame``.
"""

from __future__ import annotations

import base64
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from dllm_notebook import Cluster, Synthesis
from dllm_notebook._errors import SynthesisFileError
from dllm_notebook._results.frames import PROMPTS_ATTR, long_frame
from dllm_notebook._results.synthesis import check_citations, row_anchor
from dllm_notebook.testing import FakeLab

from .conftest import FAST, SAMPLE_PAPERS

HOSTILE = "<script>alert(1)</script> and {{ 7*7 }}"
DESIGNS = ["randomized trial", "cohort", "case-control", "other"]
SPECS = {
    "design": {"type": "category", "choices": DESIGNS},
    "sample_size": {"type": "integer"},
    "summary": {"type": "text"},
}


class Page(HTMLParser):
    """What a browser would see of the page: text per element id, tags, attributes."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.script_text: list[str] = []
        self._in_script = False
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        (self.script_text if self._in_script else self.text).append(data)

    def all_text(self) -> str:
        return " ".join(" ".join(self.text).split())

    def ids(self) -> set[str]:
        return {str(a["id"]) for _, a in self.tags if a.get("id")}


def typed_long(papers: int = 6, *, title: str | None = None) -> pd.DataFrame:
    """A long table with a category, an integer and a text prompt, quotes on ``design``."""
    rows: list[dict[str, Any]] = []
    for i in range(papers):
        key = f"paper{i}.pdf"
        common = {"paper": key, "title": title or f"Paper {i}", "worker": "mac-1", "model": "m"}
        quotes = [
            {"text": f"we enrolled {10 * i} people", "page": i + 1, "match": "exact"},
            {"text": f"an invented sentence {i}", "page": None, "match": "unverified"},
        ]
        rows.append(
            {
                **common,
                "prompt": "design",
                "answer": json.dumps({"answer": DESIGNS[i % 2]}),
                "value": json.dumps(DESIGNS[i % 2]),
                "status": "ok",
                "evidence": "verified",
                "quotes": json.dumps(quotes),
            }
        )
        failed = i == papers - 1
        rows.append(
            {
                **common,
                "prompt": "sample_size",
                "answer": None if failed else str(10 * i),
                "value": None if failed else json.dumps(10 * i),
                "status": "failed" if failed else "ok",
                "error": "timed out on every worker; start more workers" if failed else None,
            }
        )
        rows.append({**common, "prompt": "summary", "answer": f"Summary {i}.", "status": "ok"})
    frame = long_frame(rows, run_id="run-1", elapsed_s=12.5)
    frame.attrs[PROMPTS_ATTR] = SPECS
    return frame


def test_the_html_report_has_every_section_and_nothing_from_outside(tmp_path: Path) -> None:
    path = typed_long().dllm.to_report(tmp_path / "review.html")
    html = path.read_text(encoding="utf-8")
    page = Page(html)
    assert {"summary", "table", "charts", "evidence", "failures", "results", "filter"} <= page.ids()
    assert "synthesis" not in page.ids()  # only when one is given
    text = page.all_text()
    assert "Papers 6" in text and "Workers mac-1" in text and "Time 12.5 s" in text
    assert "17 of 18 answered" in text
    # self-contained: no URL to fetch, no external script, style or font
    for tag, attrs in page.tags:
        for name in ("src", "href"):
            value = attrs.get(name)
            if value is not None:
                assert value.startswith(("data:", "#")), (tag, name, value)
    assert not re.search(r"https?://", html.replace("http://www.w3.org", ""))
    # one row per paper, each with an anchor the synthesis can link to
    rows = [a for t, a in page.tags if t == "tr" and str(a.get("id", "")).startswith("row-")]
    assert [r["id"] for r in rows] == [row_anchor(f"paper{i}.pdf") for i in range(6)]


def test_each_typed_column_gets_an_svg_chart_and_text_columns_none(tmp_path: Path) -> None:
    page = Page(typed_long().dllm.to_report(tmp_path / "r.html").read_text(encoding="utf-8"))
    images = [a for t, a in page.tags if t == "img"]
    assert [a["alt"] for a in images] == ["design (category)", "sample_size (integer)"]
    svg = base64.b64decode(str(images[0]["src"]).split(",", 1)[1]).decode()
    assert svg.startswith("<?xml") and "<svg" in svg and "<script" not in svg
    # the category chart names every declared choice, also those no paper chose
    assert all(f"<!-- {choice} -->" in svg for choice in DESIGNS)


def test_quotes_show_page_and_match_and_unverified_ones_are_flagged_apart(
    tmp_path: Path,
) -> None:
    html = typed_long(3).dllm.to_report(tmp_path / "r.html").read_text(encoding="utf-8")
    evidence = html.split('<section id="evidence">')[1].split("</section>")[0]
    verified = re.findall(r'<blockquote class="quote verified">(.*?)</blockquote>', evidence)
    flagged = re.findall(r'<blockquote class="quote unverified">(.*?)</blockquote>', evidence)
    assert len(verified) == 3 and len(flagged) == 3
    assert "we enrolled 20 people" in verified[2] and "p. 3 · exact match" in verified[2]
    assert all("UNVERIFIED" in q and "not evidence" in q for q in flagged)
    assert not any("invented" in q for q in verified)


def test_hostile_text_from_a_paper_or_a_model_appears_as_literal_text(tmp_path: Path) -> None:
    frame = typed_long(2, title=HOSTILE)
    frame.loc[frame["prompt"] == "summary", "answer"] = HOSTILE
    quotes = [{"text": HOSTILE, "page": 1, "match": "exact"}]
    frame.loc[frame["prompt"] == "design", "quotes"] = json.dumps(quotes)
    synthesis = Synthesis(
        text=f"Both agree {HOSTILE} [paper0.pdf].",
        question=HOSTILE,
        citations=check_citations(
            f"Both agree {HOSTILE} [paper0.pdf].", {"paper0.pdf": HOSTILE}, {"paper0.pdf"}
        ),
        titles={"paper0.pdf": HOSTILE, "paper1.pdf": "B"},
    )
    html = frame.dllm.to_report(tmp_path / "r.html", synthesis=synthesis).read_text("utf-8")
    page = Page(html)
    assert sum(1 for t, _ in page.tags if t == "script") == 1  # the report's own, no other
    assert "alert" not in " ".join(page.script_text)
    text = page.all_text()
    # title (table), answer (table), quote (evidence), question and text (synthesis)
    assert text.count(HOSTILE) >= 6
    assert "49" not in text

    markdown = frame.dllm.to_report(tmp_path / "r.md", synthesis=synthesis).read_text("utf-8")
    assert "<script>" not in markdown
    assert "&lt;script&gt;alert(1)&lt;/script&gt; and {{ 7*7 }}" in markdown
    assert "49" not in markdown


def test_the_markdown_report_keeps_the_table_one_row_per_paper(tmp_path: Path) -> None:
    frame = typed_long(3)
    frame.loc[frame["prompt"] == "summary", "answer"] = "one | two\nthree"
    markdown = frame.dllm.to_report(tmp_path / "review.md").read_text(encoding="utf-8")
    table = markdown.split("## Table")[1].split("## Evidence")[0].strip().splitlines()
    assert table[0] == "| paper | title | year | design | sample_size | summary | "
    assert len(table) == 2 + 3
    assert table[2].endswith("| randomized trial | 0 | one \\| two three | ")
    assert "- **UNVERIFIED, not evidence:** “an invented sentence 1”" in markdown
    assert "| paper2.pdf | sample_size | failed | timed out on every worker" in markdown


def test_a_report_from_analyze_shows_the_run_failures_and_unreadable_papers(
    lab: FakeLab, tmp_path: Path
) -> None:
    papers = tmp_path / "papers"
    papers.mkdir()
    for pdf in sorted(SAMPLE_PAPERS.glob("*.pdf"))[:2]:
        (papers / pdf.name).write_bytes(pdf.read_bytes())
    (papers / "broken.pdf").write_bytes(b"%PDF-1.7 this is not a PDF")
    server = lab.add("openai", context_length=16384)
    prompts = {"topic": "What is the topic? {content}", "method": "Which method? {content}"}
    with Cluster([server.url], **FAST) as cluster:
        df = cluster.analyze(papers, prompts=prompts)  # the wide table; provenance is stored
    page = Page(df.dllm.to_report(tmp_path / "review.html").read_text(encoding="utf-8"))
    text = page.all_text()
    assert "analyzed 3 papers x 2 prompts" in text  # the run's own summary line
    assert "Papers 3" in text and "4 of 6 answered" in text
    assert f"Workers {df.dllm.long()['worker'].dropna().iloc[0]}" in text
    failures = text.split("Failures", 2)[2]
    assert "Papers that could not be read" in failures and "broken.pdf" in failures
    assert "No typed column to chart" in text


def test_charts_need_matplotlib_and_say_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import builtins

    from dllm_notebook import ChartsUnavailable

    real_import = builtins.__import__

    def no_matplotlib(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("matplotlib"):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(ChartsUnavailable, match=r"pip install 'dllm-notebook\[notebook\]'"):
        typed_long().dllm.to_report(tmp_path / "r.html")
    # without charts, the rest of the report is written
    page = Page(typed_long().dllm.to_report(tmp_path / "r.html", charts=False).read_text())
    assert "evidence" in page.ids() and not [t for t, _ in page.tags if t == "img"]


def test_the_synthesis_section_links_ok_citations_and_marks_flagged_ones(
    tmp_path: Path,
) -> None:
    titles = {f"paper{i}.pdf": f"Paper {i}" for i in range(6)}
    text = "Cohorts dominate [paper0.pdf; paper2.pdf]. One trial [paper1.pdf]. Made up [x.pdf]."
    synthesis = Synthesis(
        text=text,
        question="What do they say?",
        citations=check_citations(text, titles, {"paper0.pdf", "paper2.pdf"}),
        titles=titles,
    )
    saved = tmp_path / "synthesis.json"
    synthesis.to_json(saved)
    html = typed_long().dllm.to_report(tmp_path / "r.html", synthesis=Synthesis.from_json(saved))
    section = html.read_text("utf-8").split('<section id="synthesis">')[1].split("</section>")[0]
    links = re.findall(r'<a class="citation ok" href="#([^"]+)"', section)
    assert links == [row_anchor("paper0.pdf"), row_anchor("paper2.pdf")]
    assert '<mark class="citation unsupported"' in section and "[paper1.pdf]" in section
    assert '<mark class="citation unknown"' in section and "[x.pdf]" in section
    assert "2 of 6 papers cited; 2 citations flagged" in section


def test_a_file_that_is_not_a_synthesis_says_how_to_make_one(tmp_path: Path) -> None:
    bad = tmp_path / "s.json"
    bad.write_text('{"answer": 1}')
    with pytest.raises(SynthesisFileError, match="dllm synthesize"):
        Synthesis.from_json(bad)


TYPED_PRESET = """
description = "typed"
evidence = true

[[prompts]]
name = "design"
type = "category"
choices = ["randomized trial", "cohort", "simulation", "other"]
template = "{content}\\n\\nWhich study design is this?"

[[prompts]]
name = "sample_size"
type = "integer"
template = "{content}\\n\\nHow many samples?"
"""


def test_a_typed_analysis_gets_charts_and_its_checked_quotes(lab: FakeLab, tmp_path: Path) -> None:
    preset = tmp_path / "typed.toml"
    preset.write_text(TYPED_PRESET, encoding="utf-8")
    server = lab.add("openai", context_length=32768)
    with Cluster([server.url], **FAST) as cluster:
        df = cluster.analyze(SAMPLE_PAPERS, preset=preset, long=True)
    page = Page(df.dllm.to_report(tmp_path / "review.html").read_text(encoding="utf-8"))
    images = [str(a["alt"]) for t, a in page.tags if t == "img"]
    assert images == ["design (category)", "sample_size (integer)"]
    quotes = sum(len(json.loads(q)) for q in df["quotes"].dropna())
    shown = [a for t, a in page.tags if t == "blockquote"]
    assert quotes > 0 and len(shown) == quotes  # every quote, each once
    text = page.all_text()
    assert text.count("exact match") == sum(
        q["match"] == "exact" for qs in df["quotes"].dropna() for q in json.loads(qs)
    )
