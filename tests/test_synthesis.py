"""``cluster.synthesize()``: a hierarchical reduction sized to the workers' windows, with every
citation in the final text checked.

Emulated servers answer deterministically from the prompt; ``Behaviour.cite_prompt_keys``
makes them cite every ``[key]`` their prompt gives (a model that cites its input), and
``Behaviour.cite`` makes them also cite given keys (one not in the table, or a paper
outside the group they were given).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from dllm_notebook import Cluster, Synthesis, SynthesisFailed
from dllm_notebook._results.synthesis import check_citations, sentences
from dllm_notebook.testing import Behaviour, FakeLab, RequestRecord

from .conftest import FAST

WINDOW = 2048


def write_papers(folder: Path, count: int) -> Path:
    folder.mkdir()
    for i in range(count):
        (folder / f"p{i:03d}.txt").write_text(
            f"Paper {i} on rivers\n\nWe measured {i} floods in basin {i % 7}.", encoding="utf-8"
        )
    return folder


def analyzed(lab: FakeLab, papers: Path) -> pd.DataFrame:
    """The paper x prompt table, from a plain emulated server."""
    server = lab.add("lm_studio", id="analyst", context_length=16384)
    with Cluster([server.url], **FAST) as cluster:
        return cluster.analyze(papers, prompts={"finding": "What is the finding? {content}"})


def citing_lab(lab: FakeLab, count: int = 3, **behaviour: object) -> list[str]:
    servers = [
        lab.add(
            "lm_studio",
            id=f"syn-{i}",
            context_length=WINDOW,
            behaviour=Behaviour(cite_prompt_keys=True, slots=2, **behaviour),  # type: ignore[arg-type]
        )
        for i in range(count)
    ]
    return [s.url for s in servers]


def synthesis_requests(lab: FakeLab) -> list[RequestRecord]:
    return [r for r in lab.log.records() if r.is_generation and r.server.startswith("syn-")]


def test_100_papers_in_windows_of_2048_tokens(lab: FakeLab, tmp_path: Path) -> None:
    df = analyzed(lab, write_papers(tmp_path / "papers", 100))
    urls = citing_lab(lab)
    with Cluster(urls, **FAST) as cluster:
        synthesis = cluster.synthesize(df, "Where do the papers agree?")
        requests = synthesis_requests(lab)
        # nothing here exceeded a window: the servers counted every prompt themselves
        assert requests and all(r.generated for r in requests)
        assert all(r.prompt_tokens + r.max_tokens <= WINDOW for r in requests)
        assert synthesis.levels >= 2 and synthesis.groups > 2  # groups, then their summaries
        # every paper reached the final reduce through its group's summary: the last
        # server cites exactly the keys its prompt held, and it cites all 100
        coverage = synthesis.coverage
        assert len(coverage) == 100 and bool(coverage["cited"].all())
        assert set(synthesis.citations["status"]) == {"ok"}
        assert synthesis.question == "Where do the papers agree?"

        # the same inputs again: every level comes from the result store
        sent = len(synthesis_requests(lab))
        again = df.dllm.synthesize(cluster, "Where do the papers agree?")
        assert len(synthesis_requests(lab)) == sent
        assert again.text == synthesis.text
        history = cluster.history(run=synthesis.run_id)  # the final reduce, stored
        assert list(history["prompt"]) == ["synthesis"]
        assert list(history["answer"]) == [synthesis.text]


def test_unknown_and_outside_the_group_citations_are_flagged(lab: FakeLab, tmp_path: Path) -> None:
    df = analyzed(lab, write_papers(tmp_path / "papers", 40))
    urls = citing_lab(lab, cite=("ghost.pdf", "p007.txt"))
    with Cluster(urls, **FAST) as cluster:
        synthesis = cluster.synthesize(df)
    citations = synthesis.citations
    assert synthesis.levels >= 2
    ghost = citations[citations["key"] == "ghost.pdf"]
    assert len(ghost) and set(ghost["status"]) == {"unknown"}
    assert ghost["level"].max() == synthesis.levels  # in the final text, flagged
    outside = citations[(citations["key"] == "p007.txt") & (citations["status"] == "unsupported")]
    # every first-level group but p007's own cited it from outside its input
    first_level_groups = synthesis.extra["groups_per_level"][0]
    assert len(outside) == first_level_groups - 1
    assert set(outside["level"]) == {1}
    assert synthesis.flagged.shape[0] == len(ghost) + len(outside)
    assert "[ghost.pdf]" in synthesis.text  # the final text keeps what the model wrote
    html = synthesis._repr_html_()
    assert '<mark class="citation unknown"' in html

    # through a file and into the report, each flagged citation says which text it is in
    synthesis.to_json(tmp_path / "synthesis.json")
    read = Synthesis.from_json(tmp_path / "synthesis.json")
    assert list(read.citations["level"]) == list(citations["level"])
    report = df.dllm.to_report(tmp_path / "review.html", synthesis=read).read_text("utf-8")
    assert report.count("<td>a level 1 summary (taken out)</td>") == len(outside) + len(
        ghost[ghost["level"] == 1]
    )


def test_citations_are_checked_per_sentence() -> None:
    titles = {"a.pdf": "A", "b.pdf": "B"}
    text = "Rivers flood [a.pdf; b.pdf]. Basins differ [b.pdf]. Nobody knows [zz.pdf]."
    table = check_citations(text, titles, {"a.pdf"})
    assert list(table["key"]) == ["a.pdf", "b.pdf", "b.pdf", "zz.pdf"]
    assert list(table["status"]) == ["ok", "unsupported", "unsupported", "unknown"]
    assert list(table["sentence"])[2] == "Basins differ [b.pdf]."
    assert sentences("One. Two [a.pdf].\n\nThree") == ["One.", "Two [a.pdf].", "Three"]
    synthesis = Synthesis(text=text, question="q", citations=table, titles=titles)
    assert synthesis.coverage.loc["a.pdf", "cited"] and not synthesis.coverage.loc["b.pdf", "cited"]
    assert "**[zz.pdf]** *(unknown citation)*" in synthesis._repr_markdown_()


def test_an_empty_table_or_an_unknown_column_says_what_to_do(lab: FakeLab) -> None:
    server = lab.add("lm_studio", context_length=WINDOW)
    empty = pd.DataFrame({"q": pd.array([], dtype="string")}, index=pd.Index([], name="paper"))
    table = pd.DataFrame({"q": ["x"]}, index=pd.Index(["a.pdf"], name="paper"))
    with Cluster([server.url], **FAST) as cluster:
        with pytest.raises(SynthesisFailed, match="analyze papers first"):
            cluster.synthesize(empty)
        with pytest.raises(SynthesisFailed, match="answer columns are q"):
            cluster.synthesize(table, columns=["nope"])


def test_asynthesize_is_the_same_synthesis(lab: FakeLab, tmp_path: Path) -> None:
    import asyncio

    df = analyzed(lab, write_papers(tmp_path / "papers", 12))
    with Cluster(citing_lab(lab, count=1), **FAST) as cluster:
        synthesis = asyncio.run(cluster.asynthesize(df, "What agrees?", progress=False))
        again = cluster.synthesize(df, "What agrees?", progress=False)
    assert synthesis.text == again.text and synthesis.text.startswith("ECHO ")
    assert bool(synthesis.coverage["cited"].all())
