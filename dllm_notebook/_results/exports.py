"""Exports co-authors open: CSV that Excel reads, an Excel workbook, a Markdown table.

Reached through the accessor (``df.dllm.to_csv()``, ``to_excel()``, ``to_markdown()``);
``citations`` writes ``.bib`` and ``.ris`` and ``styled`` the notebook view. This module
owns how one cell reads as text (``cell_text``): lists joined with ``"; "``, missing
values empty, so the Markdown table, the workbook and the notes of ``citations`` agree::

    df.dllm.to_excel("review.xlsx")   # table, evidence and provenance sheets
    df.dllm.to_csv("review.csv")      # utf-8-sig: Excel shows accents right
    print(df.dllm.to_markdown())
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import pandas as pd

from . import frames
from .statuses import ANSWERED

__all__ = [
    "cell_text",
    "missing",
    "provenance",
    "to_csv",
    "to_excel",
    "to_markdown",
    "write_text",
]

EXCEL_CELL_LIMIT = 32_767
"""The most characters an Excel cell holds; longer text is cut and marked."""
_CUT_MARK = " […cut: longer than an Excel cell holds]"
_LIST_SEPARATOR = "; "


def missing(value: Any) -> bool:
    """Whether a cell holds no value (None, ``pd.NA``, NaN)."""
    if value is None or value is pd.NA:
        return True
    return isinstance(value, float) and value != value


def _plain(value: Any) -> Any:
    """A numpy scalar or array as the plain Python value."""
    if hasattr(value, "tolist") and not isinstance(value, str):
        return value.tolist()
    return value


def cell_text(value: Any) -> str | None:
    """One cell as readable text: lists joined with ``"; "``, ``None`` when missing."""
    value = _plain(value)
    if isinstance(value, (list, tuple)):
        return _LIST_SEPARATOR.join(str(v) for v in value if not missing(v))
    if missing(value):
        return None
    return str(value)


def _is_listlike(value: Any) -> bool:
    return isinstance(_plain(value), (list, tuple))


# -- CSV ----------------------------------------------------------------------------------


def to_csv(frame: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Write the table as it is (wide or long) as CSV in ``utf-8-sig``.

    The byte-order mark makes Excel read the file as UTF-8, so accents and symbols show
    right. Lists (authors, a list prompt's values) are written as JSON text, as the long
    form's ``value`` and ``quotes`` already are; a named index (the papers) is the first
    column.
    """
    table = frame.copy()
    for name in table.columns:
        if table[name].dtype == object:
            table[name] = [
                json.dumps(_plain(v), ensure_ascii=False) if _is_listlike(v) else v
                for v in table[name]
            ]
    table.to_csv(path, encoding="utf-8-sig", index=table.index.name is not None)


# -- Markdown -----------------------------------------------------------------------------


def _markdown_cell(value: Any) -> str:
    text = cell_text(value) or ""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.replace("|", "\\|").replace("\n", "<br>")


def to_markdown(frame: pd.DataFrame, path: str | os.PathLike[str] | None = None) -> str:
    """The table as it is (wide or long) as a Markdown table (GitHub's pipe tables).

    ``|`` in a cell is escaped and a line break becomes ``<br>``, so each row stays one
    line; numbers are right-aligned; a missing cell is empty. Returns the text, and writes
    it (UTF-8) when ``path`` is given. A model comparison's column ``(prompt, model)``
    is headed ``prompt [model]``.
    """
    named_index = frame.index.name is not None
    headers = [str(frame.index.name)] if named_index else []
    headers += [frames.column_label(c) for c in frame.columns]
    numeric = ([False] if named_index else []) + [
        pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])
        for c in frame.columns
    ]
    lines = [
        "| " + " | ".join(_markdown_cell(h) for h in headers) + " |",
        "|" + "|".join("---:" if right else "---" for right in numeric) + "|",
    ]
    for key, row in zip(frame.index, frame.itertuples(index=False), strict=True):
        cells = ([key] if named_index else []) + list(row)
        lines.append("| " + " | ".join(_markdown_cell(v) for v in cells) + " |")
    return write_text("\n".join(lines) + "\n", path)


def write_text(text: str, path: str | os.PathLike[str] | None) -> str:
    """Write ``text`` as UTF-8 (``\\n`` line ends) when ``path`` is given; return it."""
    if path is not None:
        with open(path, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
    return text


# -- Excel --------------------------------------------------------------------------------

_TEXT_WIDTH = 60  # characters: long text wraps at this column width
_NUMBER_WIDTH = 12


def _excel_text(value: str) -> str:
    """Text an Excel cell can hold: no control characters, at most 32,767 characters."""
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

    text: str = ILLEGAL_CHARACTERS_RE.sub("", value)
    if len(text) > EXCEL_CELL_LIMIT:
        text = text[: EXCEL_CELL_LIMIT - len(_CUT_MARK)] + _CUT_MARK
    return text


def _excel_value(value: Any) -> Any:
    """A cell as Excel takes it: numbers and booleans as they are, the rest as text."""
    value = _plain(value)
    if isinstance(value, (list, tuple)):
        return _excel_text(cell_text(value) or "")
    if missing(value):
        return None
    if isinstance(value, (bool, int, float)):
        return value
    return _excel_text(str(value))


def _excel_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every column as plain Python values (``None`` when missing)."""
    columns = {name: [_excel_value(v) for v in frame[name]] for name in frame.columns}
    table: pd.DataFrame = pd.DataFrame(columns, index=frame.index, dtype=object)
    table.index = pd.Index([_excel_value(v) for v in frame.index], name=frame.index.name)
    return table


def _shape_sheet(sheet: Any, *, freeze: str = "A2") -> None:
    """Wrapped text, frozen header, widths that fit the content; formulas kept as text."""
    from openpyxl.styles import Alignment
    from openpyxl.utils import get_column_letter

    wrap = Alignment(wrap_text=True, vertical="top")
    widths: dict[int, int] = {}
    for row in sheet.iter_rows():
        for cell in row:
            if cell.data_type == "f":  # text such as "=1+2" from a model is not a formula
                cell.data_type = "s"
            if cell.value == "":  # pandas writes a missing value as empty text
                cell.value = None
            if cell.value is None:
                continue
            if cell.row > 1:
                cell.alignment = wrap
            longest = max(len(line) for line in str(cell.value).splitlines() or [""])
            widths[cell.column] = max(widths.get(cell.column, 0), longest)
    for column, width in widths.items():
        letter = get_column_letter(column)
        sheet.column_dimensions[letter].width = min(max(width, 8) + 2, _TEXT_WIDTH)
    sheet.freeze_panes = freeze


def to_excel(
    path: str | os.PathLike[str],
    *,
    wide: pd.DataFrame,
    long: pd.DataFrame,
    evidence: pd.DataFrame,
) -> None:
    """Write a workbook with three sheets: ``table``, ``evidence`` and ``provenance``.

    ``table`` is the paper x prompt table: numbers, booleans and years as Excel numbers and
    booleans, lists joined with ``"; "``, long text wrapped, the header row and the paper
    column frozen. ``evidence`` lists every checked quote (paper, prompt, quote, page,
    match). ``provenance`` names the run, its summary, each prompt with its type and the
    models and workers that answered it.
    """
    from openpyxl.styles import Font

    with pd.ExcelWriter(path, engine="openpyxl") as writer:
        _excel_frame(wide).to_excel(writer, sheet_name="table")
        _shape_sheet(writer.sheets["table"], freeze="B2")
        _excel_frame(evidence).to_excel(writer, sheet_name="evidence", index=False)
        _shape_sheet(writer.sheets["evidence"])
        row = 0
        for title, part in provenance(long):
            pd.DataFrame([[title]]).to_excel(
                writer, sheet_name="provenance", startrow=row, header=False, index=False
            )
            _excel_frame(part).to_excel(
                writer, sheet_name="provenance", startrow=row + 1, index=False
            )
            writer.sheets["provenance"].cell(row + 1, 1).font = Font(bold=True, size=13)
            row += len(part) + 3
        _shape_sheet(writer.sheets["provenance"], freeze="A1")


def provenance(long: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """Where a table came from, as titled tables: the run, its prompts, its workers."""
    attrs = long.attrs
    run = pd.DataFrame(
        [
            ("run id", attrs.get(frames.RUN_ATTR)),
            ("summary", attrs.get(frames.SUMMARY_ATTR)),
            ("result store", attrs.get(frames.STORE_ATTR)),
            ("papers", int(long["paper"].nunique())),
            ("prompts", int(long["prompt"].nunique())),
            ("exported", datetime.now(timezone.utc).isoformat(timespec="seconds")),
        ],
        columns=["field", "value"],
    )
    specs = attrs.get(frames.PROMPTS_ATTR) or {}
    answered = long["status"].isin(ANSWERED)
    prompts = []
    for name, rows in long.groupby("prompt", sort=False):
        spec = specs.get(name) or {}
        done = rows[answered.loc[rows.index]]
        prompts.append(
            {
                "prompt": name,
                "type": spec.get("type", "text"),
                "choices": list(spec.get("choices") or []),
                "answered": len(done),
                "not answered": len(rows) - len(done),
                "models": _distinct(done["model"]),
                "workers": _distinct(done["worker"]),
            }
        )
    columns = ["prompt", "type", "choices", "answered", "not answered", "models", "workers"]
    by_prompt = pd.DataFrame(prompts, columns=columns)
    calls = long[answered & long["worker"].notna()]
    workers = (
        calls.groupby(["worker", "model"], dropna=False)
        .agg(
            answers=("prompt", "size"),
            prompt_tokens=("prompt_tokens", "sum"),
            completion_tokens=("completion_tokens", "sum"),
            mean_latency_s=("latency_s", "mean"),
        )
        .reset_index()
    )
    return [("run", run), ("prompts", by_prompt), ("workers", workers)]


def _distinct(values: Sequence[Any] | pd.Series) -> list[str]:
    return sorted({str(v) for v in values if not missing(v)})
