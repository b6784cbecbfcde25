"""The result store: every answer on disk the moment it arrives, in SQLite (WAL mode).

Where it lives, the first that applies:

1. ``Cluster(..., store=...)``: a file path, a folder (``results.sqlite`` goes in it),
   ``"user"`` (the user cache folder), ``None`` (off), or a :class:`ResultStore`;
2. the environment variable ``DLLM_STORE``, with the same values (``off`` turns it off);
3. ``.dllm/results.sqlite`` in the current working directory, beside the notebook.

The file and its folder are created on first use. Three tables: ``calls`` (one row per
request sent, ok or failed: the history), ``cache`` (task key -> the call whose answer is
reused), ``runs`` (one row per ``analyze()``) and ``cells`` (each run's finished rows of the
long form, from which its DataFrame is built). The schema changes only through the
numbered :data:`MIGRATIONS`; ``PRAGMA user_version`` records how many have run.

A task key is the SHA-256 of the paper's content hash, the rendered prompt's hash, the
system message, the generation options (canonical JSON) and the model name the worker
was asked for: see :func:`request_key` and :func:`task_key`. API keys never reach it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import astuple
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._errors import DllmError
from .._types import Answer
from .cells import ROW_FIELDS
from .schema import (
    INSERT_CALL,
    INSERT_CELL,
    MIGRATIONS,
    CallRecord,
    canonical_options,
    migrate,
    normalise_model,
    request_key,
    sha256_text,
    task_key,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "MIGRATIONS",
    "STORE_ENV",
    "CallRecord",
    "ResultStore",
    "canonical_options",
    "migrate",
    "normalise_model",
    "request_key",
    "resolve_store",
    "sha256_text",
    "task_key",
]

log = logging.getLogger("dllm_notebook")

STORE_ENV = "DLLM_STORE"
STORE_FILE = "results.sqlite"
DEFAULT_FOLDER = ".dllm"
OFF_VALUES = frozenset({"", "0", "off", "none", "false", "no"})
LOOKUP_CHUNK = 500


# -- where the store lives ------------------------------------------------------------------
class _Default:
    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT: Any = _Default()
"""``Cluster(store=DEFAULT)``: ``$DLLM_STORE``, else ``.dllm/results.sqlite`` here."""


def user_store_path() -> Path:
    from .._config import cache_dir

    return cache_dir() / STORE_FILE


def resolve_store(spec: Any) -> ResultStore | None:
    """The store that ``Cluster(store=spec)`` means (nothing is opened yet)."""
    if spec is DEFAULT:
        env = os.environ.get(STORE_ENV)
        if env is None:
            return ResultStore(Path.cwd() / DEFAULT_FOLDER / STORE_FILE)
        spec = None if env.strip().lower() in OFF_VALUES else env.strip()
    if spec is None or spec is False:
        return None
    if isinstance(spec, ResultStore):
        return spec
    if isinstance(spec, str) and spec == "user":
        return ResultStore(user_store_path())
    if isinstance(spec, (str, os.PathLike)):
        path = Path(spec).expanduser()
        if path.is_dir() or str(spec).endswith(("/", os.sep)):
            path = path / STORE_FILE
        return ResultStore(path)
    raise TypeError(
        f"store={spec!r}: give a path, 'user', None (off) or a ResultStore, "
        f"not {type(spec).__name__}"
    )


# -- the store -------------------------------------------------------------------------------
class ResultStore:
    """Every answer of ``analyze()`` on disk: the cache, the call history and the runs.

    >>> store = ResultStore(".dllm/results.sqlite")     # what Cluster() uses by default
    >>> cluster = Cluster(urls, store=store)
    >>> store.history(run="last")                        # one row per request
    >>> store.clear_history()                            # keep only what the cache needs

    ``keep_prompts=True`` also stores each rendered prompt's text (papers included, so
    the file grows); by default only its SHA-256 is kept. Each thread gets its own SQLite
    connection; writes are one short transaction each, so two notebooks can share a store.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, keep_prompts: bool = False, timeout: float = 30.0
    ) -> None:
        self.path = Path(path).expanduser().absolute()
        self.keep_prompts = keep_prompts
        self.timeout = timeout
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._generation = 0

    # -- connections ----------------------------------------------------------------------
    def connection(self) -> sqlite3.Connection:
        """This thread's connection, opened (and the file created, migrated) on first use."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "generation", -1) == self._generation:
            return conn
        conn = self._connect()
        self._local.conn, self._local.generation = conn, self._generation
        with self._lock:
            self._connections.append(conn)
        return conn

    def _connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DllmError(
                f"cannot create the folder of the result store {self.path} ({exc}). Choose "
                "another place with Cluster(store='path/results.sqlite') or DLLM_STORE, or "
                "turn the store off with store=None"
            ) from exc
        try:
            conn = sqlite3.connect(
                self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
            )
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            mode = _journal_mode_wal(conn, self.timeout)
            conn.execute("PRAGMA synchronous = NORMAL")
            migrate(conn, where=self.path)
        except sqlite3.DatabaseError as exc:
            raise DllmError(
                f"cannot open the result store {self.path} ({exc}). If it is not a dllm "
                "store or is damaged, move it away (a new one is created), or choose "
                "another with Cluster(store=...) or DLLM_STORE"
            ) from exc
        if str(mode).lower() != "wal":
            log.warning(
                "the result store %s cannot use WAL mode (journal mode %s; a network drive?): "
                "two notebooks sharing it will wait for each other",
                self.path,
                mode,
            )
        return conn

    def close(self) -> None:
        """Close every connection; the next use opens new ones."""
        with self._lock:
            connections, self._connections = self._connections, []
            self._generation += 1
        for conn in connections:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ResultStore({str(self.path)!r})"

    # -- the cache --------------------------------------------------------------------------
    def lookup(self, keys: Iterable[str]) -> dict[str, tuple[int, Answer]]:
        """The stored answers for these task keys: ``{key: (call id, answer)}``."""
        wanted = list(dict.fromkeys(keys))
        found: dict[str, tuple[int, Answer]] = {}
        conn = self.connection()
        for start in range(0, len(wanted), LOOKUP_CHUNK):
            chunk = wanted[start : start + LOOKUP_CHUNK]
            rows = conn.execute(
                "SELECT cache.key, c.id, c.answer, c.worker, c.served_model, c.prompt_tokens, "
                "c.completion_tokens, c.latency_s, c.finish_reason, c.tokens_per_second, "
                "c.attempts FROM cache JOIN calls AS c ON c.id = cache.call_id "
                f"WHERE cache.key IN ({', '.join('?' * len(chunk))})",
                chunk,
            ).fetchall()
            for key, call_id, text, worker, model, pt, ct, lat, finish, tps, tries in rows:
                found[key] = (
                    call_id,
                    Answer(
                        text=text or "",
                        worker=worker,
                        model=model,
                        prompt_tokens=pt,
                        completion_tokens=ct,
                        latency_s=lat,
                        finish_reason=finish,
                        tokens_per_second=tps,
                        attempts=tries or 1,
                    ),
                )
        return found

    def record(self, call: CallRecord, cells: Sequence[tuple[Any, ...]] = ()) -> int:
        """Log one request and, when it succeeded, make it the cached answer for its key;
        also save finished ``cells`` rows (``(run_id, position, *ROW_FIELDS)``).

        One transaction, committed before returning: about 25 microseconds on a local SSD.
        """
        with self._write() as conn:
            cursor = conn.execute(INSERT_CALL, astuple(call))
            call_id = int(cursor.lastrowid or 0)
            if call.error is None:
                conn.execute(
                    "INSERT OR REPLACE INTO cache (key, call_id) VALUES (?, ?)", (call.key, call_id)
                )
            if cells:
                conn.executemany(INSERT_CELL, cells)
        return call_id

    def add_cells(self, cells: Sequence[tuple[Any, ...]]) -> None:
        """Save finished cells' rows: ``(run_id, position, *ROW_FIELDS)`` each."""
        if cells:
            with self._write() as conn:
                conn.executemany(INSERT_CELL, cells)

    def cell_column(self, run_id: str, name: str) -> Iterator[tuple[int, Any]]:
        """One field of a run's saved rows, ``(position, value)`` in position order."""
        if name not in ROW_FIELDS:
            raise ValueError(f"no cell field {name!r}; fields: {', '.join(ROW_FIELDS)}")
        yield from self.connection().execute(
            f"SELECT position, {name} FROM cells WHERE run_id = ? ORDER BY position", (run_id,)
        )

    def run_rows(self, run_id: str, fields: Sequence[str]) -> list[tuple[Any, ...]]:
        """A run's saved rows (``fields`` of :data:`ROW_FIELDS`, or ``position``), in
        position order."""
        unknown = [name for name in fields if name not in ROW_FIELDS and name != "position"]
        if unknown:
            raise ValueError(f"no cell field {unknown[0]!r}; fields: {', '.join(ROW_FIELDS)}")
        return (
            self.connection()
            .execute(
                f"SELECT {', '.join(fields)} FROM cells WHERE run_id = ? ORDER BY position",
                (run_id,),
            )
            .fetchall()
        )

    # -- runs ---------------------------------------------------------------------------------
    def start_run(
        self,
        run_id: str,
        *,
        papers: int,
        prompts: int,
        tasks: int,
        options: Mapping[str, Any],
        system: str | None,
    ) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO runs (run_id, started_at, status, papers, prompts, tasks, options, "
                "system_sha256, host, pid) VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id,
                    time.time(),
                    papers,
                    prompts,
                    tasks,
                    canonical_options(options),
                    sha256_text(system) if system else None,
                    _hostname(),
                    os.getpid(),
                ),
            )

    def finish_run(self, run_id: str, *, status: str, ok: int, cached: int, failed: int) -> None:
        with self._write() as conn:
            conn.execute(
                "UPDATE runs SET finished_at = ?, status = ?, ok = ?, cached = ?, failed = ? "
                "WHERE run_id = ?",
                (time.time(), status, ok, cached, failed, run_id),
            )

    # -- history, clearing, exporting ----------------------------------------------------
    def history(
        self,
        run: str | Sequence[str] | None = None,
        paper: str | Sequence[str] | None = None,
        worker: str | Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """Every request logged, one row each, oldest first (a DataFrame); filters combine.

        ``run`` is a run id (``cluster.last_analysis.run_id``) or ``"last"``; ``paper`` a
        file name; ``worker`` a worker id. Each may also be a list.
        """
        from .history import history_frame

        return history_frame(self.connection(), run=run, paper=paper, worker=worker)

    def runs(self) -> pd.DataFrame:
        """One row per ``analyze()`` call: when, how many tasks, ok/cached/failed, status."""
        from .history import runs_frame

        return runs_frame(self.connection())

    def clear_history(self, *, keep_cache: bool = True) -> int:
        """Delete the runs, their tables and the logged calls; with ``keep_cache``
        (default) keep the calls whose answers the cache reuses.

        Returns how many calls were deleted.
        """
        with self._write() as conn:
            if keep_cache:
                deleted = conn.execute(
                    "DELETE FROM calls WHERE id NOT IN (SELECT call_id FROM cache)"
                ).rowcount
            else:
                conn.execute("DELETE FROM cache")
                deleted = conn.execute("DELETE FROM calls").rowcount
            conn.execute("DELETE FROM cells")
            conn.execute("DELETE FROM runs")
        return int(deleted)

    def clear_cache(self) -> int:
        """Forget which answers to reuse (the history stays): everything is recomputed."""
        with self._write() as conn:
            return int(conn.execute("DELETE FROM cache").rowcount)

    def clear(self) -> None:
        """Delete everything: cache, history and runs (the file stays, smaller)."""
        self.clear_history(keep_cache=False)
        self.connection().execute("VACUUM")

    def backup(self, path: str | os.PathLike[str]) -> Path:
        """Copy the whole store to ``path``, safely even while another notebook writes."""
        target = Path(path).expanduser()
        target.parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(target) as copy:
            self.connection().backup(copy)
        copy.close()
        return target

    def integrity_check(self) -> str:
        """SQLite's ``PRAGMA integrity_check``: ``"ok"`` for a sound file."""
        return str(self.connection().execute("PRAGMA integrity_check").fetchone()[0])

    def schema_version(self) -> int:
        return int(self.connection().execute("PRAGMA user_version").fetchone()[0])

    def _write(self) -> _Transaction:
        return _Transaction(self.connection())


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (or ``ROLLBACK`` on an error)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.conn.execute("ROLLBACK" if exc_type is not None else "COMMIT")


def _hostname() -> str:
    import socket

    return socket.gethostname()


def _journal_mode_wal(conn: sqlite3.Connection, timeout: float) -> str:
    """Switch a connection to WAL and return the journal mode it got.

    SQLite answers "database is locked" at once, without its busy timeout, when two
    connections switch a new file to WAL together (two jobs or notebooks opening a new
    store); so wait here as the busy timeout would."""
    deadline = time.monotonic() + timeout
    pause = 0.005
    while True:
        try:
            return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.1)
