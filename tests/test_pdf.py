"""Reading PDFs: the real corpus, the damaged copies, and PDFs made here with PyMuPDF."""

from __future__ import annotations

import hashlib
import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dllm_notebook._errors import DllmError
from dllm_notebook._reading.first_page import heading_title
from dllm_notebook._reading.paper import Paper
from dllm_notebook._reading.papers import load_papers
from dllm_notebook._reading.pdf import read_pdf

pymupdf = pytest.importorskip("pymupdf", reason="needs the [pdf] extra (PyMuPDF)")

ROOT = Path(__file__).resolve().parents[1]
CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
SAMPLES = ROOT / "sample_papers"
SOURCES = ROOT / "scripts" / "sample_paper_sources"
ENCRYPTED = "bad-password-required-hindawi-2010-rehab.pdf"
TRUNCATED = "bad-truncated-peerj-cs-2017-vespa.pdf"
needs_corpus = pytest.mark.skipif(
    not CORPUS.is_dir(), reason=f"the shared corpus is not at {CORPUS}"
)


def flat(text: str) -> str:
    return " ".join(text.split())


def make_pdf(path: Path, lines: list[str], *, embed_font: bool = True, **metadata: str) -> Path:
    """A one-page PDF with one text line per entry. The embedded font keeps ligature glyphs
    (U+FB01 ...) as themselves, like a typeset paper; unknown glyphs map to U+FFFD."""
    doc = pymupdf.open()
    page = doc.new_page()
    font = "helv"
    if embed_font:
        page.insert_font(fontname="F0", fontbuffer=pymupdf.Font("helv").buffer)
        font = "F0"
    for number, line in enumerate(lines):
        page.insert_text((72, 100 + 16 * number), line, fontname=font, fontsize=11)
    if metadata:
        doc.set_metadata(metadata)
    doc.save(path)
    return path


@pytest.fixture(scope="module")
def corpus_papers() -> dict[str, Paper]:
    if not CORPUS.is_dir():
        pytest.skip(f"the shared corpus is not at {CORPUS}")
    return {paper.name: paper for paper in load_papers(CORPUS, workers=1)}


# ---------------------------------------------------------------- the real corpus


@needs_corpus
def test_every_readable_corpus_paper_is_ok_with_text(corpus_papers: dict[str, Paper]) -> None:
    pdfs = sorted(p.name for p in CORPUS.glob("*.pdf"))
    assert [name for name in corpus_papers if name.endswith(".pdf")] == pdfs
    for name in pdfs:
        paper = corpus_papers[name]
        if name.startswith("bad-"):
            assert not paper.ok, name
            continue
        assert paper.status == "ok", (name, paper.message)
        assert len(paper.text) > 10_000, name
        assert 10 < len(paper.title) < 300, (name, paper.title)
        assert paper.title != Path(name).stem


@needs_corpus
@pytest.mark.parametrize(
    ("name", "start"),
    [
        ("acl2020-s2orc.pdf", "S2ORC: The Semantic Scholar Open Research Corpus"),
        # no metadata title: the first page's largest heading, over two lines
        ("eacl2023-main-121.pdf", "LONGEVAL: Guidelines for Human Evaluation of Faithfulness"),
        ("peerj-cs-2017-vespa.pdf", "VESPA: Very large-scale Evolutionary and Selective"),
        # a meaningless metadata title ("6489122611071476 1..10") is ignored
        ("bmc-2014-quality-improvement.pdf", "Understanding the barriers to setting up"),
        ("biorxiv-2024.02.13.580051.pdf", "REV1 Coordinates a Multi-Faceted Tolerance"),
    ],
)
def test_titles_of_known_papers(corpus_papers: dict[str, Paper], name: str, start: str) -> None:
    assert corpus_papers[name].title.startswith(start)


@needs_corpus
def test_authors_come_from_metadata(corpus_papers: dict[str, Paper]) -> None:
    acl = corpus_papers["acl2020-s2orc.pdf"]
    assert acl.authors[:2] == ("Kyle Lo", "Lucy Lu Wang") and acl.source.authors == "pdf_metadata"
    # empty in the PDF's metadata: the names under the title, superscript marks dropped
    eacl = corpus_papers["eacl2023-main-121.pdf"]
    assert eacl.authors[:3] == ("Kalpesh Krishna", "Erin Bransom", "Bailey Kuehl")
    assert eacl.authors[-1] == "Kyle Lo" and eacl.source.authors == "first_page"


@needs_corpus
def test_pages_and_hash_match_the_file(corpus_papers: dict[str, Paper]) -> None:
    for name, paper in corpus_papers.items():
        if not name.endswith(".pdf"):
            continue
        data = (CORPUS / name).read_bytes()
        assert paper.sha256 == hashlib.sha256(data).hexdigest(), name
        assert len(paper.pages) == paper.page_count, name
        if paper.ok:
            with pymupdf.open(CORPUS / name) as doc:
                assert paper.page_count == doc.page_count, name
            assert all(page in paper.text for page in paper.pages if page), name


@needs_corpus
def test_two_column_text_reads_column_by_column(corpus_papers: dict[str, Paper]) -> None:
    text = flat(corpus_papers["acl2020-s2orc.pdf"].text)
    # a sentence that wraps over five lines of the left column, two of them hyphenated
    assert (
        "To construct S2ORC, we must overcome challenges in (i) paper metadata aggregation, "
        "(ii) identifying open access publications, and (iii) clustering papers" in text
    )


@needs_corpus
def test_ligatures_expanded_and_line_end_hyphens_joined(corpus_papers: dict[str, Paper]) -> None:
    acl = flat(corpus_papers["acl2020-s2orc.pdf"].text)
    assert "Allen Institute for Artificial Intelligence" in acl
    assert "existing corpora are not without their limitations" in acl  # "limi-\ntations"
    assert "publicly-available academic text corpora" in acl  # a hyphen within a line stays
    for name, paper in corpus_papers.items():
        assert not re.search("[\ufb00-\ufb06\u00ad\x00-\x08]", paper.text), name


@needs_corpus
def test_encrypted_paper_needs_the_password(tmp_path: Path) -> None:
    locked = read_pdf(CORPUS / ENCRYPTED)
    assert locked.status == "encrypted"
    assert "password=" in locked.message and "qpdf" in locked.message
    assert locked.text == "" and locked.pages == () and locked.page_count == 0

    wrong = read_pdf(CORPUS / ENCRYPTED, password="not-it")
    assert wrong.status == "encrypted"
    assert "does not open it" in wrong.message

    opened = load_papers([CORPUS / ENCRYPTED], password="acceptance-test")[0]
    assert opened.status == "ok"
    assert opened.page_count == 6 == len(opened.pages)
    # the metadata title is empty; "Research Article", as large as the title, is skipped
    assert opened.title == "Patient Experiences of Structured Heart Failure Programmes"
    assert "heart failure" in opened.text.lower()


@needs_corpus
def test_truncated_download_is_corrupt() -> None:
    paper = read_pdf(CORPUS / TRUNCATED)
    assert paper.status == "corrupt"
    assert "re-download it" in paper.message
    assert paper.page_count == 0 and paper.text == ""


@needs_corpus
@pytest.mark.skipif(shutil.which("pdftotext") is None, reason="pdftotext (poppler-utils) missing")
def test_no_text_lost_compared_with_pdftotext(corpus_papers: dict[str, Paper]) -> None:
    def words(text: str) -> set[str]:
        return {w.lower() for w in re.findall(r"[^\W\d_]{4,}", text)}

    for name, paper in corpus_papers.items():
        if not paper.ok or not name.endswith(".pdf"):
            continue
        reference = subprocess.run(
            ["pdftotext", "-q", "-enc", "UTF-8", str(CORPUS / name), "-"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        expected = words(reference.replace("\ufb01", "fi").replace("\ufb02", "fl"))
        found = words(paper.text)
        assert len(expected & found) / len(expected) > 0.95, name


# ---------------------------------------------------------------- PDFs made here


def test_ligatures_and_hyphenation_on_a_made_pdf(tmp_path: Path) -> None:
    path = make_pdf(
        tmp_path / "made.pdf",
        [
            "The eﬃcient ﬁnal ﬂow of meth-",
            "ods, a state-of-the-",
            "art design for EF-",
            "1A and self-",
            "reported data.",
            "Self-reported data again, and enough words to count as a real text layer",
            "for one page of a paper, which needs a hundred visible characters or more.",
        ],
    )
    paper = read_pdf(path)
    assert paper.ok, paper.message
    text = flat(paper.text)
    assert "The efficient final flow of methods, a state-of-the-art design for EF-1A" in text
    # the paper writes "self-reported" within a line, so the line-end hyphen stays
    assert "and self-reported data." in text


def test_image_only_pdf_is_no_text(tmp_path: Path) -> None:
    doc = pymupdf.open()
    page = doc.new_page()
    pixmap = pymupdf.Pixmap(pymupdf.csRGB, pymupdf.IRect(0, 0, 300, 400), False)
    pixmap.set_rect(pixmap.irect, (230, 230, 230))
    page.insert_image(pymupdf.Rect(50, 50, 550, 750), pixmap=pixmap)
    doc.save(tmp_path / "scan.pdf")

    paper = read_pdf(tmp_path / "scan.pdf")
    assert paper.status == "no_text"
    assert "OCR" in paper.message and "ocrmypdf" in paper.message
    assert paper.page_count == 1 == len(paper.pages)


def test_unmappable_glyphs_are_garbled(tmp_path: Path) -> None:
    junk = "".join(chr(0xE000 + i) for i in range(70))  # glyphs the font cannot map back
    path = make_pdf(tmp_path / "garbled.pdf", [junk, junk, junk, "Results and discussion"])
    paper = read_pdf(path)
    assert paper.status == "garbled"
    assert "OCR" in paper.message


def test_zero_byte_pdf_is_empty(tmp_path: Path) -> None:
    (tmp_path / "zero.pdf").write_bytes(b"")
    paper = read_pdf(tmp_path / "zero.pdf")
    assert paper.status == "empty"
    assert paper.sha256 == hashlib.sha256(b"").hexdigest()
    assert "0 bytes" in paper.message


@pytest.mark.parametrize(
    "data", [b"<html><body>Access denied</body></html>", b"%PDF-1.4\n1 0 obj garbage"]
)
def test_not_a_pdf_is_corrupt(tmp_path: Path, data: bytes) -> None:
    (tmp_path / "download.pdf").write_bytes(data)
    paper = read_pdf(tmp_path / "download.pdf")
    assert paper.status == "corrupt"
    assert "re-download it" in paper.message


def test_meaningful_metadata_title_wins_and_placeholders_fall_back(tmp_path: Path) -> None:
    lines = ["Body text " * 12, "More body text " * 8]
    good = make_pdf(tmp_path / "a.pdf", lines, title="Heat and Trees", author="Ada Lovelace")
    assert read_pdf(good).title == "Heat and Trees"
    assert read_pdf(good).authors == ("Ada Lovelace",)

    doc = pymupdf.open()
    page = doc.new_page()
    page.insert_text((72, 80), "Tree Canopy and", fontname="hebo", fontsize=20)
    page.insert_text((72, 104), "Surface Temperature", fontname="hebo", fontsize=20)
    page.insert_text((72, 140), "Body text " * 12, fontname="helv", fontsize=10)
    doc.set_metadata({"title": "Microsoft Word - draft3.docx", "author": "Administrator"})
    doc.save(tmp_path / "b.pdf")
    paper = read_pdf(tmp_path / "b.pdf")
    assert paper.title == "Tree Canopy and Surface Temperature"
    assert paper.authors == ()  # a placeholder, and no names under the title


def test_missing_file_raises_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DllmError, match=r"no such PDF file.*nope\.pdf"):
        read_pdf(tmp_path / "nope.pdf")


def test_missing_pymupdf_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_pdf(tmp_path / "a.pdf", ["text"], embed_font=False)
    (tmp_path / "notes.txt").write_text("Plain notes need no PyMuPDF.", encoding="utf-8")
    monkeypatch.setitem(sys.modules, "pymupdf", None)  # makes `import pymupdf` fail
    with pytest.raises(DllmError, match=re.escape("pip install --force-reinstall pymupdf")):
        load_papers(tmp_path)
    assert load_papers(tmp_path / "notes.txt")[0].ok


# ---------------------------------------------------------------- the sample papers


def _load_script() -> Any:
    spec = importlib.util.spec_from_file_location(
        "make_sample_papers", ROOT / "scripts" / "make_sample_papers.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_sample_papers_match_their_sources() -> None:
    script = _load_script()
    sources = sorted(SOURCES.glob("*.md"))
    assert len(sources) == 5
    for source in sources:
        built = script.build(script.parse(source.read_text(encoding="utf-8")))
        assert (SAMPLES / f"{source.stem}.pdf").read_bytes() == built, (
            f"{source.stem}.pdf is stale: run scripts/make_sample_papers.py"
        )


def test_sample_papers_read_as_complete_papers() -> None:
    papers = load_papers(SAMPLES)
    assert [p.name for p in papers] == sorted(f"{s.stem}.pdf" for s in SOURCES.glob("*.md"))
    for paper in papers:
        source = (SOURCES / paper.name.replace(".pdf", ".md")).read_text(encoding="utf-8")
        assert paper.ok and 1 <= paper.page_count <= 2, paper.name
        assert paper.title == source.splitlines()[0].removeprefix("# ")
        assert paper.authors and all(author in source for author in paper.authors)
        for section in ("Abstract", "Introduction", "Methods", "Results", "Limitations"):
            assert re.search(rf"^(\d )?{section}$", paper.text, re.MULTILINE), (paper.name, section)
        assert "Future work" in paper.text
        assert "Illustrative sample paper written for dllm_notebook" in paper.text
        assert 600 <= len(paper.text.split()) <= 1300
        # every word of the source comes back whole, hyphenated line ends included
        body = source.split("## Abstract", 1)[1]
        missing = set(re.findall(r"[A-Za-z]+", body)) - set(re.findall(r"[A-Za-z]+", paper.text))
        assert not missing, (paper.name, sorted(missing)[:10])


def test_sample_papers_exercise_line_end_hyphens_and_headings() -> None:
    hyphenated = 0
    for path in sorted(SAMPLES.glob("*.pdf")):
        with pymupdf.open(path) as doc:
            raw = "".join(page.get_text() for page in doc)
            hyphenated += len(re.findall(r"[a-z]-\n[a-z]", raw))
            title = heading_title(doc.load_page(0).get_text("dict"))
            assert title == doc.metadata["title"], path.name  # heading and metadata agree
            assert doc.page_count == 2 or path.name != "soil-microbiome-drought.pdf"
    assert hyphenated >= 5
