"""DPO as a training objective (core/train/dpo.py) on tiny-random: the loss falls below ln 2 and the
reward accuracy rises; the precomputed reference trains too; a stop request leaves a checkpoint
that the next run resumes from; a training job on a preference snapshot registers a model with
its lineage; bad settings name the key and value."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from core import curate, jobs
from core.train import TrainConfig, dpo, objectives
from core.train import job as train_job
from core.train.sft import checkpoints, resolve_base

LN2 = math.log(2)


def pairs(n: int = 8) -> list[dict]:
    """Pairs a model can learn to tell apart: a short on-topic answer vs. a long off-topic one."""
    return [{"prompt": [{"role": "user", "content": f"Say the number {i}."}],
             "chosen": [{"role": "assistant", "content": f"The number is {i}."}],
             "rejected": [{"role": "assistant", "content": "No. I will talk about the weather instead, at length."}]}
            for i in range(n)]


def config(**kw) -> TrainConfig:
    return TrainConfig(**({"base_model": "tiny-random", "max_steps": 8, "batch_size": 4, "learning_rate": 1e-3,
                           "max_seq_len": 96, "logging_steps": 1, "dtype": "float32"} | kw))


def weights(folder) -> dict[str, torch.Tensor]:
    return load_file(str(next(folder.glob("*.safetensors"))))


def test_objective_settings_are_checked():
    assert objectives.parse({"kind": "dpo"}) == {"kind": "dpo", "beta": 0.1, "loss_type": "sigmoid",
                                                 "precompute_ref_log_probs": False, "max_prompt_length": None}
    for bad, key in [({"beta": 0}, "beta"), ({"beta": "high"}, "beta"), ({"loss_type": "kto"}, "loss_type"),
                     ({"precompute_ref_log_probs": "yes"}, "precompute_ref_log_probs"),
                     ({"max_prompt_length": 0}, "max_prompt_length"), ({"gamma": 1}, "gamma")]:
        with pytest.raises(ValueError, match=key):
            objectives.parse({"kind": "dpo"} | bad)


def test_preference_rows_refuse_an_sft_file(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "sft.parquet"
    pq.write_table(pa.table({"instruction": ["a"], "response": ["b"]}), path)
    with pytest.raises(ValueError, match="not a preference snapshot.*chosen"):
        dpo.preference_rows(path)


@pytest.mark.slow
def test_dpo_lowers_the_loss_and_raises_reward_accuracy(tmp_path):
    records = []
    result = dpo.train_dpo(config(), dpo.parse_objective({"kind": "dpo"}), pairs(), tmp_path / "out",
                           progress=lambda **r: records.append(r), threads=1)
    assert result.model_dir == tmp_path / "out" / "model" and not result.stopped
    assert [r["step"] for r in records] == list(range(1, 9))
    assert records[0]["loss"] == pytest.approx(LN2, abs=1e-3)  # policy = reference at the first step
    assert records[-1]["loss"] < LN2 - 0.1
    assert records[0]["rewards_accuracies"] == 0.0 and records[-1]["rewards_accuracies"] > 0.5
    assert records[-1]["rewards_margins"] > 0
    assert {"tokens", "tokens_per_s", "eta_s", "lr", "grad_norm", "epoch", "elapsed_s"} <= set(records[-1])
    before, after = weights(resolve_base("tiny-random")), weights(result.model_dir)
    assert max((after[k] - before[k]).abs().max().item() for k in after if k in before) > 1e-4
    assert (result.model_dir / "tokenizer.json").is_file() and (result.model_dir / "dpo_config.json").is_file()
    assert [p.name for p in checkpoints(tmp_path / "out")] == ["checkpoint-8"]


@pytest.mark.slow
def test_precomputed_reference_and_lora(tmp_path):
    objective = dpo.parse_objective({"kind": "dpo", "precompute_ref_log_probs": True, "beta": 0.2})
    records = []
    dpo.train_dpo(config(), objective, pairs(), tmp_path / "full", progress=lambda **r: records.append(r), threads=1)
    assert records[-1]["loss"] < LN2 - 0.1 and records[-1]["rewards_accuracies"] > 0.5
    lora = []
    result = dpo.train_dpo(config(method="lora", learning_rate=5e-3, lora_r=4), dpo.parse_objective({"kind": "dpo"}),
                           pairs(), tmp_path / "lora", progress=lambda **r: lora.append(r), threads=1)
    assert (result.model_dir / "adapter_config.json").is_file()  # an adapter, not the whole model
    assert lora[-1]["loss"] < lora[0]["loss"]


@pytest.mark.slow
def test_a_stop_leaves_a_checkpoint_the_next_run_resumes(tmp_path):
    out, asked = tmp_path / "out", []
    objective = dpo.parse_objective({"kind": "dpo"})

    def stop_after_three() -> bool:  # asked once after every step
        asked.append(1)
        return len(asked) >= 3

    first = dpo.train_dpo(config(), objective, pairs(), out, should_stop=stop_after_three, threads=1)
    assert first.stopped and first.model_dir is None and first.step == 3
    assert [p.name for p in checkpoints(out)] == ["checkpoint-3"]
    assert (out / "checkpoint-3" / "train_config.json").is_file() and not (out / "model").exists()
    with pytest.raises(ValueError, match="beta"):  # a resume must compute what the first run did
        dpo.train_dpo(config(), objective | {"beta": 0.5}, pairs(), out, threads=1)
    rest = []
    second = dpo.train_dpo(config(logging_steps=1), objective, pairs(), out, progress=lambda **r: rest.append(r),
                           threads=1)
    assert second.resumed_from == out / "checkpoint-3" and not second.stopped
    assert [r["step"] for r in rest] == [4, 5, 6, 7, 8] and second.model_dir.is_dir()


@pytest.mark.slow
def test_a_dpo_training_job_registers_a_model(workspace, tmp_path):
    rows = [{"prompt": f"Say the number {i}.", "chosen": f"The number is {i}.",
             "rejected": "No. I will talk about the weather instead, at length."} for i in range(8)]
    (tmp_path / "prefs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    workspace.import_paths([tmp_path / "prefs.jsonl"], "prefs")
    snap = curate.create_snapshot(workspace, {"kind": "preference"}, "prefs-1", embed=lambda t: None)
    assert snap.n_members == 8
    settings = {"max_steps": 6, "batch_size": 4, "learning_rate": 1e-3, "max_seq_len": 96, "logging_steps": 1,
                "dtype": "float32"}
    with pytest.raises(ValueError, match="sft snapshot"):  # an sft job does not take pairs
        workspace.create_training_job("wrong", "prefs-1", settings, base_model="tiny-random")
    job_id = workspace.create_training_job("dpo-1", "prefs-1", settings, base_model="tiny-random",
                                           objective={"kind": "dpo", "beta": 0.1}, threads=1)
    assert jobs.run(workspace.job_dir(job_id)) == 0, workspace.job_log(job_id)
    history = train_job.metrics(workspace.job_dir(job_id))
    assert len(history) == 6 and history[-1]["loss"] < history[0]["loss"]
    assert "rewards_accuracies" in history[-1]
    workspace.ingest_job(job_id)
    lineage = workspace.model_lineage("dpo-1")
    assert lineage["objective"]["kind"] == "dpo" and lineage["snapshot"] == "prefs-1"
    assert workspace.model("dpo-1").backend == "hf"
