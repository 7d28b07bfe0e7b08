"""SQL for difficulty (MFD, IFD): see core.difficulty."""

from __future__ import annotations


class DifficultyQueries:
    """Mixed into core.store.Store; uses its _rows/_df/_dicts/transaction plumbing."""
