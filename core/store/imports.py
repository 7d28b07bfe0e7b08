"""Datasets, imports, rejects, Arrow batch inserts and the bulk JSON Lines import (ImportQueries)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa

from core.store.base import BulkUnreadable, DatabaseError
from core.store.difficulty import INSERT_DIFFICULTY

# --------------------------------------------------------------------------------------------
# Datasets, imports and rejects
# --------------------------------------------------------------------------------------------

SELECT_DATASET_BY_NAME = "SELECT id, name, kind FROM datasets WHERE name = ?"
INSERT_DATASET = "INSERT INTO datasets (id, name, kind, description) VALUES (?, ?, ?, ?)"
UPDATE_DATASET_KIND = "UPDATE datasets SET kind = ? WHERE id = ?"
SELECT_DATASETS_WITH_COUNTS = """
SELECT d.name, d.kind,
       coalesce(i.n, 0) AS instructions,
       coalesce(r.n, 0) AS responses,
       coalesce(doc.n, 0) AS documents,
       coalesce(rej.n, 0) AS rejected_rows,
       d.created_at
FROM datasets d
LEFT JOIN (SELECT dataset_id, count(*) AS n FROM instructions GROUP BY ALL) i ON i.dataset_id = d.id
LEFT JOIN (SELECT ins.dataset_id, count(*) AS n FROM responses res
           JOIN instructions ins ON ins.id = res.instruction_id GROUP BY ALL) r ON r.dataset_id = d.id
LEFT JOIN (SELECT dataset_id, count(*) AS n FROM documents GROUP BY ALL) doc ON doc.dataset_id = d.id
LEFT JOIN (SELECT dataset_id, count(*) AS n FROM import_rejects GROUP BY ALL) rej ON rej.dataset_id = d.id
ORDER BY d.created_at, d.name
"""
INSERT_IMPORT = """
INSERT INTO imports (id, dataset_id, source_file, file_sha256, format, n_records, n_new,
                     n_new_responses, n_duplicates, n_rejected)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
SELECT_IMPORTS = """
SELECT m.created_at, d.name AS dataset, m.source_file, m.format, m.n_records, m.n_new,
       m.n_new_responses, m.n_duplicates, m.n_rejected
FROM imports m JOIN datasets d ON d.id = m.dataset_id
ORDER BY m.created_at DESC
LIMIT ?
"""
SELECT_REJECTS = """
SELECT d.name AS dataset, r.source_file, r.line, r.reason, r.excerpt, r.created_at
FROM import_rejects r JOIN datasets d ON d.id = r.dataset_id
ORDER BY r.created_at DESC, r.source_file, r.line
LIMIT ?
"""

# Batches arrive as Arrow tables registered under the fixed name `batch`, already free of
# duplicate ids; the anti-join skips ids already stored, which keeps re-imports idempotent.
INSERT_INSTRUCTIONS = (
    "INSERT INTO instructions BY NAME SELECT * FROM batch WHERE id NOT IN (SELECT id FROM instructions)"
)
INSERT_RESPONSES = "INSERT INTO responses BY NAME SELECT * FROM batch WHERE id NOT IN (SELECT id FROM responses)"
INSERT_DOCUMENTS = "INSERT INTO documents BY NAME SELECT * FROM batch WHERE id NOT IN (SELECT id FROM documents)"
INSERT_PAIRS = (
    "INSERT INTO preference_pairs BY NAME SELECT * FROM batch WHERE id NOT IN (SELECT id FROM preference_pairs)"
)
INSERT_REJECTS = "INSERT OR IGNORE INTO import_rejects BY NAME SELECT * FROM batch"
# Judgment ids are content hashes of the whole verdict (core.judge.judgment_id) and the table has
# a PRIMARY KEY: a re-ingested shard, or a repeated row inside one, adds nothing.
INSERT_JUDGMENTS = "INSERT OR IGNORE INTO judgments BY NAME SELECT * FROM batch"
_INSERT_BY_TABLE = {
    "instructions": INSERT_INSTRUCTIONS,
    "responses": INSERT_RESPONSES,
    "documents": INSERT_DOCUMENTS,
    "preference_pairs": INSERT_PAIRS,
    "import_rejects": INSERT_REJECTS,
    "judgments": INSERT_JUDGMENTS,
    "difficulty": INSERT_DIFFICULTY,  # an upsert: recomputing a difficulty replaces it
}

# --------------------------------------------------------------------------------------------
# Bulk import of large JSON Lines files (alpaca or prompts records with the canonical keys)
# --------------------------------------------------------------------------------------------
# DuckDB parses, validates and hashes the file in bulk, with the same rules and the same ids
# as core.ingest (Python's str.strip whitespace, the 1 MB field limit, sha256 content ids).
# When any row breaks a rule, the caller falls back to the per-line Python path, which names
# each bad line; the bulk path only ever accepts files that path would accept whole.

_PY_WHITESPACE = "".join(f"\\x{{{ord(c):x}}}" for c in map(chr, range(0x3001)) if c.isspace())
BULK_MAX_FIELD_BYTES = 1024 * 1024

# Pass 1 reads every line as a JSON object and lists the keys in use (a broken line fails here).
BULK_KEYS = "SELECT DISTINCT unnest(json_keys(json)) FROM read_json_objects(?, format = 'newline_delimited')"
# Pass 2 reads the canonical keys as JSON values, so types can still be checked.
BULK_STAGE = """
CREATE OR REPLACE TEMP TABLE bulk_raw AS
SELECT row_number() OVER () AS line, *
FROM read_json(?, format = 'newline_delimited', columns = {
    'instruction': 'JSON', 'input': 'JSON', 'output': 'JSON', 'task': 'JSON', 'category': 'JSON', 'system': 'JSON'})
"""
_STRIP = "nullif(regexp_replace(@COL@->>'$', '^[" + _PY_WHITESPACE + "]+|[" + _PY_WHITESPACE + "]+$', '', 'g'), '')"
# One materialisation: JSON types for the checks, unwrapped text, stripped labels and the ids.
# Bind order: dataset_id (for the id hash), role (for response ids).
BULK_ROWS = """
CREATE OR REPLACE TEMP TABLE bulk_rows AS
WITH typed AS (
    SELECT line,
           json_type(instruction) AS t_instruction, instruction->>'$' AS instruction,
           json_type(output) AS t_output, output->>'$' AS output,
           json_type(input) AS t_input, input->>'$' AS input,
           json_type(task) AS t_task, strlen(task->>'$') AS n_task, """ + _STRIP.replace("@COL@", "task") + """ AS task,
           json_type(category) AS t_category, strlen(category->>'$') AS n_category,
           """ + _STRIP.replace("@COL@", "category") + """ AS category,
           json_type(system) AS t_system, strlen(system->>'$') AS n_system,
           """ + _STRIP.replace("@COL@", "system") + """ AS system
    FROM bulk_raw
), hashed AS (
    SELECT left(sha256(concat_ws(chr(31), ?::VARCHAR, coalesce(system, ''), '', instruction, coalesce(input, ''))), 24)
           AS instruction_id, *
    FROM typed
)
SELECT *, CASE WHEN output IS NULL THEN NULL
               ELSE left(sha256(concat_ws(chr(31), instruction_id, ?::VARCHAR, '', output)), 24) END AS response_id
FROM hashed
"""
_REQUIRED_TEXT = (
    "(t_@COL@ = 'VARCHAR' AND strlen(@COL@) <= " + str(BULK_MAX_FIELD_BYTES)
    + " AND regexp_matches(@COL@, '[^" + _PY_WHITESPACE + "]'))"
)
_OPTIONAL_TEXT = "(t_@COL@ IS NULL OR (t_@COL@ = 'VARCHAR' AND strlen(@COL@) <= " + str(BULK_MAX_FIELD_BYTES) + "))"
_OPTIONAL_LABEL = "(t_@COL@ IS NULL OR (t_@COL@ = 'VARCHAR' AND n_@COL@ <= " + str(BULK_MAX_FIELD_BYTES) + "))"
_OPTIONAL_CHECKS = [_OPTIONAL_TEXT.replace("@COL@", "input")] + [
    _OPTIONAL_LABEL.replace("@COL@", c) for c in ("task", "category", "system")]
# A required field that is absent or JSON null makes its test NULL, not false: coalesce so it counts.
BULK_COUNT_INVALID_PROMPTS = (
    "SELECT count(*) FROM bulk_rows WHERE NOT coalesce(("
    + " AND ".join([_REQUIRED_TEXT.replace("@COL@", "instruction")] + _OPTIONAL_CHECKS)
    + "), false) OR t_output IS NOT NULL"
)
BULK_COUNT_INVALID_ALPACA = (
    "SELECT count(*) FROM bulk_rows WHERE NOT coalesce(("
    + " AND ".join([_REQUIRED_TEXT.replace("@COL@", "instruction"), _REQUIRED_TEXT.replace("@COL@", "output")]
                   + _OPTIONAL_CHECKS)
    + "), false)"
)
# Duplicates inside the file are rare in big files; dedup (an aggregate over the wide rows)
# only runs when this says there are some.
BULK_DUPLICATES = """
SELECT count(*) - count(DISTINCT instruction_id), count(response_id) - count(DISTINCT response_id) FROM bulk_rows
"""
_INSERT_INSTRUCTIONS = """
INSERT INTO instructions (id, dataset_id, text, input, system, task, category, n_chars, source_file, source_line)
SELECT instruction_id, ?, instruction, coalesce(input, ''), system, task, category,
       length(instruction) + length(coalesce(input, '')), ?, line
FROM @ROWS@
WHERE instruction_id NOT IN (SELECT id FROM instructions)
ORDER BY line
"""
_INSERT_RESPONSES = """
INSERT INTO responses (id, instruction_id, role, text, n_chars, source_file, source_line)
SELECT response_id, instruction_id, ?, output, length(output), ?, line
FROM @ROWS@
WHERE response_id IS NOT NULL AND response_id NOT IN (SELECT id FROM responses)
ORDER BY line
"""
# Bind order: dataset_id, source_file.
BULK_INSERT_INSTRUCTIONS = _INSERT_INSTRUCTIONS.replace("@ROWS@", "bulk_rows")
BULK_INSERT_INSTRUCTIONS_DEDUP = _INSERT_INSTRUCTIONS.replace(
    "@ROWS@", "(SELECT DISTINCT ON (instruction_id) * FROM bulk_rows ORDER BY instruction_id, line)")
# Bind order: role, source_file.
BULK_INSERT_RESPONSES = _INSERT_RESPONSES.replace("@ROWS@", "bulk_rows")
BULK_INSERT_RESPONSES_DEDUP = _INSERT_RESPONSES.replace(
    "@ROWS@", "(SELECT DISTINCT ON (response_id) * FROM bulk_rows WHERE response_id IS NOT NULL "
              "ORDER BY response_id, line)")
BULK_ROW_COUNT = "SELECT count(*) FROM bulk_raw"
BULK_DROP = [f"DROP TABLE IF EXISTS {t}" for t in ("bulk_rows", "bulk_raw")]


class ImportQueries:
    """Mixed into core.store.Store; uses the BaseStore plumbing (_rows/_df/_dicts/transaction)."""

    # -- datasets and imports -----------------------------------------------------------------

    def dataset(self, name: str) -> dict | None:
        rows = self._dicts(SELECT_DATASET_BY_NAME, [name])
        return rows[0] if rows else None

    def ensure_dataset(self, cur, dataset_id: str, name: str, kind: str, description: str | None = None) -> None:
        rows = cur.execute(SELECT_DATASET_BY_NAME, [name]).fetchall()
        row = rows[0] if rows else None
        if row is None:
            cur.execute(INSERT_DATASET, [dataset_id, name, kind, description])
        elif row[2] != kind and row[2] != "mixed":
            cur.execute(UPDATE_DATASET_KIND, ["mixed", row[0]])

    def datasets(self) -> pd.DataFrame:
        return self._df(SELECT_DATASETS_WITH_COUNTS)

    def insert_batch(self, cur, table: str, batch: pa.Table) -> int:
        """Insert an Arrow batch, skipping ids already present; returns the number of new rows."""
        if batch.num_rows == 0:
            return 0
        cur.register("batch", batch)
        try:
            return int(cur.execute(_INSERT_BY_TABLE[table]).fetchall()[0][0])
        finally:
            cur.unregister("batch")

    def bulk_stage_jsonl(self, cur, path: Path, allowed_keys: set[str]) -> set[str]:
        """List the keys a JSON Lines file uses; when they are all allowed, stage the file in the
        temp table bulk_raw. Raises BulkUnreadable when DuckDB cannot read it: the failed
        statement has aborted the transaction, so the caller rolls back and goes line by line."""
        try:
            keys = {row[0] for row in cur.execute(BULK_KEYS, [str(path)]).fetchall()}
            if keys <= allowed_keys:
                cur.execute(BULK_STAGE, [str(path)])
        except DatabaseError as exc:
            raise BulkUnreadable(path) from exc
        return keys

    def bulk_insert(self, cur, fmt: str, expected_rows: int, dataset_id: str, role: str,
                    source: str) -> tuple[int, int] | None:
        """Validate the staged rows and insert them; None (nothing inserted) when any row fails
        a rule or blank lines make row numbers differ from line numbers."""
        try:
            if int(cur.execute(BULK_ROW_COUNT).fetchall()[0][0]) != expected_rows:
                return None
            cur.execute(BULK_ROWS, [dataset_id, role])
            check = BULK_COUNT_INVALID_ALPACA if fmt == "alpaca" else BULK_COUNT_INVALID_PROMPTS
            if int(cur.execute(check).fetchall()[0][0]) > 0:
                return None
            dup_instructions, dup_responses = cur.execute(BULK_DUPLICATES).fetchall()[0]
            insert = BULK_INSERT_INSTRUCTIONS_DEDUP if dup_instructions else BULK_INSERT_INSTRUCTIONS
            n_new = int(cur.execute(insert, [dataset_id, source]).fetchall()[0][0])
            n_new_responses = 0
            if fmt == "alpaca":
                insert = BULK_INSERT_RESPONSES_DEDUP if dup_responses else BULK_INSERT_RESPONSES
                n_new_responses = int(cur.execute(insert, [role, source]).fetchall()[0][0])
            return n_new, n_new_responses
        finally:
            self.bulk_drop(cur)

    def bulk_drop(self, cur) -> None:
        for statement in BULK_DROP:
            cur.execute(statement)

    def record_import(self, cur, values: list) -> None:
        cur.execute(INSERT_IMPORT, values)

    def imports(self, limit: int = 100) -> pd.DataFrame:
        return self._df(SELECT_IMPORTS, [limit])

    def rejects(self, limit: int = 500) -> pd.DataFrame:
        return self._df(SELECT_REJECTS, [limit])
