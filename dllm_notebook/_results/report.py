"""The review report: one self-contained HTML (or Markdown) file a person can open.

``df.dllm.to_report("review.html", synthesis=None)`` writes, from a result table:

1. the run's summary (papers, prompts, workers, models, time, failures);
2. the table, with a text filter and sortable columns (a little inline script);
3. a chart for each typed column (``charts``: matplotlib SVG, embedded);
4. the evidence: every quote with its page and match; unverified quotes apart, flagged;
5. the synthesis, its citations linked to the table's rows and flagged ones marked;
6. failed tasks and unreadable papers, each with its reason.

The templates are data files (``templates/``) rendered by Jinja2: the HTML one with
autoescaping on, the Markdown one with every value escaped by its ``finalize`` hook, so
text from a paper or a model (``<script>``, ``{{ 7*7 }}``) shows as the text it is.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd

from . import frames
from .cells import decode_json
from .charts import CHARTED, chart_uri
from .statuses import ANSWERED, FAILED, INVALID, PENDING
from .synthesis import Synthesis, row_anchor
from .values import is_missing

__all__ = ["report_context", "write_report"]

_TEMPLATES = Path(__file__).with_name("templates")
_TASK_STATUSES = frozenset({FAILED, INVALID, PENDING})
_TABLE_META = ("title", "year")


def write_report(
    frame: pd.DataFrame,
    path: str | os.PathLike[str],
    *,
    synthesis: Synthesis | None = None,
    charts: bool = True,
) -> Path:
    """Write the review report for ``frame`` (long or wide) to ``path``.

    A path ending in ``.md`` gets Markdown, anything else one self-contained HTML file.
    """
    target = Path(path)
    markdown = target.suffix.lower() in {".md", ".markdown"}
    context = report_context(frame, synthesis=synthesis, charts=charts and not markdown)
    text = _environment(markdown).get_template("report.md.j2" if markdown else "report.html.j2")
    target.write_text(text.render(**context), encoding="utf-8")
    return target


def _environment(markdown: bool) -> jinja2.Environment:
    loader = jinja2.FileSystemLoader(_TEMPLATES)
    if markdown:
        environment = jinja2.Environment(
            loader=loader,
            autoescape=False,
            finalize=_markdown_text,
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
        )
        environment.filters["cell"] = _markdown_cell
        return environment
    return jinja2.Environment(
        loader=loader, autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True
    )


def _markdown_text(value: Any) -> Any:
    """Every value printed into Markdown is HTML-escaped: Markdown viewers render raw HTML."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    return str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _markdown_cell(value: Any) -> str:
    """A Markdown table cell: lines joined and pipes escaped, so a cell stays one cell."""
    return re.sub(r"\s*\n\s*", " ", str(value)).replace("|", "\\|")


def report_context(
    frame: pd.DataFrame, *, synthesis: Synthesis | None = None, charts: bool = True
) -> dict[str, Any]:
    """What the templates show, as plain values (strings, numbers, lists, dicts)."""
    long = frame.dllm.long()
    wide = frame.dllm.wide()
    specs: Mapping[str, Mapping[str, Any]] = long.attrs.get(frames.PROMPTS_ATTR) or {}
    prompts = frames.prompt_columns(wide)
    meta = [m for m in _TABLE_META if m in wide.columns]
    typed = [(specs.get(p) or {}).get("type") in {"integer", "number"} for p in prompts]
    return {
        "summary": _summary(long, len(wide), prompts),
        "columns": ["paper", *meta, *prompts],
        "numeric": [False, *[m == "year" for m in meta], *typed],
        "rows": _rows(wide, prompts),
        "charts": _charts(wide, prompts, specs) if charts else [],
        "evidence": _evidence(long),
        "failures": _failures(long),
        "unreadable": _unreadable(long),
        "synthesis": _synthesis(synthesis),
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _summary(long: pd.DataFrame, papers: int, prompts: list[str]) -> dict[str, Any]:
    answered = long["status"].isin(ANSWERED)
    elapsed = long.attrs.get(frames.ELAPSED_ATTR)
    return {
        "papers": papers,
        "prompts": prompts,
        "tasks": len(long),
        "answered": int(answered.sum()),
        "cached": int((long["status"] == "cached").sum()),
        "failed": int((~answered).sum()),
        "workers": sorted({str(w) for w in long["worker"].dropna()}),
        "models": sorted({str(m) for m in long["model"].dropna()}),
        "elapsed": f"{float(elapsed):.1f} s" if elapsed is not None else "not recorded",
        "line": long.attrs.get(frames.SUMMARY_ATTR) or "",
        "run": long.attrs.get(frames.RUN_ATTR) or "",
    }


def _rows(wide: pd.DataFrame, prompts: list[str]) -> list[dict[str, Any]]:
    shown = [m for m in _TABLE_META if m in wide.columns]
    rows = []
    cells = wide[[*shown, *prompts]].itertuples(index=False)
    for key, row in zip(wide.index, cells, strict=True):
        rows.append(
            {"key": str(key), "anchor": row_anchor(str(key)), "cells": [_cell(v) for v in row]}
        )
    return rows


def _cell(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "; ".join(_cell(v) for v in value)
    if is_missing(value):
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _charts(
    wide: pd.DataFrame, prompts: list[str], specs: Mapping[str, Mapping[str, Any]]
) -> list[dict[str, Any]]:
    charts = []
    for name in prompts:
        spec = specs.get(name) or {}
        if spec.get("type") not in CHARTED:
            continue
        uri = chart_uri(name, wide[name], spec)
        if uri is not None:
            charts.append({"prompt": name, "type": spec["type"], "uri": uri})
    return charts


def _evidence(long: pd.DataFrame) -> list[dict[str, Any]]:
    """One entry per cell that has quotes: verified ones, and unverified ones apart."""
    entries = []
    with_quotes = long[long["quotes"].notna()]
    for row in with_quotes.to_dict("records"):
        quotes = decode_json(row["quotes"])
        if not isinstance(quotes, list) or not quotes:
            continue
        found: list[dict[str, Any]] = []
        unverified: list[dict[str, Any]] = []
        for quote in quotes:
            if not isinstance(quote, dict):
                continue
            item = {
                "text": str(quote.get("text") or ""),
                "page": quote.get("page"),
                "match": str(quote.get("match") or "unverified"),
            }
            (unverified if item["match"] == "unverified" else found).append(item)
        entries.append(
            {
                "key": str(row["paper"]),
                "anchor": row_anchor(str(row["paper"])),
                "prompt": str(row["prompt"]),
                "answer": _cell(_answer(row)),
                "evidence": _cell(row["evidence"]) or "none",
                "verified": found,
                "unverified": unverified,
            }
        )
    return entries


def _answer(row: Mapping[str, Any]) -> Any:
    """A typed cell's value, else the answer's text."""
    value = decode_json(row.get("value"))
    return row.get("answer") if value is None else value


def _failures(long: pd.DataFrame) -> list[dict[str, str]]:
    failed = long[long["status"].isin(_TASK_STATUSES)]
    return [
        {
            "key": str(r["paper"]),
            "prompt": str(r["prompt"]),
            "status": str(r["status"]),
            "error": _cell(r["error"]) or "no reason recorded",
        }
        for r in failed.to_dict("records")
    ]


def _unreadable(long: pd.DataFrame) -> list[dict[str, str]]:
    """Papers that could not be read: one entry per paper, with its status and reason."""
    unread = long[~long["status"].isin(ANSWERED | _TASK_STATUSES)]
    unread = unread.drop_duplicates("paper")
    return [
        {
            "key": str(r["paper"]),
            "status": str(r["status"]),
            "error": _cell(r["error"]) or str(r["status"]),
        }
        for r in unread.to_dict("records")
    ]


def _synthesis(synthesis: Synthesis | None) -> dict[str, Any] | None:
    if synthesis is None:
        return None
    coverage = synthesis.coverage
    return {
        "question": synthesis.question,
        "segments": synthesis.segments(),
        "citations": [
            {
                "sentence": _cell(r["sentence"]),
                "key": _cell(r["key"]),
                "title": _cell(r["title"]),
                "status": _cell(r["status"]),
                "anchor": row_anchor(_cell(r["key"])),
                "where": _where(r.get("level"), synthesis.levels),
            }
            for r in synthesis.citations.to_dict("records")
        ],
        "cited": int(coverage["cited"].sum()),
        "papers": len(coverage),
        "not_cited": [str(k) for k in coverage.index[~coverage["cited"]]],
        "flagged": len(synthesis.flagged),
    }


def _where(level: Any, levels: int) -> str:
    """Which text a citation is in: the final answer, or an intermediate summary."""
    if is_missing(level) or int(level) >= levels:
        return "final text"
    return f"a level {int(level)} summary (taken out)"
