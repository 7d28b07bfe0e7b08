"""A trigram index of instruction and response text that narrows Explore's text search.

Explore's search is a case-insensitive substring match (`ILIKE '%query%'`), which DuckDB answers
by reading every instruction's text: 80-140 ms at 1M samples, seconds on a busy machine. This
index answers "which rows could contain the query" from postings instead, and the store then runs
the very same ILIKE on those candidate rows only, so the results are exactly the scan's.

Why it never loses a match: DuckDB's `ILIKE ... ESCAPE` lowercases both sides (its `lower()`) and
matches the literal pattern as a substring. The index holds every three-code-point window of
`lower(text)` (computed by DuckDB, so the same lowercasing), and a query asks for every window of
`lower(query)`; a text that contains the query contains all of its windows. The converse does not
hold (the windows may sit apart), which is what the exact check on the candidates is for.

Documents: one per instruction (`instruction`: lower(text) + newline + lower(input), `row`: its
rowid in `instructions`) and one per response (`response`: lower(text), `rrow`: its rowid in
`responses`, `row`: its instruction's rowid). Rows are never deleted and texts never edited in
place (an edit is a review), so rowids are stable and new rows only ever append: the index keeps
a high-water mark (`HighWater`: both tables' row counts and the last migration) and catches up by
reading rows past it. Any other difference (a migration, fewer rows) rebuilds it from scratch.

The store falls back to the scan whenever the index cannot answer exactly: tantivy not
installed, no index yet, an index behind the catalog (rows written by a path that does not call
`update`), a query shorter than three characters, or more candidates than `candidate_limit`
(there the scan is as fast). Small workspaces (under MIN_ROWS instructions) get no index at all.

All SQL is in core/store/text_index.py; this module takes the store as its only link to DuckDB.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

try:  # a dependency, but the store must keep working (by scanning) where it is missing
    import tantivy
except ImportError:  # pragma: no cover - exercised by monkeypatching HAVE_TANTIVY
    tantivy = None

log = logging.getLogger(__name__)

HAVE_TANTIVY = tantivy is not None
FORMAT = 1  # bump when the documents change: an index of another format is rebuilt
META = "winnow_meta.json"  # the high-water mark, beside tantivy's own files
FOLDER = Path("index") / "text"  # under the workspace root
GRAM = 3
TOKENIZER = "winnow_trigram"
# Below this many instructions the scan takes a few milliseconds: no index is built.
MIN_ROWS = 20_000
# More candidates than this and the exact check reads nearly every block of the table anyway: at
# 1M rows, 5,000 scattered candidates took as long as the scan. The limit is also a share of the
# rows searched (CANDIDATE_SHARE), since a smaller table has fewer blocks to skip.
MAX_CANDIDATES = 5_000
CANDIDATE_SHARE = 0.005
MIN_CANDIDATE_LIMIT = 500
# A query whose rarest window is in more than this many times `limit` documents is declined
# before its postings are intersected (that alone costs a good part of a scan at 1M rows): the
# intersection is then almost surely over the limit too. Declining is always safe: the scan runs.
DECLINE_FACTOR = 20
# A write that leaves the index further behind than this is caught up in a background thread,
# so a large import does not wait for its index (searches scan until it is done).
SYNC_ROWS = 50_000
BATCH_ROWS = 20_000  # rows fetched from DuckDB per batch
COMMIT_ROWS = 200_000  # tantivy commits (and the mark advances) at least this often in a build
WRITER_HEAP = 128_000_000


@dataclass(frozen=True)
class HighWater:
    """What the index has seen of the catalog: row counts (rowids are 0..count-1, since rows are
    only appended) and the last applied migration (a migration may rewrite a table)."""

    instructions: int
    responses: int
    migration: str

    @classmethod
    def empty(cls) -> HighWater:
        return cls(0, 0, "")


def folder_for(workspace_root: Path) -> Path:
    return Path(workspace_root) / FOLDER


def candidate_limit(rows_searched: int) -> int:
    """How many candidates are worth checking one by one rather than scanning `rows_searched`."""
    return min(MAX_CANDIDATES, max(MIN_CANDIDATE_LIMIT, int(rows_searched * CANDIDATE_SHARE)))


def grams(lowered: str) -> list[str]:
    """The distinct three-code-point windows of an already-lowercased string."""
    return sorted({lowered[k:k + GRAM] for k in range(len(lowered) - GRAM + 1)})


# One lock per index folder, across the stores of this process: one writer at a time.
_LOCKS: dict[str, threading.RLock] = {}
_LOCKS_GUARD = threading.Lock()


def _lock_for(folder: Path) -> threading.RLock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(str(folder.resolve()), threading.RLock())


class TextIndex:
    """The tantivy index in one folder and its high-water mark."""

    def __init__(self, folder: Path, writable: bool = True):
        if not HAVE_TANTIVY:
            raise RuntimeError("the tantivy package is not installed")
        self.folder = Path(folder)
        self.meta = self._read_meta()
        if self.meta is None:
            if not writable:  # a reader never clears a folder: that is the writer's to rebuild
                raise ValueError(f"{self.folder} holds no index of format {FORMAT}")
            self._clear_folder()  # an interrupted first build or another format: start clean
        self.folder.mkdir(parents=True, exist_ok=True)
        self.index = self._open()
        self._searcher = None

    # -- storage ------------------------------------------------------------------------------

    @staticmethod
    def _schema():
        sb = tantivy.SchemaBuilder()
        sb.add_integer_field("row", fast=True)  # the instruction's rowid
        sb.add_integer_field("rrow", fast=True)  # the response's rowid (response documents only)
        # "basic": document ids only; positions would only be needed for phrase queries.
        sb.add_text_field("instruction", tokenizer_name=TOKENIZER, index_option="basic")
        sb.add_text_field("response", tokenizer_name=TOKENIZER, index_option="basic")
        return sb.build()

    def _open(self):
        index = tantivy.Index(self._schema(), path=str(self.folder), reuse=True)
        # No lowercasing filter: the text arrives lowered by DuckDB, the case folding that ILIKE uses.
        index.register_tokenizer(TOKENIZER, tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.ngram(GRAM, GRAM, False))
                                 .build())
        return index

    def _read_meta(self) -> dict | None:
        try:
            meta = json.loads((self.folder / META).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return meta if isinstance(meta, dict) and meta.get("format") == FORMAT else None

    def _write_meta(self, meta: dict) -> None:
        tmp = self.folder / (META + ".tmp")
        tmp.write_text(json.dumps(meta), encoding="utf-8")
        os.replace(tmp, self.folder / META)  # the mark moves atomically, after tantivy's commit
        self.meta = meta

    def _clear_folder(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True, exist_ok=True)

    def reload_meta(self) -> None:
        meta = self._read_meta()
        if meta != self.meta:
            self.meta = meta
            self._searcher = None  # the documents changed with it

    @property
    def high_water(self) -> HighWater | None:
        if self.meta is None:
            return None
        return HighWater(self.meta["instructions"], self.meta["responses"], self.meta["migration"])

    def pending_responses(self) -> list[int]:
        """Responses seen before their instruction existed: looked at again on each update."""
        return list(self.meta.get("pending_responses", [])) if self.meta else []

    # -- writing ------------------------------------------------------------------------------

    def reset(self) -> None:
        """Drop every document and the mark (a rebuild follows)."""
        self.index = None
        self._searcher = None
        self._clear_folder()
        self.meta = None
        self.index = self._open()

    def add(self, instructions: Iterable[tuple[int, str]], responses: Iterable[tuple[int, int | None, str]],
            mark: HighWater, keep_pending: list[int], threads: int = 1) -> None:
        """Add instruction documents (rowid, lowered text) and response documents (rowid,
        instruction rowid or None when the instruction is not there yet, lowered text), commit,
        then move the mark. A response without its instruction is remembered as pending (with
        `keep_pending`) and read again by the next update. A crash between the commit and the
        mark re-adds the same rows next time: a duplicate document only repeats a candidate."""
        writer = self.index.writer(heap_size=WRITER_HEAP, num_threads=threads)
        pending = set(keep_pending)
        try:
            for row, text in instructions:
                writer.add_document(tantivy.Document(row=row, instruction=text))
            for rrow, row, text in responses:
                if row is None:
                    pending.add(rrow)
                else:
                    pending.discard(rrow)
                    writer.add_document(tantivy.Document(row=row, rrow=rrow, response=text))
            writer.commit()
            writer.wait_merging_threads()
        except BaseException:
            writer.rollback()
            raise
        finally:
            del writer  # releases tantivy's writer lock on the folder
        self._write_meta({"format": FORMAT, **asdict(mark), "pending_responses": sorted(pending)})
        self._searcher = None

    # -- reading ------------------------------------------------------------------------------

    def searcher(self):
        if self._searcher is None:
            self.index.reload()
            self._searcher = self.index.searcher()
        return self._searcher

    def candidates(self, lowered_query: str, responses: bool,
                   limit: int = MAX_CANDIDATES) -> tuple[list[int], dict[int, int]] | None:
        """(instruction rowids whose text or input may contain the query, {response rowid:
        instruction rowid} of responses that may), or None when the query is shorter than a
        window or there are more than `limit` (candidate_limit: the scan is then the better plan)."""
        wanted = grams(lowered_query)
        if not wanted:
            return None
        searcher = self.searcher()
        schema = self.index.schema

        def all_grams(field: str):
            return tantivy.Query.boolean_query([(tantivy.Occur.Must, tantivy.Query.term_query(schema, field, g))
                                                for g in wanted])

        fields = ("instruction", "response") if responses else ("instruction",)
        if any(min(searcher.doc_freq(field, g) for g in wanted) > DECLINE_FACTOR * limit for field in fields):
            return None
        budget = limit + 1
        # order_by_field returns the field's value in place of a score: no scoring, no doc fetch.
        hits = searcher.search(all_grams("instruction"), limit=budget, count=False, order_by_field="row").hits
        rows = [int(value) for value, _ in hits]
        found: dict[int, int] = {}
        if responses:
            budget -= len(rows)
            if budget <= 0:
                return None
            hits = searcher.search(all_grams("response"), limit=budget, count=False, order_by_field="rrow").hits
            owners = searcher.fast_field_values("row", [address for _, address in hits]) if hits else []
            found = {int(value): int(owner) for (value, _), owner in zip(hits, owners, strict=True)}
        if len(rows) + len(found) > limit:
            return None
        return rows, found


# --------------------------------------------------------------------------------------------
# Keeping an index current with its catalog (the store is the only way to DuckDB)
# --------------------------------------------------------------------------------------------

_OPEN: dict[str, TextIndex] = {}  # one TextIndex per folder per process


def open_index(folder: Path, writable: bool = True) -> TextIndex | None:
    """The index in `folder` (created empty if missing and `writable`), or None without tantivy
    or without a usable index to read."""
    if not HAVE_TANTIVY:
        return None
    key = str(Path(folder).resolve())
    with _LOCKS_GUARD:
        index = _OPEN.get(key)
    if index is None:
        try:
            index = TextIndex(Path(folder), writable)
        except (OSError, ValueError) as exc:  # an unreadable or foreign folder: scan instead
            log.info("text index %s unusable: %s", folder, exc)
            return None
        with _LOCKS_GUARD:
            index = _OPEN.setdefault(key, index)
    return index


def forget(folder: Path) -> None:
    """Drop this process's handle on the index in `folder` (tests, a removed workspace)."""
    with _LOCKS_GUARD:
        _OPEN.pop(str(Path(folder).resolve()), None)


def behind(store, now: HighWater | None = None) -> int | None:
    """How many rows the store's index lacks (0: current), or None when there is no usable one.
    `now`: the store's text_high_water(), when the caller has it."""
    folder = store.text_index_folder
    if not HAVE_TANTIVY or not (folder / META).exists():
        return None
    index = open_index(folder, writable=False)
    if index is None:
        return None
    now = now or store.text_high_water()
    if index.high_water != now:
        index.reload_meta()  # another process (the catalog's owner) may have moved it since
    mark = index.high_water
    if mark is None:
        return None
    if now.migration != mark.migration or now.instructions < mark.instructions or now.responses < mark.responses:
        return None
    return (now.instructions - mark.instructions) + (now.responses - mark.responses)


class _NotContiguous(Exception):
    """The rows read between two marks were not as many as the counts said."""


def update(store, threads: int = 1, min_rows: int | None = None) -> int | None:
    """Bring the store's index up to its catalog now; returns the rows added (None: no index,
    because tantivy is missing, the store is read-only, or the catalog holds fewer than
    `min_rows` (MIN_ROWS) instructions). Call it after a write transaction commits, never inside
    one: rows a transaction has not committed must not be indexed."""
    if not HAVE_TANTIVY or store.read_only:
        return None
    folder = store.text_index_folder
    if store.text_high_water().instructions < (MIN_ROWS if min_rows is None else min_rows) \
            and not (folder / META).exists():
        return None
    with _lock_for(folder):
        now = store.text_high_water()  # read under the lock: an update that waited sees the last one's rows
        index = open_index(folder)
        if index is None:
            return None
        try:
            return _catch_up(store, index, now, threads)
        except _NotContiguous as exc:  # rowids were not 0..count-1: rebuild once from scratch
            log.warning("text index %s: %s; rebuilding", folder, exc)
            index.reset()
            try:
                return _catch_up(store, index, now, threads)
            except _NotContiguous:
                index.reset()  # no mark: searches scan
                return None


def status(store) -> dict:
    """What `winnow index status` prints: whether there is an index, how far behind it is."""
    folder = store.text_index_folder
    now = store.text_high_water()
    return {"folder": str(folder), "available": HAVE_TANTIVY, "exists": (folder / META).exists(),
            "behind": behind(store, now), "instructions": now.instructions, "responses": now.responses,
            "min_rows": MIN_ROWS, "building": _background_running(store)}


def rebuild(store, threads: int = 2) -> int | None:
    """Drop the index and build it again from the catalog, however small (`winnow index
    rebuild`, e.g. after copying a workspace without its index folder, or to index one under
    MIN_ROWS). Returns the rows indexed; None without tantivy or on a read-only store."""
    if not HAVE_TANTIVY or store.read_only:
        return None
    stop_background(store)  # one writer: a catch-up running now would race the reset
    with _lock_for(store.text_index_folder):
        index = open_index(store.text_index_folder)
        if index is None:
            return None
        index.reset()
    return update(store, threads=threads, min_rows=0)


def _catch_up(store, index: TextIndex, now: HighWater, threads: int) -> int:
    stop = _stop_event(store)
    mark = index.high_water
    if (mark is None or mark.migration != now.migration or mark.instructions > now.instructions
            or mark.responses > now.responses):
        index.reset()  # first build, a migration, or a catalog that is not this index's
        mark = HighWater(0, 0, now.migration)
    pending = index.pending_responses()
    added = 0
    first = True
    # In steps, each committed with its mark, so an interrupted build resumes where it stopped.
    while (mark.instructions, mark.responses) != (now.instructions, now.responses) or (first and pending):
        if stop.is_set():  # the store is closing (stop_background): the next update resumes from `mark`
            break
        upto_i = min(now.instructions, mark.instructions + COMMIT_ROWS)
        upto_r = min(now.responses, mark.responses + COMMIT_ROWS)
        reread = pending if first else []  # the pending ones are read again once, in the first step
        instructions = _Counted(store.text_index_instructions(mark.instructions, upto_i, BATCH_ROWS))
        responses = _Counted(store.text_index_responses(mark.responses, upto_r, reread, BATCH_ROWS))
        next_mark = HighWater(upto_i, upto_r, now.migration)
        index.add(instructions, responses, next_mark, [] if first else index.pending_responses(), threads=threads)
        expected = (upto_i - mark.instructions, upto_r - mark.responses + len(reread))
        if (instructions.n, responses.n) != expected:
            raise _NotContiguous(f"read {(instructions.n, responses.n)} rows, expected {expected}")
        added += instructions.n + responses.n - len(reread)  # new rows only
        mark, first = next_mark, False
    return added


def update_soon(store) -> None:
    """After a write commits: catch the index up now if that is quick, else in a background
    thread (a large import does not wait; searches scan until the index is current)."""
    try:
        lag = behind(store)
        if lag is None and not (store.text_index_folder / META).exists():
            lag = store.text_high_water().instructions  # no index yet: a first build (if large enough)
        if lag is not None and lag <= SYNC_ROWS and not _background_running(store):
            update(store)
        else:
            start_background_update(store)
    except Exception as exc:  # the write itself succeeded; a failed index update only means scans
        log.warning("text index update failed: %s", exc)


_BACKGROUND: dict[str, threading.Thread] = {}
_STOP: dict[str, threading.Event] = {}  # per store: set when it closes, so a catch-up step ends first


def _stop_event(store) -> threading.Event:
    with _LOCKS_GUARD:
        return _STOP.setdefault(str(id(store)), threading.Event())


def stop_background(store, timeout: float = 120.0) -> None:
    """Before the store's connection closes: ask a running catch-up to stop after its current
    step and wait for it. Closing DuckDB under a cursor that is still reading aborts the process
    ("connection is busy", then a fatal terminate), so close never races the thread."""
    _stop_event(store).set()
    with _LOCKS_GUARD:
        thread = _BACKGROUND.get(str(store.text_index_folder.resolve()))
    if thread is not None and thread.is_alive() and thread is not threading.current_thread():
        thread.join(timeout)
    with _LOCKS_GUARD:
        _STOP.pop(str(id(store)), None)


def _background_running(store) -> bool:
    with _LOCKS_GUARD:
        thread = _BACKGROUND.get(str(store.text_index_folder.resolve()))
    return thread is not None and thread.is_alive()


def start_background_update(store) -> threading.Thread | None:
    """One background catch-up per folder at a time; None when one is already running."""
    if not HAVE_TANTIVY or store.read_only:
        return None
    key = str(store.text_index_folder.resolve())
    with _LOCKS_GUARD:
        running = _BACKGROUND.get(key)
        if running is not None and running.is_alive():
            return None

        def work():
            try:  # until current: rows written while it ran were left to it by update_soon
                for _ in range(8):
                    if not update(store, threads=2):
                        break
            except Exception as exc:  # the store may close under it: the next update resumes
                log.warning("background text index update failed: %s", exc)

        thread = threading.Thread(target=work, name="winnow-text-index", daemon=True)
        _BACKGROUND[key] = thread
    thread.start()
    return thread


class _Counted:
    """An iterable that counts what passed through it (to check the rowids were contiguous)."""

    def __init__(self, rows: Iterable):
        self.rows = rows
        self.n = 0

    def __iter__(self):
        for row in self.rows:
            self.n += 1
            yield row
