"""``cluster.synthesize(df, question)``: one answer over a whole table, with checked citations.

The table is reduced hierarchically, sized to the workers' real windows: the papers'
material is packed into groups that fit the smallest window, each group is summarized,
then the summaries are packed and summarized again, until one summary is left. Each group
becomes an in-memory :class:`Paper` and the summary a prompt, so ``analyze()`` runs every
level: in parallel over the cluster, with its progress bar, the result store and its cache
(a re-run with the same inputs comes from the store).

Citations: each paper's material begins with its key in square brackets; a summary of
summaries begins with the keys its summary covers. Every summary's citations are checked
against the keys of its own input (``_results.synthesis.check_citations``). A flagged
citation in an intermediate summary is taken out of the text passed up and kept in
``Synthesis.citations`` (with its level), so it is never silently kept.

:class:`Reduction` is the plan, level by level; :func:`synthesize` and
:func:`asynthesize` run it with ``analyze()`` or ``aanalyze()``.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import pandas as pd

from .._errors import SynthesisFailed
from .._reading.chunking import CHAT_RESERVE_TOKENS, estimate_tokens, truncate_to_fit
from .._reading.paper import Paper
from .._results.cells import decode_json
from .._results.frames import PROMPTS_ATTR, RUN_ATTR, prompt_columns, require_one_model
from .._results.statuses import ANSWERED
from .._results.synthesis import OK, Synthesis, check_citations, cited_keys
from .._results.values import is_missing, text_or_none
from .analysis import UNKNOWN_WINDOW

__all__ = ["DEFAULT_QUESTION", "Reduction", "asynthesize", "synthesize"]

logger = logging.getLogger("dllm_notebook")

DEFAULT_QUESTION = (
    "What do these papers say together: which findings agree, where do they conflict, "
    "which methods dominate, and what are the gaps?"
)
PROMPT_NAME = "synthesis"
GROUP_TEMPLATE = (
    "You are writing part of a literature review. Below are a question and material from "
    "several papers; each paper's material begins with its key in square brackets. Answer "
    "the question for these papers in a short paragraph. After every claim, cite the "
    "papers it rests on by their keys, in square brackets as below. Cite only keys "
    "given below.\n\n{content}"
)
REDUCE_TEMPLATE = (
    "You are writing a literature review. Below are a question and summaries of groups of "
    "papers; each summary begins with the keys of the papers it covers, in square "
    "brackets. Combine them into one short answer to the question. Keep the citations: "
    "after every claim, cite the papers it rests on by their keys, in square brackets as "
    "below. Cite only keys given below.\n\n{content}"
)
_MARGIN = 0.9  # of the room, for the servers' own tokenizers and chat templates


class Cluster(Protocol):
    """What a synthesis needs of ``Cluster``: its workers' windows and ``analyze()``."""

    @property
    def workers(self) -> Sequence[Any]: ...

    def check(self) -> pd.DataFrame: ...

    async def acheck(self) -> pd.DataFrame: ...

    def analyze(self, source: Any, **options: Any) -> pd.DataFrame: ...

    async def aanalyze(self, source: Any, **options: Any) -> pd.DataFrame: ...


@dataclass
class _Item:
    """One piece of material: a paper's, or a summary's; ``keys`` it stands for."""

    keys: tuple[str, ...]
    text: str


class Reduction:
    """The plan of one synthesis: which groups to ask at each level, and the citations.

    ``papers()`` gives the level's groups as papers to analyze; ``settle(long)`` takes the
    long table of their answers and returns ``True`` when the final summary is in; then
    ``result()`` is the :class:`Synthesis`.
    """

    def __init__(
        self,
        table: pd.DataFrame,
        *,
        question: str | None,
        columns: Sequence[str] | None,
        window: int,
        max_tokens: int,
    ) -> None:
        require_one_model(table, "cluster.synthesize()")
        wide = table.dllm.wide()
        long = table.dllm.long()
        if wide.empty:
            raise SynthesisFailed("the table has no paper to synthesize; analyze papers first.")
        self.question = (question or DEFAULT_QUESTION).strip()
        self.titles: dict[str, str | None] = {
            str(k): text_or_none(t) for k, t in zip(wide.index, _column(wide, "title"), strict=True)
        }
        self.max_tokens = max_tokens
        header = f"Question: {self.question}\n\n"
        template = max(estimate_tokens(GROUP_TEMPLATE), estimate_tokens(REDUCE_TEMPLATE))
        room = window - max_tokens - CHAT_RESERVE_TOKENS - template - estimate_tokens(header)
        self.room = int(room * _MARGIN)
        if self.room < 64:
            raise SynthesisFailed(
                f"a window of {window} tokens leaves no room for papers after the "
                f"instructions and {max_tokens} tokens of answer; use workers with larger "
                "windows or a smaller max_tokens."
            )
        self.header = header
        self.level = 0
        self.items = [
            _Item((key,), self._fit(text)) for key, text in material(wide, long, columns).items()
        ]
        self.groups: list[list[_Item]] = []
        self.names: list[str] = []
        self.flagged: list[pd.DataFrame] = []
        self.group_counts: list[int] = []
        self.final: str | None = None
        self.final_citations: pd.DataFrame | None = None
        self.run_id: str | None = None

    def _fit(self, text: str) -> str:
        """``text`` cut to what one request holds (half of it above the first level, so
        that two summaries always fit one request and the reduction ends)."""
        limit = self.room if self.level == 0 else self.room // 2
        if estimate_tokens(text) <= limit:
            return text
        logger.info("synthesis: material cut to %d tokens to fit the window", limit)
        return truncate_to_fit(text, limit)

    def papers(self) -> list[Paper]:
        """This level's groups, each as a paper whose text is the question and material."""
        self.groups = _pack(self.items, self.room)
        self.group_counts.append(len(self.groups))
        papers = []
        self.names = []
        for number, group in enumerate(self.groups, start=1):
            text = self.header + "\n\n".join(item.text for item in group)
            digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
            name = f"synthesis-L{self.level + 1}-G{number}-{digest}"
            self.names.append(name)
            title = f"level {self.level + 1}, group {number}"
            papers.append(Paper.from_text(name, text, title=title))
        return papers

    @property
    def template(self) -> str:
        return GROUP_TEMPLATE if self.level == 0 else REDUCE_TEMPLATE

    def settle(self, long: pd.DataFrame) -> bool:
        """Take a level's answers; ``True`` when the final summary is in."""
        answers = long.set_index("paper")
        self.run_id = long.attrs.get(RUN_ATTR)
        summaries: list[_Item] = []
        for name, group in zip(self.names, self.groups, strict=True):
            row = answers.loc[name]
            if row["status"] not in ANSWERED or pd.isna(row["answer"]):
                raise SynthesisFailed(
                    f"level {self.level + 1}, group of {len(group)} failed: {row['error']}. "
                    "Check the workers (cluster.check()) and run synthesize() again: the "
                    "answers already in hand come from the result store."
                )
            keys = tuple(dict.fromkeys(k for item in group for k in item.keys))
            text = str(row["answer"]).strip()
            citations = check_citations(text, self.titles, set(keys))
            if len(self.groups) == 1:
                self.final, self.final_citations = text, citations
                return True
            flagged = citations[citations["status"] != OK]
            if len(flagged):
                self.flagged.append(flagged.assign(level=self.level + 1))
            kept = _without(text, {str(k) for k in flagged["key"]}, self.titles)
            cover = " ".join(f"[{k}]" for k in keys)
            summaries.append(_Item(keys, f"Summary of {cover}:\n{kept}"))
        self.level += 1
        self.items = [_Item(item.keys, self._fit(item.text)) for item in summaries]
        return False

    def result(self) -> Synthesis:
        assert self.final is not None and self.final_citations is not None
        final = self.final_citations.assign(level=self.level + 1)
        citations = pd.concat([final, *self.flagged], ignore_index=True)
        citations = citations.astype({c: "string" for c in ("sentence", "key", "title")})
        citations["status"] = citations["status"].astype("string")
        return Synthesis(
            text=self.final,
            question=self.question,
            citations=citations,
            titles=self.titles,
            levels=self.level + 1,
            groups=sum(self.group_counts),
            run_id=self.run_id,
            extra={"groups_per_level": list(self.group_counts)},
        )


def material(
    wide: pd.DataFrame, long: pd.DataFrame, columns: Sequence[str] | None
) -> dict[str, str]:
    """Each paper's material: ``[key] title``, then each chosen column's answer with its
    verified quotes (page numbers kept). The default columns are the text ones."""
    specs: Mapping[str, Mapping[str, Any]] = long.attrs.get(PROMPTS_ATTR) or {}
    available = prompt_columns(wide)
    if columns is None:
        chosen = [c for c in available if (specs.get(c) or {}).get("type", "text") == "text"]
    else:
        unknown = [c for c in columns if c not in available]
        if unknown:
            raise SynthesisFailed(
                f"no column {', '.join(map(repr, unknown))} in the table; its answer columns "
                f"are {', '.join(available)}."
            )
        chosen = list(columns)
    quotes = _verified_quotes(long, chosen)
    out: dict[str, str] = {}
    for key, row in wide.iterrows():
        title = row.get("title")
        lines = [f"[{key}]" + ("" if is_missing(title) else f" {title}")]
        for column in chosen:
            value = row[column]
            if not is_missing(value):
                lines.append(f"{column}: {_text(value)}")
            for text, page in quotes.get((str(key), column), []):
                where = f" (p. {page})" if page else ""
                lines.append(f'  quote: "{text}"{where}')
        out[str(key)] = "\n".join(lines)
    return out


def _verified_quotes(
    long: pd.DataFrame, columns: Sequence[str]
) -> dict[tuple[str, str], list[tuple[str, Any]]]:
    found: dict[tuple[str, str], list[tuple[str, Any]]] = {}
    rows = long[long["prompt"].isin(columns) & long["quotes"].notna()]
    for paper, prompt, text in zip(rows["paper"], rows["prompt"], rows["quotes"], strict=True):
        for quote in decode_json(text) or []:
            if isinstance(quote, dict) and quote.get("match") not in (None, "unverified"):
                found.setdefault((str(paper), str(prompt)), []).append(
                    (str(quote.get("text")), quote.get("page"))
                )
    return found


def _text(value: Any) -> str:
    if isinstance(value, list):
        return "; ".join(map(str, value))
    return " ".join(str(value).split())


def _column(wide: pd.DataFrame, name: str) -> list[Any]:
    return list(wide[name]) if name in wide.columns else [None] * len(wide)


def _pack(items: Sequence[_Item], room: int) -> list[list[_Item]]:
    """Items in order, packed greedily into groups of at most ``room`` tokens, sized
    evenly (so the last group is not a lone paper)."""
    sizes = [estimate_tokens(item.text) + 2 for item in items]
    total = sum(sizes)
    count = max(1, -(-total // room))
    while True:
        target = -(-total // count)
        groups: list[list[_Item]] = [[]]
        used = 0
        for item, size in zip(items, sizes, strict=True):
            if groups[-1] and (used + size > room or used >= target):
                groups.append([])
                used = 0
            groups[-1].append(item)
            used += size
        if len(groups) <= count or count >= len(items):
            return groups
        count += 1


def _without(text: str, keys: set[str], titles: Mapping[str, Any]) -> str:
    """``text`` with the citations of ``keys`` taken out (the rest of each bracket kept)."""
    if not keys:
        return text
    pieces, done = [], 0
    spans: dict[tuple[int, int], list[str]] = {}
    for start, end, key in cited_keys(text, titles):
        spans.setdefault((start, end), []).append(key)
    for (start, end), cited in spans.items():
        kept = [k for k in cited if k not in keys]
        pieces.append(text[done:start])
        if kept:
            pieces.append("[" + "; ".join(kept) + "]")
        done = end
    pieces.append(text[done:])
    return re.sub(r"[ \t]+([.,;:])", r"\1", "".join(pieces))


def _unknown_windows(cluster: Cluster) -> bool:
    return any(not w.context_length for w in cluster.workers)


def window_for(cluster: Cluster) -> int:
    """The smallest window among the workers (known ones), so no request exceeds any.

    Call after ``cluster.check()`` when a window is not known yet (not probed)."""
    windows = [w.context_length for w in cluster.workers if w.context_length]
    if not windows:
        logger.warning(
            "synthesize: no worker reports its context window; assuming %d tokens",
            UNKNOWN_WINDOW,
        )
        return UNKNOWN_WINDOW
    return int(min(windows))


def _level(plan: Reduction, progress: bool, refresh: bool) -> dict[str, Any]:
    """The ``analyze()`` options of the plan's next level (its papers go first)."""
    return {
        "prompts": {PROMPT_NAME: plan.template},
        "long": True,
        "progress": progress,
        "refresh": refresh,
        "max_tokens": plan.max_tokens,
    }


def synthesize(
    cluster: Cluster,
    table: pd.DataFrame,
    question: str | None = None,
    columns: Sequence[str] | None = None,
    *,
    max_tokens: int,
    progress: bool = True,
    refresh: bool = False,
) -> Synthesis:
    """Run a :class:`Reduction` with ``cluster.analyze()``, level by level."""
    if _unknown_windows(cluster):
        cluster.check()  # learn every worker's window before sizing the groups
    plan = Reduction(
        table, question=question, columns=columns, window=window_for(cluster), max_tokens=max_tokens
    )
    while not plan.settle(cluster.analyze(plan.papers(), **_level(plan, progress, refresh))):
        pass
    return plan.result()


async def asynthesize(
    cluster: Cluster,
    table: pd.DataFrame,
    question: str | None = None,
    columns: Sequence[str] | None = None,
    *,
    max_tokens: int,
    progress: bool = True,
    refresh: bool = False,
) -> Synthesis:
    """The async twin of :func:`synthesize` (``await`` in a notebook cell)."""
    if _unknown_windows(cluster):
        await cluster.acheck()
    plan = Reduction(
        table, question=question, columns=columns, window=window_for(cluster), max_tokens=max_tokens
    )
    while not plan.settle(await cluster.aanalyze(plan.papers(), **_level(plan, progress, refresh))):
        pass
    return plan.result()
