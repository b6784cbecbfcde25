"""load_papers: folders, lists, text files, names, bad files, and the process pool."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from dllm_notebook._errors import DllmError
from dllm_notebook._reading.paper import PAPER_STATUSES, Paper
from dllm_notebook._reading.papers import load_papers

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
SAMPLES = Path(__file__).resolve().parents[1] / "sample_papers"
PAPER_TEXT = "Tree cover and heat.\n\nWe measured surface temperature in 1,240 city blocks."


def write(path: Path, text: str = PAPER_TEXT) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_statuses() -> None:
    assert set(PAPER_STATUSES) == {
        "ok",
        "no_text",
        "encrypted",
        "corrupt",
        "empty",
        "unsupported",
        "garbled",
        "no_file",
    }


def test_folder_gives_papers_in_sorted_order_skipping_hidden_and_other_types(
    tmp_path: Path,
) -> None:
    for name in ["b.md", "a.txt", "C.TXT", ".hidden.txt", "notes.docx", "data.csv"]:
        write(tmp_path / name)
    write(tmp_path / "sub" / "deep.txt")
    papers = load_papers(tmp_path)
    assert [p.name for p in papers] == ["C.TXT", "a.txt", "b.md"]
    assert all(p.ok for p in papers)
    assert papers[1].path == tmp_path / "a.txt"


def test_recursive_reads_subfolders_but_not_hidden_ones(tmp_path: Path) -> None:
    write(tmp_path / "top.txt")
    write(tmp_path / "sub" / "deep.md")
    write(tmp_path / ".git" / "notes.txt")
    names = [p.name for p in load_papers(tmp_path, recursive=True)]
    assert names == ["deep.md", "top.txt"]


def test_same_file_name_in_two_subfolders_gets_unique_names(tmp_path: Path) -> None:
    write(tmp_path / "2023" / "paper.txt", "First paper.")
    write(tmp_path / "2024" / "paper.txt", "Second paper.")
    papers = load_papers(tmp_path, recursive=True)
    assert [p.name for p in papers] == ["2023/paper.txt", "2024/paper.txt"]
    assert [p.text for p in papers] == ["First paper.", "Second paper."]


def test_list_mixes_paths_and_papers_in_order(tmp_path: Path) -> None:
    memo = Paper.from_text("memo", "An in-memory abstract.")
    first = write(tmp_path / "z.txt")
    second = write(tmp_path / "a.md", "# A Markdown Title\n\nBody.")
    papers = load_papers([str(first), memo, second, first])  # the repeated file is read once
    assert [p.name for p in papers] == ["z.txt", "memo", "a.md"]
    assert papers[1] is memo
    assert papers[2].title == "A Markdown Title"


def test_papers_with_equal_names_are_numbered() -> None:
    papers = load_papers([Paper.from_text("x", "one"), Paper.from_text("x", "two")])
    assert [p.name for p in papers] == ["x", "x (2)"]
    assert [p.text for p in papers] == ["one", "two"]


def test_explicit_file_of_another_type_is_unsupported(tmp_path: Path) -> None:
    docx = tmp_path / "paper.docx"
    docx.write_bytes(b"PK\x03\x04 not really a docx")
    paper = load_papers(docx)[0]
    assert paper.status == "unsupported"
    assert not paper.ok
    assert ".pdf, .txt and .md" in paper.message and "'.docx'" in paper.message


def test_missing_path_raises_naming_it(tmp_path: Path) -> None:
    with pytest.raises(DllmError, match=r"no such file or folder: .*missing-folder"):
        load_papers(tmp_path / "missing-folder")


def test_folder_without_papers_says_what_is_read(tmp_path: Path) -> None:
    write(tmp_path / "table.csv")
    with pytest.raises(DllmError, match=r"reads \.pdf, \.txt and \.md files"):
        load_papers(tmp_path)
    write(tmp_path / "sub" / "paper.txt")
    with pytest.raises(DllmError, match="recursive=True"):
        load_papers(tmp_path)
    assert [p.name for p in load_papers(tmp_path, recursive=True)] == ["paper.txt"]


def test_workers_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(DllmError, match="workers must be 1 or more"):
        load_papers(write(tmp_path / "a.txt"), workers=0)


# ---------------------------------------------------------------- text files


def test_text_file_record(tmp_path: Path) -> None:
    path = write(
        tmp_path / "notes.txt", "  Soil microbes\tand drought\r\n\n\n\nPage one.\fPage two.\n"
    )
    paper = load_papers(path)[0]
    assert paper.ok and paper.message == ""
    assert paper.title == "Soil microbes and drought"
    assert paper.authors == ()
    assert paper.pages == ("Soil microbes and drought\n\nPage one.", "Page two.")
    assert paper.page_count == 2
    assert paper.text == "Soil microbes and drought\n\nPage one.\n\nPage two."
    assert paper.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_text_encodings(tmp_path: Path) -> None:
    (tmp_path / "utf16.txt").write_bytes("Über Bäume".encode("utf-16"))
    (tmp_path / "latin.txt").write_bytes("Caf\xe9 culture".encode("cp1252"))
    (tmp_path / "binary.txt").write_bytes(b"\x00\x01\x02 PK binary")
    utf16, latin, binary = (
        load_papers(tmp_path / f"{n}.txt")[0] for n in ("utf16", "latin", "binary")
    )
    assert utf16.text == "Über Bäume"
    assert latin.text == "Café culture"
    assert binary.status == "corrupt" and "binary data" in binary.message


def test_empty_text_files(tmp_path: Path) -> None:
    (tmp_path / "zero.txt").write_bytes(b"")
    write(tmp_path / "blank.md", " \n\t\n")
    zero, blank = load_papers([tmp_path / "zero.txt", tmp_path / "blank.md"])
    assert zero.status == "empty" and "0 bytes" in zero.message
    assert blank.status == "empty" and "only whitespace" in blank.message


def test_private_use_text_is_garbled(tmp_path: Path) -> None:
    junk = "".join(chr(0xE000 + i % 200) for i in range(300))
    paper = load_papers(write(tmp_path / "junk.txt", f"Title\n{junk}"))[0]
    assert paper.status == "garbled"
    assert "OCR" in paper.message


def test_from_text() -> None:
    paper = Paper.from_text("abstract-7", "Urban heat\u00a0islands  and\x07 trees.", title="UHI")
    assert paper.ok and paper.path is None
    assert paper.title == "UHI"
    assert paper.text == "Urban heat islands and trees."
    assert paper.sha256 == hashlib.sha256(b"Urban heat\xc2\xa0islands  and\x07 trees.").hexdigest()
    assert (paper.page_count, paper.pages) == (1, ("Urban heat islands and trees.",))
    assert Paper.from_text("blank", "  ").status == "empty"
    assert Paper.from_text("untitled", "First line\nsecond").title == "First line"


def test_repr_is_short() -> None:
    paper = Paper.from_text("long", "word " * 10_000)
    assert len(repr(paper)) < 200
    assert "'long'" in repr(paper) and "status='ok'" in repr(paper)


# ---------------------------------------------------------------- bad files and processes


def test_bad_files_never_raise(tmp_path: Path) -> None:
    pytest.importorskip("pymupdf", reason="needs the [pdf] extra (PyMuPDF)")
    (tmp_path / "zero.pdf").write_bytes(b"")
    (tmp_path / "page.pdf").write_bytes(b"<!DOCTYPE html><html>Sign in</html>")
    (tmp_path / "cut.pdf").write_bytes((SAMPLES / "battery-degradation.pdf").read_bytes()[:900])
    write(tmp_path / "fine.txt")
    (tmp_path / "slides.pptx").write_bytes(b"PK")
    papers = load_papers([tmp_path, tmp_path / "slides.pptx"])
    assert {p.name: p.status for p in papers} == {
        "cut.pdf": "corrupt",
        "fine.txt": "ok",
        "page.pdf": "corrupt",
        "zero.pdf": "empty",
        "slides.pptx": "unsupported",
    }
    assert all(p.message for p in papers if not p.ok)


@pytest.mark.skipif(not CORPUS.is_dir(), reason=f"the shared corpus is not at {CORPUS}")
def test_parallel_reading_gives_the_same_papers_in_order(tmp_path: Path) -> None:
    pytest.importorskip("pymupdf", reason="needs the [pdf] extra (PyMuPDF)")
    # enough PDFs (several seconds of reading) that the worker process starts and takes part
    for copy in range(6):
        for pdf in CORPUS.glob("*.pdf"):
            (tmp_path / f"{pdf.stem}-{copy}.pdf").write_bytes(pdf.read_bytes())
    sources = sorted(tmp_path.glob("*.pdf")) + sorted(SAMPLES.glob("*.pdf"))
    sequential = load_papers(sources, workers=1, password="acceptance-test")
    parallel = load_papers(sources, workers=2, password="acceptance-test")
    assert parallel == sequential
    assert [p.path for p in parallel] == sources
    assert sum(not p.ok for p in parallel) == 6  # the truncated download, six times


def test_pages_start_where_each_page_starts_in_the_text(corpus: Path) -> None:
    pytest.importorskip("pymupdf")
    from dllm_notebook._reading.pdf import read_pdf

    papers = [read_pdf(path) for path in sorted(corpus.glob("*.pdf"))]
    assert sum(paper.ok for paper in papers) >= 10
    for paper in papers:
        assert len(paper.page_starts) == paper.page_count
        for number, (page, start) in enumerate(zip(paper.pages, paper.page_starts, strict=True), 1):
            if page:
                assert paper.text[start : start + len(page)] == page
                assert paper.page_at(start) == number
                assert paper.page_at(start + len(page) - 1) == number


def test_text_papers_have_one_page_and_form_feeds_make_more(tmp_path: Path) -> None:
    (markdown,) = load_papers(write(tmp_path / "notes.md", "# Heat\n\n" + PAPER_TEXT))
    assert markdown.page_starts == (0,)
    assert markdown.page_at(markdown.text.index("1,240")) == 1
    one = Paper.from_text("notes.txt", "Soil microbes respond to drought within days.")
    assert one.page_starts == (0,)
    assert one.page_at(len(one.text) - 1) == 1
    split = Paper.from_text("a", "first page\f\fthird page\f")
    assert split.page_starts == (0, 12, 12, 22)
    assert split.page_at(split.text.index("third")) == 3
    assert split.page_at(split.text.index("first")) == 1


def test_an_offset_outside_the_text_says_which_offsets_exist() -> None:
    paper = Paper.from_text("notes.txt", "Short text.")
    with pytest.raises(DllmError, match=r"offset 11 is outside the text of 'notes.txt'.*0 to 10"):
        paper.page_at(11)
    with pytest.raises(DllmError):
        paper.page_at(-1)
