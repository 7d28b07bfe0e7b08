"""Corpus documents: browse, filter, search, and the instructions generated from each (the Explore page's Documents view)."""

from __future__ import annotations

import pandas as pd  # noqa: F401


class DocumentQueries:
    """Mixed into core.store.Store; uses the BaseStore plumbing (_rows/_df/_dicts/transaction)."""
