"""Build sample_papers/*.pdf from the Markdown sources in scripts/sample_paper_sources/.

    uv run --no-sync python scripts/make_sample_papers.py

Each source starts with ``# Title`` and ``authors:``, ``affiliation:`` and ``keywords:``
lines, followed by ``## Section`` headings and paragraphs. The PDFs use the standard PDF
fonts (not embedded), so each is a few KB. Long words that do not fit at a line end are
hyphenated, so the sample papers exercise the reader's joining of hyphenated words. The
output is deterministic: running the script twice gives the same bytes.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymupdf

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ROOT / "scripts" / "sample_paper_sources"
OUTPUT = ROOT / "sample_papers"
FOOTER = (
    "Illustrative sample paper written for dllm_notebook: fictional authors, data and "
    "results. Page {page} of {pages}"
)
PAGE = pymupdf.paper_rect("a4")
LEFT, RIGHT, TOP, BOTTOM = 72.0, PAGE.width - 72.0, 72.0, PAGE.height - 66.0
FIXED_DATE = "D:20250101000000Z"


@dataclass(frozen=True)
class Style:
    font: str
    size: float
    space_before: float = 0.0
    leading: float = 1.3
    color: tuple[float, float, float] = (0, 0, 0)


TITLE = Style("hebo", 17, leading=1.2)
AUTHORS = Style("helv", 11, space_before=10)
AFFILIATION = Style("heit", 9, space_before=2)
KEYWORDS = Style("heit", 9, space_before=2)
HEADING = Style("hebo", 12, space_before=14)
BODY = Style("tiro", 10.5, space_before=6)
FOOTNOTE = Style("heit", 7.5, color=(0.35, 0.35, 0.35))


@dataclass
class Source:
    title: str
    header: dict[str, str]
    sections: list[tuple[str, list[str]]] = field(default_factory=list)


def parse(text: str) -> Source:
    lines = text.splitlines()
    title = lines[0].removeprefix("# ").strip()
    header: dict[str, str] = {}
    sections: list[tuple[str, list[str]]] = []
    paragraph: list[str] = []

    def flush() -> None:
        if paragraph and sections:
            sections[-1][1].append(" ".join(paragraph))
        paragraph.clear()

    for line in lines[1:]:
        if line.startswith("## "):
            flush()
            sections.append((line[3:].strip(), []))
        elif not sections and re.match(r"^[a-z]+: ", line):
            key, value = line.split(": ", 1)
            header[key] = value.strip()
        elif line.strip():
            paragraph.append(line.strip())
        else:
            flush()
    flush()
    return Source(title, header, sections)


def wrap(text: str, style: Style, width: float) -> list[str]:
    """Greedy line breaking; a long lower-case word that does not fit is hyphenated."""

    def fits(line: str) -> bool:
        return pymupdf.get_text_length(line, fontname=style.font, fontsize=style.size) <= width

    lines: list[str] = []
    line = ""
    for word in text.split():
        candidate = f"{line} {word}" if line else word
        if fits(candidate):
            line = candidate
            continue
        if len(word) >= 8 and word.isalpha() and word.islower():
            for cut in range(len(word) - 3, 3, -1):
                head = f"{line} {word[:cut]}-" if line else f"{word[:cut]}-"
                if fits(head):
                    lines.append(head)
                    line, word = "", word[cut:]
                    break
        if line:
            lines.append(line)
        line = word
    if line:
        lines.append(line)
    return lines


class Writer:
    def __init__(self) -> None:
        self.doc: Any = pymupdf.open()
        self.page: Any = None
        self.y = BOTTOM  # forces a new page on the first write

    def new_page(self) -> None:
        self.page = self.doc.new_page(width=PAGE.width, height=PAGE.height)
        self.y = TOP

    def block(self, text: str, style: Style, keep_with_next: float = 0.0) -> None:
        lines = wrap(text, style, RIGHT - LEFT)
        step = style.size * style.leading
        if self.y + style.space_before + step + keep_with_next > BOTTOM:
            self.new_page()
        else:
            self.y += style.space_before
        for line in lines:
            if self.y + step > BOTTOM:
                self.new_page()
            self.y += step
            self.page.insert_text(
                (LEFT, self.y - step * 0.25),
                line,
                fontname=style.font,
                fontsize=style.size,
                color=style.color,
            )

    def footers(self) -> None:
        for number, page in enumerate(self.doc, start=1):
            text = FOOTER.format(page=number, pages=self.doc.page_count)
            page.insert_text(
                (LEFT, PAGE.height - 40),
                text,
                fontname=FOOTNOTE.font,
                fontsize=FOOTNOTE.size,
                color=FOOTNOTE.color,
            )


def build(source: Source) -> bytes:
    writer = Writer()
    writer.block(source.title, TITLE)
    writer.block(source.header["authors"], AUTHORS)
    writer.block(source.header["affiliation"], AFFILIATION)
    writer.block("Keywords: " + source.header["keywords"], KEYWORDS)
    for heading, paragraphs in source.sections:
        writer.block(heading, HEADING, keep_with_next=3 * BODY.size * BODY.leading)
        for paragraph in paragraphs:
            writer.block(paragraph, BODY)
    writer.footers()
    writer.doc.set_metadata(
        {
            "title": source.title,
            "author": source.header["authors"],
            "subject": "Illustrative sample paper written for dllm_notebook (fictional)",
            "keywords": source.header["keywords"],
            "creator": "dllm_notebook scripts/make_sample_papers.py",
            "producer": "PyMuPDF",
            "creationDate": FIXED_DATE,
            "modDate": FIXED_DATE,
        }
    )
    for page in writer.doc:
        page.clean_contents()  # one content stream per page, not one per line
    data: bytes = writer.doc.tobytes(garbage=4, deflate=True, no_new_id=True)
    return data


def main() -> int:
    sources = sorted(SOURCES.glob("*.md"))
    if not sources:
        print(f"no sources in {SOURCES}", file=sys.stderr)
        return 1
    for path in sources:
        data = build(parse(path.read_text(encoding="utf-8")))
        target = OUTPUT / f"{path.stem}.pdf"
        target.write_bytes(data)
        pages = pymupdf.open(stream=data, filetype="pdf").page_count
        print(f"{target.relative_to(ROOT)}: {pages} pages, {len(data) / 1024:.1f} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
