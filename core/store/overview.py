"""The Home page's workspace overview: what a round needs, tasks by review state."""

from __future__ import annotations

import pandas as pd

from core.store.judgments import SELECT_JUDGE_LABELS

# What a round has so far, beyond the table counts: snapshots saved, and corpus documents that
# instructions were later made from (an instruction's parent_id names its document).
SELECT_ROUND_COUNTS = """
SELECT (SELECT count(*) FROM snapshots) AS snapshots,
       (SELECT count(*) FROM documents
        WHERE id IN (SELECT parent_id FROM instructions WHERE parent_id IS NOT NULL)) AS documents_used,
       (SELECT max(name) FROM snapshots
        WHERE created_at = (SELECT max(created_at) FROM snapshots)) AS latest_snapshot
"""
# One judge's reach: the responses it scored, out of all responses of the roles it scored (a judge
# run on the seed answers is complete when every seed answer has a verdict, whatever else exists).
# Bind order: judge_model, rubric.
SELECT_JUDGE_COVERAGE = """
WITH judged AS (
    SELECT DISTINCT j.target_id, r.role
    FROM judgments j JOIN responses r ON r.id = j.target_id
    WHERE j.judge_model = ? AND j.rubric = ?
), roles AS (SELECT DISTINCT role FROM judged)
SELECT (SELECT count(*) FROM judged) AS judged,
       (SELECT count(*) FROM responses WHERE role IN (SELECT role FROM roles)) AS of_roles,
       (SELECT string_agg(role, ', ' ORDER BY role) FROM roles) AS roles
"""
# How many of one judge's targets carry a human decision: the labels its calibration rests on.
# Bind order: judge_model, rubric.
SELECT_JUDGE_LABEL_COUNT = f"SELECT count(*) FROM ({SELECT_JUDGE_LABELS})"
# Instructions per task (the current_tasks view: human relabel, else imported, else model label)
# split by the instruction's latest human verdict (the instruction_decisions view).
SELECT_TASKS_BY_REVIEW_STATE = """
SELECT coalesce(ct.task, '(none)') AS task,
       count(*) FILTER (WHERE d.decision = 'accept') AS accepted,
       count(*) FILTER (WHERE d.decision = 'reject') AS rejected,
       count(*) FILTER (WHERE d.decision IS NULL) AS unreviewed
FROM current_tasks ct LEFT JOIN instruction_decisions d ON d.instruction_id = ct.instruction_id
GROUP BY ALL
ORDER BY count(*) DESC, task
"""


class OverviewQueries:
    """Mixed into core.store.Store; uses the BaseStore plumbing (_rows/_df/_dicts/transaction)."""

    def round_counts(self) -> dict:
        """snapshots, documents_used (documents some instruction was made from), latest_snapshot."""
        return self._dicts(SELECT_ROUND_COUNTS)[0]

    def judge_coverage(self, judge_model: str, rubric: str) -> dict:
        """judged (responses this judge scored), of_roles (responses of the roles it scored), roles."""
        return self._dicts(SELECT_JUDGE_COVERAGE, [judge_model, rubric])[0]

    def judge_label_count(self, judge_model: str, rubric: str) -> int:
        """Judged targets with a human decision (on the target, or on its instruction)."""
        return int(self._rows(SELECT_JUDGE_LABEL_COUNT, [judge_model, rubric])[0][0])

    def tasks_by_review_state(self) -> pd.DataFrame:
        """task, accepted, rejected, unreviewed: instructions per task by their latest human verdict."""
        return self._df(SELECT_TASKS_BY_REVIEW_STATE)
