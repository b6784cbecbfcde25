"""Text layers that are symbol soup: found page by page, and never on real papers.

The garbled PDFs are made here from real pages of the shared corpus: their characters
remapped through a substitution and drawn with an embedded font, or drawn with a Type 3
font whose glyphs have no Unicode names (what old Ghostscript versions wrote), so the
text layer reads as the font's raw codes.
"""

from __future__ import annotations

import random
import string
from pathlib import Path

import pytest

from dllm_notebook._reading.language import garbled_pages
from dllm_notebook._reading.papers import load_papers
from dllm_notebook._reading.pdf import read_pdf

pymupdf = pytest.importorskip("pymupdf", reason="needs the [pdf] extra (PyMuPDF)")

SOURCE = "peerj-cs-2017-vespa.pdf"
MATH_SYMBOLS = "∑∂∫αβγδεζηθλμνξπρστφχψω≤≥≈≠∞∇∈∉⊂⊃∪∩±×÷√∝∀∃"
SOUP = string.ascii_uppercase + string.digits + "#>%&@!?;:<=+*/"

FRENCH = (
    "Résumé. Cette étude examine les effets de la sécheresse sur les communautés "
    "microbiennes du sol dans des parcelles agricoles du sud de la France. Nous avons "
    "prélevé des échantillons au printemps et à l'automne pendant trois années "
    "consécutives, puis nous avons séquencé l'ADN extrait afin de décrire la diversité "
    "des bactéries et des champignons. Les résultats montrent que la richesse "
    "spécifique diminue nettement lorsque l'humidité du sol reste faible pendant plus "
    "de six semaines, mais que la composition des communautés se rétablit en grande "
    "partie après les premières pluies. Les parcelles couvertes par des cultures "
    "intermédiaires ont mieux résisté que les sols nus, ce qui suggère que la "
    "couverture végétale protège les organismes les plus sensibles. Nous discutons "
    "ensuite les conséquences de ces observations pour la gestion des exploitations, "
    "en particulier le choix des rotations et le maintien de la matière organique. "
    "Enfin, nous proposons un protocole simple qui permet aux agriculteurs de suivre "
    "l'état biologique de leurs sols avec un coût modeste et sans matériel spécialisé. "
    "Mots-clés : sécheresse, microbiome, agriculture, résilience, diversité. "
)
MATH_PAGE = (
    "2.3 Estimation. Let x_i ∈ ℝ^d denote the features of the i-th sample and y_i ∈ {0, 1} "
    "its label. We minimise the regularised loss "
    "L(θ) = −(1/n) ∑_{i=1}^{n} [ y_i log σ(θ^T x_i) + (1 − y_i) log(1 − σ(θ^T x_i)) ] "
    "+ λ‖θ‖²₂ (4) where σ(z) = 1/(1 + e^{−z}). The gradient is "
    "∇_θ L = (1/n) ∑_i (σ(θ^T x_i) − y_i) x_i + 2λθ (5) and the Hessian "
    "H = (1/n) X^T S X + 2λI, S = diag(σ_i(1 − σ_i)) (6). Since H ≻ 0 for λ > 0, the "
    "minimiser θ* is unique, and Newton's update θ_{t+1} = θ_t − H^{−1}∇L(θ_t) (7) "
    "converges quadratically near θ*. For the bound we use E[‖θ̂ − θ*‖²] ≤ "
    "(d/n) tr(H^{−1} Σ H^{−1}) + O(n^{−2}) (8) with Σ = Cov(∇ℓ(θ*; x, y)). "
)


def draw_pdf(path: Path, pages: list[str]) -> Path:
    """One PDF page per text, drawn with an embedded font that maps every glyph back."""
    font = pymupdf.Font("helv")
    doc = pymupdf.open()
    for text in pages:
        page = doc.new_page()
        writer = pymupdf.TextWriter(page.rect)
        writer.fill_textbox(
            pymupdf.Rect(36, 36, page.rect.width - 36, page.rect.height - 36),
            text,
            font=font,
            fontsize=6,
        )
        writer.write_text(page)
    doc.save(path)
    return path


def letter_substitution(seed: int) -> dict[str, str]:
    rng = random.Random(seed)
    shuffled = list(string.ascii_lowercase)
    rng.shuffle(shuffled)
    mapping = dict(zip(string.ascii_lowercase, shuffled, strict=True))
    return mapping | {k.upper(): v.upper() for k, v in mapping.items()}


def math_substitution(seed: int) -> dict[str, str]:
    symbols = list(MATH_SYMBOLS)
    random.Random(seed).shuffle(symbols)
    return {c: symbols[i % len(symbols)] for i, c in enumerate(string.ascii_letters)}


def soup_substitution(seed: int) -> dict[str, str]:
    """Every visible character to a capital, digit or symbol, most spaces dropped, as in
    the title ``DEGFIHKJMLONPFQFIRTS#UWV>XYH#F``."""
    rng = random.Random(seed)
    visible = [chr(c) for c in range(33, 0x2100) if not chr(c).isspace()]
    return {c: rng.choice(SOUP) for c in visible} | {" ": ""}


def remap(text: str, mapping: dict[str, str]) -> str:
    return "".join(mapping.get(c, c) for c in text)


@pytest.fixture
def source_pages(corpus: Path) -> list[str]:
    paper = read_pdf(corpus / SOURCE)
    assert paper.ok
    return list(paper.pages[:6])


# ---------------------------------------------------------------- real papers stay ok


def test_every_readable_corpus_page_is_language(corpus: Path) -> None:
    papers = [p for p in load_papers(corpus, workers=1) if not p.name.startswith("bad-")]
    assert len(papers) >= 11
    for paper in papers:
        assert paper.status == "ok", (paper.name, paper.message)
        assert "garbled" not in paper.message, paper.name
        garbled, judged = garbled_pages(paper.pages)
        assert garbled == [], (paper.name, garbled)
        if paper.name.endswith(".pdf"):
            assert judged >= paper.page_count // 2, paper.name


def test_two_up_layout_of_a_real_paper_stays_ok(corpus: Path, tmp_path: Path) -> None:
    source = pymupdf.open(corpus / "acl2020-s2orc.pdf")
    doc = pymupdf.open()
    width, height = source[0].rect.width, source[0].rect.height
    for first in range(0, source.page_count - 1, 2):
        sheet = doc.new_page(width=2 * width, height=height)
        sheet.show_pdf_page(pymupdf.Rect(0, 0, width, height), source, first)
        sheet.show_pdf_page(pymupdf.Rect(width, 0, 2 * width, height), source, first + 1)
    doc.save(tmp_path / "two-up.pdf")

    paper = read_pdf(tmp_path / "two-up.pdf")
    assert paper.status == "ok", paper.message
    assert paper.message == ""
    assert "Semantic Scholar" in paper.text


def table_of_contents() -> str:
    """Section titles with dotted leaders fused to their page numbers, as some PDFs
    extract them ("3.2 Results.............17")."""
    rng = random.Random(1)
    titles = ["Introduction", "Study area and sampling", "Statistical analysis", "Results"]
    titles += ["Discussion", "Limitations of the study", "Appendix A: Survey questions"]
    return "\n".join(
        f"{i // 5 + 1}.{i % 5 + 1} {rng.choice(titles)}{'.' * rng.randint(10, 60)}{i * 3 + 1}"
        for i in range(45)
    )


def test_french_math_heavy_and_contents_pages_stay_ok(tmp_path: Path) -> None:
    pages = [FRENCH * 2, MATH_PAGE * 2, table_of_contents(), FRENCH]
    paper = read_pdf(draw_pdf(tmp_path / "fr.pdf", pages))
    assert paper.status == "ok", paper.message
    assert paper.message == ""
    assert "sécheresse" in paper.text and "Newton's update" in paper.text
    assert "Statistical analysis" in paper.text


# ---------------------------------------------------------------- garbled layers are found


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    "substitution", [letter_substitution, math_substitution, soup_substitution]
)
def test_a_remapped_text_layer_is_garbled(
    source_pages: list[str], tmp_path: Path, substitution: object, seed: int
) -> None:
    assert callable(substitution)
    mapping = substitution(seed)
    path = draw_pdf(tmp_path / "remapped.pdf", [remap(p, mapping) for p in source_pages])
    paper = read_pdf(path)
    assert paper.status == "garbled", paper.message
    assert "re-OCR this file" in paper.message
    assert f"pages 1-6 of {len(source_pages)}" in paper.message


def test_a_few_garbled_pages_are_left_out_with_a_note(
    source_pages: list[str], tmp_path: Path
) -> None:
    pages = list(source_pages)
    pages[2] = remap(pages[2], letter_substitution(7))
    pages[4] = remap(pages[4], soup_substitution(7))
    paper = read_pdf(draw_pdf(tmp_path / "two-bad-pages.pdf", pages))

    assert paper.status == "ok", paper.message
    assert "pages 3, 5 have a garbled text layer" in paper.message
    assert "re-OCR" in paper.message
    assert paper.page_count == 6 and paper.pages[2] == paper.pages[4] == ""
    assert pages[2][:40] not in paper.text
    assert all(paper.pages[i] for i in (0, 1, 3, 5))  # the readable pages are all there
    assert "Corresponding author" in paper.text


def type3_pdf(path: Path, pages: list[str], first_code: int = 0x44) -> Path:
    """Draw the text with a Type 3 font whose glyphs are named ``/a68``, ``/a69`` ... with
    no ToUnicode map, coding characters in order of first use, as old Ghostscript did.
    Each word is shown on its own, so the reader sees spaces between words."""
    codes: dict[str, int] = {}
    for char in "".join(pages):
        if not char.isspace() and char not in codes and len(codes) < 0xFF - first_code:
            codes[char] = first_code + len(codes)
    doc = pymupdf.open()
    procs = []
    for code in codes.values():
        xref = doc.get_new_xref()
        doc.update_object(xref, "<<>>")
        doc.update_stream(xref, b"500 0 0 0 450 600 d1 0 0 450 600 re f")
        procs.append(f"/a{code} {xref} 0 R")
    last = first_code + len(codes) - 1
    names = " ".join(f"/a{code}" for code in codes.values())
    font = doc.get_new_xref()
    doc.update_object(
        font,
        "<< /Type /Font /Subtype /Type3 /FontBBox [0 0 500 600] "
        "/FontMatrix [0.001 0 0 0.001 0 0] "
        f"/CharProcs << {' '.join(procs)} >> "
        f"/Encoding << /Type /Encoding /Differences [{first_code} {names}] >> "
        f"/FirstChar {first_code} /LastChar {last} "
        f"/Widths [{' '.join('500' for _ in codes)}] /Resources << >> >>",
    )
    for text in pages:
        page = doc.new_page()
        lines = []
        for line in text.split("\n"):
            shown = []
            for word in line.split():
                data = bytes(codes.get(c, codes.get("?", first_code)) for c in word)
                escaped = data.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")
                shown.append(b"(" + escaped + b")")
            if shown:
                lines.append(b"[" + b" -300 ".join(shown) + b"] TJ 0 -9 Td")
        content = b"BT /T3 7 Tf 36 800 Td " + b" ".join(lines) + b" ET"
        stream = doc.get_new_xref()
        doc.update_object(stream, "<<>>")
        doc.update_stream(stream, content)
        doc.xref_set_key(page.xref, "Contents", f"{stream} 0 R")
        doc.xref_set_key(page.xref, "Resources", f"<< /Font << /T3 {font} 0 R >> >>")
    doc.save(path)
    return path


def test_a_type3_font_without_unicode_names_is_garbled(
    source_pages: list[str], tmp_path: Path
) -> None:
    path = type3_pdf(tmp_path / "ghostscript-type3.pdf", source_pages)
    doc = pymupdf.open(path)
    extracted = doc[0].get_text()
    # The failure as users meet it: the raw codes, capitals and symbols, come out as text.
    assert "Vespa" not in extracted and sum(c.isupper() for c in extracted) > 500

    paper = read_pdf(path)
    assert paper.status == "garbled", paper.message
    assert "re-OCR this file" in paper.message and "pages 1-6 of 6" in paper.message
    assert paper.title == "ghostscript-type3"  # not the soup of the first line
