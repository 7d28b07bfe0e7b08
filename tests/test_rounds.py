"""Rounds (core.rounds) and recipes (core.recipes): validation, α weights, a two-round TAPIR run
through real jobs, the durable replay (a driver killed mid-round continues, no step twice), the
CLI and the comparison."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from core import jobs, rounds, synthetic
from core.recipes import METHODS, RecipeError, load_recipe
from core.train.scratch import build_char_student
from core.workspace import Workspace

REPO = Path(__file__).resolve().parent.parent


def synthetic_recipe(tmp_path: Path, name: str = "adder", rounds_: int = 2, **tapir) -> dict:
    """A TAPIR recipe over short sums: a python teacher that drops carries, an exact-match python
    judge, a character-level student built from a config. Small enough for a unit test."""
    files = synthetic.write_prompt_files(tmp_path / "files", "addition-short", 300, 40, seed=0)
    student = build_char_student(tmp_path / "student-0")
    return {
        "name": name, "method": "tapir", "rounds": rounds_,
        "models": {"teacher": "teacher", "judge": "judge", "student": "student-0"},
        "register": [
            {"name": "teacher", "backend": "python", "path": "core.synthetic:teacher",
             "extra": {"options": {"error_rate": 0.7}}},
            {"name": "judge", "backend": "python", "path": "core.synthetic:exact_match_judge"},
            {"name": "student-0", "backend": "hf", "path": str(student), "context_length": 64},
        ],
        "data": {"pool": ["pool"], "heldout": "heldout",
                 "files": {"pool": str(files.train), "heldout": str(files.heldout)}},
        "generate": {"max_tokens": 6, "temperature": 0.0, "seed": 0},
        "judge": {"rubric": "pointwise_5", "mode": "probability", "min_score": 5},
        "tapir": {"delta": 0.0, "seeds": 64, "rebalance": None, "expand": 0, "restyle": False,
                  "alpha_1": 0.5, "delta_alpha": 0.25} | tapir,
        "train": {"method": "full", "max_steps": 30, "batch_size": 64, "learning_rate": 3e-3, "max_seq_len": 32,
                  "logging_steps": 10, "dtype": "float32", "lr_scheduler": "cosine", "warmup_steps": 5},
        "evaluate": {"judge": "judge", "max_tokens": 4},
        "shard_size": 200, "threads": 2,
    }


# -- recipes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("change", "message"), [
    ({"name": "bad name!"}, "name:"),
    ({"method": "alchemy"}, "method: one of tapir, zephyr, humpback, tuna, citing, not 'alchemy'"),
    ({"models": {"teacher": "t", "judge": "j"}}, "models.student: expected a name, not None"),
    ({"tapir": {"delta": "high"}}, "tapir.delta: expected a number, not 'high'"),
    ({"tapir": {"alpha_1": 1.5}}, "tapir.alpha_1: expected a number in [0, 1], not 1.5"),
    ({"tapir": {"seeds": 0}}, "tapir.seeds: expected an integer ≥ 1, not 0"),
    ({"tapir": {"rebalance": {"math": -1}}}, "tapir.rebalance:"),
    ({"tapir": {"speed": 3}}, "tapir: unknown key(s) speed"),
    ({"train": {"learning_rate": 0}}, "train: learning_rate must be a number in (0, 1), not 0"),
    ({"train": {"base_model": "x"}}, "train.base_model: leave it out"),
    ({"judge": {"rubric": "pairwise"}}, "judge.rubric: MFD needs a pointwise rubric"),
    ({"data": {"pool": ["a"], "heldout": "a"}}, "data.heldout: 'a' is also in data.pool"),
    ({"rounds": 0}, "rounds: expected an integer ≥ 1, not 0"),
])
def test_a_bad_recipe_value_names_its_key_and_value(change, message):
    base = {"name": "r", "models": {"teacher": "t", "judge": "j", "student": "s"},
            "data": {"pool": ["p"], "heldout": "h"}}
    with pytest.raises(RecipeError) as err:
        load_recipe(base | change)
    assert message in str(err.value)


def test_the_shipped_recipes_load():
    for path in sorted((REPO / "recipes").glob("*.yaml")):
        recipe = load_recipe(path)
        assert recipe.name == path.stem and recipe.method in METHODS and recipe.method in path.stem
        for dataset in (*recipe.pool, recipe.heldout):
            assert dataset in recipe.files and Path(recipe.files[dataset]).is_file(), (path, dataset)


def test_alpha_grows_by_delta_alpha_and_caps_at_one():
    t = load_recipe({"name": "r", "models": {"teacher": "t", "judge": "j", "student": "s"},
                     "data": {"pool": ["p"], "heldout": "h"}, "tapir": {"alpha_1": 0.4, "delta_alpha": 0.35}}).tapir
    assert [round(t.alpha(r), 2) for r in (1, 2, 3)] == [0.4, 0.75, 1.0]


def test_alpha_weights_raise_the_hard_samples_to_their_share_and_never_blow_up_a_small_group():
    w_hard, w_easy = rounds.alpha_weights(n_hard=20, n_easy=80, alpha=0.6)
    assert (w_hard, w_easy) == pytest.approx((6.0, 1.0))  # 0.6·80 / (0.4·20)
    assert 20 * w_hard / (20 * w_hard + 80 * w_easy) == pytest.approx(0.6)
    assert rounds.alpha_weights(n_hard=90, n_easy=10, alpha=0.6) == (1.0, 1.0)  # 0.9 ≥ 0.6 already
    assert rounds.alpha_weights(n_hard=20, n_easy=80, alpha=1.0) == (1.0, 0.0)
    assert rounds.alpha_weights(0, 10, 0.5) == (1.0, 1.0)


# -- a run, end to end ----------------------------------------------------------------------------


@pytest.mark.slow
def test_two_tapir_rounds_run_through_real_jobs_and_record_everything(tmp_path):
    recipe = synthetic_recipe(tmp_path)
    with Workspace(tmp_path / "ws") as ws:
        started = rounds.start_run(ws, recipe)
        assert {"imported 300 records into pool", "imported 40 records into heldout"} <= set(started["prepared"])
        status = rounds.drive(ws, "adder", timeout=600)
        assert status["status"] == "done"
        first, second = status["rounds"]
        assert (first["student"], first["model"]) == ("student-0", "adder-r1")
        assert (second["student"], second["model"], second["parent_id"]) == ("adder-r1", "adder-r2", "adder/1")
        names = [s["name"] for s in first["steps"]]
        assert names[:5] == ["teacher answers", "student answers", "judge answers", "mfd", "seeds"]
        assert {"training set", "train", "evaluate"} <= set(names)
        assert all(s["status"] == "done" for r in status["rounds"] for s in r["steps"])
        # round 2 reuses the teacher's answers: its teacher step is skipped, its student answers anew
        by_name = {s["name"]: s for s in second["steps"]}
        assert by_name["teacher answers"]["job_id"] is None and by_name["student answers"]["job_id"]

        m1, m2 = first["metrics"], second["metrics"]
        assert m1["alpha"] == 0.5 and m2["alpha"] == 0.75
        assert m1["mfd"]["computed"] == 300 and m1["seeds"] > 0
        ev1, ev2 = m1["evaluation"], m2["evaluation"]
        assert ev1["n_reference"] == ev2["n_reference"] == 40
        assert ev1["model_a"] == "adder-r1" and ev1["model_b"] == "student-0"
        # the training set keeps only judge-approved teacher answers (min_score 5 = exact match)
        lineage = ws.model_lineage("adder-r2")
        assert lineage["base_model"] == "adder-r1" and lineage["snapshot"] == "adder-r2-train"
        assert lineage["round"] == 2

        comparison = rounds.compare(ws, "adder/1", "adder/2")
        assert comparison["a"]["model"] == "adder-r1" and comparison["b"]["model"] == "adder-r2"
        assert comparison["a"]["mfd"]["n"] == 300
        # the student learned in round 1: fewer instructions are hard for it in round 2
        assert comparison["mfd_shift"] is not None and comparison["mfd_shift"] < 0
        json.dumps(comparison)  # what `winnow round compare --json` prints
        # asking for a third round continues the same run from round 2's model
        assert rounds.start_run(ws, recipe, rounds=2)["status"] == "active"
        assert rounds.advance_run(ws, "adder") == "done"


DRIVER = """
import sys
from core import rounds
from core.workspace import Workspace
with Workspace(sys.argv[1]) as ws:
    rounds.start_run(ws, sys.argv[2])
    rounds.drive(ws, "adder", timeout=600)
"""


@pytest.mark.slow
def test_a_driver_killed_mid_round_continues_and_does_no_step_twice(tmp_path):
    recipe = tmp_path / "adder.yaml"
    recipe.write_text(yaml.safe_dump(synthetic_recipe(tmp_path, rounds_=1) | {
        "train": synthetic_recipe(tmp_path)["train"] | {"max_steps": 60, "save_steps": 10}}), encoding="utf-8")
    ws_root = tmp_path / "ws"
    env = os.environ | {"PYTHONPATH": str(REPO)}
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, str(ws_root), str(recipe)], env=env, cwd=REPO,
                              start_new_session=True)
    jobs_dir = ws_root / "runs" / "jobs"
    deadline = time.time() + 300
    while time.time() < deadline and not any(jobs_dir.glob("train-*/metrics.jsonl")):
        assert driver.poll() is None, "the driver ended before the training step"
        time.sleep(0.2)
    os.killpg(driver.pid, signal.SIGKILL)  # the driver (the training job runs in its own session)
    driver.wait()
    before = sorted(p.name for p in jobs_dir.iterdir())
    with Workspace(ws_root) as ws:
        status = rounds.start_run(ws, str(recipe))
        assert status["rounds"][0]["status"] == "running"
        status = rounds.drive(ws, "adder", timeout=600)
        steps = status["rounds"][0]["steps"]
        assert status["status"] == "done" and all(s["status"] == "done" for s in steps)
        job_ids = [s["job_id"] for s in steps if s["job_id"]]
        assert len(job_ids) == len(set(job_ids))
        after = sorted(p.name for p in jobs_dir.iterdir())
        # the steps done before the kill kept their jobs; only the later ones made new folders
        assert set(before) <= set(after)
        assert len([j for j in after if j.startswith("train-")]) == 1
        assert set(after) - set(before) <= set(job_ids)
        assert ws.model_lineage("adder-r1")["steps"] == 60


@pytest.mark.slow
def test_tapir_tiny_runs_two_rounds_from_the_command_line_with_the_builtin_models(tmp_path):
    """recipes/tapir-tiny.yaml as shipped (SmolLM2-135M teaches and judges, tiny-random learns),
    shrunk to a few prompts so the test stays short, through `winnow round run` in a real process:
    every step, the LLM expansion and style rewriting included, then status and compare."""
    recipe = yaml.safe_load((REPO / "recipes" / "tapir-tiny.yaml").read_text(encoding="utf-8"))
    recipe["data"]["files"] = {k: str((REPO / "recipes" / v).resolve()) for k, v in recipe["data"]["files"].items()}
    recipe["data"]["limit"] = 8
    recipe["generate"]["max_tokens"] = 24
    recipe["tapir"] |= {"seeds": 2, "delta": 0.0}
    recipe["train"] |= {"max_steps": 3}
    recipe["evaluate"] |= {"limit": 3, "max_tokens": 16}
    path = tmp_path / "tapir-tiny.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    ws_root = tmp_path / "ws"
    env = os.environ | {"PYTHONPATH": str(REPO)}

    def winnow(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "core.cli", *args, "--workspace", str(ws_root)], env=env,
                              cwd=REPO, capture_output=True, text=True, timeout=900)

    ran = winnow("round", "run", str(path), "--rounds", "2", "--json")
    assert ran.returncode == 0, ran.stderr[-3000:]
    status = json.loads(ran.stdout)
    assert status["status"] == "done" and [r["model"] for r in status["rounds"]] == ["tapir-tiny-r1", "tapir-tiny-r2"]
    for r in status["rounds"]:
        steps = {s["name"]: s for s in r["steps"]}
        assert all(s["status"] == "done" for s in steps.values())
        assert steps["expand seeds"]["job_id"] and steps["train"]["job_id"]
        assert r["metrics"]["evaluation"]["n_prompts"] == 3
    shown = winnow("round", "status")
    assert shown.returncode == 0 and "run tapir-tiny (tapir): done, 2 of 2 rounds done" in shown.stdout
    compared = winnow("round", "compare", "tapir-tiny/1", "tapir-tiny/2", "--json")
    assert compared.returncode == 0, compared.stderr[-2000:]
    cmp = json.loads(compared.stdout)
    assert cmp["a"]["model"] == "tapir-tiny-r1" and cmp["b"]["student"] == "tapir-tiny-r1"
    assert cmp["head_to_head"]["model_a"] == "tapir-tiny-r2"
    with Workspace(ws_root) as ws:
        lineage = ws.model_lineage("tapir-tiny-r2")
        assert lineage["base_model"] == "tapir-tiny-r1" and lineage["round"] == 2
        # every reply of the expansion job is a new instruction with its seed as parent, or a
        # counted drop (cut off, a copy of the seed, ...): nothing vanishes unexplained
        steps = {s["name"]: s for s in status["rounds"][0]["steps"]}
        seeds = set(rounds._members(steps["seeds"]["outputs"]["parquet"]))
        job_dir = ws.job_dir(steps["expand seeds"]["job_id"])
        replies = [row for shard in jobs.finished_shards(job_dir) for row in jobs.read_shard(shard).to_pylist()]
        assert len(replies) == len(seeds) and all(r["parent_id"] in seeds for r in replies)
        from core.expand import DROP_REASONS

        assert all((r["dropped"] is None and r["id"] and r["text"]) or r["dropped"] in DROP_REASONS
                   for r in replies), replies
