"""PDF ingestion speed: load_papers (sequential and parallel) against raw PyMuPDF and pdftotext.

    uv run --no-sync python bench/bench_ingest.py [CORPUS] [--repeat 5] [--copies 8] [--sweep]

CORPUS defaults to ../shared/corpus (next to the project root). Every method reads the
same files in the same run; each figure is the median of ``--repeat`` runs, in pages per
second over the PDFs that open (encrypted and truncated files count 0 pages but are still
read). ``--copies N`` adds a "large folder" scenario: the corpus copied N times into a
temporary folder outside the project. ``--sweep`` times workers=1 against workers=2 for
growing numbers of PDFs, which is how load_papers' PARALLEL_MIN_PDFS was chosen.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import pymupdf

from dllm_notebook._reading.papers import PARALLEL_MIN_PDFS, load_papers, warm_up

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus"


def readable_pages(pdfs: list[Path]) -> int:
    pages = 0
    for path in pdfs:
        with pymupdf.open(path) as doc:
            if not doc.needs_pass:
                pages += doc.page_count
    return pages


def raw_pymupdf(pdfs: list[Path]) -> None:
    for path in pdfs:
        with pymupdf.open(path) as doc:
            if doc.needs_pass:
                continue
            for number in range(doc.page_count):
                doc.load_page(number).get_text()


def pdftotext(pdfs: list[Path]) -> None:
    for path in pdfs:
        subprocess.run(
            ["pdftotext", "-q", "-enc", "UTF-8", str(path), "-"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )


def settle() -> None:
    """Let worker processes left by a parallel run exit, so they do not slow the next run."""
    for child in multiprocessing.active_children():
        child.join()


def medians(runs: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Median seconds of each run. The runs take turns in every round, so a busy spell on a
    shared machine slows all of them alike rather than whichever ran at that moment."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeat):
        for name, run in runs.items():
            settle()
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    settle()
    return {name: statistics.median(values) for name, values in times.items()}


def worker_start_seconds(repeat: int) -> float:
    """Time from creating a spawn pool to a worker that has imported PyMuPDF."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            pool.submit(warm_up).result()
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def _spin(loops: int) -> float:
    start = time.perf_counter()
    total = 0
    for i in range(loops):
        total += i * i
    return time.perf_counter() - start


def cpu_scaling(loops: int = 10_000_000) -> float:
    """How much work two busy processes get done, relative to one: 2.0 on two real cores."""
    one = _spin(loops)
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(time.sleep, [3, 3]))  # both workers started and idle
        two = max(pool.map(_spin, [loops, loops]))
    return 2 * one / two


def table(title: str, pdfs: list[Path], repeat: int) -> None:
    pages = readable_pages(pdfs)
    print(f"\n### {title}: {len(pdfs)} PDFs, {pages} readable pages, median of {repeat}\n")
    runs: dict[str, Callable[[], object]] = {
        "load_papers(workers=1)": partial(load_papers, pdfs, workers=1),
        "load_papers(workers=2)": partial(load_papers, pdfs, workers=2),
        "load_papers() (auto)": partial(load_papers, pdfs),
        "raw PyMuPDF page.get_text() loop": partial(raw_pymupdf, pdfs),
    }
    if shutil.which("pdftotext"):
        runs["pdftotext (poppler), one process per file"] = partial(pdftotext, pdfs)
    seconds = medians(runs, repeat)
    baseline = seconds["load_papers(workers=1)"]
    print("| method | seconds | pages/s | vs load_papers(workers=1) |")
    print("|---|---:|---:|---:|")
    for name, value in seconds.items():
        print(f"| {name} | {value:.2f} | {pages / value:.0f} | {baseline / value:.2f}x |")
    if not shutil.which("pdftotext"):
        print("| pdftotext (poppler) | skipped (not installed) | | |")


def sweep(pdfs: list[Path], repeat: int) -> None:
    print(f"\n### workers=1 against workers=2 by number of PDFs, median of {repeat}\n")
    print("| PDFs | pages | workers=1 s | workers=2 s | speed-up |")
    print("|---:|---:|---:|---:|---:|")
    for count in (16, 32, 64, 128):
        if count > len(pdfs):
            break
        subset = pdfs[:count]
        seconds = medians(
            {
                "one": partial(load_papers, subset, workers=1),
                "two": partial(load_papers, subset, workers=2),
            },
            repeat,
        )
        one, two = seconds["one"], seconds["two"]
        print(f"| {count} | {readable_pages(subset)} | {one:.2f} | {two:.2f} | {one / two:.2f}x |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", nargs="?", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--copies", type=int, default=8, help="0 skips the large-folder run")
    parser.add_argument("--sweep", action="store_true")
    args = parser.parse_args()
    if not args.corpus.is_dir():
        print(f"no corpus folder at {args.corpus}; pass its path as the first argument")
        return 2
    pdfs = sorted(args.corpus.glob("*.pdf"))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"# bench_ingest: {cores} cores, Python {sys.version.split()[0]}, PyMuPDF "
        f"{pymupdf.VersionBind}, auto parallel from {PARALLEL_MIN_PDFS} PDFs"
    )
    if not shutil.which("pdftotext"):
        print("pdftotext: skipped (install poppler-utils to compare)")
    print(f"worker start-up (spawn + imports): {worker_start_seconds(args.repeat):.2f} s")
    print(f"CPU scaling: two busy processes do {cpu_scaling():.2f}x the work of one")
    table("The corpus folder", pdfs, args.repeat)
    if args.copies or args.sweep:
        with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
            large = []
            for copy in range(max(args.copies, 10 if args.sweep else 0)):
                for path in pdfs:
                    target = Path(tmp, f"{copy:02d}-{path.name}")
                    shutil.copyfile(path, target)
                    large.append(target)
            if args.copies:
                table(
                    f"A large folder (the corpus x {args.copies})",
                    large[: args.copies * len(pdfs)],
                    args.repeat,
                )
            if args.sweep:
                sweep(large, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
