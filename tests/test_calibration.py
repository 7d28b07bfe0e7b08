"""Judge calibration (core/calibration.py) against hand-computed values, and judgments in a real
workspace: rows inserted into a DuckDB file, NULL scores counted as parse failures (never 0),
and Workspace.calibration against reviews recorded with Workspace.review."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from core import judge
from core.calibration import (
    MIN_LABELS,
    MORE_LABELS_CAP,
    Z95,
    Auc,
    Tau,
    Trust,
    calibrate,
    confusion,
    judge_trust,
    kendall_tau,
    kendall_tau_b,
    kept_condition_sql,
    kept_mask,
    kept_share,
    parse_failure_rate,
    proportion,
    review_candidates,
    roc_auc,
    threshold_sweep,
    to_labels,
    wilson_interval,
)

# Ten labeled targets, by hand. Threshold 6 keeps the first five.
#   score : 9  8  8  7  6 | 5  4  3  None 2
#   label : 1  1  0  1  1 | 0  1  0  1    0
#   kept  : tp tp fp tp tp| tn fn tn fn   tn      -> tp 4, fp 1, fn 2, tn 3
SCORES = [9, 8, 8, 7, 6, 5, 4, 3, None, 2]
LABELS = ["accept", "accept", "reject", "accept", "accept", "reject", "accept", "reject", "accept", "reject"]


def r3(pair):
    return tuple(round(x, 3) for x in pair)


# --------------------------------------------------------------------------------------------
# Wilson intervals
# --------------------------------------------------------------------------------------------

def test_wilson_interval_against_hand_computed_values():
    # 4/5: centre (0.8 + z²/10) / (1 + z²/5) = 0.66966, half-width 0.29412 -> (0.376, 0.964)
    assert r3(wilson_interval(4, 5)) == (0.376, 0.964)
    # 7/10: centre 0.64449, half-width 0.24772 -> (0.397, 0.892)
    assert r3(wilson_interval(7, 10)) == (0.397, 0.892)
    assert r3(wilson_interval(8, 10)) == (0.490, 0.943)
    assert r3(wilson_interval(0, 10)) == (0.0, 0.278)
    assert r3(wilson_interval(10, 10)) == (0.722, 1.0)
    assert wilson_interval(0, 0) == (0.0, 1.0)       # no labels: nothing known
    assert Z95 == pytest.approx(1.959964, abs=1e-6)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_proportion():
    p = proportion(4, 5)
    assert p.value == 0.8 and r3((p.low, p.high)) == (0.376, 0.964)
    assert round(p.half_width, 3) == 0.294
    assert str(p) == "0.80 ± 0.29 (4/5)"
    assert proportion(0, 0).value is None
    failures = parse_failure_rate(2, 40)
    assert failures.value == 0.05 and r3((failures.low, failures.high)) == (0.014, 0.165)


def test_labels():
    assert to_labels(["accept", "Reject", True, False, 1, 0, np.int64(1)]).tolist() == [1, 0, 1, 0, 1, 0, 1]
    with pytest.raises(ValueError, match="maybe"):
        to_labels(["accept", "maybe"])
    with pytest.raises(ValueError):
        to_labels([None])


# --------------------------------------------------------------------------------------------
# Metrics at a threshold
# --------------------------------------------------------------------------------------------

def test_confusion_matrix_by_hand():
    assert confusion(SCORES, LABELS, 6) == {"tp": 4, "fp": 1, "fn": 2, "tn": 3}
    # an unparsed score is never kept, whatever the threshold
    assert confusion([None], [1], -100) == {"tp": 0, "fp": 0, "fn": 1, "tn": 0}
    with pytest.raises(ValueError, match="same targets"):
        confusion([1, 2], [1], 1)


def test_calibrate_by_hand():
    cal = calibrate(SCORES, LABELS, 6, bootstrap=200)
    assert (cal.tp, cal.fp, cal.fn, cal.tn, cal.n_labels) == (4, 1, 2, 3, 10)
    assert cal.precision.value == 0.8 and r3((cal.precision.low, cal.precision.high)) == (0.376, 0.964)
    assert cal.recall.value == pytest.approx(4 / 6) and (cal.recall.k, cal.recall.n) == (4, 6)
    assert cal.agreement.value == 0.7 and r3((cal.agreement.low, cal.agreement.high)) == (0.397, 0.892)
    assert (cal.kept.k, cal.kept.n) == (5, 10)
    assert (cal.parse_failures.k, cal.parse_failures.n) == (1, 10)   # the None
    assert cal.kendall.n == 9                                         # the None is left out
    assert cal.sentence() == "score ≥ 6 keeps 50% at precision 0.80 ± 0.29 on 10 labels"
    d = cal.as_dict()
    assert d["confusion"] == {"tp": 4, "fp": 1, "fn": 2, "tn": 3} and d["sentence"] == cal.sentence()


def test_calibrate_with_a_population_and_verdict_counts():
    population = pd.DataFrame({"score": [None, 2.0, 4.0, 5.0], "n": [3, 20, 50, 27]})
    cal = calibrate([5, 4], ["accept", "reject"], 4.5, population=population, n_judgments=110, n_failed=3,
                    bootstrap=0)
    assert (cal.kept.k, cal.kept.n) == (27, 100)
    assert (cal.parse_failures.k, cal.parse_failures.n) == (3, 110)
    assert cal.precision.value == 1.0 and cal.recall.value == 1.0
    assert cal.sentence() == "score ≥ 4.5 keeps 27% at precision 1.00 ± 0.40 on 2 labels"
    assert kept_share([1, 2, None, 5], 2).k == 2


def test_lower_is_better_keeps_scores_at_or_below_the_threshold():
    # Ranks (1 = best), by hand:  rank: 1  1  2  3  None | label: 1 0 1 0 1; rank <= 1 keeps two.
    ranks, labels = [1, 1, 2, 3, None], ["accept", "reject", "accept", "reject", "accept"]
    assert kept_mask([1, 2, None], 1, higher_is_better=False).tolist() == [True, False, False]
    assert confusion(ranks, labels, 1, higher_is_better=False) == {"tp": 1, "fp": 1, "fn": 2, "tn": 1}
    cal = calibrate(ranks, labels, 2, bootstrap=0, higher_is_better=judge.higher_is_better("listwise"))
    assert (cal.tp, cal.fp, cal.fn, cal.tn) == (2, 1, 1, 1) and (cal.kept.k, cal.kept.n) == (3, 5)
    assert cal.sentence() == "score ≤ 2 keeps 60% at precision 0.67 ± 0.37 on 5 labels"
    assert cal.as_dict()["higher_is_better"] is False
    # τ keeps meaning agreement: accepted answers ranked better (lower) give a positive τ.
    assert calibrate([1, 2, 3, 4], [1, 1, 0, 0], 2, bootstrap=0, higher_is_better=False).kendall.value > 0
    assert calibrate([3], ["accept"], 2, bootstrap=0, higher_is_better=False).sentence().endswith(
        "none of the 1 label is at or below it, so precision is unknown")
    sweep = threshold_sweep(ranks, labels, [1, 2, 3], higher_is_better=False)
    assert sweep["n_kept"].tolist() == [2, 3, 4] and (np.diff(sweep["kept_share"]) >= 0).all()
    picked = review_candidates({"x": 2.0, "y": 3.0, "z": 1.5}, {}, 2, higher_is_better=False)
    assert picked["target_id"].tolist() == ["x", "z", "y"] and picked["kept"].tolist() == [True, True, False]
    assert kept_condition_sql(False) == "score <= ?" and kept_condition_sql(True, "j.score") == "j.score >= ?"
    with pytest.raises(ValueError, match="plain column name"):
        kept_condition_sql(True, "score; DROP TABLE judgments")


def test_sentences_when_there_is_little_to_say():
    assert calibrate([], [], 4, population=[3.0, 5.0]).sentence() == \
        "score ≥ 4 keeps 50%; no human labels yet to say at what precision"
    assert calibrate([2], ["accept"], 4, population=[2.0, 5.0]).sentence() == \
        "score ≥ 4 keeps 50%; none of the 1 label is at or above it, so precision is unknown"
    assert calibrate([], [], 4).sentence() == "score ≥ 4: nothing has been judged yet"


def test_threshold_sweep():
    sweep = threshold_sweep(SCORES, LABELS)
    assert sweep["threshold"].tolist() == [2, 3, 4, 5, 6, 7, 8, 9]
    row = sweep.set_index("threshold").loc[6]
    assert row["precision"] == 0.8 and row["n_kept"] == 5 and row["kept_share"] == 0.5
    assert round(row["precision_low"], 3) == 0.376 and row["recall"] == pytest.approx(4 / 6)
    # kept share never grows with the threshold
    assert (np.diff(sweep["kept_share"]) <= 0).all()
    # above every score nothing is kept: precision has no labels to stand on
    high = threshold_sweep(SCORES, LABELS, thresholds=[10])
    assert math.isnan(high["precision"][0]) and high["recall"][0] == 0.0 and high["n_kept"][0] == 0


# --------------------------------------------------------------------------------------------
# Kendall τ-b
# --------------------------------------------------------------------------------------------

def test_kendall_tau_b_by_hand():
    # 10 pairs, 2 discordant ((2,3) and (4,5)): (8 - 2) / 10
    assert kendall_tau_b([1, 2, 3, 4, 5], [1, 3, 2, 5, 4]) == pytest.approx(0.6)
    # ties: C = 2, D = 0, n0 = 6, x-ties 1, y-ties 3 -> 2 / sqrt(5 * 3)
    assert kendall_tau_b([1, 1, 2, 3], [0, 1, 1, 1]) == pytest.approx(2 / math.sqrt(15))
    assert kendall_tau_b([3, 2, 1], [1, 2, 3]) == pytest.approx(-1.0)
    assert math.isnan(kendall_tau_b([1, 2, 3], [1, 1, 1]))      # a constant side: undefined
    assert math.isnan(kendall_tau_b([1], [1]))
    assert kendall_tau_b([1, None, 3, 2], [1, 0, 3, 2]) == pytest.approx(1.0)   # NaN pairs left out


def test_kendall_tau_b_matches_scipy_and_the_pair_count():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(1)
    scores = rng.integers(1, 11, 300).astype(float)
    labels = (scores + rng.normal(0, 3, 300) > 5.5).astype(int)
    expected = stats.kendalltau(scores, labels).statistic
    assert kendall_tau_b(scores, labels) == pytest.approx(expected, abs=1e-12)
    continuous = rng.normal(size=200)
    other = continuous + rng.normal(size=200)
    assert kendall_tau_b(continuous, other) == pytest.approx(stats.kendalltau(continuous, other).statistic)


def test_pair_count_fallback_agrees(monkeypatch):
    import core.calibration as calibration

    x, y = [1, 1, 2, 3, 5, 4, 4], [0, 1, 1, 1, 0, 1, 1]
    table_value = kendall_tau_b(x, y)
    monkeypatch.setattr(calibration, "_MAX_TABLE_CELLS", 0)
    assert kendall_tau_b(x, y) == pytest.approx(table_value)


def test_kendall_bootstrap_is_seeded_and_brackets_the_value():
    rng = np.random.default_rng(2)
    scores = rng.integers(1, 6, 80)
    labels = (scores + rng.integers(-1, 2, 80) >= 4).astype(int)
    a = kendall_tau(scores, labels, bootstrap=500, seed=3)
    b = kendall_tau(scores, labels, bootstrap=500, seed=3)
    assert a == b and a.n == 80
    assert -1 <= a.low <= a.value <= a.high <= 1
    assert kendall_tau(scores, labels, bootstrap=500, seed=4) != a
    assert math.isnan(kendall_tau([1, 2], [1, 1]).low)


# --------------------------------------------------------------------------------------------
# What to review next
# --------------------------------------------------------------------------------------------

def test_review_candidates_nearest_the_threshold_unlabeled_only():
    scores = {"a": 5, "b": 4, "c": 6, "d": 5, "e": 9, "f": None, "g": 5, "h": 1}
    picked = review_candidates(scores, {"d": "accept"}, threshold=5, k=4)
    # distance 0: a, g (d is labeled); distance 1: c (kept side first), then b; f never parsed
    assert picked["target_id"].tolist() == ["a", "g", "c", "b"]
    assert picked["distance"].tolist() == [0, 0, 1, 1]
    assert picked["kept"].tolist() == [True, True, True, False]
    assert review_candidates(pd.Series(scores), ["a", "g"], 5, 2)["target_id"].tolist() == ["d", "c"]
    assert review_candidates(scores, {}, 5, 0).empty


# --------------------------------------------------------------------------------------------
# Judgments in a real workspace
# --------------------------------------------------------------------------------------------

def _response_ids(ws) -> list[str]:
    page = ws.explore_page(judge_ws_filter(), page_size=50)
    ids = []
    for iid in page["id"]:
        ids += [r["id"] for r in ws.sample(iid)["responses"]]
    return ids


def judge_ws_filter():
    from core.workspace import ExploreFilter

    return ExploreFilter()


RAWS_5 = [
    "Direct, correct and complete.\nScore: 5",
    "Fine but a little thin.\nScore: 4",
    "Reads like a forum post.\n**Score:** 3/5",
    "The model rambled and never finished its",       # truncated: NULL, not 0
    "Score: 0",                                       # out of range: NULL, not 0
    "Excellent.\nRating: 5 out of 5",
]


def test_judgment_rows_go_into_the_catalog_with_null_for_parse_failures(seeded_workspace):
    ws = seeded_workspace
    rids = _response_ids(ws)
    assert len(rids) == 6
    rows = judge.judgment_rows("pointwise_5", "smollm2-135m-instruct", rids, RAWS_5, round=1,
                               params={"temperature": 0.0})
    assert [r["score"] for r in rows] == [5.0, 4.0, 3.0, None, None, 5.0]
    assert ws.record_judgments(rows) == 6
    assert ws.record_judgments(rows) == 0                         # same content, same ids
    assert ws.record_judgments(judge.judgments_table(rows + rows)) == 0

    stored = ws.store.judgments_for(rids)
    assert len(stored) == 6
    by_target = {r["target_id"]: r for r in stored}
    failed = [by_target[rids[3]], by_target[rids[4]]]
    for r in failed:
        assert r["score"] is None and r["parse_error"] and r["raw"]   # raw kept, score NULL, never 0
    assert failed[0]["parse_error"].startswith("no_score") and failed[1]["parse_error"].startswith("out_of_range")
    ok = by_target[rids[0]]
    assert ok["score"] == 5.0 and ok["scale_max"] == 5 and ok["kind"] == "pointwise" and ok["round"] == 1
    assert ok["rationale"] == "Direct, correct and complete."
    assert ok["template_hash"] == judge.get_rubric("pointwise_5").template_hash
    assert '"temperature"' in ok["params"]
    assert not any(r["score"] == 0 for r in stored)

    judges = ws.judges()
    assert judges.to_dict("records")[0] | {"last_judged": None} == {
        "judge_model": "smollm2-135m-instruct", "rubric": "pointwise_5", "kind": "pointwise",
        "judgments": 6, "unparsed": 2, "call_errors": 0, "targets": 6, "last_judged": None}
    cal = ws.calibration("smollm2-135m-instruct", "pointwise_5", 5, bootstrap=100)
    assert (cal.parse_failures.k, cal.parse_failures.n) == (2, 6)
    assert (cal.kept.k, cal.kept.n) == (2, 6)
    assert cal.n_labels == 0
    assert cal.sentence() == "score ≥ 5 keeps 33%; no human labels yet to say at what precision"


def test_workspace_calibration_against_reviews(seeded_workspace):
    ws = seeded_workspace
    rids = _response_ids(ws)
    scores = [5, 4, 3, 2, 5, 1]
    raws = [f"Reasoning {i}.\nScore: {s}" for i, s in enumerate(scores)]
    ws.record_judgments(judge.judgment_rows("pointwise_5", "judge-m", rids, raws))
    # A second verdict on the first target: the target's score is the mean (5 + 4) / 2 = 4.5.
    ws.record_judgments(judge.judgment_rows("pointwise_5", "judge-m", rids[:1], ["Again.\nScore: 4"]))
    # And an unparsable one on the second: it counts as a failed verdict, the mean ignores it.
    ws.record_judgments(judge.judgment_rows("pointwise_5", "judge-m", rids[1:2], ["no idea"]))
    # Another judge's verdicts stay out of this judge's numbers.
    ws.record_judgments(judge.judgment_rows("pointwise_5", "other-judge", rids, ["Score: 1"] * 6))

    ws.review(rids[0], "accept")
    ws.review(rids[1], "reject")
    ws.review(rids[2], "reject")
    ws.review(rids[2], "accept")              # the latest decision counts
    ws.review(rids[3], "reject")
    ws.review(rids[4], None, note="just a note")  # no decision: unlabeled

    # labeled: r0 4.5 accept, r1 4 reject, r2 3 accept, r3 2 reject; at t = 4: tp 1, fp 1, fn 1, tn 1
    cal = ws.calibration("judge-m", "pointwise_5", 4, bootstrap=200)
    assert (cal.tp, cal.fp, cal.fn, cal.tn, cal.n_labels) == (1, 1, 1, 1, 4)
    assert cal.precision.value == 0.5 and cal.recall.value == 0.5 and cal.agreement.value == 0.5
    assert (cal.kept.k, cal.kept.n) == (3, 6)                     # 4.5, 4 and 5 of six targets
    assert (cal.parse_failures.k, cal.parse_failures.n) == (1, 8)
    labels = ws.store.judge_labels("judge-m", "pointwise_5")
    assert dict(zip(labels["target_id"], labels["score"], strict=True))[rids[0]] == 4.5
    pure = calibrate([4.5, 4, 3, 2], ["accept", "reject", "accept", "reject"], 4,
                     population=[4.5, 4, 3, 2, 5, 1], n_judgments=8, n_failed=1, bootstrap=200)
    assert cal == pure
    assert cal.sentence() == "score ≥ 4 keeps 50% at precision 0.50 ± 0.41 on 4 labels"

    sweep = ws.calibration_sweep("judge-m", "pointwise_5")
    assert sweep["threshold"].tolist() == [1, 2, 3, 4, 4.5, 5]
    assert sweep.set_index("threshold").loc[4, "precision"] == 0.5

    # unlabeled: r4 (5) and r5 (1); nearest 4 first
    picked = ws.review_candidates("judge-m", "pointwise_5", 4, k=5)
    assert picked["target_id"].tolist() == [rids[4], rids[5]]
    assert picked["target_id"].tolist() == review_candidates(
        {rids[4]: 5, rids[5]: 1, rids[0]: 4.5}, {rids[0]: 1}, 4, 5)["target_id"].tolist()

    # A decision on the instruction labels its response when the response has none of its own.
    iids = ws.explore_page(judge_ws_filter())["id"].tolist()
    assert ws.sample(iids[5])["responses"][0]["id"] == rids[5]
    ws.review(iids[5], "reject")
    cal = ws.calibration("judge-m", "pointwise_5", 4, bootstrap=0)
    assert (cal.n_labels, cal.tn) == (5, 2)
    # ... but the response's own decision wins over its instruction's.
    ws.review(iids[0], "reject")
    assert ws.calibration("judge-m", "pointwise_5", 4, bootstrap=0).tp == 1


def test_pairwise_rows_and_flip_rate_from_the_store(seeded_workspace):
    ws = seeded_workspace
    rids = _response_ids(ws)
    pair_ids = [(rids[0], rids[1]), (rids[2], rids[3]), (rids[4], rids[5])]
    pairs = [{"instruction": "q", "answer_a": f"a{i}", "answer_b": f"b{i}"} for i in range(3)]
    requests = judge.build_pairwise_requests(pairs, 0)
    # pair 0: consistent (original A wins both times); pair 1: flips (the first-shown answer wins
    # both times); pair 2: the swapped call does not parse.
    shown = {(0, False): "A", (0, True): "B", (1, False): "A", (1, True): "A", (2, False): "B", (2, True): "?"}
    raws = [f"Compared.\nWinner: {shown[(r.index, r.swapped)]}" for r in requests]
    rows = judge.pairwise_rows("judge-p", pair_ids, requests, raws)
    assert len(rows) == 6 and all(r["target_kind"] == "pair" and r["kind"] == "pairwise" for r in rows)
    score = {(r["target_id"], '"order":"ba"' in r["params"]): r["score"] for r in rows}
    t0, t1, t2 = (judge.pair_target_id(a, b) for a, b in pair_ids)
    assert score[(t0, False)] == 1.0 and score[(t0, True)] == 1.0   # mapped back: A both times
    assert score[(t1, False)] == 1.0 and score[(t1, True)] == 0.0   # flipped
    assert score[(t2, False)] == 0.0 and score[(t2, True)] is None  # B wins; then unparsed: NULL
    assert ws.record_judgments(rows) == 6
    flips = ws.flip_rate("judge-p", "pairwise")
    assert (flips.k, flips.n) == (1, 2)
    assert ws.judges().set_index("judge_model").loc["judge-p", "unparsed"] == 1


def test_listwise_and_aspect_rows(seeded_workspace):
    ws = seeded_workspace
    rids = _response_ids(ws)[:3]
    # shown order: answer 1 = rids[2], 2 = rids[0], 3 = rids[1]; judge ranks 2 > 3 > 1
    rows = judge.listwise_rows("judge-l", rids, [2, 0, 1], "Thoughts.\nRanking: 2 > 3 > 1")
    assert {r["target_id"]: r["score"] for r in rows} == {rids[0]: 1.0, rids[1]: 2.0, rids[2]: 3.0}
    assert all(r["scale_max"] == 3 and r["kind"] == "listwise" for r in rows)
    bad = judge.listwise_rows("judge-l", rids, [2, 0, 1], "Ranking: 2 > 2 > 1")
    assert all(r["score"] is None and r["parse_error"].startswith("not_permutation") for r in bad)
    assert ws.record_judgments(rows + bad) == 6

    text = ("Helpfulness rationale: ok\nHelpfulness score: 4\nHonesty rationale: ok\nHonesty score: 5\n"
            "Instruction following rationale: ok\nInstruction following score: 3\nTruthfulness rationale: ok\n"
            "Truthfulness score: 4")
    aspect_rows = judge.judgment_rows("zephyr_aspects", "judge-z", [rids[0], rids[1]], [text, "Helpfulness score: 9"])
    by = {(r["target_id"], r["rubric"]): r for r in aspect_rows}
    assert by[(rids[0], "zephyr_aspects")]["score"] == 4.0 and by[(rids[0], "zephyr_aspects")]["raw"] == text
    assert by[(rids[0], "zephyr_aspects.honesty")]["score"] == 5.0
    assert by[(rids[1], "zephyr_aspects")]["score"] is None
    assert by[(rids[1], "zephyr_aspects.helpfulness")]["parse_error"].startswith("out_of_range")
    assert len(aspect_rows) == 10
    assert ws.record_judgments(aspect_rows) == 10
    assert ws.calibration("judge-z", "zephyr_aspects", 4, bootstrap=0).parse_failures.k == 1


def test_judgment_rows_refuse_inconsistent_input():
    with pytest.raises(ValueError, match="lengths differ"):
        judge.judgment_rows("pointwise_10", "m", ["a", "b"], ["Score: 3"])
    with pytest.raises(ValueError, match="pairwise_rows"):
        judge.judgment_rows("pairwise", "m", ["a"], ["Winner: A"])
    with pytest.raises(ValueError, match="unknown rubric"):
        judge.judgment_rows("nope", "m", ["a"], ["Score: 3"])
    with pytest.raises(ValueError, match="judge_model"):
        judge.judgment_rows("pointwise_10", "", ["a"], ["Score: 3"])
    # A raw of None (the backend failed) is stored as empty text with an 'empty' parse error.
    row = judge.judgment_rows("pointwise_10", "m", ["a"], [None])[0]
    assert row["raw"] == "" and row["score"] is None and row["parse_error"].startswith("empty")


# --------------------------------------------------------------------------------------------
# ROC AUC and trust (issue 12: is the judge better than chance on the user's own labels?)
# --------------------------------------------------------------------------------------------

def brute_auc(scores, labels) -> float:
    """The definition, pair by pair: P(accepted score > rejected score), ties ½."""
    pos = [s for s, y in zip(scores, labels, strict=True) if y == 1 and s is not None]
    neg = [s for s, y in zip(scores, labels, strict=True) if y == 0 and s is not None]
    return sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg) / (len(pos) * len(neg))


def test_roc_auc_against_hand_counted_pairs():
    # SCORES/LABELS by hand: accepts 9 8 7 6 4 (the None is left out), rejects 8 5 3 2: 9 wins 4,
    # 8 wins 3 and ties 1, 7 and 6 win 3 each, 4 wins 2 -> 15.5 of 20 pairs.
    auc = roc_auc(SCORES, to_labels(LABELS), bootstrap=0)
    assert auc.value == pytest.approx(15.5 / 20) == pytest.approx(brute_auc(SCORES, to_labels(LABELS)))
    assert (auc.n_accept, auc.n_reject) == (5, 4) and math.isnan(auc.low)
    assert roc_auc([1, 2, 3, 4], [0, 0, 1, 1]).value == 1.0
    assert roc_auc([3, 2, 2, 1], [1, 1, 0, 0]).value == 0.875          # the 2 = 2 pair counts ½
    assert roc_auc([1, 1, 1, 1], [1, 0, 1, 0]).value == 0.5            # constant scores: a coin
    rng = np.random.default_rng(5)
    for _ in range(20):
        s = rng.integers(1, 6, 30).astype(float).tolist()
        y = rng.integers(0, 2, 30).tolist()
        if 0 < sum(y) < 30:
            assert roc_auc(s, y, bootstrap=0).value == pytest.approx(brute_auc(s, y))


def test_roc_auc_direction_one_class_and_bootstrap():
    # Inverted: the judge scores rejects higher. A lower-is-better rubric (ranks) agrees when lower.
    assert roc_auc([1, 2, 3, 4], [1, 1, 0, 0]).value == 0.0
    assert roc_auc([1, 2, 3, 4], [1, 1, 0, 0], higher_is_better=False).value == 1.0
    only = roc_auc([1, 2, 3], ["accept"] * 3)
    assert math.isnan(only.value) and (only.n_accept, only.n_reject) == (3, 0) and "n/a" in str(only)
    assert math.isnan(roc_auc([], []).value)
    # The interval is seeded (same data, same interval), holds the estimate and stays in [0, 1];
    # stratified, so even one reject among nine accepts gives an interval (no draw loses a class).
    rng = np.random.default_rng(0)
    s, y = rng.normal(size=40) + np.repeat([0.8, 0.0], 20), np.repeat([1, 0], 20)
    a, b = roc_auc(s, y, seed=3), roc_auc(s, y, seed=3)
    assert a == b and 0 <= a.low <= a.value <= a.high <= 1 and roc_auc(s, y, seed=4) != a
    lone = roc_auc(list(range(10)), [1] * 9 + [0])
    assert lone.value == 0.0 and lone.low == lone.high == 0.0
    with pytest.raises(ValueError):
        roc_auc([1, 2], [1])


def test_trust_perfect_judge_with_enough_labels_beats_chance():
    t = judge_trust(list(range(20)), [0] * 10 + [1] * 10)
    assert t.known and not t.at_chance and not t.flagged and t.status == "better"
    assert t.more_labels is None and t.auc.value == 1.0 and t.kendall.low > 0
    assert t.sentence() == "Better than chance: AUC 1.00 [1.00, 1.00] on 20 labels."
    # Ranks (lower is better) ranked the same way are as good.
    assert judge_trust(list(range(20)), [1] * 10 + [0] * 10, higher_is_better=False).status == "better"


def test_trust_random_scores_are_at_chance_and_say_how_many_more_labels():
    rng = np.random.default_rng(11)
    y = np.repeat([1, 0], 12)
    s = rng.integers(1, 6, 24).astype(float)
    t = judge_trust(s, y)
    assert t.known and t.at_chance and t.flagged and t.status == "at_chance"
    assert t.auc.low <= 0.5 <= t.auc.high or t.kendall.low <= 0 <= t.kendall.high   # the definition
    # n_needed = n · (half-width on chance's side / |AUC − 0.5|)², for whichever interval includes chance.
    needs = []
    for value, low, high, chance in ((t.auc.value, t.auc.low, t.auc.high, 0.5),
                                     (t.kendall.value, t.kendall.low, t.kendall.high, 0.0)):
        if low <= chance <= high:
            half = value - low if value >= chance else high - value
            needs.append(24 * (half / abs(value - chance)) ** 2)
    expected = math.ceil(max(needs) - 24)
    assert t.more_labels == (MORE_LABELS_CAP if expected > MORE_LABELS_CAP else expected) > 0
    assert t.sentence().startswith("At chance on your 24 labels: ")
    assert ("more labels would settle it" in t.sentence()) != t.more_labels_capped


def test_trust_constant_scores_at_chance_with_no_count_that_settles_it():
    t = judge_trust([3.0] * 12, [1, 0] * 6)
    assert t.at_chance and t.auc.value == 0.5 and t.more_labels == MORE_LABELS_CAP and t.more_labels_capped
    assert t.sentence() == ("At chance on your 12 labels: AUC 0.50 [0.50, 0.50] includes 0.5 — more than "
                            f"{MORE_LABELS_CAP:,} more labels would be needed to tell it from chance.")


def test_trust_inverted_judge_is_flagged_too():
    t = judge_trust(list(range(20)), [1] * 10 + [0] * 10)
    assert t.status == "inverted" and t.flagged and not t.at_chance and t.auc.high < 0.5
    assert t.sentence().startswith("Worse than chance on your 20 labels: AUC 0.00")


def test_trust_tau_interval_alone_can_put_a_judge_at_chance():
    t = Trust(30, 15, 15, Auc(0.7, 0.55, 0.85, 15, 15), Tau(0.2, -0.01, 0.4, 30))
    assert t.at_chance and t.status == "at_chance"
    assert "Kendall τ 0.20 [-0.01, 0.40] includes 0 (AUC 0.70 [0.55, 0.85])" in t.sentence()


def test_trust_not_yet_known_with_few_labels_one_class_or_none():
    none = judge_trust([], [])
    assert none.status == "unknown" and not none.flagged and none.more_labels == MIN_LABELS
    assert none.sentence().startswith("Not yet known whether this judge beats chance: 0 labels;")
    few = judge_trust([1, 2, 3, 4], [0, 0, 1, 1])   # perfect, but four labels prove nothing
    assert few.status == "unknown" and few.more_labels == MIN_LABELS - 4 and few.auc.value == 1.0
    one_class = judge_trust(list(range(12)), ["accept"] * 12)
    assert one_class.status == "unknown" and one_class.more_labels == 3
    assert any("no rejects" in r for r in one_class.undecided)
    assert "label at least 3 more, 3 rejects among them" in one_class.sentence()
    # Unparsed verdicts are left out (their rank is unknown), and counted apart.
    t = judge_trust([None, None] + list(range(20)), [1, 0] + [0] * 10 + [1] * 10)
    assert t.n_labels == 20 and t.n_unscored == 2 and t.status == "better"
    # Without a bootstrap there is no interval to decide with.
    assert judge_trust(list(range(20)), [0] * 10 + [1] * 10, bootstrap=0).status == "unknown"


def test_trust_and_calibration_as_dict_are_json():
    import json

    t = judge_trust([3.0] * 4, [1, 0, 1, 0])  # undefined τ: NaN becomes null
    data = json.loads(json.dumps(t.as_dict(), allow_nan=False))
    assert data["status"] == "unknown" and data["kendall_tau"]["value"] is None and data["sentence"] == t.sentence()
    cal = calibrate(SCORES, LABELS, 6, bootstrap=200).as_dict()
    assert {"threshold", "precision", "recall", "kendall_tau", "sentence"} <= set(cal)   # the old keys stay
    assert cal["auc"]["value"] == pytest.approx(0.775) and cal["auc"]["low"] <= 0.775 <= cal["auc"]["high"]


def test_calibration_trust_is_the_same_trust_at_any_threshold():
    rng = np.random.default_rng(2)
    scores = [None, *rng.integers(1, 6, 30).astype(float).tolist()]
    labels = [1, *rng.integers(0, 2, 30).tolist()]
    direct = judge_trust(scores, labels, bootstrap=300, seed=1)
    for threshold in (2, 4):
        assert calibrate(scores, labels, threshold, bootstrap=300, seed=1).trust() == direct
    assert direct.n_unscored == 1 and direct.n_labels == 30
