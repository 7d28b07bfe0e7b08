"""Jobs, their ingested shards and the instructions a generate job answers (JobQueries)."""

from __future__ import annotations

import pyarrow as pa

from core.selection import ExploreFilter

# --------------------------------------------------------------------------------------------
# Jobs
# --------------------------------------------------------------------------------------------

INSERT_JOB = "INSERT INTO jobs (id, kind, dir, model, config) VALUES (?, ?, ?, ?, ?)"
SELECT_INGESTED_SHARDS = "SELECT shard FROM job_shards WHERE job_id = ?"
INSERT_JOB_SHARD = "INSERT INTO job_shards (job_id, shard, sha256, n_rows, n_new) VALUES (?, ?, ?, ?, ?)"
SELECT_JOB_INGEST_COUNTS = """
SELECT count(*) AS shards, coalesce(sum(n_rows), 0) AS rows, coalesce(sum(n_new), 0) AS new
FROM job_shards WHERE job_id = ?
"""
# The instructions a generate job answers, in the order Explore shows them.
SELECT_INSTRUCTIONS_FOR_JOB = """
SELECT i.id, i.text, i.input, i.system, i.history FROM instructions i WHERE {where} ORDER BY i.rowid LIMIT ?
"""


class JobQueries:
    """Mixed into core.store.Store; uses the BaseStore plumbing (_rows/_df/_dicts/transaction)."""

    # -- jobs ---------------------------------------------------------------------------------

    def record_job(self, values: list) -> None:
        with self.transaction() as cur:
            cur.execute(INSERT_JOB, values)

    def ingested_shards(self, job_id: str) -> set[str]:
        return {r[0] for r in self._rows(SELECT_INGESTED_SHARDS, [job_id])}

    def ingest_shard(self, job_id: str, shard: str, sha256: str, batches: list[tuple[str, pa.Table]]) -> int:
        """Insert a shard's rows (into one or several tables) and record the shard, in one
        transaction; returns the new rows."""
        with self.transaction() as cur:
            n_new = sum(self.insert_batch(cur, table, batch) for table, batch in batches)
            cur.execute(INSERT_JOB_SHARD, [job_id, shard, sha256, sum(b.num_rows for _, b in batches), n_new])
        return n_new

    def job_ingest_counts(self, job_id: str) -> dict:
        return self._dicts(SELECT_JOB_INGEST_COUNTS, [job_id])[0]

    def instructions_for_job(self, f: ExploreFilter, limit: int) -> list[dict]:
        where, values = self.explore_where(f)
        return self._dicts(SELECT_INSTRUCTIONS_FOR_JOB.format(where=where), values + [int(limit)])
