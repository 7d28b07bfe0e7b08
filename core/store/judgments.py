"""Judges, calibration labels, score histograms, flips, bin samples and judge inputs (JudgmentQueries)."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

from core.selection import ExploreFilter

# --------------------------------------------------------------------------------------------
# Judgments and calibration
# --------------------------------------------------------------------------------------------

# Judgment rows go in through INSERT_JUDGMENTS (with the other batch inserts, core.store.imports).
SELECT_JUDGES = """
SELECT judge_model, rubric, kind, count(*) AS judgments, count(parse_error) AS unparsed,
       count(call_error) AS call_errors, count(DISTINCT target_id) AS targets, max(created_at) AS last_judged
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
SELECT count(*) AS judgments, count(parse_error) AS unparsed, count(call_error) AS call_errors,
       avg(score) AS mean_score
FROM judgments WHERE judge_model = ? AND rubric = ?
"""
# Unlabeled targets nearest the threshold (kept side first on ties, then id). `kept` follows the
# rubric's direction: score >= t, or score <= t where lower is better (listwise ranks).
# Bind order: judge_model, rubric, threshold, higher_is_better, threshold, threshold, limit.
SELECT_REVIEW_CANDIDATES = _JUDGE_TARGETS + """
SELECT target_id, score, abs(score - ?) AS distance, CASE WHEN ? THEN score >= ? ELSE score <= ? END AS kept
FROM labeled WHERE decision IS NULL AND score IS NOT NULL
ORDER BY distance, kept DESC, target_id
LIMIT ?
"""
# Pairs judged in both orders (both parsed) in a round and mode, and how many changed side with
# the order. score is the preference for the original A (1 A, 0.5 tie, 0 B; continuous in
# probability mode), so a flip is two orders on different sides of 0.5.
SELECT_PAIRWISE_FLIPS = """
SELECT count(*) AS pairs, count(*) FILTER (WHERE n_sides > 1) AS flipped
FROM (
    SELECT target_id, round, mode, count(DISTINCT sign(score - 0.5)) AS n_sides
    FROM judgments
    WHERE judge_model = ? AND rubric = ? AND kind = 'pairwise' AND score IS NOT NULL
    GROUP BY target_id, round, mode
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
# What judge jobs read
# --------------------------------------------------------------------------------------------

# The responses a judge job scores: those of the given roles, for the selected instructions.
SELECT_RESPONSES_FOR_JUDGE = """
SELECT r.id AS response_id, i.text AS instruction, i.input, r.text AS response
FROM instructions i JOIN responses r ON r.instruction_id = i.id
WHERE {where} AND list_contains(?, r.role)
  -- unjudged only: no verdict of this judge and rubric (and mode, when given) whose call went
  -- through (a failed call is asked again; a prompt too long for the judge is not)
  AND (?::VARCHAR IS NULL OR r.id NOT IN (SELECT target_id FROM judgments
                                          WHERE target_kind = 'response' AND judge_model = ? AND rubric = ?
                                            AND (call_error IS NULL OR starts_with(call_error, 'too_long:'))
                                            AND (?::VARCHAR IS NULL OR mode = ?)))
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


class JudgmentQueries:
    """Mixed into core.store.Store; uses the BaseStore plumbing (_rows/_df/_dicts/transaction)."""

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

    def judge_review_candidates(self, judge_model: str, rubric: str, threshold: float, k: int,
                                higher_is_better: bool = True) -> pd.DataFrame:
        t = float(threshold)
        return self._df(SELECT_REVIEW_CANDIDATES, [judge_model, rubric, t, bool(higher_is_better), t, t, int(k)])

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

    # -- judge job inputs ---------------------------------------------------------------------

    def responses_for_judge(self, f: ExploreFilter, roles: list[str], limit: int,
                            unjudged_by: tuple[str, str, str | None] | None = None) -> list[dict]:
        """unjudged_by: (judge model, rubric, mode or None): only responses without a verdict of
        that judge (the same rule as responses_missing_verdicts, so a round's check and its job agree)."""
        where, values = self.explore_where(f)
        judge_model, rubric, mode = unjudged_by or (None, None, None)
        return self._dicts(SELECT_RESPONSES_FOR_JUDGE.format(where=where),
                           values + [list(roles), judge_model, judge_model, rubric, mode, mode, int(limit)])

    def pairs_for_judge(self, f: ExploreFilter, role_a: str, role_b: str, limit: int) -> list[dict]:
        where, values = self.explore_where(f)
        return self._dicts(SELECT_PAIRS_FOR_JUDGE.format(where=where), values + [role_a, role_b, int(limit)])

    def lists_for_judge(self, f: ExploreFilter, roles: list[str], limit: int) -> list[dict]:
        where, values = self.explore_where(f)
        return self._dicts(SELECT_LISTS_FOR_JUDGE.format(where=where), values + [list(roles), int(limit)])
