"""Result tables: the tidy long form, the wide paper x prompt form, and exports.

Both forms are plain DataFrames, one call apart through the ``.dllm`` accessor::

    long = cluster.analyze("papers/", long=True)
    wide = long.dllm.wide()          # paper x prompt, cells hold answers
    long = wide.dllm.long()          # back, with every provenance column
    long.dllm.to_json_report("report.json")   # the original tool's JSON report
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from .columns import LONG_COLUMNS
from .statuses import ANSWERED, FAILED, OK, PENDING

__all__ = [
    "LONG_COLUMNS",
    "RUN_ATTR",
    "STORE_ATTR",
    "SUMMARY_ATTR",
    "DllmAccessor",
    "json_report",
    "long_frame",
    "wide_frame",
]

# What a table carries in ``attrs`` (pandas keeps them through Parquet): enough to find
# its rows in the result store again, in this process or another.
RUN_ATTR = "dllm_run"
STORE_ATTR = "dllm_store"
ELAPSED_ATTR = "dllm_elapsed_s"
SUMMARY_ATTR = "dllm_summary"
_CARRIED = (RUN_ATTR, STORE_ATTR, ELAPSED_ATTR, SUMMARY_ATTR)


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
    """Paper x prompt: one row per paper (indexed by file name), one column per prompt.

    Columns keep the prompts' order; a failed or skipped task is missing (``<NA>``).
    """
    prompts = list(dict.fromkeys(long["prompt"]))
    papers = list(dict.fromkeys(long["paper"]))
    wide: pd.DataFrame = long.pivot(index="paper", columns="prompt", values="answer")
    wide = wide.reindex(index=papers, columns=prompts)
    wide.columns.name = None
    wide.index.name = "paper"
    wide.attrs.update({k: v for k, v in long.attrs.items() if k in _CARRIED})
    return wide


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
    columns = {name: [row[i] for row in rows] for i, name in enumerate(LONG_COLUMNS)}
    return long_frame(columns)


def _long_from_wide(wide: pd.DataFrame) -> pd.DataFrame:
    """The long form of a wide table as it is now.

    Provenance (worker, model, tokens, errors) comes from the result store, by the run id
    and store path the table carries; the answers come from the wide table itself, so an
    edited cell shows its edit and a dropped row or column is dropped. Without the store,
    the long form has the answers only.
    """
    wide_index = wide.index.name or "paper"
    melted = wide.reset_index().melt(id_vars=wide_index, var_name="prompt", value_name="answer")
    melted = melted.rename(columns={wide_index: "paper"})
    stored = _stored_long(wide)
    if stored is None:
        melted["status"] = melted["answer"].map(lambda a: OK if isinstance(a, str) else FAILED)
        frame = long_frame(melted.to_dict("records"))
    else:
        keys = pd.MultiIndex.from_frame(melted[["paper", "prompt"]])
        frame = stored.set_index(["paper", "prompt"]).reindex(keys).reset_index()
        edited = melted["answer"].astype("string")
        frame["answer"] = edited.to_numpy()
        frame["status"] = frame["status"].fillna(PENDING)  # not finished when saved
        frame = frame[list(LONG_COLUMNS)].astype(dict(LONG_COLUMNS))
    frame.attrs.update({k: v for k, v in wide.attrs.items() if k in _CARRIED})
    return frame


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


@pd.api.extensions.register_dataframe_accessor("dllm")
class DllmAccessor:
    """``df.dllm``: switch between the long and wide forms and export reports."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self._frame = frame

    @property
    def is_long(self) -> bool:
        return {"paper", "prompt", "answer"} <= set(self._frame.columns)

    def wide(self) -> pd.DataFrame:
        """The paper x prompt table."""
        return wide_frame(self._frame) if self.is_long else self._frame

    def long(self) -> pd.DataFrame:
        """One row per paper x prompt with provenance (worker, model, tokens, status...)."""
        return self._frame if self.is_long else _long_from_wide(self._frame)

    def to_json_report(self, path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
        """Write (when ``path`` is given) and return the original tool's JSON report."""
        report = json_report(self.long())
        if path is not None:
            with open(path, "w", encoding="utf-8") as fh:
                json.dump(report, fh, indent=2, ensure_ascii=False)
        return report

    def failures(self) -> pd.DataFrame:
        """The tasks that did not produce an answer, with their errors."""
        long = self.long()
        failed: pd.DataFrame = long[~long["status"].isin(ANSWERED)]
        return failed
