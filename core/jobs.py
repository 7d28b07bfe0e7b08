"""Resumable subprocess jobs (DESIGN.md §4).

A job is a folder; `python -m core.jobs run DIR` works through it:

    runs/<job id>/
      config.json      kind, model spec, parameters, shard size (written once, by the launcher)
      input.parquet    the input snapshot: one row per work item
      shards/NNNNN.parquet   output of input rows [N*size, (N+1)*size), written under a temporary
                       name and renamed, so a shard is either whole or absent
      progress.json    done/total items, tokens, tokens/s, ETA (rewritten atomically)
      log.txt          what happened, appended
      pid              the running process
      done.json | failed.json | cancelled.json   how the last run ended
      cancel           asks a running job to stop after its current shard

The job process never opens the catalog: the catalog's owner ingests finished shards (see
`ingest`) and records each one in `job_shards` in the same transaction as its rows, so a crash
never ingests a shard twice. Killed at any point, a job resumes by running again: finished
shards are skipped, so no item is lost or duplicated.

What a kind does with its rows is declared in the stage registry (core.stages); this module only
knows the contract `worker(ctx, rows: pa.Table) -> pa.Table`.

A job that is one long task rather than a map over rows (a training run, core.train.job) names a
`runner` ("module:function", `runner(job_dir, config) -> exit code`) in its config instead: it has
no input or shards but the same config, progress, log, pid, cancel and ending files. Such a job may
run under `torchrun` (`launch(..., nproc=N)`): every process runs the runner, rank 0 alone writes
the job's files.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

CONFIG, INPUT, SHARDS, PROGRESS, LOG, PID = "config.json", "input.parquet", "shards", "progress.json", "log.txt", "pid"
DONE, FAILED, CANCELLED, CANCEL = "done.json", "failed.json", "cancelled.json", "cancel"
STATUSES = ("pending", "running", "done", "failed", "cancelled", "stopped")


@dataclass
class JobContext:
    """What a worker gets: the job's config, a lazily loaded model, and a way to log."""

    job_dir: Path
    config: dict
    _backend: Any = field(default=None, repr=False)

    @property
    def backend(self):
        if self._backend is None:
            from core.llm.registry import load_backend

            self.log(f"loading model {self.config['model']['name']}")
            self._backend = load_backend(self.config["model"])
        return self._backend

    def log(self, message: str) -> None:
        log(self.job_dir, message)

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()


Worker = Callable[[JobContext, pa.Table], pa.Table]


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_json(path: Path, data: dict) -> None:
    # The temporary name is the writer's own: a launcher and the job it forked (core.warm) may
    # write the pid file at the same moment, and a shared name would lose one rename.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(data, default=str), encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def log(job_dir: Path, message: str) -> None:
    with open(job_dir / LOG, "a", encoding="utf-8") as fh:
        fh.write(f"{_now()} {message}\n")


def shard_path(job_dir: Path, index: int) -> Path:
    return job_dir / SHARDS / f"{index:05d}.parquet"


def finished_shards(job_dir: Path) -> list[Path]:
    return sorted((job_dir / SHARDS).glob("[0-9]*.parquet"))


def n_shards(total: int, shard_size: int) -> int:
    return (total + shard_size - 1) // shard_size


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) still answers kill(0).
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def status(job_dir: Path) -> str:
    if (job_dir / DONE).exists():
        return "done"
    pid = read_json(job_dir / PID) or {}
    if pid_alive(pid.get("pid")):
        return "running"
    if (job_dir / FAILED).exists():
        return "failed"
    if (job_dir / CANCELLED).exists():
        return "cancelled"
    return "stopped" if finished_shards(job_dir) or pid else "pending"


def summary(job_dir: Path) -> dict:
    """Status, progress and ending of one job, for `winnow jobs list` and the Jobs page."""
    config = read_json(job_dir / CONFIG) or {}
    progress = read_json(job_dir / PROGRESS) or {}
    failed = read_json(job_dir / FAILED) or {}
    # A runner job learns its total (e.g. optimizer steps) when it starts: its progress knows it.
    total = progress.get("total") or config.get("total", 0)
    done = min(len(finished_shards(job_dir)) * config.get("shard_size", 1), total)
    return {
        "id": job_dir.name,
        "kind": config.get("kind"),
        "model": (config.get("model") or {}).get("name"),
        "status": status(job_dir),
        "done": progress.get("done", done),
        "total": total,
        "tokens": progress.get("tokens", 0),
        "tokens_per_s": progress.get("tokens_per_s"),
        "items_per_s": progress.get("items_per_s"),
        "eta_s": progress.get("eta_s"),
        "error": failed.get("error"),
        "created": config.get("created"),
        "dir": str(job_dir),
    }


# --------------------------------------------------------------------------------------------
# Creating and launching
# --------------------------------------------------------------------------------------------


def create(job_dir: Path, kind: str, rows: pa.Table, config: dict, shard_size: int = 16) -> Path:
    """Write a new job folder: config and input snapshot. Starts nothing."""
    if rows.num_rows == 0:
        raise ValueError("the job has no input rows; nothing to do")
    if shard_size < 1:
        raise ValueError(f"shard_size must be ≥ 1, not {shard_size}")
    job_dir.mkdir(parents=True, exist_ok=False)
    (job_dir / SHARDS).mkdir()
    pq.write_table(rows, job_dir / INPUT)
    write_json(job_dir / CONFIG, config | {"kind": kind, "shard_size": shard_size, "total": rows.num_rows,
                                          "created": _now()})
    log(job_dir, f"created: {kind}, {rows.num_rows} items in shards of {shard_size}")
    return job_dir


def launch(job_dir: Path, extra_env: dict | None = None, nproc: int = 1, engine: str = "local"):
    """Start (or resume) the job in its own process and session, detached from the caller.
    nproc > 1 (a runner job only): N processes on this machine under torchrun. engine="ray" (a map
    job only): its shards run on a Ray cluster (core.ray_jobs; options in extra_env, e.g. RAY_ADDRESS).
    A local one-process job is forked by the warm server when one is ready (core.warm), else it
    starts cold; either way the handle has Popen's pid, poll, wait and send_signal."""
    runners = {"local": "core.jobs", "ray": "core.ray_jobs"}
    if engine not in runners:
        raise ValueError(f"engine must be one of {', '.join(runners)}, not {engine!r}")
    if status(job_dir) == "running":
        raise RuntimeError(f"job {job_dir.name} is already running")
    if not isinstance(nproc, int) or isinstance(nproc, bool) or nproc < 1:
        raise ValueError(f"nproc must be an integer ≥ 1, not {nproc!r}")
    if nproc > 1 and not (read_json(job_dir / CONFIG) or {}).get("runner"):
        raise ValueError(f"job {job_dir.name} maps over shards; only a runner job (training) runs under torchrun")
    for marker in (FAILED, CANCELLED, CANCEL):
        (job_dir / marker).unlink(missing_ok=True)
    repo = Path(__file__).resolve().parent.parent
    env = os.environ | {"PYTHONPATH": str(repo)} | (extra_env or {})
    if engine == "local" and nproc == 1:  # forked from a process that has torch imported already
        from core import warm

        proc = warm.spawn(job_dir, env)
        if proc is not None:
            write_json(job_dir / PID, {"pid": proc.pid, "started": _now()})
            return proc
    command = [sys.executable, "-m", runners[engine], "run", str(job_dir)]
    if nproc > 1:  # --standalone: a rendezvous on a free local port, so two jobs never collide
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
                   *command[1:]]
    with open(job_dir / LOG, "a", encoding="utf-8") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    # Written by the launcher too, so status is "running" from the first moment.
    write_json(job_dir / PID, {"pid": proc.pid, "started": _now()})
    return proc


def cancel(job_dir: Path) -> None:
    """Ask a running job to stop after its current shard; a stopped job is simply marked."""
    (job_dir / CANCEL).touch()
    if status(job_dir) != "running":
        write_json(job_dir / CANCELLED, {"at": _now()})


def kill(job_dir: Path) -> None:
    """SIGKILL the job's process (tests use it to prove resumption)."""
    pid = (read_json(job_dir / PID) or {}).get("pid")
    if pid_alive(pid):
        os.kill(pid, signal.SIGKILL)


def wait(job_dir: Path, on_progress: Callable[[dict], None] | None = None, poll: float = 0.5,
         timeout: float | None = None) -> dict:
    """Wait until the job is no longer running; report progress while it runs."""
    started = time.time()
    while True:
        info = summary(job_dir)
        if on_progress:
            on_progress(info)
        if info["status"] != "running":
            return info
        if timeout is not None and time.time() - started > timeout:
            raise TimeoutError(f"job {job_dir.name} still running after {timeout:.0f} s")
        time.sleep(poll)


# --------------------------------------------------------------------------------------------
# Running (inside the job process)
# --------------------------------------------------------------------------------------------


def run(job_dir: Path) -> int:
    job_dir = Path(job_dir)
    config = read_json(job_dir / CONFIG)
    if config is None:
        print(f"{job_dir}: no {CONFIG}", file=sys.stderr)
        return 2
    if config.get("runner"):
        return _runner_run(job_dir, config)
    write_json(job_dir / PID, {"pid": os.getpid(), "started": _now()})
    for marker in (FAILED, CANCELLED):
        (job_dir / marker).unlink(missing_ok=True)
    for stale in (job_dir / SHARDS).glob("*.tmp"):  # a shard cut off by a kill is redone whole
        stale.unlink()
    ctx = JobContext(job_dir, config)
    size, total = config["shard_size"], config["total"]
    todo = [i for i in range(n_shards(total, size)) if not shard_path(job_dir, i).exists()]
    log(job_dir, f"run: {len(todo)} of {n_shards(total, size)} shards to do")
    worker = _worker(config)
    started, tokens, done_now = time.time(), 0, 0
    done_before = total - sum(min(size, total - i * size) for i in todo)
    try:
        table = pq.read_table(job_dir / INPUT)
        for index in todo:
            if (job_dir / CANCEL).exists():
                write_json(job_dir / CANCELLED, {"at": _now(), "done": done_before + done_now})
                log(job_dir, "cancelled")
                return 0
            rows = table.slice(index * size, size)
            out = worker(ctx, rows)
            tmp = shard_path(job_dir, index).with_suffix(".parquet.tmp")
            pq.write_table(out, tmp)
            os.replace(tmp, shard_path(job_dir, index))
            done_now += rows.num_rows
            if "n_tokens" in out.column_names:
                tokens += int(pa.compute.sum(out["n_tokens"]).as_py() or 0)
            elapsed = max(time.time() - started, 1e-9)
            remaining = total - done_before - done_now
            write_json(job_dir / PROGRESS, {
                "done": done_before + done_now, "total": total, "tokens": tokens,
                "tokens_per_s": round(tokens / elapsed, 1), "items_per_s": round(done_now / elapsed, 3),
                "eta_s": round(remaining / (done_now / elapsed), 1) if done_now else None, "updated": _now()})
        write_json(job_dir / DONE, {"at": _now(), "total": total})
        log(job_dir, f"done: {done_now} items this run, {tokens} tokens in {time.time() - started:.1f} s")
        return 0
    except Exception as exc:  # any failure is recorded with its reason; the job can be resumed
        reason = f"{type(exc).__name__}: {exc}"
        write_json(job_dir / FAILED, {"at": _now(), "error": reason})
        log(job_dir, f"failed: {reason}\n{traceback.format_exc()}")
        return 1
    finally:
        ctx.close()


def _runner_run(job_dir: Path, config: dict) -> int:
    """A runner job: under torchrun every process runs the runner; rank 0 owns the job's files
    (its pid is the job's, so a kill of it ends the run: torchrun then stops the others)."""
    if os.environ.get("RANK", "0") == "0":
        write_json(job_dir / PID, {"pid": os.getpid(), "started": _now()})
        for marker in (FAILED, CANCELLED):
            (job_dir / marker).unlink(missing_ok=True)
    module, function = config["runner"].split(":")
    return int(getattr(importlib.import_module(module), function)(job_dir, config) or 0)


def _worker(config: dict) -> Worker:
    """The stage's shard function, named in the config ("module:function") so a job process needs
    no registry lookup: a stage declared in a user's own module runs too."""
    name = config.get("worker")
    if not name:
        from core import stages

        name = stages.get(config["kind"]).worker
    module, function = name.split(":")
    return getattr(importlib.import_module(module), function)


def read_shard(path: Path) -> pa.Table:
    return pq.read_table(path)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "run":
        print("usage: python -m core.jobs run JOB_DIR", file=sys.stderr)
        return 2
    return run(Path(args[1]))


if __name__ == "__main__":
    sys.exit(main())
