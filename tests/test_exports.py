"""Exports co-authors open (Excel, CSV, Markdown, BibTeX, RIS) and the notebook view, on
tables that analyze() made over emulated servers: the sample papers with typed prompts,
and a .bib library of corpus papers as Zotero and Better BibTeX write it."""

from __future__ import annotations

import html
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import openpyxl
import pandas as pd
import pytest
import rispy
from bibtexparser import middlewares
from bibtexparser.entrypoint import parse_string

from dllm_notebook import Cluster, StylerUnavailable
from dllm_notebook.cli._jobs import write_results
from dllm_notebook.testing import FakeLab

from .cli_helpers import dllm, worker, write_config
from .conftest import CORPUS, FAST, SAMPLE_PAPERS

TYPED = {
    "sample_size": {"template": "Paper:\n{content}\n\nHow many samples?", "type": "integer"},
    "effect": {"template": "Paper:\n{content}\n\nThe main effect size?", "type": "number"},
    "replicated": {"template": "Paper:\n{content}\n\nWas it replicated?", "type": "boolean"},
    "datasets": {"template": "Paper:\n{content}\n\nWhich datasets?", "type": "list"},
    "summary": {"template": "Paper:\n{content}\n\nSummarize the findings."},
}
LIBRARY_PROMPTS = {"gist": "Gist of {title}: {content}", "pages": "Pages of {title}: {content}"}
# A real DOI of the 1990s (a SICI) with characters HTML and URLs must escape.
SICI_DOI = "10.1002/(SICI)1097-4571(199806)49:8<693::AID-ASI4>3.0.CO;2-0"


def _bib(corpus: Path) -> str:
    return f"""@inproceedings{{lo_s2orc_2020,
\ttitle = {{{{S2ORC}}: {{The}} {{Semantic}} {{Scholar}} {{Open}} {{Research}} {{Corpus}}}},
\tdoi = {{10.18653/v1/2020.acl-main.447}},
\tbooktitle = {{Proceedings of the 58th {{Annual}} {{Meeting}} of the {{Association}} for {{Computational}} {{Linguistics}}}},
\tauthor = {{Lo, Kyle and Wang, Lucy Lu and Neumann, Mark and Kinney, Rodney and Weld, Daniel}},
\tyear = {{2020}},
\tfile = {{Full Text PDF:{corpus}/acl2020-s2orc.pdf:application/pdf;Snapshot:{corpus}/s.html:text/html}},
}}

@article{{gersingComprehensiveMapHuman2023,
  title = {{A Comprehensive Map of Human Glucokinase Variant Activity}},
  author = {{Gersing, Sarah and Cot{{\\'e}}, Atina G. and Lindorff-Larsen, Kresten}},
  date = {{2023-05-31}},
  journaltitle = {{Genome Biology}},
  doi = {{10.1186/s13059-023-02935-8}},
  file = {{{corpus}/genomebiol-2023-s13059-023-02935-8.pdf}}
}}

@book{{mcelreath2020,
  title = {{Statistical Rethinking}},
  author = {{McElreath, Richard}},
  year = {{2020}},
}}
"""  # noqa: E501 (exported libraries have long lines)


@pytest.fixture(scope="module")
def lab() -> Iterator[FakeLab]:
    with FakeLab() as lab:
        yield lab


@pytest.fixture(scope="module")
def typed(lab: FakeLab, tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """The sample papers with typed prompts and checked evidence (wide)."""
    server = lab.add("openai", context_length=32768)
    store = tmp_path_factory.mktemp("typed") / "store.sqlite"
    with Cluster([server.url], store=store, **FAST) as cluster:
        frame: pd.DataFrame = cluster.analyze(
            SAMPLE_PAPERS, prompts=TYPED, evidence=True, progress=False
        )
    return frame


@pytest.fixture(scope="module")
def library(lab: FakeLab, tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """Two corpus papers and an entry without a PDF, from a .bib library (wide)."""
    if not CORPUS.is_dir():
        pytest.skip(f"the shared corpus is not at {CORPUS}")
    folder = tmp_path_factory.mktemp("library")
    bib = folder / "library.bib"
    bib.write_text(_bib(CORPUS), encoding="utf-8")
    server = lab.add("lm_studio", context_length=200_000)
    with Cluster([server.url], store=folder / "store.sqlite", **FAST) as cluster:
        frame: pd.DataFrame = cluster.analyze(bib, prompts=LIBRARY_PROMPTS, progress=False)
    return frame


def _note_lines(wide: pd.DataFrame, paper: str) -> list[str]:
    """What the note of ``paper`` must say: one line per answered prompt."""
    lines = []
    for prompt in wide.dllm.answers().columns:
        value = wide.loc[paper, prompt]
        if isinstance(value, list):
            value = "; ".join(value)
        elif pd.isna(value):
            continue
        lines.append(f"{prompt}: {' '.join(str(value).split())}")
    return lines


# -- Excel --------------------------------------------------------------------------------


def test_excel_table_sheet_is_typed_wrapped_and_frozen(typed: pd.DataFrame, tmp_path: Path) -> None:
    typed.dllm.to_excel(tmp_path / "review.xlsx")
    book = openpyxl.load_workbook(tmp_path / "review.xlsx")
    assert book.sheetnames == ["table", "evidence", "provenance"]
    sheet = book["table"]
    assert sheet.freeze_panes == "B2"  # header row and paper column stay in view
    header = [c.value for c in sheet[1]]
    assert header == ["paper", *typed.columns]
    column = {name: i + 1 for i, name in enumerate(header)}
    assert [sheet.cell(r, 1).value for r in range(2, 7)] == list(typed.index)
    for row, paper in enumerate(typed.index, start=2):
        size = sheet.cell(row, column["sample_size"])
        assert size.data_type == "n" and size.value == typed.loc[paper, "sample_size"]
        effect = sheet.cell(row, column["effect"])
        assert effect.data_type == "n" and effect.value == pytest.approx(typed.loc[paper, "effect"])
        flag = sheet.cell(row, column["replicated"])
        assert flag.data_type == "b" and flag.value is bool(typed.loc[paper, "replicated"])
        assert sheet.cell(row, column["datasets"]).value == "; ".join(typed.loc[paper, "datasets"])
        assert sheet.cell(row, column["authors"]).value == "; ".join(typed.loc[paper, "authors"])
        summary = sheet.cell(row, column["summary"])
        assert summary.value == typed.loc[paper, "summary"]
        assert summary.alignment.wrap_text
    widths = {name: sheet.column_dimensions[chr(64 + i)].width for name, i in column.items()}
    assert widths["title"] == 60  # long text: capped, wrapped
    assert widths["effect"] < 20


def test_excel_of_a_table_read_back_from_parquet(typed: pd.DataFrame, tmp_path: Path) -> None:
    typed.to_parquet(tmp_path / "review.parquet")
    back = pd.read_parquet(tmp_path / "review.parquet")  # list cells come back as arrays
    back.dllm.to_excel(tmp_path / "back.xlsx")
    book = openpyxl.load_workbook(tmp_path / "back.xlsx")
    rows = list(book["table"].values)
    column = rows[0].index("datasets")
    assert [r[column] for r in rows[1:]] == ["; ".join(v) for v in typed["datasets"]]
    cells = [v for row in book["provenance"].values for v in row]
    assert typed.attrs["dllm_run"] in cells  # the run id came through Parquet's attrs
    assert back.dllm.to_bibtex() == typed.dllm.to_bibtex()


def test_excel_evidence_and_provenance_sheets(typed: pd.DataFrame, tmp_path: Path) -> None:
    typed.dllm.to_excel(tmp_path / "review.xlsx")
    book = openpyxl.load_workbook(tmp_path / "review.xlsx")
    evidence = book["evidence"]
    rows = list(evidence.values)
    assert rows[0] == ("paper", "prompt", "quote", "page", "match")
    expected = typed.dllm.evidence()
    assert len(expected) > 0 and len(rows) - 1 == len(expected)
    for got, (_, want) in zip(rows[1:], expected.iterrows(), strict=True):
        assert got[:3] == (want["paper"], want["prompt"], want["quote"])
        assert isinstance(got[3], int) and got[3] == want["page"]
        assert got[4] == want["match"]
    cells = [v for row in book["provenance"].values for v in row if v is not None]
    assert typed.attrs["dllm_run"] in cells
    assert typed.attrs["dllm_summary"] in cells
    long = typed.dllm.long()
    assert set(long["worker"]) <= set(cells) and set(long["model"]) <= set(cells)
    by_prompt = {row[0]: row for row in book["provenance"].values if row[0] in TYPED}
    assert {p: by_prompt[p][1] for p in TYPED} == {p: TYPED[p].get("type", "text") for p in TYPED}
    assert all(by_prompt[p][3] == 5 for p in TYPED)  # answered, of 5 papers


def test_excel_keeps_unsafe_text_as_text(typed: pd.DataFrame, tmp_path: Path) -> None:
    edited = typed.copy()
    first, second = edited.index[:2]
    edited.loc[first, "summary"] = '=HYPERLINK("http://example.org")\x07 rings a bell'
    edited.loc[second, "summary"] = "long " * 10_000
    edited.dllm.to_excel(tmp_path / "edited.xlsx")
    sheet = openpyxl.load_workbook(tmp_path / "edited.xlsx")["table"]
    column = [c.value for c in sheet[1]].index("summary") + 1
    formula = sheet.cell(2, column)
    assert formula.data_type == "s"  # shown as text, never run as a formula
    assert formula.value == '=HYPERLINK("http://example.org") rings a bell'
    cut = sheet.cell(3, column).value
    assert len(cut) == 32_767 and cut.endswith("longer than an Excel cell holds]")


# -- CSV ----------------------------------------------------------------------------------


def test_csv_is_utf8_with_a_bom_and_lists_as_json(library: pd.DataFrame, tmp_path: Path) -> None:
    library.dllm.to_csv(tmp_path / "review.csv")
    raw = (tmp_path / "review.csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # Excel reads UTF-8 only with the mark
    back = pd.read_csv(tmp_path / "review.csv", encoding="utf-8-sig", index_col="paper")
    assert list(back.index) == list(library.index)
    authors = json.loads(back.loc["gersingComprehensiveMapHuman2023", "authors"])
    assert authors == list(library.loc["gersingComprehensiveMapHuman2023", "authors"])
    assert "Atina G. Coté" in authors  # the accent survives
    assert back.loc["lo_s2orc_2020", "gist"] == library.loc["lo_s2orc_2020", "gist"]
    # A table read back from the CSV still exports its papers with their authors.
    entries = parse_string(
        back.dllm.to_bibtex(), append_middleware=[middlewares.LatexDecodingMiddleware()]
    ).entries
    author = next(f.value for f in entries[1].fields if f.key == "author")
    assert author.split(" and ") == authors


def test_csv_of_the_long_form_keeps_quotes_as_json(typed: pd.DataFrame, tmp_path: Path) -> None:
    long = typed.dllm.long()
    long.dllm.to_csv(tmp_path / "long.csv")
    back = pd.read_csv(tmp_path / "long.csv", encoding="utf-8-sig")
    assert list(back.columns) == list(long.columns)  # no index column added
    quotes = [json.loads(q) for q in back["quotes"].dropna()]
    assert sum(len(q) for q in quotes) == len(typed.dllm.evidence())
    assert [json.loads(a) for a in back["authors"]] == [list(a) for a in long["authors"]]


# -- Markdown -----------------------------------------------------------------------------


def test_markdown_table_escapes_pipes_and_line_breaks(typed: pd.DataFrame) -> None:
    edited = typed.copy()
    first = edited.index[0]
    edited.loc[first, "summary"] = "a | b\nsecond line"
    lines = edited.dllm.to_markdown().splitlines()
    assert lines[0] == "| paper | " + " | ".join(typed.columns) + " |"
    assert lines[1].startswith("|---|---:|---:|")  # numbers right-aligned
    assert len(lines) == 2 + len(typed)
    for line in lines:  # every row has the same cells: no pipe leaks out of one
        assert len(re.findall(r"(?<!\\)\|", line)) == len(typed.columns) + 2
    assert "a \\| b<br>second line" in lines[2]
    assert lines[2].startswith(f"| {first} | {typed.loc[first, 'sample_size']} |")


# -- BibTeX and RIS -----------------------------------------------------------------------


def test_bibtex_round_trips_keys_and_answers(library: pd.DataFrame, tmp_path: Path) -> None:
    text = library.dllm.to_bibtex(tmp_path / "review.bib")
    assert (tmp_path / "review.bib").read_text(encoding="utf-8") == text
    parsed = parse_string(text, append_middleware=[middlewares.LatexDecodingMiddleware()])
    assert not parsed.failed_blocks
    entries = {e.key: e for e in parsed.entries}
    assert list(entries) == list(library.index)  # citation keys as entry keys
    for key, entry in entries.items():
        fields = {f.key: f.value for f in entry.fields}
        assert fields["title"] == library.loc[key, "title"]
        assert fields["author"].split(" and ") == list(library.loc[key, "authors"])
        note = _note_lines(library, key)
        assert fields.get("note", "").splitlines() == note
    gersing = {f.key: f.value for f in entries["gersingComprehensiveMapHuman2023"].fields}
    assert entries["gersingComprehensiveMapHuman2023"].entry_type == "article"
    assert gersing["journal"] == "Genome Biology" and gersing["year"] == "2023"
    assert gersing["doi"] == "10.1186/s13059-023-02935-8"
    assert len(gersing["note"].splitlines()) == len(LIBRARY_PROMPTS)
    no_file = {f.key for f in entries["mcelreath2020"].fields}
    assert "note" not in no_file  # never read, so no answers; the paper is still listed


def test_bibtex_keys_from_file_names_and_typed_answers(typed: pd.DataFrame) -> None:
    parsed = parse_string(
        typed.dllm.to_bibtex(), append_middleware=[middlewares.LatexDecodingMiddleware()]
    )
    keys = [e.key for e in parsed.entries]
    assert keys == [name.removesuffix(".pdf") for name in typed.index]
    for entry, paper in zip(parsed.entries, typed.index, strict=True):
        note = next(f.value for f in entry.fields if f.key == "note")
        assert note.splitlines() == _note_lines(typed, paper)
        assert f"sample_size: {typed.loc[paper, 'sample_size']}" in note


def test_ris_round_trips_one_note_line_per_prompt(library: pd.DataFrame, tmp_path: Path) -> None:
    text = library.dllm.to_ris(tmp_path / "review.ris")
    records = rispy.loads(text)
    assert [r["id"] for r in records] == list(library.index)
    for record in records:
        key = record["id"]
        assert record["title"] == library.loc[key, "title"]
        assert record["authors"] == list(library.loc[key, "authors"])
        # rispy reads the note's lines as it reads continued lines: one item each
        assert record.get("notes", []) == _note_lines(library, key)
    s2orc = next(r for r in records if r["id"] == "lo_s2orc_2020")
    assert s2orc["doi"] == "10.18653/v1/2020.acl-main.447" and s2orc["year"] == "2020"
    assert s2orc["type_of_reference"] == "JOUR"
    assert next(r for r in records if r["id"] == "mcelreath2020")["year"] == "2020"


# -- the notebook view --------------------------------------------------------------------


def test_show_wraps_text_sticks_the_index_and_links_dois(library: pd.DataFrame) -> None:
    edited = library.copy()
    edited.loc["mcelreath2020", "doi"] = SICI_DOI
    edited.loc["lo_s2orc_2020", "gist"] = "<script>alert(1)</script> & more"
    page = edited.dllm.show().to_html()
    assert "position: sticky" in page
    assert "white-space: pre-wrap" in page
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in page
    assert (
        '<a href="https://doi.org/10.18653/v1/2020.acl-main.447" target="_blank" '
        'rel="noopener">10.18653/v1/2020.acl-main.447</a>'
    ) in page
    sici = re.search(r'<a href="([^"]*)"[^>]*>([^<]*)</a>', page[page.index("SICI") - 60 :])
    assert sici is not None
    assert sici.group(1) == "https://doi.org/" + SICI_DOI.replace("<", "%3C").replace(">", "%3E")
    assert html.unescape(sici.group(2)) == SICI_DOI


def test_show_colours_each_status_of_the_long_form(library: pd.DataFrame) -> None:
    long = library.dllm.long()
    assert set(long["status"]) == {"ok", "no_file"}
    page = long.dllm.show().to_html()
    status = list(long.columns).index("status")
    colours = {}
    for row, value in enumerate(long["status"]):
        cell = re.search(rf"#(T_\w+)_row{row}_col{status}[^{{]*{{([^}}]*)}}", page)
        assert cell is not None, f"row {row} has no style"
        colours[value] = re.search(r"background-color: (#\w+)", cell.group(2)).group(1)  # type: ignore[union-attr]
    assert colours["ok"] != colours["no_file"]


def test_show_without_jinja2_says_what_to_install(
    library: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "jinja2", None)  # as if it were not installed
    with pytest.raises(StylerUnavailable, match=r"pip install 'dllm-notebook\[notebook\]'"):
        library.dllm.show()


# -- dllm analyze -o ----------------------------------------------------------------------


def test_cli_analyze_writes_a_workbook(lab: FakeLab, tmp_path: Path) -> None:
    server = lab.add("ollama", models=["llama3.2"], context_length=32768)
    config = write_config(tmp_path / "workers.json", [worker(server, "ollama", "ollama")])
    out = tmp_path / "review.xlsx"
    result = dllm(
        "analyze", str(SAMPLE_PAPERS), "-p", "Gist of {title}: {content}",
        "-c", str(config), "-o", str(out), cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"Wrote {out}" in result.stdout
    book = openpyxl.load_workbook(out)
    assert book.sheetnames == ["table", "evidence", "provenance"]
    names = sorted(p.name for p in SAMPLE_PAPERS.iterdir() if p.suffix == ".pdf")
    table = list(book["table"].values)
    assert table[0][:2] == ("paper", "gist_title_content")
    assert sorted(row[0] for row in table[1:]) == names
    assert all(row[1].startswith("ECHO ") for row in table[1:])
    provenance = [v for row in book["provenance"].values for v in row]
    assert "ollama" in provenance and "llama3.2:latest" in provenance


def test_cli_writes_each_export_by_its_extension(typed: pd.DataFrame, tmp_path: Path) -> None:
    long = typed.dllm.long()
    for suffix in (".csv", ".md", ".bib", ".ris"):
        wide = write_results(long, tmp_path / f"review{suffix}")
        assert list(wide.index) == list(typed.index)
    csv = tmp_path / "review.csv"
    assert csv.read_bytes().startswith(b"\xef\xbb\xbf")
    back = pd.read_csv(csv, encoding="utf-8-sig", index_col="paper")
    assert list(back.columns) == list(typed.columns)
    assert (tmp_path / "review.md").read_text(encoding="utf-8") == typed.dllm.to_markdown()
    assert (tmp_path / "review.bib").read_text(encoding="utf-8") == typed.dllm.to_bibtex()
    assert (tmp_path / "review.ris").read_text(encoding="utf-8") == typed.dllm.to_ris()
