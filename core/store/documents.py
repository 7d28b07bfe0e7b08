"""Corpus documents: browse, filter and search them, and list the instructions generated from each
(the Explore page's Documents view)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from core.store.base import like_pattern


@dataclass(frozen=True)
class DocumentFilter:
    """What the Documents view selects. Empty lists and None mean 'no constraint'."""

    datasets: list[str] = field(default_factory=list)  # dataset names
    sources: list[str] = field(default_factory=list)
    search: str = ""  # a case-insensitive substring of the text or the title
    min_chars: int | None = None
    max_chars: int | None = None

    def __post_init__(self) -> None:
        if self.min_chars is not None and self.max_chars is not None and self.min_chars > self.max_chars:
            raise ValueError(f"min_chars {self.min_chars} is above max_chars {self.max_chars}")


# Each fragment is a constant; `documents_where` ANDs the ones a filter uses (as explore_where does).
DOCUMENT_FILTERS: dict[str, str] = {
    "dataset_many": "list_contains(?, d.dataset_id)",
    "source_many": "list_contains(?, d.source_file)",
    "search": "(d.text ILIKE ? ESCAPE '\\' OR d.title ILIKE ? ESCAPE '\\')",
    "min_chars": "d.n_chars >= ?",
    "max_chars": "d.n_chars <= ?",
}
DOCUMENT_PREVIEW_CHARS = 200
SELECT_DOCUMENT_DATASET_IDS = "SELECT id FROM datasets WHERE list_contains(?, name)"
DOCUMENTS_COUNT = "SELECT count(*) FROM documents d WHERE {where}"
# rowid is insertion order: file by file, passage by passage. Bind order: preview length, the
# filter's values, limit, offset.
DOCUMENTS_PAGE = """
SELECT d.id, ds.name AS dataset, d.source_file, d.segment, d.source_line, d.title, d.n_chars,
       left(d.text, ?) AS preview
FROM documents d JOIN datasets ds ON ds.id = d.dataset_id
WHERE {where}
ORDER BY d.rowid
LIMIT ? OFFSET ?
"""
# Instructions generated from a document name it as their parent (instructions.parent_id).
# Counted for the page's ids only; parent_id has no index, so this scans one column.
PAGE_DOCUMENT_CHILDREN = """
SELECT parent_id, count(*) AS n FROM instructions WHERE list_contains(?, parent_id) GROUP BY parent_id
"""
SELECT_DOCUMENT = """
SELECT d.*, ds.name AS dataset FROM documents d JOIN datasets ds ON ds.id = d.dataset_id WHERE d.id = ?
"""
SELECT_DOCUMENT_CHILDREN = """
SELECT i.id, ds.name AS dataset, left(i.text, ?) AS instruction, i.round, i.method, i.model, i.created_at
FROM instructions i JOIN datasets ds ON ds.id = i.dataset_id
WHERE i.parent_id = ?
ORDER BY i.rowid
LIMIT ?
"""
SELECT_DOCUMENT_DATASETS = """
SELECT name FROM datasets WHERE id IN (SELECT DISTINCT dataset_id FROM documents) ORDER BY name
"""
# Source files of the chosen datasets' documents (all datasets when none is chosen).
# Bind order: dataset ids, dataset ids, limit.
SELECT_DOCUMENT_SOURCES = """
SELECT DISTINCT source_file FROM documents
WHERE source_file IS NOT NULL AND (len(?::VARCHAR[]) = 0 OR list_contains(?, dataset_id))
ORDER BY source_file LIMIT ?
"""
# Documents and instructions per named dataset (the Explore page's "has documents, no
# instructions" message).
SELECT_DATASET_CONTENT = """
SELECT ds.name, ds.kind,
       (SELECT count(*) FROM documents d WHERE d.dataset_id = ds.id) AS documents,
       (SELECT count(*) FROM instructions i WHERE i.dataset_id = ds.id) AS instructions
FROM datasets ds WHERE list_contains(?, ds.name) ORDER BY ds.name
"""


class DocumentQueries:
    """Mixed into core.store.Store; uses the BaseStore plumbing (_rows/_df/_dicts/transaction)."""

    def _document_dataset_ids(self, names: list[str]) -> list[str]:
        return [r[0] for r in self._rows(SELECT_DOCUMENT_DATASET_IDS, [list(names)])]

    def documents_where(self, f: DocumentFilter) -> tuple[str, list]:
        """AND the constant fragments this filter needs; return (where clause, bind values)."""
        parts: list[str] = []
        values: list = []

        def add(fragment: str, *vals) -> None:
            parts.append(DOCUMENT_FILTERS[fragment])
            values.extend(vals)

        if f.datasets:
            add("dataset_many", self._document_dataset_ids(f.datasets))  # an unknown name matches nothing
        if f.sources:
            add("source_many", list(f.sources))
        if f.search.strip():
            pattern = like_pattern(f.search.strip())
            add("search", pattern, pattern)
        if f.min_chars is not None:
            add("min_chars", int(f.min_chars))
        if f.max_chars is not None:
            add("max_chars", int(f.max_chars))
        return (" AND ".join(parts) if parts else "TRUE"), values

    def documents_count(self, f: DocumentFilter) -> int:
        where, values = self.documents_where(f)
        return int(self._rows(DOCUMENTS_COUNT.format(where=where), values)[0][0])

    def documents_page(self, f: DocumentFilter, limit: int = 50, offset: int = 0) -> pd.DataFrame:
        """One page of documents in file order, with a preview and n_instructions (the
        instructions generated from each, by parent_id)."""
        if not 1 <= limit <= 500:
            raise ValueError(f"page size must be between 1 and 500, not {limit}")
        where, values = self.documents_where(f)
        page = self._df(DOCUMENTS_PAGE.format(where=where),
                        [DOCUMENT_PREVIEW_CHARS, *values, int(limit), int(max(offset, 0))])
        ids = page["id"].tolist()
        children = dict(self._rows(PAGE_DOCUMENT_CHILDREN, [ids])) if ids else {}
        page["n_instructions"] = [int(children.get(i, 0)) for i in ids]
        return page

    def document(self, document_id: str) -> dict | None:
        """One document: its text, title, source file, line and segment, and its dataset's name."""
        rows = self._dicts(SELECT_DOCUMENT, [document_id])
        return rows[0] if rows else None

    def document_instructions(self, document_id: str, limit: int = 100, preview_chars: int = 200) -> pd.DataFrame:
        """The instructions generated from a document (parent_id), oldest first."""
        return self._df(SELECT_DOCUMENT_CHILDREN, [int(preview_chars), document_id, int(limit)])

    def document_filter_options(self, datasets: list[str] | None = None, source_limit: int = 200) -> dict[str, list]:
        """The datasets that hold documents, and the source files of the chosen ones."""
        ids = self._document_dataset_ids(datasets) if datasets else []
        sources = [] if datasets and not ids else \
            [r[0] for r in self._rows(SELECT_DOCUMENT_SOURCES, [ids, ids, int(source_limit)])]
        return {"datasets": [r[0] for r in self._rows(SELECT_DOCUMENT_DATASETS)], "sources": sources}

    def dataset_contents(self, names: list[str]) -> pd.DataFrame:
        """(name, kind, documents, instructions) for the named datasets."""
        return self._df(SELECT_DATASET_CONTENT, [list(names)])
