"""Result tables: the tidy long form, the wide paper x prompt form, and exports.

Both forms are plain DataFrames, one call apart through the ``.dllm`` accessor
(``accessor``)::

    long = cluster.analyze("papers/", long=True)
    wide = long.dllm.wide()          # paper x prompt, cells hold answers
    long = wide.dllm.long()          # back, with every provenance column
    long.dllm.to_json_report("report.json")   # the original tool's JSON report
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from .cells import decode_json
from .columns import JSON_COLUMNS, LONG_COLUMNS, META_COLUMNS
from .statuses import ANSWERED, FAILED, OK, PENDING

__all__ = [
    "LONG_COLUMNS",
    "PROMPTS_ATTR",
    "RUN_ATTR",
    "STORE_ATTR",
    "SUMMARY_ATTR",
    "json_report",
    "long_frame",
    "long_from_wide",
    "prompt_columns",
    "typed_array",
    "wide_frame",
]

# What a table carries in ``attrs`` (pandas keeps them through Parquet): enough to find
# its rows in the result store again, in this process or another.
RUN_ATTR = "dllm_run"
STORE_ATTR = "dllm_store"
ELAPSED_ATTR = "dllm_elapsed_s"
SUMMARY_ATTR = "dllm_summary"
PROMPTS_ATTR = "dllm_prompts"
"""``{prompt name: {"type": ..., "choices": [...]}}``: how to type each prompt's column."""
_CARRIED = (RUN_ATTR, STORE_ATTR, ELAPSED_ATTR, SUMMARY_ATTR, PROMPTS_ATTR)


def long_frame(
    rows: Sequence[dict[str, Any]] | Mapping[str, Sequence[Any]],
    *,
    run_id: str | None = None,
    elapsed_s: float | None = None,
    store: str | None = None,
    extra_columns: Sequence[str] = (),
) -> pd.DataFrame:
    """Build the long form with its fixed columns and dtypes.

    ``rows`` is one dict per row, or (cheaper for many rows) one list or array per column.
    ``status`` is ``ok``, ``cached`` (answered from the result store), ``failed``,
    ``pending`` (an interrupted run) or why the paper could not be read.
    """
    columns = [*LONG_COLUMNS, *extra_columns]
    frame: pd.DataFrame
    if isinstance(rows, Mapping):
        frame = pd.DataFrame(dict(rows), columns=columns, copy=False)
    else:
        frame = pd.DataFrame(list(rows), columns=columns)
    frame = frame.astype(dict(LONG_COLUMNS))
    if run_id is not None:
        frame.attrs[RUN_ATTR] = run_id
    if store is not None:
        frame.attrs[STORE_ATTR] = store
    if elapsed_s is not None:
        frame.attrs[ELAPSED_ATTR] = float(elapsed_s)
    return frame


def wide_frame(long: pd.DataFrame) -> pd.DataFrame:
    """Paper x prompt: one row per paper (indexed by file name), one column per prompt,
    then the paper's reference metadata.

    A text prompt's column holds its answers (``string``); a typed prompt's holds values
    with a real dtype (``Int64``, ``Float64``, ``boolean``, ``category`` with the declared
    choices, or lists). Columns keep the prompts' order; a failed, invalid or unread cell
    is missing (``<NA>``).
    """
    prompts = list(dict.fromkeys(long["prompt"]))
    papers = pd.Index(list(dict.fromkeys(long["paper"])), name="paper")
    specs: Mapping[str, Mapping[str, Any]] = long.attrs.get(PROMPTS_ATTR) or {}
    by_prompt = {name: rows.set_index("paper") for name, rows in long.groupby("prompt", sort=False)}
    columns: dict[str, Any] = {}
    for name in prompts:
        rows = by_prompt[name].reindex(papers)
        spec = specs.get(name) or {}
        if spec.get("type", "text") == "text":
            columns[name] = rows["answer"].astype("string").to_numpy()
        else:
            answered = rows["status"].isin(ANSWERED).to_numpy()
            values = [
                decode_json(v) if ok else None
                for v, ok in zip(rows["value"], answered, strict=True)
            ]
            columns[name] = typed_array(values, spec)
    first = long.drop_duplicates("paper").set_index("paper").reindex(papers)
    for name in META_COLUMNS:
        if name not in columns:
            columns[name] = first[name].to_numpy()
    wide = pd.DataFrame(columns, index=papers)
    meta_types: dict[str, Any] = {name: LONG_COLUMNS[name] for name in META_COLUMNS}
    typed: pd.DataFrame = wide.astype(meta_types)
    typed.attrs.update({k: v for k, v in long.attrs.items() if k in _CARRIED})
    return typed


def typed_array(values: Sequence[Any], spec: Mapping[str, Any]) -> Any:
    """Values of one typed prompt as a pandas array of its dtype."""
    kind = spec.get("type", "text")
    if kind == "category":
        return pd.Categorical(values, categories=list(spec.get("choices") or []))
    if kind == "list":
        return pd.array(list(values), dtype=object)
    dtype: Any = {"integer": "Int64", "number": "Float64", "boolean": "boolean"}.get(kind)
    return pd.array(list(values), dtype=dtype or "string")


def _stored_long(wide: pd.DataFrame) -> pd.DataFrame | None:
    """The run's long form from the result store its ``attrs`` name, or ``None``."""
    from .store import ResultStore

    run, path = wide.attrs.get(RUN_ATTR), wide.attrs.get(STORE_ATTR)
    if not isinstance(run, str) or not isinstance(path, str) or not Path(path).is_file():
        return None
    with ResultStore(path) as store:
        rows = store.run_rows(run, list(LONG_COLUMNS))
    if not rows:
        return None
    columns = {
        name: [decode_json(row[i]) if name in JSON_COLUMNS else row[i] for row in rows]
        for i, name in enumerate(LONG_COLUMNS)
    }
    return long_frame(columns)


def prompt_columns(wide: pd.DataFrame) -> list[str]:
    """The wide table's answer columns (those that are not reference metadata)."""
    return [c for c in wide.columns if c not in META_COLUMNS]


def long_from_wide(wide: pd.DataFrame) -> pd.DataFrame:
    """The long form of a wide table as it is now.

    Provenance (worker, model, tokens, errors, quotes) comes from the result store, by the
    run id and store path the table carries; the answers come from the wide table itself,
    so an edited cell shows its edit and a dropped row or column is dropped. Without the
    store, the long form has the answers only.
    """
    index = wide.index.name or "paper"
    answers = wide[prompt_columns(wide)].reset_index()
    melted = answers.melt(id_vars=index, var_name="prompt", value_name="shown")
    melted = melted.rename(columns={index: "paper"})
    shown = [None if _missing(v) else v for v in melted["shown"]]
    specs: Mapping[str, Mapping[str, Any]] = wide.attrs.get(PROMPTS_ATTR) or {}
    typed = [(specs.get(p) or {}).get("type", "text") != "text" for p in melted["prompt"]]
    stored = _stored_long(wide)
    if stored is None:
        frame = pd.DataFrame({"paper": melted["paper"], "prompt": melted["prompt"]})
        frame["answer"] = [None if t else _text(v) for v, t in zip(shown, typed, strict=True)]
        frame["value"] = [_json_value(v) if t else None for v, t in zip(shown, typed, strict=True)]
        frame["status"] = [OK if v is not None else FAILED for v in shown]
        frame = long_frame(frame.to_dict("records"))
    else:
        keys = pd.MultiIndex.from_frame(melted[["paper", "prompt"]])
        frame = stored.set_index(["paper", "prompt"]).reindex(keys).reset_index()
        answers_now = [
            stored_answer if t else _text(v)
            for v, t, stored_answer in zip(shown, typed, frame["answer"], strict=True)
        ]
        frame["answer"] = pd.array(
            [None if _missing(a) else a for a in answers_now], dtype="string"
        )
        frame["value"] = pd.array(
            [_json_value(v) if t else None for v, t in zip(shown, typed, strict=True)],
            dtype="string",
        )
        frame["status"] = frame["status"].fillna(PENDING)  # not finished when saved
        frame = frame[list(LONG_COLUMNS)].astype(dict(LONG_COLUMNS))
    frame.attrs.update({k: v for k, v in wide.attrs.items() if k in _CARRIED})
    result: pd.DataFrame = frame
    return result


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and value != value)


def _json_value(value: Any) -> str | None:
    """A wide cell's value as the long form's JSON text (numpy scalars made plain)."""
    if value is None:
        return None
    if hasattr(value, "tolist"):
        value = value.tolist()
    elif hasattr(value, "item"):
        value = value.item()
    return json.dumps(value, ensure_ascii=False)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _value(value: Any) -> Any:
    """A JSON-ready value: pandas' missing markers become None."""
    return None if value is None or value is pd.NA or value != value else value


def json_report(long: pd.DataFrame, *, total_time_seconds: float | None = None) -> dict[str, Any]:
    """The original tool's JSON report: counts, rates, and one entry per task.

    As the original wrote them, ``success_rate`` is a percentage and ``tasks_per_second``
    counts every task, failed ones included.
    """
    total = len(long)
    ok = long["status"].isin(ANSWERED)
    successful = int(ok.sum())
    elapsed = total_time_seconds
    if elapsed is None:
        elapsed = float(long.attrs.get(ELAPSED_ATTR, 0.0))
    results = []
    for row, success in zip(long.to_dict("records"), ok, strict=True):
        entry: dict[str, Any] = {
            "file": row["paper"],
            "prompt_template": row["prompt"],
            "success": bool(success),
            "response": {
                "model": _value(row["model"]),
                "response": _value(row["answer"]),
                "worker": _value(row["worker"]),
            },
        }
        if not success:
            entry["error"] = _value(row["error"])
        results.append(entry)
    return {
        "timestamp": datetime.now(timezone.utc).isoformat(),
        "files_processed": int(long["paper"].nunique()),
        "prompts_used": int(long["prompt"].nunique()),
        "total_tasks": total,
        "successful": successful,
        "failed": total - successful,
        "success_rate": 100.0 * successful / total if total else 0.0,
        "total_time_seconds": elapsed,
        "tasks_per_second": total / elapsed if elapsed else 0.0,
        "results": results,
    }
