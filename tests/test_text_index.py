"""The text index (core/text_index.py) answers Explore's search with exactly the scan's results,
stays current after imports and job ingests, and falls back to the scan when it cannot answer."""

from __future__ import annotations

import json
import random

import pytest
from conftest import write_jsonl

from core import jobs, text_index
from core.store import ExploreFilter
from core.workspace import Workspace

pytestmark = pytest.mark.skipif(not text_index.HAVE_TANTIVY, reason="tantivy is not installed")

TRICKY = [
    {"instruction": "Explain CamelCase and snake_case names", "input": "", "output": "Use snake_case in Python."},
    {"instruction": "What is 100% of 50?", "input": "Give 50%.", "output": "It is 50, i.e. 100 % of it."},
    {"instruction": r"Escape a back\slash in C:\path\to", "input": "", "output": r"Write \\ twice: a\\b"},
    {"instruction": "Straße or STRASSE?", "input": "Übersetze: Grüße", "output": "Both spell the street; ẞ is rare."},
    {"instruction": "ΣΟΦΙΑ means wisdom", "input": "", "output": "σοφία, with a final ς in λόγος"},
    {"instruction": "İstanbul and ıstakoz", "input": "", "output": "Turkish dotted İ and dotless ı."},
    {"instruction": "Emoji 😀 in a prompt", "input": "say 😀😀", "output": "Here: 😀 🎉"},
    {"instruction": "Join the first half", "input": "and the second half", "output": "first half and the second"},
    {"instruction": "Quotes ' and \" and `ticks`", "input": "", "output": "O'Reilly said \"hi\""},
    {"instruction": "Tabs\tand\nnewlines inside", "input": "line one\nline two", "output": "a\tb\nc"},
    {"instruction": "Wildcards a_b and a%b and a[b]c", "input": "", "output": "LIKE treats _ and % specially"},
    {"instruction": "Café au lait, CAFÉ NOIR", "input": "", "output": "cafe without the accent"},
]
QUERIES = ["snake_case", "SNAKE_CASE", "ake_c", "100%", "0% o", "50%.", "% of", r"back\slash", r"\path", r"\\",
           r"a\\b", "straße", "STRASSE", "grüße", "GRÜSSE", "ẞ is", "σοφια", "ΣΟΦΊΑ", "σοφία", "λόγος", "ΛΌΓΟΣ",
           "istanbul", "İstanbul", "ISTAKOZ", "ıstakoz", "😀 in", "😀😀", "🎉", "half and the", "first half",
           "first halfand", "half\nand", "o'reilly", "\"hi\"", "`ticks`", "\tand\n", "line one\nline", "a_b",
           "a%b", "a[b]c", "_ and %", "café", "CAFÉ", "cafe", "nothing like this", "ALF"]


@pytest.fixture
def indexed(tmp_path, monkeypatch):
    """A workspace whose imports build the index however small they are (MIN_ROWS is 20,000)."""
    monkeypatch.setattr(text_index, "MIN_ROWS", 0)
    ws = Workspace(tmp_path / "ws")
    ws.import_paths([write_jsonl(tmp_path / "tricky.jsonl", TRICKY)], "tricky")
    yield ws
    ws.close()
    text_index.forget(ws.store.text_index_folder)


def matched_ids(ws, query: str, responses: bool) -> list[str]:
    """The ids Explore's filter selects, oldest first (its WHERE clause, without a page's decorations)."""
    where, values = ws.store.explore_where(ExploreFilter(search=query, search_responses=responses))
    return [r[0] for r in ws.store._rows(f"SELECT i.id FROM instructions i WHERE {where} ORDER BY i.rowid", values)]


def scanned_ids(ws, query: str, responses: bool, monkeypatch) -> list[str]:
    """The same search with the index out of the way: today's ILIKE scan."""
    with monkeypatch.context() as m:
        m.setattr(text_index, "HAVE_TANTIVY", False)
        assert ws.store.text_search_rows(query, responses) is None
        return matched_ids(ws, query, responses)


def test_the_index_gives_the_scans_results_on_tricky_queries(indexed, monkeypatch):
    assert text_index.behind(indexed.store) == 0
    found_any = 0
    for query in QUERIES:
        for responses in (False, True):
            answered = indexed.store.text_search_rows(query.strip(), responses) is not None
            assert answered == (len(query.strip()) >= 3), query  # the index answers every query it can
            ours, scan = matched_ids(indexed, query, responses), scanned_ids(indexed, query, responses, monkeypatch)
            assert ours == scan, (query, responses)
            found_any += bool(scan)
    assert found_any >= 60  # most queries match something: the comparison is not of empty lists
    # Through the page and the count as the Explore page calls them.
    page = indexed.explore_page(ExploreFilter(search="Half", search_responses=True), page_size=50)
    assert page["id"].tolist() == scanned_ids(indexed, "Half", True, monkeypatch) and len(page) == 1
    assert indexed.explore_count(ExploreFilter(search="SNAKE", search_responses=True)) == 1
    # Known answers, so equality with the scan is not equality of two wrong results.
    assert len(matched_ids(indexed, "SNAKE_CASE", False)) == 1
    assert len(matched_ids(indexed, "100%", False)) == 1 and len(matched_ids(indexed, "ake_c", True)) == 1
    assert matched_ids(indexed, "first halfand", False) == []  # instruction and input are searched apart
    assert len(matched_ids(indexed, "half and the", False)) == 0 and len(matched_ids(indexed, "half and the", True)) == 1
    assert len(matched_ids(indexed, "🎉", True)) == 1 and matched_ids(indexed, "🎉", False) == []


def test_random_queries_over_a_tricky_alphabet_match_the_scan(tmp_path, monkeypatch):
    monkeypatch.setattr(text_index, "MIN_ROWS", 0)
    rng = random.Random(3)
    alphabet = list("aAbB _%\\'.\n") + ["ß", "ẞ", "İ", "ı", "K", "Σ", "σ", "ς", "é", "É", "ﬁ", "😀", "\u0307", "Å"]
    rows = [{"instruction": "q" + "".join(rng.choices(alphabet, k=rng.randint(3, 14))),
             "input": "".join(rng.choices(alphabet, k=rng.randint(0, 5))),
             "output": "r" + "".join(rng.choices(alphabet, k=rng.randint(3, 14)))} for _ in range(300)]
    ws = Workspace(tmp_path / "ws")
    try:
        ws.import_paths([write_jsonl(tmp_path / "random.jsonl", rows)], "random")
        matched = 0
        for _ in range(80):
            query = "".join(rng.choices(alphabet, k=rng.randint(3, 4))).strip() or "aaa"
            responses = rng.random() < 0.5
            ours, scan = matched_ids(ws, query, responses), scanned_ids(ws, query, responses, monkeypatch)
            assert ours == scan, (query, responses)
            matched += bool(scan)
        assert matched >= 10
    finally:
        ws.close()
        text_index.forget(ws.store.text_index_folder)


def test_an_import_updates_the_index(indexed, tmp_path):
    before = indexed.store.text_high_water()
    indexed.import_paths([write_jsonl(tmp_path / "more.jsonl", [
        {"instruction": "A brand new zebra question", "output": "Zebras have stripes"}])], "more")
    assert text_index.behind(indexed.store) == 0
    assert indexed.store.text_high_water().instructions == before.instructions + 1
    rows = indexed.store.text_search_rows("new zebra", False)
    assert rows is not None and len(rows) == 1
    assert indexed.store.text_search_rows("zebras have", True) == rows
    assert len(matched_ids(indexed, "NEW ZEBRA", False)) == 1


def echo_teacher(conversation) -> str:
    """A python-backend generator: a known answer per prompt."""
    return "Echoed answer about " + ("CASE NAMES" if "snake_case" in conversation[-1]["content"] else "something")


def test_a_job_ingest_updates_the_index(indexed):
    indexed.add_model({"name": "echo", "backend": "python", "path": "tests.test_text_index:echo_teacher",
                       "extra": {"modules": ["tests.test_text_index"]}})
    job_id = indexed.create_job("generate", {"model": indexed.model("echo").to_dict(), "role": "teacher",
                                             "max_tokens": 64}, ExploreFilter(search="snake_case"), shard_size=4)
    assert jobs.run(indexed.job_dir(job_id)) == 0
    assert indexed.ingest_job(job_id)["new_now"] == 1
    assert text_index.behind(indexed.store) == 0  # no fallback: the ingest caught the index up
    rows = indexed.store.text_search_rows("answer about case names", True)
    assert rows is not None and len(rows) == 1
    assert matched_ids(indexed, "ECHOED ANSWER", True) == matched_ids(indexed, "snake_case", False)


def insert_unindexed(ws, instruction_id: str, text: str) -> None:
    """An instruction written by a path that does not update the index."""
    dataset_id = ws.store._rows("SELECT id FROM datasets LIMIT 1")[0][0]
    with ws.store.transaction() as cur:
        cur.execute("INSERT INTO instructions (id, dataset_id, text, n_chars) VALUES (?, ?, ?, ?)",
                    [instruction_id, dataset_id, text, len(text)])


def test_a_stale_index_falls_back_to_the_scan_then_catches_up(indexed, monkeypatch):
    monkeypatch.setattr(text_index, "start_background_update", lambda store: None)  # keep it stale here
    insert_unindexed(indexed, "late-1", "A late pelican question")
    assert text_index.behind(indexed.store) == 1
    assert indexed.store.text_search_rows("pelican", False) is None  # stale: not answered from the index
    assert len(matched_ids(indexed, "PELICAN", False)) == 1  # ...and the scan still finds the new row
    assert text_index.update(indexed.store) == 1
    assert indexed.store.text_search_rows("pelican", False) is not None
    assert len(matched_ids(indexed, "PELICAN", False)) == 1


def test_a_stale_search_starts_a_background_catch_up(indexed):
    insert_unindexed(indexed, "late-2", "A late heron question")
    assert indexed.store.text_search_rows("heron", False) is None
    thread = text_index._BACKGROUND.get(str(indexed.store.text_index_folder.resolve()))
    assert thread is not None
    thread.join(timeout=30)
    assert text_index.behind(indexed.store) == 0
    assert indexed.store.text_search_rows("heron", False) is not None


def test_a_response_written_before_its_instruction_is_found_once_it_arrives(indexed):
    dataset_id = indexed.store._rows("SELECT id FROM datasets LIMIT 1")[0][0]
    with indexed.store.transaction() as cur:
        cur.execute("INSERT INTO responses (id, instruction_id, role, text, n_chars) VALUES "
                    "('r-early', 'i-late', 'teacher', 'An early walrus answer', 22)")
    assert text_index.update(indexed.store) == 1
    assert indexed.store.text_search_rows("walrus", True) == []  # no instruction: nothing to show yet
    with indexed.store.transaction() as cur:
        cur.execute("INSERT INTO instructions (id, dataset_id, text, n_chars) VALUES ('i-late', ?, 'Late', 4)",
                    [dataset_id])
    text_index.update(indexed.store)
    assert indexed.store.text_search_rows("walrus", True) is not None
    assert matched_ids(indexed, "WALRUS", True) == ["i-late"]


def test_short_queries_and_too_many_candidates_fall_back(indexed, monkeypatch):
    for query in ("a", "é", "50", "😀😀"[:2]):
        assert indexed.store.text_search_rows(query, True) is None
    assert len(matched_ids(indexed, "50", False)) == 1  # the scan answers them
    monkeypatch.setattr(text_index, "MAX_CANDIDATES", 2)
    assert indexed.store.text_search_rows("the", True) is None
    assert len(matched_ids(indexed, "the", True)) == len(scanned_ids(indexed, "the", True, monkeypatch)) >= 3


def test_a_mark_from_another_schema_is_not_trusted_and_is_rebuilt(indexed):
    meta_path = indexed.store.text_index_folder / text_index.META
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps(meta | {"migration": "0001_older"}))
    text_index.forget(indexed.store.text_index_folder)  # as a new process would read it
    assert text_index.behind(indexed.store) is None
    assert indexed.store.text_search_rows("snake", False) is None
    assert text_index.update(indexed.store) == len(TRICKY) * 2  # rebuilt from scratch
    assert text_index.behind(indexed.store) == 0
    assert len(matched_ids(indexed, "snake", False)) == 1
    # An index written in another format: a reader leaves it alone (and scans), the writer rebuilds it.
    meta_path.write_text(json.dumps(json.loads(meta_path.read_text()) | {"format": text_index.FORMAT - 1}))
    text_index.forget(indexed.store.text_index_folder)
    assert text_index.behind(indexed.store) is None and meta_path.exists()
    assert text_index.update(indexed.store) == len(TRICKY) * 2
    assert indexed.store.text_search_rows("snake", False) is not None


def test_small_workspaces_and_missing_tantivy_get_no_index(tmp_path, monkeypatch):
    ws = Workspace(tmp_path / "small")  # MIN_ROWS as shipped: a dozen rows get no index
    try:
        ws.import_paths([write_jsonl(tmp_path / "tricky.jsonl", TRICKY)], "tricky")
        assert not (ws.store.text_index_folder / text_index.META).exists()
        assert ws.store.text_search_rows("snake", False) is None
        assert len(matched_ids(ws, "snake", False)) == 1
    finally:
        ws.close()
    monkeypatch.setattr(text_index, "MIN_ROWS", 0)
    monkeypatch.setattr(text_index, "HAVE_TANTIVY", False)
    ws = Workspace(tmp_path / "no_tantivy")
    try:
        ws.import_paths([write_jsonl(tmp_path / "tricky.jsonl", TRICKY)], "tricky")
        assert text_index.update(ws.store) is None
        assert not ws.store.text_index_folder.exists()
        assert len(matched_ids(ws, "SNAKE_case", True)) == 1
    finally:
        ws.close()


def test_closing_the_workspace_stops_a_background_build_first_and_the_next_update_resumes(tmp_path, monkeypatch):
    # Closing DuckDB under a cursor that is still reading aborts the whole process, so close must
    # wait for the catch-up thread; small commit steps make the build long enough to be caught.
    monkeypatch.setattr(text_index, "MIN_ROWS", 0)
    monkeypatch.setattr(text_index, "SYNC_ROWS", 0)  # every import's catch-up goes to the background
    monkeypatch.setattr(text_index, "COMMIT_ROWS", 50)
    rows = [{"instruction": f"Question number {i} about herons", "output": f"Answer {i}"} for i in range(3000)]
    ws = Workspace(tmp_path / "ws")
    ws.import_paths([write_jsonl(tmp_path / "many.jsonl", rows)], "many")
    thread = text_index._BACKGROUND.get(str(ws.store.text_index_folder.resolve()))
    assert thread is not None
    ws.close()  # while the build runs
    assert not thread.is_alive()
    with Workspace(tmp_path / "ws") as again:
        monkeypatch.setattr(text_index, "COMMIT_ROWS", 200_000)
        text_index.update(again.store)
        assert text_index.behind(again.store) == 0
        found = again.store.text_search_rows("number 2999 ", False)
        assert found is not None  # answered by the index, and it holds the last row
        assert again.explore_count(ExploreFilter(search="number 2999 ")) == 1
    text_index.forget(tmp_path / "ws" / "index" / "text")


def test_winnow_index_status_and_rebuild_from_the_command_line(tmp_path):
    """A small workspace has no index (MIN_ROWS as shipped); `winnow index rebuild` builds one
    anyway, a deleted index folder is rebuilt, and the index then answers with the scan's ids."""
    import shutil
    import subprocess
    import sys

    from conftest import REPO

    root = tmp_path / "ws"
    with Workspace(root) as ws:
        ws.import_paths([write_jsonl(tmp_path / "tricky.jsonl", TRICKY)], "tricky")
        folder = ws.store.text_index_folder

    def winnow(*args):
        done = subprocess.run([sys.executable, "-m", "core.cli", *args, "--workspace", str(root)], cwd=REPO,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    before = json.loads(winnow("index", "status", "--json"))
    assert before["exists"] is False and before["instructions"] == len(TRICKY) and before["min_rows"] == 20_000
    assert "winnow index rebuild" in winnow("index", "status")
    built = json.loads(winnow("index", "rebuild", "--json"))
    assert built["indexed"] == 2 * len(TRICKY) and built["exists"] and built["behind"] == 0
    shutil.rmtree(folder)  # a workspace copied without its derived index
    assert f"indexed {2 * len(TRICKY)} rows" in winnow("index", "rebuild")
    assert "current" in winnow("index", "status")
    with Workspace(root) as ws:
        assert ws.store.text_search_rows("snake_case", False) is not None  # the index answers
        (found,) = matched_ids(ws, "snake_case", False)
        assert ws.sample(found)["instruction"]["text"] == TRICKY[0]["instruction"]
    text_index.forget(folder)
