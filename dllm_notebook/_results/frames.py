"""Result tables: the tidy long form, the wide paper x prompt form, and exports.

Both forms are plain DataFrames, one call apart through the ``.dllm`` accessor
(``accessor``)::

    long = cluster.analyze("papers/", long=True)
    wide = long.dllm.wide()          # paper x prompt, cells hold answers
    long = wide.dllm.long()          # back, with every provenance column
    both = cluster.analyze("papers/", model=["m1", "m2"])   # columns (prompt, model)
    both["design"]                   # the two models' answers side by side
    long.dllm.to_json_report("report.json")   # the original tool's JSON report
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from .._errors import OneModelNeeded
from .cells import decode_json
from .columns import JSON_COLUMNS, LONG_COLUMNS, META_COLUMNS, MODEL_COLUMN
from .statuses import ANSWERED, FAILED, OK, PENDING

__all__ = [
    "LONG_COLUMNS",
    "MODELS_ATTR",
    "PROMPTS_ATTR",
    "RUN_ATTR",
    "STORE_ATTR",
    "SUMMARY_ATTR",
    "column_label",
    "for_model",
    "is_comparison",
    "json_report",
    "long_frame",
    "long_from_wide",
    "mark_requested_models",
    "prompt_columns",
    "require_one_model",
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
MODELS_ATTR = "dllm_models"
"""The models compared, in the order asked (only when several were)."""
MODEL_ATTR = "dllm_model"
"""The one model a table picked from a comparison holds (``df.dllm.for_model(...)``)."""
_CARRIED = (
    RUN_ATTR, STORE_ATTR, ELAPSED_ATTR, SUMMARY_ATTR, PROMPTS_ATTR, MODELS_ATTR, MODEL_ATTR
)  # fmt: skip
LEVELS = ("prompt", "model")
"""The wide table's column levels when models are compared."""


def _long_types(compared: bool) -> dict[str, str]:
    """The long form's columns and dtypes; ``requested_model`` follows ``model`` when
    models are compared."""
    types: dict[str, str] = {}
    for name, dtype in LONG_COLUMNS.items():
        types[name] = dtype
        if compared and name == "model":
            types[MODEL_COLUMN] = "string"
    return types


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
    types = _long_types(MODEL_COLUMN in extra_columns)
    columns = [*types, *(c for c in extra_columns if c not in types)]
    frame: pd.DataFrame
    if isinstance(rows, Mapping):
        frame = pd.DataFrame(dict(rows), columns=columns, copy=False)
    else:
        frame = pd.DataFrame(list(rows), columns=columns)
    frame = frame.astype(types)
    if run_id is not None:
        frame.attrs[RUN_ATTR] = run_id
    if store is not None:
        frame.attrs[STORE_ATTR] = store
    if elapsed_s is not None:
        frame.attrs[ELAPSED_ATTR] = float(elapsed_s)
    return frame


def mark_requested_models(
    long: pd.DataFrame, models: Sequence[str | None], positions: Sequence[int]
) -> pd.DataFrame:
    """Add ``requested_model`` to a comparison's long form: the model each row's cell asked,
    known from its position (paper x prompt x model order; ``positions``: each row's)."""
    count = len(models)
    asked = pd.Series([models[p % count] for p in positions], index=long.index, dtype="string")
    long.insert(list(long.columns).index("model") + 1, MODEL_COLUMN, asked)
    long.attrs[MODELS_ATTR] = list(models)
    return long


def is_comparison(frame: pd.DataFrame) -> bool:
    """Whether a table compares models: a wide one with ``(prompt, model)`` columns, or a
    long one with ``requested_model``."""
    return isinstance(frame.columns, pd.MultiIndex) or MODEL_COLUMN in frame.columns


def wide_frame(long: pd.DataFrame) -> pd.DataFrame:
    """Paper x prompt: one row per paper (indexed by file name), one column per prompt,
    then the paper's reference metadata.

    A text prompt's column holds its answers (``string``); a typed prompt's holds values
    with a real dtype (``Int64``, ``Float64``, ``boolean``, ``category`` with the declared
    choices, or lists). Columns keep the prompts' order; a failed, invalid or unread cell
    is missing (``<NA>``).

    When models are compared (the long form has ``requested_model``), the columns are a
    MultiIndex with levels ``("prompt", "model")``: one column per prompt x model, each
    typed as its prompt, then the metadata as ``(name, "")`` columns.
    """
    compared = MODEL_COLUMN in long.columns
    prompts = list(dict.fromkeys(long["prompt"]))
    papers = pd.Index(list(dict.fromkeys(long["paper"])), name="paper")
    specs: Mapping[str, Mapping[str, Any]] = long.attrs.get(PROMPTS_ATTR) or {}
    keys: Any = ["prompt", MODEL_COLUMN] if compared else "prompt"
    by_column = {key: rows.set_index("paper") for key, rows in long.groupby(keys, sort=False)}
    order: list[Any] = prompts
    if compared:
        asked = long.attrs.get(MODELS_ATTR) or list(dict.fromkeys(long[MODEL_COLUMN]))
        order = [(p, m) for p in prompts for m in asked if (p, m) in by_column]
    columns: dict[Any, Any] = {}
    for key in order:
        rows = by_column[key].reindex(papers)
        spec = specs.get(key[0] if compared else key) or {}
        if spec.get("type", "text") == "text":
            columns[key] = rows["answer"].astype("string").to_numpy()
        else:
            answered = rows["status"].isin(ANSWERED).to_numpy()
            values = [
                decode_json(v) if ok else None
                for v, ok in zip(rows["value"], answered, strict=True)
            ]
            columns[key] = typed_array(values, spec)
    first = long.drop_duplicates("paper").set_index("paper").reindex(papers)
    meta_types: dict[Any, Any] = {}
    for name in META_COLUMNS:
        key = (name, "") if compared else name
        if key not in columns:
            columns[key] = first[name].to_numpy()
        meta_types[key] = LONG_COLUMNS[name]
    wide = pd.DataFrame(columns, index=papers)
    if compared:
        wide.columns = pd.MultiIndex.from_tuples(list(columns), names=LEVELS)
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
        rows = store.run_rows(run, ["position", *LONG_COLUMNS])
    if not rows:
        return None
    columns = {
        name: [decode_json(row[i]) if name in JSON_COLUMNS else row[i] for row in rows]
        for i, name in enumerate(LONG_COLUMNS, start=1)
    }
    long = long_frame(columns)
    models = wide.attrs.get(MODELS_ATTR)
    if not isinstance(models, list) or len(models) < 2:
        return long
    long = mark_requested_models(long, models, [int(row[0]) for row in rows])
    if is_comparison(wide):
        return long
    picked = wide.attrs.get(MODEL_ATTR)
    if picked not in models:
        return None  # one model's columns, but which is not known: the answers only
    one: pd.DataFrame = long[long[MODEL_COLUMN] == picked].drop(columns=MODEL_COLUMN)
    flat: pd.DataFrame = one.reset_index(drop=True)
    return flat


def prompt_columns(wide: pd.DataFrame) -> list[Any]:
    """The wide table's answer columns (those that are not reference metadata): names, or
    ``(prompt, model)`` pairs when models are compared."""
    if isinstance(wide.columns, pd.MultiIndex):
        return [c for c in wide.columns if c[0] not in META_COLUMNS]
    return [c for c in wide.columns if c not in META_COLUMNS]


def column_label(column: Any) -> str:
    """A column's name as one line of text: ``design [m1]`` for a comparison's column,
    ``title`` for its metadata."""
    if isinstance(column, tuple):
        return " ".join([str(column[0]), *(f"[{part}]" for part in column[1:] if part)])
    return str(column)


def for_model(frame: pd.DataFrame, model: str) -> pd.DataFrame:
    """One model's table out of a comparison, wide or long, as if it had been asked alone:
    flat columns, and ``.dllm.long()`` still finds its provenance in the store."""
    models = list(frame.attrs.get(MODELS_ATTR) or ())
    if not is_comparison(frame):
        raise OneModelNeeded(
            "this table does not compare models: it is one model's already (for_model() "
            'picks one out of analyze(..., model=["m1", "m2"]))'
        )
    if model not in models:
        raise OneModelNeeded(
            f"{model!r} is not one of the models compared here ({', '.join(map(str, models))})"
        )
    picked: pd.DataFrame
    if isinstance(frame.columns, pd.MultiIndex):
        answers = frame.xs(model, axis=1, level="model")
        meta = frame[[c for c in frame.columns if c[0] in META_COLUMNS]].droplevel(1, axis=1)
        picked = pd.concat([answers, meta], axis=1)
        picked.columns.name = None
    else:
        rows = frame[frame[MODEL_COLUMN] == model]
        picked = rows.drop(columns=MODEL_COLUMN).reset_index(drop=True)
    picked.attrs = {**frame.attrs, MODEL_ATTR: model}
    return picked


def require_one_model(frame: pd.DataFrame, what: str) -> None:
    """Raise :class:`OneModelNeeded` when ``frame`` compares models and ``what`` (an
    export) takes one model's columns."""
    if not is_comparison(frame):
        return
    models = frame.attrs.get(MODELS_ATTR) or ["m1", "m2"]
    raise OneModelNeeded(
        f"{what} takes one model's table, and this one compares {', '.join(map(str, models))}."
        f' Pick one with df.dllm.for_model("{models[0]}") (wide or long; plain '
        f'df.xs("{models[0]}", axis=1, level="model") loses the provenance), or write the '
        "comparison with df.dllm.to_csv(), to_markdown() or df.to_parquet()"
    )


def long_from_wide(wide: pd.DataFrame) -> pd.DataFrame:
    """The long form of a wide table as it is now.

    Provenance (worker, model, tokens, errors, quotes) comes from the result store, by the
    run id and store path the table carries; the answers come from the wide table itself,
    so an edited cell shows its edit and a dropped row or column is dropped. Without the
    store, the long form has the answers only.
    """
    compared = isinstance(wide.columns, pd.MultiIndex)
    columns = prompt_columns(wide)
    papers = list(wide.index)
    melted = pd.DataFrame(
        {
            "paper": papers * len(columns),
            "prompt": [c[0] if compared else c for c in columns for _ in papers],
        }
    )
    if compared:
        melted[MODEL_COLUMN] = [c[1] for c in columns for _ in papers]
    shown = [None if _missing(v) else v for c in columns for v in wide[c].tolist()]
    specs: Mapping[str, Mapping[str, Any]] = wide.attrs.get(PROMPTS_ATTR) or {}
    typed = [(specs.get(p) or {}).get("type", "text") != "text" for p in melted["prompt"]]
    types = _long_types(compared)
    stored = _stored_long(wide)
    if stored is None:
        frame = melted.copy()
        frame["answer"] = [None if t else _text(v) for v, t in zip(shown, typed, strict=True)]
        frame["value"] = [_json_value(v) if t else None for v, t in zip(shown, typed, strict=True)]
        frame["status"] = [OK if v is not None else FAILED for v in shown]
        extra = [MODEL_COLUMN] if compared else []
        frame = long_frame(frame.to_dict("records"), extra_columns=extra)
    else:
        keys = pd.MultiIndex.from_frame(melted)
        frame = stored.set_index(list(melted.columns)).reindex(keys).reset_index()
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
        frame = frame[list(types)].astype(types)
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
