"""The catalog: migrations, the one-writer lock, and the Explore queries (real DuckDB files)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

import core.store as store_mod
from core.ids import content_id
from core.migrations import MIGRATIONS
from core.store import ExploreFilter, Store, WorkspaceBusy, like_pattern
from core.workspace import Workspace

REPO = Path(__file__).resolve().parent.parent
NAMES = [name for name, _ in MIGRATIONS]


def _objects(store: Store) -> dict:
    """What Store.schema() leaves out: views (with their SQL) and indexes."""
    cur = store.cursor()
    views = cur.execute("SELECT view_name, sql FROM duckdb_views() WHERE NOT internal ORDER BY view_name").fetchall()
    indexes = cur.execute("SELECT index_name, table_name, sql FROM duckdb_indexes() ORDER BY index_name").fetchall()
    return {"views": views, "indexes": indexes}


# --------------------------------------------------------------------------------------------
# Migrations
# --------------------------------------------------------------------------------------------


def test_migration_names_are_unique_and_in_order():
    # The recorded names are read back ORDER BY name, so list order must be name order.
    assert len(set(NAMES)) == len(NAMES)
    assert NAMES == sorted(NAMES)


def test_blank_database_applies_and_records_every_migration(tmp_path):
    store = Store(tmp_path / "blank.duckdb")
    assert store.applied_migrations() == []
    assert store.migrate() == NAMES
    assert store.applied_migrations() == NAMES
    tables = {row[0] for row in store.schema()}
    for table in ("datasets", "imports", "instructions", "responses", "preference_pairs", "documents",
                  "judgments", "reviews", "import_rejects", "schema_migrations",
                  "target_decisions", "latest_edits", "instruction_decisions", "labels", "current_tasks",
                  "settings", "difficulty", "snapshots", "snapshot_members", "evaluations", "round_runs",
                  "rounds", "round_steps", "pair_feedback", "rankings", "corpus_drops"):
        assert table in tables
    assert {name for name, *_ in _objects(store)["indexes"]} == {
        "responses_by_instruction", "reviews_by_target", "judgments_by_target", "labels_by_target",
        "difficulty_by_instruction", "snapshot_members_by_snapshot", "rankings_instruction"}
    store.close()


def test_migrate_again_applies_nothing_even_after_reopening(tmp_path):
    path = tmp_path / "c.duckdb"
    store = Store(path)
    store.migrate()
    schema, objects = store.schema(), _objects(store)
    assert store.migrate() == []
    store.close()
    store = Store(path)
    assert store.migrate() == []
    assert store.applied_migrations() == NAMES
    assert store.schema() == schema
    assert _objects(store) == objects
    store.close()


@pytest.mark.parametrize("stop_at", NAMES)
def test_stopped_at_each_migration_then_migrated_matches_blank_then_full(tmp_path, stop_at):
    full = Store(tmp_path / "full.duckdb")
    full.migrate()
    partial = Store(tmp_path / "partial.duckdb")
    upto = NAMES[: NAMES.index(stop_at) + 1]
    assert partial.migrate(upto=stop_at) == upto
    assert partial.applied_migrations() == upto
    partial.close()
    partial = Store(tmp_path / "partial.duckdb")  # a later process picks up where it stopped
    assert partial.migrate() == NAMES[len(upto):]
    assert partial.applied_migrations() == NAMES
    assert partial.schema() == full.schema()
    assert _objects(partial) == _objects(full)
    partial.close()
    full.close()


def test_data_written_before_a_later_migration_survives_it(tmp_path):
    store = Store(tmp_path / "d.duckdb")
    store.migrate(upto=NAMES[0])
    with store.transaction() as cur:
        cur.execute("INSERT INTO datasets (id, name, kind) VALUES ('d1', 'kept', 'pairs')")
    store.migrate()
    assert store.dataset("kept") == {"id": "d1", "name": "kept", "kind": "pairs"}


def test_unknown_upto_raises_and_applies_nothing(tmp_path):
    store = Store(tmp_path / "u.duckdb")
    with pytest.raises(ValueError, match="0099_nope"):
        store.migrate(upto="0099_nope")
    assert store.applied_migrations() == []


def test_failing_migration_is_rolled_back_and_not_recorded(tmp_path, monkeypatch):
    store = Store(tmp_path / "f.duckdb")
    store.migrate()
    broken = ("9999_broken", ["CREATE TABLE half_done (a INTEGER)", "SELECT * FROM no_such_table"])
    monkeypatch.setattr(store_mod.base, "MIGRATIONS", [*MIGRATIONS, broken])
    with pytest.raises(Exception, match="no_such_table"):
        store.migrate()
    assert "9999_broken" not in store.applied_migrations()
    assert "half_done" not in {row[0] for row in store.schema()}


# --------------------------------------------------------------------------------------------
# One read-write process per file
# --------------------------------------------------------------------------------------------

# Opens the catalog read-write and read-only, reporting WorkspaceBusy, then once more without
# catching it: what a user of a CLI command that does not catch it would see.
_SECOND_PROCESS = """
import sys
from core.store import Store, WorkspaceBusy
for mode in ("rw", "ro"):
    try:
        Store(sys.argv[1], read_only=mode == "ro").close()
        print(mode, "OPENED")
    except WorkspaceBusy as exc:
        print(mode, "BUSY:", exc)
Store(sys.argv[1]).close()
"""


def _second_process(catalog: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-c", _SECOND_PROCESS, str(catalog)], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=60)


def test_second_process_gets_workspace_busy_not_the_raw_lock_error(tmp_path):
    ws = Workspace(tmp_path / "ws")
    catalog = ws.root / "winnow.duckdb"
    try:
        busy = _second_process(catalog)
    finally:
        ws.close()
    out = busy.stdout.splitlines()
    assert [line.split(":")[0] for line in out] == ["rw BUSY", "ro BUSY"], busy.stdout + busy.stderr
    for line in out:
        assert str(catalog) in line
        assert f"process {os.getpid()}" in line  # names the holder
    assert busy.returncode == 1
    assert busy.stderr.strip().splitlines()[-1].startswith("core.store.WorkspaceBusy: The workspace catalog")
    assert "Conflicting lock" not in busy.stdout + busy.stderr
    assert "IOException" not in busy.stderr
    # Once this process lets go, the same command opens the catalog both ways.
    free = _second_process(catalog)
    assert free.returncode == 0, free.stderr
    assert free.stdout.splitlines() == ["rw OPENED", "ro OPENED"]


def test_workspace_busy_message_without_pid():
    exc = WorkspaceBusy(Path("/x/winnow.duckdb"), None)
    assert "another process" in str(exc) and "/x/winnow.duckdb" in str(exc)
    assert isinstance(exc, RuntimeError)


# --------------------------------------------------------------------------------------------
# Explore
# --------------------------------------------------------------------------------------------

ALPHA = [
    {"instruction": "What is 12 * 7?", "output": "84", "task": "math"},                      # 15 chars
    {"instruction": "Score: 100% sure", "output": "yes", "task": "chat"},                     # 16
    {"instruction": "Score: 1000 sure", "output": "no", "task": "chat"},                      # 16
    {"instruction": "Rename snake_case", "output": "snakeCase", "task": "code"},              # 17
    {"instruction": "Rename snakeXcase", "input": "with context", "output": "ok", "task": "code"},  # 29
]
BETA = [
    {"instruction": "List primes below 20"},                                                  # 20
    {"instruction": "Explain recursion", "task": "code"},                                     # 17
]
TEACHER = [{"instruction": "What is 12 * 7?", "output": "It is eighty-four, a zebra fact"}]
GENERATED = "Generated question about tides"                                                  # 30


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _build_explore_ws(tmp_path: Path) -> Workspace:
    ws = Workspace(tmp_path / "ws")
    ws.import_paths([_write(tmp_path / "a.jsonl", ALPHA)], "alpha")
    ws.import_paths([_write(tmp_path / "b.jsonl", BETA)], "beta")
    ws.import_paths([_write(tmp_path / "t.jsonl", TEACHER)], "alpha", role="teacher")
    # A round-1 generated instruction, written the way a stage's ingester writes rows.
    dataset_id = content_id("dataset", "alpha")
    row = {"id": content_id(dataset_id, "", "", GENERATED, ""), "dataset_id": dataset_id, "text": GENERATED,
           "input": "", "n_chars": len(GENERATED), "round": 1, "method": "generate"}
    with ws.store.transaction() as cur:
        assert ws.store.insert_batch(cur, "instructions", pa.Table.from_pylist([row])) == 1
    return ws


@pytest.fixture(scope="module")
def explore_ws(tmp_path_factory):
    """Shared by the tests that only read; tests that review get `reviewed_ws`, their own copy."""
    ws = _build_explore_ws(tmp_path_factory.mktemp("explore"))
    counts = ws.store.table_counts()
    yield ws
    assert ws.store.table_counts() == counts, "a read-only Explore test wrote to the shared workspace"
    ws.close()


@pytest.fixture
def reviewed_ws(tmp_path):
    ws = _build_explore_ws(tmp_path)
    yield ws
    ws.close()


def _ids_by_text(ws) -> dict[str, str]:
    page = ws.explore_page(ExploreFilter(), page_size=500)
    return dict(zip(page["instruction"], page["id"], strict=True))


def _texts(ws, f: ExploreFilter, **kw) -> list[str]:
    return ws.explore_page(f, page_size=500, **kw)["instruction"].tolist()


def _source(ws, name: str) -> str:
    return next(s for s in ws.filter_options()["sources"] if s.endswith(name))


def test_explore_unfiltered_counts_everything_in_file_order(explore_ws):
    assert explore_ws.explore_count(ExploreFilter()) == 8
    assert _texts(explore_ws, ExploreFilter()) == [r["instruction"] for r in ALPHA + BETA] + [GENERATED]


@pytest.mark.parametrize("datasets,expected", [
    (["alpha"], 6), (["beta"], 2), (["alpha", "beta"], 8), (["nope"], 0), (["alpha", "nope"], 6),
])
def test_explore_datasets(explore_ws, datasets, expected):
    f = ExploreFilter(datasets=datasets)
    assert explore_ws.explore_count(f) == expected
    page = explore_ws.explore_page(f, page_size=500)
    assert len(page) == expected
    assert set(page["dataset"]) <= set(datasets)


@pytest.mark.parametrize("tasks,expected", [
    (["code"], ["Rename snake_case", "Rename snakeXcase", "Explain recursion"]),
    (["math", "chat"], ["What is 12 * 7?", "Score: 100% sure", "Score: 1000 sure"]),
    (["none-such"], []),
])
def test_explore_tasks(explore_ws, tasks, expected):
    f = ExploreFilter(tasks=tasks)
    assert explore_ws.explore_count(f) == len(expected)
    assert _texts(explore_ws, f) == expected


@pytest.mark.parametrize("roles,expected", [
    (["teacher"], ["What is 12 * 7?"]),
    (["seed"], [r["instruction"] for r in ALPHA]),
    (["seed", "teacher"], [r["instruction"] for r in ALPHA]),
    (["chosen"], []),
])
def test_explore_roles(explore_ws, roles, expected):
    f = ExploreFilter(roles=roles)
    assert explore_ws.explore_count(f) == len(expected)
    assert _texts(explore_ws, f) == expected


def test_explore_sources(explore_ws):
    a, b = _source(explore_ws, "a.jsonl"), _source(explore_ws, "b.jsonl")
    assert explore_ws.explore_count(ExploreFilter(sources=[a])) == 5
    assert _texts(explore_ws, ExploreFilter(sources=[b])) == [r["instruction"] for r in BETA]
    assert explore_ws.explore_count(ExploreFilter(sources=[a, b])) == 7
    assert explore_ws.explore_count(ExploreFilter(sources=["elsewhere.jsonl"])) == 0


def test_explore_rounds_and_methods(explore_ws):
    assert _texts(explore_ws, ExploreFilter(rounds=[1])) == [GENERATED]
    assert explore_ws.explore_count(ExploreFilter(rounds=[0])) == 7
    assert explore_ws.explore_count(ExploreFilter(rounds=[0, 1])) == 8
    assert _texts(explore_ws, ExploreFilter(methods=["generate"])) == [GENERATED]
    assert explore_ws.explore_count(ExploreFilter(methods=["import"])) == 7
    assert explore_ws.filter_options()["rounds"] == [0, 1]


@pytest.mark.parametrize("min_chars,max_chars,expected", [
    (17, None, 5),   # 17, 29, 20, 17, 30
    (None, 16, 3),   # 15, 16, 16
    (16, 17, 4),     # 16, 16, 17, 17
    (31, None, 0),
])
def test_explore_length_bounds(explore_ws, min_chars, max_chars, expected):
    f = ExploreFilter(min_chars=min_chars, max_chars=max_chars)
    assert explore_ws.explore_count(f) == expected
    page = explore_ws.explore_page(f, page_size=500)
    assert len(page) == expected
    if min_chars is not None:
        assert (page["n_chars"] >= min_chars).all()
    if max_chars is not None:
        assert (page["n_chars"] <= max_chars).all()


def test_explore_min_above_max_is_refused():
    with pytest.raises(ValueError):
        ExploreFilter(min_chars=10, max_chars=5)
    with pytest.raises(ValueError):
        ExploreFilter(review="maybe")


@pytest.mark.parametrize("search,expected", [
    ("100%", ["Score: 100% sure"]),                         # % is a literal, not a wildcard
    ("%", ["Score: 100% sure"]),
    ("100", ["Score: 100% sure", "Score: 1000 sure"]),
    ("snake_case", ["Rename snake_case"]),                  # _ is a literal, not any one character
    ("_", ["Rename snake_case"]),
    ("SNAKE", ["Rename snake_case", "Rename snakeXcase"]),  # case-insensitive
    ("with context", ["Rename snakeXcase"]),                # the input is searched too
    ("  12 * 7  ", ["What is 12 * 7?"]),                    # surrounding spaces are trimmed
    ("zebra", []),                                          # responses are not searched by default
    ("back\\slash", []),
])
def test_explore_search_matches_literally(explore_ws, search, expected):
    f = ExploreFilter(search=search)
    assert explore_ws.explore_count(f) == len(expected)
    assert _texts(explore_ws, f) == expected


def test_explore_search_responses(explore_ws):
    assert _texts(explore_ws, ExploreFilter(search="zebra", search_responses=True)) == ["What is 12 * 7?"]
    assert _texts(explore_ws, ExploreFilter(search="snakecase", search_responses=True)) == ["Rename snake_case"]
    # instruction text still matches when responses are searched as well
    assert explore_ws.explore_count(ExploreFilter(search="recursion", search_responses=True)) == 1


def test_like_pattern_escapes_wildcards():
    assert like_pattern("a%b_c\\d") == "%a\\%b\\_c\\\\d%"


def test_explore_review_states(reviewed_ws):
    ws = reviewed_ws
    ids = _ids_by_text(ws)
    seed_12x7 = next(r["id"] for r in ws.sample(ids["What is 12 * 7?"])["responses"] if r["role"] == "seed")
    ws.review(seed_12x7, "accept")                                              # via a response
    ws.review(ids["Rename snake_case"], "reject", target_kind="instruction")   # on the instruction
    ws.review(ids["Score: 100% sure"], "accept", target_kind="instruction")
    ws.review(ids["Score: 100% sure"], "reject", target_kind="instruction")    # the latest decision wins
    ws.review(ids["Explain recursion"], note="looks fine", target_kind="instruction")  # a note is no verdict

    assert _texts(ws, ExploreFilter(review="accepted")) == ["What is 12 * 7?"]
    assert _texts(ws, ExploreFilter(review="rejected")) == ["Score: 100% sure", "Rename snake_case"]
    unreviewed = _texts(ws, ExploreFilter(review="unreviewed"))
    assert unreviewed == ["Score: 1000 sure", "Rename snakeXcase", "List primes below 20",
                          "Explain recursion", GENERATED]
    assert ws.explore_count(ExploreFilter(review="any")) == 8
    # filters combine with AND
    assert ws.explore_count(ExploreFilter(review="rejected", tasks=["code"])) == 1


def test_review_rejects_bad_input(reviewed_ws):
    ids = _ids_by_text(reviewed_ws)
    with pytest.raises(ValueError):
        reviewed_ws.review(ids["What is 12 * 7?"], "maybe")
    with pytest.raises(ValueError):
        reviewed_ws.review(ids["What is 12 * 7?"])
    with pytest.raises(ValueError):
        reviewed_ws.review("0" * 24, "accept")
    assert reviewed_ws.stats()["reviews"] == 0


@pytest.mark.filterwarnings("error")  # pandas' future errors (e.g. filling float NaN with "") fail now
def test_explore_page_decorations_without_reviews(explore_ws):
    page = explore_ws.explore_page(ExploreFilter(), page_size=500)
    assert page["review"].tolist() == [""] * 8
    assert page["roles"].tolist() == ["seed, teacher"] + ["seed"] * 4 + [""] * 3


def test_explore_page_decorations(reviewed_ws):
    ws = reviewed_ws
    ids = _ids_by_text(ws)
    ws.review(ids["Score: 1000 sure"], "reject", target_kind="instruction")
    page = ws.explore_page(ExploreFilter(), page_size=500).set_index("instruction")
    assert page.loc["What is 12 * 7?", "n_responses"] == 2
    assert page.loc["What is 12 * 7?", "roles"] == "seed, teacher"
    assert page.loc["Score: 100% sure", "n_responses"] == 1
    assert page.loc["Score: 100% sure", "roles"] == "seed"
    assert page.loc["List primes below 20", "n_responses"] == 0
    assert page.loc["List primes below 20", "roles"] == ""
    assert page.loc["Score: 1000 sure", "review"] == "reject"
    assert page.loc["Score: 100% sure", "review"] == ""
    assert page.loc["What is 12 * 7?", "task"] == "math"
    assert page.loc["Rename snakeXcase", "n_chars"] == len("Rename snakeXcase") + len("with context")
    assert page.loc["What is 12 * 7?", "source_line"] == 1
    assert page.loc[GENERATED, "round"] == 1 and page.loc[GENERATED, "method"] == "generate"


def test_explore_paging(explore_ws):
    ws = explore_ws
    everything = _texts(ws, ExploreFilter())
    pages = [ws.explore_page(ExploreFilter(), page=p, page_size=3)["instruction"].tolist() for p in range(4)]
    assert [len(p) for p in pages] == [3, 3, 2, 0]
    assert sum(pages, []) == everything
    beyond = ws.explore_page(ExploreFilter(), page=100, page_size=3)
    assert len(beyond) == 0
    assert {"n_responses", "roles", "review"} <= set(beyond.columns)
    assert len(ws.explore_page(ExploreFilter(datasets=["nope"]))) == 0


def test_explore_orders(explore_ws):
    ws = explore_ws
    oldest = _texts(ws, ExploreFilter(), order="oldest")
    assert _texts(ws, ExploreFilter(), order="newest") == oldest[::-1]
    longest = ws.explore_page(ExploreFilter(), page_size=500, order="longest")["n_chars"].tolist()
    assert longest == sorted(longest, reverse=True) and longest[0] == 30
    shortest = ws.explore_page(ExploreFilter(), page_size=500, order="shortest")["n_chars"].tolist()
    assert shortest == sorted(shortest) and shortest[0] == 15


@pytest.mark.parametrize("selection", [
    ExploreFilter(), ExploreFilter(tasks=["chat"]), ExploreFilter(min_chars=18, max_chars=25),
    ExploreFilter(search="sure"), ExploreFilter(datasets=["nope"]),
], ids=["all", "task", "length", "search", "no-match"])
@pytest.mark.parametrize(("page", "page_size", "order"), [(0, 50, "oldest"), (1, 3, "newest"), (0, 4, "longest")])
def test_explore_view_is_the_count_and_the_page(explore_ws, selection, page, page_size, order):
    # The count runs on the store's side thread: the pair must be what the two calls give alone.
    ws = explore_ws
    count, rows = ws.explore_view(selection, page=page, page_size=page_size, order=order)
    assert count == ws.explore_count(selection)
    alone = ws.explore_page(selection, page=page, page_size=page_size, order=order)
    pd.testing.assert_frame_equal(rows, alone)
    assert len(rows) == max(0, min(page_size, count - page * page_size))


def test_explore_view_refuses_a_bad_request_and_close_ends_its_side_thread(tmp_path):
    ws = _build_explore_ws(tmp_path)
    with pytest.raises(ValueError, match="page size"):
        ws.store.explore_view(ExploreFilter(), limit=0)
    with pytest.raises(ValueError, match="needs a judge"):
        ws.store.explore_view(ExploreFilter(), order="judge score, high first")
    before = set(threading.enumerate())
    count, _ = ws.explore_view(ExploreFilter())
    assert count > 0
    side = [t for t in set(threading.enumerate()) - before if t.name.startswith("winnow-store-side")]
    assert side, "the count did not run on the side thread"
    ws.close()
    for thread in side:
        thread.join(timeout=5)
        assert not thread.is_alive(), "close() left the side thread running"


def _judge(ws, judge_model: str, target_ids: list[str], raws: list[str]) -> None:
    """Verdicts of one pointwise_5 judge, in their own transaction (so a later call is a later verdict)."""
    from core import judge

    ws.record_judgments(judge.judgment_rows("pointwise_5", judge_model, target_ids, raws))
    time.sleep(0.002)  # created_at orders verdicts: keep consecutive calls apart


def test_explore_page_judge_score_and_score_orders(reviewed_ws):
    ws = reviewed_ws
    ids = _ids_by_text(ws)
    responses = {ins: {r["role"]: r["id"] for r in ws.sample(ids[ins])["responses"]}
                 for ins in ("What is 12 * 7?", "Score: 100% sure", "Rename snake_case")}
    _judge(ws, "judge-m", [responses["What is 12 * 7?"]["seed"], responses["What is 12 * 7?"]["teacher"]],
           ["Score: 2", "Score: 5"])                                      # the highest of its responses: 5
    _judge(ws, "judge-m", [responses["Score: 100% sure"]["seed"]], ["Score: 1"])
    _judge(ws, "judge-m", [responses["Score: 100% sure"]["seed"]], ["Again.\nScore: 4"])  # the latest: 4
    _judge(ws, "judge-m", [responses["Score: 100% sure"]["seed"]], ["no idea"])  # unparsed: not a score
    _judge(ws, "other-judge", [responses["Rename snake_case"]["seed"]], ["Score: 3"])  # another judge

    page = ws.store.explore_page(ExploreFilter(), limit=500, judge=("judge-m", "pointwise_5")).set_index("instruction")
    assert page.loc["What is 12 * 7?", "judge_score"] == 5
    assert page.loc["Score: 100% sure", "judge_score"] == 4
    assert page["judge_score"].isna().sum() == 6  # the other judge's verdict is not this column's
    assert "judge_score" not in ws.store.explore_page(ExploreFilter(), limit=500).columns

    judge = ("judge-m", "pointwise_5")
    high = ws.store.explore_page(ExploreFilter(), limit=500, order="judge score, high first", judge=judge)
    oldest = _texts(ws, ExploreFilter())
    unscored = [t for t in oldest if t not in ("What is 12 * 7?", "Score: 100% sure")]
    assert high["instruction"].tolist() == ["What is 12 * 7?", "Score: 100% sure", *unscored]
    low = ws.store.explore_page(ExploreFilter(), limit=500, order="judge score, low first", judge=judge)
    assert low["instruction"].tolist() == ["Score: 100% sure", "What is 12 * 7?", *unscored]  # unscored last
    # The score order pages and filters like the others.
    assert ws.store.explore_page(ExploreFilter(), limit=1, offset=1, order="judge score, high first",
                                 judge=judge)["instruction"].tolist() == ["Score: 100% sure"]
    assert ws.store.explore_page(ExploreFilter(tasks=["chat"]), limit=500, order="judge score, high first",
                                 judge=judge)["instruction"].tolist() == ["Score: 100% sure", "Score: 1000 sure"]
    with pytest.raises(ValueError, match="needs a judge"):
        ws.store.explore_page(ExploreFilter(), order="judge score, high first")


def test_explore_page_response_preview(reviewed_ws, tmp_path):
    ws = reviewed_ws
    page = ws.explore_page(ExploreFilter(), page_size=500).set_index("instruction")
    assert page.loc["What is 12 * 7?", "response"] == "84"  # the first in role order (seed before teacher)
    assert page.loc["List primes below 20", "response"] == ""
    # A preference pair's chosen answer is the preview, even when another role sorts first.
    ws.import_paths([_write(tmp_path / "pref.jsonl", [{"prompt": "Explain recursion", "chosen": "A function that "
                    + "calls itself. " * 20, "rejected": "A loop."}])], "beta")
    ws.import_paths([_write(tmp_path / "base.jsonl", [{"instruction": "Explain recursion", "output": "Hmm."}])],
                    "beta", role="baseline")
    page = ws.explore_page(ExploreFilter(search="Explain recursion"), page_size=500)
    assert page["roles"][0] == "baseline, chosen, rejected"
    assert page["response"][0] == ("A function that " + "calls itself. " * 20)[:160]


@pytest.mark.parametrize("kw", [{"order": "random"}, {"page_size": 0}, {"page_size": 501},
                                {"order": "judge score, low first"}])
def test_explore_invalid_page_arguments(explore_ws, kw):
    with pytest.raises(ValueError):
        explore_ws.explore_page(ExploreFilter(), **kw)


def test_explore_page_size_limits_rows(explore_ws):
    assert len(explore_ws.explore_page(ExploreFilter(), page_size=1)) == 1
    assert len(explore_ws.explore_page(ExploreFilter(), page_size=500)) == 8


@pytest.mark.parametrize("f", [
    ExploreFilter(), ExploreFilter(datasets=["beta"]), ExploreFilter(tasks=["code"]),
    ExploreFilter(min_chars=16, max_chars=20), ExploreFilter(search="nope"),
])
def test_length_histogram_sums_to_the_count(explore_ws, f):
    hist = explore_ws.length_histogram(f, bin_width=10)
    assert int(hist["n"].sum()) == explore_ws.explore_count(f)


def test_length_histogram_bins(explore_ws):
    hist = explore_ws.length_histogram(ExploreFilter(), bin_width=10)
    assert dict(zip(hist["bin_start"].astype(int), hist["n"].astype(int), strict=True)) == {10: 5, 20: 2, 30: 1}
    with pytest.raises(ValueError):
        explore_ws.length_histogram(ExploreFilter(), bin_width=0)


def test_content_ids_are_stable_across_workspaces_and_reimports(tmp_path, explore_ws):
    first = _ids_by_text(explore_ws)
    dataset_id = content_id("dataset", "alpha")
    assert first["What is 12 * 7?"] == content_id(dataset_id, "", "", "What is 12 * 7?", "")
    assert first["Rename snakeXcase"] == content_id(dataset_id, "", "", "Rename snakeXcase", "with context")
    other = Workspace(tmp_path / "other")
    other_dir = tmp_path / "again"
    other_dir.mkdir()
    try:
        other.import_paths([_write(other_dir / "a.jsonl", ALPHA)], "alpha")
        other.import_paths([_write(other_dir / "a.jsonl", ALPHA)], "alpha")
        second = _ids_by_text(other)
        assert second == {t: i for t, i in first.items() if t in second}
        assert len(second) == len(ALPHA)
        seeds = lambda ws, iid: sorted(r["id"] for r in ws.sample(iid)["responses"] if r["role"] == "seed")  # noqa: E731
        assert seeds(other, second["Score: 100% sure"]) == seeds(explore_ws, first["Score: 100% sure"])
    finally:
        other.close()
