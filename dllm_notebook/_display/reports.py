"""Tables about the workers: ``check()``, ``metrics()`` and the worker panel's table.

The panel's table (:func:`panel_rows`) is built once and drawn two ways: as plain text
(:func:`text_table`, for terminals and ``repr``) and as HTML (:func:`html_table`, for the
live widget and the static notebook output). pandas is imported only by the functions
that return frames, so that ``import dllm_notebook`` stays quick.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._running.views import WorkerView

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "PanelRow",
    "any_resting",
    "check_frame",
    "html_table",
    "metrics_frame",
    "panel_rows",
    "rows_html",
    "text_table",
]


def check_frame(workers: Sequence[WorkerView]) -> pd.DataFrame:
    import pandas as pd

    rows = [
        {
            "worker": w.id,
            "url": w.config.base_url,
            "type": w.config.type,
            "healthy": w.healthy,
            "models": ", ".join(m.id for m in w.models),
            "model": w.model,
            "model_loaded": w.model_loaded,
            "context_length": w.context_length,
            "context_learned": w.context_learned,
            "latency_s": w.probe_latency,
            "error": w.reason or None,
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


def _overall_latency(workers: Sequence[WorkerView]) -> float | None:
    """Mean latency of every successful request, whichever worker answered it."""
    successes = sum(w.stats.successes for w in workers)
    return sum(w.stats.latency_total for w in workers) / successes if successes else None


def _overall_tokens_per_second(workers: Sequence[WorkerView]) -> float | None:
    """Generated tokens over generation time, summed over the workers."""
    seconds = sum(w.stats.generation_seconds or w.stats.latency_total for w in workers)
    tokens = sum(w.stats.completion_tokens for w in workers)
    return tokens / seconds if seconds else None


def metrics_frame(workers: Sequence[WorkerView], *, totals: bool = False) -> pd.DataFrame:
    import pandas as pd

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
        frame.loc["total"] = {
            "requests": frame["requests"].sum(),
            "successes": sum(w.stats.successes for w in workers),
            "failures": frame["failures"].sum(),
            "in_flight": frame["in_flight"].sum(),
            "avg_latency_s": _overall_latency(workers),
            "tokens_per_s": _overall_tokens_per_second(workers),
            "completion_tokens": sum(w.stats.completion_tokens for w in workers),
            "prompt_tokens": frame["prompt_tokens"].sum(),
        }
    return frame


# -- the worker panel's table -------------------------------------------------------------

# The light beside each worker: green takes work, amber is healthy but resting after an
# overload, red is out of rotation, grey has not been checked yet.
LIGHTS = {"green": "#1a7f37", "amber": "#d4a72c", "red": "#cf222e", "grey": "#8c959f"}


@dataclass(frozen=True)
class PanelRow:
    """One line of the panel: a worker, or the totals (``is_total``)."""

    worker: str
    address: str
    type: str
    model: str
    health: str  # healthy, suspect, down or unknown; "2/3 healthy" on the totals row
    light: str  # a key of LIGHTS; "" on the totals row
    reason: str
    in_flight: str
    done: int
    failed: int
    avg_latency_s: float | None
    tokens_per_s: float | None
    is_total: bool = False

    def cells(self) -> list[str]:
        return [
            self.worker,
            self.address,
            self.type,
            self.model,
            self.health,
            self.in_flight,
            str(self.done),
            str(self.failed),
            _fmt(self.avg_latency_s),
            _fmt(self.tokens_per_s, 1),
            self.reason,
        ]


HEADER = [
    "worker",
    "address",
    "type",
    "model",
    "health",
    "in flight",
    "done",
    "failed",
    "avg latency s",
    "tok/s",
    "reason",
]
_NUMERIC = {5, 6, 7, 8, 9}  # right-aligned columns


def _fmt(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 1000 else f"{value:.{digits}f}"


def _light(worker: WorkerView) -> str:
    if worker.healthy:
        return "amber" if worker.resting else "green"
    if worker.health == "loading":
        return "amber"
    return "grey" if worker.health == "unknown" else "red"


def _slots(in_flight: int, limit: int, maximum: int) -> str:
    """``in flight/maximum``, and the adaptive limit when it is below the maximum."""
    return f"{in_flight}/{maximum}" + (f" (limit {limit})" if limit < maximum else "")


def panel_rows(workers: Sequence[WorkerView]) -> tuple[list[PanelRow], PanelRow]:
    """The panel's worker rows and its totals row, read from the workers' live state."""
    rows = [
        PanelRow(
            worker=w.id,
            address=w.config.base_url.split("://", 1)[-1],
            type=w.config.type,
            model=w.model or "-",
            health=w.health,
            light=_light(w),
            reason=w.reason,
            in_flight=_slots(w.in_flight, w.limit, w.max_concurrent_requests),
            done=w.stats.successes,
            failed=w.stats.failures,
            avg_latency_s=w.stats.avg_latency,
            tokens_per_s=w.stats.tokens_per_second,
        )
        for w in workers
    ]
    healthy = sum(w.healthy for w in workers)
    total = PanelRow(
        worker="total",
        address="",
        type="",
        model="",
        health=f"{healthy}/{len(workers)} healthy",
        light="",
        reason="",
        in_flight=_slots(
            sum(w.in_flight for w in workers),
            sum(w.limit for w in workers),
            sum(w.max_concurrent_requests for w in workers),
        ),
        done=sum(w.stats.successes for w in workers),
        failed=sum(w.stats.failures for w in workers),
        avg_latency_s=_overall_latency(workers),
        tokens_per_s=_overall_tokens_per_second(workers),
        is_total=True,
    )
    return rows, total


def any_resting(rows: Sequence[PanelRow]) -> bool:
    """Whether a row shows a countdown that changes without any event."""
    return any(r.light == "amber" for r in rows)


def text_table(workers: Sequence[WorkerView], *, max_reason: int = 60) -> str:
    """The panel as aligned plain text, with a totals row under a rule."""
    rows, total = panel_rows(workers)
    table = [r.cells() for r in [*rows, total]]
    for cells in table:
        if len(cells[-1]) > max_reason:
            cells[-1] = cells[-1][: max_reason - 1] + "…"
    widths = [max(len(r[i]) for r in [HEADER, *table]) for i in range(len(HEADER))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(widths[i]) if i in _NUMERIC else c.ljust(widths[i]) for i, c in enumerate(cells)
        ).rstrip()

    rule = line(["-" * w for w in widths])
    return "\n".join([line(HEADER), rule, *(line(r) for r in table[:-1]), rule, line(table[-1])])


_TABLE_STYLE = (
    "border-collapse:collapse;font-size:12px;font-variant-numeric:tabular-nums;"
    "color:#1f2328;background:#ffffff;line-height:1.4"
)
_PAD = "padding:2px 8px;white-space:nowrap"
_RIGHT = f"{_PAD};text-align:right"
_LEFT = f"{_PAD};text-align:left"
_WRAP = "padding:2px 8px;white-space:normal"
_DOT = "display:inline-block;width:9px;height:9px;border-radius:50%;margin-right:5px;background:"


def _td(text: str, index: int) -> str:
    return f'<td style="{_RIGHT if index in _NUMERIC else _PAD}">{html.escape(text)}</td>'


def _health_td(row: PanelRow) -> str:
    title = html.escape(row.reason or row.health, quote=True)
    dot = (
        f'<span class="dllm-dot" data-light="{row.light}" title="{title}" '
        f'style="{_DOT}{LIGHTS[row.light]}"></span>'
    )
    return f'<td class="dllm-health" style="{_PAD};white-space:nowrap">{dot}{row.health}</td>'


def _row_html(row: PanelRow) -> str:
    cells = row.cells()
    tds = [_td(c, i) for i, c in enumerate(cells[:4])]
    tds.append(_health_td(row) if row.light else _td(cells[4], 4))
    tds += [_td(c, i) for i, c in enumerate(cells[5:10], start=5)]
    colour = "#cf222e" if row.light == "red" else "#57606a"
    tds.append(
        f'<td class="dllm-reason" style="{_WRAP};max-width:36em;color:{colour}">'
        f"{html.escape(cells[10])}</td>"
    )
    if row.is_total:
        return (
            '<tr class="dllm-totals" style="border-top:1px solid #d0d7de;font-weight:600">'
            f"{''.join(tds)}</tr>"
        )
    worker = html.escape(row.worker, quote=True)
    return (
        f'<tr class="dllm-worker" data-worker="{worker}" data-health="{row.health}">'
        f"{''.join(tds)}</tr>"
    )


def html_table(workers: Sequence[WorkerView], *, caption: str = "") -> str:
    """The panel as an HTML table (the DOM contract is in docs/notebook.md)."""
    rows, total = panel_rows(workers)
    return rows_html(rows, total, caption=caption)


def rows_html(rows: Sequence[PanelRow], total: PanelRow, *, caption: str = "") -> str:
    """The HTML table of rows from :func:`panel_rows`."""
    head = "".join(
        f'<th style="{_RIGHT if i in _NUMERIC else _LEFT}">{html.escape(h)}</th>'
        for i, h in enumerate(HEADER)
    )
    cap = (
        f'<caption style="{_PAD};text-align:left;color:#57606a">{html.escape(caption)}</caption>'
        if caption
        else ""
    )
    return (
        f'<table class="dllm-panel" style="{_TABLE_STYLE}">{cap}'
        f'<thead><tr style="border-bottom:1px solid #d0d7de">{head}</tr></thead>'
        f"<tbody>{''.join(_row_html(r) for r in rows)}</tbody>"
        f"<tfoot>{_row_html(total)}</tfoot></table>"
    )
