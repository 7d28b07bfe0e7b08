"""SQL for Zephyr's AI feedback binarisation: see core.feedback.

Stored aspect ratings (the judge stage's `zephyr_aspects.<aspect>` rows) become preference pairs
with their lineage, in three steps over temp tables, all in the caller's one transaction:

1. `FEEDBACK_SELECT_INSTRUCTIONS` (positional binds): the selected instructions, oldest first.
2. `FEEDBACK_ANSWERS` (named binds): one row per answer of the pool's roles in the round, with
   the mean of its four aspect scores (NULL unless every aspect has a parsed score; the reason
   in `missing`), its ratings as JSON and its draw key.
3. `FEEDBACK_PAIRS`: one row per selected instruction: the pair, or why none (`dropped`).

Then `FEEDBACK_WRITE_*` insert what is not there yet (ids are content hashes: a re-run adds
nothing and replaces nothing). The ids and draw keys are core.ids.content_id written in SQL
(`left(sha256(concat_ws(chr(31), ...)), 24)`), so core.feedback computes the same in Python.
"""

from __future__ import annotations

import json
import re

from core.selection import ExploreFilter

# The table is migration 0012_pair_feedback (core/migrations.py).

# "No limit" for the LIMIT of a selection (DuckDB needs an integer there).
NO_LIMIT = 2**62

# The rejected answer is drawn by the smallest key among the candidates: a seeded uniform choice
# that needs no ordering of the answers and that SQL and Python compute alike.
# core.feedback.draw_key(seed, instruction_id, response_id).
_DRAW_KEY = "left(sha256(concat_ws(chr(31), 'binarise', CAST({seed} AS VARCHAR), {iid}, {rid})), 24)"
# core.feedback.pair_id(instruction_id, chosen_id, rejected_id, judge_model, rubric, template_hash, round).
_PAIR_ID = ("left(sha256(concat_ws(chr(31), 'ai_feedback', {iid}, {chosen}, {rejected}, $judge_model, $rubric, "
            "$template_hash, CAST($round AS VARCHAR))), 24)")
# Means are compared for ties, so both paths round them alike (repeated verdicts average, and two
# summation orders may differ in the last bit).
MEAN_DECIMALS = 9

FEEDBACK_SELECT_INSTRUCTIONS = """
CREATE OR REPLACE TEMP TABLE feedback_instructions AS
SELECT i.id, i.rowid AS seq FROM instructions i WHERE {where} ORDER BY i.rowid LIMIT ?
"""
# Which answers: each role's in its round ("role\x1fround" keys: a static pool model answers once,
# the student anew each round). Per answer: each aspect's score is the mean of its parsed verdicts (repeated ratings average, as
# everywhere else), with the ids of those verdicts (their rows hold the rationales). An answer is
# rated when every aspect has a score; otherwise `missing` says why: no verdict of this judge and
# template at all, only failed calls, or an aspect without a parsed score.
FEEDBACK_ANSWERS = """
CREATE OR REPLACE TEMP TABLE feedback_answers AS
WITH answers AS (
    SELECT r.id, r.instruction_id, r.rowid AS seq
    FROM responses r
    WHERE r.instruction_id IN (SELECT id FROM feedback_instructions)
      AND list_contains($role_rounds::VARCHAR[], concat_ws(chr(31), r.role, CAST(r.round AS VARCHAR)))
), per_aspect AS (
    SELECT j.target_id, j.rubric, avg(j.score) AS score, count(*) AS n_verdicts,
           count(j.call_error) AS n_call_errors,
           list_sort(list(j.id) FILTER (WHERE j.score IS NOT NULL)) AS judgment_ids
    FROM judgments j
    WHERE j.target_kind = 'response' AND j.judge_model = $judge_model
      AND list_contains($aspect_rubrics::VARCHAR[], j.rubric) AND j.template_hash = $template_hash
      AND j.target_id IN (SELECT id FROM answers)
    GROUP BY j.target_id, j.rubric
), per_answer AS (
    SELECT target_id, count(score) AS n_scored, sum(n_verdicts) AS n_verdicts,
           sum(n_call_errors) AS n_call_errors, round(avg(score), """ + str(MEAN_DECIMALS) + """) AS mean,
           to_json(map(list(substr(rubric, length($rubric) + 2) ORDER BY rubric),
                       list(json_object('score', score, 'judgments', judgment_ids) ORDER BY rubric))) AS aspects
    FROM per_aspect GROUP BY target_id
)
SELECT a.id AS response_id, a.instruction_id, a.seq,
       CASE WHEN p.target_id IS NULL THEN 'not judged'
            WHEN p.n_scored = len($aspect_rubrics::VARCHAR[]) THEN NULL
            WHEN p.n_call_errors = p.n_verdicts THEN 'judge call failed'
            ELSE 'aspect unparsed' END AS missing,
       CASE WHEN p.n_scored = len($aspect_rubrics::VARCHAR[]) THEN p.mean END AS mean,
       p.aspects,
       """ + _DRAW_KEY.format(seed="$seed", iid="a.instruction_id", rid="a.id") + """ AS draw
FROM answers a LEFT JOIN per_answer p ON p.target_id = a.id
"""
# Per instruction: chosen = the highest mean (dropped when two or more share it); rejected = the
# candidate with the smallest draw key among those strictly lower by at least min_margin (a random
# lower answer, not the worst: Zephyr, arXiv 2310.16944).
FEEDBACK_PAIRS = """
CREATE OR REPLACE TEMP TABLE feedback_pairs AS
WITH rated AS (
    SELECT *, max(mean) OVER (PARTITION BY instruction_id) AS top
    FROM feedback_answers WHERE mean IS NOT NULL
), outcome AS (
    SELECT instruction_id, count(*) AS n_rated, any_value(top) AS chosen_score,
           count(*) FILTER (WHERE mean = top) AS n_top,
           arg_min(response_id, seq) FILTER (WHERE mean = top) AS chosen_id,
           arg_min(response_id, draw) FILTER (WHERE mean < top
               AND round(top - mean, """ + str(MEAN_DECIMALS) + """) >= $min_margin) AS rejected_id
    FROM rated GROUP BY instruction_id
), answered AS (
    SELECT instruction_id, count(*) AS n_answers FROM feedback_answers GROUP BY instruction_id
), decided AS (
    SELECT s.id AS instruction_id, s.seq, o.chosen_id, o.rejected_id,
           CASE WHEN coalesce(n.n_answers, 0) = 0 THEN 'no answer of these roles'
                WHEN coalesce(o.n_rated, 0) < 2 THEN 'fewer than two rated answers'
                WHEN o.n_top > 1 THEN 'tie at the top'
                WHEN o.rejected_id IS NULL THEN 'no answer min_margin lower'
           END AS dropped
    FROM feedback_instructions s
    LEFT JOIN outcome o ON o.instruction_id = s.id
    LEFT JOIN answered n ON n.instruction_id = s.id
)
SELECT CASE WHEN d.dropped IS NULL THEN """ + _PAIR_ID.format(iid="d.instruction_id", chosen="d.chosen_id",
                                                             rejected="d.rejected_id") + """ END AS id,
       d.instruction_id, d.seq, d.dropped,
       CASE WHEN d.dropped IS NULL THEN d.chosen_id END AS chosen_id,
       CASE WHEN d.dropped IS NULL THEN d.rejected_id END AS rejected_id,
       c.mean AS chosen_score, r.mean AS rejected_score,
       round(c.mean - r.mean, """ + str(MEAN_DECIMALS) + """) AS margin,
       json_object('chosen', json_object('response_id', c.response_id, 'score', c.mean, 'aspects', c.aspects),
                   'rejected', json_object('response_id', r.response_id, 'score', r.mean, 'aspects', r.aspects))
           AS ratings
FROM decided d
LEFT JOIN feedback_answers c ON c.response_id = d.chosen_id AND d.dropped IS NULL
LEFT JOIN feedback_answers r ON r.response_id = d.rejected_id AND d.dropped IS NULL
"""
FEEDBACK_WRITE_PAIRS = """
INSERT INTO preference_pairs (id, instruction_id, chosen_id, rejected_id, round, method)
SELECT id, instruction_id, chosen_id, rejected_id, $round, 'ai_feedback'
FROM feedback_pairs
WHERE dropped IS NULL AND id NOT IN (SELECT id FROM preference_pairs)
ORDER BY seq
"""
FEEDBACK_WRITE_LINEAGE = """
INSERT INTO pair_feedback (pair_id, judge_model, rubric, template_hash, chosen_score, rejected_score, margin,
                           ratings, seed, params)
SELECT id, $judge_model, $rubric, $template_hash, chosen_score, rejected_score, margin, ratings, $seed, $params
FROM feedback_pairs
WHERE dropped IS NULL AND id NOT IN (SELECT pair_id FROM pair_feedback)
ORDER BY seq
"""
FEEDBACK_PAIR_COUNTS = "SELECT dropped, count(*) AS n FROM feedback_pairs GROUP BY dropped"
FEEDBACK_ANSWER_COUNTS = "SELECT missing, count(*) AS n FROM feedback_answers GROUP BY missing"
FEEDBACK_DROP = ["DROP TABLE IF EXISTS feedback_pairs", "DROP TABLE IF EXISTS feedback_answers",
                 "DROP TABLE IF EXISTS feedback_instructions"]

# The template of the newest aspect verdicts of a judge (what binarise reads by default).
SELECT_LATEST_ASPECT_TEMPLATE = """
SELECT template_hash FROM judgments
WHERE target_kind = 'response' AND judge_model = ? AND list_contains(?::VARCHAR[], rubric)
  AND template_hash IS NOT NULL AND score IS NOT NULL
ORDER BY created_at DESC, rowid DESC LIMIT 1
"""
SELECT_ASPECT_JUDGES = """
SELECT DISTINCT judge_model FROM judgments
WHERE target_kind = 'response' AND list_contains(?::VARCHAR[], rubric) ORDER BY judge_model
"""
# Pairs with their lineage (newest first). Bind order: judge_model x2, instruction x2.
SELECT_FEEDBACK_PAIRS = """
SELECT p.id, p.instruction_id, p.chosen_id, p.rejected_id, p.round, p.method, f.judge_model, f.rubric,
       f.template_hash, f.chosen_score, f.rejected_score, f.margin, f.ratings, f.seed, f.params, f.created_at
FROM pair_feedback f JOIN preference_pairs p ON p.id = f.pair_id
WHERE (?::VARCHAR IS NULL OR f.judge_model = ?) AND (?::VARCHAR IS NULL OR p.instruction_id = ?)
ORDER BY f.created_at DESC, p.instruction_id, p.id
"""
# AI-feedback pairs with their current human verdict (the latest decision on the pair: accept =
# the chosen answer is better, reject = the rejected one is, tie). Bind order: judge_model x2, round x2.
SELECT_PAIR_VERDICTS = """
SELECT p.id AS pair_id, p.instruction_id, p.round, f.judge_model, f.rubric, f.chosen_score, f.rejected_score,
       f.margin, d.decision
FROM pair_feedback f JOIN preference_pairs p ON p.id = f.pair_id
JOIN target_decisions d ON d.target_id = p.id
WHERE (?::VARCHAR IS NULL OR f.judge_model = ?) AND (?::INTEGER IS NULL OR p.round = ?)
ORDER BY p.round, p.id
"""
# The page's list: pairs with lineage, filtered by round and judge, largest margin first, with
# the texts and the current human verdict. Bind order: judge_model x2, round x2, limit.
SELECT_PAIRS_FOR_REVIEW = """
SELECT p.id AS pair_id, p.instruction_id, p.round, p.chosen_id, p.rejected_id, f.judge_model, f.rubric,
       f.template_hash, f.chosen_score, f.rejected_score, f.margin, f.ratings, i.text AS instruction, i.input,
       c.text AS chosen, r.text AS rejected, c.role AS chosen_role, r.role AS rejected_role,
       c.model AS chosen_model, r.model AS rejected_model, d.decision
FROM pair_feedback f JOIN preference_pairs p ON p.id = f.pair_id
JOIN instructions i ON i.id = p.instruction_id
JOIN responses c ON c.id = p.chosen_id
JOIN responses r ON r.id = p.rejected_id
LEFT JOIN target_decisions d ON d.target_id = p.id
WHERE (?::VARCHAR IS NULL OR f.judge_model = ?) AND (?::INTEGER IS NULL OR p.round = ?)
ORDER BY f.margin DESC, p.round, p.id
LIMIT ?
"""
SELECT_FEEDBACK_FACETS = """
SELECT DISTINCT f.judge_model, p.round FROM pair_feedback f JOIN preference_pairs p ON p.id = f.pair_id
ORDER BY f.judge_model, p.round
"""
SELECT_JUDGMENTS_BY_ID = """
SELECT id, target_id, judge_model, rubric, score, rationale, raw, template_hash, mode, confidence
FROM judgments WHERE list_contains(?::VARCHAR[], id) ORDER BY rubric, id
"""


class FeedbackQueries:
    """Mixed into core.store.Store; uses its _rows/_dicts/transaction plumbing."""

    def binarise_pairs(self, f: ExploreFilter, *, judge_model: str, rubric: str, aspect_rubrics: list[str],
                       template_hash: str, roles: list[str], round: int, seed: int, min_margin: float,
                       params: dict, answer_rounds: dict[str, int] | None = None) -> dict:
        """Binarise the selected instructions' rated answers and write the new pairs with their
        lineage, in one transaction. answer_rounds: the round each role's answers are read from
        (default: `round` for every role; the pairs are `round`'s either way). Returns {"pairs":
        {dropped reason (None = a pair): n}, "answers": {missing reason (None = rated): n}, "new":
        pairs written now}."""
        where, values = self.explore_where(f)
        named = {"judge_model": judge_model, "rubric": rubric, "template_hash": template_hash, "round": int(round),
                 "seed": int(seed), "roles": list(roles), "aspect_rubrics": list(aspect_rubrics),
                 "role_rounds": [f"{role}\x1f{int((answer_rounds or {}).get(role, round))}" for role in roles],
                 "min_margin": float(min_margin), "params": json.dumps(params, sort_keys=True)}
        # On an error the rollback removes the temp tables too (they were made in the transaction).
        with self.transaction() as cur:
            cur.execute(FEEDBACK_SELECT_INSTRUCTIONS.format(where=where), values + [NO_LIMIT])
            cur.execute(FEEDBACK_ANSWERS, _binds(FEEDBACK_ANSWERS, named))
            cur.execute(FEEDBACK_PAIRS, _binds(FEEDBACK_PAIRS, named))
            new = int(cur.execute(FEEDBACK_WRITE_PAIRS, _binds(FEEDBACK_WRITE_PAIRS, named)).fetchall()[0][0])
            cur.execute(FEEDBACK_WRITE_LINEAGE, _binds(FEEDBACK_WRITE_LINEAGE, named))
            pairs = {reason: int(n) for reason, n in cur.execute(FEEDBACK_PAIR_COUNTS).fetchall()}
            answers = {reason: int(n) for reason, n in cur.execute(FEEDBACK_ANSWER_COUNTS).fetchall()}
            for statement in FEEDBACK_DROP:
                cur.execute(statement)
        return {"pairs": pairs, "answers": answers, "new": new}

    def latest_aspect_template(self, judge_model: str, aspect_rubrics: list[str]) -> str | None:
        rows = self._rows(SELECT_LATEST_ASPECT_TEMPLATE, [judge_model, list(aspect_rubrics)])
        return rows[0][0] if rows else None

    def aspect_judges(self, aspect_rubrics: list[str]) -> list[str]:
        return [r[0] for r in self._rows(SELECT_ASPECT_JUDGES, [list(aspect_rubrics)])]

    def feedback_pairs(self, judge_model: str | None = None, instruction_id: str | None = None) -> list[dict]:
        """AI-feedback pairs with their lineage (ratings and params as dicts)."""
        rows = self._dicts(SELECT_FEEDBACK_PAIRS, [judge_model, judge_model, instruction_id, instruction_id])
        for row in rows:
            row["ratings"] = json.loads(row["ratings"])
            row["params"] = json.loads(row["params"]) if row["params"] else None
        return rows

    def pair_verdicts(self, judge_model: str | None = None, round: int | None = None) -> list[dict]:
        """AI-feedback pairs that have a human decision, with their margin (for agreement and τ)."""
        return self._dicts(SELECT_PAIR_VERDICTS, [judge_model, judge_model, round, round])

    def pairs_for_review(self, judge_model: str | None = None, round: int | None = None,
                         limit: int = 200) -> list[dict]:
        """AI-feedback pairs with texts and the current human verdict, largest margin first."""
        rows = self._dicts(SELECT_PAIRS_FOR_REVIEW, [judge_model, judge_model, round, round, int(limit)])
        for row in rows:
            row["ratings"] = json.loads(row["ratings"]) if row["ratings"] else {}
        return rows

    def feedback_facets(self) -> list[dict]:
        """The (judge_model, round) combinations AI-feedback pairs exist for."""
        return self._dicts(SELECT_FEEDBACK_FACETS, [])

    def judgments_by_id(self, ids: list[str]) -> list[dict]:
        """The judgment rows a pair's ratings name (their rationales and raw verdicts)."""
        return self._dicts(SELECT_JUDGMENTS_BY_ID, [list(ids)])


def _binds(sql: str, named: dict) -> dict:
    """The named values a statement uses (DuckDB refuses values for parameters it does not have)."""
    return {name: named[name] for name in set(re.findall(r"\$(\w+)", sql))}
