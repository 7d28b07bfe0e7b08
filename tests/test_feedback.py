"""Zephyr's AI feedback binarised into preference pairs (core/feedback.py): a pool of three
"models" (imported answers with roles pool_1..3), rated by a real judge job (a python judge
function served from this module), binarised into pairs with their lineage, checked against the
plain-Python rule and taken into a preference snapshot."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

from core import curate, jobs, judge
from core.feedback import binarise, binarise_reference, draw_key, pair_id
from core.parsers import ASPECTS
from core.selection import ExploreFilter
from core.workspace import Workspace

JUDGE = "aspect-judge"
POOL = ["pool_1", "pool_2", "pool_3"]
POOL_SELECTION = ExploreFilter(datasets=["pool"])
LABELS = ("Helpfulness", "Honesty", "Instruction following", "Truthfulness")  # as the template asks


# --------------------------------------------------------------------------------------------
# The judge: a python "model" (generate mode) served from this module (the spec lists it in
# extra modules). It writes the eight lines the zephyr_aspects template asks for, with the
# ratings the answer carries ("ratings=5,4,?,3": "?" = that aspect's score line is left out, a
# real parse failure), and fails the call for an answer that says CRASH (a call_error row).
# --------------------------------------------------------------------------------------------

def aspect_judge(conversation: list[dict]) -> str:
    prompt = conversation[-1]["content"]
    answer = prompt.split("[Assistant answer]\n", 1)[1].rsplit("\n[End of assistant answer]", 1)[0]
    if "CRASH" in answer:
        raise RuntimeError("the judge fell over")
    values = answer.rsplit("ratings=", 1)[1].split(",")
    lines = []
    for label, value in zip(LABELS, values, strict=True):
        lines.append(f"{label} rationale: {label.lower()} looks like {value}.")
        if value != "?":
            lines.append(f"{label} score: {value}")
    return "\n".join(lines)


# Each question's answers by role: four aspect ratings (None: unparsed) or "CRASH".
DISTINCT = [(5, 5, 5, 5), (4, 4, 3, 4), (2, 1, 2, 1)]  # means 5, 3.75, 1.5


def cases() -> dict[str, dict]:
    out = {}
    for i in range(24):  # which role is best rotates, so no role wins by position
        k = i % 3
        out[f"Distinct question {i}?"] = dict(zip(POOL, DISTINCT[k:] + DISTINCT[:k], strict=True))
    out["Tie question 0?"] = {"pool_1": (4, 4, 4, 4), "pool_2": (3, 3, 3, 3), "pool_3": (4, 4, 4, 4)}
    # Three equal means from different aspects: a tie is by the mean.
    out["Tie question 1?"] = {"pool_1": (3, 4, 3, 4), "pool_2": (4, 3, 4, 3), "pool_3": (2, 4, 4, 4)}
    out["Missing question 0?"] = {"pool_1": (5, 5, 5, None), "pool_2": (4, 4, 4, 4), "pool_3": (3, 4, 3, 3)}
    out["Missing question 1?"] = {"pool_1": (5, 5, None, None), "pool_2": "CRASH", "pool_3": (3, 3, 3, 3)}
    # pool_4 is never judged: its 5 must not count.
    out["Unjudged question 0?"] = {"pool_1": (3, 3, 3, 3), "pool_2": (2, 2, 2, 2), "pool_4": (5, 5, 5, 5)}
    return out


def answer_text(question: str, role: str, rating) -> str:
    if rating == "CRASH":
        return f"{role} on {question}: CRASH"
    return f"{role} on {question}: ratings=" + ",".join("?" if v is None else str(v) for v in rating)


def mean(rating) -> float:
    return sum(rating) / len(rating)


def write_jsonl(path, rows: list[dict]):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------
# Fixtures: the pool and one real judge job (module-wide); each test works on a copy
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def judged_root(tmp_path_factory):
    folder = tmp_path_factory.mktemp("feedback")
    ws = Workspace(folder / "ws")
    try:
        for role in POOL + ["pool_4"]:
            rows = [{"instruction": q, "output": answer_text(q, role, answers[role])}
                    for q, answers in cases().items() if role in answers]
            ws.import_paths([write_jsonl(folder / f"{role}.jsonl", rows)], "pool", role=role)
        ws.import_paths([write_jsonl(folder / "other.jsonl", [{"instruction": "Unrelated?", "output": "Yes."}])],
                        "other")
        ws.add_model({"name": JUDGE, "backend": "python", "path": "tests.test_feedback:aspect_judge",
                      "extra": {"modules": ["tests.test_feedback"]}})
        job_id = ws.create_job("judge", {"model": JUDGE, "rubric": "zephyr_aspects", "roles": POOL,
                                         "mode": "generate", "max_tokens": 1024}, POOL_SELECTION, shard_size=32)
        jobs.launch(ws.job_dir(job_id)).wait()
        info = jobs.wait(ws.job_dir(job_id))
        assert info["status"] == "done", (ws.job_dir(job_id) / jobs.LOG).read_text()
        assert ws.ingest_job(job_id)["new_now"] > 0
    finally:
        ws.close()
    return folder / "ws"


@pytest.fixture
def ws(judged_root, tmp_path):
    shutil.copytree(judged_root, tmp_path / "ws")
    workspace = Workspace(tmp_path / "ws")
    yield workspace
    workspace.close()


def pool_answers(ws, roles=POOL, judged=POOL) -> list[dict]:
    """The reference's input, from what the test wrote (not from the catalog's ratings): each
    answer's ratings, and why it has none where the judge never saw it or its call failed."""
    ids = {r["text"]: r["id"] for r in ws.store.instructions_for_job(ExploreFilter(), 1000)}
    out = []
    for question, answers in cases().items():
        response_ids = {r["role"]: r["id"] for r in ws.store.responses_for(ids[question])}
        for role in roles:
            if role not in answers:
                continue
            rating = answers[role]
            a = {"instruction_id": ids[question], "response_id": response_ids[role], "question": question,
                 "role": role, "text": answer_text(question, role, rating)}
            if role not in judged:
                a["missing"] = "not judged"
            elif rating == "CRASH":
                a["missing"] = "judge call failed"
            else:
                a["ratings"] = dict(zip(ASPECTS, rating, strict=True))
            out.append(a)
    return out


def stored(ws) -> set[tuple]:
    return {(p["instruction_id"], p["chosen_id"], p["rejected_id"], p["chosen_score"], p["rejected_score"],
             p["margin"]) for p in ws.store.feedback_pairs()}


def expected(reference: dict) -> set[tuple]:
    return {(p["instruction_id"], p["chosen_id"], p["rejected_id"], p["chosen_score"], p["rejected_score"],
             p["margin"]) for p in reference["pairs"]}


def instruction_ids(ws, selection=POOL_SELECTION) -> list[str]:
    return [r["id"] for r in ws.store.instructions_for_job(selection, 1000)]


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------

def test_binarise_picks_the_best_answer_and_matches_the_reference(ws):
    summary = binarise(ws, JUDGE, POOL, selection=POOL_SELECTION)
    answers = pool_answers(ws)
    ref = binarise_reference(answers, seed=0, instruction_ids=instruction_ids(ws))
    assert summary.pairs == len(ref["pairs"]) == 24 + 1 + 1  # distinct, Missing 0, Unjudged 0 (pool_1 vs pool_2)
    assert summary.new == summary.pairs
    assert stored(ws) == expected(ref)
    assert summary.dropped == ref["dropped"] == {"tie at the top": 2, "fewer than two rated answers": 1}
    assert summary.left_out == ref["left_out"] == {"aspect unparsed": 2, "judge call failed": 1}
    assert summary.rated == sum(1 for a in answers if "ratings" in a and None not in a["ratings"].values())
    assert summary.template_hash == judge.get_rubric("zephyr_aspects").template_hash
    by_id = {a["response_id"]: a for a in answers}
    for p in ws.store.feedback_pairs():
        chosen, rejected = by_id[p["chosen_id"]], by_id[p["rejected_id"]]
        siblings = [a for a in answers if a["question"] == chosen["question"] and "ratings" in a
                    and None not in a["ratings"].values()]
        assert mean(chosen["ratings"].values()) == max(mean(a["ratings"].values()) for a in siblings)
        assert mean(rejected["ratings"].values()) < mean(chosen["ratings"].values())
        assert p["margin"] == pytest.approx(mean(chosen["ratings"].values()) - mean(rejected["ratings"].values()))
        assert p["id"] == pair_id(p["instruction_id"], p["chosen_id"], p["rejected_id"], JUDGE, "zephyr_aspects",
                                  summary.template_hash, 0)
        assert (p["method"], p["round"], p["seed"]) == ("ai_feedback", 0, 0)
        assert p["params"] == {"roles": POOL, "min_margin": 0.0}
    margins = sorted({p["margin"] for p in ws.store.feedback_pairs()})
    assert margins == [0.75, 1.0, 1.25, 3.5]  # Missing 0 (4 - 3.25), Unjudged 0 (3 - 2), distinct (5 - 3.75, 5 - 1.5)
    # The pairs are ordinary preference pairs of their instructions.
    iid = next(iter(stored(ws)))[0]
    assert [(p["method"], p["source_file"]) for p in ws.store.pairs_for(iid)] == [("ai_feedback", None)]


def test_rejected_is_a_random_lower_answer_not_the_worst(ws):
    binarise(ws, JUDGE, POOL, seed=0, selection=POOL_SELECTION)
    distinct = [p for p in ws.store.feedback_pairs() if p["chosen_score"] == 5.0]
    assert len(distinct) == 24
    picked = {p["rejected_score"] for p in distinct}
    assert picked == {3.75, 1.5}  # both lower answers are drawn, not always the worst
    # Per instruction, over seeds, both lower answers come up.
    answers = pool_answers(ws)
    one = distinct[0]["instruction_id"]
    mine = [a for a in answers if a["instruction_id"] == one]
    by_seed = {binarise_reference(mine, seed=s)["pairs"][0]["rejected_score"] for s in range(20)}
    assert by_seed == {3.75, 1.5}
    # Another seed on the same catalog adds exactly the pairs whose rejected answer differs
    # (the seed is lineage, not identity), and the draw is the reference's.
    ids = instruction_ids(ws)
    ref0, ref1 = (binarise_reference(answers, seed=s, instruction_ids=ids) for s in (0, 1))
    changed = expected(ref1) - expected(ref0)
    assert changed  # 24 fair coin flips all landing the same way would be a broken draw
    summary = binarise(ws, JUDGE, POOL, seed=1, selection=POOL_SELECTION)
    assert (summary.pairs, summary.new) == (len(ref1["pairs"]), len(changed))
    assert stored(ws) == expected(ref0) | expected(ref1)
    assert {p["seed"] for p in ws.store.feedback_pairs() if (p["instruction_id"], p["chosen_id"], p["rejected_id"],
            p["chosen_score"], p["rejected_score"], p["margin"]) in changed} == {1}


def test_draw_is_uniform_over_the_lower_answers():
    # The hash draw behaves as a fair choice: over many instructions, each of 3 candidates ~1/3.
    counts = np.zeros(3)
    for i in range(3000):
        keys = [draw_key(7, f"i{i}", f"r{k}") for k in range(3)]
        counts[keys.index(min(keys))] += 1
    assert np.all(np.abs(counts / 3000 - 1 / 3) < 0.04), counts


def test_rerun_adds_nothing_and_replaces_nothing(ws):
    first = binarise(ws, JUDGE, POOL, selection=POOL_SELECTION)
    before = ws.store.feedback_pairs()
    n_pairs = ws.stats()
    again = binarise(ws, JUDGE, POOL, selection=POOL_SELECTION)
    assert first.new > 0 and again.new == 0
    assert (again.pairs, again.dropped, again.left_out) == (first.pairs, first.dropped, first.left_out)
    assert ws.store.feedback_pairs() == before  # same rows, same created_at: nothing replaced
    assert ws.stats() == n_pairs


def test_unjudged_answers_and_instructions_without_answers_are_counted(ws):
    roles = POOL + ["pool_4"]
    summary = binarise(ws, JUDGE, roles)  # every instruction, the unrelated one too
    answers = pool_answers(ws, roles=roles)
    ref = binarise_reference(answers, instruction_ids=instruction_ids(ws, ExploreFilter()))
    assert stored(ws) == expected(ref)
    assert summary.left_out == ref["left_out"] == {"aspect unparsed": 2, "judge call failed": 1, "not judged": 1}
    assert summary.dropped == ref["dropped"] == {"tie at the top": 2, "fewer than two rated answers": 1,
                                                  "no answer of these roles": 1}
    unjudged = [p for p in ref["pairs"] if p["chosen_score"] == 3.0]
    assert len(unjudged) == 1 and unjudged[0]["rejected_score"] == 2.0  # pool_4's 5 was not counted


def test_min_margin_limits_the_candidates(ws):
    summary = binarise(ws, JUDGE, POOL, selection=POOL_SELECTION, min_margin=2.0)
    ref = binarise_reference(pool_answers(ws), min_margin=2.0, instruction_ids=instruction_ids(ws))
    assert stored(ws) == expected(ref)
    assert {p["margin"] for p in ws.store.feedback_pairs()} == {3.5}  # only the worst is 2 lower
    assert summary.dropped["no answer min_margin lower"] == 2  # Missing 0 (0.75), Unjudged 0 (1.0)
    assert summary.pairs == 24


def test_lineage_names_the_judgments_that_hold_the_rationales(ws):
    binarise(ws, JUDGE, POOL, selection=POOL_SELECTION)
    template = judge.get_rubric("zephyr_aspects").template_hash
    texts = {a["response_id"]: a for a in pool_answers(ws)}
    for p in ws.store.feedback_pairs()[:5]:
        assert (p["judge_model"], p["rubric"], p["template_hash"]) == (JUDGE, "zephyr_aspects", template)
        for side in ("chosen", "rejected"):
            rating = p["ratings"][side]
            assert rating["response_id"] == p[f"{side}_id"] and rating["score"] == p[f"{side}_score"]
            assert sorted(rating["aspects"]) == sorted(ASPECTS)
            answer = texts[rating["response_id"]]
            for aspect, label in zip(ASPECTS, LABELS, strict=True):
                (verdict,) = ws.store.judgments_by_id(rating["aspects"][aspect]["judgments"])
                assert verdict["rubric"] == f"zephyr_aspects.{aspect}" and verdict["target_id"] == answer["response_id"]
                assert verdict["score"] == rating["aspects"][aspect]["score"] == answer["ratings"][aspect]
                assert verdict["rationale"] == f"{label.lower()} looks like {answer['ratings'][aspect]}."
                assert verdict["template_hash"] == template


def test_repeated_verdicts_average_and_other_templates_are_not_mixed(ws):
    ids = {r["text"]: r["id"] for r in ws.store.instructions_for_job(POOL_SELECTION, 1000)}
    tie = {r["role"]: r["id"] for r in ws.store.responses_for(ids["Tie question 0?"])}
    # A second verdict on pool_3's answer (4,4,4,4), built with core.judge's own row helper:
    # its aspects now average 3.5, which breaks the tie at the top.
    raw = "\n".join(f"{label} rationale: second look.\n{label} score: 3" for label in LABELS)
    assert ws.record_judgments(judge.judgment_rows("zephyr_aspects", JUDGE, [tie["pool_3"]], [raw])) == 5
    summary = binarise(ws, JUDGE, POOL, selection=POOL_SELECTION)
    assert summary.dropped == {"tie at the top": 1, "fewer than two rated answers": 1}
    (pair,) = ws.store.feedback_pairs(instruction_id=ids["Tie question 0?"])
    assert (pair["chosen_id"], pair["chosen_score"]) == (tie["pool_1"], 4.0)
    assert pair["rejected_id"] in (tie["pool_2"], tie["pool_3"])
    if pair["rejected_id"] == tie["pool_3"]:
        assert pair["rejected_score"] == 3.5 and len(pair["ratings"]["rejected"]["aspects"]["honesty"]["judgments"]) == 2
    # Verdicts from another judge prompt are not compared with these: the newest template is
    # read by default, so only the answers rated with it count.
    new_raw = "\n".join(f"{label} rationale: new prompt.\n{label} score: 2" for label in LABELS)
    rows = judge.judgment_rows("zephyr_aspects", JUDGE, [tie["pool_1"], tie["pool_2"]], [new_raw, raw],
                               template_hash="edited-template")
    ws.record_judgments(rows)
    newest = binarise(ws, JUDGE, POOL, selection=POOL_SELECTION)
    assert newest.template_hash == "edited-template"
    assert newest.pairs == 1 and newest.left_out == {"not judged": len(pool_answers(ws)) - 2}
    (p,) = [p for p in ws.store.feedback_pairs() if p["template_hash"] == "edited-template"]
    assert (p["chosen_id"], p["rejected_id"], p["margin"]) == (tie["pool_2"], tie["pool_1"], 1.0)
    older = binarise(ws, JUDGE, POOL, selection=POOL_SELECTION, template_hash=summary.template_hash)
    assert older.new == 0 and older.pairs == summary.pairs


def test_preference_snapshot_over_the_binarised_pairs(ws):
    summary = binarise(ws, JUDGE, POOL, selection=POOL_SELECTION)
    answers = {a["response_id"]: a for a in pool_answers(ws)}

    def no_embed(texts_):  # dedup is off: nothing is embedded
        raise AssertionError("no embedding expected")

    snap = curate.create_snapshot(ws, {"kind": "preference", "datasets": ["pool"]}, "zephyr", embed=no_embed)
    assert snap.n_members == summary.pairs
    result = curate.export_snapshot(ws, "zephyr", "preference")
    records = [json.loads(line) for line in result.path.read_text(encoding="utf-8").splitlines()]
    pairs = {(answers[p["chosen_id"]]["question"], answers[p["chosen_id"]]["text"], answers[p["rejected_id"]]["text"])
             for p in ws.store.feedback_pairs()}
    assert len(records) == summary.pairs
    assert {(r["prompt"], r["chosen"], r["rejected"]) for r in records} == pairs


@pytest.mark.parametrize("kwargs, message", [
    ({"roles": []}, "roles must be a list"),
    ({"roles": ["pool_1", "pool_1"]}, "pool roles repeat"),
    ({"roles": ["Pool 1"]}, "pool role 'Pool 1' is invalid"),
    ({"rubric": "pointwise_5"}, "rates no aspects"),
    ({"rubric": "no_such"}, "unknown rubric"),
    ({"seed": -1}, "seed must be a whole number"),
    ({"round": 1.5}, "round must be a whole number"),
    ({"min_margin": math.nan}, "min_margin must be a number"),
    ({"min_margin": -0.5}, "min_margin must be a number"),
    ({"judge_model": "nobody"}, f"judge 'nobody' has no parsed zephyr_aspects verdicts; judges with some: {JUDGE}"),
])
def test_bad_params_are_refused_before_anything_is_written(ws, kwargs, message):
    args = {"judge_model": JUDGE, "roles": POOL} | kwargs
    with pytest.raises(ValueError, match=message):
        binarise(ws, **args)
    assert ws.store.feedback_pairs() == []


def test_the_cli_binarises_and_prints_the_summary_as_json(judged_root, tmp_path, capsys):
    from core import cli

    shutil.copytree(judged_root, tmp_path / "ws")
    args = ["binarise", "--judge", JUDGE, "--workspace", str(tmp_path / "ws"), "--json"]
    for role in POOL:
        args += ["--role", role]
    assert cli.main(args) == 0
    printed = json.loads(capsys.readouterr().out)
    with Workspace(tmp_path / "ws") as ws:
        stored = ws.store.feedback_pairs(JUDGE)
    assert printed["pairs"] == printed["new"] == len(stored) > 0
    assert cli.main(["binarise", "--judge", "no-such-judge", "--role", "pool_1", "--role", "pool_2",
                     "--workspace", str(tmp_path / "ws")]) == 2
    assert "no-such-judge" in capsys.readouterr().err


def test_answer_rounds_read_static_pool_answers_into_a_later_rounds_pairs(ws):
    """Zephyr's static pool models answer once (round 0); round 2's pairs read them from there."""
    nothing = binarise(ws, JUDGE, POOL, round=2, selection=POOL_SELECTION)
    assert nothing.pairs == 0 and nothing.dropped == {"no answer of these roles": len(cases())}
    later = binarise(ws, JUDGE, POOL, round=2, selection=POOL_SELECTION, answer_rounds={r: 0 for r in POOL})
    first = binarise(ws, JUDGE, POOL, round=0, selection=POOL_SELECTION)
    assert later.pairs == first.pairs > 0 and later.new == later.pairs  # other round: other pair ids
    stored = [p for p in ws.store.feedback_pairs(JUDGE) if p["round"] == 2]
    assert len(stored) == later.pairs and stored[0]["params"]["answer_rounds"] == {r: 0 for r in POOL}
    for bad, message in [({"pool_9": 0}, "not one of the roles"), ({"pool_1": -1}, "whole number")]:
        with pytest.raises(ValueError, match=message):
            binarise(ws, JUDGE, POOL, round=2, selection=POOL_SELECTION, answer_rounds=bad)
