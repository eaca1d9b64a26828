"""The result store: one SQLite file (`runs/results.sqlite`) of job specs, statuses and results.

    store = ResultStore("runs/results.sqlite")
    store.add(spec)                      # pending unless it is already there
    store.start(key, host); store.finish(key, result, seconds, host)   # or store.fail(...)
    store.get(key)["result"]

Tables: `jobs` (key = sha256 of the spec's canonical JSON, kind, spec, status
pending|running|done|failed, result JSON, error, traceback, host, versions, timings, attempts,
owner) and `grids` (each table run: its layout of rows, columns and cell keys, for `unlearnable
results`).

WAL mode (readers never block the writer) and a busy timeout; only driver processes write.
Several drivers may share one store (two `reproduce` runs on one --db, audits sharing the cache):
a driver runs a job only after *claiming* it (`claim`: one compare-and-set UPDATE, so exactly one
driver wins), and `finish`/`fail` touch only a row the same driver claimed, so one driver's
failure never overwrites another's result. A claim names its driver (`owner`); while the driver
lives it holds a flock on `.DB.drivers/TOKEN.lock` next to the database. The kernel drops that
lock when the driver dies, so a job left `running` by a killed driver is taken over (and runs
again) by the next one. A store made before owners existed gets the column on first open.
The store never deletes or rewrites the file: a path that is not a SQLite database, or one that
another process keeps locked past the timeout, raises a one-line `DataError` and is left as it is.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

from ..core.errors import DataError
from ..core.lock import FileLock, is_held
from ..core.process import pid_alive
from ..core.provenance import now_iso, versions
from .jobs import Spec, canonical, job_key

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    key TEXT PRIMARY KEY, kind TEXT NOT NULL, spec TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'done', 'failed')),
    result TEXT, error TEXT, traceback TEXT, host TEXT, versions TEXT,
    created TEXT NOT NULL, started TEXT, finished TEXT, seconds REAL, attempts INTEGER NOT NULL DEFAULT 0,
    owner TEXT, digest TEXT, files TEXT);
CREATE TABLE IF NOT EXISTS grids (
    grid_id TEXT PRIMARY KEY, tbl TEXT NOT NULL, dataset TEXT NOT NULL, layout TEXT NOT NULL,
    created TEXT NOT NULL, updated TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status);
"""
SQLITE_MAGIC = b"SQLite format 3\x00"


def seal(key: str, result_text: str) -> str:
    """The checksum a finished row carries: of its key and its result's JSON text as stored."""
    return hashlib.sha256(f"{key}\n{result_text}".encode()).hexdigest()


def _busy(e: sqlite3.DatabaseError) -> bool:
    return "locked" in str(e) or "busy" in str(e)


class ResultStore:
    """The SQLite result store. `busy_timeout` (seconds): how long to wait for a lock."""

    def __init__(self, path: str | os.PathLike[str], busy_timeout: float = 10.0, create: bool = True):
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self.host = socket.gethostname()
        self.token = uuid.uuid4().hex
        # Who claims jobs through this store: TOKEN@HOST:PID (the token names its lock file).
        self.owner = f"{self.token}@{self.host}:{os.getpid()}"
        self._driver_lock: FileLock | None = None
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
            self._busy_retry(lambda: self._open(create))
        except sqlite3.DatabaseError as e:
            self._raise(e)

    def _open(self, create: bool) -> None:
        self.conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
        try:
            self.conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            if create:
                self.conn.execute("PRAGMA journal_mode = WAL")
                # Take the write lock once up front: a database held by another process fails
                # here, before any work, rather than after the first cell.
                self.conn.execute("BEGIN IMMEDIATE")
                for stmt in filter(str.strip, SCHEMA.split(";")):
                    self.conn.execute(stmt)
                cols = {r[1] for r in self.conn.execute("PRAGMA table_info(jobs)")}
                for col in ("owner", "digest", "files"):  # a store made before claims or seals: one more column
                    if col not in cols:
                        self.conn.execute(f"ALTER TABLE jobs ADD COLUMN {col} TEXT")
                self.conn.execute("COMMIT")
            else:
                self.conn.execute("SELECT count(*) FROM jobs").fetchone()
        except BaseException:
            self.conn.close()  # rolls back a half-made schema; the next try starts clean
            raise

    def _busy_retry(self, fn: Any) -> Any:
        """fn(), tried again while SQLite says busy, for up to `busy_timeout` seconds. SQLite
        answers busy without waiting in a few cases (a database switching to WAL, or a
        connection tidying the WAL as it closes, while another opens it): drivers starting
        together on one store meet those."""
        deadline = time.monotonic() + self.busy_timeout
        n = 0
        while True:
            try:
                return fn()
            except sqlite3.OperationalError as e:
                if not _busy(e) or time.monotonic() >= deadline:
                    raise
                time.sleep(min(0.02 * 2 ** n, 0.5, max(deadline - time.monotonic(), 0.0)))
                n += 1

    # -- errors -------------------------------------------------------------------------------

    def _raise(self, e: sqlite3.DatabaseError) -> None:
        msg = str(e)
        if _busy(e):
            raise DataError(self.path, f"is locked by another process (waited {self.busy_timeout:g} s); "
                            "nothing was changed, try again when it finishes") from None
        if "not a database" in msg or "malformed" in msg or "no such table" in msg:
            raise DataError(self.path, f"is not a usable result database ({msg}); left untouched") from None
        raise DataError(self.path, f"SQLite error: {msg}") from None

    def _exec(self, sql: str, args: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        try:
            return self._busy_retry(lambda: self.conn.execute(sql, args))
        except sqlite3.DatabaseError as e:
            self._raise(e)
            raise  # unreachable

    def close(self) -> None:
        self.conn.close()
        if self._driver_lock is not None:
            # Unlinked while still held: a reader finds no file, which means "gone", as it will be.
            with contextlib.suppress(OSError):
                self._driver_lock.path.unlink()
            self._driver_lock.release()
            self._driver_lock = None

    # -- drivers ------------------------------------------------------------------------------

    @property
    def drivers_dir(self) -> Path:
        return self.path.with_name(f".{self.path.name}.drivers")

    def _hold_driver_lock(self) -> None:
        if self._driver_lock is None:
            lock = FileLock(self.drivers_dir / f"{self.token}.lock")
            try:
                lock.acquire(blocking=False)  # a fresh random name: nobody else has it
            except OSError as e:
                raise DataError(self.drivers_dir, f"cannot write the drivers' lock files here ({e.strerror}); "
                                "nothing was run") from None
            self._driver_lock = lock

    def owner_alive(self, owner: str | None) -> bool:
        """Whether the driver that claimed a job still runs: its lock is held, and, on this
        machine, its process exists. A claim without an owner (an older version) counts as gone."""
        if not owner:
            return False
        if owner == self.owner:
            return True
        token, _, where = owner.partition("@")
        host, _, pid = where.rpartition(":")
        if host == self.host and pid.isdigit() and not pid_alive(int(pid)):
            return False
        return bool(token) and is_held(self.drivers_dir / f"{token}.lock")

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

    def claim(self, key: str, seen: dict[str, Any], host: str | None = None) -> bool:
        """Mark the job `running` for this driver if its row is still as `seen` (status, owner,
        attempts): True when this driver won it. The caller decides that `seen` may be taken
        (pending; failed and to be retried; running by a driver that is gone)."""
        self._hold_driver_lock()
        cur = self._exec("UPDATE jobs SET status = 'running', owner = ?, started = ?, host = ?, "
                         "attempts = attempts + 1, error = NULL, traceback = NULL "
                         "WHERE key = ? AND status = ? AND owner IS ? AND attempts = ?",
                         (self.owner, now_iso(), host or self.host, key, seen["status"], seen.get("owner"),
                          seen["attempts"]))
        return cur.rowcount == 1

    def start(self, key: str, host: str) -> None:
        """Claim the job whatever its state (a single driver that knows it is alone)."""
        self._hold_driver_lock()
        self._exec("UPDATE jobs SET status = 'running', owner = ?, started = ?, host = ?, "
                   "attempts = attempts + 1, error = NULL, traceback = NULL WHERE key = ?",
                   (self.owner, now_iso(), host, key))

    # A row this driver may record an outcome on: one it claimed, or one nobody claimed (a
    # pending row recorded directly); never a finished one, never another driver's claim.
    _MINE = "key = ? AND status != 'done' AND (owner IS NULL OR (owner = ? AND status = 'running'))"

    def finish(self, key: str, result: dict[str, Any], seconds: float, host: str,
               vers: dict[str, str] | None = None, files: dict[str, str] | None = None) -> bool:
        """Record a result, sealed (`digest`: its checksum with the key's; `files`: relative path ->
        sha256 of the files its job left, checked whenever it is used again: `runner.verify`);
        False (and nothing written) when the row is not this driver's."""
        text = json.dumps(result, allow_nan=True)
        cur = self._exec(f"UPDATE jobs SET status = 'done', result = ?, seconds = ?, host = ?, versions = ?, "
                         f"finished = ?, digest = ?, files = ? WHERE {self._MINE}",
                         (text, round(seconds, 3), host, json.dumps(vers or versions()), now_iso(),
                          seal(key, text), None if files is None else json.dumps(files), key, self.owner))
        return cur.rowcount == 1

    def result_intact(self, key: str) -> bool:
        """Whether job `key`'s recorded result is the one written (its checksum matches); a row
        recorded before results were sealed has none to check and passes."""
        row = self._exec("SELECT result, digest FROM jobs WHERE key = ?", (key,)).fetchone()
        return row is None or row[1] is None or (row[0] is not None and seal(key, row[0]) == row[1])

    def fail(self, key: str, error: str, tb: str, seconds: float | None, host: str) -> bool:
        """Record a failure; False (and nothing written) when the row is not this driver's."""
        cur = self._exec(f"UPDATE jobs SET status = 'failed', error = ?, traceback = ?, seconds = ?, host = ?, "
                         f"finished = ? WHERE {self._MINE}", (error, tb, seconds, host, now_iso(), key, self.owner))
        return cur.rowcount == 1

    def reset(self, key: str) -> bool:
        """Make a finished or failed job pending again (its artifacts were found broken); a job
        another live driver runs is left alone. True when reset."""
        row = self.get(key)
        if row is None or (row["status"] == "running" and self.owner_alive(row.get("owner"))):
            return False
        cur = self._exec("UPDATE jobs SET status = 'pending', owner = NULL, result = NULL, digest = NULL, "
                         "files = NULL WHERE key = ? "
                         "AND status = ? AND owner IS ? AND attempts = ?",
                         (key, row["status"], row.get("owner"), row["attempts"]))
        return cur.rowcount == 1

    def delete(self, key: str) -> bool:
        """Forget a job (one superseded by another that needs its place); True if it was there."""
        return self._exec("DELETE FROM jobs WHERE key = ?", (key,)).rowcount == 1

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
        for k in ("spec", "result", "versions", "layout", "files"):
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
