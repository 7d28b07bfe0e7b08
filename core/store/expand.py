"""What TAPIR's style rewriting reads (ExpandQueries): see core.expand.

The expand stage needs no SQL of its own (instructions_for_job, current_tasks and dataset
lookups serve it); the restyle stage needs the answers of one role whose instruction's current
task has a style and that have not been rewritten yet.
"""

from __future__ import annotations

from core.selection import ExploreFilter

# Answers of a role to the selected instructions whose current task (the current_tasks view:
# human > import > model) is one of the styled tasks, and that no answer of the output role
# names as its parent yet: a re-run rewrites only what is left. NOT EXISTS, not NOT IN: parent_id
# is NULL on most responses, and NOT IN over a NULL matches nothing.
# Bind order: (the selection's values), tasks, role, out_role, limit.
SELECT_RESPONSES_TO_RESTYLE = """
SELECT r.id AS response_id, i.id AS instruction_id, ct.task, i.text, i.input, r.text AS response
FROM instructions i
JOIN current_tasks ct ON ct.instruction_id = i.id
JOIN responses r ON r.instruction_id = i.id
WHERE {where} AND list_contains(?, ct.task) AND r.role = ?
  AND NOT EXISTS (SELECT 1 FROM responses s WHERE s.role = ? AND s.parent_id = r.id)
ORDER BY i.rowid, r.rowid
LIMIT ?
"""


class ExpandQueries:
    """Mixed into core.store.Store; uses the BaseStore plumbing (_dicts) and explore_where."""

    def responses_to_restyle(self, f: ExploreFilter, role: str, out_role: str, tasks: list[str],
                             limit: int) -> list[dict]:
        """(response_id, instruction_id, task, text, input, response) rows, oldest first."""
        where, values = self.explore_where(f)
        return self._dicts(SELECT_RESPONSES_TO_RESTYLE.format(where=where),
                           values + [list(tasks), role, out_role, int(limit)])
