"""What a finished cell holds, and the run's one-line summary.

:class:`Outcomes` turns a cell's final text into its row values: the typed value parsed
against the prompt's schema (an answer that does not match ends ``invalid`` with its raw
text, never coerced), and the quotes checked against the whole paper, each with its page.
It keeps one evidence index per paper for the paper's next cells. :func:`run_summary`
writes the line ``analyze()`` logs and the table carries.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from .._reading.evidence import EvidenceIndex, evidence_status
from .._reading.paper import Paper
from .._results.cells import Cell
from .._results.statuses import ANSWERED, CACHED, INVALID, OK

__all__ = ["EVIDENCE_INDEXES", "MAX_QUOTES", "Outcomes", "as_text", "run_summary"]

MAX_QUOTES = 3
"""Quotes kept per answer (the schema asks for at most three)."""
EVIDENCE_INDEXES = 8
"""Papers whose normalized text is kept for checking quotes: papers are planned in order,
so a paper's cells finish close together."""


class Outcomes:
    """Fills in a finished cell: its status, answer, typed value and checked quotes."""

    def __init__(self) -> None:
        self._indexes: dict[str, EvidenceIndex] = {}

    def finish(self, cell: Cell, text: str, *, cut: bool = False) -> None:
        """The cell's final answer: parsed against its prompt's type, its quotes checked
        against the whole paper. An answer that does not match its type (after the one
        retry the dispatcher makes) ends ``invalid``, keeping the model's raw text; ``cut``:
        the server stopped it at ``max_tokens``, which the error then says."""
        cell.parts = {}
        prompt = cell.prompt
        cell.status = OK if cell.fresh else CACHED
        if prompt.schema is None:
            cell.answer = text.strip()
            return
        parsed = prompt.parse_answer(text)
        if parsed.ok:
            cell.answer = as_text(parsed.value)
            if prompt.type != "text":
                cell.value = parsed.value
            quotes = [*parsed.quotes, *cell.part_quotes]
        else:
            cell.answer, cell.status = text.strip(), INVALID
            cell.error, cell.error_type = parsed.error, "InvalidAnswer"
            if cut:
                cell.error = (
                    f"{parsed.error}; the answer was cut off at max_tokens before it ended: "
                    "raise max_tokens for this prompt (in its preset, or max_tokens= in "
                    "analyze()) if its answers are meant to be that long"
                )
            quotes = list(cell.part_quotes)
        if prompt.evidence:
            self.check_quotes(cell, quotes)

    def check_quotes(self, cell: Cell, quotes: Sequence[str]) -> None:
        """Verify up to three distinct quotes against the paper (verified ones first)."""
        checked = sorted(
            self._index(cell.paper).verify(dict.fromkeys(quotes)),
            key=lambda q: not q.verified,
        )
        kept = checked[:MAX_QUOTES]
        cell.quotes = [{"text": q.text, "page": q.page, "match": q.match} for q in kept]
        cell.evidence = evidence_status(kept)

    def _index(self, paper: Paper) -> EvidenceIndex:
        """One index per paper, kept for its next cells (papers are planned in order)."""
        index = self._indexes.get(paper.name)
        if index is None:
            index = EvidenceIndex(paper)
            self._indexes[paper.name] = index
            while len(self._indexes) > EVIDENCE_INDEXES:
                self._indexes.pop(next(iter(self._indexes)))
        return index


def run_summary(
    *,
    papers: int,
    prompts: int,
    models: int,
    total: int,
    statuses: Mapping[str, int],
    failures: Mapping[str, int],
    unreadable: Mapping[str, int],
    elapsed: float,
) -> str:
    """One line: papers and prompts, tasks answered, and what went wrong (unreadable
    papers counted as papers, failed tasks as tasks). ``models`` above one is a comparison."""
    counts = Counter(statuses)  # a copy: the loop thread may be adding to them
    ok = sum(counts[s] for s in ANSWERED)
    compared = f" x {_count(models, 'model')}" if models > 1 else ""
    line = (
        f"analyzed {_count(papers, 'paper')} x {_count(prompts, 'prompt')}{compared}: "
        f"{ok}/{total} tasks answered in {elapsed:.1f} s"
    )
    if counts[CACHED]:
        line += f" ({counts[CACHED]} from the result store)"
    pending = total - sum(counts.values())
    if pending:
        line += f"; {_count(pending, 'task')} not finished"
    reasons = [
        f"{_count(n, 'paper')} unreadable ({kind})" for kind, n in Counter(unreadable).items()
    ]
    reasons += [f"{_count(n, 'task')} failed ({kind})" for kind, n in Counter(failures).items()]
    if reasons:
        line += "; " + ", ".join(reasons) + ". See .dllm.failures() for each error"
    return line


def as_text(value: Any) -> str:
    """A typed value as the long form's ``answer`` text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "; ".join(str(v) for v in value)
    return str(value).strip()


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"
