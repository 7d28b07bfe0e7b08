"""core.rounds_views (what the Rounds page shows) and its charts, on run_status / compare dicts
shaped like core.rounds returns them, the shipped recipes and a real workspace."""

from __future__ import annotations

import pandas as pd
import pytest

from core import charts
from core import rounds_views as views
from core.recipes import load_recipe

EV1 = {"model_a": "adder-r1", "model_b": "student-0", "n": 40, "wins": 20, "ties": 10, "losses": 10,
       "win_rate": 0.625, "win_low": 0.47, "win_high": 0.76, "flip_rate": 0.05, "n_reference": 40,
       "exact_a": 12, "exact_b": 4, "exact_match_a": 0.3, "exact_match_b": 0.1,
       "exact_match_a_interval": [0.18, 0.45], "exact_match_b_interval": [0.04, 0.23], "line": "r1 line"}
EV2 = EV1 | {"model_a": "adder-r2", "model_b": "adder-r1", "win_rate": 0.55, "win_low": 0.4, "win_high": 0.69,
             "exact_a": 18, "exact_b": 12, "exact_match_a": 0.45, "exact_match_b": 0.3,
             "exact_match_a_interval": [0.31, 0.6], "exact_match_b_interval": [0.18, 0.45]}


def step(position, name, kind="job", status="done", job_id=None, **extra) -> dict:
    return {"position": position, "name": name, "kind": kind, "status": status, "job_id": job_id,
            "outputs": extra.pop("outputs", None), "error": None, "started_at": pd.Timestamp("2026-01-01 10:00:00")
            + pd.Timedelta(seconds=10 * position), "finished_at": extra.pop("finished_at", None)} | extra


def status() -> dict:
    r1 = {"id": "adder/1", "number": 1, "student": "student-0", "model": "adder-r1", "status": "done", "error": None,
          "config": {"alpha": 0.5}, "metrics": {"alpha": 0.5, "seeds": 64, "expanded": 3, "train_members": 212,
                                                "evaluation": EV1},
          "steps": [step(1, "teacher answers", job_id="generate-1", outputs={"stage": "generate"},
                         finished_at=pd.Timestamp("2026-01-01 10:00:15")),
                    step(2, "mfd", kind="compute"),
                    step(3, "train", kind="train", job_id="train-1", finished_at=pd.Timestamp("2026-01-01 10:01:00"))]}
    r2 = {"id": "adder/2", "number": 2, "student": "adder-r1", "model": None, "status": "running", "error": None,
          "config": {"alpha": 0.75}, "metrics": None,
          "steps": [step(1, "teacher answers", outputs={"step": {"status": "skipped"}}),
                    step(2, "student answers", status="running", job_id="generate-2", outputs={"stage": "generate"},
                         job={"done": 32, "total": 300, "tokens_per_s": 120.5, "eta_s": 40.0, "status": "running"})]}
    return {"name": "adder", "method": "tapir", "status": "active", "error": None, "rounds_wanted": 2, "source": None,
            "rounds": [r1, r2]}


def comparison(head=True) -> dict:
    def facts(round_, student, model, ev, values, mix):
        return {"round": round_, "number": int(round_[-1]), "status": "done", "student": student, "model": model,
                "snapshot": f"{model}-train", "alpha": 0.5, "evaluation": ev, "seeds": 64, "expanded": 0,
                "train_members": sum(m["final"] for m in mix),
                "mfd": {"n": len(values), "mean": sum(values) / len(values), "values": values}, "task_mix": mix}
    a = facts("adder/1", "student-0", "adder-r1", EV1, [4.0, 4.0, 0.0, 1.5, -1.0],
              [{"task": "math", "before": 10, "final": 6}, {"task": "code", "before": 5, "final": 2}])
    b = facts("adder/2", "adder-r1", "adder-r2", EV2, [0.0, 0.0, 1.0, 4.0],
              [{"task": "math", "before": 10, "final": 3}, {"task": "code", "before": 5, "final": 3}])
    head_to_head = EV2 | {"win_rate": 0.7, "win_low": 0.55, "win_high": 0.82, "line": "head line"} if head else None
    return {"a": a, "b": b, "mfd_shift": b["mfd"]["mean"] - a["mfd"]["mean"], "head_to_head": head_to_head}


# -- recipes ------------------------------------------------------------------------------------


def test_the_shipped_recipes_are_listed_with_their_comment_and_key_values():
    files = views.recipe_files()
    methods = ("tapir", "citing", "humpback", "tuna", "zephyr")  # TAPIR's laptop recipe first, then the others
    laptop = ["tapir-tiny", "citing-tapir-tiny", *(f"{m}-tiny" for m in methods[1:])]  # + TAPIR and CITING composed
    assert [p.stem for p in files] == laptop + sorted(methods)
    text = files[0].read_text(encoding="utf-8")
    comment = views.recipe_comment(text)
    assert comment.startswith("TAPIR on a laptop CPU") and "winnow round run recipes/tapir-tiny.yaml" in comment
    assert "name: tapir-tiny" not in comment and "#" not in comment.splitlines()[0]
    facts = dict(views.recipe_facts(load_recipe(files[0])).values.tolist())
    assert facts["method"] == "tapir" and facts["rounds"] == "2" and facts["student (round 1)"] == "tiny-random"
    assert facts["pool"] == "tapir-tiny-pool" and facts["held out"] == "tapir-tiny-heldout"
    assert facts["training"] == "full, 12 steps"


def test_missing_models_are_named_by_role_and_registered_ones_count(workspace):
    tiny = load_recipe(views.RECIPES_DIR / "tapir-tiny.yaml")
    assert views.missing_models(workspace, tiny) == []  # built-in models
    big = load_recipe(views.RECIPES_DIR / "tapir.yaml")
    assert views.missing_models(workspace, big) == ["teacher: qwen2.5-72b-instruct", "judge: qwen2.5-72b-instruct",
                                                    "student: qwen2.5-1.5b", "evaluate.judge: qwen2.5-72b-instruct"]
    own = load_recipe({"name": "r", "models": {"teacher": "adder", "judge": "tiny-random", "student": "tiny-random"},
                       "register": [{"name": "adder", "backend": "python", "path": "core.synthetic:teacher"}],
                       "data": {"pool": ["p"], "heldout": "h"}})
    assert views.missing_models(workspace, own) == []


# -- runs and the timeline ------------------------------------------------------------------------


def test_runs_newest_first_and_their_label():
    runs = [{"name": "old", "status": "done", "created_at": "2026-01-01 10:00:00"},
            {"name": "new", "status": "active", "created_at": "2026-01-02 10:00:00"}]
    assert [r["name"] for r in views.newest_first(runs)] == ["new", "old"]
    assert views.run_label(runs[1], status()) == "new · active · 1 of 2 rounds"


def test_the_timeline_has_a_row_per_round_with_its_evaluation():
    frame = views.timeline_frame(status())
    assert frame["round"].tolist() == ["adder/1", "adder/2"]
    assert frame["model"].tolist() == ["adder-r1", "…"] and frame["status"].tolist() == ["done", "running"]
    first, second = frame.iloc[0], frame.iloc[1]
    assert first["α"] == 0.5 and second["α"] == 0.75
    assert first["win rate vs start"] == "0.62 [0.47, 0.76] (20–10–10 of 40)"
    assert first["exact match"] == "0.30 [0.18, 0.45] (12/40)"
    assert first["start's exact match"] == "0.10 [0.04, 0.23] (4/40)"
    assert second["step"] == "student answers" and second["win rate vs start"] == "—"


def test_a_rounds_steps_in_order_with_the_running_jobs_progress_and_links():
    r2 = status()["rounds"][1]
    frame = views.steps_frame(r2)
    assert frame["step"].tolist() == ["teacher answers", "student answers"]
    assert frame["status"].tolist() == ["skipped (nothing to do)", "running"]
    assert frame.iloc[1]["progress"] == "32 / 300" and frame.iloc[1]["tokens/s"] == 120.5
    assert frame.iloc[1]["ETA s"] == 40.0
    assert views.step_progress(r2["steps"][1])["done"] == 32 and views.step_progress(r2["steps"][0]) == {}
    r1 = status()["rounds"][0]
    assert views.step_link(r1["steps"][0]) == {"page": views.JOBS_PAGE, "query_params": {"stage": "generate"},
                                               "label": "teacher answers: generate-1 on the Jobs page"}
    assert views.step_link(r1["steps"][1]) is None
    assert views.step_link(r1["steps"][2])["page"] == views.TRAIN_PAGE
    assert views.step_link(r1["steps"][2])["query_params"] == {"job": "train-1"}


def test_the_steps_timeline_ends_a_running_step_now_and_a_compute_step_at_its_start():
    now = pd.Timestamp("2026-01-01 10:05:00")
    frame = views.steps_timeline_frame(status(), now=now)
    assert len(frame) == 5
    by = {(r, s): (start, end) for r, s, _, start, end in frame.itertuples(index=False)}
    assert by[("adder/1", "teacher answers")][1] == pd.Timestamp("2026-01-01 10:00:15")
    start, end = by[("adder/1", "mfd")]
    assert start == end  # done without a finish time: no bar to "now"
    assert by[("adder/2", "student answers")][1] == now
    fig = charts.round_timeline(frame)
    assert sum(len(t.y) for t in fig.data) == 5
    assert {t.name for t in fig.data} == {"done", "running"}
    assert "no step has started yet" in charts.round_timeline(views.steps_timeline_frame(
        {"rounds": []})).layout.annotations[0].text


def test_is_live_only_while_the_run_is_active():
    assert views.is_live(status()) and not views.is_live(status() | {"status": "failed"}) and not views.is_live(None)


# -- the comparison -------------------------------------------------------------------------------


def test_comparable_rounds_are_the_finished_ones():
    assert views.comparable_rounds([status()]) == ["adder/1"]


def test_the_comparison_table_shows_both_rounds_side_by_side():
    frame = views.comparison_frame(comparison()).set_index("")
    assert list(frame.columns) == ["adder/1", "adder/2"]
    assert frame.loc["student → model", "adder/2"] == "adder-r1 → adder-r2"
    assert frame.loc["win rate vs its start", "adder/1"] == "0.62 [0.47, 0.76] (20–10–10 of 40)"
    assert frame.loc["exact match", "adder/2"] == "0.45 [0.31, 0.60] (18/40)"
    assert frame.loc["training samples", "adder/1"] == "8" and frame.loc["mean MFD", "adder/2"] == "1.25"
    same = comparison() | {"b": comparison()["a"]}
    assert len(views.comparison_frame(same).columns) == 3  # a round against itself keeps both columns


def test_win_rates_with_intervals_each_round_and_head_to_head():
    frame = views.win_rate_frame(comparison())
    assert frame["comparison"].tolist() == ["adder/1: adder-r1 vs student-0", "adder/2: adder-r2 vs adder-r1",
                                            "head to head: adder-r2 vs adder-r1"]
    assert frame["win_rate"].tolist() == [0.625, 0.55, 0.7] and frame["low"].tolist() == [0.47, 0.4, 0.55]
    assert len(views.win_rate_frame(comparison(head=False))) == 2
    fig = charts.interval_points(frame, "comparison", "win_rate", "Win rate", "win rate", reference=0.5)
    [trace] = fig.data
    assert list(trace.x) == [0.625, 0.55, 0.7]
    assert list(trace.error_x.array) == pytest.approx([0.76 - 0.625, 0.69 - 0.55, 0.82 - 0.7])
    assert list(trace.error_x.arrayminus) == pytest.approx([0.625 - 0.47, 0.55 - 0.4, 0.7 - 0.55])
    assert fig.layout.shapes[0].x0 == 0.5
    assert charts.interval_points(frame.iloc[0:0], "comparison", "win_rate", "W", "w").layout.annotations


def test_exact_match_per_model_each_start_once():
    frame = views.exact_match_frame(comparison())
    assert frame["model"].tolist() == ["student-0", "adder-r1", "adder-r2"]
    assert frame["exact_match"].tolist() == [0.1, 0.3, 0.45]
    assert frame["low"].tolist() == [0.04, 0.18, 0.31] and frame["n"].tolist() == [40, 40, 40]


def test_mfd_overlay_puts_both_rounds_on_the_same_bins():
    frame, width = views.mfd_overlay_frame(comparison(), bin_width=1.0)
    assert width == 1.0
    a = frame[frame["round"] == "adder/1"].set_index("bin_start")["n"].to_dict()
    b = frame[frame["round"] == "adder/2"].set_index("bin_start")["n"].to_dict()
    assert a == {-1.0: 1, 0.0: 1, 1.0: 1, 4.0: 2} and b == {0.0: 2, 1.0: 1, 4.0: 1}
    _, auto = views.mfd_overlay_frame(comparison())
    assert auto == 0.5  # a 5-wide range in about 20 bins: 0.25 rounds up to a 1-2-5 step
    assert views.nice_bin_width([]) == 1.0 and views.nice_bin_width([2.0, 2.0]) == 1.0
    fig = charts.mfd_overlay(frame, width, delta=1.0)
    assert [t.name for t in fig.data] == ["adder/1", "adder/2"] and fig.layout.barmode == "overlay"
    assert sum(fig.data[0].y) == 5 and sum(fig.data[1].y) == 4
    with pytest.raises(ValueError):
        charts.mfd_overlay(frame, 0)


def test_task_mix_shares_per_round():
    frame = views.task_mix_frame(comparison())
    rows = {(r, t): (n, share) for r, t, n, share in frame.itertuples(index=False)}
    assert rows[("adder/1", "math")] == (6, 0.75) and rows[("adder/2", "code")] == (3, 0.5)
    fig = charts.round_task_mix(frame)
    assert [t.name for t in fig.data] == ["adder/1", "adder/2"]
    assert list(fig.data[0].y) == [0.75, 0.25] and list(fig.data[0].customdata) == [6, 2]
    assert charts.round_task_mix(frame.iloc[0:0]).layout.annotations


def test_a_round_compared_with_itself_keeps_two_series_in_every_chart():
    """Found by the browser test: with one finished round the page compares it with itself, and
    grouping by round id merged both sides (a task twice in one bar group: a crash)."""
    from core import charts

    facts = {"round": "run/1", "model": "m", "student": "s", "evaluation": None,
             "task_mix": [{"task": "math", "after": 3}, {"task": "code_generation", "after": 1}],
             "mfd": {"n": 3, "mean": 1.0, "values": [0.0, 1.0, 2.0]}}
    cmp = {"a": facts, "b": facts, "mfd_shift": 0.0, "head_to_head": None}
    mix = views.task_mix_frame(cmp)
    assert set(mix["round"]) == {"run/1 (A)", "run/1 (B)"} and len(mix) == 4
    assert len(charts.round_task_mix(mix).data) == 2
    overlay, width = views.mfd_overlay_frame(cmp)
    assert set(overlay["round"]) == {"run/1 (A)", "run/1 (B)"}
    charts.mfd_overlay(overlay, width)
