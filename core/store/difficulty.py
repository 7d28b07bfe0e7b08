"""SQL for difficulty (MFD, IFD): see core.difficulty.

The `difficulty` table (migration 0008) holds one row per (instruction, round, metric, source):
id = content_id(instruction_id, str(round), metric, source), the same hash as core.ids computes,
written here in SQL. A NULL value always carries its reason in `missing`.

Selections: the statements that take an ExploreFilter start from the same instructions a job
would (the filter's WHERE from Store.explore_where, oldest first, at most `limit`), so the
difficulty chain and its MFD cover exactly the instructions its jobs answered.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

from core.selection import ExploreFilter

# "No limit" for the LIMIT of a selection (DuckDB needs an integer there).
NO_LIMIT = 2**62

# The id of a difficulty row in SQL: core.ids.content_id(instruction_id, str(round), metric, source).
_DIFFICULTY_ID = "left(sha256(concat_ws(chr(31), {iid}, CAST({round} AS VARCHAR), {metric}, {source})), 24)"
# Writing rows replaces the rows of the same id. In place: the id fixes instruction, round, metric
# and source, so only unindexed columns change. Measured at 300k rows on DuckDB 2.0: this upsert
# takes 0.4 s over existing rows, while DELETE + INSERT took 50 s and INSERT OR REPLACE longer
# (both delete from the ART indexes, which is pathologically slow on this table).
_UPSERT = """
ON CONFLICT (id) DO UPDATE SET value = excluded.value, teacher_response_id = excluded.teacher_response_id,
    student_response_id = excluded.student_response_id, teacher_score = excluded.teacher_score,
    student_score = excluded.student_score, missing = excluded.missing, meta = excluded.meta, created_at = now()
"""

# --------------------------------------------------------------------------------------------
# MFD: judge(teacher answer) - judge(student answer), from one judge's stored verdicts
# --------------------------------------------------------------------------------------------

# Step 1 (positional binds: the selection's values, then limit): the instructions to compute,
# materialised so the main statement can use named parameters.
MFD_SELECT_INSTRUCTIONS = """
CREATE OR REPLACE TEMP TABLE mfd_instructions AS
SELECT i.id FROM instructions i WHERE {where} ORDER BY i.rowid LIMIT ?
"""
# Step 2 (named binds): one row per selected instruction.
#  - answers: the responses of the two roles in the round, each with its verdicts' summary: the
#    mean of its parsed verdicts (repeated ratings average, as everywhere else), how many verdicts
#    it has and how many of those were failed calls.
#  - sides: ONE grouping per instruction, the teacher's and the student's aggregates side by side
#    (FILTER per side): a role's score is the mean of its answers' scores over the answers that
#    have one. One pass, not a grouping per role joined twice; one integer-keyed arg_min per
#    side; and the lists and JSON only where needed: together 17 s -> 1.5 s at 300k instructions.
#  - averaged / meta: which answers a side averaged, only where it averaged several (rare);
#    otherwise teacher_response_id / student_response_id say which answer it was, meta is NULL.
# The side (teacher/student) names the reason, not the role name, so reasons are stable
# categories the pages can count.
_SIDE = """
           count(*) FILTER (a.{side}) AS {p}_answers,
           count(a.n_verdicts) FILTER (a.{side}) AS {p}_judged,
           count(a.score) FILTER (a.{side}) AS {p}_scored,
           coalesce(sum(a.n_verdicts) FILTER (a.{side}), 0) AS {p}_verdicts,
           avg(a.score) FILTER (a.{side}) AS {p}_score,
           arg_min(a.id, a.pick) FILTER (a.{side}) AS {p}_response_id,
           bool_and(a.n_call_errors = a.n_verdicts) FILTER (a.{side} AND a.n_verdicts IS NOT NULL) AS {p}_only_calls"""
_ROLE_REASON = """CASE
        WHEN coalesce({p}_answers, 0) = 0 THEN 'no {side} answer'
        WHEN {p}_scored > 0 THEN NULL
        WHEN {p}_judged = 0 THEN '{side} answer not judged'
        WHEN {p}_only_calls THEN '{side} judge call failed'
        ELSE '{side} verdict unparsed' END"""
MFD_COMPUTE = """
CREATE OR REPLACE TEMP TABLE mfd_computed AS
WITH verdicts AS (
    SELECT j.target_id, count(*) AS n_verdicts, count(j.call_error) AS n_call_errors, avg(j.score) AS score
    FROM judgments j
    WHERE j.target_kind = 'response' AND j.judge_model = $judge_model AND j.rubric = $rubric
      AND ($template_hash::VARCHAR IS NULL OR j.template_hash = $template_hash)
      AND ($mode::VARCHAR IS NULL OR j.mode = $mode)
    GROUP BY j.target_id
), answers AS MATERIALIZED (
    -- pick: the answer a row names is the oldest scored one, else the oldest (one integer key,
    -- so one arg_min per side).
    SELECT r.id, r.instruction_id, r.rowid + CASE WHEN v.score IS NULL THEN 4611686018427387904 ELSE 0 END AS pick,
           r.role = $teacher_role AS teacher, r.role = $student_role AS student, v.n_verdicts, v.n_call_errors,
           v.score
    FROM responses r LEFT JOIN verdicts v ON v.target_id = r.id
    WHERE r.instruction_id IN (SELECT id FROM mfd_instructions)
      -- the teacher's answers may come from another round (a round reuses the answers the
      -- teacher gave once; its student answers anew each round)
      AND ((r.role = $teacher_role AND r.round = $teacher_round) OR (r.role = $student_role AND r.round = $round))
), sides AS (
    SELECT a.instruction_id,""" + _SIDE.format(side="teacher", p="t") + ",\n" + _SIDE.format(side="student", p="s") + """
    FROM answers a GROUP BY a.instruction_id
), reasons AS (
    SELECT s.id AS instruction_id, d.*,
           CASE WHEN coalesce(d.t_answers, 0) = 0 AND coalesce(d.s_answers, 0) = 0 THEN 'no teacher or student answer'
                ELSE coalesce(""" + _ROLE_REASON.format(p="d.t", side="teacher") + """,
                              """ + _ROLE_REASON.format(p="d.s", side="student") + """) END AS missing
    FROM mfd_instructions s LEFT JOIN sides d ON d.instruction_id = s.id
), averaged AS (  -- which answers a side averaged, where it averaged several (rare: a small pass)
    SELECT a.instruction_id,
           list_sort(list(a.id) FILTER (a.teacher AND a.score IS NOT NULL)) AS t_scored_ids,
           list_sort(list(a.id) FILTER (a.student AND a.score IS NOT NULL)) AS s_scored_ids
    FROM answers a
    WHERE a.instruction_id IN (SELECT instruction_id FROM sides WHERE t_scored > 1 OR s_scored > 1)
    GROUP BY a.instruction_id
)
SELECT """ + _DIFFICULTY_ID.format(iid="instruction_id", round="$round::INTEGER", metric="'mfd'",
                                   source="$source::VARCHAR") + """ AS id,
       instruction_id, $round::INTEGER AS round, 'mfd' AS metric, $source::VARCHAR AS source,
       CASE WHEN missing IS NULL THEN t_score - s_score END AS value,
       t_response_id AS teacher_response_id, s_response_id AS student_response_id,
       t_score AS teacher_score, s_score AS student_score, missing,
       CASE WHEN t_scored > 1 OR s_scored > 1 THEN json_object(
           'teacher_response_ids', t_scored_ids, 'student_response_ids', s_scored_ids,
           'teacher_answers', t_answers, 'student_answers', s_answers,
           'teacher_verdicts', t_verdicts, 'student_verdicts', s_verdicts) END AS meta
FROM reasons LEFT JOIN averaged USING (instruction_id)
"""
# Step 3: write them, replacing earlier rows of the same ids, in the same transaction as step 2.
MFD_WRITE = "INSERT INTO difficulty BY NAME SELECT * FROM mfd_computed" + _UPSERT
MFD_COUNTS = "SELECT missing, count(*) AS n FROM mfd_computed GROUP BY missing ORDER BY missing NULLS FIRST"
MFD_DROP = ["DROP TABLE IF EXISTS mfd_computed", "DROP TABLE IF EXISTS mfd_instructions"]

# --------------------------------------------------------------------------------------------
# IFD: the scoring job's input, and ingesting its shards
# --------------------------------------------------------------------------------------------

# One answer per instruction and round (the oldest of the role): a difficulty row is per
# instruction, round and source, so a second answer would collide with the first. Instructions
# that already have a value from this source in that round are skipped (NULL rows are retried).
# Bind order: role, (the selection's values), source, limit.
SELECT_RESPONSES_FOR_IFD = """
WITH picked AS (
    SELECT r.instruction_id, r.round, arg_min(r.id, r.rowid) AS response_id
    FROM responses r WHERE r.role = ? GROUP BY r.instruction_id, r.round
)
SELECT i.id AS instruction_id, r.id AS response_id, r.round, i.text, i.input, i.system, i.history,
       r.text AS response
FROM instructions i JOIN picked p ON p.instruction_id = i.id JOIN responses r ON r.id = p.response_id
WHERE {where}
  AND (i.id, r.round) NOT IN (SELECT instruction_id, round FROM difficulty
                              WHERE metric = 'ifd' AND source = ? AND value IS NOT NULL)
ORDER BY i.rowid, r.round
LIMIT ?
"""
# A scoring shard's rows (registered as `batch`) replace earlier rows of the same ids.
INSERT_DIFFICULTY = "INSERT INTO difficulty BY NAME SELECT * FROM batch" + _UPSERT

# --------------------------------------------------------------------------------------------
# What the difficulty chain still has to do
# --------------------------------------------------------------------------------------------

_CHAIN_SELECTED = "SELECT i.id, i.rowid AS seq FROM instructions i WHERE {where} ORDER BY i.rowid LIMIT ?"
# Selected instructions without an answer of this role from this model in the round.
# Bind order: (the selection's values), limit, role, model, round.
SELECT_INSTRUCTIONS_MISSING_ANSWERS = """
WITH sel AS (""" + _CHAIN_SELECTED + """)
SELECT i.id, i.text, i.input, i.system, i.history
FROM sel JOIN instructions i ON i.id = sel.id
WHERE sel.id NOT IN (SELECT instruction_id FROM responses WHERE role = ? AND model = ? AND round = ?)
ORDER BY sel.seq
"""
# Answers of these roles in the round, to the selected instructions, that this judge has no
# verdict on. A failed call (call_error "error: ...", e.g. a server error) is not a verdict: it is
# asked again. A prompt too long for the judge ("too_long: ...") would fail the same way again,
# so it counts as done (MFD reports it as a failed call).
# Bind order: (the selection's values), limit, roles, round, judge_model, rubric, mode, mode.
SELECT_RESPONSES_MISSING_VERDICTS = """
WITH sel AS (""" + _CHAIN_SELECTED + """)
SELECT r.id AS response_id, i.text AS instruction, i.input, r.text AS response
FROM sel JOIN instructions i ON i.id = sel.id JOIN responses r ON r.instruction_id = sel.id
WHERE list_contains(?, r.role) AND r.round = ?
  AND r.id NOT IN (SELECT target_id FROM judgments
                   WHERE judge_model = ? AND rubric = ?
                     AND (call_error IS NULL OR starts_with(call_error, 'too_long:'))
                     AND (?::VARCHAR IS NULL OR mode = ?))
ORDER BY sel.seq, r.rowid
"""

# How many answers of these roles (any round) the selected instructions have: the judge stage
# takes answers in this order, so this many is exactly theirs.
# Bind order: (the selection's values), limit, roles.
COUNT_ANSWERS = """
WITH sel AS (""" + _CHAIN_SELECTED + """)
SELECT count(*) FROM sel JOIN responses r ON r.instruction_id = sel.id WHERE list_contains(?, r.role)
"""

# --------------------------------------------------------------------------------------------
# Summaries for pages (small results; aggregates over one metric, source and round)
# --------------------------------------------------------------------------------------------

SELECT_DIFFICULTY_SOURCES = """
SELECT metric, source, round, count(*) AS rows, count(value) AS valued, min(value) AS min_value,
       max(value) AS max_value, max(created_at) AS computed_at
FROM difficulty GROUP BY ALL ORDER BY metric, source, round
"""
# bin_start NULL counts the rows with no value. Bind order: bin width, bin width, metric, source, round.
SELECT_DIFFICULTY_HISTOGRAM = """
SELECT floor(value / ?) * ? AS bin_start, count(*) AS n
FROM difficulty WHERE metric = ? AND source = ? AND round = ?
GROUP BY ALL ORDER BY bin_start NULLS LAST
"""
SELECT_DIFFICULTY_MISSING = """
SELECT missing, count(*) AS n FROM difficulty
WHERE metric = ? AND source = ? AND round = ? AND value IS NULL
GROUP BY ALL ORDER BY n DESC, missing
"""
# TAPIR keeps MFD > δ. Per current task: kept, valued (has a value) and all rows. The task comes
# from the current_tasks view (human relabel, else imported, else the model's label).
# Bind order: delta, metric, source, round.
SELECT_KEPT_PER_TASK = """
SELECT coalesce(t.task, '(none)') AS task, count(*) FILTER (WHERE d.value > ?) AS kept,
       count(d.value) AS valued, count(*) AS rows
FROM difficulty d LEFT JOIN current_tasks t ON t.instruction_id = d.instruction_id
WHERE d.metric = ? AND d.source = ? AND d.round = ?
GROUP BY ALL ORDER BY kept DESC, task
"""
# Instructions with a value of both metrics (MFD from one source, IFD from another) in a round.
# Bind order: mfd source, round, ifd source.
SELECT_DIFFICULTY_PAIRS = """
SELECT m.instruction_id, m.value AS mfd, f.value AS ifd
FROM difficulty m JOIN difficulty f ON f.instruction_id = m.instruction_id AND f.round = m.round
WHERE m.metric = 'mfd' AND m.source = ? AND m.round = ? AND m.value IS NOT NULL
  AND f.metric = 'ifd' AND f.source = ? AND f.value IS NOT NULL
ORDER BY m.instruction_id
"""
SELECT_DIFFICULTY_ROWS = """
SELECT * FROM difficulty WHERE metric = ? AND source = ? AND round = ? ORDER BY instruction_id
"""


class DifficultyQueries:
    """Mixed into core.store.Store; uses its _rows/_df/_dicts/transaction plumbing."""

    # -- MFD ----------------------------------------------------------------------------------

    def compute_mfd(self, f: ExploreFilter, limit: int | None, *, judge_model: str, rubric: str,
                    teacher_role: str, student_role: str, round: int, source: str,
                    template_hash: str | None = None, mode: str | None = None,
                    teacher_round: int | None = None) -> dict[str | None, int]:
        """Compute MFD for the selected instructions and replace their rows, in one transaction.
        Returns {missing reason (None = computed): rows}."""
        where, values = self.explore_where(f)
        named = {"round": int(round), "teacher_round": int(round if teacher_round is None else teacher_round),
                 "teacher_role": teacher_role, "student_role": student_role,
                 "judge_model": judge_model, "rubric": rubric, "template_hash": template_hash, "mode": mode,
                 "source": source}
        with self.transaction() as cur:
            try:
                cur.execute(MFD_SELECT_INSTRUCTIONS.format(where=where), values + [_limit(limit)])
                cur.execute(MFD_COMPUTE, named)
                cur.execute(MFD_WRITE)
                return {reason: int(n) for reason, n in cur.execute(MFD_COUNTS).fetchall()}
            finally:
                for statement in MFD_DROP:
                    cur.execute(statement)

    # -- IFD ----------------------------------------------------------------------------------

    def responses_for_ifd(self, f: ExploreFilter, role: str, source: str, limit: int | None) -> list[dict]:
        where, values = self.explore_where(f)
        return self._dicts(SELECT_RESPONSES_FOR_IFD.format(where=where), [role] + values + [source, _limit(limit)])

    def insert_difficulty(self, cur, batch: pa.Table) -> int:
        """Write difficulty rows in the caller's transaction, replacing rows with the same id;
        returns the rows written (core.store routes the `difficulty` table of a stage here)."""
        if batch.num_rows == 0:
            return 0
        cur.register("batch", batch)
        try:
            return int(cur.execute(INSERT_DIFFICULTY).fetchall()[0][0])
        finally:
            cur.unregister("batch")

    # -- the difficulty chain -----------------------------------------------------------------

    def instructions_missing_answers(self, f: ExploreFilter, limit: int | None, role: str, model: str,
                                     round: int) -> list[dict]:
        where, values = self.explore_where(f)
        sql = SELECT_INSTRUCTIONS_MISSING_ANSWERS.format(where=where)
        return self._dicts(sql, values + [_limit(limit), role, model, int(round)])

    def responses_missing_verdicts(self, f: ExploreFilter, limit: int | None, roles: list[str], round: int,
                                   judge_model: str, rubric: str, mode: str | None = None) -> list[dict]:
        where, values = self.explore_where(f)
        sql = SELECT_RESPONSES_MISSING_VERDICTS.format(where=where)
        return self._dicts(sql, values + [_limit(limit), list(roles), int(round), judge_model, rubric, mode, mode])

    def count_answers(self, f: ExploreFilter, limit: int | None, roles: list[str]) -> int:
        where, values = self.explore_where(f)
        return int(self._rows(COUNT_ANSWERS.format(where=where), values + [_limit(limit), list(roles)])[0][0])

    # -- summaries ----------------------------------------------------------------------------

    def difficulty_sources(self) -> pd.DataFrame:
        """Every (metric, source, round) computed, with row and value counts."""
        return self._df(SELECT_DIFFICULTY_SOURCES)

    def difficulty_histogram(self, metric: str, source: str, round: int, bin_width: float) -> pd.DataFrame:
        w = float(bin_width)
        return self._df(SELECT_DIFFICULTY_HISTOGRAM, [w, w, metric, source, int(round)])

    def difficulty_missing(self, metric: str, source: str, round: int) -> pd.DataFrame:
        return self._df(SELECT_DIFFICULTY_MISSING, [metric, source, int(round)])

    def difficulty_kept_per_task(self, metric: str, source: str, round: int, delta: float) -> pd.DataFrame:
        return self._df(SELECT_KEPT_PER_TASK, [float(delta), metric, source, int(round)])

    def difficulty_pairs(self, mfd_source: str, ifd_source: str, round: int) -> dict:
        """(instruction_id, mfd, ifd) as numpy arrays, for the instructions that have both."""
        cur = self.cursor().execute(SELECT_DIFFICULTY_PAIRS, [mfd_source, int(round), ifd_source])
        return cur.fetchnumpy()

    def difficulty_rows(self, metric: str, source: str, round: int) -> list[dict]:
        return self._dicts(SELECT_DIFFICULTY_ROWS, [metric, source, int(round)])


def _limit(limit: int | None) -> int:
    return NO_LIMIT if limit is None else int(limit)
