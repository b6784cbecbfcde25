"""Optional Crossref enrichment against the emulated Crossref on loopback."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from dllm_notebook._errors import CrossrefUnavailable
from dllm_notebook._reading.crossref import enrich
from dllm_notebook._reading.papers import load_papers
from dllm_notebook.testing import FakeCrossref

pytest.importorskip("pymupdf", reason="needs the [pdf] extra (PyMuPDF)")

VESPA = "peerj-cs-2017-vespa.pdf"  # DOI printed on the page; no title or authors in metadata
PNAS = "pnas-2024-2322520121.pdf"  # DOI printed; Crossref does not know it here


@pytest.fixture
def crossref() -> Iterator[FakeCrossref]:
    server = FakeCrossref()
    server.add_work(
        "10.7717/PEERJ-CS.118",
        title="VESPA: Very large-scale Evolutionary and Selective Pressure Analyses",
        authors=["Andrew E. Webb", "Thomas A. Walsh", "Mary J. O’Connell"],
        year=2017,
        venue="PeerJ Computer Science",
        publisher="PeerJ",
    )
    with server:
        yield server


def test_crossref_fills_metadata_for_a_doi(crossref: FakeCrossref, corpus: Path) -> None:
    vespa, pnas = load_papers([corpus / VESPA, corpus / PNAS], crossref=crossref.url)
    assert (vespa.year, vespa.venue) == (2017, "PeerJ Computer Science")
    assert vespa.authors == ("Andrew E. Webb", "Thomas A. Walsh", "Mary J. O’Connell")
    assert vespa.source.venue == vespa.source.year == vespa.source.authors == "crossref"
    assert vespa.doi == "10.7717/peerj-cs.118"
    # unknown to Crossref (404): the paper keeps what its PDF said
    assert pnas.venue is None and pnas.source.authors == "first_page"
    assert crossref.requests == ["/works/10.7717/peerj-cs.118", "/works/10.1073/pnas.2322520121"]


def test_off_by_default(crossref: FakeCrossref, corpus: Path) -> None:
    vespa = load_papers(corpus / VESPA)[0]
    assert vespa.venue is None and vespa.year is None
    assert crossref.requests == []


def test_a_reference_library_outranks_crossref(
    crossref: FakeCrossref, corpus: Path, tmp_path: Path
) -> None:
    library = tmp_path / "refs.bib"
    library.write_text(
        "@article{webb, title={VESPA (as we cite it)}, doi={10.7717/peerj-cs.118},"
        f" file={{{corpus / VESPA}}}}}",
        encoding="utf-8",
    )
    paper = enrich(load_papers(library), url=crossref.url)[0]
    assert (paper.title, paper.source.title) == ("VESPA (as we cite it)", "bibtex")
    assert (paper.venue, paper.source.venue) == ("PeerJ Computer Science", "crossref")


def test_an_unreachable_crossref_says_how_to_work_offline(corpus: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    with pytest.raises(CrossrefUnavailable, match=r"not reachable.*crossref=False"):
        load_papers(corpus / VESPA, crossref=closed)
