"""Quote verification speed: EvidenceIndex against a naive ``str.find``, over the shared corpus.

    uv run --no-sync python bench/bench_evidence.py [CORPUS] [--repeat 5] [--llm-seconds-per-cell 2]

CORPUS defaults to ../shared/corpus. Each readable PDF is read once (not timed: reading
is not verification). Its quotes are drawn deterministically, the same for both methods:

* ``text``: 12-25 words copied from ``Paper.text`` (what the model was shown);
* ``page``: 12-25 words copied from PyMuPDF's own page text, line breaks, hyphenated line
  ends and ligatures as printed;
* ``invented``: made-up sentences, and sentences of another corpus paper;
* ``changed``: a real sentence with a number changed or a "not" added.

*verify* is ``EvidenceIndex(paper)`` (timed: built once per paper) then ``index.check()``
for every quote; *naive* is ``paper.text.find(quote)`` and the page of the offset found.
Both run in the same process, alternating, ``--repeat`` times; figures are medians.

A typical run's verification time (5 papers x 5 prompts x 3 quotes, and 100 x 5 x 3) is
measured end to end: a fresh index per paper (the corpus papers cycled), then 15 quotes per
paper drawn from the four kinds in turn, and, as the worst case, 15 of the kind that was
slowest to check. It is compared with the run's LLM time, ``cells x --llm-seconds-per-cell``.
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import pymupdf

from dllm_notebook import Paper
from dllm_notebook._reading.evidence import EvidenceIndex, Quote
from dllm_notebook._reading.pdf import read_pdf

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus"
KINDS = ("text", "page", "invented", "changed")
PER_KIND = 25  # quotes of each kind per paper
MADE_UP = [
    "We recruited 412 adults from three rural clinics and followed them for two years.",
    "The transformer model achieved a macro F1 score of 0.87 on the held-out test set.",
    "Drought stress reduced grain yield by 23% in all cultivars except the control line.",
    "Patients in the intervention arm had significantly fewer readmissions at 90 days.",
    "Knockdown of the gene abolished the response to oxidative stress in zebrafish larvae.",
]


def words_from(text: str, rng: random.Random) -> str:
    """12-25 consecutive whole words of ``text``, as they are written: not starting or
    ending inside a word hyphenated at a line end, and mostly letters (no dot leaders)."""
    spaces = [m for m in re.finditer(r"\s+", text)]
    while True:
        first = rng.randrange(len(spaces) - 26)
        start, end = spaces[first].end(), spaces[first + rng.randint(12, 25)].start()
        quote = text[start:end]
        letters = sum(c.isalpha() for c in quote)
        whole = not text[:start].rstrip().endswith("-") and not quote.endswith("-")
        if whole and letters > 0.6 * len(quote):
            return quote


def sentences(paper: Paper) -> list[str]:
    return [
        s.strip()
        for s in re.split(r"(?<=[a-z]\.)\s+(?=[A-Z])", paper.text)
        if 60 <= len(s.strip()) <= 200 and "\n\n" not in s
    ]


def changed(own: list[str], paper: Paper, rng: random.Random) -> str:
    """A real sentence of the paper made to say something else: a number changed or a
    "not" added (one that the paper does not also print)."""
    while True:
        sentence = rng.choice(own)
        number = re.search(r"\d+", sentence)
        verb = re.search(r"\b(was|were|is|are)\b", sentence)
        if number and (rng.random() < 0.5 or not verb):
            bumped = str(int(number.group()) + 1)
            claim = sentence[: number.start()] + bumped + sentence[number.end() :]
        elif verb:
            claim = sentence[: verb.end()] + " not" + sentence[verb.end() :]
        else:
            continue
        if claim not in paper.text:
            return claim


def quotes_for(paper: Paper, raw_pages: Sequence[str], other: Paper) -> dict[str, list[str]]:
    rng = random.Random(paper.name)
    pages = [page for page in raw_pages if len(page) > 500]
    own, foreign = sentences(paper), sentences(other)
    return {
        "text": [words_from(paper.text, rng) for _ in range(PER_KIND)],
        "page": [words_from(rng.choice(pages), rng) for _ in range(PER_KIND)],
        "invented": [
            MADE_UP[i % len(MADE_UP)] if i % 2 else rng.choice(foreign) for i in range(PER_KIND)
        ],
        "changed": [changed(own, paper, rng) for _ in range(PER_KIND)],
    }


def naive(paper: Paper, quote: str) -> Quote:
    found = paper.text.find(quote)
    if found < 0:
        return Quote(quote, None, "unverified", 0.0)
    return Quote(quote, paper.page_at(found), "exact", 100.0)


def timed(function: Callable[[], object]) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("corpus", nargs="?", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--llm-seconds-per-cell",
        type=float,
        default=2.0,
        help="the LLM time of one cell (one paper x one prompt) to compare with",
    )
    args = parser.parse_args()

    read: list[tuple[Paper, tuple[str, ...]]] = []
    for path in sorted(args.corpus.glob("*.pdf")):
        paper = read_pdf(path)
        if paper.ok:
            with pymupdf.open(path) as doc:
                read.append((paper, tuple(page.get_text() for page in doc)))
    papers = [paper for paper, _ in read]
    workload = [
        (paper, quotes_for(paper, raw, papers[(i + 1) % len(papers)]))
        for i, (paper, raw) in enumerate(read)
    ]
    total = sum(len(q) for _, kinds in workload for q in kinds.values())
    chars = sum(len(paper.text) for paper in papers)
    print(f"{len(papers)} papers, {chars:,} characters, {total} quotes ({PER_KIND} of each kind)")

    # -- outcomes (the same every run) ----------------------------------------------------
    found: dict[str, dict[str, int]] = {"verify": {}, "naive": {}}
    for paper, kinds in workload:
        index = EvidenceIndex(paper)
        for kind, quotes in kinds.items():
            results = {
                "verify": [index.check(q) for q in quotes],
                "naive": [naive(paper, q) for q in quotes],
            }
            for method, checked in results.items():
                found[method][kind] = found[method].get(kind, 0) + sum(r.verified for r in checked)

    # -- speed ----------------------------------------------------------------------------
    runs: dict[str, list[float]] = {"verify": [], "naive": [], "index": []}
    per_kind: dict[str, list[float]] = {kind: [] for kind in KINDS}
    for _ in range(args.repeat):
        index_time = 0.0
        kind_time = dict.fromkeys(KINDS, 0.0)
        for paper, kinds in workload:
            started = time.perf_counter()
            index = EvidenceIndex(paper)
            index_time += time.perf_counter() - started
            for kind, quotes in kinds.items():
                started = time.perf_counter()
                for quote in quotes:
                    index.check(quote)
                kind_time[kind] += time.perf_counter() - started
        runs["index"].append(index_time)
        runs["verify"].append(index_time + sum(kind_time.values()))
        for kind in KINDS:
            per_kind[kind].append(kind_time[kind])
        started = time.perf_counter()
        for paper, kinds in workload:
            for quotes in kinds.values():
                for quote in quotes:
                    naive(paper, quote)
        runs["naive"].append(time.perf_counter() - started)
    verify_s, naive_s = statistics.median(runs["verify"]), statistics.median(runs["naive"])
    index_s = statistics.median(runs["index"])

    def share(method: str, kind: str) -> str:
        return f"{found[method][kind]}/{PER_KIND * len(workload)}"

    print()
    print("| method | seconds | quotes/s | " + " | ".join(f"`{k}` found" for k in KINDS) + " |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for method, seconds in (("verify (EvidenceIndex)", verify_s), ("naive `str.find`", naive_s)):
        key = "verify" if method.startswith("verify") else "naive"
        cells = " | ".join(share(key, kind) for kind in KINDS)
        print(f"| {method} | {seconds:.3f} | {total / seconds:,.0f} | {cells} |")
    print()
    print(
        f"verify: building the {len(workload)} indexes took {index_s:.3f} s "
        f"({1000 * index_s / len(workload):.1f} ms per paper, "
        f"{1e9 * index_s / chars:.0f} ns per character); per quote, by kind (ms):"
    )
    for kind in KINDS:
        per_quote = statistics.median(per_kind[kind]) / (PER_KIND * len(workload))
        print(f"  {kind:9s} {1000 * per_quote:.3f}")

    # -- a typical run, end to end --------------------------------------------------------
    print()
    slowest = max(KINDS, key=lambda kind: statistics.median(per_kind[kind]))
    print(f"LLM time per cell: {args.llm_seconds_per_cell:g} s; worst case: every quote {slowest}")
    print(
        "| run | cells | quotes | verification s (mix) | CPU s (mix) | worst case s | LLM s "
        "| share of LLM time (mix / worst) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    per_cell = 0.0
    for n_papers in (5, 100):
        mix = [timed(partial(run, workload, n_papers, None)) for _ in range(args.repeat)]
        cpu = [cpu_timed(partial(run, workload, n_papers, None)) for _ in range(args.repeat)]
        worst = [timed(partial(run, workload, n_papers, slowest)) for _ in range(args.repeat)]
        n_cells = n_papers * 5
        llm = n_cells * args.llm_seconds_per_cell
        m, c, w = statistics.median(mix), statistics.median(cpu), statistics.median(worst)
        per_cell = max(per_cell, m / n_cells, w / n_cells)
        print(
            f"| {n_papers} x 5 x 3 | {n_cells} | {n_cells * 3} | {m:.3f} | {c:.3f} | {w:.3f} "
            f"| {llm:,.0f} | {100 * m / llm:.3f}% / {100 * w / llm:.3f}% |"
        )
    print(
        f"verification stays under 1% of the LLM time while a cell takes more than "
        f"{100 * per_cell:.2f} s (100 x the slowest verification time per cell above)"
    )


def cpu_timed(function: Callable[[], object]) -> float:
    started = time.process_time()
    function()
    return time.process_time() - started


def run(
    workload: Sequence[tuple[Paper, dict[str, list[str]]]], n_papers: int, only: str | None
) -> None:
    """Verify a run of ``n_papers`` x 5 prompts x 3 quotes: one fresh index per paper, the
    quotes drawn from the four kinds in turn, or all of kind ``only``."""
    for number in range(n_papers):
        paper, kinds = workload[number % len(workload)]
        index = EvidenceIndex(paper)
        for cell in range(15):
            kind = only or KINDS[(number + cell) % len(KINDS)]
            index.check(kinds[kind][cell % PER_KIND])


if __name__ == "__main__":
    main()
