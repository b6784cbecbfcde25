"""How the garbled-text thresholds were chosen: page scores, real against remapped.

    uv run --no-sync python bench/bench_garbled.py [CORPUS]

Scores every page of the readable PDFs in CORPUS (default ../shared/corpus) with
``score_page``, then the same pages remapped the ways tests/test_garbled.py remaps them
(5 random letter substitutions, 2 math-symbol ones, 10 digit-and-punctuation soups with
and without spaces), and prints each signal's range and the verdicts. The thresholds in
dllm_notebook/_reading/language.py sit in the gaps these ranges leave.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dllm_notebook import load_papers  # noqa: E402
from dllm_notebook._reading.language import PageScore, score_page  # noqa: E402
from tests.test_garbled import (  # noqa: E402
    letter_substitution,
    math_substitution,
    remap,
    soup_substitution,
)


def spaced_soup(seed: int) -> dict[str, str]:
    mapping = soup_substitution(seed)
    del mapping[" "]
    return mapping


KINDS: dict[str, Callable[[int], dict[str, str]] | None] = {
    "real": None,
    "letters": letter_substitution,
    "math": math_substitution,
    "soup": soup_substitution,
    "soup, spaced": spaced_soup,
}
SEEDS = {"real": 1, "letters": 5, "math": 2, "soup": 10, "soup, spaced": 10}


def span(values: Iterable[float]) -> str:
    ordered = sorted(values)
    if not ordered:
        return "-"
    median = statistics.median(ordered)
    return f"{ordered[0]:.2f}-{ordered[-1]:.2f} (median {median:.2f})"


def main() -> None:
    corpus = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "corpus"
    papers = [p for p in load_papers(corpus, workers=1) if p.ok and p.name.endswith(".pdf")]
    pages = [page for paper in papers for page in paper.pages]
    print(f"{len(papers)} readable PDFs, {len(pages)} pages\n")
    print(
        "| pages | n | language / garbled / unjudged | common bigrams | function words "
        "| fused chars | fused chars where bigrams >= 0.40 |"
    )
    print("|---|---|---|---|---|---|---|")
    started = time.perf_counter()
    scored = 0
    for kind, make in KINDS.items():
        scores: list[PageScore] = []
        for seed in range(SEEDS[kind]):
            mapping = make(seed) if make else None
            scores += [score_page(remap(p, mapping) if mapping else p) for p in pages]
        scored += len(scores)
        verdicts = "/".join(
            str(sum(s.verdict == v for s in scores)) for v in ("language", "garbled", "unjudged")
        )
        lettered = [s for s in scores if s.visible >= 200 and s.latin_letters >= 150]
        worded = [s for s in lettered if s.latin_words >= 30]
        judged = [s for s in scores if s.visible >= 200]
        wordy = [s.fused_share for s in judged if s.bigram_share >= 0.4]
        print(
            f"| {kind} | {len(scores)} | {verdicts} | {span(s.bigram_share for s in lettered)} "
            f"| {span(s.function_share for s in worded)} | {span(s.fused_share for s in judged)} "
            f"| {span(wordy)} |"
        )
    per_page = (time.perf_counter() - started) / scored
    print(f"\nscore_page: {per_page * 1e3:.2f} ms a page (remapping included)")


if __name__ == "__main__":
    main()
