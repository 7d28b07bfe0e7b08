"""Rounds: runs of a recipe, their rounds and each round's durable steps (RoundQueries).

core.rounds is the only caller. JSON columns are written as JSON text and read back as dicts.
"""

from __future__ import annotations

import json
from typing import Any

INSERT_RUN = """
INSERT INTO round_runs (name, method, recipe, source, rounds, status) VALUES (?, ?, ?, ?, ?, 'active')
"""
UPDATE_RUN = """
UPDATE round_runs SET recipe = ?, source = ?, rounds = ?, status = ?, error = ?, updated_at = current_timestamp
WHERE name = ?
"""
SET_RUN_STATUS = "UPDATE round_runs SET status = ?, error = ?, updated_at = current_timestamp WHERE name = ?"
SELECT_RUN = "SELECT * FROM round_runs WHERE name = ?"
SELECT_RUNS = "SELECT * FROM round_runs ORDER BY created_at, name"
SELECT_ACTIVE_RUNS = "SELECT name FROM round_runs WHERE status = 'active' ORDER BY created_at, name"

INSERT_ROUND = """
INSERT INTO rounds (id, run, number, parent_id, student, status, config) VALUES (?, ?, ?, ?, ?, 'running', ?)
"""
FINISH_ROUND = """
UPDATE rounds SET status = 'done', model = ?, snapshot = ?, metrics = ?, error = NULL, finished_at = current_timestamp
WHERE id = ?
"""
SET_ROUND_STATUS = "UPDATE rounds SET status = ?, error = ? WHERE id = ?"
SELECT_ROUND = "SELECT * FROM rounds WHERE id = ?"
SELECT_ROUNDS = """
SELECT * FROM rounds WHERE (?::VARCHAR IS NULL OR run = ?) ORDER BY run, number
"""

SELECT_STEPS = "SELECT * FROM round_steps WHERE round_id = ? ORDER BY position"
SELECT_STEP = "SELECT * FROM round_steps WHERE round_id = ? AND name = ?"
INSERT_STEP = """
INSERT INTO round_steps (round_id, name, position, kind, status, job_id, outputs, finished_at)
SELECT ?, ?, coalesce(max(position), 0) + 1, ?, ?, ?, ?, CASE WHEN ? = 'done' THEN current_timestamp END
FROM round_steps WHERE round_id = ?
"""
UPDATE_STEP = """
UPDATE round_steps SET status = ?, outputs = ?, error = ?,
       finished_at = CASE WHEN ? IN ('done', 'failed') THEN current_timestamp END
WHERE round_id = ? AND name = ?
"""
RESTART_STEP = "UPDATE round_steps SET status = 'running', error = NULL, finished_at = NULL WHERE round_id = ? AND name = ?"

JSON_COLUMNS = ("recipe", "config", "metrics", "outputs")


def _decoded(row: dict[str, Any]) -> dict[str, Any]:
    for key in JSON_COLUMNS:
        if isinstance(row.get(key), str):
            row[key] = json.loads(row[key])
    return row


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, default=str, sort_keys=True)


class RoundQueries:
    """Mixed into core.store.Store; uses the BaseStore plumbing (_rows/_dicts/transaction)."""

    # -- runs ---------------------------------------------------------------------------------

    def round_run(self, name: str) -> dict | None:
        rows = self._dicts(SELECT_RUN, [name])
        return _decoded(rows[0]) if rows else None

    def round_runs(self) -> list[dict]:
        return [_decoded(r) for r in self._dicts(SELECT_RUNS)]

    def active_round_runs(self) -> list[str]:
        return [r[0] for r in self._rows(SELECT_ACTIVE_RUNS)]

    def save_round_run(self, name: str, method: str, recipe: dict, source: str | None, rounds: int) -> None:
        """Create the run, or (re)activate it with this recipe and round count."""
        with self.transaction() as cur:
            if cur.execute(SELECT_RUN, [name]).fetchall():
                cur.execute(UPDATE_RUN, [_json(recipe), source, int(rounds), "active", None, name])
            else:
                cur.execute(INSERT_RUN, [name, method, _json(recipe), source, int(rounds)])

    def set_round_run_status(self, name: str, status: str, error: str | None = None) -> None:
        with self.transaction() as cur:
            cur.execute(SET_RUN_STATUS, [status, error, name])

    # -- rounds -------------------------------------------------------------------------------

    def insert_round(self, round_id: str, run: str, number: int, parent_id: str | None, student: str,
                     config: dict) -> None:
        with self.transaction() as cur:
            cur.execute(INSERT_ROUND, [round_id, run, int(number), parent_id, student, _json(config)])

    def finish_round(self, round_id: str, model: str, snapshot: str, metrics: dict) -> None:
        with self.transaction() as cur:
            cur.execute(FINISH_ROUND, [model, snapshot, _json(metrics), round_id])

    def set_round_status(self, round_id: str, status: str, error: str | None = None) -> None:
        with self.transaction() as cur:
            cur.execute(SET_ROUND_STATUS, [status, error, round_id])

    def round(self, round_id: str) -> dict | None:
        rows = self._dicts(SELECT_ROUND, [round_id])
        return _decoded(rows[0]) if rows else None

    def rounds(self, run: str | None = None) -> list[dict]:
        return [_decoded(r) for r in self._dicts(SELECT_ROUNDS, [run, run])]

    # -- steps --------------------------------------------------------------------------------

    def round_steps(self, round_id: str) -> list[dict]:
        return [_decoded(r) for r in self._dicts(SELECT_STEPS, [round_id])]

    def round_step(self, round_id: str, name: str) -> dict | None:
        rows = self._dicts(SELECT_STEP, [round_id, name])
        return _decoded(rows[0]) if rows else None

    def insert_round_step(self, round_id: str, name: str, kind: str, status: str, job_id: str | None = None,
                          outputs: dict | None = None) -> None:
        with self.transaction() as cur:
            cur.execute(INSERT_STEP, [round_id, name, kind, status, job_id, _json(outputs), status, round_id])

    def update_round_step(self, round_id: str, name: str, status: str, outputs: dict | None = None,
                          error: str | None = None) -> None:
        with self.transaction() as cur:
            cur.execute(UPDATE_STEP, [status, _json(outputs), error, status, round_id, name])

    def restart_round_step(self, round_id: str, name: str) -> None:
        with self.transaction() as cur:
            cur.execute(RESTART_STEP, [round_id, name])
