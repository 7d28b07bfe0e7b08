"""SQL for labels (tasks, categories) and workspace settings: see core.tasks.

Labels (migration 0008): an imported label stays in `instructions.task` as it came; model and
human labels are rows of `labels`, each with its classifier, confidence and job. The view
`current_tasks` picks one task per instruction: a human's latest relabel, else the imported
label, else the latest model label. Statements with `{where}` take a fragment from
`Store.explore_where` over the alias `i` (instructions); its values are bound first.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

from core.selection import ExploreFilter

# Label ids are content hashes (core.tasks.label_id) and the table has a PRIMARY KEY, so a
# re-ingested batch, or a repeated row inside one, adds nothing.
INSERT_LABELS = "INSERT OR IGNORE INTO labels BY NAME SELECT * FROM batch"

# Sources that are ground truth for training and evaluation (a model label is not).
_TRUTH = "('import', 'human')"

# Current tasks of a selection, with how many came from each source; task NULL counts the
# instructions that have no task at all. Model labels' mean confidence tells how sure they are.
SELECT_CURRENT_TASK_COUNTS = """
SELECT ct.task, count(*) AS n,
       count(*) FILTER (WHERE ct.source = 'human') AS human,
       count(*) FILTER (WHERE ct.source = 'import') AS imported,
       count(*) FILTER (WHERE ct.source NOT IN """ + _TRUTH + """) AS model,
       avg(ct.confidence) AS mean_confidence
FROM instructions i JOIN current_tasks ct ON ct.instruction_id = i.id
WHERE {where}
GROUP BY ct.task
ORDER BY n DESC, ct.task NULLS LAST
"""
# A join from the ids (not `= ANY(?)`) so a page's lookup stays an index probe.
SELECT_CURRENT_TASKS = """
SELECT ct.instruction_id, ct.task, ct.source, ct.confidence
FROM (SELECT unnest(?::VARCHAR[]) AS id) p JOIN current_tasks ct ON ct.instruction_id = p.id
"""
# What a classifier learns from and is evaluated on: instructions whose current task is an
# imported label or a human relabel.
SELECT_TASK_EXAMPLES = """
SELECT i.id, i.text, i.input, ct.task, ct.source
FROM instructions i JOIN current_tasks ct ON ct.instruction_id = i.id
WHERE ct.source IN """ + _TRUTH + """ AND {where}
ORDER BY i.rowid
"""
# What a classifier labels: the selection's instructions with no imported or human task (those
# with only a model label are labelled again), or all of them when the flag is true.
# Bind order: (where values), include labelled?, limit.
SELECT_TASK_TARGETS = """
SELECT i.id, i.text, i.input
FROM instructions i JOIN current_tasks ct ON ct.instruction_id = i.id
WHERE {where} AND (? OR ct.source IS NULL OR ct.source NOT IN """ + _TRUTH + """)
ORDER BY i.rowid
LIMIT ?
"""
SELECT_TASK_OF = """
SELECT i.id AS instruction_id, i.task AS imported, ct.task, ct.source, ct.confidence
FROM instructions i JOIN current_tasks ct ON ct.instruction_id = i.id
WHERE i.id = ?
"""
SELECT_LABEL_HISTORY = """
SELECT id, kind, value, classifier, confidence, job_id, reviewer, meta, created_at
FROM labels WHERE target_id = ? AND kind = ?
ORDER BY created_at DESC, id
"""
SELECT_LABEL_COUNTS = """
SELECT classifier, job_id, count(*) AS n, avg(confidence) AS mean_confidence, max(created_at) AS last_labelled
FROM labels WHERE kind = ?
GROUP BY ALL ORDER BY last_labelled DESC, classifier
"""

SELECT_SETTING = "SELECT value FROM settings WHERE key = ?"
UPSERT_SETTING = "INSERT OR REPLACE INTO settings (key, value, updated_at) VALUES (?, ?, current_timestamp)"
DELETE_SETTING = "DELETE FROM settings WHERE key = ?"


class LabelQueries:
    """Mixed into core.store.Store; uses its _rows/_df/_dicts/transaction plumbing."""

    # -- labels -------------------------------------------------------------------------------

    def insert_labels(self, batch: pa.Table) -> int:
        """Insert label rows (core.tasks.labels_table) in one transaction; ids already stored are
        skipped. Returns the number of new rows."""
        if batch.num_rows == 0:
            return 0
        with self.transaction() as cur:
            cur.register("batch", batch)
            try:
                return int(cur.execute(INSERT_LABELS).fetchall()[0][0])
            finally:
                cur.unregister("batch")

    def current_task_counts(self, f: ExploreFilter | None = None) -> pd.DataFrame:
        """(task, n, human, imported, model, mean_confidence) over a selection; task None = no task."""
        where, values = self.explore_where(f or ExploreFilter())
        return self._df(SELECT_CURRENT_TASK_COUNTS.format(where=where), values)

    def current_tasks(self, instruction_ids: list[str]) -> dict[str, dict]:
        """instruction id → {task, source, confidence} (source: human | import | the classifier)."""
        rows = self._rows(SELECT_CURRENT_TASKS, [list(instruction_ids)])
        return {i: {"task": t, "source": s, "confidence": c} for i, t, s, c in rows}

    def task_examples(self, f: ExploreFilter | None = None) -> list[dict]:
        """(id, text, input, task, source) of the instructions with an imported or human task."""
        where, values = self.explore_where(f or ExploreFilter())
        return self._dicts(SELECT_TASK_EXAMPLES.format(where=where), values)

    def task_targets(self, f: ExploreFilter | None = None, include_labelled: bool = False,
                     limit: int = 10_000_000) -> list[dict]:
        """(id, text, input) of the selection's instructions with no imported or human task
        (all of them with include_labelled), in insertion order."""
        where, values = self.explore_where(f or ExploreFilter())
        return self._dicts(SELECT_TASK_TARGETS.format(where=where), values + [bool(include_labelled), int(limit)])

    def task_of(self, instruction_id: str) -> dict | None:
        """The current task of one instruction, its imported label and its label history (newest
        first); None when there is no such instruction."""
        rows = self._dicts(SELECT_TASK_OF, [instruction_id])
        if not rows:
            return None
        return rows[0] | {"history": self._dicts(SELECT_LABEL_HISTORY, [instruction_id, "task"])}

    def label_counts(self, kind: str = "task") -> pd.DataFrame:
        """(classifier, job_id, n, mean_confidence, last_labelled) of the stored labels of a kind."""
        return self._df(SELECT_LABEL_COUNTS, [kind])

    # -- settings -----------------------------------------------------------------------------

    def setting(self, key: str) -> str | None:
        """A setting's JSON text, or None when unset."""
        rows = self._rows(SELECT_SETTING, [key])
        return rows[0][0] if rows else None

    def set_setting(self, key: str, value_json: str) -> None:
        with self.transaction() as cur:
            cur.execute(UPSERT_SETTING, [key, value_json])

    def delete_setting(self, key: str) -> None:
        with self.transaction() as cur:
            cur.execute(DELETE_SETTING, [key])
