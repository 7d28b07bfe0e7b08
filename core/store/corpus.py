"""Corpus passages dropped at import, with why (CorpusQueries): the table is corpus_drops, made by
core.corpus.MIGRATION."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

# Ids are content hashes of the drop (core.ingest): importing the same file again adds nothing.
INSERT_CORPUS_DROPS = "INSERT OR IGNORE INTO corpus_drops BY NAME SELECT * FROM batch"
# Bind order: dataset name or NULL (all), reason or NULL (all), limit.
SELECT_CORPUS_DROPS = """
SELECT ds.name AS dataset, c.source_file, c.source_line, c.segment, c.title, c.reason, c.n_chars, c.excerpt
FROM corpus_drops c JOIN datasets ds ON ds.id = c.dataset_id
WHERE (?::VARCHAR IS NULL OR ds.name = ?) AND (?::VARCHAR IS NULL OR c.reason = ?)
ORDER BY c.rowid
LIMIT ?
"""
# Bind order: dataset name or NULL (all).
SELECT_CORPUS_DROP_COUNTS = """
SELECT c.reason, count(*) AS n
FROM corpus_drops c JOIN datasets ds ON ds.id = c.dataset_id
WHERE ?::VARCHAR IS NULL OR ds.name = ?
GROUP BY c.reason ORDER BY n DESC, c.reason
"""


class CorpusQueries:
    """Mixed into core.store.Store; uses the BaseStore plumbing (_rows/_df)."""

    def insert_corpus_drops(self, cur, batch: pa.Table) -> int:
        """Record dropped passages (an Arrow batch with corpus_drops' columns) in the caller's
        transaction; returns how many were new."""
        if batch.num_rows == 0:
            return 0
        cur.register("batch", batch)
        try:
            return int(cur.execute(INSERT_CORPUS_DROPS).fetchall()[0][0])
        finally:
            cur.unregister("batch")

    def corpus_drops(self, dataset: str | None = None, reason: str | None = None, limit: int = 500) -> pd.DataFrame:
        """Dropped passages in import order: file, line, segment, title, reason, size, excerpt."""
        return self._df(SELECT_CORPUS_DROPS, [dataset, dataset, reason, reason, int(limit)])

    def corpus_drop_counts(self, dataset: str | None = None) -> dict[str, int]:
        """How many passages each reason dropped."""
        return dict(self._rows(SELECT_CORPUS_DROP_COUNTS, [dataset, dataset]))
