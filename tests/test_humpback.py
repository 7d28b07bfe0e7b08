"""Humpback as a recipe (core/methods/humpback.py): the `humpback:` section's validation, the
curated set's spec, and two rounds of recipes/humpback-tiny.yaml end to end through real jobs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from core import rounds
from core.backtranslate import CANDIDATE_ROLE
from core.backtranslate_views import curators, empty_rounds
from core.methods.humpback import AUGMENTED_TAG, SEED_TAG, _training_spec, parse_section
from core.recipes import RecipeError, load_recipe
from core.selection import ExploreFilter
from core.workspace import Workspace

REPO = Path(__file__).parent.parent
BASE = {"name": "hb", "method": "humpback", "models": {"teacher": "t", "judge": "j", "student": "s"},
        "data": {"pool": ["seed"], "heldout": "h"}}


@pytest.mark.parametrize("section, message", [
    ({}, "humpback.corpus: a dataset name or a list of them, not None"),
    ({"corpus": []}, "humpback.corpus: a dataset name or a list of them, not []"),
    ({"corpus": "c", "k": 6}, "humpback.k: a score in [1, 5] (pointwise_5), not 6"),
    ({"corpus": "c", "k": "high"}, "humpback.k: a score in [1, 5]"),
    ({"corpus": "c", "rubric": "pairwise"}, "humpback.rubric: a pointwise rubric that rates each candidate"),
    ({"corpus": "c", "rubric": "nope"}, "humpback.rubric:"),
    ({"corpus": "c", "mode": "vibes"}, "humpback.mode: auto, probability or generate, not 'vibes'"),
    ({"corpus": "c", "curator": ""}, "humpback.curator: a model name or self, not ''"),
    ({"corpus": "c", "train_from": "scratch"}, "humpback.train_from: one of base, previous, not 'scratch'"),
    ({"corpus": "c", "on_empty": "ignore"}, "humpback.on_empty: one of seed_only, fail, not 'ignore'"),
    ({"corpus": "c", "tags": {"web": "x"}}, "humpback.tags: a mapping with seed and augmented"),
    ({"corpus": "c", "sampling": {"temperature": 9}}, "humpback.sampling:"),
    ({"corpus": "c", "sampling": {"beam": 4}}, "humpback.sampling: keys temperature, top_p, max_tokens, seed"),
    ({"corpus": "c", "backward_train": {"base_model": "x"}}, "humpback.backward_train: train settings without"),
    ({"corpus": "c", "backward_train": {"learning_rate": 0}}, "humpback.backward_train: learning_rate"),
    ({"corpus": "c", "limit": 0}, "humpback.limit: an integer ≥ 1 or null, not 0"),
    ({"corpus": "c", "speed": 3}, "humpback: unknown key(s) speed"),
])
def test_a_bad_humpback_value_names_its_key_and_value(section, message):
    with pytest.raises(RecipeError) as err:
        load_recipe(BASE | {"humpback": section})
    assert message in str(err.value)


def test_the_section_defaults_are_the_papers_and_models_are_checked():
    params, models = parse_section({"corpus": "web"})
    assert params["k"] == 4.5 and params["mode"] == "probability" and params["rubric"] == "pointwise_5"
    assert params["sampling"]["temperature"] == 0.7 and params["sampling"]["top_p"] == 0.9
    assert params["tags"] == {"seed": SEED_TAG, "augmented": AUGMENTED_TAG}
    assert params["corpus"] == ["web"] and params["curator"] == "self" and models == {}
    _, models = parse_section({"corpus": "web", "curator": "big-judge", "backward_base": "llama"})
    assert models == {"humpback.curator": "big-judge", "humpback.backward_base": "llama"}
    with pytest.raises(ValueError, match="humpback.curator: no model"):  # checked before anything is written
        rounds.prepare(_NoModels(), load_recipe(BASE | {"humpback": {"corpus": "c", "curator": "big-judge"}}))


class _NoModels:
    """A workspace stand-in that knows the recipe's models but not the curator."""

    def model(self, name):
        if name == "big-judge":
            raise ValueError("no model 'big-judge'")


def test_the_curated_set_tags_each_source_and_the_seed_only_set_has_no_candidates():
    h, _ = parse_section({"corpus": "web"})
    spec = _training_spec(["seed"], h, kept="hb-r1-kept")
    assert spec["datasets"] == ["seed", "hb-r1-kept"] and spec["roles"] == ["seed", CANDIDATE_ROLE]
    assert spec["system_tags"]["rules"] == [{"when": {"datasets": ["seed"]}, "tag": SEED_TAG},
                                            {"when": {"datasets": ["hb-r1-kept"]}, "tag": AUGMENTED_TAG}]
    assert _training_spec(["seed"], h, kept=None)["datasets"] == ["seed"]


def test_the_shipped_humpback_recipes_load():
    for name in ("humpback-tiny", "humpback"):
        recipe = load_recipe(REPO / "recipes" / f"{name}.yaml")
        assert recipe.name == name and recipe.method == "humpback"
        for dataset in (*recipe.pool, recipe.heldout, *recipe.params["corpus"]):
            assert Path(recipe.files[dataset]).exists(), (name, dataset)
    assert load_recipe(REPO / "recipes" / "humpback.yaml").params["k"] == 4.5


@pytest.mark.slow
def test_two_humpback_tiny_rounds_run_end_to_end(tmp_path):
    """recipes/humpback-tiny.yaml as shipped, shrunk (fewer steps, tokens and prompts): the backward
    model, candidates with lineage, two curators (M0, then M1) with their own scores, a model per
    round, round 2 from round 1's model."""
    recipe = yaml.safe_load((REPO / "recipes" / "humpback-tiny.yaml").read_text(encoding="utf-8"))
    recipe["data"]["files"] = {k: str((REPO / "recipes" / v).resolve()) for k, v in recipe["data"]["files"].items()}
    recipe["humpback"]["backward_train"] |= {"max_steps": 2}
    recipe["train"] |= {"max_steps": 4}
    recipe["evaluate"] |= {"limit": 2, "max_tokens": 16}
    with Workspace(tmp_path / "ws") as ws:
        rounds.start_run(ws, recipe)
        status = rounds.drive(ws, "humpback-tiny", timeout=3000)
        assert status["status"] == "done"
        r1, r2 = status["rounds"]
        assert [r1["model"], r2["model"]] == ["humpback-tiny-r1", "humpback-tiny-r2"]
        assert r2["student"] == "humpback-tiny-r1"  # round 2 starts from round 1's model ...
        m1, m2 = r1["metrics"], r2["metrics"]
        assert m1["curator"] == "humpback-tiny-m0" and m2["curator"] == "humpback-tiny-r1"  # ... which curates it
        assert m1["backward_model"] == m2["backward_model"] == "humpback-tiny-backward"  # trained once
        assert "train backward" in {s["name"] for s in r1["steps"]}
        assert "train backward" not in {s["name"] for s in r2["steps"]}
        # Candidates: one per document the backward model wrote a usable instruction for, with lineage.
        augment = m1["augment"]
        assert augment["candidates"] >= 1 and augment["candidates"] + sum(augment["dropped"].values()) == 7
        assert m2["augment"]["reused"] and m2["candidates"] == m1["candidates"] == augment["candidates"]
        page = ws.explore_page(ExploreFilter(datasets=["humpback-tiny-candidates"]), page_size=50)
        for iid in page["id"].tolist():
            s = ws.sample(iid)
            ins = s["instruction"]
            assert (ins["method"], ins["model"], ins["round"]) == ("backtranslate", "humpback-tiny-backward", 1)
            assert ws.store.document(ins["parent_id"])["text"] == s["responses"][0]["text"]
        # Two curators, each with its own score on every candidate.
        found = {c.model: c for c in curators(ws, "humpback-tiny-candidates")}
        assert set(found) == {"humpback-tiny-m0", "humpback-tiny-r1"}
        assert all(c.n == augment["candidates"] and c.mode == "probability" for c in found.values())
        for m in (m1, m2):
            assert m["judged"] == m["candidates"] and 1 <= m["curator_mean_score"] <= 5
            assert m["train_members"] == 10 + m["kept"]  # the seed + what the curator kept
            assert (m["kept_none"] is None) == (m["kept"] > 0)
            assert m["evaluation"]["n_prompts"] == 2
        assert len(empty_rounds(ws)) == sum(1 for m in (m1, m2) if not m["kept"])
        for n, row in ((1, r1), (2, r2)):
            lineage = ws.model_lineage(row["model"])
            assert lineage["base_model"] == "tiny-random" and lineage["round"] == n  # train_from: base
            assert lineage["snapshot"] == f"humpback-tiny-r{n}-train"
