"""Humpback's backtranslation: candidates (document → generated instruction), curation scores (core.backtranslate).

The candidates are ordinary rows: an instruction (the backward model's output, parent_id = the
document, method 'backtranslate') in a candidates dataset, and one response of role CANDIDATE_ROLE
whose text is the document. A curator's ratings are ordinary judgments on those responses, so
every query below reads instructions, responses, judgments and reviews, and no table of its own.

A candidate's curator score is the mean of that curator's parsed verdicts on it (one verdict in
probability mode; several when the curator rated it more than once), for a rubric and optionally
a scoring mode. Bind parameters are listed above each statement in order.
"""

from __future__ import annotations

import pandas as pd

# The seed pairs the backward model learns from: each seed instruction with its response of a role.
# Bind order: dataset names, role, limit.
SELECT_SEED_PAIRS = """
SELECT i.id AS instruction_id, i.text AS instruction, i.input, r.id AS response_id, r.text AS response
FROM instructions i
JOIN datasets ds ON ds.id = i.dataset_id
JOIN responses r ON r.instruction_id = i.id
WHERE list_contains(?, ds.name) AND r.role = ?
ORDER BY i.rowid, r.rowid
LIMIT ?
"""
# Corpus documents to backtranslate, in file order, without a candidate of this backward model
# in the output dataset yet (a round replayed after a crash, or a later limit, does only the rest).
# Bind order: dataset names, output dataset id, backward model, limit.
SELECT_DOCUMENTS_TO_BACKTRANSLATE = """
SELECT d.id, d.text, d.title, d.source_file, d.segment
FROM documents d JOIN datasets ds ON ds.id = d.dataset_id
WHERE list_contains(?, ds.name)
  AND NOT EXISTS (SELECT 1 FROM instructions i
                  WHERE i.parent_id = d.id AND i.dataset_id = ? AND i.model IS NOT DISTINCT FROM ?)
ORDER BY d.rowid
LIMIT ?
"""
# Each candidate (response of the role in the candidates datasets) with its curator score.
# Bind order: dataset names, role, judge model, rubric, mode, mode.
_SCORED = """
WITH cand AS (
    SELECT r.id AS response_id, r.instruction_id
    FROM responses r JOIN instructions i ON i.id = r.instruction_id JOIN datasets ds ON ds.id = i.dataset_id
    WHERE list_contains(?, ds.name) AND r.role = ?
), scored AS (
    SELECT c.response_id, c.instruction_id, avg(j.score) AS score, count(j.id) AS verdicts
    FROM cand c LEFT JOIN judgments j
      ON j.target_id = c.response_id AND j.judge_model = ? AND j.rubric = ?
         AND (?::VARCHAR IS NULL OR j.mode = ?)
    GROUP BY c.response_id, c.instruction_id
)
"""
# Candidates, judged ones, kept at k, the curator's mean score. Bind order: _SCORED's, then k, k.
SELECT_CURATION_COUNTS = _SCORED + """
SELECT count(*) AS candidates, count(*) FILTER (WHERE verdicts > 0) AS judged,
       count(score) AS scored, count(*) FILTER (WHERE score >= ?) AS kept, avg(score) AS mean_score,
       min(score) AS min_score, max(score) AS max_score,
       count(*) FILTER (WHERE score >= ? - 0.5 AND score IS NOT NULL) AS near_k
FROM scored
"""
# Score histogram of the candidates (NULL: not scored), for the page's slider and the kept share
# at any k without a row per candidate. Bind order: _SCORED's, then the bin width, the bin width.
SELECT_CURATION_HISTOGRAM = _SCORED + """
SELECT floor(score / ?) * ? AS bin, count(*) AS n FROM scored GROUP BY bin ORDER BY bin NULLS LAST
"""
# The exact scores with their counts (kept share at any k, as core.calibration's population).
SELECT_CURATION_SCORE_COUNTS = _SCORED + """
SELECT score, count(*) AS n FROM scored GROUP BY score ORDER BY score NULLS LAST
"""
# Kept candidates (score ≥ k): what a round copies into its kept dataset. Bind order: _SCORED's, k.
SELECT_KEPT_CANDIDATES = _SCORED + """
SELECT s.response_id, s.score, i.id AS instruction_id, i.text AS instruction, i.parent_id AS document_id,
       i.model AS backward_model, i.round, r.text AS response
FROM scored s JOIN instructions i ON i.id = s.instruction_id JOIN responses r ON r.id = s.response_id
WHERE s.score >= ?
ORDER BY i.rowid
"""
# One page of candidates side by side: document title, generated instruction, the document (the
# response), the curator's score and the latest human decision (on the response, else its
# instruction). Best first; unscored last. Bind order: _SCORED's, preview chars, preview chars,
# min score or NULL, min score, limit, offset.
SELECT_CANDIDATE_PAGE = _SCORED + """
SELECT s.response_id, s.instruction_id, i.parent_id AS document_id, d.title, left(i.text, ?) AS instruction,
       left(r.text, ?) AS document, r.n_chars AS document_chars, s.score, s.verdicts, i.model AS backward_model,
       i.round, coalesce(dr.decision, di.decision) AS decision
FROM scored s
JOIN instructions i ON i.id = s.instruction_id
JOIN responses r ON r.id = s.response_id
LEFT JOIN documents d ON d.id = i.parent_id
LEFT JOIN target_decisions dr ON dr.target_id = s.response_id
LEFT JOIN target_decisions di ON di.target_id = s.instruction_id
WHERE ?::DOUBLE IS NULL OR s.score >= ?
ORDER BY s.score DESC NULLS LAST, i.rowid
LIMIT ? OFFSET ?
"""
# The human accept/reject labels on candidates (the latest decision on the response, else on its
# instruction) with the curator's score: precision and recall at k. Bind order: _SCORED's.
SELECT_CANDIDATE_LABELS = _SCORED + """
SELECT s.response_id, s.score, coalesce(dr.decision, di.decision) AS decision
FROM scored s
LEFT JOIN target_decisions dr ON dr.target_id = s.response_id
LEFT JOIN target_decisions di ON di.target_id = s.instruction_id
WHERE coalesce(dr.decision, di.decision) IN ('accept', 'reject')
ORDER BY s.response_id
"""
# The curators that rated candidates of these datasets: (judge model, rubric, mode, round, n).
# Bind order: dataset names, role.
SELECT_CURATORS = """
SELECT j.judge_model, j.rubric, j.mode, min(j.round) AS round, count(DISTINCT j.target_id) AS n,
       avg(j.score) AS mean_score
FROM judgments j
JOIN responses r ON r.id = j.target_id JOIN instructions i ON i.id = r.instruction_id
JOIN datasets ds ON ds.id = i.dataset_id
WHERE list_contains(?, ds.name) AND r.role = ?
GROUP BY j.judge_model, j.rubric, j.mode
ORDER BY round, j.judge_model, j.rubric
"""
# Datasets that hold backtranslated candidates, with their counts.
SELECT_CANDIDATE_DATASETS = """
SELECT ds.name, count(*) AS candidates, count(DISTINCT i.parent_id) AS documents
FROM instructions i JOIN datasets ds ON ds.id = i.dataset_id
WHERE i.method = 'backtranslate'
GROUP BY ds.name ORDER BY ds.name
"""


class BacktranslateQueries:
    """Store methods of this area (mixed into core.store.Store)."""

    def seed_pairs(self, datasets: list[str], role: str, limit: int = 1_000_000) -> list[dict]:
        """(instruction_id, instruction, input, response_id, response) of the seed datasets."""
        return self._dicts(SELECT_SEED_PAIRS, [list(datasets), role, int(limit)])

    def documents_to_backtranslate(self, datasets: list[str], out_dataset_id: str, backward_model: str | None,
                                   limit: int) -> list[dict]:
        return self._dicts(SELECT_DOCUMENTS_TO_BACKTRANSLATE,
                           [list(datasets), out_dataset_id, backward_model, int(limit)])

    @staticmethod
    def _scored_values(datasets: list[str], role: str, judge_model: str, rubric: str, mode: str | None) -> list:
        return [list(datasets), role, judge_model, rubric, mode, mode]

    def curation_counts(self, datasets: list[str], role: str, judge_model: str, rubric: str, mode: str | None,
                        k: float) -> dict:
        """candidates, judged, scored, kept (score ≥ k), mean/min/max score, near_k (in [k − 0.5, k))."""
        values = self._scored_values(datasets, role, judge_model, rubric, mode)
        row = self._dicts(SELECT_CURATION_COUNTS, values + [float(k), float(k)])[0]
        row["near_k"] = int(row["near_k"]) - int(row["kept"])
        return row

    def curation_histogram(self, datasets: list[str], role: str, judge_model: str, rubric: str, mode: str | None,
                           width: float = 0.25) -> pd.DataFrame:
        values = self._scored_values(datasets, role, judge_model, rubric, mode)
        return self._df(SELECT_CURATION_HISTOGRAM, values + [float(width), float(width)])

    def curation_score_counts(self, datasets: list[str], role: str, judge_model: str, rubric: str,
                              mode: str | None) -> pd.DataFrame:
        return self._df(SELECT_CURATION_SCORE_COUNTS, self._scored_values(datasets, role, judge_model, rubric, mode))

    def kept_candidates(self, datasets: list[str], role: str, judge_model: str, rubric: str, mode: str | None,
                        k: float) -> list[dict]:
        values = self._scored_values(datasets, role, judge_model, rubric, mode)
        return self._dicts(SELECT_KEPT_CANDIDATES, values + [float(k)])

    def candidate_page(self, datasets: list[str], role: str, judge_model: str, rubric: str, mode: str | None,
                       min_score: float | None = None, limit: int = 20, offset: int = 0,
                       preview_chars: int = 1200) -> list[dict]:
        if not 1 <= limit <= 500:
            raise ValueError(f"page size must be between 1 and 500, not {limit}")
        values = self._scored_values(datasets, role, judge_model, rubric, mode)
        low = None if min_score is None else float(min_score)
        return self._dicts(SELECT_CANDIDATE_PAGE, values + [int(preview_chars), int(preview_chars), low, low,
                                                            int(limit), int(max(offset, 0))])

    def candidate_labels(self, datasets: list[str], role: str, judge_model: str, rubric: str,
                         mode: str | None) -> list[dict]:
        return self._dicts(SELECT_CANDIDATE_LABELS, self._scored_values(datasets, role, judge_model, rubric, mode))

    def candidate_curators(self, datasets: list[str], role: str) -> list[dict]:
        return self._dicts(SELECT_CURATORS, [list(datasets), role])

    def candidate_datasets(self) -> list[dict]:
        return self._dicts(SELECT_CANDIDATE_DATASETS)
