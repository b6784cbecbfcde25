"""The store's log as DataFrames: one row per request sent, and one per ``analyze()`` run.

>>> cluster.history()                            # every call, oldest first
>>> cluster.history(run="last", worker="imac-office")
>>> cluster.history().to_parquet("history.parquet")    # export
>>> cluster.runs()                               # one row per analyze(): counts and status
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


__all__ = ["HISTORY_COLUMNS", "RUN_COLUMNS", "Filter", "history_frame", "runs_frame"]

HISTORY_COLUMNS = {
    "run_id": "string",
    "at": "datetime64[ns, UTC]",
    "paper": "string",
    "prompt": "string",
    "step": "string",
    "worker": "string",
    "model": "string",
    "served_model": "string",
    "answer": "string",
    "error": "string",
    "error_type": "string",
    "prompt_tokens": "Int64",
    "completion_tokens": "Int64",
    "latency_s": "Float64",
    "tokens_per_second": "Float64",
    "finish_reason": "string",
    "attempts": "Int64",
    "cached": "boolean",
    "paper_sha256": "string",
    "prompt_sha256": "string",
    "prompt_text": "string",
    "options": "string",
    "key": "string",
}
"""The history's columns. ``model`` is the model the worker was asked for (part of the
cache key), ``served_model`` the name the server answered with; ``cached`` is True for the
call whose answer the cache reuses now; ``prompt_text`` is only kept with
``ResultStore(keep_prompts=True)``."""

RUN_COLUMNS = {
    "run_id": "string",
    "started_at": "datetime64[ns, UTC]",
    "finished_at": "datetime64[ns, UTC]",
    "status": "string",
    "papers": "Int64",
    "prompts": "Int64",
    "tasks": "Int64",
    "ok": "Int64",
    "cached": "Int64",
    "failed": "Int64",
    "options": "string",
    "host": "string",
    "pid": "Int64",
}
"""A run's ``status`` is ``running`` (or its process died), ``finished``, ``interrupted``,
``failed`` (an error ended it) or ``cancelled`` (a background job's ``cancel()``)."""

Filter = str | Sequence[str] | None


def _select(column: str, value: Filter, params: list[Any]) -> str | None:
    if value is None:
        return None
    values = [value] if isinstance(value, str) else list(value)
    params.extend(values)
    return f"c.{column} IN ({', '.join('?' * len(values))})"


def _last_run(conn: sqlite3.Connection) -> str | None:
    row = conn.execute("SELECT run_id FROM runs ORDER BY started_at DESC LIMIT 1").fetchone()
    return None if row is None else str(row[0])


def history_frame(
    conn: sqlite3.Connection,
    *,
    run: Filter = None,
    paper: Filter = None,
    worker: Filter = None,
) -> pd.DataFrame:
    """The ``calls`` table as a DataFrame, filtered by run, paper and worker."""
    import pandas as pd

    if run == "last":
        run = _last_run(conn) or ""
    params: list[Any] = []
    wheres = [
        w
        for w in (
            _select("run_id", run, params),
            _select("paper", paper, params),
            _select("worker", worker, params),
        )
        if w
    ]
    where = f"WHERE {' AND '.join(wheres)}" if wheres else ""
    names = [n for n in HISTORY_COLUMNS if n != "cached"]
    query = (
        f"SELECT {', '.join('c.' + n for n in names)}, c.id IN (SELECT call_id FROM cache) "
        f"FROM calls AS c {where} ORDER BY c.id"
    )
    rows = conn.execute(query, params).fetchall()
    columns = [*names, "cached"]
    frame = pd.DataFrame.from_records(rows, columns=columns)
    frame["at"] = pd.to_datetime(frame["at"], unit="s", utc=True)
    typed: pd.DataFrame = frame[list(HISTORY_COLUMNS)].astype(
        {k: v for k, v in HISTORY_COLUMNS.items() if k != "at"}
    )
    return typed


def runs_frame(conn: sqlite3.Connection) -> pd.DataFrame:
    """The ``runs`` table as a DataFrame, oldest first."""
    import pandas as pd

    names = list(RUN_COLUMNS)
    rows = conn.execute(f"SELECT {', '.join(names)} FROM runs ORDER BY started_at").fetchall()
    frame = pd.DataFrame.from_records(rows, columns=names)
    for column in ("started_at", "finished_at"):
        frame[column] = pd.to_datetime(frame[column], unit="s", utc=True)
    typed: pd.DataFrame = frame.astype(
        {k: v for k, v in RUN_COLUMNS.items() if not k.endswith("_at")}
    )
    return typed
