"""SQL for Tuna's rankings (core.ranking): the answers a ranking reads, and the rankings table.

The table is migration 0013_rankings (core/migrations.py). Contextual ranking reads the listwise
judge's rows (core.judge.listwise_rows: one per response, score = its rank, params.list the list).
Rankings are written with an anti-join on id (ids are content hashes: a re-run adds nothing);
a later ranking of the same answers' key (say after a new sample arrived) is a new row, and
readers take the newest per (instruction, method, role, model, judge, round).
"""

from __future__ import annotations

from core.selection import ExploreFilter

# Every answer of one role and model in a round to the selected instructions, with the mean
# token log-prob the generate stage stored in its meta (NULL when the backend gave none). An
# instruction without such an answer appears once with NULL response. Bind order: the
# selection's values, then role, model, round.
RANKING_ANSWERS = """
WITH sel AS (SELECT i.id, i.rowid AS seq FROM instructions i WHERE {where})
SELECT s.id AS instruction_id, r.id AS response_id,
       TRY_CAST(r.meta->>'$.mean_logprob' AS DOUBLE) AS mean_logprob
FROM sel s
LEFT JOIN responses r ON r.instruction_id = s.id AND r.role = ? AND r.model = ? AND r.round = ?
ORDER BY s.seq, r.rowid
"""
INSERT_RANKINGS = """
INSERT INTO rankings (id, instruction_id, method, role, model, judge, template_hash, response_ids, scores, raw,
                      parse_error, round, params)
SELECT * FROM (VALUES (?, ?, ?, ?, ?, ?, ?, ?::JSON, ?::JSON, ?, ?, ?, ?::JSON))
    AS v(id, instruction_id, method, role, model, judge, template_hash, response_ids, scores, raw, parse_error,
         round, params)
WHERE v.id NOT IN (SELECT id FROM rankings)
"""
# The newest ranking per key (NULL filters match everything). Bind order: method, role x2,
# model x2, judge x2, round x2, then the selection's values.
SELECT_LATEST_RANKINGS = """
WITH latest AS (
    SELECT k.*, row_number() OVER (PARTITION BY instruction_id, method, role, model, coalesce(judge, ''), round
                                   ORDER BY created_at DESC, rowid DESC) AS newest
    FROM rankings k
    WHERE k.method = ? AND (?::VARCHAR IS NULL OR k.role = ?) AND (?::VARCHAR IS NULL OR k.model = ?)
      AND (?::VARCHAR IS NULL OR k.judge = ?) AND (?::INTEGER IS NULL OR k.round = ?)
)
SELECT l.id, l.instruction_id, l.method, l.role, l.model, l.judge, l.template_hash, l.response_ids, l.scores,
       l.raw, l.parse_error, l.round, l.params, l.created_at,
       i.text AS instruction, i.input, i.system, i.history
FROM latest l JOIN instructions i ON i.id = l.instruction_id
WHERE l.newest = 1 AND {where}
ORDER BY i.rowid, l.role, l.model, l.judge
"""
SELECT_RESPONSE_TEXTS = "SELECT id, text FROM responses WHERE list_contains(?::VARCHAR[], id)"
COUNT_RANKINGS = "SELECT count(*) FROM rankings"
# Every listwise judgment row (one per ranked response) of one judge and rubric on the lists that
# hold an answer of this role, model and round, with the answer's own role, model and round (a
# list may mix in others: the ranking reader refuses those). Bind order: judge, rubric, role,
# model, round, judge, rubric, then the selection's values.
SELECT_LISTWISE_JUDGMENTS = """
WITH lists AS (
    SELECT DISTINCT j.params->>'$.list' AS list
    FROM judgments j JOIN responses r ON r.id = j.target_id
    WHERE j.kind = 'listwise' AND j.target_kind = 'response' AND j.judge_model = ? AND j.rubric = ?
      AND r.role = ? AND r.model = ? AND r.round = ?
)
SELECT j.params->>'$.list' AS list, j.target_id AS response_id, r.instruction_id, r.role, r.model,
       r.round AS response_round, j.score, j.raw, j.parse_error, j.call_error, j.template_hash,
       j.params, j.created_at, j.rowid AS seq
FROM judgments j
JOIN responses r ON r.id = j.target_id
JOIN instructions i ON i.id = r.instruction_id
WHERE j.kind = 'listwise' AND j.target_kind = 'response' AND j.judge_model = ? AND j.rubric = ?
  AND j.params->>'$.list' IN (SELECT list FROM lists) AND {where}
ORDER BY i.rowid, list, j.rowid
"""
# What has been ranked: one row per (method, round, role, model, judge) with its newest rankings
# counted, valid and invalid (the Rankings page's choices).
SELECT_RANKING_KEYS = """
WITH latest AS (
    SELECT k.*, row_number() OVER (PARTITION BY instruction_id, method, role, model, coalesce(judge, ''), round
                                   ORDER BY created_at DESC, rowid DESC) AS newest
    FROM rankings k
)
SELECT method, round, role, model, judge, count(*) AS rankings,
       count(*) FILTER (WHERE response_ids IS NOT NULL) AS valid,
       count(*) FILTER (WHERE response_ids IS NULL) AS invalid
FROM latest WHERE newest = 1
GROUP BY method, round, role, model, judge
ORDER BY round, method DESC, role, model, judge
"""


class RankingQueries:
    """Mixed into core.store.Store; uses its _rows/_dicts/transaction plumbing."""

    def ranking_answers(self, f: ExploreFilter, role: str, model: str, round: int) -> list[dict]:
        """The answers probabilistic ranking reads (see RANKING_ANSWERS), oldest instruction first."""
        where, values = self.explore_where(f)
        return self._dicts(RANKING_ANSWERS.format(where=where), values + [role, model, int(round)])

    def insert_rankings(self, rows: list[list]) -> int:
        """Rows in INSERT_RANKINGS order, in one transaction; returns how many were new."""
        with self.transaction() as cur:
            before = int(cur.execute(COUNT_RANKINGS).fetchall()[0][0])
            if rows:
                cur.executemany(INSERT_RANKINGS, rows)
            return int(cur.execute(COUNT_RANKINGS).fetchall()[0][0]) - before

    def latest_rankings(self, method: str, f: ExploreFilter, role: str | None = None, model: str | None = None,
                        judge: str | None = None, round: int | None = None) -> list[dict]:
        where, values = self.explore_where(f)
        return self._dicts(SELECT_LATEST_RANKINGS.format(where=where),
                           [method, role, role, model, model, judge, judge, round, round] + values)

    def listwise_judgments(self, f: ExploreFilter, judge: str, rubric: str, role: str, model: str,
                           round: int) -> list[dict]:
        """Listwise judgment rows contextual ranking reads (see SELECT_LISTWISE_JUDGMENTS)."""
        where, values = self.explore_where(f)
        return self._dicts(SELECT_LISTWISE_JUDGMENTS.format(where=where),
                           [judge, rubric, role, model, int(round), judge, rubric] + values)

    def ranking_keys(self) -> list[dict]:
        return self._dicts(SELECT_RANKING_KEYS)

    def response_texts(self, ids: list[str]) -> dict[str, str]:
        return dict(self._rows(SELECT_RESPONSE_TEXTS, [list(ids)]))
