"""Baselines for bench/: the same work as plain SQL, to report ratios (BenchQueries)."""

from __future__ import annotations

from pathlib import Path

# --------------------------------------------------------------------------------------------
# Baselines for bench/ (the same work as plain SQL, to report ratios)
# --------------------------------------------------------------------------------------------

BENCH_READ_JSON = "CREATE TABLE bench_read_json AS SELECT * FROM read_json(?, format = 'newline_delimited')"
BENCH_BARE_COUNT = "SELECT count(*) FROM instructions WHERE task = ? AND n_chars BETWEEN ? AND ?"
BENCH_BARE_PAGE = """
SELECT id, task, left(text, 200), n_chars FROM instructions
WHERE task = ? AND n_chars BETWEEN ? AND ?
ORDER BY rowid LIMIT ? OFFSET ?
"""


class BenchQueries:
    """Mixed into core.store.Store; uses the BaseStore plumbing (_rows/_df/_dicts/transaction)."""

    # -- baselines for bench/ -----------------------------------------------------------------

    def bench_read_json(self, path: Path) -> None:
        self.cursor().execute(BENCH_READ_JSON, [str(path)])

    def bench_bare_explore(self, task: str, lo: int, hi: int, limit: int, offset: int) -> None:
        self._rows(BENCH_BARE_COUNT, [task, lo, hi])
        self._rows(BENCH_BARE_PAGE, [task, lo, hi, limit, offset])
