"""Zephyr as rounds (core/methods/zephyr.py): the recipe section's errors name key and value; the
aspect rubric's probability mode (one call per aspect) writes the rows binarisation reads; human
verdicts on pairs give the judge's agreement and τ; and a two-round run of the tiny recipe end
to end (dSFT, pool answers, a real SmolLM2 judge in probability mode, pairs, DPO, evaluation)."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import yaml

from core import curate, feedback, judge, rounds
from core.llm.base import ChoiceLogprobs
from core.methods import zephyr
from core.recipes import RecipeError, load_recipe

REPO = Path(__file__).resolve().parent.parent
BASE = {"name": "z", "method": "zephyr", "models": {"teacher": "t", "judge": "j", "student": "s"},
        "data": {"pool": ["p"], "heldout": "h"}, "judge": {"rubric": "zephyr_aspects"}}


@pytest.mark.parametrize(("section", "message"), [
    ({}, "zephyr.pool: a list of at least 2 model names that answer each prompt, not None"),
    ({"pool": ["a"]}, "zephyr.pool: a list of at least 2 model names that answer each prompt, not ['a']"),
    ({"pool": ["a", ""]}, "zephyr.pool[1]: expected a model name, not ''"),
    ({"pool": ["a", "a"]}, "zephyr.pool: a model is named twice"),
    ({"pool": ["a", "b"], "beta": 0}, "zephyr.beta: expected a number > 0, not 0"),
    ({"pool": ["a", "b"], "beta": "high"}, "zephyr.beta: expected a number > 0, not 'high'"),
    ({"pool": ["a", "b"], "dsft": "yes"}, "zephyr.dsft: true or false, not 'yes'"),
    ({"pool": ["a", "b"], "student_in_pool": 1}, "zephyr.student_in_pool: true or false, not 1"),
    ({"pool": ["a", "b"], "min_margin": -1}, "zephyr.min_margin: expected a number ≥ 0, not -1"),
    ({"pool": ["a", "b"], "seed": 1.5}, "zephyr.seed: expected an integer ≥ 0, not 1.5"),
    ({"pool": ["a", "b"], "loss_type": "kto"}, "zephyr.loss_type: objective dpo: loss_type must be one of"),
    ({"pool": ["a", "b"], "dpo_train": {"learning_rate": 2}}, "zephyr.dpo_train: learning_rate must be a number"),
    ({"pool": ["a", "b"], "dpo_train": {"base_model": "x"}}, "zephyr.dpo_train.base_model: leave it out"),
    ({"pool": ["a", "b"], "speed": 3}, "zephyr: unknown key(s) speed"),
])
def test_a_bad_zephyr_section_names_its_key_and_value(section, message):
    with pytest.raises(RecipeError) as err:
        load_recipe(BASE | {"zephyr": section})
    assert message in str(err.value)


@pytest.mark.parametrize("rubric", ["pointwise_10", "pairwise"])
def test_a_zephyr_recipe_without_an_aspect_rubric_is_refused_at_load(rubric):
    with pytest.raises(RecipeError) as err:
        load_recipe(BASE | {"judge": {"rubric": rubric}, "zephyr": {"pool": ["a", "b"]}})
    assert f"judge.rubric: Zephyr rates aspects (zephyr_aspects), not {rubric!r}" in str(err.value)


def test_the_section_fills_defaults_and_names_its_models():
    recipe = load_recipe(BASE | {"zephyr": {"pool": ["a", "b"], "student_in_pool": True}})
    assert recipe.params == {"pool": ["a", "b"], "student_in_pool": True, "dsft": True, "beta": 0.1,
                             "precompute_ref": False, "loss_type": "sigmoid", "min_margin": 0.0, "seed": 0,
                             "dpo_train": {}}
    assert recipe.method_models == {"zephyr.pool[0]": "a", "zephyr.pool[1]": "b"}
    assert zephyr.pool_roles(recipe.params) == ["pool_1", "pool_2", "pool_3"]
    for path in ("recipes/zephyr-tiny.yaml", "recipes/zephyr.yaml"):
        r = load_recipe(REPO / path)
        assert r.method == "zephyr" and r.rubric == "zephyr_aspects" and len(r.params["pool"]) >= 2
        assert all(Path(f).is_file() for f in r.files.values())


# -- the aspect rubric's probability mode --------------------------------------------------------


def test_aspect_probability_requests_and_rows():
    items = [{"instruction": "Name a colour.", "response": "Blue."}, {"instruction": "2+2?", "response": "5"}]
    convs = judge.build_aspect_probability_requests(items)
    assert len(convs) == 8  # item-major, one per aspect
    assert "Helpfulness" in convs[0][-1]["content"] and "Truthfulness" in convs[3][-1]["content"]
    assert "Blue." in convs[0][-1]["content"] and "2+2?" in convs[4][-1]["content"]
    assert judge.prefill_of("zephyr_aspects") == "Score:" and judge.labels_of("zephyr_aspects") == [
        " 1", " 2", " 3", " 4", " 5"]
    with pytest.raises(ValueError, match="one aspect per call"):
        judge.build_pointwise_requests(items, "zephyr_aspects", mode="probability")
    assert judge.default_mode("zephyr_aspects", "hf") == "generate"  # rationales, unless asked by name
    assert judge.check_mode("zephyr_aspects", "probability") == "probability"

    def peaked(k: int) -> ChoiceLogprobs:  # most of the mass on label k (1-based)
        return ChoiceLogprobs([math.log(0.8 if j == k else 0.05) for j in range(1, 6)])

    results = [peaked(5), peaked(4), peaked(5), peaked(4)] + [peaked(1), ChoiceLogprobs.failed("error: boom"),
                                                              peaked(2), peaked(1)]
    rows = judge.aspect_probability_rows("zephyr_aspects", "m", ["r1", "r2"], results, round=1)
    by = {(r["target_id"], r["rubric"]): r for r in rows}
    assert len(rows) == 10 and all(r["mode"] == "probability" for r in rows)
    helpful = by[("r1", "zephyr_aspects.helpfulness")]
    assert helpful["score"] == pytest.approx((5 * 0.8 + 0.05 * (1 + 2 + 3 + 4)) / 1.0)
    mean_row = by[("r1", "zephyr_aspects")]
    aspects = [by[("r1", f"zephyr_aspects.{a}")]["score"] for a in judge.get_rubric("zephyr_aspects").aspects]
    assert mean_row["score"] == pytest.approx(sum(aspects) / 4) and set(json.loads(mean_row["raw"])) == set(
        judge.get_rubric("zephyr_aspects").aspects)
    assert by[("r2", "zephyr_aspects.honesty")]["call_error"] == "error: boom"
    assert by[("r2", "zephyr_aspects")]["score"] is None and by[("r2", "zephyr_aspects")]["call_error"]
    hashes = {r["template_hash"] for r in rows}
    assert hashes == {judge.get_rubric("zephyr_aspects").template_hash_for("probability")}


# -- human verdicts ----------------------------------------------------------------------------------


def test_agreement_and_tau_from_verdicts():
    a = feedback.agreement_of([(2.0, "accept"), (1.5, "accept"), (1.0, "tie"), (0.5, "reject"), (0.25, "accept")],
                              bootstrap=200)
    assert (a.n_verdicts, a.n_ties, a.agreement.k, a.agreement.n) == (5, 1, 3, 4)
    assert a.agreement.low < 0.75 < a.agreement.high
    assert 0 < a.tau.value <= 1 and a.tau.n == 5
    with pytest.raises(ValueError, match="accept, reject or tie, not 'maybe'"):
        feedback.agreement_of([(1.0, "maybe")])
    empty = feedback.agreement_of([])
    assert empty.n_verdicts == 0 and "no human verdict" in empty.line()


# -- two rounds end to end ------------------------------------------------------------------------


ANSWERS = {"capital of France": "The capital of France is Paris.", "sleeping": "Keep a regular bedtime.",
           "9 + 6": "9 + 6 = 15.", "yellow": "A banana is yellow.", "thank you": "Gracias.",
           "the sea": "The sea shimmered under the morning sun.", "sky": "Blue.", "5 times 4": "20.",
           "fly": "An eagle.", "German": "Hallo."}


def terse_teacher(conversation: list[dict]) -> str:
    """A fast stand-in teacher and pool member: a short right answer to each tiny prompt."""
    prompt = conversation[-1]["content"]
    return next((a for k, a in ANSWERS.items() if k in prompt), "I do not know.")


def tiny_recipe(tmp_path: Path) -> dict:
    """recipes/zephyr-tiny.yaml with a python teacher (SmolLM2 generating is minutes on a busy
    CPU); the judge stays SmolLM2-135M in probability mode, the student tiny-random."""
    d = yaml.safe_load((REPO / "recipes" / "zephyr-tiny.yaml").read_text())
    d = copy.deepcopy(d)
    d["models"]["teacher"] = "terse"
    d["register"] = [{"name": "terse", "backend": "python", "path": "tests.test_zephyr:terse_teacher",
                      "extra": {"modules": ["tests.test_zephyr"]}}]
    d["zephyr"]["pool"] = ["terse", "tiny-random"]
    d["generate"]["max_tokens"] = 16
    d["data"]["limit"] = 4  # 4 prompts × 3 answers × 4 aspects: the judge's passes are most of the time
    d["evaluate"] |= {"limit": 2, "max_tokens": 16}
    d["data"]["files"] = {k: str((REPO / "recipes" / v).resolve()) for k, v in d["data"]["files"].items()}
    return d


@pytest.mark.slow
def test_two_zephyr_rounds_end_to_end(workspace, tmp_path):
    ws = workspace
    recipe = tiny_recipe(tmp_path)
    rounds.start_run(ws, recipe)
    status = rounds.drive(ws, "zephyr-tiny", timeout=1500)
    assert status["status"] == "done", status
    r1, r2 = status["rounds"]
    m1, m2 = r1["metrics"], r2["metrics"]
    # Round 1 trained dSFT first and started DPO from it; round 2 starts from round 1's model.
    assert m1["dsft"] and m1["start_model"] == "zephyr-tiny-r1-dsft" and r1["model"] == "zephyr-tiny-r1"
    assert r2["student"] == "zephyr-tiny-r1" and m2["start_model"] == "zephyr-tiny-r1" and not m2["dsft"]
    assert ws.model_lineage("zephyr-tiny-r1")["base_model"] == "zephyr-tiny-r1-dsft"
    assert ws.model_lineage("zephyr-tiny-r2")["base_model"] == "zephyr-tiny-r1"
    for number, m in ((1, m1), (2, m2)):
        assert m["pairs"] > 0 and m["roles"] == ["pool_1", "pool_2", "pool_3"]
        assert m["dpo"]["steps"] == 4 and m["dpo"]["final_loss"] is not None
        assert ws.model_lineage(f"zephyr-tiny-r{number}")["objective"]["kind"] == "dpo"
        assert m["evaluation"]["n"] and m["evaluation"]["model_a"] == f"zephyr-tiny-r{number}"
        # Every pair has its full lineage: judge, probability-mode template, both sides' aspect ratings.
        pairs = [p for p in ws.store.feedback_pairs("smollm2-135m-instruct") if p["round"] == number]
        assert len(pairs) == m["pairs"]
        for p in pairs:
            assert p["template_hash"] == judge.get_rubric("zephyr_aspects").template_hash_for("probability")
            assert p["chosen_score"] > p["rejected_score"] and p["margin"] > 0
            for side in ("chosen", "rejected"):
                aspects = p["ratings"][side]["aspects"]
                assert set(aspects) == set(judge.get_rubric("zephyr_aspects").aspects)
                ids = [j for a in aspects.values() for j in a["judgments"]]
                assert {row["mode"] for row in ws.store.judgments_by_id(ids)} == {"probability"}
    # Round 2's student answered as pool_3 (on-policy pairs).
    assert ws.store.round_step(r2["id"], "pool_3 answers")["status"] == "done"
    # The preference snapshot exports in TRL's format.
    result = curate.export_snapshot(ws, r2["snapshot"], "preference")
    records = [json.loads(line) for line in result.path.read_text(encoding="utf-8").splitlines()]
    assert records and {"prompt", "chosen", "rejected"} <= set(records[0])
    # ... and holds round 2's pairs only (its prompts' round-1 pairs trained the model it starts from).
    assert len(records) == r2["metrics"]["pairs"]
    # Human verdicts on the round's pairs feed the agreement numbers.
    pairs = [p for p in ws.store.feedback_pairs() if p["round"] == 1]
    feedback.record_pair_verdict(ws, pairs[0]["id"], "chosen")
    if len(pairs) > 1:
        feedback.record_pair_verdict(ws, pairs[1]["id"], "rejected")
    agreement = feedback.human_agreement(ws, round=1, bootstrap=100)
    assert agreement.n_verdicts == min(2, len(pairs)) and agreement.agreement.k == 1
