"""The review queue (core.review_queue): queues built from a filter, a snapshot and a judge's
suggestions, progress and skip semantics, and what a save stores. Real DuckDB workspaces."""

from __future__ import annotations

import pytest

from core import curate, judge
from core import review_queue as rq
from core.review_queue import Item, QueueSource
from core.selection import ExploreFilter
from tests.conftest import SMALL_PAIRS, write_jsonl

PREFS = [{"prompt": "Pick a colour.", "chosen": "Blue.", "rejected": "I refuse.", "task": "chat"},
         {"prompt": "Name a fruit.", "chosen": "Apple.", "rejected": "Rock."}]
PROMPTS = [{"instruction": "Write a haiku about rain."}]


def no_embed(texts):
    raise AssertionError("these specs do not dedup: nothing should be embedded")


@pytest.fixture
def ws(workspace, tmp_path):
    """Six seed pairs (one also answered by a teacher), two preference pairs, one bare prompt."""
    workspace.import_paths([write_jsonl(tmp_path / "seed.jsonl", SMALL_PAIRS)], "small")
    teacher = [SMALL_PAIRS[0] | {"output": "84."}]
    workspace.import_paths([write_jsonl(tmp_path / "teacher.jsonl", teacher)], "small", role="teacher")
    workspace.import_paths([write_jsonl(tmp_path / "prefs.jsonl", PREFS)], "prefs")
    workspace.import_paths([write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)], "bare", fmt="prompts")
    return workspace


def instruction_ids(ws, dataset: str) -> list[str]:
    return ws.explore_page(ExploreFilter(datasets=[dataset]))["id"].tolist()


# --------------------------------------------------------------------------------------------
# Building queues
# --------------------------------------------------------------------------------------------


def test_a_filter_queue_takes_pairs_else_responses_else_the_instruction_in_explore_order(ws):
    items = rq.build(ws, QueueSource("filter"))
    kinds = [it.target_kind for it in items]
    # small: 6 instructions, the first with two responses (seed, teacher); prefs: 2 pairs; bare: 1 prompt
    assert kinds == ["response"] * 7 + ["pair"] * 2 + ["instruction"]
    first = instruction_ids(ws, "small")[0]
    assert [it.instruction_id for it in items[:2]] == [first, first]
    roles = {r["id"]: r["role"] for r in ws.sample(first)["responses"]}
    assert [roles[it.target_id] for it in items[:2]] == ["seed", "teacher"]   # insertion order
    pair_ids = {p["id"] for iid in instruction_ids(ws, "prefs") for p in ws.store.pairs_for(iid)}
    assert {it.target_id for it in items if it.target_kind == "pair"} == pair_ids
    # A pair's responses (chosen, rejected) are not targets of their own: the pair is.
    pair_responses = {r["id"] for iid in instruction_ids(ws, "prefs") for r in ws.sample(iid)["responses"]}
    assert not pair_responses & {it.target_id for it in items}
    assert items[-1] == Item(instruction_ids(ws, "bare")[0], "instruction", instruction_ids(ws, "bare")[0])

    # The size caps the queue; the filter narrows it; the newest order reverses instructions.
    assert rq.build(ws, QueueSource("filter", size=3)) == items[:3]
    prefs = rq.build(ws, QueueSource("filter", filter=ExploreFilter(datasets=["prefs"])))
    assert [it.target_kind for it in prefs] == ["pair", "pair"]
    assert ws.store.filter_targets(ExploreFilter(), 1, order="newest")[0]["target_kind"] == "instruction"
    with pytest.raises(ValueError, match="order"):
        ws.store.filter_targets(ExploreFilter(), 1, order="random")


def test_a_one_sample_queue_is_that_instruction_s_targets_and_survives_its_link(ws):
    """Explore's "Review this in the queue": a filter on one instruction id, through the URL."""
    first = instruction_ids(ws, "small")[0]
    source = QueueSource.from_query(QueueSource("filter", filter=ExploreFilter(ids=[first])).to_query())
    assert source.filter.ids == [first]
    items = rq.build(ws, source)
    assert [it.instruction_id for it in items] == [first, first]
    assert {it.target_id for it in items} == {r["id"] for r in ws.sample(first)["responses"]}
    assert rq.build(ws, QueueSource("filter", filter=ExploreFilter(ids=["no-such-id"]))) == []


def test_an_unreviewed_filter_leaves_reviewed_instructions_out(ws):
    first = rq.build(ws, QueueSource("filter", size=1))[0]
    ws.review(first.target_id, "reject")
    items = rq.build(ws, QueueSource("filter", filter=ExploreFilter(review="unreviewed")))
    assert first.instruction_id not in {it.instruction_id for it in items}
    assert len(items) == 10 - 2      # both responses of the reviewed instruction are out


def test_a_snapshot_queue_follows_member_order_once_per_sample(ws):
    sft = curate.create_snapshot(ws, {"datasets": ["small"], "roles": ["seed"]}, "seeds", embed=no_embed)
    items = rq.build(ws, QueueSource("snapshot", snapshot="seeds"))
    members = ws.store.snapshot_members_page("seeds", 50, 0)
    assert sft.n_members == 6 and len(items) == 6
    assert [it.target_id for it in items] == members.sort_values("position")["response_id"].tolist()
    assert {it.target_kind for it in items} == {"response"}

    curate.create_snapshot(ws, {"kind": "preference"}, "prefs", embed=no_embed)
    pairs = rq.build(ws, QueueSource("snapshot", snapshot="prefs"))
    assert [it.target_kind for it in pairs] == ["pair", "pair"]
    curate.create_snapshot(ws, {"datasets": ["bare"], "roles": []}, "bare", embed=no_embed)
    assert [it.target_kind for it in rq.build(ws, QueueSource("snapshot", snapshot="bare"))] == ["instruction"]

    assert len(rq.build(ws, QueueSource("snapshot", snapshot="seeds", size=2))) == 2
    with pytest.raises(ValueError, match="no snapshot named"):
        rq.build(ws, QueueSource("snapshot", snapshot="missing"))


def judge_responses(ws, scores: list[float]) -> list[str]:
    """Judge the six seed responses with `scores`; returns their ids in Explore order."""
    rids = [ws.sample(iid)["responses"][0]["id"] for iid in instruction_ids(ws, "small")]
    seed = [r for r in rids if ws.store.target_kind(r) == "response"]
    raws = [f"Reason.\nScore: {s:g}" for s in scores]
    ws.record_judgments(judge.judgment_rows("pointwise_5", "judge-m", seed, raws))
    return seed


def test_a_judge_queue_is_the_unlabeled_targets_nearest_the_threshold(ws):
    rids = judge_responses(ws, [5, 4, 3, 2, 5, 1])
    ws.review(rids[1], "accept")                         # labeled: not suggested again
    source = QueueSource("judge", judge_model="judge-m", rubric="pointwise_5", threshold=4)
    items = rq.build(ws, source)
    expected = ws.review_candidates("judge-m", "pointwise_5", 4, source.n)["target_id"].tolist()
    assert [it.target_id for it in items] == expected
    assert rids[1] not in expected and len(items) == 5
    # nearest first: 5 and 5 (distance 1, kept side), 3 (distance 1), 2, 1
    assert [it.target_id for it in items[2:]] == [rids[2], rids[3], rids[5]]
    assert all(it.target_kind == "response" for it in items)
    assert len(rq.build(ws, QueueSource("judge", judge_model="judge-m", rubric="pointwise_5", threshold=4,
                                        size=2))) == 2
    # A pairwise judge's targets are orderings of two responses, not something a review names.
    a, b = rids[0], rids[1]
    ws.record_judgments([row | {"target_id": judge.pair_target_id(a, b)} for row in
                         judge.judgment_rows("pointwise_5", "pair-judge", [a], ["Score: 3"])])
    assert rq.build(ws, QueueSource("judge", judge_model="pair-judge", rubric="pointwise_5", threshold=3)) == []


# --------------------------------------------------------------------------------------------
# Progress, next, skip
# --------------------------------------------------------------------------------------------


def test_progress_and_next_follow_the_stored_decisions_and_the_session_skips(ws):
    source = QueueSource("filter", size=4)
    items = rq.build(ws, source)
    assert rq.progress(ws, items) == (0, 4)
    assert rq.next_item(ws, items) == items[0]

    rq.save(ws, items[0], "accept", reviewer="ana", source=source)
    assert rq.progress(ws, items) == (1, 3)
    assert rq.next_item(ws, items) == items[1]
    # A skip is remembered by the caller (the session), never stored.
    assert rq.next_item(ws, items, skipped={items[1].target_id}) == items[2]
    assert rq.progress(ws, items) == (1, 3)
    # A note alone is no decision: the item stays to do.
    rq.save(ws, items[1], None, reviewer="ana", source=source, note="come back to this")
    assert rq.progress(ws, items) == (1, 3) and rq.next_item(ws, items) == items[1]
    # The latest decision wins, and a new queue over the same items sees what is stored.
    rq.save(ws, items[0], "reject", reviewer="ana", source=source)
    assert rq.decisions(ws, items) == {items[0].target_id: "reject"}
    for it in items[1:]:
        rq.save(ws, it, "accept", reviewer="ana", source=source)
    assert rq.progress(ws, rq.build(ws, source)) == (4, 0)
    assert rq.next_item(ws, items) is None
    assert rq.progress_line(3, 20, 2) == "3 of 20 done · 17 left · 2 skipped"
    assert rq.progress_line(3, 20, 0) == "3 of 20 done · 17 left"


# --------------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------------


def test_save_stores_the_reviewer_and_the_queue_source(ws):
    source = QueueSource("filter", size=1)
    item = rq.build(ws, source)[0]
    rq.save(ws, item, "accept", reviewer="ana", source=source, note="clear and right")
    row = rq.latest_review(ws, item)
    assert (row["decision"], row["reviewer"], row["source"], row["note"]) == ("accept", "ana", "queue:filter",
                                                                              "clear and right")
    assert row["target_kind"] == "response" and row["current_decision"] == "accept"
    assert rq.saved_line(item, row) == f"Saved: accepted, with a note {item.short_id} (response) by ana"

    rq.save(ws, item, "accept", reviewer="ana", source=source, edited_text="12 * 7 is 84.")
    assert rq.latest_review(ws, item)["edited_text"] == "12 * 7 is 84."
    assert rq.record(ws, item)["target_text"] == "12 * 7 is 84."      # the edit box prefills the latest edit
    with pytest.raises(ValueError, match="nothing to save"):
        rq.save(ws, item, None, reviewer="ana", source=source, note="  ")


def test_a_tie_is_stored_on_a_pair_and_refused_on_a_response(ws):
    source = QueueSource("filter", filter=ExploreFilter(datasets=["prefs"]))
    pair, other = rq.build(ws, source)
    rq.save(ws, pair, "tie", reviewer="bo", source=source)
    stored = rq.latest_review(ws, pair)
    assert (stored["target_kind"], stored["decision"], stored["reviewer"]) == ("pair", "tie", "bo")
    assert rq.progress(ws, [pair, other]) == (1, 1)
    assert rq.saved_line(pair, stored) == f"Saved: a tie {pair.short_id} (pair) by bo"
    assert rq.record(ws, pair)["pair"]["verdict_text"] == "a tie (1 review)"

    response = rq.build(ws, QueueSource("filter", size=1))[0]
    with pytest.raises(ValueError, match="tie is a verdict on a preference pair"):
        rq.save(ws, response, "tie", reviewer="bo", source=source)
    assert rq.latest_review(ws, response) is None


def test_an_edit_on_a_pair_goes_to_its_response_and_the_decision_to_the_pair(ws):
    source = QueueSource("filter", filter=ExploreFilter(datasets=["prefs"]))
    pair = rq.build(ws, source)[0]
    info = rq.record(ws, pair)["pair"]
    ids = rq.save(ws, pair, "accept", reviewer="bo", source=source, edited_text="Blue, clearly.")
    assert len(ids) == 2
    edit = ws.store.latest_review(info["chosen_id"])
    assert (edit["edited_text"], edit["decision"], edit["source"]) == ("Blue, clearly.", None, "queue:filter")
    assert rq.latest_review(ws, pair)["decision"] == "accept"
    with pytest.raises(ValueError, match="chosen or rejected"):
        rq.save(ws, pair, "accept", reviewer="bo", source=source, edited_text="x", edit_target=pair.target_id)


# --------------------------------------------------------------------------------------------
# The record
# --------------------------------------------------------------------------------------------


def test_the_record_shows_every_response_with_scores_verdicts_task_and_lineage(ws):
    first = instruction_ids(ws, "small")[0]
    responses = ws.sample(first)["responses"]
    seed, teacher = (next(r["id"] for r in responses if r["role"] == role) for role in ("seed", "teacher"))
    ws.record_judgments(judge.judgment_rows("pointwise_5", "judge-m", [teacher], ["Score: 2"]))
    ws.record_judgments(judge.judgment_rows("pointwise_5", "judge-m", [teacher], ["Later.\nScore: 4"]))
    ws.review(seed, "reject")
    item = Item(teacher, "response", first)
    rec = rq.record(ws, item)
    assert rec["instruction"]["text"] == "What is 12 * 7?"
    assert [r["role"] for r in rec["responses"]] == ["teacher", "seed"]     # the target first
    target, other = rec["responses"]
    assert target["is_target"] and not other["is_target"]
    assert target["text"] == "84." and target["model"] is None
    assert [s["score"] for s in target["scores"]] == [4.0]       # the newest verdict of judge-m
    assert target["scores"][0] | {"score": 0} == {"judge": "judge-m", "rubric": "pointwise_5", "score": 0,
                                                  "scale_max": 5}
    assert other["verdict"]["decision"] == "reject" and other["verdict_text"] == "rejected (1 review)"
    assert rq.scores_text(other["scores"]) == "no judge score"
    assert rec["target_text"] == "84." and rec["pair"] is None
    assert rq.task_text(rec["task"]) == "task math (imported)"
    line = rq.lineage_text(rec["lineage"])
    assert line.startswith("dataset small · seed.jsonl line 1 · round 0 · import"), line

    pair = rq.build(ws, QueueSource("filter", filter=ExploreFilter(datasets=["prefs"])))[0]
    rec = rq.record(ws, pair)
    assert [(r["pair_side"], r["text"]) for r in rec["responses"]] == [("chosen", "Blue."), ("rejected", "I refuse.")]
    assert rec["target_text"] is None and rec["pair"]["verdict_text"] == "not reviewed"


def test_the_judge_queue_sees_its_interval_narrow(ws):
    rids = judge_responses(ws, [5, 4, 3, 2, 5, 1])
    source = QueueSource("judge", judge_model="judge-m", rubric="pointwise_5", threshold=4)
    before = rq.interval_snapshot(rq.judge_calibration(ws, source))
    assert before == {"n_labels": 0, "half_width": None}
    for target_id in rids[:3]:
        ws.review(target_id, "accept")
    cal = rq.judge_calibration(ws, source)
    assert cal.n_labels == 3 and cal.precision.n == 2
    assert rq.narrowing_line(before, cal) == f"precision unknown → ± {cal.precision.half_width:.2f} after 3 new labels"
    later = rq.interval_snapshot(cal)
    ws.review(rids[4], "accept")
    now = rq.judge_calibration(ws, source)
    assert now.precision.half_width < cal.precision.half_width      # a third kept label narrows it
    assert rq.narrowing_line(later, now) == (f"precision ± {cal.precision.half_width:.2f} → "
                                             f"± {now.precision.half_width:.2f} after 1 new label")
    assert rq.judge_calibration(ws, QueueSource("filter")) is None


def test_queue_descriptions_and_actions():
    assert rq.describe(QueueSource("filter", filter=ExploreFilter(review="unreviewed", datasets=["a"]))) == \
        "filter: unreviewed instructions · datasets a"
    assert rq.describe(QueueSource("snapshot", snapshot="s1")) == "snapshot s1"
    assert rq.describe(QueueSource("judge", judge_model="m", rubric="r", threshold=3.5)) == "judge m · r · threshold 3.5"
    assert [(a.key, a.label) for a in rq.ACTIONS][:3] == [("review_accept", "Accept (A)"), ("review_reject", "Reject (X)"),
                                                          ("review_tie", "Tie (T)")]
    # Streamlit keeps R (rerun) and C (clear cache) for itself; shortcuts are one letter each, distinct.
    shortcuts = [a.shortcut for a in rq.ACTIONS]
    assert len(set(shortcuts)) == len(shortcuts) and not {"R", "C"} & set(shortcuts)
