"""The review queue's queries (core.review_queue): the targets of a filter or snapshot, their decisions, progress."""

from __future__ import annotations

import pandas as pd  # noqa: F401


class QueueQueries:
    """Mixed into core.store.Store; uses the BaseStore plumbing (_rows/_df/_dicts/transaction)."""
