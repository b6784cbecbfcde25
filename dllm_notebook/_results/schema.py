"""What the result store holds: its schema (numbered migrations), its rows, and task keys.

Migration ``n`` (1-based) is ``MIGRATIONS[n - 1]``. A store records in ``PRAGMA
user_version`` how many it has had, and opening it runs the rest, in one transaction.
Only ever append a migration; never edit one that has shipped.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .._errors import DllmError
from .cells import ROW_FIELDS

__all__ = [
    "INSERT_CALL",
    "INSERT_CELL",
    "MIGRATIONS",
    "CallRecord",
    "canonical_options",
    "migrate",
    "normalise_model",
    "request_key",
    "sha256_text",
    "task_key",
]

KEY_VERSION = 1
"""Part of every key: bump it to invalidate every stored answer (a change of meaning)."""

MIGRATIONS: tuple[tuple[str, str], ...] = (
    (
        "initial schema: runs, calls, cache, cells",
        """
        CREATE TABLE runs (
            run_id TEXT PRIMARY KEY,
            started_at REAL NOT NULL,
            finished_at REAL,
            status TEXT NOT NULL,
            papers INTEGER NOT NULL,
            prompts INTEGER NOT NULL,
            tasks INTEGER NOT NULL,
            ok INTEGER,
            cached INTEGER,
            failed INTEGER,
            options TEXT NOT NULL,
            system_sha256 TEXT,
            host TEXT,
            pid INTEGER
        );
        CREATE TABLE calls (
            id INTEGER PRIMARY KEY,
            run_id TEXT,
            at REAL NOT NULL,
            key TEXT NOT NULL,
            request_key TEXT NOT NULL,
            paper TEXT,
            paper_sha256 TEXT,
            prompt TEXT,
            step TEXT,
            prompt_sha256 TEXT NOT NULL,
            prompt_text TEXT,
            options TEXT,
            worker TEXT,
            model TEXT,
            served_model TEXT,
            answer TEXT,
            error TEXT,
            error_type TEXT,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            latency_s REAL,
            tokens_per_second REAL,
            finish_reason TEXT,
            attempts INTEGER
        );
        CREATE INDEX calls_by_run ON calls(run_id);
        CREATE TABLE cache (
            key TEXT PRIMARY KEY,
            call_id INTEGER NOT NULL REFERENCES calls(id)
        ) WITHOUT ROWID;
        CREATE TABLE cells (
            run_id TEXT NOT NULL,
            position INTEGER NOT NULL,
            paper TEXT,
            title TEXT,
            prompt TEXT,
            answer TEXT,
            status TEXT,
            error TEXT,
            worker TEXT,
            model TEXT,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            latency_s REAL,
            fit TEXT,
            error_type TEXT,
            PRIMARY KEY (run_id, position)
        );
        """,
    ),
    (
        "indexes for history(paper=..., worker=...)",
        """
        CREATE INDEX calls_by_paper ON calls(paper);
        CREATE INDEX calls_by_worker ON calls(worker);
        """,
    ),
    (
        "typed values, evidence and reference metadata in cells",
        """
        ALTER TABLE cells ADD COLUMN value TEXT;
        ALTER TABLE cells ADD COLUMN evidence TEXT;
        ALTER TABLE cells ADD COLUMN quotes TEXT;
        ALTER TABLE cells ADD COLUMN authors TEXT;
        ALTER TABLE cells ADD COLUMN year INTEGER;
        ALTER TABLE cells ADD COLUMN doi TEXT;
        ALTER TABLE cells ADD COLUMN venue TEXT;
        ALTER TABLE cells ADD COLUMN source TEXT;
        """,
    ),
)
"""Migration ``n`` (1-based) is ``MIGRATIONS[n - 1]``: a description and its SQL. Only ever
append: a store records the number it has reached, and opening it runs the rest."""


@dataclass(frozen=True)
class CallRecord:
    """One request's outcome, as the ``calls`` table holds it (column order)."""

    run_id: str | None
    at: float
    key: str
    request_key: str
    paper: str | None
    paper_sha256: str | None
    prompt: str | None
    step: str | None
    prompt_sha256: str
    prompt_text: str | None
    options: str | None
    worker: str | None
    model: str | None
    served_model: str | None
    answer: str | None
    error: str | None
    error_type: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_s: float | None
    tokens_per_second: float | None
    finish_reason: str | None
    attempts: int | None


CELL_FIELDS = ", ".join(ROW_FIELDS)
INSERT_CELL = (
    f"INSERT OR REPLACE INTO cells (run_id, position, {CELL_FIELDS}) "
    f"VALUES ({', '.join('?' * (len(ROW_FIELDS) + 2))})"
)
_CALL_COLUMNS = ", ".join(f.name for f in fields(CallRecord))
INSERT_CALL = (
    f"INSERT INTO calls ({_CALL_COLUMNS}) VALUES ({', '.join('?' * len(fields(CallRecord)))})"
)


# -- keys ---------------------------------------------------------------------------------
def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def canonical_options(options: Mapping[str, Any]) -> str:
    """Generation options as canonical JSON: sorted keys, ``1.0`` written as ``1``."""

    def plain(value: Any) -> Any:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, Mapping):
            return {str(k): plain(v) for k, v in value.items()}
        return value

    return json.dumps(
        plain(dict(options)),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=repr,
    )


def request_key(
    paper_sha256: str,
    prompt: str,
    system: str | None,
    options: Mapping[str, Any],
    schema: Mapping[str, Any] | None = None,
) -> str:
    """What is asked, whoever answers: paper, rendered prompt, system message, options, and
    the answer's JSON schema (a prompt that changes type or starts asking for quotes is
    asked again; a free-text prompt's key is as it always was)."""
    parts: list[Any] = [
        KEY_VERSION,
        paper_sha256,
        sha256_text(prompt),
        sha256_text(system) if system else None,
        canonical_options(options),
    ]
    if schema is not None:
        parts.append(sha256_text(json.dumps(schema, sort_keys=True, separators=(",", ":"))))
    return sha256_text(json.dumps(parts, separators=(",", ":")))


def normalise_model(model: str | None) -> str:
    """Ollama's implicit ``:latest`` tag is the same model."""
    name = model or ""
    return name[: -len(":latest")] if name.endswith(":latest") else name


def task_key(request: str, model: str | None) -> str:
    """The cache key: the :func:`request_key` asked of one model (the name workers use)."""
    return sha256_text(f"{request}\n{normalise_model(model)}")


def migrate(
    conn: sqlite3.Connection, *, where: Path | str = "the store", upto: int | None = None
) -> int:
    """Run the migrations this file has not had yet (up to ``upto``); return its version.

    Runs inside one ``BEGIN IMMEDIATE`` transaction, so two processes opening a new store
    at once do not both migrate it.
    """
    target = len(MIGRATIONS) if upto is None else upto
    current = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if current > len(MIGRATIONS):
        raise DllmError(
            f"the result store {where} was written by a newer dllm_notebook (schema "
            f"{current}; this version knows {len(MIGRATIONS)}). Upgrade dllm_notebook, or "
            "use another store with Cluster(store=...)"
        )
    if current >= target:
        return current
    conn.execute("BEGIN IMMEDIATE")
    try:
        current = int(conn.execute("PRAGMA user_version").fetchone()[0])
        for number in range(current + 1, target + 1):
            _, script = MIGRATIONS[number - 1]
            for statement in script.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return max(current, target)
