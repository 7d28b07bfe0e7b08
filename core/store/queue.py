"""The review queue's queries (core.review_queue): the targets of a filter or snapshot, their decisions, progress."""

from __future__ import annotations

from core.selection import ExploreFilter
from core.store.explore import EXPLORE_ORDERS

# A target is what one review decides: a preference pair, a response, or an instruction that has
# no response. Each instruction gives its pairs when it has any (a pair's verdict is the label a
# preference dataset needs), else each of its responses, else itself. `part` and `sub` keep the
# targets of one instruction in a stable order (pairs and responses in insertion order).

# The first N targets of the instructions an Explore filter matches, in Explore's order. At most N
# instructions are needed (each gives at least one target), so the page of instructions is cut
# first and only its pairs and responses are looked up. Bind order: (where values), limit, limit.
SELECT_FILTER_TARGETS = """
WITH picked AS (
    SELECT i.id, row_number() OVER (ORDER BY {order}) AS n
    FROM instructions i WHERE {where}
    ORDER BY {order}
    LIMIT ?
), targets AS (
    SELECT pp.id AS target_id, 'pair' AS target_kind, p.id AS instruction_id, p.n, pp.rowid AS sub
    FROM picked p JOIN preference_pairs pp ON pp.instruction_id = p.id
    UNION ALL
    SELECT r.id, 'response', p.id, p.n, r.rowid
    FROM picked p JOIN responses r ON r.instruction_id = p.id
    WHERE NOT EXISTS (SELECT 1 FROM preference_pairs pp WHERE pp.instruction_id = p.id)
    UNION ALL
    SELECT p.id, 'instruction', p.id, p.n, 0
    FROM picked p
    WHERE NOT EXISTS (SELECT 1 FROM responses r WHERE r.instruction_id = p.id)
)
SELECT target_id, target_kind, instruction_id FROM targets ORDER BY n, sub LIMIT ?
"""
# A snapshot's members as review targets, in member order, each sample once (up-sampled copies
# are the same sample): a response member is its response; an instruction member (prompt-only or
# preference snapshots) is its pairs when it has any, else the instruction. Bind: snapshot, limit.
SELECT_SNAPSHOT_TARGETS = """
WITH m AS (
    SELECT instruction_id, response_id, min(position) AS pos
    FROM snapshot_members WHERE snapshot = ? GROUP BY instruction_id, response_id
), targets AS (
    SELECT m.response_id AS target_id, 'response' AS target_kind, m.instruction_id, m.pos, 0::BIGINT AS sub
    FROM m WHERE m.response_id IS NOT NULL
    UNION ALL
    SELECT pp.id, 'pair', m.instruction_id, m.pos, pp.rowid
    FROM m JOIN preference_pairs pp ON pp.instruction_id = m.instruction_id
    WHERE m.response_id IS NULL
    UNION ALL
    SELECT m.instruction_id, 'instruction', m.instruction_id, m.pos, 0
    FROM m
    WHERE m.response_id IS NULL
      AND NOT EXISTS (SELECT 1 FROM preference_pairs pp WHERE pp.instruction_id = m.instruction_id)
)
SELECT target_id, target_kind, instruction_id FROM targets ORDER BY pos, sub LIMIT ?
"""
# What kind of reviewable target each id is, and its instruction; ids that are none of these
# (a pairwise judge's (a, b) ordering id, a document) are left out.
SELECT_TARGET_ROWS = """
SELECT t.id AS target_id,
       CASE WHEN r.id IS NOT NULL THEN 'response' WHEN pp.id IS NOT NULL THEN 'pair' ELSE 'instruction' END
           AS target_kind,
       coalesce(r.instruction_id, pp.instruction_id, i.id) AS instruction_id
FROM (SELECT DISTINCT unnest(?::VARCHAR[]) AS id) t
LEFT JOIN responses r ON r.id = t.id
LEFT JOIN preference_pairs pp ON pp.id = t.id
LEFT JOIN instructions i ON i.id = t.id
WHERE r.id IS NOT NULL OR pp.id IS NOT NULL OR i.id IS NOT NULL
"""
# The current decision of each target (target_decisions: the latest non-empty decision wins).
SELECT_TARGET_DECISIONS = "SELECT target_id, decision FROM target_decisions WHERE list_contains(?, target_id)"
# The newest review row of a target, as stored (what the page reads back after a save).
SELECT_LATEST_REVIEW = """
SELECT id, target_kind, target_id, decision, edited_text, note, reviewer, source, created_at
FROM reviews WHERE target_id = ?
ORDER BY created_at DESC, rowid DESC
LIMIT 1
"""


class QueueQueries:
    """Mixed into core.store.Store; uses the BaseStore plumbing (_rows/_df/_dicts/transaction)."""

    def filter_targets(self, f: ExploreFilter, limit: int, order: str = "oldest") -> list[dict]:
        """The first `limit` review targets of the instructions `f` matches, in Explore's order:
        target_id, target_kind (pair | response | instruction), instruction_id."""
        if order not in EXPLORE_ORDERS:
            raise ValueError(f"order must be one of {sorted(EXPLORE_ORDERS)}, not {order!r}")
        where, values = self.explore_where(f)
        sql = SELECT_FILTER_TARGETS.format(where=where, order=EXPLORE_ORDERS[order])
        return self._dicts(sql, values + [int(limit), int(limit)])

    def snapshot_targets(self, name: str, limit: int) -> list[dict]:
        """The first `limit` review targets of a snapshot's members, in member order."""
        return self._dicts(SELECT_SNAPSHOT_TARGETS, [name, int(limit)])

    def target_rows(self, target_ids: list[str]) -> dict[str, dict]:
        """target_id -> {target_id, target_kind, instruction_id} for the ids that are reviewable."""
        if not target_ids:
            return {}
        return {row["target_id"]: row for row in self._dicts(SELECT_TARGET_ROWS, [list(target_ids)])}

    def target_decisions(self, target_ids: list[str]) -> dict[str, str]:
        """target_id -> its current decision (accept | reject | tie), for the ids that have one."""
        if not target_ids:
            return {}
        return dict(self._rows(SELECT_TARGET_DECISIONS, [list(target_ids)]))

    def latest_review(self, target_id: str) -> dict | None:
        rows = self._dicts(SELECT_LATEST_REVIEW, [target_id])
        return rows[0] if rows else None
