"""core/train_views.py (what the Train page and the Models page's lineage view show) and
charts.training_curves, against a real workspace on disk: settings checked by TrainConfig, presets
on disk, runs read from real (unlaunched) training job folders, names checked against the models,
jobs and folders of the workspace."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from core import charts, jobs
from core import train_views as views
from core.curate import create_snapshot
from core.llm.registry import ModelSpec
from core.train import TrainConfig

RECORDS = [  # written out of order, as a resumed run may leave them; step 2 has an eval loss
    {"step": 3, "total_steps": 3, "loss": 1.5, "lr": 1e-5, "grad_norm": 0.7, "tokens_per_s": 900.0, "eta_s": 0.0,
     "epoch": 1.0},
    {"step": 1, "total_steps": 3, "loss": 3.0, "lr": 3e-5, "grad_norm": 2.0, "tokens_per_s": 500.0, "eta_s": 4.0,
     "epoch": 0.33},
    {"step": 2, "total_steps": 3, "loss": 2.0, "lr": 2e-5, "grad_norm": 1.1, "tokens_per_s": 800.0, "eta_s": 1.5,
     "epoch": 0.67, "eval_loss": 2.4},
]


@pytest.fixture
def snap_ws(seeded_workspace):
    create_snapshot(seeded_workspace, {"kind": "sft", "roles": ["seed"]}, "s1")
    return seeded_workspace


# --------------------------------------------------------------------------------------------
# Curves
# --------------------------------------------------------------------------------------------


def test_curve_frame_orders_steps_and_keeps_eval_loss_only_when_logged():
    frame = views.curve_frame(RECORDS)
    assert frame["step"].tolist() == [1, 2, 3]
    assert frame["loss"].tolist() == [3.0, 2.0, 1.5] and frame["lr"].tolist() == [3e-5, 2e-5, 1e-5]
    assert frame["eval_loss"].isna().tolist() == [True, False, True] and frame["eval_loss"][1] == 2.4
    without = views.curve_frame([{k: v for k, v in r.items() if k != "eval_loss"} for r in RECORDS])
    assert "eval_loss" not in without.columns and without["grad_norm"].tolist() == [2.0, 1.1, 0.7]
    assert views.curve_frame([]).empty


def test_training_curves_plots_each_series_against_the_step():
    fig = charts.training_curves(views.curve_frame(RECORDS))
    traces = {t.name: t for t in fig.data}
    assert set(traces) == {"loss", "eval loss", "learning rate", "grad norm"}
    assert list(traces["loss"].x) == [1, 2, 3] and list(traces["loss"].y) == [3.0, 2.0, 1.5]
    assert list(traces["eval loss"].x) == [2] and list(traces["eval loss"].y) == [2.4]  # NaN steps left out
    assert traces["loss"].xaxis == traces["eval loss"].xaxis == "x"  # loss and eval loss share a panel
    assert traces["learning rate"].xaxis == "x2" and traces["grad norm"].xaxis == "x3"
    # Plain records work too; no eval loss means no empty trace in the legend.
    plain = charts.training_curves([{k: v for k, v in r.items() if k != "eval_loss"} for r in RECORDS])
    assert "eval loss" not in {t.name for t in plain.data}
    empty = charts.training_curves([])
    assert not empty.data and empty.layout.annotations[0].text == "no step logged yet"


def test_run_numbers_come_from_the_latest_record():
    ordered = sorted(RECORDS, key=lambda r: r["step"])
    numbers = views.run_numbers({"status": "running", "done": 3, "total": 3}, ordered)
    assert numbers == {"step": 3, "total": 3, "first_loss": 3.0, "loss": 1.5, "eval_loss": 2.4,
                       "tokens_per_s": 900.0, "eta_s": 0.0, "epoch": 1.0}
    assert views.run_numbers({"status": "done"}, ordered)["eta_s"] is None  # an ETA only while it runs
    before = views.run_numbers({"status": "pending", "done": 0, "total": 8, "tokens_per_s": None}, [])
    assert before["step"] == 0 and before["total"] == 8 and before["loss"] is None


# --------------------------------------------------------------------------------------------
# Settings and presets
# --------------------------------------------------------------------------------------------


def test_settings_are_checked_by_trainconfig():
    settings = views.default_settings()
    assert set(settings) == set(views.FORM_FIELDS) and settings["learning_rate"] == TrainConfig("x").learning_rate
    assert views.build_config("tiny-random", settings) == TrainConfig("tiny-random")
    assert "learning_rate must be a number in (0, 1)" in views.settings_problem("m", settings | {"learning_rate": 0.0})
    assert "not both" in views.settings_problem("m", settings | {"warmup_steps": 5, "warmup_ratio": 0.1})
    assert "unknown trainer setting(s): base_modle" in views.settings_problem("m", settings | {"base_modle": "x"})
    assert views.settings_problem("m", settings | {"max_steps": 5, "method": "lora"}) is None
    assert views.form_settings(TrainConfig("m", lora_r=4)) == settings | {"lora_r": 4}


def test_presets_round_trip_atomically(workspace):
    settings = views.default_settings() | {"method": "lora", "learning_rate": 3e-4, "max_steps": 40, "lora_r": 8}
    path = views.save_preset(workspace, "small-lora", settings, threads=2)
    assert path == workspace.root / "train_presets" / "small-lora.json"
    assert not list(path.parent.glob(".*.tmp"))
    assert views.load_preset(workspace, "small-lora") == {"train": settings, "threads": 2}
    views.save_preset(workspace, "small-lora", settings | {"lora_r": 16})  # a preset of that name is replaced
    assert views.load_preset(workspace, "small-lora") == {"train": settings | {"lora_r": 16}, "threads": None}
    views.save_preset(workspace, "b.v2", views.default_settings())
    assert views.presets(workspace) == ["b.v2", "small-lora"]


@pytest.mark.parametrize("name", ["", "../evil", "a/b", ".hidden", "x" * 65, "with space"])
def test_a_bad_preset_name_is_rejected_and_nothing_is_written(workspace, name):
    with pytest.raises(ValueError, match="preset name"):
        views.save_preset(workspace, name, views.default_settings())
    with pytest.raises(ValueError, match="preset name"):
        views.load_preset(workspace, name)
    assert not (workspace.root / "train_presets").exists() or not any((workspace.root / "train_presets").iterdir())
    assert not (workspace.root.parent / "evil.json").exists()


def test_a_bad_preset_is_refused_on_save_and_on_load(workspace):
    with pytest.raises(ValueError, match="learning_rate"):
        views.save_preset(workspace, "bad", views.default_settings() | {"learning_rate": 0.0})
    assert views.presets(workspace) == []
    with pytest.raises(ValueError, match="no preset named 'missing'"):
        views.load_preset(workspace, "missing")
    folder = workspace.root / "train_presets"
    folder.mkdir()
    (folder / "edited.json").write_text(json.dumps({"train": {"batch_size": 0}}))
    with pytest.raises(ValueError, match="batch_size must be an integer ≥ 1"):
        views.load_preset(workspace, "edited")
    (folder / "typo.json").write_text(json.dumps({"train": {"batchsize": 4}}))
    with pytest.raises(ValueError, match="unknown trainer setting"):
        views.load_preset(workspace, "typo")
    (folder / "junk.json").write_text("not json")
    with pytest.raises(ValueError, match="holds no trainer settings"):
        views.load_preset(workspace, "junk")


# --------------------------------------------------------------------------------------------
# Models, names and runs
# --------------------------------------------------------------------------------------------


def test_trainable_models_are_local_weights_with_the_test_model_last(workspace, tmp_path):
    workspace.add_model(ModelSpec("server", "openai", base_urls=("http://127.0.0.1:9/v1",), model="m"))
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text("{}")
    (base / "model.safetensors").write_bytes(b"")
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(base)}))
    (adapter / "adapter_model.safetensors").write_bytes(b"")
    workspace.add_model(ModelSpec("my-adapter", "hf", path=str(adapter)))
    workspace.add_model(ModelSpec("my-full", "hf", path=str(base)))
    names = views.trainable_models(workspace)
    assert names == ["smollm2-135m-instruct", "my-full", "tiny-random"]
    assert views.is_adapter(workspace, "my-adapter") and not views.is_adapter(workspace, "my-full")


def test_model_names_are_checked_against_models_jobs_and_folders(snap_ws):
    ws = snap_ws
    assert views.model_name_problem(ws, "fresh") is None
    assert "invalid" in views.model_name_problem(ws, "../up")
    assert "exists already" in views.model_name_problem(ws, "tiny-random")
    (ws.root / "models" / "leftover").mkdir()
    assert views.model_name_problem(ws, "leftover") is None  # an empty folder is no one's
    (ws.root / "models" / "leftover" / "x").write_text("")
    assert "exists already" in views.model_name_problem(ws, "leftover")
    job_id = views.start_run(ws, "tiny-random-s1", "s1", "tiny-random", views.default_settings())
    assert f"training job {job_id}" in views.model_name_problem(ws, "tiny-random-s1")
    assert views.suggest_model_name(ws, "tiny-random", "s1") == "tiny-random-s1-2"
    with pytest.raises(ValueError, match="trains a model named"):
        views.start_run(ws, "tiny-random-s1", "s1", "tiny-random", views.default_settings())


def test_a_run_lists_its_snapshot_and_gives_back_its_settings(snap_ws):
    ws = snap_ws
    settings = views.default_settings() | {"method": "lora", "max_steps": 7, "batch_size": 3, "learning_rate": 3e-3,
                                           "warmup_steps": 2}
    job_id = views.start_run(ws, "tuned", "s1", "tiny-random", settings, round=2, threads=1)
    saved = views.run_settings(ws, job_id)
    assert saved == {"base_model": "tiny-random", "snapshot": "s1", "round": 2, "threads": 1, "train": settings}
    [run] = views.training_runs(ws)
    assert (run["id"], run["status"], run["model"], run["snapshot"], run["method"]) == \
        (job_id, "pending", "tuned", "s1", "lora")
    assert run["loss"] is None and not views.any_live([run])
    frame = views.runs_frame([run])
    assert frame.iloc[0][["run", "status", "model", "base", "snapshot", "steps"]].tolist() == \
        [job_id, "pending", "tuned", "tiny-random", "s1", "0 / 7"]
    assert frame.iloc[0]["ETA"] is None or math.isnan(frame.iloc[0]["ETA"])
    assert views.runs_frame([]).columns.tolist()[:3] == ["run", "status", "model"]
    # A map job is no training run, and its settings cannot be reused.
    other = ws.create_job("generate", {"model": "tiny-random", "role": "student", "max_tokens": 4}, limit=2)
    assert [r["id"] for r in views.training_runs(ws)] == [job_id]
    with pytest.raises(ValueError, match="not a training job"):
        views.run_settings(ws, other)


def test_a_bad_setting_writes_no_job(snap_ws):
    with pytest.raises(ValueError, match="learning_rate"):
        views.start_run(snap_ws, "m", "s1", "tiny-random", views.default_settings() | {"learning_rate": 0.0})
    assert views.training_runs(snap_ws) == [] and not any(snap_ws.jobs_dir.iterdir())


def test_lineage_summary_and_config_frame():
    lineage = {"base_model": "tiny-random", "snapshot": "s1", "snapshot_hash": "abc", "method": "lora", "round": 1,
               "job": "train-1", "steps": 3, "first_loss": 9.87654, "final_loss": 9.1, "trained_at": "t",
               "train_config": {"lora_r": 8, "save_total_limit": None}}
    summary = views.lineage_summary(lineage)
    assert summary["base model"] == "tiny-random" and summary["first loss"] == 9.8765
    assert summary["training job"] == "train-1" and summary["merged from"] is None
    frame = views.config_frame(lineage["train_config"])
    assert frame.to_dict("records") == [{"setting": "lora_r", "value": "8"}, {"setting": "save_total_limit",
                                                                                "value": "—"}]
    assert isinstance(views.config_frame(None), pd.DataFrame) and views.config_frame(None).empty


def test_trained_models_skip_builtins_and_models_without_lineage(workspace, tmp_path):
    folder = tmp_path / "plain"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"")
    workspace.add_model(ModelSpec("plain", "hf", path=str(folder)))
    assert views.trained_models(workspace) == []
    jobs.write_json(folder / "lineage.json", {"base_model": "tiny-random", "job": "train-x"})
    assert views.trained_models(workspace) == [{"name": "plain",
                                                "lineage": {"base_model": "tiny-random", "job": "train-x"}}]
    with pytest.raises(ValueError, match="not a LoRA adapter"):
        views.merge_adapter_model(workspace, "plain", "plain-merged")
