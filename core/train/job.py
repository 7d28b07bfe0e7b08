"""A training run as a job (DESIGN.md §4): a folder `python -m core.jobs run DIR` works through.

    runs/jobs/<job id>/
      config.json     kind "train", runner, the TrainConfig (`train`), the snapshot (name, Parquet
                      path, content hash, the file's sha256), the output model name and folder,
                      round, base model, and the lineage the model will carry
      progress.json   the latest record: done/total optimizer steps, loss, lr, grad_norm,
                      tokens/s, ETA (the fields core.jobs.summary shows)
      metrics.jsonl   every progress record, one per line (the curves)
      log.txt, pid, cancel, done.json | failed.json | cancelled.json   as for any job
      result.json     written last on success: the model folder and its lineage; the catalog's
                      owner registers the model from it (Workspace.register_trained_model)
    models/<name>/
      checkpoint-<step>/   complete checkpoints (train_config.json beside the weights)
      model/               the final model or LoRA adapter, with lineage.json

The job reads the snapshot's Parquet file, never the catalog, so it runs while the app holds the
DuckDB file. Killed at any point it resumes by running again: training continues from the newest
complete checkpoint (core.train.sft ignores a half-written one), and the records after that
checkpoint are dropped from metrics.jsonl, since the resumed run writes them again. The cancel
file stops it after the current step, at a checkpoint.
Under torchrun every process trains; rank 0 alone writes progress, metrics and checkpoints.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import traceback
from pathlib import Path

from core import jobs
from core.train.config import TrainConfig

KIND = "train"
RUNNER = "core.train.job:run"
METRICS, RESULT, LINEAGE = "metrics.jsonl", "result.json", "lineage.json"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def job_config(train: TrainConfig, *, snapshot: dict, model_spec: dict, output_dir: Path, round: int,
               base_model: str, threads: int | None = None, objective: dict | None = None) -> dict:
    """The config.json of a training job. snapshot: name, parquet_path, content_hash (of a
    snapshot or a ranking set: the objective's data source); model_spec: the spec
    (ModelSpec.to_dict) the trained model is registered with; objective: core.train.objectives'
    validated dict (default sft)."""
    objective = objective or {"kind": "sft"}
    model_name = model_spec["name"]
    parquet = Path(snapshot["parquet_path"])
    snap = {"name": snapshot["name"], "parquet_path": str(parquet), "content_hash": snapshot["content_hash"],
            "sha256": file_sha256(parquet)}
    lineage = {"base_model": base_model, "base_model_path": train.base_model, "snapshot": snap["name"],
               "snapshot_hash": snap["content_hash"], "round": int(round), "method": train.method,
               "objective": objective, "train_config": train.to_dict()}
    return {"runner": RUNNER, "train": train.to_dict(), "objective": objective, "snapshot": snap, "model_name": model_name,
            "model": model_spec, "output_dir": str(output_dir), "round": int(round),
            "base_model": base_model, "threads": threads, "lineage": lineage,
            "total": train.max_steps or 0}


def create(job_dir: Path, config: dict) -> Path:
    """Write a new training job folder (config and log). Starts nothing."""
    job_dir.mkdir(parents=True, exist_ok=False)
    jobs.write_json(job_dir / jobs.CONFIG, config | {"kind": KIND, "created": jobs._now()})
    jobs.log(job_dir, f"created: train {config['model_name']} on snapshot {config['snapshot']['name']}")
    return job_dir


def metrics(job_dir: Path) -> list[dict]:
    """Every progress record of the job, one per step, in step order (the last write of a step wins)."""
    path = Path(job_dir) / METRICS
    by_step: dict[int, dict] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except ValueError:  # a line cut off by a kill
                continue
            by_step[int(record["step"])] = record
    return [by_step[k] for k in sorted(by_step)]


def result(job_dir: Path) -> dict | None:
    return jobs.read_json(Path(job_dir) / RESULT)


def _trim_metrics(job_dir: Path, up_to_step: int) -> None:
    """Keep the records up to the checkpoint a resumed run starts from (it logs the rest again)."""
    kept = [r for r in metrics(job_dir) if r["step"] <= up_to_step]
    tmp = job_dir / f".{METRICS}.tmp"
    tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
    os.replace(tmp, job_dir / METRICS)


def pq_rows(parquet: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(parquet).metadata.num_rows


def _checkpoint_step(folder: Path | None) -> int:
    match = re.search(r"(\d+)$", folder.name) if folder else None
    return int(match.group(1)) if match else 0


def run(job_dir: Path, config: dict) -> int:
    """The job's runner (core.jobs runs it in the job process, in every process under torchrun)."""
    from core.train import latest_checkpoint, objectives

    job_dir = Path(job_dir)
    main = os.environ.get("RANK", "0") == "0"
    out_dir = Path(config["output_dir"])

    def say(message: str) -> None:
        if main:
            jobs.log(job_dir, message)

    if main and (job_dir / jobs.DONE).exists() and (job_dir / RESULT).exists():
        say("already done")
        return 0
    try:
        cfg = TrainConfig.from_dict(config["train"])
        snap = config["snapshot"]
        parquet = Path(snap["parquet_path"])
        if not parquet.is_file():
            raise FileNotFoundError(f"snapshot {snap['name']!r}: its file {parquet} is gone")
        if file_sha256(parquet) != snap["sha256"]:
            raise ValueError(f"snapshot {snap['name']!r}: {parquet} changed since the job was created")
        objective = config.get("objective") or {"kind": "sft"}
        start = latest_checkpoint(out_dir)
        if main:
            _trim_metrics(job_dir, _checkpoint_step(start))
        say(f"train ({objective['kind']}): {pq_rows(parquet)} rows, {cfg.method}, "
            + (f"resuming from {start.name}" if start else "from the start")
            + (f", {os.environ['WORLD_SIZE']} processes" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else ""))

        def progress(**record) -> None:  # train() calls it on the main process only
            with open(job_dir / METRICS, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")
            jobs.write_json(job_dir / jobs.PROGRESS, {
                "done": record["step"], "total": record["total_steps"], "tokens": record["tokens"],
                "tokens_per_s": round(record["tokens_per_s"], 1), "eta_s": round(record["eta_s"], 1),
                "loss": record["loss"], "lr": record["lr"], "grad_norm": record["grad_norm"],
                "epoch": record["epoch"], "unit": "steps", "updated": jobs._now()})

        done = objectives.module(objective["kind"]).train_objective(
            cfg, objective, parquet, out_dir, progress, lambda: (job_dir / jobs.CANCEL).exists(), config.get("threads"))
    except Exception as exc:  # recorded with its reason; running the job again resumes it
        reason = f"{type(exc).__name__}: {exc}"
        if main:
            jobs.write_json(job_dir / jobs.FAILED, {"at": jobs._now(), "error": reason})
        say(f"failed: {reason}\n{traceback.format_exc()}")
        return 1
    if not main:
        return 0
    if done.stopped:
        jobs.write_json(job_dir / jobs.CANCELLED, {"at": jobs._now(), "done": done.step,
                                                   "checkpoint": str(done.checkpoints[-1])})
        say(f"cancelled at step {done.step} of {done.total_steps} (checkpoint-{done.step} saved)")
        return 0
    history = metrics(job_dir)
    lineage = config["lineage"] | {
        "job": job_dir.name, "steps": done.step, "final_loss": history[-1]["loss"] if history else None,
        "first_loss": history[0]["loss"] if history else None, "trained_at": jobs._now(),
        "world_size": int(os.environ.get("WORLD_SIZE", "1"))}
    jobs.write_json(done.model_dir / LINEAGE, lineage)
    jobs.write_json(job_dir / RESULT, {"model_name": config["model_name"], "model_dir": str(done.model_dir),
                                       "method": cfg.method, "objective": objective["kind"], "lineage": lineage})
    jobs.write_json(job_dir / jobs.DONE, {"at": jobs._now(), "total": done.total_steps})
    say(f"done: {done.steps} steps this run, {done.tokens} tokens in {done.train_seconds:.1f} s "
        f"({done.tokens_per_s:.0f} tokens/s); model at {done.model_dir}")
    return 0
