"""AppTest tests for the Rounds page (app_pages/11_Rounds.py) against a real workspace: the empty
state, a bad recipe (nothing written), Start on the synthetic TAPIR recipe of tests/test_rounds.py,
and a real finished two-round run whose timeline and comparison the page shows with the numbers
of core.rounds.compare, the same that `winnow round compare --json` prints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import yaml
from conftest import REPO, dataframe_with, metric, open_page, texts
from test_rounds import synthetic_recipe

import ui
from core import rounds
from core import rounds_views as views

PAGE = "11_Rounds.py"
EMPTY = "No round run yet: run `winnow round run recipes/tapir-tiny.yaml` or press Start."


def plain(elements) -> list[str]:
    """The messages of st.error / st.warning / st.success elements without ui.md_escape's backslashes."""
    return [e.value.replace("\\", "") for e in elements]


def errors(at) -> list[str]:
    return plain(at.error)


def button(at, key: str):
    return next(b for b in at.button if b.key == key)


def paste(at, recipe: dict):
    at.radio(key="rounds_source").set_value("paste").run()
    at.text_area(key="rounds_yaml").input(yaml.safe_dump(recipe, sort_keys=False)).run()
    assert not at.exception, at.exception
    return at


def nothing_written(ws) -> bool:
    """No run, no registered model, no imported dataset: the recipe left the workspace as it was."""
    return rounds.runs(ws) == [] and ws.store.model_spec("teacher") is None and ws.store.dataset_id("pool") is None


def running_job(status: dict) -> dict | None:
    """The run's step whose job runs now (the slow student answers, not the 2-second teacher)."""
    return next((s for r in status["rounds"] for s in r["steps"]
                 if s["status"] == "running" and s.get("job") and s["name"] == "student answers"), None)


def chart(at, title: str) -> dict:
    for c in at.get("plotly_chart"):
        figure = json.loads(c.proto.spec)
        if figure["layout"]["title"]["text"].startswith(title):
            return figure
    raise AssertionError(f"no chart titled {title!r}")


def test_an_empty_workspace_says_what_to_do_and_offers_the_shipped_recipes(app_ws):
    at = open_page(PAGE)
    assert not at.exception
    assert EMPTY in [i.value for i in at.info]
    assert at.selectbox(key="rounds_recipe_file").value == str(views.RECIPES_DIR / "tapir-tiny.yaml")
    assert "TAPIR on a laptop CPU" in texts(at)  # the recipe's comment
    facts = dict(dataframe_with(at, "setting").values.tolist())
    assert facts["student (round 1)"] == "tiny-random" and facts["rounds"] == "2"
    assert not button(at, "rounds_start").disabled and not at.warning
    assert not at.get("plotly_chart") and not [s for s in at.selectbox if s.key == "rounds_run"]
    assert views.JOBS_PAGE == ui.JOBS_PAGE  # core cannot import ui (it imports streamlit)

    # The GPU recipe names models this workspace lacks: it says which, and Start waits for them.
    at.selectbox(key="rounds_recipe_file").set_value(str(views.RECIPES_DIR / "tapir.yaml")).run()
    [warning] = at.warning
    [warning] = plain([warning])
    assert "teacher: qwen2.5-72b-instruct" in warning and "student: qwen2.5-1.5b" in warning
    assert button(at, "rounds_start").disabled
    assert rounds.runs(app_ws) == []


def test_a_bad_recipe_names_the_key_and_writes_nothing(app_ws, tmp_path):
    recipe = synthetic_recipe(tmp_path)
    at = paste(open_page(PAGE), recipe | {"tapir": recipe["tapir"] | {"alpha_1": 1.5}})
    assert any("tapir.alpha_1: expected a number in [0, 1], not 1.5" in e for e in errors(at)), errors(at)
    assert button(at, "rounds_start").disabled
    paste(at, recipe | {"tapir": recipe["tapir"] | {"speed": 3}})
    assert any("tapir: unknown key(s) speed" in e for e in errors(at)), errors(at)
    at.text_area(key="rounds_yaml").input("name: [unclosed").run()
    assert any("the recipe is not valid YAML" in e for e in errors(at)), errors(at)
    # A model that is neither in the workspace nor registered by the recipe: warned, not started.
    paste(at, recipe | {"models": recipe["models"] | {"judge": "nope"}})
    assert not errors(at)
    assert "judge: nope" in plain(at.warning)[0]
    assert button(at, "rounds_start").disabled
    assert nothing_written(app_ws)


def test_start_creates_the_run_that_the_owner_then_advances(app_ws, tmp_path):
    at = paste(open_page(PAGE), synthetic_recipe(tmp_path))
    assert dict(dataframe_with(at, "setting").values.tolist())["registers"] == "teacher, judge, student-0"
    at.number_input(key="rounds_rounds").set_value(1).run()
    button(at, "rounds_start").click().run()
    try:
        assert not at.exception and not errors(at), errors(at)
        [run] = rounds.runs(app_ws)
        assert (run["name"], run["status"], run["rounds"]) == ("adder", "active", 1)
        assert any(s.startswith("Started run adder (1 round): registered model teacher") for s in plain(at.success))
        assert app_ws.store.dataset_id("pool") is not None  # start_run imported data.files
        assert at.selectbox(key="rounds_run").value == "adder"
        assert metric(at, "Run status") == "active" and metric(at, "Rounds done") == "0 / 1"
        # The owner thread (not the page) starts round 1; the page then shows its running job.
        deadline = time.time() + 90
        while time.time() < deadline and not running_job(rounds.run_status(app_ws, "adder")):
            time.sleep(0.3)
        step = running_job(rounds.run_status(app_ws, "adder"))
        assert step, rounds.run_status(app_ws, "adder")
        at.run()
        assert not at.exception
        assert dataframe_with(at, "training samples")["round"].tolist() == ["adder/1"]
        steps = dataframe_with(at, "kind")
        assert step["name"] in steps["step"].tolist()
        assert any(p.proto.text.startswith(f"{step['name']}: ") for p in at.get("progress"))
    finally:
        ui._open_workspace.clear()  # stop the owner thread first: then app_ws's teardown kills its jobs


@pytest.mark.slow  # two real rounds (~2 min on the shared 2-core CPU) and a run that fails
def test_a_finished_run_shows_its_timeline_and_the_same_comparison_as_the_cli(app_ws, tmp_path):
    ws = app_ws
    recipe = synthetic_recipe(tmp_path)
    recipe["train"] = recipe["train"] | {"max_steps": 5}
    rounds.start_run(ws, recipe)
    rounds.drive(ws, "adder", timeout=900)
    # A second run over the same pool fails at its seeds step (no MFD is above δ = 100); it
    # reuses the first run's answers and verdicts, so it costs no job.
    rounds.start_run(ws, recipe | {"name": "hard", "rounds": 1, "tapir": recipe["tapir"] | {"delta": 100.0}})
    with pytest.raises(rounds.RoundFailed):
        rounds.drive(ws, "hard", timeout=300)
    cmp = rounds.compare(ws, "adder/1", "adder/2")

    at = open_page(PAGE)
    assert not at.exception
    assert at.selectbox(key="rounds_run").options[:2] == ["hard · failed · 0 of 1 rounds", "adder · done · 2 of 2 rounds"]  # newest first
    assert any("no instruction has MFD > δ = 100.0" in e for e in errors(at)), errors(at)
    assert button(at, "rounds_retry_hard")

    at.selectbox(key="rounds_run").set_value("adder").run()
    assert not at.exception and not errors(at)
    timeline = dataframe_with(at, "training samples")
    assert timeline["round"].tolist() == ["adder/1", "adder/2"]
    assert timeline["student"].tolist() == ["student-0", "adder-r1"]
    assert timeline["model"].tolist() == ["adder-r1", "adder-r2"]
    assert timeline["status"].tolist() == ["done", "done"]
    status = rounds.run_status(ws, "adder")
    train_jobs = [s["job_id"] for r in status["rounds"] for s in r["steps"] if s["kind"] == "train"]
    links = {lk.proto.label: (lk.proto.page, lk.proto.query_string) for lk in at.get("page_link")}
    for job_id in train_jobs:
        assert links[f"train: {job_id} on the Train page"] == ("Train", f"job={job_id}")

    # The comparison: the numbers of core.rounds.compare ...
    ev1, ev2, head = cmp["a"]["evaluation"], cmp["b"]["evaluation"], cmp["head_to_head"]
    assert at.selectbox(key="rounds_cmp_a").value == "adder/1" and at.selectbox(key="rounds_cmp_b").value == "adder/2"
    assert metric(at, "Win rate · adder/1") == f"{ev1['win_rate']:.2f}"
    assert metric(at, "Exact match · adder/2") == f"{ev2['exact_match_a']:.2f}"
    assert metric(at, "Mean MFD shift") == f"{cmp['mfd_shift']:+.2f}"
    table = dataframe_with(at, "adder/2").set_index("")
    assert table.loc["win rate vs its start", "adder/1"] == (
        f"{ev1['win_rate']:.2f} [{ev1['win_low']:.2f}, {ev1['win_high']:.2f}] "
        f"({ev1['wins']}–{ev1['ties']}–{ev1['losses']} of {ev1['n']})")
    low, high = ev2["exact_match_a_interval"]
    assert table.loc["exact match", "adder/2"] == (
        f"{ev2['exact_match_a']:.2f} [{low:.2f}, {high:.2f}] ({ev2['exact_a']}/{ev2['n_reference']})")
    assert table.loc["training samples", "adder/1"] == f"{cmp['a']['train_members']:,}"
    wins = chart(at, "Win rate")["data"][0]
    assert wins["x"] == [ev1["win_rate"], ev2["win_rate"], head["win_rate"]]
    mfd = chart(at, "MFD of each round")["data"]
    assert [sum(t["y"]) for t in mfd] == [cmp["a"]["mfd"]["n"], cmp["b"]["mfd"]["n"]] == [300, 300]
    mix = chart(at, "Task mix")["data"]
    assert [t["customdata"] for t in mix] == [[m["final"] for m in cmp[s]["task_mix"]] for s in ("a", "b")]
    assert f"Head to head: {head['line']}" in texts(at)

    # ... which `winnow round compare --json` prints: the app owns the catalog now, so the CLI
    # hands the request to its owner thread, which answers from the same function.
    env = os.environ | {"WINNOW_WORKSPACE": str(ws.root)}
    done = subprocess.run([sys.executable, "-m", "core.cli", "round", "compare", "adder/1", "adder/2", "--json"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert printed["a"]["evaluation"]["win_rate"] == ev1["win_rate"]
    assert printed["b"]["evaluation"]["exact_match_a"] == ev2["exact_match_a"]
    assert printed["mfd_shift"] == cmp["mfd_shift"] and printed["head_to_head"]["line"] == head["line"]

    # Retry the failed run: it is active again, and the owner thread advances it (to the same
    # failure: δ is still 100).
    at.selectbox(key="rounds_run").set_value("hard").run()
    button(at, "rounds_retry_hard").click().run()
    assert not at.exception
    assert any(s.startswith("Retrying run hard") for s in plain(at.success)), plain(at.success)
    deadline = time.time() + 60
    while time.time() < deadline and rounds.run_status(ws, "hard")["status"] == "active":
        time.sleep(0.5)
    again = rounds.run_status(ws, "hard")
    assert again["status"] == "failed" and "no instruction has MFD > δ = 100.0" in again["error"]
