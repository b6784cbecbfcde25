"""Zotero 7 as input: a collection read through the local API, emulated on loopback
(dllm_notebook.testing.FakeZotero) with the corpus PDFs as its attachments."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from dllm_notebook import Cluster
from dllm_notebook._errors import ZoteroUnavailable
from dllm_notebook._reading.papers import load_papers
from dllm_notebook._reading.zotero import parse_zotero, zotero
from dllm_notebook.testing import FakeLab, FakeZotero

from .conftest import FAST

pytest.importorskip("pymupdf", reason="needs the [pdf] extra (PyMuPDF)")

# (file, title, authors, date, DOI, venue, citation key, where the key is kept)
REVIEW = [
    ("acl2020-s2orc.pdf", "S2ORC: The Semantic Scholar Open Research Corpus",
     ["Kyle Lo", "Lucy Lu Wang", "Mark Neumann", "Rodney Kinney", "Daniel Weld"], "2020-07",
     "10.18653/v1/2020.acl-main.447", "Proceedings of ACL 2020", "lo2020", "citationKey"),
    ("peerj-cs-2017-vespa.pdf",
     "VESPA: Very large-scale Evolutionary and Selective Pressure Analyses",
     ["Andrew E. Webb", "Thomas A. Walsh", "Mary J. O’Connell"], "2017-06-05",
     "10.7717/peerj-cs.118", "PeerJ Computer Science", "webb2017", "extra"),
    ("bmc-2014-quality-improvement.pdf",
     "Understanding the barriers to setting up a healthcare quality improvement process in "
     "resource-limited settings", ["Josephine Nana Afrakoma Agyeman-Duah", "Antje Theurer"],
     "2014-01-03", "10.1186/1472-6963-14-1", "BMC Health Services Research", "", ""),
    ("bmc-trauma-2010-dvt-review.pdf",
     "Complications related to deep venous thrombosis prophylaxis in trauma: a systematic "
     "review of the literature", ["Indraneel Datta", "Chad G Ball"], "2010",
     "10.1186/1752-2897-4-1", "Journal of Trauma Management & Outcomes", "datta2010",
     "citationKey"),
    ("natcommun-2024-s41467-024-44806-1.pdf",
     "Evolution of optimal growth temperature in Asgard archaea inferred from the temperature "
     "dependence of GDP binding to EF-1A", ["Zhongyi Lu", "Runyue Xia"], "2024-01-15",
     "10.1038/s41467-024-44806-1", "Nature Communications", "lu2024", "citationKey"),
    ("genomebiol-2023-s13059-023-02935-8.pdf",
     "A comprehensive map of human glucokinase variant activity",
     ["Sarah Gersing", "Matteo Cagiada"], "2023-05-31", "10.1186/s13059-023-02935-8",
     "Genome Biology", "gersing2023", "extra"),
    ("nar-2024-gkae252.pdf",
     "Mutation rate heterogeneity at the sub-gene scale due to local DNA hypomethylation",
     ["David Mas-Ponte", "Fran Supek"], "2024-04-08", "10.1093/nar/gkae252",
     "Nucleic Acids Research", "masponte2024", "citationKey"),
    ("pnas-2024-2322520121.pdf", "PARP1 UFMylation ensures the stability of stalled "
     "replication forks", ["Yamin Gong", "Zhifeng Wang"], "2024-04-30",
     "10.1073/pnas.2322520121", "Proceedings of the National Academy of Sciences",
     "gong2024", "citationKey"),
    ("plos-one-2018-wheat-metabolomics.pdf", "Comparative physiological and metabolomics "
     "analysis of wheat (Triticum aestivum L.) following post-anthesis heat stress",
     ["Kayla Thomason", "Md Ali Babar"], "2018-06-08", "10.1371/journal.pone.0197919",
     "PLOS ONE", "thomason2018", "citationKey"),
    ("eacl2023-main-121.pdf", "LongEval: Guidelines for Human Evaluation of Faithfulness in "
     "Long-form Summarization", ["Kalpesh Krishna", "Mohit Iyyer"], "2023-05",
     "10.18653/v1/2023.eacl-main.121", "Proceedings of EACL 2023", "krishna2023", "citationKey"),
]  # fmt: skip
LINKED = "nar-2024-gkae252.pdf"  # a linked file: no enclosure, found through /file


@pytest.fixture
def zot(corpus: Path) -> Iterator[FakeZotero]:
    server = FakeZotero()
    for file, title, authors, date, doi, venue, key, kept in REVIEW:
        server.add_item(
            "Review 2026",
            title=title,
            creators=authors,
            date=date,
            doi=doi,
            venue=venue,
            citation_key=key if kept == "citationKey" else "",
            extra=f"Citation Key: {key}\nPMID: 123" if kept == "extra" else "",
            pdf=corpus / file,
            link_mode="linked_file" if file == LINKED else "imported_file",
        )
    server.add_item("Review 2026", title="Statistical Rethinking", creators=["Richard McElreath"],
                    date="2020", item_type="book", citation_key="mcelreath2020")  # fmt: skip
    missing = server.add_item("Review 2026", title="Synced elsewhere", citation_key="away2022")
    server.add_attachment(missing, corpus / "not-synced-here.pdf")
    server.add_item("Other", title="Not in the review", pdf=corpus / "acl2020-s2orc.pdf")
    with server:
        yield server


def test_a_collection_loads_the_same_papers_as_the_folder_plus_metadata(
    zot: FakeZotero, corpus: Path
) -> None:
    papers = load_papers(zotero("Review 2026", url=zot.url))
    folder = {p.path: p for p in load_papers([corpus / row[0] for row in REVIEW])}
    readable = [p for p in papers if p.ok]
    assert len(readable) == 10
    for paper, row in zip(readable, REVIEW, strict=True):
        file, title, authors, date, doi, venue, key, _ = row
        same = folder[corpus / file]
        assert (paper.path, paper.text, paper.sha256) == (same.path, same.text, same.sha256)
        assert paper.name == (key or file) and paper.key == (key or None)
        assert (paper.title, paper.authors, paper.doi, paper.venue) == (
            title,
            tuple(authors),
            doi,
            venue,
        )
        assert paper.year == int(date[:4])
        assert paper.source.title == "zotero" and paper.source.doi == "zotero"
    # the linked file was found through /items/{key}/file, the imported ones without it
    file_requests = [r for r in zot.requests if r.endswith("/file")]
    assert len(file_requests) == 1


def test_items_without_a_readable_attachment_are_no_file(zot: FakeZotero) -> None:
    papers = {p.name: p for p in load_papers(zotero("Review 2026", url=zot.url))}
    book, away = papers["mcelreath2020"], papers["away2022"]
    assert book.status == "no_file" and "no file attached" in book.message
    assert (book.title, book.authors, book.year) == (
        "Statistical Rethinking",
        ("Richard McElreath",),
        2020,
    )
    assert away.status == "no_file" and "not-synced-here.pdf" in away.message
    assert "Not in the review" not in {p.title for p in papers.values()}


def test_the_string_form_and_the_collection_key(
    zot: FakeZotero, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DLLM_ZOTERO_URL", zot.url)
    by_name = load_papers("zotero:Review 2026")
    key = next(k for k, c in zot.collections.items() if c["data"]["name"] == "Review 2026")
    by_key = load_papers(zotero(key))
    assert [p.name for p in by_name] == [p.name for p in by_key]
    assert len(by_name) == 12
    assert parse_zotero(f"zotero://select/library/collections/{key}") == zotero(key)
    assert parse_zotero("papers/zotero.bib") is None


def test_an_unknown_collection_lists_the_ones_there(zot: FakeZotero) -> None:
    with pytest.raises(ZoteroUnavailable, match=r"no Zotero collection named 'Review 2025'.*"
                       r"'Other' \(\w+\), 'Review 2026' \(\w+\)"):  # fmt: skip
        load_papers(zotero("Review 2025", url=zot.url))


def test_a_disabled_or_absent_zotero_says_how_to_turn_it_on(zot: FakeZotero) -> None:
    zot.enabled = False
    with pytest.raises(ZoteroUnavailable, match=r"local API is not enabled.*Allow other"):
        load_papers(zotero("Review 2026", url=zot.url))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    with pytest.raises(ZoteroUnavailable, match=r"not answering.*start Zotero 7"):
        load_papers(zotero("Review 2026", url=closed, timeout=2))


def test_analyze_over_a_collection_lists_no_file_papers(zot: FakeZotero, lab: FakeLab) -> None:
    server = lab.add("ollama", context_length=65536)
    with Cluster([server.url], **FAST) as cluster:
        long = cluster.analyze(
            zotero("Review 2026", url=zot.url),
            prompts=["What was studied?"],
            long=True,
            progress=False,
        )
    status = dict(zip(long["paper"], long["status"], strict=True))
    assert status["mcelreath2020"] == status["away2022"] == "no_file"
    assert status["lo2020"] == "ok" and status["bmc-2014-quality-improvement.pdf"] == "ok"
    assert len(server.log.generations()) == 10  # nothing sent for the no_file papers


def test_analyze_over_the_collection_matches_the_folder_cell_for_cell(
    zot: FakeZotero, lab: FakeLab, corpus: Path
) -> None:
    server = lab.add("ollama", context_length=65536)
    prompt = {"summary": "Summarise this paper: {content}"}
    with Cluster([server.url], **FAST) as cluster:
        by_zotero = cluster.analyze(
            zotero("Review 2026", url=zot.url), prompts=prompt, progress=False, cache=False
        )
        by_folder = cluster.analyze(
            [corpus / row[0] for row in REVIEW], prompts=prompt, progress=False, cache=False
        )
    names = {row[0]: row[6] or row[0] for row in REVIEW}
    assert len(server.log.generations()) == 20  # both runs asked: nothing from the store
    for file, name in names.items():
        assert by_zotero.loc[name, "summary"] == by_folder.loc[file, "summary"], file
    assert by_zotero.loc[["mcelreath2020", "away2022"], "summary"].isna().all()
