"""The only package that talks to DuckDB.

Every statement is a named constant with `?` bind parameters. Dynamic filters are built by
joining named fragments from `EXPLORE_FILTERS` with AND; user values never enter SQL text.

Concurrency (DESIGN.md §3): DuckDB allows one read-write process per file. A `Store` is that
process's single connection; each thread gets its own cursor, and writes are serialised by one
lock so two threads never race a transaction. Another process that tries to open the file gets
`WorkspaceBusy`, never DuckDB's raw lock error.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa

from core.migrations import MIGRATIONS
from core.selection import ExploreFilter
from core.store.difficulty import DifficultyQueries
from core.store.labels import LabelQueries
from core.store.snapshots import SnapshotQueries


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
INSERT_MIGRATION = "INSERT INTO schema_migrations (name) VALUES (?)"
SELECT_SCHEMA = """
SELECT table_name, column_name, data_type, is_nullable
FROM information_schema.columns
WHERE table_schema = 'main'
ORDER BY table_name, ordinal_position
"""

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

# --------------------------------------------------------------------------------------------
# Stats
# --------------------------------------------------------------------------------------------

SELECT_TABLE_COUNTS = """
SELECT (SELECT count(*) FROM datasets)         AS datasets,
       (SELECT count(*) FROM instructions)     AS instructions,
       (SELECT count(*) FROM responses)        AS responses,
       (SELECT count(*) FROM preference_pairs) AS preference_pairs,
       (SELECT count(*) FROM documents)        AS documents,
       (SELECT count(*) FROM judgments)        AS judgments,
       (SELECT count(*) FROM reviews)          AS reviews,
       (SELECT count(*) FROM import_rejects)   AS import_rejects
"""
SELECT_ROLE_COUNTS = "SELECT role, count(*) AS responses FROM responses GROUP BY role ORDER BY responses DESC"
SELECT_SOURCE_COUNTS = """
SELECT coalesce(source_file, '(generated)') AS source, method, count(*) AS instructions
FROM instructions GROUP BY ALL ORDER BY instructions DESC LIMIT ?
"""
SELECT_TASK_COUNTS = """
SELECT coalesce(task, '(none)') AS task, count(*) AS instructions
FROM instructions GROUP BY ALL ORDER BY instructions DESC
"""

# --------------------------------------------------------------------------------------------
# Explore: filtered, paged view over instructions
# --------------------------------------------------------------------------------------------

# Each fragment is a constant; `explore_where` ANDs the ones a filter uses and collects the
# values in the same order. A fragment with two `?` takes the same value twice.
EXPLORE_FILTERS: dict[str, str] = {
    "dataset_one": "i.dataset_id = ?",
    "dataset_many": "list_contains(?, i.dataset_id)",
    "task_one": "i.task = ?",
    "task_many": "list_contains(?, i.task)",
    "round_many": "list_contains(?, i.round)",
    "source_many": "list_contains(?, i.source_file)",
    "method_many": "list_contains(?, i.method)",
    "role_many": "i.id IN (SELECT r.instruction_id FROM responses r WHERE list_contains(?, r.role))",
    "min_chars": "i.n_chars >= ?",
    "max_chars": "i.n_chars <= ?",
    "search_instruction": "(i.text ILIKE ? ESCAPE '\\' OR i.input ILIKE ? ESCAPE '\\')",
    "search_responses": (
        "(i.text ILIKE ? ESCAPE '\\' OR i.input ILIKE ? ESCAPE '\\' OR i.id IN "
        "(SELECT r.instruction_id FROM responses r WHERE r.text ILIKE ? ESCAPE '\\'))"
    ),
    "reviewed_accept": "i.id IN (SELECT instruction_id FROM instruction_decisions WHERE decision = 'accept')",
    "reviewed_reject": "i.id IN (SELECT instruction_id FROM instruction_decisions WHERE decision = 'reject')",
    "unreviewed": "i.id NOT IN (SELECT instruction_id FROM instruction_decisions)",
}
EXPLORE_ORDERS: dict[str, str] = {
    # rowid is insertion order (samples are never deleted), and sorting one integer is 5-10x
    # faster at 1M rows than (created_at, source_file, source_line, id).
    "oldest": "i.rowid",
    "newest": "i.rowid DESC",
    "longest": "i.n_chars DESC, i.rowid",
    "shortest": "i.n_chars, i.rowid",
}
EXPLORE_COUNT = "SELECT count(*) FROM instructions i WHERE {where}"
# No join to datasets here: at 1M rows it triples the page's time (9 vs 3 ms); names are
# mapped from the small datasets table afterwards.
EXPLORE_PAGE = """
SELECT i.id, i.dataset_id AS dataset, i.task, left(i.text, 200) AS instruction, i.n_chars,
       i.round, i.method, i.source_file, i.source_line
FROM instructions i
WHERE {where}
ORDER BY {order}
LIMIT ? OFFSET ?
"""
# Per-page decorations, looked up for the page's ids only. Responses: written as a join from
# the page's ids so DuckDB probes the responses_by_instruction index (2 ms at 1M responses;
# `instruction_id = ANY(?)` scans the column instead, 6 ms). Verdicts: the small reviews table
# by its instruction_id, with the instruction_decisions rule (latest decision on the
# instruction or on any of its responses).
PAGE_RESPONSE_SUMMARY = """
SELECT r.instruction_id, count(*) AS n_responses, string_agg(DISTINCT r.role, ', ' ORDER BY r.role) AS roles
FROM (SELECT unnest(?::VARCHAR[]) AS id) p JOIN responses r ON r.instruction_id = p.id
GROUP BY r.instruction_id
"""
PAGE_LATEST_REVIEW = """
SELECT instruction_id, arg_max(decision, created_at) AS decision
FROM reviews
WHERE instruction_id = ANY(?) AND decision IS NOT NULL AND target_kind IN ('instruction', 'response')
GROUP BY instruction_id
"""
SELECT_DATASET_NAMES = "SELECT id, name FROM datasets"
EXPLORE_LENGTH_HISTOGRAM = """
SELECT floor(i.n_chars / ?) * ? AS bin_start, count(*) AS n
FROM instructions i WHERE {where} GROUP BY ALL ORDER BY bin_start
"""
SELECT_DISTINCT_TASKS = "SELECT DISTINCT task FROM instructions WHERE task IS NOT NULL ORDER BY task"
SELECT_DISTINCT_ROLES = "SELECT DISTINCT role FROM responses ORDER BY role"
SELECT_DISTINCT_SOURCES = (
    "SELECT DISTINCT source_file FROM instructions WHERE source_file IS NOT NULL ORDER BY source_file LIMIT ?"
)
SELECT_DISTINCT_ROUNDS = "SELECT DISTINCT round FROM instructions ORDER BY round"
SELECT_DISTINCT_METHODS = "SELECT DISTINCT method FROM instructions ORDER BY method"
SELECT_DATASET_IDS_BY_NAMES = "SELECT id FROM datasets WHERE list_contains(?, name)"

# --------------------------------------------------------------------------------------------
# Sample detail and review
# --------------------------------------------------------------------------------------------

SELECT_INSTRUCTION = """
SELECT i.*, d.name AS dataset FROM instructions i JOIN datasets d ON d.id = i.dataset_id WHERE i.id = ?
"""
SELECT_RESPONSES_FOR = """
SELECT * FROM responses WHERE instruction_id = ? ORDER BY role, created_at, id
"""
SELECT_REVIEWS_FOR = """
SELECT * FROM reviews WHERE list_contains(?, target_id) ORDER BY created_at DESC, id
"""
SELECT_JUDGMENTS_FOR = """
SELECT * FROM judgments WHERE list_contains(?, target_id) ORDER BY created_at DESC, id
"""
SELECT_PAIRS_FOR = "SELECT * FROM preference_pairs WHERE instruction_id = ? ORDER BY created_at, id"
INSERT_REVIEW = """
INSERT INTO reviews (id, target_kind, target_id, decision, edited_text, note, reviewer, instruction_id)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
"""
SELECT_RESPONSE_INSTRUCTION = "SELECT instruction_id FROM responses WHERE id = ?"
SELECT_TARGET_KIND = """
SELECT 'instruction' FROM instructions WHERE id = ?
UNION ALL SELECT 'response' FROM responses WHERE id = ?
UNION ALL SELECT 'document' FROM documents WHERE id = ?
LIMIT 1
"""

# --------------------------------------------------------------------------------------------
# Judgments and calibration
# --------------------------------------------------------------------------------------------

# Judgment rows go in through INSERT_JUDGMENTS (with the other batch inserts, above).
SELECT_JUDGES = """
SELECT judge_model, rubric, kind, count(*) AS judgments, count(*) - count(score) AS unparsed,
       count(DISTINCT target_id) AS targets, max(created_at) AS last_judged
FROM judgments GROUP BY ALL ORDER BY last_judged DESC, judge_model, rubric
"""
# One score per target for a judge and rubric: the mean of its parsed verdicts (Humpback averages
# repeated ratings), NULL when none parsed (never 0). The human label is the latest decision on
# the target itself or, when it has none and is a response, the latest on its instruction.
# Bind order: judge_model, rubric (then the statement's own values).
_JUDGE_TARGETS = """
WITH jt AS (
    SELECT target_id, avg(score) AS score, count(*) AS n_judgments, count(score) AS n_parsed
    FROM judgments WHERE judge_model = ? AND rubric = ? GROUP BY target_id
), labeled AS (
    SELECT jt.*, coalesce(d.decision, di.decision) AS decision
    FROM jt
    LEFT JOIN target_decisions d ON d.target_id = jt.target_id
    LEFT JOIN responses r ON r.id = jt.target_id
    LEFT JOIN target_decisions di ON di.target_id = r.instruction_id
)
"""
# The same labels, starting from the (few) reviewed targets rather than every judged one:
# ~10x faster at 1M judgments.
SELECT_JUDGE_LABELS = """
WITH label AS (
    SELECT target_id, decision FROM target_decisions
    UNION ALL
    SELECT r.id, di.decision
    FROM target_decisions di JOIN responses r ON r.instruction_id = di.target_id
    WHERE r.id NOT IN (SELECT target_id FROM target_decisions)
)
SELECT j.target_id, avg(j.score) AS score, any_value(label.decision) AS decision
FROM judgments j JOIN label ON label.target_id = j.target_id
WHERE j.judge_model = ? AND j.rubric = ?
GROUP BY j.target_id
ORDER BY j.target_id
"""
# How many targets have each score (NULL: no verdict on it parsed): the kept share at any
# threshold without sending a row per target to Python.
SELECT_JUDGE_SCORE_COUNTS = _JUDGE_TARGETS + """
SELECT score, count(*) AS n FROM jt GROUP BY score ORDER BY score NULLS LAST
"""
SELECT_JUDGE_VERDICT_COUNTS = """
SELECT count(*) AS judgments, count(*) - count(score) AS unparsed, avg(score) AS mean_score
FROM judgments WHERE judge_model = ? AND rubric = ?
"""
# Unlabeled targets nearest the threshold (kept side first on ties, then id).
# Bind order: judge_model, rubric, threshold, threshold, limit.
SELECT_REVIEW_CANDIDATES = _JUDGE_TARGETS + """
SELECT target_id, score, abs(score - ?) AS distance, score >= ? AS kept
FROM labeled WHERE decision IS NULL AND score IS NOT NULL
ORDER BY distance, kept DESC, target_id
LIMIT ?
"""
# Pairs judged in both orders (both parsed) in a round, and how many changed verdict with the
# order (score is the preference for the original A, so a flip is two distinct scores).
SELECT_PAIRWISE_FLIPS = """
SELECT count(*) AS pairs, count(*) FILTER (WHERE n_verdicts > 1) AS flipped
FROM (
    SELECT target_id, round, count(DISTINCT score) AS n_verdicts
    FROM judgments
    WHERE judge_model = ? AND rubric = ? AND kind = 'pairwise' AND score IS NOT NULL
    GROUP BY target_id, round
    HAVING count(DISTINCT params->>'$.order') = 2
)
"""

# --------------------------------------------------------------------------------------------
# Judgments page
# --------------------------------------------------------------------------------------------

# Score histogram of one judge and rubric, per response role: one score per target (the mean of
# its parsed verdicts, as calibration uses), binned server-side; bin_start NULL counts the targets
# with no parsed verdict. Targets that are not responses (pairs) get the role "(pair)".
# An empty role list means every role. Bind order: judge_model, rubric, bin width, bin width,
# roles, roles.
SELECT_JUDGE_SCORE_HISTOGRAM = """
WITH jt AS (
    SELECT target_id, any_value(target_kind) AS target_kind, avg(score) AS score
    FROM judgments WHERE judge_model = ? AND rubric = ? GROUP BY target_id
)
SELECT coalesce(r.role, '(' || jt.target_kind || ')') AS role, floor(jt.score / ?) * ? AS bin_start, count(*) AS n
FROM jt LEFT JOIN responses r ON r.id = jt.target_id
WHERE len(?::VARCHAR[]) = 0 OR list_contains(?::VARCHAR[], r.role)
GROUP BY ALL
ORDER BY role, bin_start NULLS LAST
"""
# One page of the targets in one score bin (the same binning as the histogram), or of the targets
# with no parsed verdict, with their instruction, response and latest verdict (raw text, parse
# error, rationale). The page is cut before the texts are joined.
# Bind order: judge_model, rubric, unparsed bin?, bin width, bin width, bin_start, roles, roles,
# limit, offset, judge_model, rubric.
SELECT_JUDGE_BIN_SAMPLES = """
WITH jt AS (
    SELECT target_id, any_value(target_kind) AS target_kind, avg(score) AS score, count(*) AS n_verdicts,
           count(*) - count(score) AS n_unparsed
    FROM judgments WHERE judge_model = ? AND rubric = ? GROUP BY target_id
), picked AS (
    SELECT jt.*, r.role, r.instruction_id, r.text AS response
    FROM jt LEFT JOIN responses r ON r.id = jt.target_id
    WHERE (CASE WHEN ? THEN jt.score IS NULL ELSE floor(jt.score / ?) * ? = ? END)
      AND (len(?::VARCHAR[]) = 0 OR list_contains(?::VARCHAR[], r.role))
    ORDER BY jt.score, jt.target_id
    LIMIT ? OFFSET ?
), latest AS (
    SELECT target_id, raw, parse_error, rationale,
           row_number() OVER (PARTITION BY target_id ORDER BY created_at DESC, id) AS k
    FROM judgments
    WHERE judge_model = ? AND rubric = ? AND target_id IN (SELECT target_id FROM picked)
)
SELECT p.target_id, p.target_kind, coalesce(p.role, '(' || p.target_kind || ')') AS role, p.score,
       p.n_verdicts, p.n_unparsed, p.instruction_id, i.text AS instruction, i.input, p.response,
       v.raw, v.parse_error, v.rationale
FROM picked p
LEFT JOIN instructions i ON i.id = p.instruction_id
LEFT JOIN latest v ON v.target_id = p.target_id AND v.k = 1
ORDER BY p.score, p.target_id
"""
# Instruction and response texts of judged responses (the review candidates of a threshold).
SELECT_JUDGE_TARGET_TEXTS = """
SELECT r.id AS target_id, r.role, r.instruction_id, i.text AS instruction, i.input, r.text AS response
FROM responses r JOIN instructions i ON i.id = r.instruction_id
WHERE r.id = ANY(?)
"""

# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------

# Latest edit of a response (a review with edited_text) replaces its text on export.
EXPORT_PAIRS = """
WITH sel AS (SELECT i.*, i.rowid AS seq FROM instructions i WHERE {where})
SELECT sel.id AS instruction_id, sel.text AS instruction, sel.input, sel.system, sel.history, sel.task,
       r.id AS response_id, r.role, coalesce(e.edited_text, r.text) AS output
FROM sel JOIN responses r ON r.instruction_id = sel.id
LEFT JOIN latest_edits e ON e.target_id = r.id
LEFT JOIN target_decisions dr ON dr.target_id = r.id
LEFT JOIN target_decisions di ON di.target_id = sel.id
WHERE list_contains(?, r.role)
  AND (NOT ? OR (coalesce(dr.decision, '') <> 'reject' AND coalesce(di.decision, '') <> 'reject'))
ORDER BY sel.seq, r.role, r.rowid
"""
# With exclude_rejected (the last bind value), a prompt goes when its latest decision is reject, and a
# pair when its instruction's or its chosen response's is (rejecting the rejected answer agrees with it).
EXPORT_PROMPTS = """
WITH sel AS (SELECT i.*, i.rowid AS seq FROM instructions i WHERE {where})
SELECT sel.id AS instruction_id, sel.text AS instruction, sel.input, sel.system, sel.history, sel.task
FROM sel LEFT JOIN target_decisions di ON di.target_id = sel.id
WHERE NOT ? OR coalesce(di.decision, '') <> 'reject'
ORDER BY sel.seq
"""
EXPORT_PREFERENCES = """
WITH sel AS (SELECT i.*, i.rowid AS seq FROM instructions i WHERE {where})
SELECT sel.id AS instruction_id, sel.text AS instruction, sel.input, sel.system, sel.history, sel.task,
       coalesce(ec.edited_text, c.text) AS chosen, coalesce(er.edited_text, r.text) AS rejected
FROM sel JOIN preference_pairs p ON p.instruction_id = sel.id
JOIN responses c ON c.id = p.chosen_id
JOIN responses r ON r.id = p.rejected_id
LEFT JOIN latest_edits ec ON ec.target_id = c.id
LEFT JOIN latest_edits er ON er.target_id = r.id
LEFT JOIN target_decisions di ON di.target_id = sel.id
LEFT JOIN target_decisions dc ON dc.target_id = c.id
WHERE NOT ? OR (coalesce(di.decision, '') <> 'reject' AND coalesce(dc.decision, '') <> 'reject')
ORDER BY sel.seq, p.rowid
"""

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
# The responses a judge job scores: those of the given roles, for the selected instructions.
SELECT_RESPONSES_FOR_JUDGE = """
SELECT r.id AS response_id, i.text AS instruction, i.input, r.text AS response
FROM instructions i JOIN responses r ON r.instruction_id = i.id
WHERE {where} AND list_contains(?, r.role)
ORDER BY i.rowid, r.rowid
LIMIT ?
"""
# Pairs a pairwise judge compares: a response of role A and one of role B to the same instruction.
# Bind order: (where values), role A, role B, limit.
SELECT_PAIRS_FOR_JUDGE = """
SELECT a.id AS a_id, b.id AS b_id, i.text AS instruction, i.input, a.text AS answer_a, b.text AS answer_b
FROM instructions i
JOIN responses a ON a.instruction_id = i.id
JOIN responses b ON b.instruction_id = i.id
WHERE {where} AND a.role = ? AND b.role = ? AND a.id <> b.id
ORDER BY i.rowid, a.rowid, b.rowid
LIMIT ?
"""
# What a listwise judge ranks: every answer of the given roles to each instruction (k ≥ 2).
# Bind order: (where values), roles, limit.
SELECT_LISTS_FOR_JUDGE = """
SELECT i.text AS instruction, i.input, list(r.id ORDER BY r.rowid) AS response_ids,
       list(r.text ORDER BY r.rowid) AS answers
FROM instructions i JOIN responses r ON r.instruction_id = i.id
WHERE {where} AND list_contains(?, r.role)
GROUP BY i.id, i.text, i.input, i.rowid
HAVING count(*) >= 2
ORDER BY i.rowid
LIMIT ?
"""
# The instructions a generate job answers, in the order Explore shows them.
SELECT_INSTRUCTIONS_FOR_JOB = """
SELECT i.id, i.text, i.input, i.system, i.history FROM instructions i WHERE {where} ORDER BY i.rowid LIMIT ?
"""

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

_LOCK_PID = re.compile(r"PID (\d+)")


def like_pattern(text: str) -> str:
    """A case-insensitive substring pattern for ILIKE ... ESCAPE '\\' that matches `text` literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class Store(LabelQueries, DifficultyQueries, SnapshotQueries):
    """One DuckDB connection for this process; a cursor per thread; serialised writes."""

    def __init__(self, path: Path | str, read_only: bool = False):
        self.path = Path(path)
        self.read_only = read_only
        try:
            self._con = duckdb.connect(str(self.path), read_only=read_only)
        except duckdb.IOException as exc:
            message = str(exc)
            if "lock" not in message.lower():
                raise
            match = _LOCK_PID.search(message)
            raise WorkspaceBusy(self.path, int(match.group(1)) if match else None) from None
        self._local = threading.local()
        self._write_lock = threading.RLock()
        self._dataset_names: dict[str, str] = {}

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

    def close(self) -> None:
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
        except duckdb.Error as exc:
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

    # -- stats --------------------------------------------------------------------------------

    def table_counts(self) -> dict[str, int]:
        return self._dicts(SELECT_TABLE_COUNTS)[0]

    def role_counts(self) -> pd.DataFrame:
        return self._df(SELECT_ROLE_COUNTS)

    def source_counts(self, limit: int = 50) -> pd.DataFrame:
        return self._df(SELECT_SOURCE_COUNTS, [limit])

    def task_counts(self) -> pd.DataFrame:
        return self._df(SELECT_TASK_COUNTS)

    # -- explore ------------------------------------------------------------------------------

    def explore_where(self, f: ExploreFilter) -> tuple[str, list]:
        """AND the constant fragments this filter needs; return (where clause, bind values)."""
        parts: list[str] = []
        values: list = []

        def add(fragment: str, *vals) -> None:
            parts.append(EXPLORE_FILTERS[fragment])
            values.extend(vals)

        if f.datasets:
            ids = [r[0] for r in self._rows(SELECT_DATASET_IDS_BY_NAMES, [list(f.datasets)])]
            if len(ids) == 1:
                add("dataset_one", ids[0])
            else:
                add("dataset_many", ids)  # an unknown name gives an empty list: nothing matches
        if f.tasks:
            if len(f.tasks) == 1:
                add("task_one", f.tasks[0])
            else:
                add("task_many", list(f.tasks))
        if f.rounds:
            add("round_many", [int(r) for r in f.rounds])
        if f.sources:
            add("source_many", list(f.sources))
        if f.methods:
            add("method_many", list(f.methods))
        if f.roles:
            add("role_many", list(f.roles))
        if f.min_chars is not None:
            add("min_chars", int(f.min_chars))
        if f.max_chars is not None:
            add("max_chars", int(f.max_chars))
        if f.search.strip():
            pattern = like_pattern(f.search.strip())
            if f.search_responses:
                add("search_responses", pattern, pattern, pattern)
            else:
                add("search_instruction", pattern, pattern)
        if f.review == "accepted":
            add("reviewed_accept")
        elif f.review == "rejected":
            add("reviewed_reject")
        elif f.review == "unreviewed":
            add("unreviewed")
        return (" AND ".join(parts) if parts else "TRUE"), values

    def explore_count(self, f: ExploreFilter) -> int:
        where, values = self.explore_where(f)
        sql = EXPLORE_COUNT.format(where=where)
        return int(self._rows(sql, values)[0][0])

    def explore_page(self, f: ExploreFilter, limit: int = 50, offset: int = 0, order: str = "oldest") -> pd.DataFrame:
        if order not in EXPLORE_ORDERS:
            raise ValueError(f"order must be one of {sorted(EXPLORE_ORDERS)}, not {order!r}")
        if not 1 <= limit <= 500:
            raise ValueError(f"page size must be between 1 and 500, not {limit}")
        where, values = self.explore_where(f)
        sql = EXPLORE_PAGE.format(where=where, order=EXPLORE_ORDERS[order])
        page = self._df(sql, values + [int(limit), int(max(offset, 0))])
        ids = page["id"].tolist()
        summary = {i: (n, roles) for i, n, roles in self._rows(PAGE_RESPONSE_SUMMARY, [ids])} if ids else {}
        reviews = dict(self._rows(PAGE_LATEST_REVIEW, [ids])) if ids else {}
        page["dataset"] = [self._dataset_name(d) for d in page["dataset"]]
        page["n_responses"] = [int(summary.get(i, (0, ""))[0]) for i in ids]
        page["roles"] = [summary.get(i, (0, ""))[1] for i in ids]
        page["review"] = [reviews.get(i) or "" for i in ids]
        return page

    def _dataset_name(self, dataset_id: str) -> str:
        """Dataset names by id, cached: datasets are only ever added, never renamed."""
        if dataset_id not in self._dataset_names:
            self._dataset_names = dict(self._rows(SELECT_DATASET_NAMES))
        return self._dataset_names.get(dataset_id, dataset_id)

    def length_histogram(self, f: ExploreFilter, bin_width: int) -> pd.DataFrame:
        where, values = self.explore_where(f)
        sql = EXPLORE_LENGTH_HISTOGRAM.format(where=where)
        return self._df(sql, [int(bin_width), int(bin_width)] + values)

    def filter_options(self, source_limit: int = 200) -> dict[str, list]:
        return {
            "datasets": [r[0] for r in self._rows("SELECT name FROM datasets ORDER BY name")],
            "tasks": [r[0] for r in self._rows(SELECT_DISTINCT_TASKS)],
            "roles": [r[0] for r in self._rows(SELECT_DISTINCT_ROLES)],
            "sources": [r[0] for r in self._rows(SELECT_DISTINCT_SOURCES, [source_limit])],
            "rounds": [r[0] for r in self._rows(SELECT_DISTINCT_ROUNDS)],
            "methods": [r[0] for r in self._rows(SELECT_DISTINCT_METHODS)],
        }

    # -- sample detail and review -------------------------------------------------------------

    def instruction(self, instruction_id: str) -> dict | None:
        rows = self._dicts(SELECT_INSTRUCTION, [instruction_id])
        return rows[0] if rows else None

    def responses_for(self, instruction_id: str) -> list[dict]:
        return self._dicts(SELECT_RESPONSES_FOR, [instruction_id])

    def pairs_for(self, instruction_id: str) -> list[dict]:
        return self._dicts(SELECT_PAIRS_FOR, [instruction_id])

    def reviews_for(self, target_ids: list[str]) -> list[dict]:
        return self._dicts(SELECT_REVIEWS_FOR, [list(target_ids)])

    def judgments_for(self, target_ids: list[str]) -> list[dict]:
        return self._dicts(SELECT_JUDGMENTS_FOR, [list(target_ids)])

    def target_exists(self, target_id: str) -> bool:
        return self.target_kind(target_id) is not None

    def target_kind(self, target_id: str) -> str | None:
        """Which table holds this id: instruction, response, document, or None."""
        rows = self._rows(SELECT_TARGET_KIND, [target_id] * 3)
        return rows[0][0] if rows else None

    def insert_review(self, values: list) -> None:
        """values: id, target_kind, target_id, decision, edited_text, note, reviewer."""
        target_kind, target_id = values[1], values[2]
        if target_kind == "response":
            instruction_id = self._rows(SELECT_RESPONSE_INSTRUCTION, [target_id])[0][0]
        else:
            instruction_id = target_id if target_kind == "instruction" else None
        with self.transaction() as cur:
            cur.execute(INSERT_REVIEW, list(values) + [instruction_id])

    # -- judgments and calibration ------------------------------------------------------------

    def insert_judgments(self, cur, batch: pa.Table) -> int:
        """Insert judgment rows (core.judge.judgments_table) in the caller's transaction;
        ids already stored are skipped. Returns the number of new rows."""
        return self.insert_batch(cur, "judgments", batch)

    def judges(self) -> pd.DataFrame:
        """Every (judge_model, rubric) with its verdict, unparsed and target counts."""
        return self._df(SELECT_JUDGES)

    def judge_labels(self, judge_model: str, rubric: str) -> pd.DataFrame:
        """(target_id, score, decision) for the judged targets that have a human decision."""
        return self._df(SELECT_JUDGE_LABELS, [judge_model, rubric])

    def judge_score_counts(self, judge_model: str, rubric: str) -> pd.DataFrame:
        """(score, n): judged targets per score; a NULL score counts targets with no parsed verdict."""
        return self._df(SELECT_JUDGE_SCORE_COUNTS, [judge_model, rubric])

    def judge_verdict_counts(self, judge_model: str, rubric: str) -> dict:
        return self._dicts(SELECT_JUDGE_VERDICT_COUNTS, [judge_model, rubric])[0]

    def judge_review_candidates(self, judge_model: str, rubric: str, threshold: float, k: int) -> pd.DataFrame:
        return self._df(SELECT_REVIEW_CANDIDATES, [judge_model, rubric, float(threshold), float(threshold), int(k)])

    def pairwise_flips(self, judge_model: str, rubric: str) -> dict:
        return self._dicts(SELECT_PAIRWISE_FLIPS, [judge_model, rubric])[0]

    # -- judgments page -----------------------------------------------------------------------

    def judge_score_histogram(self, judge_model: str, rubric: str, bin_width: float,
                              roles: list[str]) -> pd.DataFrame:
        """(role, bin_start, n): judged targets per score bin and role; bin_start NaN = no parsed verdict."""
        w = float(bin_width)
        return self._df(SELECT_JUDGE_SCORE_HISTOGRAM, [judge_model, rubric, w, w, list(roles), list(roles)])

    def judge_bin_samples(self, judge_model: str, rubric: str, bin_start: float | None, bin_width: float,
                          roles: list[str], limit: int, offset: int) -> pd.DataFrame:
        """One page of the targets in a score bin (bin_start None: those with no parsed verdict)."""
        w = float(bin_width)
        unparsed = bin_start is None
        return self._df(SELECT_JUDGE_BIN_SAMPLES, [
            judge_model, rubric, unparsed, w, w, 0.0 if unparsed else float(bin_start), list(roles), list(roles),
            int(limit), int(max(offset, 0)), judge_model, rubric])

    def judge_target_texts(self, target_ids: list[str]) -> pd.DataFrame:
        return self._df(SELECT_JUDGE_TARGET_TEXTS, [list(target_ids)])

    # -- export -------------------------------------------------------------------------------

    def export_pairs(self, f: ExploreFilter, roles: list[str], exclude_rejected: bool) -> pd.DataFrame:
        where, values = self.explore_where(f)
        sql = EXPORT_PAIRS.format(where=where)
        return self._bulk_df(sql, values + [list(roles), bool(exclude_rejected)])

    def export_prompts(self, f: ExploreFilter, exclude_rejected: bool = False) -> pd.DataFrame:
        where, values = self.explore_where(f)
        return self._bulk_df(EXPORT_PROMPTS.format(where=where), values + [bool(exclude_rejected)])

    def export_preferences(self, f: ExploreFilter, exclude_rejected: bool = False) -> pd.DataFrame:
        where, values = self.explore_where(f)
        return self._bulk_df(EXPORT_PREFERENCES.format(where=where), values + [bool(exclude_rejected)])

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

    def responses_for_judge(self, f: ExploreFilter, roles: list[str], limit: int) -> list[dict]:
        where, values = self.explore_where(f)
        return self._dicts(SELECT_RESPONSES_FOR_JUDGE.format(where=where), values + [list(roles), int(limit)])

    def pairs_for_judge(self, f: ExploreFilter, role_a: str, role_b: str, limit: int) -> list[dict]:
        where, values = self.explore_where(f)
        return self._dicts(SELECT_PAIRS_FOR_JUDGE.format(where=where), values + [role_a, role_b, int(limit)])

    def lists_for_judge(self, f: ExploreFilter, roles: list[str], limit: int) -> list[dict]:
        where, values = self.explore_where(f)
        return self._dicts(SELECT_LISTS_FOR_JUDGE.format(where=where), values + [list(roles), int(limit)])

    def instructions_for_job(self, f: ExploreFilter, limit: int) -> list[dict]:
        where, values = self.explore_where(f)
        return self._dicts(SELECT_INSTRUCTIONS_FOR_JOB.format(where=where), values + [int(limit)])

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

    # -- baselines for bench/ -----------------------------------------------------------------

    def bench_read_json(self, path: Path) -> None:
        self.cursor().execute(BENCH_READ_JSON, [str(path)])

    def bench_bare_explore(self, task: str, lo: int, hi: int, limit: int, offset: int) -> None:
        self._rows(BENCH_BARE_COUNT, [task, lo, hi])
        self._rows(BENCH_BARE_PAGE, [task, lo, hi, limit, offset])
