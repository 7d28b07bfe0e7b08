"""Evaluations: the prompt set, what is left to answer and judge, the per-prompt inputs, and the
stored results (EvaluationQueries).

An evaluation (core.evaluate) works on an explicit list of instruction ids (its prompt set), so
every statement here binds that list instead of a selection.
"""

from __future__ import annotations

import json

SELECT_DATASET_ID = "SELECT id FROM datasets WHERE name = ?"
# The prompt set: the dataset's first `limit` instructions, in the order Explore shows them.
SELECT_EVAL_PROMPTS = "SELECT i.id FROM instructions i WHERE i.dataset_id = ? ORDER BY i.rowid LIMIT ?"
# Prompts with no answer of this role from this model (in any round: an answer is the model's,
# its id is a hash of instruction, role, model and text, so a re-answer in a later round is the
# same response). Bind order: ids, role, model.
SELECT_EVAL_MISSING_ANSWERS = """
SELECT i.id FROM instructions i
WHERE list_contains(?, i.id)
  AND i.id NOT IN (SELECT instruction_id FROM responses WHERE role = ? AND model = ?)
ORDER BY i.rowid
"""
# Per prompt: the (oldest) answer of each side and the reference answer: a response of role
# 'reference', else the instruction's meta.reference (synthetic prompt files carry both).
# Bind order: ids, role A, model A, ids, role B, model B, ids, ids.
SELECT_EVAL_ROWS = """
WITH a AS (
    SELECT instruction_id, arg_min(id, rowid) AS id, arg_min(text, rowid) AS text
    FROM responses WHERE list_contains(?, instruction_id) AND role = ? AND model = ? GROUP BY instruction_id
), b AS (
    SELECT instruction_id, arg_min(id, rowid) AS id, arg_min(text, rowid) AS text
    FROM responses WHERE list_contains(?, instruction_id) AND role = ? AND model = ? GROUP BY instruction_id
), ref AS (
    SELECT instruction_id, arg_min(text, rowid) AS text
    FROM responses WHERE list_contains(?, instruction_id) AND role = 'reference' GROUP BY instruction_id
)
SELECT i.id AS instruction_id, a.id AS a_id, a.text AS a_text, b.id AS b_id, b.text AS b_text,
       coalesce(ref.text, i.meta->>'$.reference') AS reference
FROM instructions i
LEFT JOIN a ON a.instruction_id = i.id
LEFT JOIN b ON b.instruction_id = i.id
LEFT JOIN ref ON ref.instruction_id = i.id
WHERE list_contains(?, i.id)
ORDER BY i.rowid
"""
# One judge's verdicts on these targets, per target and order (order NULL for pointwise rows):
# the mean parsed score, and how many calls are done. A failed call is asked again, except a
# prompt too long for the judge, which would fail the same way (as the difficulty chain does).
# Bind order: judge_model, rubric, target ids, mode, mode.
SELECT_EVAL_VERDICTS = """
SELECT target_id, params->>'$.order' AS "order", avg(score) AS score, count(score) AS n_parsed,
       count(*) FILTER (WHERE call_error IS NULL OR starts_with(call_error, 'too_long:')) AS n_done
FROM judgments
WHERE judge_model = ? AND rubric = ? AND list_contains(?, target_id) AND (?::VARCHAR IS NULL OR mode = ?)
GROUP BY ALL
"""

EVALUATION_COLUMNS = ("id", "model_a", "model_b", "prompts", "round", "judge", "rubric", "n_prompts", "n", "wins",
                      "ties", "losses", "n_both_orders", "flips", "win_rate", "win_low", "win_high", "flip_rate",
                      "pointwise_rubric", "score_a", "score_b", "n_reference", "exact_a", "exact_b", "config",
                      "jobs", "meta")
# Recomputing an evaluation replaces its row; created_at is the time of the latest computation.
UPSERT_EVALUATION = (f"INSERT OR REPLACE INTO evaluations ({', '.join(EVALUATION_COLUMNS)}, created_at) "
                     f"VALUES ({', '.join('?' for _ in EVALUATION_COLUMNS)}, current_timestamp)")
SELECT_EVALUATION = "SELECT * FROM evaluations WHERE id = ?"
# Bind order: model, model, model, round, round.
SELECT_EVALUATIONS = """
SELECT * FROM evaluations
WHERE (?::VARCHAR IS NULL OR model_a = ? OR model_b = ?) AND (?::INTEGER IS NULL OR round = ?)
ORDER BY created_at DESC, id
"""
# Bind order: model A, model B, prompts, prompts.
SELECT_LATEST_EVALUATION = """
SELECT * FROM evaluations
WHERE model_a = ? AND model_b = ? AND (?::VARCHAR IS NULL OR prompts = ?)
ORDER BY created_at DESC, round DESC, id
LIMIT 1
"""


class EvaluationQueries:
    """Mixed into core.store.Store; uses the BaseStore plumbing (_rows/_dicts/transaction)."""

    def dataset_id(self, name: str) -> str | None:
        rows = self._rows(SELECT_DATASET_ID, [name])
        return rows[0][0] if rows else None

    def eval_prompt_ids(self, dataset_id: str, limit: int) -> list[str]:
        return [r[0] for r in self._rows(SELECT_EVAL_PROMPTS, [dataset_id, int(limit)])]

    def eval_missing_answers(self, ids: list[str], role: str, model: str) -> list[str]:
        return [r[0] for r in self._rows(SELECT_EVAL_MISSING_ANSWERS, [list(ids), role, model])]

    def eval_rows(self, ids: list[str], role_a: str, model_a: str, role_b: str, model_b: str) -> list[dict]:
        ids = list(ids)
        return self._dicts(SELECT_EVAL_ROWS, [ids, role_a, model_a, ids, role_b, model_b, ids, ids])

    def eval_verdicts(self, judge_model: str, rubric: str, target_ids: list[str], mode: str | None) -> list[dict]:
        return self._dicts(SELECT_EVAL_VERDICTS, [judge_model, rubric, list(target_ids), mode, mode])

    def upsert_evaluation(self, row: dict) -> None:
        values = [json.dumps(row[c], default=str) if c in ("config", "jobs", "meta") else row[c]
                  for c in EVALUATION_COLUMNS]
        with self.transaction() as cur:
            cur.execute(UPSERT_EVALUATION, values)

    def evaluation(self, evaluation_id: str) -> dict | None:
        rows = self._dicts(SELECT_EVALUATION, [evaluation_id])
        return rows[0] if rows else None

    def evaluations(self, model: str | None = None, round: int | None = None) -> list[dict]:
        r = None if round is None else int(round)
        return self._dicts(SELECT_EVALUATIONS, [model, model, model, r, r])

    def latest_evaluation(self, model_a: str, model_b: str, prompts: str | None = None) -> dict | None:
        rows = self._dicts(SELECT_LATEST_EVALUATION, [model_a, model_b, prompts, prompts])
        return rows[0] if rows else None
