"""Reviews after migration 0009: pairs can be reviewed (accept, reject, tie), every review records
its reviewer and where it was made, and reviews written before the table was rebuilt survive."""

from __future__ import annotations

import pytest

from core.migrations import MIGRATIONS
from core.store import Store
from tests.conftest import write_jsonl

NAMES = [name for name, _ in MIGRATIONS]
PAIR_ROWS = [
    {"prompt": "Say hello.", "chosen": "Hello! How can I help?", "rejected": "No."},
    {"prompt": "Add 2 and 2.", "chosen": "2 + 2 = 4.", "rejected": "5"},
]


@pytest.fixture
def pair_ws(workspace, tmp_path):
    workspace.import_paths([write_jsonl(tmp_path / "prefs.jsonl", PAIR_ROWS)], "prefs")
    return workspace


def _pairs(ws):
    return ws.store._dicts("SELECT * FROM preference_pairs ORDER BY created_at, id")


def _reviews(ws):
    return ws.store._dicts("SELECT * FROM reviews ORDER BY created_at, id")


def test_a_pair_can_be_accepted_rejected_or_a_tie_with_reviewer_and_source(pair_ws):
    pair = _pairs(pair_ws)[0]
    pair_ws.review(pair["id"], "tie", reviewer="  ana ", source="queue:filter")
    [row] = _reviews(pair_ws)
    assert (row["target_kind"], row["decision"], row["reviewer"], row["source"]) == ("pair", "tie", "ana",
                                                                                     "queue:filter")
    assert row["instruction_id"] == pair["instruction_id"]
    pair_ws.review(pair["id"], "reject", target_kind="pair")
    assert [r["decision"] for r in _reviews(pair_ws)] == ["tie", "reject"]


def test_tie_is_refused_on_a_response_and_an_edit_on_a_pair(pair_ws):
    pair = _pairs(pair_ws)[0]
    with pytest.raises(ValueError, match="tie is a verdict on a preference pair"):
        pair_ws.review(pair["chosen_id"], "tie")
    with pytest.raises(ValueError, match="edit one of the pair's responses"):
        pair_ws.review(pair["id"], "accept", edited_text="better")
    with pytest.raises(ValueError, match="is a pair, not a response"):
        pair_ws.review(pair["id"], "accept", target_kind="response")
    assert _reviews(pair_ws) == []


def test_a_pair_review_is_not_the_instruction_verdict(pair_ws):
    """Explore's review state is about instructions and responses; a pair's tie does not make
    its instruction 'rejected' or 'accepted'."""
    pair = _pairs(pair_ws)[0]
    pair_ws.review(pair["id"], "reject")
    decisions = pair_ws.store._rows("SELECT * FROM instruction_decisions")
    assert decisions == []


def test_reviews_written_before_0009_survive_the_rebuild(tmp_path):
    store = Store(tmp_path / "d.duckdb")
    store.migrate(upto="0008_verdicts_labels_difficulty_snapshots")
    with store.transaction() as cur:
        cur.execute("INSERT INTO reviews (id, target_kind, target_id, decision, note, reviewer, instruction_id) "
                    "VALUES ('r1', 'instruction', 'i1', 'accept', 'fine', 'bo', 'i1'), "
                    "('r2', 'response', 'x1', 'reject', NULL, NULL, 'i1')")
    store.migrate()
    rows = store._dicts("SELECT id, target_kind, decision, note, reviewer, instruction_id, source FROM reviews "
                        "ORDER BY id")
    assert rows == [
        {"id": "r1", "target_kind": "instruction", "decision": "accept", "note": "fine", "reviewer": "bo",
         "instruction_id": "i1", "source": None},
        {"id": "r2", "target_kind": "response", "decision": "reject", "note": None, "reviewer": None,
         "instruction_id": "i1", "source": None},
    ]
    assert store._rows("SELECT decision FROM target_decisions WHERE target_id = 'i1'") == [("accept",)]
    store.close()
