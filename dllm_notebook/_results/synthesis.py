"""A synthesis over a result table: its text, every citation in it checked, and coverage.

The model cites papers by their key in square brackets (the wide table's index, e.g.
``[smith2020.pdf]``). :func:`check_citations` finds every citation in a text and gives it
a status: ``ok`` (the key is in the table and the paper was in the input of the summary
that wrote the sentence), ``unknown`` (no such key) or ``unsupported`` (a real key, but
that paper was not in the summary's input)::

    >>> table = check_citations("Rivers flood [a.pdf]. Not [zz.pdf].", {"a.pdf": "A"}, {"a.pdf"})
    >>> list(table["status"])
    ['ok', 'unknown']

:class:`Synthesis` holds the result; it shows itself in a notebook (citations link to the
table's rows in a review report) and reads and writes JSON (``dllm report --synthesis``).
"""

from __future__ import annotations

import html
import json
import os
import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import pandas as pd

from .._errors import SynthesisFileError
from .values import text_or_none

__all__ = [
    "CITATION_COLUMNS",
    "OK",
    "UNKNOWN",
    "UNSUPPORTED",
    "Synthesis",
    "check_citations",
    "cited_keys",
    "row_anchor",
    "sentences",
]

OK: Final = "ok"
UNKNOWN: Final = "unknown"
UNSUPPORTED: Final = "unsupported"
CITATION_COLUMNS = ("sentence", "key", "title", "status")

# ``[key]`` or ``[key1; key2]``, but not a Markdown link's ``[text](url)``.
_CITATION_RE = re.compile(r"\[([^\[\]\n]{1,300})\](?!\()")
_SENTENCE_RE = re.compile(r"(?<=[.!?])\s+(?=[A-Z\[(\"“])|\n{2,}")


def sentences(text: str) -> list[str]:
    """``text`` cut into sentences (and paragraphs), stripped, empty ones dropped."""
    return [s.strip() for s in _SENTENCE_RE.split(text) if s and s.strip()]


def _split_keys(inside: str, known: Collection[str]) -> list[str]:
    """The keys in one bracket: ``a.pdf; b.pdf`` (or commas, when the parts are keys)."""
    inside = inside.strip()
    if inside in known:
        return [inside]
    parts = [p.strip() for p in inside.split(";") if p.strip()]
    keys: list[str] = []
    for part in parts:
        commas = [p.strip() for p in part.split(",") if p.strip()]
        if part not in known and len(commas) > 1 and all(c in known for c in commas):
            keys.extend(commas)
        else:
            keys.append(part)
    return keys


def cited_keys(text: str, known: Collection[str] = ()) -> Iterator[tuple[int, int, str]]:
    """``(start, end, key)`` for each key cited in ``text``; start and end span its bracket."""
    for match in _CITATION_RE.finditer(text):
        for key in _split_keys(match.group(1), known):
            yield match.start(), match.end(), key


def check_citations(text: str, titles: Mapping[str, Any], support: Collection[str]) -> pd.DataFrame:
    """Every citation in ``text``, one row each: sentence, key, title and status.

    ``titles`` maps each key of the table to its title; ``support`` is the keys that were
    in the input of the summary that wrote ``text``.
    """
    rows = []
    for sentence in sentences(text):
        for _, _, key in cited_keys(sentence, titles):
            if key not in titles:
                status, title = UNKNOWN, None
            else:
                status = OK if key in support else UNSUPPORTED
                title = text_or_none(titles[key])
            rows.append({"sentence": sentence, "key": key, "title": title, "status": status})
    table: pd.DataFrame = pd.DataFrame(rows, columns=list(CITATION_COLUMNS)).astype("string")
    return table


def row_anchor(key: str) -> str:
    """The HTML id of a paper's row in a review report (any key gives a valid id)."""
    return "row-" + re.sub(r"[^A-Za-z0-9_-]", lambda m: f".{ord(m.group()):x}.", key)


@dataclass
class Synthesis:
    """A short answer to a question over a whole result table, with checked citations.

    >>> s = cluster.synthesize(df)          # doctest: +SKIP
    >>> s.citations[s.citations.status != "ok"]   # what to distrust   # doctest: +SKIP
    >>> s.coverage[~s.coverage.cited]        # papers the text never cites  # doctest: +SKIP

    ``text`` is the final summary; ``citations`` one row per citation in it (sentence, key,
    title, status ``ok`` / ``unknown`` / ``unsupported``), and from ``synthesize()`` a
    ``level`` (the final text's is ``levels``; a lower one is a flagged citation of an
    intermediate summary, taken out of what went up); ``titles`` every paper of the
    table by key. ``run_id`` names the run in the result store (``history()``).
    """

    text: str
    question: str
    citations: pd.DataFrame
    titles: dict[str, str | None]
    levels: int = 1
    groups: int = 1
    run_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def coverage(self) -> pd.DataFrame:
        """Each paper of the table: its title and how often the text cites it (``ok``
        citations only), ``cited`` true when at least once."""
        ok = self.citations[self.citations["status"] == OK]
        counts = ok["key"].value_counts()
        keys = list(self.titles)
        frame = pd.DataFrame(
            {
                "title": pd.array([self.titles[k] for k in keys], dtype="string"),
                "citations": [int(counts.get(k, 0)) for k in keys],
            },
            index=pd.Index(keys, name="paper"),
        )
        frame["cited"] = frame["citations"] > 0
        result: pd.DataFrame = frame
        return result

    @property
    def flagged(self) -> pd.DataFrame:
        """The citations that are not ``ok``."""
        flagged: pd.DataFrame = self.citations[self.citations["status"] != OK]
        return flagged

    def segments(self) -> list[dict[str, Any]]:
        """The text as pieces to render: plain text, or one cited key with its status.

        Renderers escape each piece; nothing here is HTML.
        """
        found = list(cited_keys(self.text, self.titles))
        keys = [str(k) for k in self.citations["key"]]
        statuses = [str(s) for s in self.citations["status"]]
        by_key = dict(zip(keys, statuses, strict=True))
        # The table has one row per citation, in the text's order: the same key may be
        # ``ok`` in one sentence and ``unsupported`` in another.
        in_order = keys == [key for _, _, key in found]
        pieces: list[dict[str, Any]] = []
        done = 0
        last_bracket = (-1, -1)
        for number, (start, end, key) in enumerate(found):
            if (start, end) != last_bracket:
                if start > done:
                    pieces.append({"text": self.text[done:start]})
                last_bracket, done = (start, end), end
            pieces.append(
                {
                    "key": key,
                    "status": statuses[number] if in_order else by_key.get(key, UNKNOWN),
                    "anchor": row_anchor(key),
                    "title": self.titles.get(key),
                }
            )
        if done < len(self.text):
            pieces.append({"text": self.text[done:]})
        return pieces

    # -- files ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "text": self.text,
            "citations": [
                {k: (int(v) if k == "level" else text_or_none(v)) for k, v in row.items()}
                for row in self.citations.to_dict("records")
            ],
            "titles": self.titles,
            "levels": self.levels,
            "groups": self.groups,
            "run_id": self.run_id,
        }

    def to_json(self, path: str | os.PathLike[str] | None = None) -> str:
        """The synthesis as JSON text; written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=2, ensure_ascii=False)
        if path is not None:
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(text + "\n")
        return text

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> Synthesis:
        """Read a file written by :meth:`to_json` (``dllm synthesize -o synthesis.json``)."""
        where = os.fspath(path)
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
        except json.JSONDecodeError as exc:
            raise SynthesisFileError(where, f"not JSON: {exc}") from exc
        return cls.from_dict(data, where=where)

    @classmethod
    def from_dict(cls, data: Any, *, where: str = "synthesis") -> Synthesis:
        if not isinstance(data, dict) or not isinstance(data.get("text"), str):
            raise SynthesisFileError(where, "it has no 'text'")
        titles = data.get("titles") or {}
        if not isinstance(titles, dict):
            raise SynthesisFileError(where, "'titles' is not an object")
        rows = data.get("citations") or []
        citations = pd.DataFrame(rows, columns=list(CITATION_COLUMNS)).astype("string")
        if rows and all(isinstance(r, dict) and "level" in r for r in rows):
            citations["level"] = [int(r["level"]) for r in rows]
        return cls(
            text=data["text"],
            question=str(data.get("question") or ""),
            citations=citations,
            titles={str(k): text_or_none(v) for k, v in titles.items()},
            levels=int(data.get("levels") or 1),
            groups=int(data.get("groups") or 1),
            run_id=data.get("run_id"),
        )

    # -- display -------------------------------------------------------------------------
    def __repr__(self) -> str:
        counts = self.citations["status"].value_counts()
        cited = int(self.coverage["cited"].sum())
        return (
            f"<Synthesis: {len(self.text.split())} words, {len(self.citations)} citations "
            f"({int(counts.get(OK, 0))} ok, {int(counts.get(UNKNOWN, 0))} unknown, "
            f"{int(counts.get(UNSUPPORTED, 0))} unsupported), "
            f"{cited}/{len(self.titles)} papers cited>"
        )

    def _repr_markdown_(self) -> str:
        parts = []
        for piece in self.segments():
            if "text" in piece:
                parts.append(piece["text"])
            elif piece["status"] == OK:
                parts.append(f"[{piece['key']}](#{piece['anchor']})")
            else:
                parts.append(f"**[{piece['key']}]** *({piece['status']} citation)*")
        lines = [f"**{self.question}**", "", "".join(parts), "", self._coverage_line()]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        parts = []
        for piece in self.segments():
            if "text" in piece:
                parts.append(html.escape(piece["text"]))
            elif piece["status"] == OK:
                title = html.escape(piece["title"] or piece["key"], quote=True)
                parts.append(
                    f'<a class="citation ok" href="#{piece["anchor"]}" title="{title}">'
                    f"[{html.escape(piece['key'])}]</a>"
                )
            else:
                parts.append(
                    f'<mark class="citation {piece["status"]}" title="{piece["status"]} '
                    f'citation">[{html.escape(piece["key"])}] ({piece["status"]})</mark>'
                )
        return (
            f"<div class='dllm-synthesis'><p><b>{html.escape(self.question)}</b></p>"
            f"<p style='white-space:pre-wrap'>{''.join(parts)}</p>"
            f"<p><small>{html.escape(self._coverage_line())}</small></p></div>"
        )

    def _coverage_line(self) -> str:
        coverage = self.coverage
        missing = list(coverage.index[~coverage["cited"]])
        line = f"{int(coverage['cited'].sum())} of {len(coverage)} papers cited"
        flagged = len(self.flagged)
        if flagged:
            line += f"; {flagged} citation{'s' * (flagged != 1)} flagged"
        if missing:
            shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
            line += f"; not cited: {shown}"
        return line
