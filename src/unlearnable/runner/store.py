"""The result store: one SQLite file (`runs/results.sqlite`) of job specs, statuses and results.

    store = ResultStore("runs/results.sqlite")
    store.add(spec)                      # pending unless it is already there
    store.start(key, host); store.finish(key, result, seconds, host)   # or store.fail(...)
    store.get(key)["result"]

Tables: `jobs` (key = sha256 of the spec's canonical JSON, kind, spec, status
pending|running|done|failed, result JSON, error, traceback, host, versions, timings, attempts)
and `grids` (each table run: its layout of rows, columns and cell keys, for `unlearnable results`).

WAL mode (readers never block the writer) and a busy timeout; only the driver process writes.
The store never deletes or rewrites the file: a path that is not a SQLite database, or one that
another process keeps locked past the timeout, raises a one-line `DataError` and is left as it is.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

from .._io import DataError, now_iso, versions
from .jobs import Spec, canonical, job_key

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    key TEXT PRIMARY KEY, kind TEXT NOT NULL, spec TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'done', 'failed')),
    result TEXT, error TEXT, traceback TEXT, host TEXT, versions TEXT,
    created TEXT NOT NULL, started TEXT, finished TEXT, seconds REAL, attempts INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS grids (
    grid_id TEXT PRIMARY KEY, tbl TEXT NOT NULL, dataset TEXT NOT NULL, layout TEXT NOT NULL,
    created TEXT NOT NULL, updated TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status);
"""
SQLITE_MAGIC = b"SQLite format 3\x00"


class ResultStore:
    """The SQLite result store. `busy_timeout` (seconds): how long to wait for a lock."""

    def __init__(self, path: str | os.PathLike[str], busy_timeout: float = 10.0, create: bool = True):
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        if self.path.exists():
            with open(self.path, "rb") as f:
                head = f.read(len(SQLITE_MAGIC))
            if head and head != SQLITE_MAGIC:
                raise DataError(self.path, "is not a SQLite database (left untouched; pass another --db)")
        elif not create:
            raise DataError(self.path, "no such result database")
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.conn = sqlite3.connect(self.path, timeout=busy_timeout, isolation_level=None)
            self.conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            if create:
                self.conn.execute("PRAGMA journal_mode = WAL")
                # Take the write lock once up front: a database held by another process fails
                # here, before any work, rather than after the first cell.
                self.conn.execute("BEGIN IMMEDIATE")
                for stmt in filter(str.strip, SCHEMA.split(";")):
                    self.conn.execute(stmt)
                self.conn.execute("COMMIT")
            else:
                self.conn.execute("SELECT count(*) FROM jobs").fetchone()
        except sqlite3.DatabaseError as e:
            self._raise(e)

    # -- errors -------------------------------------------------------------------------------

    def _raise(self, e: sqlite3.DatabaseError) -> None:
        msg = str(e)
        if "locked" in msg or "busy" in msg:
            raise DataError(self.path, f"is locked by another process (waited {self.busy_timeout:g} s); "
                            "nothing was changed, try again when it finishes") from None
        if "not a database" in msg or "malformed" in msg or "no such table" in msg:
            raise DataError(self.path, f"is not a usable result database ({msg}); left untouched") from None
        raise DataError(self.path, f"SQLite error: {msg}") from None

    def _exec(self, sql: str, args: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        try:
            return self.conn.execute(sql, args)
        except sqlite3.DatabaseError as e:
            self._raise(e)
            raise  # unreachable

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- jobs ---------------------------------------------------------------------------------

    def add(self, spec: Spec) -> str:
        """Insert `spec` as pending unless its key is already there; return the key."""
        key = job_key(spec)
        self._exec("INSERT OR IGNORE INTO jobs (key, kind, spec, status, created) VALUES (?, ?, ?, 'pending', ?)",
                   (key, spec["kind"], canonical(spec), now_iso()))
        return key

    def start(self, key: str, host: str) -> None:
        self._exec("UPDATE jobs SET status = 'running', started = ?, host = ?, attempts = attempts + 1, "
                   "error = NULL, traceback = NULL WHERE key = ?", (now_iso(), host, key))

    def finish(self, key: str, result: dict[str, Any], seconds: float, host: str,
               vers: dict[str, str] | None = None) -> None:
        self._exec("UPDATE jobs SET status = 'done', result = ?, seconds = ?, host = ?, versions = ?, "
                   "finished = ? WHERE key = ?",
                   (json.dumps(result, allow_nan=True), round(seconds, 3), host,
                    json.dumps(vers or versions()), now_iso(), key))

    def fail(self, key: str, error: str, tb: str, seconds: float | None, host: str) -> None:
        self._exec("UPDATE jobs SET status = 'failed', error = ?, traceback = ?, seconds = ?, host = ?, "
                   "finished = ? WHERE key = ?", (error, tb, seconds, host, now_iso(), key))

    def get(self, key: str) -> dict[str, Any] | None:
        cur = self._exec("SELECT * FROM jobs WHERE key = ?", (key,))
        row = cur.fetchone()
        return None if row is None else self._row(cur, row)

    def status(self, key: str) -> str | None:
        row = self._exec("SELECT status FROM jobs WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def _select(self, table: str, column: str, value: str | None, order: str) -> list[dict[str, Any]]:
        """Rows of `table` (all, or those whose `column` is `value`), decoded."""
        where = "" if value is None else f" WHERE {column} = ?"
        cur = self._exec(f"SELECT * FROM {table}{where} ORDER BY {order}", () if value is None else (value,))
        return [self._row(cur, r) for r in cur.fetchall()]

    def jobs(self, status: str | None = None) -> list[dict[str, Any]]:
        return self._select("jobs", "status", status, "rowid")

    def counts(self) -> dict[str, int]:
        return dict(self._exec("SELECT status, count(*) FROM jobs GROUP BY status").fetchall())

    @staticmethod
    def _row(cur: sqlite3.Cursor, row: tuple[Any, ...]) -> dict[str, Any]:
        d = dict(zip([c[0] for c in cur.description], row))
        for k in ("spec", "result", "versions", "layout"):
            if d.get(k) is not None:
                d[k] = json.loads(d[k])
        return d

    # -- grids --------------------------------------------------------------------------------

    def save_grid(self, grid_id: str, layout: dict[str, Any]) -> None:
        now = now_iso()
        self._exec("INSERT INTO grids (grid_id, tbl, dataset, layout, created, updated) VALUES (?, ?, ?, ?, ?, ?) "
                   "ON CONFLICT(grid_id) DO UPDATE SET updated = excluded.updated",
                   (grid_id, layout["table"], layout["dataset"], json.dumps(layout), now, now))

    def grids(self, table: str | None = None) -> list[dict[str, Any]]:
        return self._select("grids", "tbl", table, "updated")
