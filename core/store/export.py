"""Export statements: SFT pairs, prompts and preference pairs of a selection (ExportQueries)."""

from __future__ import annotations

import pandas as pd

from core.selection import ExploreFilter

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


class ExportQueries:
    """Mixed into core.store.Store; uses the BaseStore plumbing (_rows/_df/_dicts/transaction)."""

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
