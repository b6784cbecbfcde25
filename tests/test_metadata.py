"""Reference metadata read from the PDFs themselves: the DOI printed on the first pages,
the PDF's metadata, the first page's title and authors, and where each came from."""

from __future__ import annotations

from pathlib import Path

import pytest

from dllm_notebook._reading.doi import PageBlocks, first_page_doi, normalize_doi
from dllm_notebook._reading.metadata import Reference, merge, split_authors
from dllm_notebook._reading.paper import Paper
from dllm_notebook._reading.papers import load_papers

from .conftest import CORPUS

pymupdf = pytest.importorskip("pymupdf", reason="needs the [pdf] extra (PyMuPDF)")

# Every corpus paper whose first page prints its own DOI, read off the pages by eye.
PRINTED_DOIS = {
    "bad-password-required-hindawi-2010-rehab.pdf": "10.1155/2010/157939",  # header
    "biorxiv-2024.02.13.580051.pdf": "10.1101/2024.02.13.580051",  # bioRxiv stamp
    "genomebiol-2023-s13059-023-02935-8.pdf": "10.1186/s13059-023-02935-8",  # header
    "nar-2024-gkae252.pdf": "10.1093/nar/gkae252",  # header
    "natcommun-2024-s41467-024-44806-1.pdf": "10.1038/s41467-024-44806-1",  # over the title
    "peerj-cs-2017-vespa.pdf": "10.7717/peerj-cs.118",  # "DOI" box and footer
    "plos-one-2018-wheat-metabolomics.pdf": "10.1371/journal.pone.0197919",  # footer
    "pnas-2024-2322520121.pdf": "10.1073/pnas.2322520121",  # footer ("doi:10.1073/pnas." cut)
}
# First pages that print no DOI: the BMC papers print theirs on the last page only, the ACL
# Anthology papers nowhere. The damaged copy has no page at all.
NO_PRINTED_DOI = {
    "acl2020-s2orc.pdf",
    "bmc-2014-quality-improvement.pdf",
    "bmc-trauma-2010-dvt-review.pdf",
    "eacl2023-main-121.pdf",
    "bad-truncated-peerj-cs-2017-vespa.pdf",
}


@pytest.fixture(scope="module")
def corpus_pdfs() -> dict[str, Paper]:
    if not CORPUS.is_dir():
        pytest.skip(f"the shared corpus is not at {CORPUS}")
    papers = load_papers(sorted(CORPUS.glob("*.pdf")), password="acceptance-test")
    return {paper.name: paper for paper in papers}


def _first_pages(path: Path) -> list[PageBlocks]:
    with pymupdf.open(path) as doc:
        if doc.needs_pass:
            doc.authenticate("acceptance-test")
        pages = []
        for number in range(min(2, doc.page_count)):
            page = doc.load_page(number)
            blocks = page.get_text("blocks")
            pages.append(PageBlocks(page.rect.height, tuple((b[1], b[3], b[4]) for b in blocks)))
        return pages


def test_the_corpus_is_fully_listed(corpus: Path) -> None:
    assert {p.name for p in corpus.glob("*.pdf")} == set(PRINTED_DOIS) | NO_PRINTED_DOI


def test_doi_printed_on_the_first_page_is_found_and_none_is_invented(corpus: Path) -> None:
    found = {path.name: first_page_doi(_first_pages(path)) for path in corpus.glob("*.pdf")}
    assert {name: doi for name, doi in found.items() if doi} == PRINTED_DOIS
    assert all(found[name] is None for name in NO_PRINTED_DOI)


def test_papers_carry_the_printed_doi_with_its_source(corpus_pdfs: dict[str, Paper]) -> None:
    for name, doi in PRINTED_DOIS.items():
        paper = corpus_pdfs[name]
        assert paper.doi == doi, name
        assert paper.source.doi in ("pdf_metadata", "pdf_text"), name
    # The PDF's metadata outranks the page: here it names the DOI the last page prints.
    trauma = corpus_pdfs["bmc-trauma-2010-dvt-review.pdf"]
    assert (trauma.doi, trauma.source.doi) == ("10.1186/1752-2897-4-1", "pdf_metadata")
    assert trauma.year == 2010
    for name in ("acl2020-s2orc.pdf", "bmc-2014-quality-improvement.pdf", "eacl2023-main-121.pdf"):
        assert corpus_pdfs[name].doi is None and corpus_pdfs[name].source.doi is None, name


def test_first_page_names_replace_a_single_metadata_author(
    corpus_pdfs: dict[str, Paper],
) -> None:
    # The metadata names only the first author; the first page names all fifteen.
    genome = corpus_pdfs["genomebiol-2023-s13059-023-02935-8.pdf"]
    assert genome.authors[:3] == ("Sarah Gersing", "Matteo Cagiada", "Marinella Gebbia")
    assert genome.authors[-1] == "Rasmus Hartmann‑Petersen" and len(genome.authors) == 15
    assert genome.source.authors == "first_page"
    # Superscript affiliation marks ("Gonga,b,1") are not part of the names.
    assert corpus_pdfs["pnas-2024-2322520121.pdf"].authors[:2] == ("Yamin Gong", "Zhifeng Wang")
    # The metadata's full list is kept as written.
    plos = corpus_pdfs["plos-one-2018-wheat-metabolomics.pdf"]
    assert plos.authors[0] == "Kayla Thomason" and len(plos.authors) == 6
    assert plos.source.authors == "pdf_metadata"
    assert str(plos.source) == "pdf_metadata: title, authors; pdf_text: doi"


def test_a_doi_in_references_or_unlabelled_body_text_is_not_the_papers() -> None:
    height = 800.0
    body = (300.0, 320.0, "as shown before (10.1000/cited.work), we measured")
    labelled_ref = (400.0, 420.0, "References\n[1] Smith, doi:10.1000/other")
    assert first_page_doi([PageBlocks(height, (body,))]) is None
    assert first_page_doi([PageBlocks(height, (labelled_ref,))]) is None
    # a cited DOI in page 2's body loses to nothing: only page 2's header or footer counts
    page2 = PageBlocks(height, ((300.0, 320.0, "see doi:10.1000/cited"),))
    assert first_page_doi([PageBlocks(height, ()), page2]) is None
    footer = (760.0, 780.0, "Journal 12 | https://doi.org/10.5555/own.123).")
    assert first_page_doi([PageBlocks(height, (body, footer))]) == "10.5555/own.123"


@pytest.mark.parametrize(
    ("raw", "doi"),
    [
        ("https://doi.org/10.1038/s41467-024-44806-1", "10.1038/s41467-024-44806-1"),
        ("doi:10.1155/2010/157939.", "10.1155/2010/157939"),
        (
            "DOI: 10.1002/(SICI)1097-4636(199706)35:4<465::AID-JBM7>3.0.CO;2-Q",
            "10.1002/(SICI)1097-4636(199706)35:4<465::AID-JBM7>3.0.CO;2-Q",
        ),
        ("10.1016/S0140-6736(20)30183-5),", "10.1016/S0140-6736(20)30183-5"),
        ("10.1000/x", None),
        ("not a doi", None),
    ],
)
def test_normalize_doi(raw: str, doi: str | None) -> None:
    assert normalize_doi(raw) == doi


def test_split_authors_handles_the_forms_pdfs_use() -> None:
    assert split_authors("Kyle Lo ; Lucy Lu Wang ; Mark Neumann") == (
        "Kyle Lo",
        "Lucy Lu Wang",
        "Mark Neumann",
    )
    assert split_authors("McVey, Mitch") == ("Mitch McVey",)
    assert split_authors("Mas-Ponte David, Supek Fran") == ("Mas-Ponte David", "Supek Fran")
    assert split_authors("Nuala E. Tully {et al.}") == ("Nuala E. Tully",)
    assert split_authors("A. Smith and B. Jones") == ("A. Smith", "B. Jones")


def test_merge_keeps_the_best_origin_per_field() -> None:
    values, sources = merge(
        [
            Reference("first_page", title="Heading", authors=("A Person",)),
            Reference("pdf_metadata", title="Metadata Title"),
            Reference("bibtex", year=2020, key="lo2020"),
        ]
    )
    assert values["title"] == "Metadata Title" and sources.title == "pdf_metadata"
    assert values["authors"] == ("A Person",) and sources.authors == "first_page"
    assert (values["year"], values["key"], sources.key) == (2020, "lo2020", "bibtex")
    assert values["doi"] is None and sources.doi is None
