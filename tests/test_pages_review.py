"""The Review page (app_pages/9_Review.py) under AppTest, on a real workspace: save and next, skip,
a tie on a pair, the edit box on request, a judge queue from a link with its calibration line,
and a bad link. AppTest cannot press keys: the buttons' shortcuts are checked on their protos
(the keyboard itself is the browser test's)."""

from __future__ import annotations

import re

import pytest

import ui
from core import judge
from core import review_queue as rq
from core.review_queue import QueueSource
from core.selection import ExploreFilter
from tests.conftest import SMALL_PAIRS, open_page, texts, write_jsonl

PAGE = "9_Review.py"
PREFS = [{"prompt": "Pick a colour.", "chosen": "Blue.", "rejected": "I refuse."},
         {"prompt": "Name a fruit.", "chosen": "Apple.", "rejected": "Rock."}]


@pytest.fixture
def seeded(app_ws, tmp_path):
    app_ws.import_paths([write_jsonl(tmp_path / "seed.jsonl", SMALL_PAIRS)], "small")
    return app_ws


def review_page(query: dict | None = None, reviewer: str | None = "ana"):
    at = open_page()
    if query is not None:
        at.query_params.update(query)
    at.switch_page(f"app_pages/{PAGE}").run()
    assert not at.exception, at.exception
    if reviewer:
        at.sidebar.text_input(key=ui.REVIEWER_KEY).input(reviewer).run()
        assert not at.exception, at.exception
    return at


def button(at, key: str):
    found = [b for b in at.button if b.key == key]
    assert found, f"no button {key!r} in {[b.key for b in at.button]}"
    return found[0]


def progress_text(at) -> str:
    """The progress bar's count ("1 of 6 done · 5 left"), without the record's position after it."""
    return at.get("progress")[0].proto.text.split(" — ")[0]


def plain(text: str) -> str:
    """What a reader sees of a markdown-escaped message (ui.md_escape)."""
    return re.sub(r"\\(.)", r"\1", text).replace("  \n", "\n")


def success_texts(at) -> str:
    return plain("\n".join(s.value for s in at.success))


def info_texts(at) -> str:
    return plain("\n".join(i.value for i in at.info))


def stored(ws) -> list[dict]:
    return ws.store._dicts("SELECT target_id, target_kind, decision, reviewer, source, note, edited_text "
                           "FROM reviews ORDER BY created_at")


def test_accept_saves_with_the_reviewer_and_source_and_shows_the_next_record(seeded):
    items = rq.build(seeded, QueueSource("filter", filter=ExploreFilter(review="unreviewed")))
    at = review_page()
    assert progress_text(at) == f"0 of {len(items)} done · {len(items)} left"
    assert "What is 12 * 7?" in texts(at)
    # Every action button has a stable key, a label that names its key, and the shortcut itself.
    for action in rq.ACTIONS:
        b = button(at, action.key)
        assert b.label == action.label and b.proto.shortcut == action.shortcut.lower()  # stored lowercased
    assert button(at, "review_tie").disabled          # a response cannot be a tie
    assert button(at, "review_back").disabled         # nothing to go back to yet

    button(at, "review_accept").click().run()
    assert not at.exception, at.exception
    assert stored(seeded) == [{"target_id": items[0].target_id, "target_kind": "response", "decision": "accept",
                               "reviewer": "ana", "source": "queue:filter", "note": None, "edited_text": None}]
    assert progress_text(at) == f"1 of {len(items)} done · {len(items) - 1} left"
    assert at.get("progress")[0].proto.text.endswith(f" — record 2: response {items[1].short_id}")
    assert f"Saved: accepted {items[0].short_id} (response) by ana" in success_texts(at)
    assert "Name three primary colours." in texts(at) and "What is 12 * 7?" not in texts(at)

    # Reject moves on too; Back returns to the accepted record, showing its stored verdict.
    button(at, "review_reject").click().run()
    assert [r["decision"] for r in stored(seeded)] == ["accept", "reject"]
    assert progress_text(at) == f"2 of {len(items)} done · {len(items) - 2} left"
    button(at, "review_back").click().run()
    assert "Name three primary colours." in texts(at)
    assert "Verdict: rejected (1 review)" in texts(at)


def test_without_a_reviewer_name_nothing_can_be_saved(seeded):
    at = review_page(reviewer=None)
    for key in ("review_accept", "review_reject", "review_edit", "review_note"):
        assert button(at, key).disabled
    assert not button(at, "review_skip").disabled
    assert any("reviewer name" in c.value for c in at.caption)
    button(at, "review_skip").click().run()                          # nothing stored: allowed
    assert stored(seeded) == [] and "1 skipped" in progress_text(at)
    at.sidebar.text_input(key=ui.REVIEWER_KEY).input("  bo ").run()
    assert not button(at, "review_accept").disabled
    button(at, "review_accept").click().run()
    assert [r["reviewer"] for r in stored(seeded)] == ["bo"]


def test_skip_is_not_stored_and_counted_apart(seeded):
    items = rq.build(seeded, QueueSource("filter", filter=ExploreFilter(review="unreviewed")))
    at = review_page()
    button(at, "review_skip").click().run()
    assert stored(seeded) == []
    assert progress_text(at) == f"0 of {len(items)} done · {len(items)} left · 1 skipped"
    assert "Name three primary colours." in texts(at)
    assert f"Skipped {items[0].short_id}" in info_texts(at)
    button(at, "review_accept").click().run()
    assert stored(seeded)[0]["target_id"] == items[1].target_id


def test_a_pair_can_be_a_tie(app_ws, tmp_path):
    app_ws.import_paths([write_jsonl(tmp_path / "prefs.jsonl", PREFS)], "prefs")
    pairs = rq.build(app_ws, QueueSource("filter"))
    at = review_page()
    assert "Blue." in texts(at) and "I refuse." in texts(at)
    badges = [m.value.split("]")[0] for m in at.markdown if "-badge[" in m.value]
    assert badges == [":blue-badge[CHOSEN", ":orange-badge[REJECTED"]
    button(at, "review_tie").click().run()
    assert not at.exception, at.exception
    assert stored(app_ws)[0] | {"note": None} == {
        "target_id": pairs[0].target_id, "target_kind": "pair", "decision": "tie", "reviewer": "ana",
        "source": "queue:filter", "note": None, "edited_text": None}
    assert f"Saved: a tie {pairs[0].short_id} (pair) by ana" in success_texts(at)
    assert "Apple." in texts(at)


def test_the_edit_box_opens_only_on_request_and_saves_with_an_accept(seeded):
    items = rq.build(seeded, QueueSource("filter", filter=ExploreFilter(review="unreviewed")))
    at = review_page()
    assert not [t for t in at.text_area if t.key == "review_edit_text"]
    button(at, "review_edit").click().run()
    box = [t for t in at.text_area if t.key == "review_edit_text"]
    assert box and box[0].value == "12 * 7 = 84."      # prefilled with the current text
    box[0].input("12 * 7 = 84, since 10 * 7 + 2 * 7 = 84.").run()
    button(at, "review_note").click().run()
    [t for t in at.text_area if t.key == "review_note_text"][0].input("added the working").run()
    button(at, "review_save_edit").click().run()
    assert not at.exception, at.exception
    row = stored(seeded)[0]
    assert (row["target_id"], row["decision"], row["edited_text"], row["note"]) == (
        items[0].target_id, "accept", "12 * 7 = 84, since 10 * 7 + 2 * 7 = 84.", "added the working")
    assert not [t for t in at.text_area if t.key in ("review_edit_text", "review_note_text")]  # closed again
    assert f"Saved: accepted, edited, with a note {items[0].short_id}" in success_texts(at)


def test_a_note_alone_is_saved_and_the_record_stays(seeded):
    at = review_page()
    button(at, "review_note").click().run()
    [t for t in at.text_area if t.key == "review_note_text"][0].input("check the maths").run()
    button(at, "review_save_note").click().run()
    assert [(r["decision"], r["note"]) for r in stored(seeded)] == [(None, "check the maths")]
    assert "What is 12 * 7?" in texts(at)                         # still to decide
    assert progress_text(at).startswith("0 of ")


def test_a_judge_queue_from_a_link_shows_the_calibration_narrowing(seeded):
    ids = seeded.explore_page(ExploreFilter())["id"].tolist()
    rids = [seeded.sample(i)["responses"][0]["id"] for i in ids]
    seeded.record_judgments(judge.judgment_rows("pointwise_5", "judge-m", rids,
                                                [f"Score: {s}" for s in (5, 4, 4, 2, 5, 1)]))
    seeded.review(rids[0], "accept")
    source = QueueSource("judge", judge_model="judge-m", rubric="pointwise_5", threshold=4)
    expected = rq.build(seeded, source)
    at = review_page(source.to_query())
    info = info_texts(at)
    sentence = seeded.judge_evidence("judge-m", "pointwise_5").calibrate(4, bootstrap=0).sentence()
    assert f"judge-m · pointwise_5: {sentence}" in info
    assert "after 0 new labels" in info
    assert progress_text(at) == f"0 of {len(expected)} done · {len(expected)} left"
    button(at, "review_accept").click().run()
    row = stored(seeded)[-1]
    assert (row["target_id"], row["source"], row["reviewer"]) == (expected[0].target_id, "queue:judge", "ana")
    info = info_texts(at)
    now = seeded.judge_evidence("judge-m", "pointwise_5").calibrate(4, bootstrap=0)
    assert f"± {now.precision.half_width:.2f} after 1 new label" in info
    assert now.n_labels == 2


@pytest.mark.parametrize("query, message", [
    ({"source": "judge", "judge": "judge-m"}, "needs a judge model, a rubric and a threshold"),
    ({"source": "bogus"}, "queue source must be one of"),
    ({"source": "filter", "filter": "{not json"}, "not a valid Explore filter"),
    ({"source": "filter", "size": "many"}, "size a whole number"),
    ({"source": "snapshot", "snapshot": "missing"}, "no snapshot named"),
])
def test_a_bad_link_is_an_error_and_writes_nothing(seeded, query, message):
    at = review_page(query)
    errors = plain("\n".join(e.value for e in at.error))
    assert message in errors, errors
    assert not [b for b in at.button if b.key == "review_accept"]
    assert stored(seeded) == []


def test_the_chooser_opens_a_snapshot_queue(seeded):
    from core import curate

    curate.create_snapshot(seeded, {"datasets": ["small"], "roles": ["seed"]}, "seeds",
                           embed=lambda texts: pytest.fail("no dedup here"))
    at = review_page()
    at.selectbox(key="review_choose_kind").select("snapshot").run()
    at.selectbox(key="review_choose_snapshot").select("seeds").run()
    button(at, "review_open_queue").click().run()
    assert not at.exception, at.exception
    assert at.query_params.get("source") == "snapshot" and at.query_params.get("snapshot") == "seeds"
    button(at, "review_accept").click().run()
    assert stored(seeded)[0]["source"] == "queue:snapshot"


def test_a_reload_finds_the_same_queue_and_its_progress(seeded):
    items = rq.build(seeded, QueueSource("filter", filter=ExploreFilter(review="unreviewed")))
    at = review_page()
    button(at, "review_accept").click().run()
    button(at, "review_skip").click().run()
    # A new session on the same link (a reload): the same frozen queue, the decision counted, the
    # skip forgotten (it was this session's), although the unreviewed filter now matches one less.
    again = review_page()
    assert progress_text(again) == f"1 of {len(items)} done · {len(items) - 1} left"
    assert "Name three primary colours." in texts(again)
    # Rebuild asks the source again: the reviewed instruction is no longer unreviewed.
    button(again, "review_rebuild").click().run()
    assert progress_text(again) == f"0 of {len(items) - 1} done · {len(items) - 1} left"


def test_the_chooser_opens_a_judge_queue_at_the_rubrics_default_threshold(seeded):
    ids = seeded.explore_page(ExploreFilter())["id"].tolist()
    rids = [seeded.sample(i)["responses"][0]["id"] for i in ids]
    seeded.record_judgments(judge.judgment_rows("pointwise_5", "judge-m", rids, ["Score: 3"] * 6))
    at = review_page()
    at.selectbox(key="review_choose_kind").select("judge").run()
    assert at.selectbox(key="review_choose_judge").value == ("judge-m", "pointwise_5")
    threshold = at.number_input(key="review_choose_threshold_pointwise_5").value
    assert threshold == judge.scale_of("pointwise_5").default_threshold
    button(at, "review_open_queue").click().run()
    assert not at.exception, at.exception
    assert (at.query_params.get("source"), at.query_params.get("judge")) == ("judge", "judge-m")
    assert "judge-m · pointwise_5: score ≥" in info_texts(at)
    assert progress_text(at) == "0 of 6 done · 6 left"
