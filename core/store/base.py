"""Connection plumbing, errors, migrations and shared helpers of core.store (BaseStore)."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from core.migrations import MIGRATIONS

# The one module of the package that imports duckdb; the others catch its errors through this name.
DatabaseError = duckdb.Error


# A page's decorations look up its ids through DuckDB's dynamic OR filter, which gives up above
# 50 values and scans instead: pages of 100 took 107 ms, 36 ms with this (bench, 1M rows). A SET
# on the connection would not reach the per-thread cursors, so it goes in the connect config.
CONNECT_CONFIG = {"dynamic_or_filter_threshold": "500"}

class BulkUnreadable(Exception):
    """DuckDB's bulk reader failed on a file (malformed JSON, invalid UTF-8, a duplicate key).
    The error aborted the open transaction; nothing in it can be kept."""

    def __init__(self, path: Path):
        self.path = path
        super().__init__(f"DuckDB could not read {path} in bulk")


class WorkspaceBusy(RuntimeError):
    """The catalog is held read-write by another process (the app, a CLI command, a job ingester)."""

    def __init__(self, path: Path, pid: int | None):
        self.path = path
        self.pid = pid
        who = f"process {pid}" if pid else "another process"
        super().__init__(
            f"The workspace catalog {path} is open in {who} (probably the Winnow app). "
            "Stop that process, or run the command while the app is running so it is handed to the app."
        )


# --------------------------------------------------------------------------------------------
# Migrations
# --------------------------------------------------------------------------------------------

CREATE_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    name       VARCHAR PRIMARY KEY,
    applied_at TIMESTAMP NOT NULL DEFAULT current_timestamp
)
"""
SELECT_APPLIED_MIGRATIONS = "SELECT name FROM schema_migrations ORDER BY name"
CHECKPOINT = "CHECKPOINT"
INSERT_MIGRATION = "INSERT INTO schema_migrations (name) VALUES (?)"
SELECT_SCHEMA = """
SELECT table_name, column_name, data_type, is_nullable
FROM information_schema.columns
WHERE table_schema = 'main'
ORDER BY table_name, ordinal_position
"""

_LOCK_PID = re.compile(r"PID (\d+)")


def like_pattern(text: str) -> str:
    """A case-insensitive substring pattern for ILIKE ... ESCAPE '\\' that matches `text` literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class BaseStore:
    """One DuckDB connection for this process; a cursor per thread; serialised writes."""

    def __init__(self, path: Path | str, read_only: bool = False):
        self.path = Path(path)
        self.read_only = read_only
        # Set when the write-ahead log could not be replayed and was moved aside: {"moved_to", "error"}.
        self.wal_recovery: dict | None = None
        try:
            self._con = self._connect()
        except duckdb.IOException as exc:
            message = str(exc)
            if "lock" not in message.lower():
                raise
            match = _LOCK_PID.search(message)
            raise WorkspaceBusy(self.path, int(match.group(1)) if match else None) from None
        self._local = threading.local()
        self._write_lock = threading.RLock()
        self._dataset_names: dict[str, str] = {}
        self._side: ThreadPoolExecutor | None = None  # side_thread(), made on first use
        self._side_lock = threading.Lock()

    def _connect(self):
        """Open the file (with CONNECT_CONFIG). A write-ahead log DuckDB cannot replay (a crash that left a log of an
        older checkpoint, a damaged file) would fail every later open: it is moved aside, named
        with the time, the catalog opens at its last checkpoint, and `wal_recovery` says so. The
        log's transactions are lost; the file beside it keeps them for inspection."""
        try:
            return duckdb.connect(str(self.path), read_only=self.read_only, config=CONNECT_CONFIG)
        except duckdb.Error as exc:
            wal = self.path.with_name(self.path.name + ".wal")
            message = str(exc)
            if self.read_only or "lock" in message.lower() or "WAL" not in message or not wal.exists():
                raise
            aside = wal.with_name(f"{wal.name}.unreadable-{time.strftime('%Y%m%dT%H%M%S')}")
            wal.rename(aside)
            self.wal_recovery = {"moved_to": str(aside), "error": message}
            return duckdb.connect(str(self.path), read_only=self.read_only, config=CONNECT_CONFIG)

    def checkpoint(self) -> None:
        """Fold the write-ahead log into the database file now (DuckDB does it on its own at a
        size threshold and at close)."""
        with self._write_lock:  # never in the middle of another thread's transaction
            self.cursor().execute(CHECKPOINT)

    # -- connection plumbing ------------------------------------------------------------------

    def cursor(self) -> duckdb.DuckDBPyConnection:
        cur = getattr(self._local, "cursor", None)
        if cur is None:
            cur = self._con.cursor()
            self._local.cursor = cur
        return cur

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A write transaction; only one runs at a time in this process."""
        with self._write_lock:
            cur = self.cursor()
            cur.execute("BEGIN TRANSACTION")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            else:
                cur.execute("COMMIT")

    def side_thread(self) -> ThreadPoolExecutor:
        """One worker thread for a read that runs beside the caller's (explore_view's count). It
        reads on a cursor of its own (cursor() is per thread), and DuckDB lets go of the GIL while
        it executes, so the two queries run at once."""
        with self._side_lock:
            if self._side is None:
                self._side = ThreadPoolExecutor(max_workers=1, thread_name_prefix="winnow-store-side")
            return self._side

    def close(self) -> None:
        with self._side_lock:
            side, self._side = self._side, None
        if side is not None:
            side.shutdown(wait=True)  # no side read outlives the connection
        self._con.close()

    def _rows(self, sql: str, params: list | tuple = ()) -> list[tuple]:
        return self.cursor().execute(sql, list(params)).fetchall()

    def _df(self, sql: str, params: list | tuple = ()) -> pd.DataFrame:
        """A small result as a DataFrame. Built from tuples: DuckDB's .df() adds ~18 ms per call,
        which is most of an Explore page's time budget."""
        cur = self.cursor().execute(sql, list(params))
        names = [d[0] for d in cur.description]
        return pd.DataFrame.from_records(cur.fetchall(), columns=names)

    def _bulk_df(self, sql: str, params: list | tuple = ()) -> pd.DataFrame:
        """A large result (an export) as a DataFrame, converted column-wise by DuckDB."""
        return self.cursor().execute(sql, list(params)).df()

    def _dicts(self, sql: str, params: list | tuple = ()) -> list[dict[str, Any]]:
        cur = self.cursor().execute(sql, list(params))
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    # -- migrations ---------------------------------------------------------------------------

    def applied_migrations(self) -> list[str]:
        self.cursor().execute(CREATE_MIGRATIONS_TABLE)
        return [r[0] for r in self._rows(SELECT_APPLIED_MIGRATIONS)]

    def migrate(self, upto: str | None = None) -> list[str]:
        """Apply pending migrations in order (up to and including `upto`); return their names."""
        if upto is not None and upto not in {name for name, _ in MIGRATIONS}:
            raise ValueError(f"no migration named {upto!r}")
        done = set(self.applied_migrations())
        applied = []
        for name, statements in MIGRATIONS:
            if name not in done:
                with self.transaction() as cur:
                    for statement in statements:
                        cur.execute(statement)
                    cur.execute(INSERT_MIGRATION, [name])
                applied.append(name)
            if name == upto:
                break
        return applied

    def schema(self) -> list[tuple]:
        return self._rows(SELECT_SCHEMA)
