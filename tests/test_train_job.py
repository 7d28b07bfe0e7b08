"""Training as a job (core.train.job) on tiny-random and a real workspace on disk: a job process
trains from a snapshot's Parquet and streams progress; the catalog's owner registers the model
with its lineage and it generates through the hf backend (a LoRA adapter through peft); SIGKILL
mid-run, then the same job resumes to the weights of an uninterrupted run; the cancel file stops
it at a checkpoint; bad input writes nothing; the same job folder runs under torchrun."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
import torch
from safetensors.torch import load_file

from core import jobs
from core.curate import create_snapshot
from core.llm.base import GenerationParams
from core.llm.registry import load_backend
from core.train import TrainConfig, examples_from_parquet, latest_checkpoint, sft, train
from core.train import job as train_job

SPEC = {"kind": "sft", "roles": ["seed"], "system_tags": {"default": "Answer briefly."}}


def settings(**kw) -> dict:
    base = dict(base_model="tiny-random", max_steps=8, batch_size=3, learning_rate=3e-3, max_seq_len=128,
                logging_steps=1, dtype="float32")
    return base | kw


@pytest.fixture
def snap(seeded_workspace):
    return create_snapshot(seeded_workspace, SPEC, "s1")


def run_job(ws, job_id: str, nproc: int = 1, timeout: float = 120) -> dict:
    proc = jobs.launch(ws.job_dir(job_id), nproc=nproc)
    assert proc.wait(timeout=timeout) == 0, ws.job_log(job_id)
    return jobs.summary(ws.job_dir(job_id))


def weights_of(folder) -> dict[str, torch.Tensor]:
    return load_file(str(next(folder.glob("*.safetensors"))))


def assert_same_weights(a_dir, b_dir, atol: float = 1e-6) -> None:
    a, b = weights_of(a_dir), weights_of(b_dir)
    assert a.keys() == b.keys()
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    assert diff <= atol, diff


def reference_run(snap, out, **kw):
    """The trainer called directly on the same Parquet: what the job must reproduce."""
    return train(TrainConfig(**settings(**kw)), examples_from_parquet(snap.parquet_path), out, device="cpu",
                 threads=1)


def test_job_trains_streams_progress_registers_and_generates(seeded_workspace, snap):
    ws = seeded_workspace
    cfg = settings(method="lora", learning_rate=2e-2, lora_r=8, lora_alpha=16, lora_dropout=0.0)
    job_id = ws.create_training_job("tuned", "s1", cfg, round=1, threads=1)
    job_dir = ws.job_dir(job_id)
    config = json.loads((job_dir / jobs.CONFIG).read_text())
    assert config["kind"] == "train" and config["runner"] == train_job.RUNNER and config["round"] == 1
    assert config["snapshot"] | {"sha256": None} == {"name": "s1", "parquet_path": str(snap.parquet_path),
                                                      "content_hash": snap.content_hash, "sha256": None}
    assert TrainConfig.from_dict(config["train"]) == TrainConfig(**cfg)
    assert jobs.summary(job_dir)["status"] == "pending"

    info = run_job(ws, job_id)
    assert info["status"] == "done" and info["kind"] == "train" and info["model"] == "tuned"
    assert info["done"] == info["total"] == 8 and info["tokens_per_s"] > 0 and info["eta_s"] == 0
    progress = json.loads((job_dir / jobs.PROGRESS).read_text())
    assert {"loss", "lr", "grad_norm", "tokens", "epoch"} <= set(progress)
    history = train_job.metrics(job_dir)
    assert [r["step"] for r in history] == list(range(1, 9))
    assert history[-1]["loss"] < 0.6 * history[0]["loss"], [r["loss"] for r in history]
    out = ws.root / "models" / "tuned"
    assert latest_checkpoint(out).name == "checkpoint-8"
    assert TrainConfig.load(latest_checkpoint(out)) == TrainConfig(**cfg)
    assert (out / "model" / "adapter_config.json").is_file() and not (out / "model" / "config.json").exists()

    # The job process never opened the catalog: the owner (here, this process) registers the model.
    assert ws.store.model_spec("tuned") is None
    listed = next(j for j in ws.jobs() if j["id"] == job_id)
    assert listed["live"] and not listed["registered"]
    ws.ingest_finished_jobs()
    spec = ws.model("tuned")
    assert spec.backend == "hf" and spec.path == str(out / "model")
    listed = next(j for j in ws.jobs() if j["id"] == job_id)
    assert listed["registered"] and not listed["live"]
    assert ws.ingest_job(job_id)["registered"] == "tuned"  # idempotent
    lineage = ws.model_lineage("tuned")
    assert lineage["base_model"] == "tiny-random" and lineage["snapshot"] == "s1"
    assert lineage["snapshot_hash"] == snap.content_hash and lineage["job"] == job_id and lineage["round"] == 1
    assert lineage["train_config"] == TrainConfig(**cfg).to_dict() and lineage["method"] == "lora"
    assert lineage["final_loss"] == history[-1]["loss"]
    assert ws.model_lineage("tiny-random") is None

    # It generates at once through the hf backend: the adapter on its base, through peft.
    conversations = [[{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is 12 * 7?"}]]
    tuned = ws.load_model("tuned")
    base = load_backend("tiny-random")
    merged = load_backend(spec.to_dict() | {"extra": {"merge_lora": True}})
    try:
        [[generation]] = tuned.generate(conversations, GenerationParams(temperature=0, max_tokens=8))
        assert generation.finish_reason in ("stop", "length") and generation.n_tokens > 0
        answer = ["12 * 7 = 84."]
        tuned_lp, base_lp = tuned.score(conversations, answer)[0], base.score(conversations, answer)[0]
        assert tuned_lp.mean_logprob > base_lp.mean_logprob + 1.0, (tuned_lp, base_lp)  # the adapter is on
        assert merged.score(conversations, answer)[0].mean_logprob == pytest.approx(tuned_lp.mean_logprob, abs=1e-4)
    finally:
        for backend in (tuned, base, merged):
            backend.close()

    # A LoRA model is a base like any other (a LoRA round's model is the next round's student):
    # the trainer folds the adapter into its base once, beside it, and trains from that.
    again = ws.create_training_job("tuned-again", "s1", settings(max_steps=2), base_model="tuned", threads=1)
    assert run_job(ws, again)["status"] == "done"
    merged_dir = out / ("model" + sft.MERGED_SUFFIX)
    assert (merged_dir / "config.json").is_file() and not list(out.glob("model.merged.tmp-*"))
    assert train_job.metrics(ws.job_dir(again))[0]["loss"] < history[0]["loss"]  # it starts where tuned ended
    ws.ingest_finished_jobs()
    assert ws.model_lineage("tuned-again")["base_model"] == "tuned"


@pytest.mark.slow  # two job processes and a reference run: ~25 s on the shared 2-core CPU
def test_killed_job_resumes_to_the_weights_of_an_uninterrupted_run(seeded_workspace, snap, tmp_path):
    ws = seeded_workspace
    cfg = settings(max_steps=24, save_steps=1, save_total_limit=2)
    job_id = ws.create_training_job("resumed", "s1", cfg, threads=1)
    job_dir, out = ws.job_dir(job_id), ws.root / "models" / "resumed"
    proc = jobs.launch(job_dir)
    deadline = time.time() + 90
    while not (out / "checkpoint-1" / "trainer_state.json").exists() and proc.poll() is None:
        assert time.time() < deadline, ws.job_log(job_id)
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    killed_at = int(latest_checkpoint(out).name.split("-")[1])
    assert killed_at < 24 and not (job_dir / jobs.DONE).exists(), "the job finished before the kill"
    assert jobs.status(job_dir) == "stopped"
    # a checkpoint half-written when the kill came is ignored (and cleared) by the resumed run
    half = out / f".tmp-checkpoint-{killed_at + 1}-99999"
    half.mkdir(exist_ok=True)
    (half / "optimizer.pt").write_bytes(b"partial")

    info = run_job(ws, job_id)
    assert info["status"] == "done" and info["done"] == 24
    assert f"resuming from checkpoint-{killed_at}" in ws.job_log(job_id) and not half.exists()
    history = train_job.metrics(job_dir)
    assert [r["step"] for r in history] == list(range(1, 25))  # each step once, across both runs
    lines = (job_dir / train_job.METRICS).read_text().splitlines()
    assert len(lines) == 24  # the records after the checkpoint were dropped, not duplicated

    whole = reference_run(snap, tmp_path / "whole", max_steps=24)
    assert_same_weights(out / "model", whole.model_dir)
    assert [r["loss"] for r in history] == pytest.approx([r["loss"] for r in whole.history], abs=1e-5)
    ws.ingest_finished_jobs()
    assert ws.model_lineage("resumed")["steps"] == 24


def test_cancelled_job_stops_at_a_checkpoint(seeded_workspace, snap):
    ws = seeded_workspace
    job_id = ws.create_training_job("cancelled", "s1", settings(max_steps=50), threads=1)
    job_dir, out = ws.job_dir(job_id), ws.root / "models" / "cancelled"
    proc = jobs.launch(job_dir)
    jobs.cancel(job_dir)  # the job asks after every step: it stops after the first one
    assert proc.wait(timeout=90) == 0, ws.job_log(job_id)
    info = jobs.summary(job_dir)
    assert info["status"] == "cancelled" and info["done"] == 1 and info["total"] == 50
    assert latest_checkpoint(out).name == "checkpoint-1" and not (out / "model").exists()
    assert train_job.result(job_dir) is None
    ws.ingest_finished_jobs()
    assert ws.store.model_spec("cancelled") is None
    with pytest.raises(ValueError, match="has not finished .*cancelled"):
        ws.register_trained_model(job_id)


@pytest.mark.parametrize("call, message", [
    (dict(snapshot="nope"), "no snapshot named 'nope'"),
    (dict(config=settings(learning_rate=5)), r"learning_rate must be a number in \(0, 1\), not 5"),
    (dict(config=settings(warmup_step=3)), "unknown trainer setting.*warmup_step"),
    (dict(name="tiny-random"), "a model named 'tiny-random' exists already"),
    (dict(name="bad name!"), "model name 'bad name!' is invalid"),
    (dict(base_model="no-such-model"), "neither a model of this workspace"),
    (dict(round=-1), "round must be an integer ≥ 0, not -1"),
])
def test_bad_input_is_a_clear_error_with_nothing_written(seeded_workspace, snap, call, message):
    ws = seeded_workspace
    args = dict(name="m", snapshot="s1", config=settings()) | call
    with pytest.raises(ValueError, match=message):
        ws.create_training_job(args.pop("name"), args.pop("snapshot"), args.pop("config"), **args)
    assert list(ws.jobs_dir.iterdir()) == [] and list((ws.root / "models").iterdir()) == []
    assert ws.store.model_spec("m") is None


def test_a_second_job_for_the_same_model_name_is_refused(seeded_workspace, snap):
    ws = seeded_workspace
    first = ws.create_training_job("m", "s1", settings())
    with pytest.raises(ValueError, match=f"training job {first} trains a model named 'm' already"):
        ws.create_training_job("m", "s1", settings())


@pytest.mark.slow
def test_the_job_under_torchrun_matches_one_process_with_grad_accum(seeded_workspace, snap, tmp_path):
    ws = seeded_workspace
    # 6 examples, batches of 3: two micro-batches a step, one per process (or both accumulated in one)
    job_id = ws.create_training_job("ddp", "s1", settings(max_steps=3))
    info = run_job(ws, job_id, nproc=2, timeout=150)
    assert info["status"] == "done" and info["done"] == info["total"] == 3
    assert "2 processes" in ws.job_log(job_id)
    assert [r["step"] for r in train_job.metrics(ws.job_dir(job_id))] == [1, 2, 3]  # rank 0 alone writes
    single = reference_run(snap, tmp_path / "single", max_steps=3, grad_accum=2)
    assert_same_weights(ws.root / "models" / "ddp" / "model", single.model_dir)
    ws.ingest_finished_jobs()
    assert ws.model_lineage("ddp")["world_size"] == 2
