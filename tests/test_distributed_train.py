"""Training across processes with FSDP (core.train.sft, `parallel: fsdp`): a job under torchrun
(core.jobs.launch(nproc=2), gloo on CPU) trains tiny-random sharded to the weights of one process
with grad_accum × 2, stops at a checkpoint and resumes from it; checkpoints are whole safetensors
models like an unsharded run's; the same job under `accelerate launch` with the shipped configs
(configs/accelerate/: one machine, and two "machines" on this host) runs and matches. The config
knob is validated, old configs keep their JSON, and a mismatched launch is refused before
anything is written."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from core import jobs
from core.curate import create_snapshot
from core.train import TrainConfig, examples_from_parquet, latest_checkpoint, train
from core.train import job as train_job
from core.train.data import Example

REPO = Path(__file__).resolve().parent.parent
ACCELERATE_CONFIGS = REPO / "configs" / "accelerate"
SPEC = {"kind": "sft", "roles": ["seed"], "system_tags": {"default": "Answer briefly."}}
# FSDP reduces gradients with a reduce-scatter, DDP and one process in another order: float noise.
ATOL = 1e-5


def settings(**kw) -> dict:
    base = dict(base_model="tiny-random", max_steps=3, batch_size=3, learning_rate=3e-3, max_seq_len=128,
                logging_steps=1, dtype="float32", parallel="fsdp")
    return base | kw


@pytest.fixture
def snap(seeded_workspace):
    return create_snapshot(seeded_workspace, SPEC, "s1")


def weights_of(folder) -> dict[str, torch.Tensor]:
    return load_file(str(next(Path(folder).glob("*.safetensors"))))


def assert_same_weights(a_dir, b_dir, atol: float = ATOL) -> None:
    a, b = weights_of(a_dir), weights_of(b_dir)
    assert a.keys() == b.keys()  # whole models, the tied lm_head written once as by save_pretrained
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    assert diff <= atol, diff


def assert_trained(model_dir) -> None:
    """The model moved away from its base: equal weights of two runs that trained nothing prove nothing."""
    from core.train.sft import resolve_base

    base, trained = weights_of(resolve_base("tiny-random")), weights_of(model_dir)
    assert max((trained[k] - base[k]).abs().max().item() for k in trained.keys() & base.keys()) > 1e-4


def reference_run(snap, out, **kw):
    """One process, the two processes' micro-batches accumulated: what the sharded run must match."""
    cfg = TrainConfig(**settings(**kw) | {"parallel": "ddp", "grad_accum": 2})
    return train(cfg, examples_from_parquet(snap.parquet_path), out, device="cpu", threads=1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accelerate_launch(job_dir: Path, config: Path, *extra: str) -> subprocess.Popen:
    env = os.environ | {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config), *extra,
               "-m", "core.jobs", "run", str(job_dir)]
    log = open(job_dir / jobs.LOG, "a", encoding="utf-8")  # noqa: SIM115 - closed with the process
    # its own session: a launcher that hangs is killed with the workers torchrun started under it
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True)
    proc.log = log
    return proc


def finish(proc: subprocess.Popen, ws, job_id: str, timeout: float = 240) -> None:
    """Wait for a launcher (torchrun or accelerate, each a session leader) or kill its whole group."""
    try:
        assert proc.wait(timeout=timeout) == 0, ws.job_log(job_id)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        if hasattr(proc, "log"):
            proc.log.close()


# --------------------------------------------------------------------------------------------
# The config knob
# --------------------------------------------------------------------------------------------


def test_parallel_is_validated_and_old_configs_keep_their_json():
    with pytest.raises(ValueError, match="parallel must be one of ddp, fsdp, not 'zero3'"):
        TrainConfig("tiny-random", parallel="zero3")
    ddp = TrainConfig("tiny-random")
    assert ddp.parallel == "ddp" and "parallel" not in ddp.to_dict()  # a pre-FSDP config's exact JSON
    fsdp = TrainConfig("tiny-random", parallel="fsdp")
    assert fsdp.to_dict()["parallel"] == "fsdp" and TrainConfig.from_json(fsdp.to_json()) == fsdp
    assert TrainConfig.from_json(ddp.to_json()) == ddp  # a checkpoint's train_config.json from before
    # an optimizer state laid out per index (ddp) does not load into sharded parameters, nor back
    assert ddp.differences(fsdp) == fsdp.differences(ddp) == ["parallel"]
    assert TrainConfig("tiny-random", parallel="fsdp", logging_steps=5).differences(fsdp) == []


def test_an_fsdp_launch_of_a_ddp_config_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # what `accelerate launch` with an FSDP config sets
    examples = [Example(({"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}))]
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="ACCELERATE_USE_FSDP=true.*parallel 'ddp': set parallel: fsdp"):
        train(TrainConfig("tiny-random", max_steps=1, dtype="float32"), examples, out, device="cpu", threads=1)
    assert not out.exists()


@pytest.mark.slow  # two short runs: ~25 s on 2 busy cores
def test_fsdp_in_one_process_trains_as_unsharded(snap, tmp_path):
    """parallel fsdp with WORLD_SIZE 1 (a laptop run of a cluster config): nothing to shard."""
    examples = examples_from_parquet(snap.parquet_path)
    a = train(TrainConfig(**settings(max_steps=2)), examples, tmp_path / "a", device="cpu", threads=1)
    b = train(TrainConfig(**settings(max_steps=2, parallel="ddp")), examples, tmp_path / "b", device="cpu", threads=1)
    assert_same_weights(a.model_dir, b.model_dir, atol=0.0)
    assert TrainConfig.load(a.model_dir).parallel == "fsdp"


# --------------------------------------------------------------------------------------------
# Two processes
# --------------------------------------------------------------------------------------------


@pytest.mark.slow  # two torchrun launches of 2 processes and a reference run: ~2.5 min on 2 busy cores
def test_fsdp_job_under_torchrun_matches_one_process_stops_and_resumes(seeded_workspace, snap, tmp_path):
    ws = seeded_workspace
    # 6 examples, batches of 3: two micro-batches a step, one per process (or both accumulated in one)
    job_id = ws.create_training_job("fsdp", "s1", settings(save_steps=1))
    job_dir, out = ws.job_dir(job_id), ws.root / "models" / "fsdp"
    proc = jobs.launch(job_dir, nproc=2)
    jobs.cancel(job_dir)  # rank 0 sees it after the first step and tells rank 1: both stop there
    finish(proc, ws, job_id)
    info = jobs.summary(job_dir)
    assert info["status"] == "cancelled" and info["done"] == 1, ws.job_log(job_id)
    first = latest_checkpoint(out)
    assert first.name == "checkpoint-1" and not (out / "model").exists()
    # the checkpoint is a whole model gathered from the shards, loadable like any other
    assert TrainConfig.load(first).parallel == "fsdp"
    optimizer_state = torch.load(first / "optimizer.pt", weights_only=True)
    assert len(optimizer_state["state"]) == len(weights_of(first))  # every parameter's AdamW state

    proc = jobs.launch(job_dir, nproc=2)  # resumes: both processes load checkpoint-1 and shard it
    finish(proc, ws, job_id)
    info = jobs.summary(job_dir)
    assert info["status"] == "done" and info["done"] == info["total"] == 3
    log = ws.job_log(job_id)
    assert "resuming from checkpoint-1" in log and "2 processes" in log
    history = train_job.metrics(job_dir)
    assert [r["step"] for r in history] == [1, 2, 3]

    single = reference_run(snap, tmp_path / "single", save_steps=1)
    assert_same_weights(out / "model", single.model_dir)
    assert_same_weights(out / "checkpoint-1", single.output_dir / "checkpoint-1")
    assert_trained(out / "model")
    assert [r["loss"] for r in history] == pytest.approx([r["loss"] for r in single.history], abs=1e-4)
    ws.ingest_finished_jobs()
    assert ws.model_lineage("fsdp")["world_size"] == 2
    assert ws.model_lineage("fsdp")["train_config"]["parallel"] == "fsdp"


@pytest.mark.slow  # one accelerate launch of 2 processes and a reference run: ~1 min
def test_accelerate_launch_with_the_fsdp_config_runs_the_job_and_matches(seeded_workspace, snap, tmp_path):
    ws = seeded_workspace
    job_id = ws.create_training_job("acc", "s1", settings())
    job_dir = ws.job_dir(job_id)
    finish(accelerate_launch(job_dir, ACCELERATE_CONFIGS / "fsdp_cpu_2proc.yaml"), ws, job_id)
    info = jobs.summary(job_dir)
    assert info["status"] == "done" and info["done"] == 3 and "2 processes" in ws.job_log(job_id)
    assert json.loads((job_dir / train_job.RESULT).read_text())["lineage"]["world_size"] == 2
    assert_same_weights(ws.root / "models" / "acc" / "model", reference_run(snap, tmp_path / "single").model_dir)


@pytest.mark.slow  # two accelerate launchers, one per "machine", on this host: ~1 min
def test_the_multinode_config_runs_as_two_machines_on_one_host(seeded_workspace, snap, tmp_path):
    ws = seeded_workspace
    job_id = ws.create_training_job("nodes", "s1", settings())
    job_dir = ws.job_dir(job_id)
    port = str(free_port())
    launchers = [accelerate_launch(job_dir, ACCELERATE_CONFIGS / "fsdp_multinode.yaml", "--num_processes", "2",
                                   "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1",
                                   "--main_process_port", port)
                 for rank in (0, 1)]
    for proc in launchers:
        finish(proc, ws, job_id)
    info = jobs.summary(job_dir)
    assert info["status"] == "done" and info["done"] == 3, ws.job_log(job_id)
    assert_same_weights(ws.root / "models" / "nodes" / "model", reference_run(snap, tmp_path / "single").model_dir)
