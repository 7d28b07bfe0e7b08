"""AppTest tests for the Train page (app_pages/10_Train.py) and the lineage view of the Models page,
against a real workspace: a tiny alpaca file imported, an sft snapshot made with core.curate, a real
3-step tiny-random training job started from the form and run to the end."""

from __future__ import annotations

import json

import pytest
from conftest import metric, open_page, texts

from core import curate, jobs
from core import train_views as views
from core.train import TrainConfig
from core.train import job as train_job


@pytest.fixture
def snap_ws(app_ws, pairs_file):
    app_ws.import_paths([pairs_file], "small", fmt="alpaca")
    curate.create_snapshot(app_ws, {"kind": "sft", "roles": ["seed"]}, "s1")
    return app_ws


def errors(at) -> list[str]:
    return [e.value.replace("\\", "") for e in at.error]


def button(at, key: str):
    return next(b for b in at.button if b.key == key)


def set_form(at, **values) -> None:
    """Set the form's widgets by their train_<name> keys, then rerun once."""
    for name, value in values.items():
        at.session_state[f"train_{name}"] = value
    at.run()


def test_an_empty_workspace_says_what_to_do(app_ws):
    at = open_page("10_Train.py")
    assert not at.exception
    [info] = at.info
    assert "make an sft snapshot on Curate first" in info.value
    [link] = [lk for lk in at.get("page_link") if lk.proto.label == "Curate a snapshot"]
    assert link.proto.page == "Curate"
    assert "No training runs yet." in texts(at)
    assert not [b for b in at.button if b.key == "train_start"]


def test_a_prompts_snapshot_is_not_trainable(app_ws, pairs_file):
    app_ws.import_paths([pairs_file], "small", fmt="alpaca")
    curate.create_snapshot(app_ws, {"kind": "prompts"}, "p1")
    at = open_page("10_Train.py")
    assert "make an sft snapshot on Curate first" in at.info[0].value


def test_the_form_never_starts_on_the_test_model_and_shows_the_snapshot(snap_ws):
    at = open_page("10_Train.py")
    assert not at.exception
    assert at.selectbox(key="train_base").value == "smollm2-135m-instruct"
    assert "tiny-random" in at.selectbox(key="train_base").options[-1]
    snap = curate.snapshot(snap_ws, "s1", page_size=1)
    assert at.selectbox(key="train_snapshot").value == "s1"
    assert any(snap.content_hash in c.value and "6 samples" in c.value for c in at.caption)
    at.selectbox(key="train_base").set_value("tiny-random").run()
    assert at.text_input(key="train_name").placeholder == "tiny-random-s1"
    assert any(c.value == "The model will be registered as tiny-random-s1." for c in at.caption)


def test_a_bad_value_shows_the_error_and_writes_no_job(snap_ws):
    at = open_page("10_Train.py")
    at.selectbox(key="train_base").set_value("tiny-random").run()
    set_form(at, learning_rate=0.0)
    assert not at.exception
    assert any("learning_rate must be a number in (0, 1), not 0.0" in e for e in errors(at)), errors(at)
    assert button(at, "train_start").disabled  # (start_run checks again: test_train_views)
    assert not any(snap_ws.jobs_dir.iterdir())
    set_form(at, learning_rate=1e-3, warmup_steps=5, warmup_ratio=0.1)
    assert any("not both" in e for e in errors(at))
    set_form(at, warmup_ratio=0.0, name="tiny-random")
    assert any("a model named 'tiny-random' exists already" in e for e in errors(at))
    assert button(at, "train_start").disabled and not any(snap_ws.jobs_dir.iterdir())


def test_reuse_a_runs_settings_and_a_preset(snap_ws):
    settings = views.default_settings() | {"method": "lora", "max_steps": 7, "batch_size": 3,
                                           "learning_rate": 3e-3, "lora_r": 4}
    job_id = views.start_run(snap_ws, "earlier", "s1", "tiny-random", settings, threads=1)
    at = open_page("10_Train.py")
    assert at.selectbox(key="train_selected").value == job_id  # the runs list reads the job folders
    assert metric(at, "Status") == "pending"
    button(at, "train_reuse").click().run()
    assert not at.exception
    assert at.selectbox(key="train_base").value == "tiny-random"
    assert at.radio(key="train_method").value == "lora" and at.radio(key="train_length").value == "steps"
    assert at.number_input(key="train_max_steps").value == 7 and at.number_input(key="train_lora_r").value == 4
    assert at.number_input(key="train_learning_rate").value == 3e-3
    assert at.number_input(key="train_threads").value == 1

    at.text_input(key="train_preset_name").set_value("quick-lora").run()
    button(at, "train_preset_save").click().run()
    assert views.load_preset(snap_ws, "quick-lora") == {"train": settings, "threads": 1}
    set_form(at, lora_r=32, length="epochs")
    at.selectbox(key="train_preset_pick").set_value("quick-lora").run()
    button(at, "train_preset_load").click().run()
    assert at.number_input(key="train_lora_r").value == 4 and at.radio(key="train_length").value == "steps"
    at.text_input(key="train_preset_name").set_value("../bad").run()
    button(at, "train_preset_save").click().run()
    assert any("preset name '../bad' is invalid" in e for e in errors(at))


@pytest.mark.slow  # a real training job process (~13 s on the shared 2-core CPU) and a merge
def test_a_run_from_the_form_trains_shows_its_curves_and_the_models_lineage(snap_ws):
    ws = snap_ws
    at = open_page("10_Train.py")
    at.selectbox(key="train_base").set_value("tiny-random").run()
    set_form(at, method="lora", length="steps", max_steps=3, batch_size=2, learning_rate=1e-2, max_seq_len=64,
             lora_r=4, lora_alpha=8, logging_steps=1, threads=1, dtype="float32", name="tuned")
    assert not errors(at)
    button(at, "train_start").click().run()
    assert not at.exception and not errors(at), errors(at)
    [info] = views.training_runs(ws)
    job_dir = ws.job_dir(info["id"])
    config = json.loads((job_dir / jobs.CONFIG).read_text())
    assert config["model_name"] == "tuned" and config["base_model"] == "tiny-random" and config["threads"] == 1
    assert config["snapshot"]["name"] == "s1"
    assert TrainConfig.from_dict(config["train"]) == TrainConfig(
        "tiny-random", method="lora", max_steps=3, batch_size=2, learning_rate=1e-2, max_seq_len=64, lora_r=4,
        lora_alpha=8, logging_steps=1, dtype="float32")

    done = jobs.wait(job_dir, timeout=180)
    assert done["status"] == "done", ws.job_log(info["id"])
    at.run()
    assert not at.exception
    records = train_job.metrics(job_dir)
    assert [r["step"] for r in records] == [1, 2, 3]
    assert at.selectbox(key="train_selected").value == info["id"]
    assert metric(at, "Step") == "3 / 3" and metric(at, "Status") == "done"
    assert metric(at, "Loss") == f"{records[-1]['loss']:,.4f}"
    assert metric(at, "Tokens/s") == f"{records[-1]['tokens_per_s']:,.0f}"
    charts_shown = at.get("plotly_chart")
    assert len(charts_shown) == 1
    figure = json.loads(charts_shown[0].proto.spec)
    loss = next(t for t in figure["data"] if t["name"] == "loss")
    assert loss["x"] == [1, 2, 3] and loss["y"] == [r["loss"] for r in records]
    assert "done: 3 steps this run" in texts(at)

    # The catalog's owner registers the model; then the Models page shows where it came from.
    ws.ingest_finished_jobs()
    at = open_page("4_Models.py")
    assert not at.exception
    assert at.selectbox(key="models_lineage_model").value == "tuned"
    assert metric(at, "Base model") == "tiny-random" and metric(at, "Method") == "lora"
    assert metric(at, "Steps") == "3" and metric(at, "Final loss") == f"{records[-1]['loss']:.4f}"
    assert metric(at, "First loss") == f"{records[0]['loss']:.4f}"
    snap = curate.snapshot(ws, "s1", page_size=1)
    assert f"Snapshot: s1 (content hash {snap.content_hash})" in texts(at)
    [link] = [lk for lk in at.get("page_link") if lk.proto.label.startswith("Open its training run")]
    assert link.proto.page == "Train" and link.proto.query_string == f"job={info['id']}"

    # A LoRA adapter merges into a full model, registered with the same lineage.
    at.text_input(key="models_merge_name").set_value("tuned-full").run()
    button(at, "models_merge").click().run()
    assert not at.exception and not errors(at), errors(at)
    spec = ws.model("tuned-full")
    assert (ws.root / "models" / "tuned-full" / "model" / "config.json").is_file()
    lineage = ws.model_lineage("tuned-full")
    assert lineage["merged_from"] == "tuned" and lineage["job"] == info["id"]
    assert "tuned-full" in views.trainable_models(ws) and spec.backend == "hf"
    assert not views.is_adapter(ws, "tuned-full")
