"""CITING as a recipe (core/methods/citing.py): the `citing:` section's validation (errors name
key and value), the shipped recipes, and recipes/citing-tiny.yaml run for two rounds end to end
through real jobs with the built-in models."""

from __future__ import annotations

from pathlib import Path

import pytest

from core import categories, rounds
from core.methods.citing import ASPECT_RUBRICS, revision_role
from core.recipes import RecipeError, load_recipe
from core.selection import ExploreFilter
from core.workspace import Workspace

REPO = Path(__file__).resolve().parent.parent
BASE = {"name": "c", "method": "citing", "models": {"teacher": "t", "judge": "j", "student": "s"},
        "data": {"pool": ["p"], "heldout": "h"}}
CAT = {"name": "Math", "criteria": ["right"], "examples": ["What is 2 + 2?"]}


@pytest.mark.parametrize(("section", "message"), [
    ({"speed": 2}, "citing: unknown key(s) speed; known: aspects, categories,"),
    ({"modes": ["direct", "both"]}, "citing.modes: expected a non-empty list of direct, revision, not ['direct', 'both']"),
    ({"modes": []}, "citing.modes: expected a non-empty list of direct, revision, not []"),
    ({"aspects": ["beauty"]}, "citing.aspects: expected a non-empty list of clarity, depth, comprehensiveness, "
                              "not ['beauty']"),
    ({"sample_size": 1}, "citing.sample_size: expected an integer from 2 to 200, not 1"),
    ({"max_revision_tokens": "many"}, "citing.max_revision_tokens: expected an integer from 1 to 32768, not 'many'"),
    ({"propose": "yes"}, "citing.propose: expected true or false, not 'yes'"),
    ({"propose": False}, "citing.propose: false needs citing.categories"),
    ({"propose": False, "categories": [{"name": "Math", "criteria": ["right"]}]},
     "citing.categories: without a proposal, at least one category needs examples"),
    ({"categories": [{"name": "Math", "criteria": []}]}, "citing.categories[0].criteria: 1–10 criteria, not []"),
    ({"categories": [{"name": "", "criteria": ["x"]}]}, "citing.categories[0].name: one line of 1–60 characters, not ''"),
    ({"categories": [CAT, CAT | {"name": "math"}]}, "citing.categories: names must be unique; repeated: math"),
    ({"categories": {"Math": {}}}, "citing.categories: expected a list of {name, description, criteria, examples}"),
    ({"select": {"mfd_max": 1}}, "citing.select: expected null or {mfd_min: <number>}, not {'mfd_max': 1}"),
    ({"select": {"mfd_min": "hard"}}, "citing.select.mfd_min: expected a number, not 'hard'"),
])
def test_a_bad_citing_value_names_its_key_and_value(section, message):
    with pytest.raises(RecipeError) as err:
        load_recipe(BASE | {"citing": section})
    assert message in str(err.value)


def test_defaults_and_the_shipped_recipes():
    params = load_recipe(BASE).params
    assert params["modes"] == ["direct", "revision"] and params["aspects"] == list(ASPECT_RUBRICS)
    assert params["propose"] is True and params["categories"] == []
    tiny = load_recipe(REPO / "recipes" / "citing-tiny.yaml")
    assert tiny.method == "citing" and tiny.generate["max_tokens"] <= 48 and len(tiny.params["categories"]) == 3
    gpu = load_recipe(REPO / "recipes" / "citing.yaml")
    assert gpu.rounds <= 3  # the paper saw decline after the third round
    for recipe in (tiny, gpu):
        for dataset in (*recipe.pool, recipe.heldout):
            assert Path(recipe.files[dataset]).is_file()
    assert revision_role("citing-tiny", 2) == "rev2_citing_tiny"


@pytest.mark.slow
def test_citing_tiny_runs_two_rounds_end_to_end(tmp_path):
    """recipes/citing-tiny.yaml as shipped: SmolLM2-135M proposes, revises and judges, tiny-random learns."""
    with Workspace(tmp_path / "ws") as ws:
        rounds.start_run(ws, REPO / "recipes" / "citing-tiny.yaml")
        status = rounds.drive(ws, "citing-tiny", timeout=1800)
        assert status["status"] == "done"
        first, second = status["rounds"]
        assert [first["model"], second["model"]] == ["citing-tiny-r1", "citing-tiny-r2"]
        assert (second["student"], second["parent_id"]) == ("citing-tiny-r1", "citing-tiny/1")
        assert ws.model_lineage("citing-tiny-r2")["base_model"] == "citing-tiny-r1"
        steps = [s["name"] for s in first["steps"]]
        assert steps[:4] == ["propose categories", "categories", "assign pool", "student answers"]
        assert "propose categories" not in [s["name"] for s in second["steps"]]  # round 1 only

        # Categories with members and similarities; the teacher's reply kept, parsed or not.
        cats = categories.categories(ws, "citing-tiny")
        assert len(cats) >= 3 and sum(c["members"] for c in cats) == 8
        assert {c["origin"] for c in cats} >= {"recipe"}
        (proposal,) = ws.store.category_proposals("citing-tiny")
        assert proposal["raw"] is not None and (proposal["parsed"] is not None or proposal["parse_error"])
        pool = ws.store.instructions_for_job(ExploreFilter(datasets=["citing-tiny-pool"]), 100)
        assert not ws.store.unassigned_instructions(ExploreFilter(datasets=["citing-tiny-pool"]), "citing-tiny", 100)
        members = [m for c in cats for m in ws.store.category_members(c["id"], 100)]
        assert len(members) == len(pool) and all(m["similarity"] is not None for m in members)

        for row in (first, second):
            n, metrics = row["number"], row["metrics"]
            role = revision_role("citing-tiny", n)
            # Revisions with lineage: the draft (this round's student answer), category, criteria hash.
            revisions = ws.store.revisions(role=role, limit=100)
            assert revisions and metrics["revisions"]["kept"] == len(revisions)
            by_id = {c["id"]: c for c in cats}
            for rev in revisions:
                assert rev["meta"]["draft_response_id"] == rev["draft_id"] and rev["round"] == n
                assert rev["meta"]["category_id"] in by_id and rev["meta"]["criteria_hash"] == \
                    categories.criteria_hash(by_id[rev["meta"]["category_id"]]["criteria"])
            # Both modes in the training snapshot.
            assert metrics["modes"]["direct"] > 0 and metrics["modes"]["revision"] > 0
            assert ws.store.snapshot_row(row["snapshot"]) is not None
            assert metrics["train_members"] == metrics["modes"]["direct"] + metrics["modes"]["revision"]
            # The evaluation and the three aspects for the new model and the one it started from.
            assert metrics["evaluation"]["model_a"] == row["model"] and metrics["evaluation"]["n"] > 0
            for model in (row["model"], row["student"]):
                for aspect in ASPECT_RUBRICS:
                    assert metrics["aspects"][model][aspect] is not None, (model, aspect)
                    assert 1 <= metrics["aspects"][model][aspect] <= 10


@pytest.mark.slow  # one round on 4 prompts with SmolLM2 as teacher and judge: ~2 min on the shared CPU
def test_tapir_difficulty_picks_what_citing_revises(tmp_path):
    """recipes/citing-tapir-tiny.yaml, the composed recipe: the round measures MFD (teacher's answers
    once, the judge's 1-10 scores of both) and the teacher revises only the instructions with
    MFD > δ; the training set holds revisions of those alone, in both modes."""
    import yaml

    recipe = yaml.safe_load((REPO / "recipes" / "citing-tapir-tiny.yaml").read_text(encoding="utf-8"))
    recipe["data"]["files"] = {k: str((REPO / "recipes" / v).resolve()) for k, v in recipe["data"]["files"].items()}
    recipe["data"]["limit"], recipe["rounds"] = 4, 1
    recipe["citing"]["aspects"] = ["clarity"]
    with Workspace(tmp_path / "ws") as ws:
        rounds.start_run(ws, recipe)
        status = rounds.drive(ws, "citing-tapir-tiny", timeout=1500)
        assert status["status"] == "done", status
        [row] = ws.store.rounds("citing-tapir-tiny")
        selected = row["metrics"]["selected"]
        steps = [s["name"] for s in status["rounds"][0]["steps"]]
        assert steps.index("mfd") < steps.index("hard instructions") < steps.index("revise answers")
        hard = [d["instruction_id"] for d in ws.store.difficulty_rows("mfd", selected["mfd"]["source"], 1)
                if d["value"] is not None and d["value"] > selected["mfd_min"]] if selected["mfd"].get("source") \
            else None
        assert 1 <= selected["instructions"] <= 4
        revised = ws.explore_page(ExploreFilter(roles=[revision_role("citing-tapir-tiny", 1)],
                                                datasets=["citing-tiny-pool"]), page_size=50)["id"].tolist()
        assert revised and len(revised) <= selected["instructions"]
        if hard is not None:
            assert set(revised) <= set(hard)
        assert row["metrics"]["modes"]["direct"] >= 1 and row["metrics"]["modes"]["revision"] >= 1
