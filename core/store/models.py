"""User model specs and the embeddings cache (ModelQueries)."""

from __future__ import annotations

import pyarrow as pa

# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------

# User model specs as JSON (core.llm.registry.ModelSpec); built-in models are not stored.
SELECT_MODELS = "SELECT name, spec, created_at FROM models ORDER BY name"
SELECT_MODEL = "SELECT spec FROM models WHERE name = ?"
UPSERT_MODEL = "INSERT OR REPLACE INTO models (name, spec) VALUES (?, ?)"
DELETE_MODEL = "DELETE FROM models WHERE name = ?"

# --------------------------------------------------------------------------------------------
# Embeddings
# --------------------------------------------------------------------------------------------

# Both statements read an Arrow table registered as `wanted` (text_hash) or `batch`
# (text_hash, vector FLOAT[384]), the way the sample inserts read `batch`.
SELECT_EMBEDDINGS = """
SELECT e.text_hash, e.vector FROM embeddings e
WHERE e.model = ? AND e.text_hash IN (SELECT text_hash FROM wanted)
"""
INSERT_EMBEDDINGS = """
INSERT INTO embeddings (text_hash, model, vector)
SELECT b.text_hash, ?, b.vector FROM batch b
WHERE b.text_hash NOT IN (SELECT text_hash FROM embeddings WHERE model = ?)
"""
COUNT_EMBEDDINGS = "SELECT count(*) FROM embeddings WHERE model = ?"


class ModelQueries:
    """Mixed into core.store.Store; uses the BaseStore plumbing (_rows/_df/_dicts/transaction)."""

    # -- models -------------------------------------------------------------------------------

    def models(self) -> list[dict]:
        return self._dicts(SELECT_MODELS)

    def model_spec(self, name: str) -> str | None:
        rows = self._rows(SELECT_MODEL, [name])
        return rows[0][0] if rows else None

    def upsert_model(self, name: str, spec_json: str) -> None:
        with self.transaction() as cur:
            cur.execute(UPSERT_MODEL, [name, spec_json])

    def delete_model(self, name: str) -> bool:
        with self.transaction() as cur:
            return int(cur.execute(DELETE_MODEL, [name]).fetchall()[0][0]) > 0

    # -- embeddings ---------------------------------------------------------------------------

    def embeddings(self, model: str, text_hashes: list[str]) -> pa.Table:
        """Cached vectors for these hashes: an Arrow table (text_hash, vector); missing ones absent."""
        cur = self.cursor()
        cur.register("wanted", pa.table({"text_hash": pa.array(list(text_hashes), pa.string())}))
        try:
            # A relation, not a DB-API result: DuckDB 2.0 copies rows once more for the latter.
            return cur.sql(SELECT_EMBEDDINGS, params=[model]).to_arrow_table()
        finally:
            cur.unregister("wanted")

    def insert_embeddings(self, model: str, batch: pa.Table) -> int:
        """Store (text_hash, vector) rows, skipping hashes already cached; returns new rows."""
        if batch.num_rows == 0:
            return 0
        with self.transaction() as cur:
            cur.register("batch", batch)
            try:
                return int(cur.execute(INSERT_EMBEDDINGS, [model, model]).fetchall()[0][0])
            finally:
                cur.unregister("batch")

    def count_embeddings(self, model: str) -> int:
        return int(self._rows(COUNT_EMBEDDINGS, [model])[0][0])
