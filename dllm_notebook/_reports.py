"""Tables about the workers: ``check()``, ``metrics()`` and the plain-text panel."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import pandas as pd

from ._pool import Health, Worker

__all__ = ["check_frame", "metrics_frame", "text_table"]


def check_frame(workers: Sequence[Worker]) -> pd.DataFrame:
    rows = [
        {
            "worker": w.id,
            "url": w.config.base_url,
            "type": w.config.type,
            "healthy": w.health is Health.HEALTHY,
            "models": ", ".join(m.id for m in w.models),
            "model": w.model,
            "model_loaded": w.model_loaded,
            "context_length": w.context_length,
            "latency_s": w.probe_latency,
            "error": w.status_reason() or None,
        }
        for w in workers
    ]
    frame: pd.DataFrame = pd.DataFrame(rows).set_index("worker")
    return frame


_METRIC_COLUMNS = [
    "requests",
    "successes",
    "failures",
    "in_flight",
    "avg_latency_s",
    "tokens_per_s",
    "completion_tokens",
    "prompt_tokens",
]


def metrics_frame(workers: Sequence[Worker], *, totals: bool = False) -> pd.DataFrame:
    rows: list[dict[str, Any]] = []
    for w in workers:
        s = w.stats
        rows.append(
            {
                "worker": w.id,
                "requests": s.requests,
                "successes": s.successes,
                "failures": s.failures,
                "in_flight": w.in_flight,
                "avg_latency_s": s.avg_latency,
                "tokens_per_s": s.tokens_per_second,
                "completion_tokens": s.completion_tokens,
                "prompt_tokens": s.prompt_tokens,
            }
        )
    frame: pd.DataFrame = pd.DataFrame(rows, columns=["worker", *_METRIC_COLUMNS]).set_index(
        "worker"
    )
    if totals and rows:
        total_latency = sum(w.stats.latency_total for w in workers)
        successes = sum(w.stats.successes for w in workers)
        gen = sum(w.stats.generation_seconds or w.stats.latency_total for w in workers)
        tokens = sum(w.stats.completion_tokens for w in workers)
        frame.loc["total"] = {
            "requests": frame["requests"].sum(),
            "successes": successes,
            "failures": frame["failures"].sum(),
            "in_flight": frame["in_flight"].sum(),
            "avg_latency_s": total_latency / successes if successes else None,
            "tokens_per_s": tokens / gen if gen else None,
            "completion_tokens": tokens,
            "prompt_tokens": frame["prompt_tokens"].sum(),
        }
    return frame


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _panel_rows(workers: Sequence[Worker]) -> tuple[list[str], list[list[str]]]:
    header = [
        "worker",
        "url",
        "type",
        "model",
        "health",
        "in flight",
        "done",
        "failed",
        "avg latency s",
        "tok/s",
    ]
    rows = []
    for w in workers:
        s = w.snapshot()
        health = s["health"] + (f" ({s['reason']})" if s["reason"] else "")
        rows.append(
            [
                s["worker"],
                s["url"].split("://", 1)[-1],
                s["type"],
                s["model"] or "-",
                health,
                f"{s['in_flight']}/{s['max_concurrent']}",
                str(s["successes"]),
                str(s["failures"]),
                _fmt(s["avg_latency_s"]),
                _fmt(s["tokens_per_s"], 1),
            ]
        )
    healthy = sum(w.health is Health.HEALTHY for w in workers)
    rows.append(
        [
            "total",
            "",
            "",
            "",
            f"{healthy}/{len(workers)} healthy",
            f"{sum(w.in_flight for w in workers)}/"
            f"{sum(w.config.max_concurrent_requests for w in workers)}",
            str(sum(w.stats.successes for w in workers)),
            str(sum(w.stats.failures for w in workers)),
            "",
            "",
        ]
    )
    return header, rows


def text_table(workers: Sequence[Worker], *, max_reason: int = 60) -> str:
    header, rows = _panel_rows(workers)
    for row in rows:
        if len(row[4]) > max_reason:
            row[4] = row[4][: max_reason - 1] + "…"
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(widths[i]) for i, c in enumerate(cells)).rstrip()

    out = [line(header), line(["-" * w for w in widths])]
    out += [line(r) for r in rows[:-1]]
    out += [line(["-" * w for w in widths]), line(rows[-1])]
    return "\n".join(out)


def html_table(workers: Sequence[Worker]) -> str:
    header, rows = _panel_rows(workers)
    colours = {"healthy": "#1a7f37", "down": "#cf222e", "suspect": "#bf8700", "unknown": "#6e7781"}
    body = []
    for row in rows:
        state = row[4].split(" ", 1)[0]
        cells = "".join(
            f'<td style="color:{colours[state]}">{html.escape(c)}</td>'
            if i == 4 and state in colours
            else f"<td>{html.escape(c)}</td>"
            for i, c in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    return f'<table class="dllm-workers"><tr>{head}</tr>{"".join(body)}</table>'
