"""CITING's categories, memberships and revisions (core.categories, core.revise)."""

from __future__ import annotations


class CategoryQueries:
    """Store methods of this area (mixed into core.store.Store)."""
