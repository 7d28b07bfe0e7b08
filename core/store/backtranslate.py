"""Humpback's backtranslation: candidates (document → generated instruction), curation scores (core.backtranslate)."""

from __future__ import annotations


class BacktranslateQueries:
    """Store methods of this area (mixed into core.store.Store)."""
