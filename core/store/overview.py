"""The Home page's workspace overview: what a round needs, tasks by review state."""

from __future__ import annotations

import pandas as pd  # noqa: F401


class OverviewQueries:
    """Mixed into core.store.Store; uses the BaseStore plumbing (_rows/_df/_dicts/transaction)."""
