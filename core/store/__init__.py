"""The only package that talks to DuckDB.

Every statement is a named constant with `?` bind parameters. Dynamic filters are built by
joining named fragments from `EXPLORE_FILTERS` with AND; user values never enter SQL text.

Concurrency (DESIGN.md §3): DuckDB allows one read-write process per file. A `Store` is that
process's single connection; each thread gets its own cursor, and writes are serialised by one
lock so two threads never race a transaction. Another process that tries to open the file gets
`WorkspaceBusy`, never DuckDB's raw lock error.

Layout: each module of this package holds one area's SQL constants and a mixin with the `Store`
methods of that area; `base` holds the connection plumbing, the errors, migrations and the
helpers the others share. `Store` below only composes them; the names other code imports from
`core.store` are re-exported here.
"""

from __future__ import annotations

from core.selection import ExploreFilter
from core.store.backtranslate import BacktranslateQueries
from core.store.base import BaseStore, BulkUnreadable, WorkspaceBusy, like_pattern
from core.store.bench import BenchQueries
from core.store.categories import CategoryQueries
from core.store.corpus import CorpusQueries
from core.store.difficulty import DifficultyQueries
from core.store.documents import DocumentQueries
from core.store.evaluations import EvaluationQueries
from core.store.expand import ExpandQueries
from core.store.explore import EXPLORE_FILTERS, EXPLORE_ORDERS, ExploreQueries
from core.store.export import ExportQueries
from core.store.feedback import FeedbackQueries
from core.store.imports import _INSERT_BY_TABLE, ImportQueries  # noqa: F401 (tests add tables to the map)
from core.store.jobs import JobQueries
from core.store.judgments import JudgmentQueries
from core.store.labels import LabelQueries
from core.store.models import ModelQueries
from core.store.overview import OverviewQueries
from core.store.queue import QueueQueries
from core.store.ranking import RankingQueries
from core.store.rounds import RoundQueries
from core.store.snapshots import SnapshotQueries
from core.store.text_index import TextIndexQueries
from core.text_index import stop_background as stop_text_index_background

__all__ = [
    "EXPLORE_FILTERS",
    "EXPLORE_ORDERS",
    "BulkUnreadable",
    "ExploreFilter",
    "Store",
    "WorkspaceBusy",
    "like_pattern",
]

# Their public home is core.store: tracebacks (what a CLI user sees) name them core.store.X.
BulkUnreadable.__module__ = __name__
WorkspaceBusy.__module__ = __name__


class Store(BaseStore, ImportQueries, ExploreQueries, JudgmentQueries, JobQueries, ModelQueries, ExportQueries,
            BenchQueries, LabelQueries, DifficultyQueries, SnapshotQueries, DocumentQueries, QueueQueries, OverviewQueries,
            EvaluationQueries, RoundQueries, ExpandQueries, FeedbackQueries, RankingQueries, CorpusQueries,
            BacktranslateQueries, CategoryQueries, TextIndexQueries):
    """One DuckDB connection for this process; a cursor per thread; serialised writes."""

    def close(self) -> None:
        stop_text_index_background(self)  # a background index catch-up reads through this connection
        super().close()
