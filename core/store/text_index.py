"""SQL of the text index (core/text_index.py): its high-water mark, the lowered texts it indexes,
and the exact ILIKE check on the candidates it returns (TextIndexQueries).

The exact check is the scan's own predicate (EXPLORE_FILTERS' search fragments in
core/store/explore.py, the same `like_pattern`), run on the candidate rows only: the results
are the scan's, the index only decides which rows are read. Candidates are joined from an
`unnest(?)` of rowids, which DuckDB turns into a filter on the scan's rowids, so only the blocks
holding a candidate are read.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from core import text_index
from core.store.base import like_pattern

# Row counts (rowids are 0..count-1: samples are only appended) and the last migration.
SELECT_TEXT_HIGH_WATER = """
SELECT (SELECT count(*) FROM instructions), (SELECT count(*) FROM responses),
       (SELECT coalesce(max(name), '') FROM schema_migrations)
"""
# The mark and the lowered query in one statement: it runs on every search, three times a page.
SELECT_TEXT_SEARCH_STATE = """
SELECT (SELECT count(*) FROM instructions), (SELECT count(*) FROM responses),
       (SELECT coalesce(max(name), '') FROM schema_migrations), lower(?)
"""
# What is indexed, lowered by DuckDB's lower(), the case folding ILIKE applies. Instruction text
# and input are one document (a newline apart): a window across the two only adds a candidate.
SELECT_INSTRUCTION_TEXTS = """
SELECT rowid, lower(text) || chr(10) || lower(input) FROM instructions WHERE rowid >= ? AND rowid < ?
"""
# A response's instruction rowid is NULL while its instruction is not there yet (it stays pending).
SELECT_RESPONSE_TEXTS = """
SELECT r.rowid, i.rowid, lower(r.text)
FROM responses r LEFT JOIN instructions i ON i.id = r.instruction_id
WHERE (r.rowid >= ? AND r.rowid < ?) OR list_contains(?::BIGINT[], r.rowid)
"""
# The exact check: the search fragments' predicates on the candidates only.
TEXT_MATCH_INSTRUCTIONS = """
SELECT i.rowid FROM instructions i
WHERE i.rowid IN (SELECT unnest(?::BIGINT[])) AND (i.text ILIKE ? ESCAPE '\\' OR i.input ILIKE ? ESCAPE '\\')
"""
TEXT_MATCH_RESPONSES = """
SELECT r.rowid FROM responses r WHERE r.rowid IN (SELECT unnest(?::BIGINT[])) AND r.text ILIKE ? ESCAPE '\\'
"""

_MEMO_SIZE = 8  # a page runs count, page and histogram with the same search


class TextIndexQueries:
    """Mixed into core.store.Store; uses the BaseStore plumbing (_rows, read_only, path)."""

    @property
    def text_index_folder(self) -> Path:
        return text_index.folder_for(Path(self.path).parent)

    def text_high_water(self) -> text_index.HighWater:
        n_instructions, n_responses, migration = self._rows(SELECT_TEXT_HIGH_WATER)[0]
        return text_index.HighWater(int(n_instructions), int(n_responses), str(migration))

    def _stream(self, sql: str, params: list, batch: int) -> Iterator[tuple]:
        """Rows in batches from a cursor of their own (the caller's cursor stays free)."""
        cur = self._con.cursor()
        try:
            cur.execute(sql, params)
            while rows := cur.fetchmany(batch):
                yield from rows
        finally:
            cur.close()

    def text_index_instructions(self, start: int, stop: int, batch: int) -> Iterator[tuple[int, str]]:
        return self._stream(SELECT_INSTRUCTION_TEXTS, [int(start), int(stop)], batch)

    def text_index_responses(self, start: int, stop: int, pending: list[int],
                             batch: int) -> Iterator[tuple[int, int | None, str]]:
        return self._stream(SELECT_RESPONSE_TEXTS, [int(start), int(stop), [int(r) for r in pending]], batch)

    def text_search_rows(self, query: str, responses: bool) -> list[int] | None:
        """The rowids of the instructions whose text or input (or, with `responses`, one of whose
        responses) contains `query` case-insensitively, exactly as the scan finds them, from the
        text index; None when the index cannot answer (core/text_index.py says when), and the
        caller scans."""
        if len(query) < text_index.GRAM or not text_index.HAVE_TANTIVY \
                or not (self.text_index_folder / text_index.META).exists():
            return None  # (most workspaces: under MIN_ROWS there is no index, and no query is spent)
        n_instructions, n_responses, migration, lowered = self._rows(SELECT_TEXT_SEARCH_STATE, [query])[0]
        now = text_index.HighWater(int(n_instructions), int(n_responses), str(migration))
        lag = text_index.behind(self, now)
        if lag is None:
            return None
        if lag:  # rows written by a path that does not update the index: catch up off this thread
            text_index.start_background_update(self)
            return None
        key = (query, bool(responses), now)
        memo = self.__dict__.setdefault("_text_search_memo", {})
        if key in memo:
            return memo[key]
        try:
            limit = text_index.candidate_limit(now.instructions + (now.responses if responses else 0))
            found = text_index.open_index(self.text_index_folder, writable=False).candidates(lowered, responses, limit)
        except Exception as exc:  # a damaged index (or one being rebuilt) must not break Explore: scan
            text_index.log.warning("text index search failed, scanning instead: %s", exc)
            return None
        result = None  # declined (too many candidates): remembered too, so a page asks tantivy once
        if found is not None:
            rows, response_owners = found
            pattern = like_pattern(query)
            matched = {r[0] for r in self._rows(TEXT_MATCH_INSTRUCTIONS, [rows, pattern, pattern])} if rows else set()
            if response_owners:
                matched.update(response_owners[r[0]] for r in
                               self._rows(TEXT_MATCH_RESPONSES, [list(response_owners), pattern]))
            result = sorted(matched)
        if len(memo) >= _MEMO_SIZE:
            memo.pop(next(iter(memo)))
        memo[key] = result
        return result

    def refresh_text_index(self) -> None:
        """After a write transaction commits (an import, a job's shards): catch the text index up,
        at once when that is quick, else in a background thread (core.text_index.update_soon)."""
        text_index.update_soon(self)
