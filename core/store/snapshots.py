"""SQL for curation snapshots: see core.curate.

A curation spec becomes a `CurateQuery`: a pool (which rows are samples at all), where the values
the rules read come from (judges, difficulty round and sources) and an ordered list of rules,
each a named fragment from `CURATE_RULES` with its bind values. Every statement here is built by
joining those constants; no user value ever enters SQL text.

Two steps, because they cost very differently at 1M samples:

1. `CURATE_VALUES`: every sample of the pool with every value a rule reads (current task, review
   decision, length, judge means, MFD, IFD). Joins and aggregates over the big tables: seconds.
2. `CURATE_FATES` / `CURATE_COUNTS` over those values (an Arrow table registered as
   `curate_values`): a sample's fate is the first rule it fails, `CASE WHEN NOT coalesce(<rule 0>,
   false) THEN 0 WHEN ... END` (NULL: it passes every rule). ~0.1 s at 1M.

`coalesce(.., false)` makes a missing value (no judge verdict, no difficulty row) fail a rule
instead of slipping through a NULL comparison; the spec puts a "has a value" rule before each
threshold on a value, so those samples are counted apart. The same expression gives the live
counts, the materialisation and "why out", so the three cannot disagree.

Live counts keep step 1's result per value source (`curate_counts`), so moving a threshold only
reruns step 2. The cache is checked on every call against a fingerprint of the catalog (row
counts of the tables the values read, and the size and time of the catalog file and its WAL,
which every commit changes), so a new verdict, review, label or difficulty is seen at the next
count.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import pyarrow as pa

# --------------------------------------------------------------------------------------------
# Step 1: the samples of a spec, with every value a rule reads
# --------------------------------------------------------------------------------------------

# Judge scores are columns judge_1 … judge_4 (judge number k = its place in CurateQuery.judges):
# flat columns are ~8x faster to filter than a map per row.
MAX_JUDGES = 4
_ONLY = "(?::VARCHAR IS NULL OR {column} = ?)"  # one instruction (why in / why out), or every one

# Which rows are samples. Each pool yields instruction_id, response_id (NULL for prompt-only
# samples), dataset_id, role, n_chars (the instruction's, input included, as Explore counts) and
# the stable order (i_seq, r_seq: insertion order, DESIGN.md §3). Datasets: an empty list = all.
# Bind order: sft: roles, datasets x2, only x2; prompts: datasets x2, only x2; preference:
# datasets x2, pair methods x2, pair rounds x2, only x2 (an empty list: any).
CURATE_POOLS: dict[str, str] = {
    "sft": """
        SELECT i.id AS instruction_id, r.id AS response_id, i.dataset_id, r.role, i.n_chars,
               i.rowid AS i_seq, r.rowid AS r_seq
        FROM instructions i JOIN responses r ON r.instruction_id = i.id
        WHERE list_contains(?::VARCHAR[], r.role)
          AND (len(?::VARCHAR[]) = 0 OR list_contains(?::VARCHAR[], i.dataset_id))
          AND """ + _ONLY.format(column="i.id"),
    "prompts": """
        SELECT i.id AS instruction_id, NULL::VARCHAR AS response_id, i.dataset_id, NULL::VARCHAR AS role,
               i.n_chars, i.rowid AS i_seq, NULL::BIGINT AS r_seq
        FROM instructions i
        WHERE (len(?::VARCHAR[]) = 0 OR list_contains(?::VARCHAR[], i.dataset_id))
          AND """ + _ONLY.format(column="i.id"),
    # Instructions with at least one preference pair; the pairs themselves go into the Parquet.
    "preference": """
        SELECT i.id AS instruction_id, NULL::VARCHAR AS response_id, i.dataset_id, NULL::VARCHAR AS role,
               i.n_chars, i.rowid AS i_seq, NULL::BIGINT AS r_seq
        FROM instructions i
        WHERE (len(?::VARCHAR[]) = 0 OR list_contains(?::VARCHAR[], i.dataset_id))
          AND i.id IN (SELECT instruction_id FROM preference_pairs p WHERE """ + "@PAIRS@" + """)
          AND """ + _ONLY.format(column="i.id"),
}
# A preference snapshot's pair filter (core.curate.PairFilter). Bind order: methods x2, rounds x2.
_PAIR_FILTER = ("(len(?::VARCHAR[]) = 0 OR list_contains(?::VARCHAR[], p.method))"
                " AND (len(?::INTEGER[]) = 0 OR list_contains(?::INTEGER[], p.round))")
CURATE_POOLS["preference"] = CURATE_POOLS["preference"].replace("@PAIRS@", _PAIR_FILTER)

# judge_k: the mean of judge k's parsed verdicts on the response (NULL: none parsed, never 0).
# mfd / ifd: per instruction, the value of the latest round (or the given round), the newest row
# first when several sources wrote one; a NULL value there stays NULL (arg_max_null), so "no MFD
# this round" is not replaced by an older round's. Task: the current_tasks view. Review: the
# latest decision on the response itself, else on its instruction (the rule calibration uses).
# Bind order: judges (STRUCT(k, judge_model, rubric)[]), only x2, mfd source x2, ifd source x2,
# round x2, only x2, then the pool's values.
_CURATE_SAMPLES = """
WITH judges AS (
    SELECT unnest(?::STRUCT(k INTEGER, judge_model VARCHAR, rubric VARCHAR)[], recursive := true)
), judge_scores AS (
    SELECT j.target_id,
           avg(j.score) FILTER (WHERE jr.k = 1) AS judge_1, avg(j.score) FILTER (WHERE jr.k = 2) AS judge_2,
           avg(j.score) FILTER (WHERE jr.k = 3) AS judge_3, avg(j.score) FILTER (WHERE jr.k = 4) AS judge_4
    FROM judgments j JOIN judges jr ON jr.judge_model = j.judge_model AND jr.rubric = j.rubric
    WHERE j.target_kind = 'response' AND j.score IS NOT NULL
      AND (?::VARCHAR IS NULL OR j.target_id IN (SELECT id FROM responses WHERE instruction_id = ?))
    GROUP BY j.target_id
), diff AS (
    SELECT instruction_id,
           arg_max_null(value, [round, epoch_us(created_at)])
               FILTER (WHERE metric = 'mfd' AND (?::VARCHAR IS NULL OR source = ?)) AS mfd,
           arg_max_null(value, [round, epoch_us(created_at)])
               FILTER (WHERE metric = 'ifd' AND (?::VARCHAR IS NULL OR source = ?)) AS ifd
    FROM difficulty
    WHERE (?::INTEGER IS NULL OR round = ?) AND """ + _ONLY.format(column="instruction_id") + """
    GROUP BY instruction_id
), pool AS ({pool}
), samples AS (
    SELECT pool.*, ct.task, coalesce(dr.decision, di.decision) AS decision,
           js.judge_1, js.judge_2, js.judge_3, js.judge_4, d.mfd, d.ifd
    FROM pool
    LEFT JOIN current_tasks ct ON ct.instruction_id = pool.instruction_id
    LEFT JOIN target_decisions dr ON dr.target_id = pool.response_id
    LEFT JOIN target_decisions di ON di.target_id = pool.instruction_id
    LEFT JOIN judge_scores js ON js.target_id = pool.response_id
    LEFT JOIN diff d ON d.instruction_id = pool.instruction_id
)
"""
CURATE_VALUES = _CURATE_SAMPLES + "SELECT * FROM samples ORDER BY i_seq, r_seq"
# What the live counts read: no ids (a third of the memory of a cached 1M-sample table).
CURATE_COUNT_VALUES = _CURATE_SAMPLES + """
SELECT task, decision, n_chars, judge_1, judge_2, judge_3, judge_4, mfd, ifd FROM samples
"""
# The tables step 1 reads, as a fingerprint: row counts (each answered from table statistics in
# ~0.5 ms; as scalar subqueries of one SELECT they scan, ~100 ms). Rows updated in place (a
# recomputed difficulty is INSERT OR REPLACE, which keeps created_at) change no count: the
# catalog file and its WAL, which every commit writes, are part of the fingerprint too.
CURATE_FINGERPRINT = [
    "SELECT count(*) FROM instructions", "SELECT count(*) FROM responses", "SELECT count(*) FROM judgments",
    "SELECT count(*) FROM reviews", "SELECT count(*) FROM preference_pairs", "SELECT count(*) FROM labels",
    "SELECT count(*) FROM difficulty",
]

# --------------------------------------------------------------------------------------------
# Step 2: rules over the values
# --------------------------------------------------------------------------------------------

_JUDGE = ("(CASE ?::INTEGER WHEN 1 THEN s.judge_1 WHEN 2 THEN s.judge_2 WHEN 3 THEN s.judge_3 "
          "WHEN 4 THEN s.judge_4 END)")
# Each rule: (condition a kept sample meets, the value it reads, shown by "why out").
# Judge fragments take the judge number k first, in the condition and in the value.
CURATE_RULES: dict[str, tuple[str, str]] = {
    "task": ("list_contains(?::VARCHAR[], coalesce(s.task, '(none)'))", "coalesce(s.task, '(none)')"),
    "review_accepted": ("s.decision = 'accept'", "coalesce(s.decision, 'unreviewed')"),
    "review_rejected": ("s.decision = 'reject'", "coalesce(s.decision, 'unreviewed')"),
    "review_unreviewed": ("s.decision IS NULL", "coalesce(s.decision, 'unreviewed')"),
    "review_not_rejected": ("s.decision IS DISTINCT FROM 'reject'", "coalesce(s.decision, 'unreviewed')"),
    "min_chars": ("s.n_chars >= ?", "s.n_chars"),
    "max_chars": ("s.n_chars <= ?", "s.n_chars"),
    "judge_present": (_JUDGE + " IS NOT NULL", _JUDGE),
    "judge_min": (_JUDGE + " >= ?", _JUDGE),
    "judge_max": (_JUDGE + " <= ?", _JUDGE),
    # TAPIR keeps MFD > δ: difficulty minimums are strict, maximums inclusive.
    "mfd_present": ("s.mfd IS NOT NULL", "s.mfd"),
    "mfd_min": ("s.mfd > ?", "s.mfd"),
    "mfd_max": ("s.mfd <= ?", "s.mfd"),
    "ifd_present": ("s.ifd IS NOT NULL", "s.ifd"),
    "ifd_min": ("s.ifd > ?", "s.ifd"),
    "ifd_max": ("s.ifd <= ?", "s.ifd"),
}
_FIRST_RULE_WHEN = "WHEN NOT coalesce(({condition}), false) THEN ?"
_RULE_VALUE_WHEN = "WHEN ? THEN CAST(({value}) AS VARCHAR)"

# Samples per current task and first failed rule (NULL: kept): the live counts.
CURATE_COUNTS = """
SELECT coalesce(s.task, '(none)') AS task, {first_rule} AS rule, count(*) AS n FROM curate_values s GROUP BY ALL
"""
# Every sample with its first failed rule (NULL: kept) and the value that rule read, in the
# stable order; prefer_score: the judge that orders near-duplicate removal (number 0: none).
# Bind order: the rule values' CASE (outer), the first-rule CASE, that judge's number.
CURATE_FATES = """
SELECT s.*, {rule_value} AS value
FROM (SELECT s.*, {first_rule} AS rule, """ + _JUDGE + """ AS prefer_score FROM curate_values s) s
ORDER BY s.i_seq, s.r_seq
"""
# Where a sample id points: (instruction id, response id or NULL).
CURATE_RESOLVE_SAMPLE = """
SELECT id, NULL::VARCHAR FROM instructions WHERE id = ?
UNION ALL SELECT instruction_id, id FROM responses WHERE id = ?
LIMIT 1
"""
# What a sample outside a spec's pool is: its dataset and role never change, so "out: role
# teacher" stays true for a snapshot made long ago.
CURATE_SAMPLE_FACTS = """
SELECT i.id AS instruction_id, i.dataset_id, d.name AS dataset, r.id AS response_id, r.role,
       i.id IN (SELECT instruction_id FROM preference_pairs) AS has_pair
FROM instructions i JOIN datasets d ON d.id = i.dataset_id
LEFT JOIN responses r ON r.id = ?
WHERE i.id = ?
"""
# Instruction texts to embed for near-duplicate removal, read from a registered `wanted` (id).
CURATE_INSTRUCTION_TEXTS = """
SELECT i.id, i.text, i.input FROM instructions i WHERE i.id IN (SELECT id FROM wanted)
"""

# --------------------------------------------------------------------------------------------
# Snapshots
# --------------------------------------------------------------------------------------------

SELECT_SNAPSHOT = "SELECT * FROM snapshots WHERE name = ?"
SELECT_SNAPSHOTS = """
SELECT name, content_hash, spec->>'$.kind' AS kind, n_members, n_instructions, parquet_path, created_at
FROM snapshots ORDER BY created_at DESC, name
"""
INSERT_SNAPSHOT = """
INSERT INTO snapshots (name, content_hash, spec, n_members, n_instructions, parquet_path, stats)
VALUES (?, ?, ?, ?, ?, ?, ?)
"""
# Members come from a registered Arrow table `members` (position, instruction_id, response_id,
# task, weight, system_tag, copy).
INSERT_SNAPSHOT_MEMBERS = """
INSERT INTO snapshot_members (snapshot, position, instruction_id, response_id, task, weight, system_tag, copy)
SELECT ?, position, instruction_id, response_id, task, weight, system_tag, copy FROM members ORDER BY position
"""
SELECT_MEMBERS_PAGE = """
SELECT position, instruction_id, response_id, task, weight, system_tag, copy
FROM snapshot_members WHERE snapshot = ? ORDER BY position LIMIT ? OFFSET ?
"""
# One sample's member rows (its copies), by instruction and optionally response.
SELECT_MEMBER_ROWS = """
SELECT position, instruction_id, response_id, task, weight, system_tag, copy
FROM snapshot_members
WHERE snapshot = ? AND instruction_id = ? AND (?::VARCHAR IS NULL OR response_id = ?)
ORDER BY position
"""
# The training file's rows: members joined to their texts as they are now (at creation), a
# reviewer's latest edit replacing a response's text; the system prompt is the member's tag,
# else the instruction's own.
SELECT_MEMBER_TEXTS = """
SELECT m.position, m.instruction_id, m.response_id, m.task, m.weight, m.copy, m.system_tag,
       d.name AS dataset, r.role, i.text AS instruction, i.input, coalesce(m.system_tag, i.system) AS system,
       i.history, coalesce(e.edited_text, r.text) AS response
FROM members m
JOIN instructions i ON i.id = m.instruction_id
JOIN datasets d ON d.id = i.dataset_id
LEFT JOIN responses r ON r.id = m.response_id
LEFT JOIN latest_edits e ON e.target_id = r.id
ORDER BY m.position
"""
# A preference snapshot's file: every pair of each member instruction, in member order.
SELECT_MEMBER_PAIRS = """
SELECT m.position, m.instruction_id, p.id AS pair_id, p.chosen_id, p.rejected_id, m.task, m.weight, m.copy,
       m.system_tag, d.name AS dataset, i.text AS instruction, i.input,
       coalesce(m.system_tag, i.system) AS system, i.history,
       coalesce(ec.edited_text, c.text) AS chosen, coalesce(er.edited_text, rj.text) AS rejected
FROM members m
JOIN instructions i ON i.id = m.instruction_id
JOIN datasets d ON d.id = i.dataset_id
JOIN preference_pairs p ON p.instruction_id = m.instruction_id
JOIN responses c ON c.id = p.chosen_id
JOIN responses rj ON rj.id = p.rejected_id
LEFT JOIN latest_edits ec ON ec.target_id = c.id
LEFT JOIN latest_edits er ON er.target_id = rj.id
WHERE """ + _PAIR_FILTER + """
ORDER BY m.position, p.rowid
"""
# Two snapshots compared per sample (instruction, response): copies and weight on each side.
# Bind order: a, b.
_DIFF_SIDES = """
WITH a AS (
    SELECT instruction_id, response_id, any_value(task) AS task, count(*) AS copies, max(weight) AS weight
    FROM snapshot_members WHERE snapshot = ? GROUP BY instruction_id, response_id
), b AS (
    SELECT instruction_id, response_id, any_value(task) AS task, count(*) AS copies, max(weight) AS weight
    FROM snapshot_members WHERE snapshot = ? GROUP BY instruction_id, response_id
), both_sides AS (
    SELECT coalesce(a.instruction_id, b.instruction_id) AS instruction_id,
           coalesce(a.response_id, b.response_id) AS response_id,
           coalesce(a.task, b.task) AS task, a.copies AS copies_a, b.copies AS copies_b,
           a.weight AS weight_a, b.weight AS weight_b,
           CASE WHEN b.instruction_id IS NULL THEN 'only_a'
                WHEN a.instruction_id IS NULL THEN 'only_b'
                WHEN a.weight <> b.weight OR a.copies <> b.copies THEN 'changed'
                ELSE 'same' END AS change
    FROM a FULL OUTER JOIN b
      ON a.instruction_id = b.instruction_id AND a.response_id IS NOT DISTINCT FROM b.response_id
)
"""
SELECT_DIFF_COUNTS = _DIFF_SIDES + """
SELECT coalesce(task, '(none)') AS task,
       count(*) FILTER (WHERE change <> 'only_b') AS in_a,
       count(*) FILTER (WHERE change <> 'only_a') AS in_b,
       count(*) FILTER (WHERE change = 'only_a') AS only_a,
       count(*) FILTER (WHERE change = 'only_b') AS only_b,
       count(*) FILTER (WHERE change = 'changed') AS changed
FROM both_sides GROUP BY ALL ORDER BY task
"""
# Bind order: a, b, then (change, limit).
SELECT_DIFF_SAMPLES = _DIFF_SIDES + """
SELECT instruction_id, response_id, task, copies_a, copies_b, weight_a, weight_b
FROM both_sides WHERE change = ? ORDER BY instruction_id, response_id NULLS FIRST LIMIT ?
"""

# --------------------------------------------------------------------------------------------
# Rows for tests and bench/
# --------------------------------------------------------------------------------------------

INSERT_DIFFICULTY = """
INSERT OR REPLACE INTO difficulty (id, instruction_id, round, metric, source, value, missing)
VALUES (?, ?, ?, ?, ?, ?, ?)
"""
SELECT_DATASET_IDS = "SELECT name, id FROM datasets"

# A synthetic workspace for bench/bench_curate.py, made in SQL (a Python loop would take minutes):
# n instructions over 7 tasks, one seed response each, one pointwise_10 verdict per response (1 in
# 20 unparsed), one MFD per instruction. Bind: n (in each statement that takes it).
BENCH_FILL = [
    "INSERT INTO datasets (id, name, kind) VALUES ('bench', 'bench', 'pairs')",
    """
    INSERT INTO instructions (id, dataset_id, text, input, task, n_chars)
    SELECT 'i' || g, 'bench', 'instruction ' || g, '',
           (['math', 'reasoning', 'code_generation', 'open_qa', 'summarization', 'translation', 'rewriting'])[g % 7 + 1],
           20 + (g * 7919) % 400
    FROM range(?) t(g)
    """,
    """
    INSERT INTO responses (id, instruction_id, role, text, n_chars)
    SELECT 'r' || g, 'i' || g, 'seed', 'response ' || g, 30 + (g * 104729) % 900 FROM range(?) t(g)
    """,
    """
    INSERT INTO judgments (id, target_kind, target_id, judge_model, rubric, kind, score, scale_max, raw)
    SELECT 'j' || g, 'response', 'r' || g, 'bench-judge', 'pointwise_10', 'pointwise',
           CASE WHEN g % 20 = 0 THEN NULL ELSE 1 + (g * 48271) % 10 END, 10, ''
    FROM range(?) t(g)
    """,
    """
    INSERT INTO difficulty (id, instruction_id, round, metric, source, value)
    SELECT 'd' || g, 'i' || g, 0, 'mfd', 'bench-judge/pointwise_10', ((g * 69621) % 19) - 9.0 FROM range(?) t(g)
    """,
]
# The live count of bench/bench_curate.py as one hand-written statement (judge min and MFD > δ).
# Bind: judge_model, rubric, min score, δ.
BENCH_BARE_CURATE_COUNT = """
SELECT ct.task, count(*) AS n
FROM instructions i JOIN responses r ON r.instruction_id = i.id
JOIN current_tasks ct ON ct.instruction_id = i.id
JOIN (SELECT target_id, avg(score) AS score FROM judgments
      WHERE judge_model = ? AND rubric = ? AND score IS NOT NULL GROUP BY target_id) j ON j.target_id = r.id
JOIN (SELECT instruction_id, arg_max_null(value, round) AS mfd FROM difficulty WHERE metric = 'mfd'
      GROUP BY instruction_id) d ON d.instruction_id = i.id
WHERE r.role = 'seed' AND j.score >= ? AND d.mfd > ?
GROUP BY ct.task
"""


@dataclass(frozen=True)
class CurateRule:
    """One rule of a spec as the store runs it: a CURATE_RULES fragment and its bind values."""

    fragment: str
    values: tuple = ()
    value_args: tuple = ()  # bind values of the rule's value expression (the judge number)


@dataclass(frozen=True)
class CurateQuery:
    """What core.curate asks of the store: the pool, where values come from, and the rules in order."""

    pool: str = "sft"
    roles: tuple[str, ...] = ("seed",)
    dataset_ids: tuple[str, ...] = ()
    pair_methods: tuple[str, ...] = ()  # preference pool: only pairs made so (empty: any)
    pair_rounds: tuple[int, ...] = ()   # ... and of these rounds (empty: any)
    judges: tuple[tuple[str, str], ...] = ()  # judge number k = index + 1
    difficulty_round: int | None = None
    mfd_source: str | None = None
    ifd_source: str | None = None
    rules: tuple[CurateRule, ...] = field(default_factory=tuple)


class SnapshotQueries:
    """Mixed into core.store.Store; uses its _rows/_df/_dicts/transaction plumbing."""

    _curate_lock = threading.Lock()
    CURATE_CACHE_ENTRIES = 2  # value tables kept for live counts (~50 MB each at 1M samples)

    @staticmethod
    def _curate_arrow(cur, sql: str, params: list | None = None) -> pa.Table:
        # A relation, not a DB-API result: DuckDB 2.0 copies the rows once more for the latter.
        return cur.sql(sql, params=params or None).to_arrow_table()

    # -- step 1: values -----------------------------------------------------------------------

    def _curate_values_sql(self, template: str, q: CurateQuery, only: str | None) -> tuple[str, list]:
        if q.pool not in CURATE_POOLS:
            raise ValueError(f"pool must be one of {sorted(CURATE_POOLS)}, not {q.pool!r}")
        if len(q.judges) > MAX_JUDGES:
            raise ValueError(f"at most {MAX_JUDGES} judges per spec, not {len(q.judges)}")
        judges = [{"k": k, "judge_model": j, "rubric": r} for k, (j, r) in enumerate(q.judges, start=1)]
        datasets = list(q.dataset_ids)
        values = [judges, only, only, q.mfd_source, q.mfd_source, q.ifd_source, q.ifd_source,
                  q.difficulty_round, q.difficulty_round, only, only]
        values += ([list(q.roles)] if q.pool == "sft" else []) + [datasets, datasets]
        if q.pool == "preference":
            methods, rounds = list(q.pair_methods), [int(r) for r in q.pair_rounds]
            values += [methods, methods, rounds, rounds]
        values += [only, only]
        return template.replace("{pool}", CURATE_POOLS[q.pool]), values

    def curate_values(self, q: CurateQuery, instruction_id: str | None = None) -> pa.Table:
        """Every sample of the pool (or of one instruction) with the values the rules read."""
        return self._curate_arrow(self.cursor(), *self._curate_values_sql(CURATE_VALUES, q, instruction_id))

    def _curate_fingerprint(self) -> tuple:
        files = []
        for path in (self.path, self.path.with_name(self.path.name + ".wal")):
            try:
                stat = os.stat(path)
                files.append((stat.st_size, stat.st_mtime_ns))
            except FileNotFoundError:  # no WAL right after a checkpoint
                files.append(None)
        return tuple(files) + tuple(self._rows(statement)[0][0] for statement in CURATE_FINGERPRINT)

    def _curate_count_values(self, q: CurateQuery) -> pa.Table:
        """The values live counts read, cached per value source while the catalog is unchanged."""
        key = (q.pool, q.roles, q.dataset_ids, q.judges, q.difficulty_round, q.mfd_source, q.ifd_source)
        stamp = self._curate_fingerprint()
        with self._curate_lock:
            cache = self.__dict__.setdefault("_curate_cache", OrderedDict())
            hit = cache.get(key)
            if hit is not None and hit[0] == stamp:
                cache.move_to_end(key)
                return hit[1]
        table = self._curate_arrow(self.cursor(), *self._curate_values_sql(CURATE_COUNT_VALUES, q, None))
        with self._curate_lock:
            cache[key] = (stamp, table)
            cache.move_to_end(key)
            while len(cache) > self.CURATE_CACHE_ENTRIES:
                cache.popitem(last=False)
        return table

    # -- step 2: rules ------------------------------------------------------------------------

    @staticmethod
    def _curate_rules_sql(template: str, q: CurateQuery) -> tuple[str, list]:
        """The template with the first-rule expression (and the rule value) filled in, and its
        bind values in text order: the rule value's CASE comes before the first-rule one."""
        whens, values = [], []
        for k, rule in enumerate(q.rules):
            whens.append(_FIRST_RULE_WHEN.format(condition=CURATE_RULES[rule.fragment][0]))
            values += list(rule.values) + [k]
        first_rule = ("CASE " + " ".join(whens) + " END") if whens else "NULL::INTEGER"
        value_whens, value_values = [], []
        for k, rule in enumerate(q.rules):
            value_whens.append(_RULE_VALUE_WHEN.format(value=CURATE_RULES[rule.fragment][1]))
            value_values += [k] + list(rule.value_args)
        rule_value = ("CASE s.rule " + " ".join(value_whens) + " END") if value_whens else "NULL::VARCHAR"
        sql = template.replace("{first_rule}", first_rule).replace("{rule_value}", rule_value)
        if "{rule_value}" in template:
            values = value_values + values
        return sql, values

    def _curate_over(self, table: pa.Table, sql: str, values: list) -> pa.Table:
        cur = self.cursor()
        cur.register("curate_values", table)
        try:
            return self._curate_arrow(cur, sql, values)
        finally:
            cur.unregister("curate_values")

    def curate_counts(self, q: CurateQuery) -> list[tuple[str, int | None, int]]:
        """(task, first failed rule or None, samples): the live counts, one aggregate."""
        sql, values = self._curate_rules_sql(CURATE_COUNTS, q)
        counts = self._curate_over(self._curate_count_values(q), sql, values)
        return [(t, None if r is None else int(r), int(n))
                for t, r, n in zip(*(counts.column(c).to_pylist() for c in ("task", "rule", "n")), strict=True)]

    def curate_fates(self, q: CurateQuery, prefer_judge: int = 0, instruction_id: str | None = None) -> pa.Table:
        """Every sample of the pool (or of one instruction) with its fate, in the stable order,
        read fresh (never from the live-count cache): what a snapshot and "why out" use."""
        sql, values = self._curate_rules_sql(CURATE_FATES, q)
        return self._curate_over(self.curate_values(q, instruction_id), sql, values + [int(prefer_judge)])

    def curate_resolve_sample(self, sample_id: str) -> tuple[str, str | None] | None:
        rows = self._rows(CURATE_RESOLVE_SAMPLE, [sample_id, sample_id])
        return (rows[0][0], rows[0][1]) if rows else None

    def curate_sample_facts(self, instruction_id: str, response_id: str | None) -> dict | None:
        rows = self._dicts(CURATE_SAMPLE_FACTS, [response_id, instruction_id])
        return rows[0] if rows else None

    def curate_instruction_texts(self, instruction_ids: list[str]) -> pa.Table:
        cur = self.cursor()
        cur.register("wanted", pa.table({"id": pa.array(list(instruction_ids), pa.string())}))
        try:
            return self._curate_arrow(cur, CURATE_INSTRUCTION_TEXTS)
        finally:
            cur.unregister("wanted")

    def curate_dataset_ids(self) -> dict[str, str]:
        """Dataset name -> id."""
        return dict(self._rows(SELECT_DATASET_IDS))

    # -- snapshots ----------------------------------------------------------------------------

    def snapshot_row(self, name: str) -> dict | None:
        rows = self._dicts(SELECT_SNAPSHOT, [name])
        return rows[0] if rows else None

    def snapshot_rows(self) -> list[dict]:
        return self._dicts(SELECT_SNAPSHOTS)

    def snapshot_member_texts(self, members: pa.Table, pairs: bool = False, pair_methods=(),
                              pair_rounds=()) -> pa.Table:
        """The training file's rows for these members (texts as they are now); with pairs, the
        members' preference pairs that pass the pair filter."""
        cur = self.cursor()
        cur.register("members", members)
        try:
            if pairs:
                methods, rounds = list(pair_methods), [int(r) for r in pair_rounds]
                return self._curate_arrow(cur, SELECT_MEMBER_PAIRS, [methods, methods, rounds, rounds])
            return self._curate_arrow(cur, SELECT_MEMBER_TEXTS)
        finally:
            cur.unregister("members")

    def insert_snapshot(self, values: list, members: pa.Table, before_commit=None) -> None:
        """values: name, content_hash, spec JSON, n_members, n_instructions, parquet_path, stats JSON.
        `before_commit` runs last inside the transaction (the Parquet file's rename), so a failure
        there leaves no snapshot row behind."""
        with self.transaction() as cur:
            cur.execute(INSERT_SNAPSHOT, values)
            cur.register("members", members)
            try:
                cur.execute(INSERT_SNAPSHOT_MEMBERS, [values[0]])
            finally:
                cur.unregister("members")
            if before_commit is not None:
                before_commit()

    def snapshot_members_page(self, name: str, limit: int, offset: int):
        return self._df(SELECT_MEMBERS_PAGE, [name, int(limit), int(max(offset, 0))])

    def snapshot_member_rows(self, name: str, instruction_id: str, response_id: str | None) -> list[dict]:
        return self._dicts(SELECT_MEMBER_ROWS, [name, instruction_id, response_id, response_id])

    def snapshot_diff_counts(self, a: str, b: str):
        return self._df(SELECT_DIFF_COUNTS, [a, b])

    def snapshot_diff_samples(self, a: str, b: str, change: str, limit: int):
        return self._df(SELECT_DIFF_SAMPLES, [a, b, change, int(limit)])

    # -- rows for tests and bench/ ------------------------------------------------------------

    def curate_insert_difficulty(self, rows: list[dict]) -> None:
        """Difficulty rows (id, instruction_id, round, metric, source, value, missing); same id replaces."""
        with self.transaction() as cur:
            for r in rows:
                cur.execute(INSERT_DIFFICULTY, [r["id"], r["instruction_id"], int(r.get("round", 0)), r["metric"],
                                                r["source"], r.get("value"), r.get("missing")])

    def curate_bench_fill(self, n: int) -> None:
        with self.transaction() as cur:
            for statement in BENCH_FILL:
                cur.execute(statement, [int(n)] if "?" in statement else [])

    def curate_bench_bare_count(self, judge_model: str, rubric: str, min_score: float, delta: float) -> list:
        return self._rows(BENCH_BARE_CURATE_COUNT, [judge_model, rubric, float(min_score), float(delta)])
