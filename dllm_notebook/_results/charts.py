"""One static chart per typed column of a result table, for the review report.

matplotlib (the ``notebook`` extra) draws each chart off screen (the Agg backend) as SVG;
the report embeds it as a ``data:`` URI, so the file needs nothing from outside and an
SVG can never run script there (browsers run none in an ``<img>``).
"""

from __future__ import annotations

import base64
import io
from collections import Counter
from collections.abc import Mapping
from typing import Any

import pandas as pd

from .._errors import ChartsUnavailable
from .values import is_missing

__all__ = ["CHARTED", "chart_uri"]

CHARTED = frozenset({"category", "integer", "number", "boolean", "list"})
"""The prompt types that get a chart: counts of categories (booleans, list items) and
histograms of numbers."""

_BINS = 12


def chart_uri(name: str, values: pd.Series, spec: Mapping[str, Any]) -> str | None:
    """An SVG chart of one typed column as a ``data:image/svg+xml`` URI (``None`` when the
    column has no value to draw)."""
    kind = spec.get("type", "text")
    present = [v for v in values.tolist() if not is_missing(v)]
    if kind not in CHARTED or not present:
        return None
    try:
        import matplotlib
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError as exc:
        raise ChartsUnavailable() from exc
    figure = Figure(figsize=(5.2, 2.8), layout="constrained")
    axes = figure.subplots()
    if kind in {"integer", "number"}:
        numbers = [float(v) for v in present]
        distinct = sorted(set(numbers))
        bins: Any = _BINS if len(distinct) > _BINS else len(distinct) or 1
        axes.hist(numbers, bins=bins, color="#4C72B0", edgecolor="white")
        axes.set_xlabel(name)
        axes.set_ylabel("papers")
    else:
        counts = _counts(present, kind, spec)
        labels = [_label(k) for k in counts]
        axes.barh(labels[::-1], list(counts.values())[::-1], color="#4C72B0")
        axes.set_xlabel("papers")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_title(f"{name} ({len(present)} of {len(values)} papers)", fontsize=10)
    for side in ("top", "right"):
        axes.spines[side].set_visible(False)
    buffer = io.BytesIO()
    with matplotlib.rc_context({"svg.hashsalt": "dllm-report"}):  # same table, same file
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _counts(values: list[Any], kind: str, spec: Mapping[str, Any]) -> dict[Any, int]:
    """How many papers gave each answer: declared choices first (also the ones nobody
    chose), then any other value in the order of frequency."""
    if kind == "list":
        found = Counter(item for v in values for item in (v if isinstance(v, list) else [v]))
    else:
        found = Counter(values)
    counts: dict[Any, int] = {}
    if kind == "category":
        counts = {choice: found.pop(choice, 0) for choice in spec.get("choices") or []}
    elif kind == "boolean":
        counts = {True: found.pop(True, 0), False: found.pop(False, 0)}
    counts.update(found.most_common())
    return counts


def _label(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    text = str(value)
    return text if len(text) <= 40 else text[:39] + "…"
