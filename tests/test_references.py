"""Reference libraries as input: .bib and .ris files as Zotero, Better BibTeX and JabRef
write them, pointing at the shared corpus."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from dllm_notebook._errors import ReferenceFileError
from dllm_notebook._reading.paper import Paper
from dllm_notebook._reading.papers import load_papers
from dllm_notebook._reading.references import file_paths

pytest.importorskip("pymupdf", reason="needs the [pdf] extra (PyMuPDF)")


def _bib(corpus: Path, folder: Path) -> str:
    """Entries as each tool exports them (real metadata of the corpus papers)."""
    relative = os.path.relpath(corpus, folder)
    return f"""% Encoding: UTF-8

@inproceedings{{lo_s2orc_2020,
\ttitle = {{{{S2ORC}}: {{The}} {{Semantic}} {{Scholar}} {{Open}} {{Research}} {{Corpus}}}},
\tshorttitle = {{{{S2ORC}}}},
\turl = {{https://aclanthology.org/2020.acl-main.447}},
\tdoi = {{10.18653/v1/2020.acl-main.447}},
\tbooktitle = {{Proceedings of the 58th {{Annual}} {{Meeting}} of the {{Association}} for {{Computational}} {{Linguistics}}}},
\tpublisher = {{Association for Computational Linguistics}},
\tauthor = {{Lo, Kyle and Wang, Lucy Lu and Neumann, Mark and Kinney, Rodney and Weld, Daniel}},
\tyear = {{2020}},
\tpages = {{4969--4983}},
\tfile = {{Full Text PDF:{corpus}/acl2020-s2orc.pdf:application/pdf;Snapshot:{corpus}/s2orc-snapshot.html:text/html}},
}}

@article{{gersingComprehensiveMapHuman2023,
  title = {{A Comprehensive Map of Human Glucokinase Variant Activity}},
  author = {{Gersing, Sarah and Cagiada, Matteo and Gebbia, Marinella and Gjesing, Anette P. and Cot{{\\'e}}, Atina G. and Lindorff-Larsen, Kresten and Hartmann-Petersen, Rasmus}},
  date = {{2023-05-31}},
  journaltitle = {{Genome Biology}},
  volume = {{24}},
  pages = {{97}},
  doi = {{10.1186/s13059-023-02935-8}},
  file = {{{corpus}/genomebiol-2023-s13059-023-02935-8-supplement.docx;{corpus}/genomebiol-2023-s13059-023-02935-8.pdf}}
}}

@Article{{Webb2017,
  author    = {{Andrew E. Webb and Thomas A. Walsh and Mary J. O{{\\textquoteright}}Connell}},
  journal   = {{PeerJ Computer Science}},
  title     = {{{{VESPA}}: Very large-scale Evolutionary and Selective Pressure Analyses}},
  year      = {{2017}},
  volume    = {{3}},
  pages     = {{e118}},
  doi       = {{10.7717/peerj-cs.118}},
  file      = {{:{relative}/peerj-cs-2017-vespa.pdf:PDF}},
}}

@article{{thomason2018,
  author = {{Thomason, Kayla and Babar, Md Ali and Erickson, John E. and Mulvaney, Michael and Beecher, Chris and MacDonald, Greg}},
  title = {{Comparative physiological and metabolomics analysis of wheat ({{Triticum aestivum}} {{L}}.) following post-anthesis heat stress}},
  journal = {{PLOS ONE}},
  year = 2018,
  file = {{{corpus}/plos-one-2018-wheat-metabolomics.pdf}}
}}

@book{{mcelreath2020,
  title = {{Statistical Rethinking}},
  author = {{McElreath, Richard}},
  publisher = {{Chapman and Hall/CRC}},
  year = {{2020}},
}}

@article{{moved2021,
  title = {{A paper whose PDF was moved}},
  author = {{Doe, Jane}},
  year = {{2021}},
  file = {{Full Text PDF:{folder}/gone/paper.pdf:application/pdf}},
}}
"""  # noqa: E501 (exported libraries have long lines)


@pytest.fixture
def bib_papers(corpus: Path, tmp_path: Path) -> dict[str, Paper]:
    library = tmp_path / "library.bib"
    library.write_text(_bib(corpus, tmp_path), encoding="utf-8")
    papers = load_papers(library)
    return {paper.name: paper for paper in papers}


def test_bib_entries_become_papers_named_by_citation_key(bib_papers: dict[str, Paper]) -> None:
    assert list(bib_papers) == [
        "lo_s2orc_2020",
        "gersingComprehensiveMapHuman2023",
        "Webb2017",
        "thomason2018",
        "mcelreath2020",
        "moved2021",
    ]
    assert [p.key for p in bib_papers.values()] == list(bib_papers)


def test_bib_metadata_fills_the_paper_braces_and_accents_decoded(
    bib_papers: dict[str, Paper], corpus: Path
) -> None:
    s2orc = bib_papers["lo_s2orc_2020"]
    assert s2orc.ok and s2orc.path == corpus / "acl2020-s2orc.pdf"  # the PDF, not the snapshot
    assert s2orc.title == "S2ORC: The Semantic Scholar Open Research Corpus"
    assert s2orc.authors == (
        "Kyle Lo",
        "Lucy Lu Wang",
        "Mark Neumann",
        "Rodney Kinney",
        "Daniel Weld",
    )
    assert (s2orc.year, s2orc.doi) == (2020, "10.18653/v1/2020.acl-main.447")
    assert s2orc.venue == (
        "Proceedings of the 58th Annual Meeting of the Association for Computational Linguistics"
    )
    assert str(s2orc.source) == "bibtex: title, authors, year, doi, venue, key"

    genome = bib_papers["gersingComprehensiveMapHuman2023"]  # biblatex date / journaltitle
    assert genome.ok and genome.path == corpus / "genomebiol-2023-s13059-023-02935-8.pdf"
    assert "Atina G. Coté" in genome.authors and "Kresten Lindorff-Larsen" in genome.authors
    assert (genome.year, genome.venue) == (2023, "Genome Biology")

    vespa = bib_papers["Webb2017"]  # JabRef: a path relative to the .bib file
    assert vespa.ok and vespa.authors[-1] == "Mary J. O’Connell"
    assert vespa.title == "VESPA: Very large-scale Evolutionary and Selective Pressure Analyses"


def test_fields_the_library_lacks_come_from_the_pdf(bib_papers: dict[str, Paper]) -> None:
    plos = bib_papers["thomason2018"]  # Better BibTeX: a bare path; no DOI in the entry
    assert plos.title.startswith("Comparative physiological and metabolomics analysis of wheat")
    assert "(Triticum aestivum L.)" in plos.title
    assert (plos.doi, plos.source.doi) == ("10.1371/journal.pone.0197919", "pdf_text")
    assert plos.source.title == "bibtex"


def test_the_text_is_the_same_as_reading_the_pdf_itself(
    bib_papers: dict[str, Paper], corpus: Path
) -> None:
    direct = load_papers(corpus / "acl2020-s2orc.pdf")[0]
    via_library = bib_papers["lo_s2orc_2020"]
    assert (via_library.text, via_library.sha256) == (direct.text, direct.sha256)


def test_entries_without_a_readable_file_are_no_file_papers(
    bib_papers: dict[str, Paper],
) -> None:
    book = bib_papers["mcelreath2020"]
    assert book.status == "no_file" and not book.ok and book.text == ""
    assert "no file attached" in book.message and "attach the PDF" in book.message
    assert (book.title, book.authors, book.year) == (
        "Statistical Rethinking",
        ("Richard McElreath",),
        2020,
    )
    assert book.venue == "Chapman and Hall/CRC"
    moved = bib_papers["moved2021"]
    assert moved.status == "no_file"
    assert "gone/paper.pdf" in moved.message and "re-link it" in moved.message


def test_a_bib_file_in_a_list_with_a_folder(corpus: Path, tmp_path: Path) -> None:
    library = tmp_path / "one.bib"
    library.write_text(
        "@misc{only, title={Only}, file={:" + str(corpus / "nar-2024-gkae252.pdf") + ":PDF}}",
        encoding="utf-8",
    )
    papers = load_papers([library, corpus / "pnas-2024-2322520121.pdf"])
    assert [p.name for p in papers] == ["only", "pnas-2024-2322520121.pdf"]
    assert papers[0].title == "Only" and papers[0].doi == "10.1093/nar/gkae252"


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        (  # Zotero: description:path:type, several attachments
            "Full Text PDF:/z/storage/AB12/a.pdf:application/pdf;Snapshot:/z/b.html:text/html",
            ["/z/storage/AB12/a.pdf", "/z/b.html"],
        ),
        ("/z/a b.pdf;/z/c.pdf", ["/z/a b.pdf", "/z/c.pdf"]),  # Better BibTeX
        (":papers/x.pdf:PDF", ["BASE/papers/x.pdf"]),  # JabRef, relative
        (r"Paper:/z/odd\:name\;v2.pdf:PDF", ["/z/odd:name;v2.pdf"]),  # JabRef escapes
        (r":C\:\\Users\\me\\x.pdf:PDF", ["BASE/C:\\Users\\me\\x.pdf"]),  # Windows
        (":C$\\backslash$:/Users/me/y.pdf:pdf", ["BASE/C:/Users/me/y.pdf"]),  # Mendeley
        ("file:///z/with%20space.pdf", ["/z/with space.pdf"]),
    ],
)
def test_file_fields_of_each_tool(field: str, expected: list[str]) -> None:
    base = Path("/base")
    assert [str(p) for p in file_paths(field, base)] == [
        e.replace("BASE", "/base") for e in expected
    ]


# ---------------------------------------------------------------- RIS


def test_ris_records_become_papers(corpus: Path, tmp_path: Path) -> None:
    library = tmp_path / "export.ris"
    library.write_text(
        "\n".join(
            [
                "TY  - JOUR",
                "TI  - Mutation rate heterogeneity at the sub-gene scale due to local DNA "
                "hypomethylation",
                "AU  - Mas-Ponte, David",
                "AU  - Supek, Fran",
                "T2  - Nucleic Acids Research",
                "PY  - 2024",
                "DA  - 2024/05/08/",
                "DO  - 10.1093/nar/gkae252",
                "UR  - https://doi.org/10.1093/nar/gkae252",
                f"L1  - file://{corpus}/missing-copy.pdf",
                f"L1  - file://{corpus}/nar-2024-gkae252.pdf",
                "ID  - masponte2024",
                "ER  - ",
                "",
                "TY  - CONF",
                "T1  - LongEval: Guidelines for Human Evaluation of Faithfulness in Long-form "
                "Summarization",
                "A1  - Krishna, Kalpesh",
                "A1  - Iyyer, Mohit",
                "JO  - Proceedings of EACL 2023",
                "Y1  - 2023///",
                f"UR  - {corpus}/eacl2023-main-121.pdf",
                "ER  - ",
                "",
                "TY  - BOOK",
                "TI  - Statistical Rethinking",
                "AU  - McElreath, Richard",
                "PY  - 2020",
                "UR  - https://xcelab.net/rm/",
                "ER  - ",
                "",
            ]
        ),
        encoding="utf-8",
    )
    nar, eacl, book = load_papers(library)
    assert nar.name == nar.key == "masponte2024"
    assert nar.ok and nar.path == corpus / "nar-2024-gkae252.pdf"
    assert nar.authors == ("David Mas-Ponte", "Fran Supek")
    assert (nar.year, nar.doi, nar.venue) == (2024, "10.1093/nar/gkae252", "Nucleic Acids Research")
    assert str(nar.source) == "ris: title, authors, year, doi, venue, key"
    # no ID: named by its file; the DOI the PDF lacks stays empty
    assert eacl.name == "eacl2023-main-121.pdf" and eacl.key is None and eacl.ok
    assert eacl.title.startswith("LongEval: Guidelines") and eacl.year == 2023
    assert eacl.venue == "Proceedings of EACL 2023" and eacl.doi is None
    assert book.status == "no_file" and book.title == "Statistical Rethinking"
    assert book.name == "export #3"


# ---------------------------------------------------------------- bad files


def test_a_malformed_bib_entry_names_the_file_line_and_entry(tmp_path: Path) -> None:
    library = tmp_path / "broken.bib"
    library.write_text(
        "@article{good, title={Fine}, year={2020}}\n\n@article{bad2021,\n  title = {Oops,\n",
        encoding="utf-8",
    )
    with pytest.raises(ReferenceFileError) as caught:
        load_papers(library)
    error = caught.value
    assert (error.path, error.entry, error.line) == (str(library), "bad2021", 3)
    assert str(library) in str(error) and "unclosed brace" in str(error)


def test_duplicate_bib_keys_are_refused(tmp_path: Path) -> None:
    library = tmp_path / "dup.bib"
    library.write_text("@misc{same, title={A}}\n@misc{same, title={B}}\n", encoding="utf-8")
    with pytest.raises(ReferenceFileError, match=r"dup\.bib, line 2, entry 'same': .*own key"):
        load_papers(library)


def test_a_file_that_is_not_bibtex_or_ris(tmp_path: Path) -> None:
    (tmp_path / "notes.bib").write_text("just some notes\n", encoding="utf-8")
    with pytest.raises(ReferenceFileError, match=r"no entries found.*Export the library"):
        load_papers(tmp_path / "notes.bib")
    (tmp_path / "notes.ris").write_text("just some notes\n", encoding="utf-8")
    with pytest.raises(ReferenceFileError, match="is this a RIS file"):
        load_papers(tmp_path / "notes.ris")


def test_a_cut_ris_record_is_refused(tmp_path: Path) -> None:
    library = tmp_path / "cut.ris"
    library.write_text(
        "TY  - JOUR\nTI  - One\nER  - \n\nTY  - JOUR\nTI  - Two, cut short\n", encoding="utf-8"
    )
    with pytest.raises(ReferenceFileError) as caught:
        load_papers(library)
    assert (caught.value.entry, caught.value.line) == ("#2", 5)
    assert "'ER  - ' end line" in str(caught.value)


def test_analyze_over_a_bib_library_fills_the_metadata_columns(
    corpus: Path, tmp_path: Path
) -> None:
    from dllm_notebook import Cluster
    from dllm_notebook.testing import FakeLab

    from .conftest import FAST

    library = tmp_path / "library.bib"
    library.write_text(_bib(corpus, tmp_path), encoding="utf-8")
    with FakeLab() as lab:
        server = lab.add("lm_studio", context_length=131072)
        with Cluster([server.url], store=None, **FAST) as cluster:
            long = cluster.analyze(
                library, prompts={"gist": "Gist: {content}"}, progress=False, long=True
            )
        sent = len([r for r in lab.log.records() if r.is_generation])
    wide = long.dllm.wide()
    assert list(wide.index) == [
        "lo_s2orc_2020",
        "gersingComprehensiveMapHuman2023",
        "Webb2017",
        "thomason2018",
        "mcelreath2020",
        "moved2021",
    ]  # the citation keys
    assert list(wide.columns) == ["gist", "title", "authors", "year", "doi", "venue", "source"]
    s2orc = wide.loc["lo_s2orc_2020"]
    assert s2orc["title"] == "S2ORC: The Semantic Scholar Open Research Corpus"
    assert next(iter(s2orc["authors"])) == "Kyle Lo" and s2orc["year"] == 2020
    assert s2orc["doi"] == "10.18653/v1/2020.acl-main.447"
    assert s2orc["source"].startswith("bibtex:")
    assert str(wide["year"].dtype) == "Int64"
    status = long.set_index("paper")["status"]
    assert status["mcelreath2020"] == "no_file"  # listed, never sent
    assert status["moved2021"] == "no_file"
    assert pd.isna(wide.loc["mcelreath2020", "gist"])
    assert sent == 4  # the four entries with a readable PDF
