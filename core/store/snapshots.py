"""SQL for curation snapshots: see core.curate."""

from __future__ import annotations


class SnapshotQueries:
    """Mixed into core.store.Store; uses its _rows/_df/_dicts/transaction plumbing."""
