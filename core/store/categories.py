"""CITING's categories, memberships and proposals (core.categories), and what revision reads
(core.revise). Revisions themselves are responses (role `revised…`, parent_id = the draft).

The proposals table is fed by the propose_categories stage's shards: its insert is added to
core.store.imports' per-table map below, so the ordinary job ingest writes it.
"""

from __future__ import annotations

import json

from core.selection import ExploreFilter
from core.store.imports import _INSERT_BY_TABLE

# -- proposals ----------------------------------------------------------------------------------

INSERT_CATEGORY_PROPOSALS = "INSERT OR IGNORE INTO category_proposals BY NAME SELECT * FROM batch"
_INSERT_BY_TABLE["category_proposals"] = INSERT_CATEGORY_PROPOSALS

SELECT_PROPOSALS = """
SELECT id, scheme, model, job_id, round, sample_ids, raw, parsed, parse_error, call_error, template_hash, params,
       created_at
FROM category_proposals WHERE scheme = ? ORDER BY created_at, id
"""

# -- categories ---------------------------------------------------------------------------------

SELECT_CATEGORIES = """
SELECT c.id, c.scheme, c.name, c.description, c.criteria, c.examples, c.origin, c.proposal_id, c.created_at,
       c.updated_at, count(m.instruction_id) AS members,
       count(m.instruction_id) FILTER (WHERE m.source = 'seed') AS seeds, avg(m.similarity) AS mean_similarity
FROM categories c LEFT JOIN category_members m ON m.category_id = c.id AND m.scheme = c.scheme
WHERE c.scheme = ?
GROUP BY ALL
ORDER BY c.created_at, c.name
"""
SELECT_CATEGORY = """
SELECT id, scheme, name, description, criteria, examples, origin, proposal_id, created_at, updated_at
FROM categories WHERE id = ?
"""
SELECT_SCHEMES = """
SELECT c.scheme, count(DISTINCT c.id) AS categories,
       (SELECT count(*) FROM category_members m WHERE m.scheme = c.scheme) AS members
FROM categories c GROUP BY c.scheme ORDER BY c.scheme
"""
INSERT_CATEGORY = """
INSERT INTO categories (id, scheme, name, description, criteria, examples, origin, proposal_id)
VALUES (?, ?, ?, ?, ?::JSON, ?::JSON, ?, ?)
"""
UPDATE_CATEGORY = """
UPDATE categories SET name = ?, description = ?, criteria = ?::JSON, origin = ?, updated_at = current_timestamp
WHERE id = ?
"""
DELETE_CATEGORY = "DELETE FROM categories WHERE id = ?"
DELETE_CATEGORY_MEMBERS = "DELETE FROM category_members WHERE category_id = ?"

# -- members ------------------------------------------------------------------------------------

# Bind order: scheme, instruction ids. An instruction has one category per scheme: a new
# membership replaces the old one (delete, then insert, in one transaction).
DELETE_MEMBERSHIPS = "DELETE FROM category_members WHERE scheme = ? AND list_contains(?::VARCHAR[], instruction_id)"
INSERT_MEMBER = """
INSERT INTO category_members (scheme, instruction_id, category_id, similarity, source, round)
VALUES (?, ?, ?, ?, ?, ?)
"""
# The seed members of every category of a scheme, with their texts (what a category's centroid is
# made of, with the category's example texts).
SELECT_SEED_TEXTS = """
SELECT m.category_id, i.id AS instruction_id, i.text, i.input
FROM category_members m JOIN instructions i ON i.id = m.instruction_id
WHERE m.scheme = ? AND m.source = 'seed'
ORDER BY i.rowid
"""
# The selected instructions that have no category of the scheme yet. Bind order: the selection's
# values, scheme, limit.
SELECT_UNASSIGNED = """
SELECT i.id, i.text, i.input
FROM instructions i
WHERE {where}
  AND NOT EXISTS (SELECT 1 FROM category_members m WHERE m.scheme = ? AND m.instruction_id = i.id)
ORDER BY i.rowid
LIMIT ?
"""
# A category's members, most similar first (seeds without a similarity last). Bind: id, limit.
SELECT_MEMBERS = """
SELECT m.instruction_id, m.similarity, m.source, m.round, i.text, i.input, ct.task
FROM category_members m
JOIN instructions i ON i.id = m.instruction_id
LEFT JOIN current_tasks ct ON ct.instruction_id = i.id
WHERE m.category_id = ?
ORDER BY m.similarity DESC NULLS LAST, i.rowid
LIMIT ?
"""
# Every member of a scheme with its category and task (the embedding map). Bind: scheme, limit.
SELECT_SCHEME_MEMBERS = """
SELECT m.instruction_id, m.category_id, c.name AS category, m.similarity, m.source, i.text, i.input, ct.task
FROM category_members m
JOIN categories c ON c.id = m.category_id
JOIN instructions i ON i.id = m.instruction_id
LEFT JOIN current_tasks ct ON ct.instruction_id = i.id
WHERE m.scheme = ?
ORDER BY i.rowid
LIMIT ?
"""

# -- revision ---------------------------------------------------------------------------------

# Drafts to revise: answers of a role (in a round, when given) to the selected instructions that
# have a category of the scheme, with its criteria, and no revision of the output role yet (NOT
# EXISTS: parent_id is NULL on most responses, and NOT IN over a NULL matches nothing).
# Bind order: (the selection's values), scheme, role, round x2, out_role, limit.
SELECT_DRAFTS = """
SELECT r.id AS response_id, i.id AS instruction_id, i.text, i.input, r.text AS draft, r.round AS draft_round,
       c.id AS category_id, c.name AS category, c.criteria
FROM instructions i
JOIN category_members m ON m.instruction_id = i.id AND m.scheme = ?
JOIN categories c ON c.id = m.category_id
JOIN responses r ON r.instruction_id = i.id
WHERE {where} AND r.role = ? AND (?::INTEGER IS NULL OR r.round = ?)
  AND NOT EXISTS (SELECT 1 FROM responses s WHERE s.role = ? AND s.parent_id = r.id)
ORDER BY i.rowid, r.rowid
LIMIT ?
"""
# Revisions (responses made by the revise stage) with their drafts, newest round first.
# Bind order: role x2 (NULL: any), round x2, limit, offset.
SELECT_REVISIONS = """
SELECT v.id AS revision_id, v.role, v.round, v.model, v.text AS revision, v.template_hash,
       v.meta AS meta, d.id AS draft_id, d.text AS draft, d.model AS draft_model,
       i.id AS instruction_id, i.text AS instruction, i.input, i.dataset_id
FROM responses v
JOIN responses d ON d.id = v.parent_id
JOIN instructions i ON i.id = v.instruction_id
WHERE v.method = 'revise' AND v.meta->>'$.mode' = 'direct'
  AND (?::VARCHAR IS NULL OR v.role = ?) AND (?::INTEGER IS NULL OR v.round = ?)
ORDER BY v.round DESC, i.rowid
LIMIT ? OFFSET ?
"""
COUNT_REVISIONS = """
SELECT count(*) FROM responses v
WHERE v.method = 'revise' AND v.meta->>'$.mode' = 'direct'
  AND (?::VARCHAR IS NULL OR v.role = ?) AND (?::INTEGER IS NULL OR v.round = ?)
"""
SELECT_REVISION_ROLES = """
SELECT DISTINCT role, round FROM responses WHERE method = 'revise' ORDER BY round, role
"""

# -- aspect scores ------------------------------------------------------------------------------

# The mean parsed score of a judge and rubric (in a mode; NULL: any) on the answers of a role to
# the given instructions, with how many answers had one. Bind order: ids, role, judge, rubric,
# mode x2.
SELECT_MEAN_SCORE = """
WITH per_answer AS (
    SELECT r.id, avg(j.score) AS score
    FROM responses r
    JOIN judgments j ON j.target_id = r.id AND j.target_kind = 'response'
    WHERE list_contains(?::VARCHAR[], r.instruction_id) AND r.role = ? AND j.judge_model = ? AND j.rubric = ?
      AND (?::VARCHAR IS NULL OR j.mode = ?) AND j.score IS NOT NULL
    GROUP BY r.id
)
SELECT avg(score), count(*) FROM per_answer
"""
# The answers of roles to the given instructions with no verdict of a judge and rubric (any mode
# when NULL). Bind order: ids, roles, judge, rubric, mode x2.
COUNT_UNJUDGED = """
SELECT count(*) FROM responses r
WHERE list_contains(?::VARCHAR[], r.instruction_id) AND list_contains(?::VARCHAR[], r.role)
  AND NOT EXISTS (SELECT 1 FROM judgments j WHERE j.target_id = r.id AND j.judge_model = ? AND j.rubric = ?
                  AND (?::VARCHAR IS NULL OR j.mode = ?))
"""


def _json(value):
    return json.loads(value) if isinstance(value, str) else value


def _category(row: dict) -> dict:
    return row | {"criteria": _json(row["criteria"]) or [], "examples": _json(row.get("examples")) or []}


class CategoryQueries:
    """Store methods of this area (mixed into core.store.Store)."""

    # -- proposals --------------------------------------------------------------------------------

    def category_proposals(self, scheme: str) -> list[dict]:
        return [r | {"sample_ids": _json(r["sample_ids"]) or [], "parsed": _json(r["parsed"]),
                     "params": _json(r["params"])} for r in self._dicts(SELECT_PROPOSALS, [scheme])]

    # -- categories -------------------------------------------------------------------------------

    def categories(self, scheme: str) -> list[dict]:
        """The scheme's categories, oldest first, with member and seed counts and mean similarity."""
        return [_category(r) for r in self._dicts(SELECT_CATEGORIES, [scheme])]

    def category(self, category_id: str) -> dict | None:
        rows = self._dicts(SELECT_CATEGORY, [category_id])
        return _category(rows[0]) if rows else None

    def category_schemes(self) -> list[dict]:
        return self._dicts(SELECT_SCHEMES)

    def insert_category(self, cur, row: dict) -> None:
        cur.execute(INSERT_CATEGORY, [row["id"], row["scheme"], row["name"], row.get("description") or "",
                                      json.dumps(list(row.get("criteria") or [])),
                                      json.dumps(list(row.get("examples") or [])), row["origin"],
                                      row.get("proposal_id")])

    def update_category(self, category_id: str, name: str, description: str, criteria: list[str],
                        origin: str) -> None:
        with self.transaction() as cur:
            cur.execute(UPDATE_CATEGORY, [name, description, json.dumps(list(criteria)), origin, category_id])

    def delete_category(self, category_id: str) -> None:
        """The category and its memberships (its instructions become unassigned)."""
        with self.transaction() as cur:
            cur.execute(DELETE_CATEGORY_MEMBERS, [category_id])
            cur.execute(DELETE_CATEGORY, [category_id])

    # -- members ----------------------------------------------------------------------------------

    def set_memberships(self, cur, scheme: str, rows: list[dict]) -> None:
        """Rows {instruction_id, category_id, similarity, source, round}; each replaces the
        instruction's earlier membership in the scheme. Runs inside the caller's transaction."""
        if not rows:
            return
        cur.execute(DELETE_MEMBERSHIPS, [scheme, [r["instruction_id"] for r in rows]])
        cur.executemany(INSERT_MEMBER, [[scheme, r["instruction_id"], r["category_id"], r.get("similarity"),
                                         r["source"], int(r.get("round", 0))] for r in rows])

    def category_seed_texts(self, scheme: str) -> list[dict]:
        return self._dicts(SELECT_SEED_TEXTS, [scheme])

    def unassigned_instructions(self, f: ExploreFilter, scheme: str, limit: int) -> list[dict]:
        where, values = self.explore_where(f)
        return self._dicts(SELECT_UNASSIGNED.format(where=where), values + [scheme, int(limit)])

    def category_members(self, category_id: str, limit: int = 20) -> list[dict]:
        return self._dicts(SELECT_MEMBERS, [category_id, int(limit)])

    def scheme_members(self, scheme: str, limit: int = 5000) -> list[dict]:
        return self._dicts(SELECT_SCHEME_MEMBERS, [scheme, int(limit)])

    # -- revision ---------------------------------------------------------------------------------

    def drafts_to_revise(self, f: ExploreFilter, scheme: str, role: str, round: int | None, out_role: str,
                         limit: int) -> list[dict]:
        where, values = self.explore_where(f)
        rows = self._dicts(SELECT_DRAFTS.format(where=where),
                           [scheme] + values + [role, round, round, out_role, int(limit)])
        return [r | {"criteria": _json(r["criteria"]) or []} for r in rows]

    def revisions(self, role: str | None = None, round: int | None = None, limit: int = 50,
                  offset: int = 0) -> list[dict]:
        rows = self._dicts(SELECT_REVISIONS, [role, role, round, round, int(limit), int(offset)])
        return [r | {"meta": _json(r["meta"]) or {}} for r in rows]

    def count_revisions(self, role: str | None = None, round: int | None = None) -> int:
        return int(self._rows(COUNT_REVISIONS, [role, role, round, round])[0][0])

    def revision_roles(self) -> list[tuple[str, int]]:
        return [(r[0], int(r[1])) for r in self._rows(SELECT_REVISION_ROLES)]

    # -- aspect scores ----------------------------------------------------------------------------

    def mean_score(self, instruction_ids: list[str], role: str, judge: str, rubric: str,
                   mode: str | None = None) -> tuple[float | None, int]:
        mean, n = self._rows(SELECT_MEAN_SCORE, [list(instruction_ids), role, judge, rubric, mode, mode])[0]
        return (None if mean is None else float(mean)), int(n)

    def count_unjudged(self, instruction_ids: list[str], roles: list[str], judge: str, rubric: str,
                       mode: str | None = None) -> int:
        return int(self._rows(COUNT_UNJUDGED, [list(instruction_ids), list(roles), judge, rubric, mode, mode])[0][0])
