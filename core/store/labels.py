"""SQL for labels (tasks, categories) and workspace settings: see core.tasks."""

from __future__ import annotations


class LabelQueries:
    """Mixed into core.store.Store; uses its _rows/_df/_dicts/transaction plumbing."""
