"""Stage jobs on a Ray cluster: Ray Data over a job's input shards (DESIGN.md §4, scale-out).

    python -m core.ray_jobs run DIR [--address auto|HOST:PORT|ray://HOST:10001]
                                    [--workers N] [--num-cpus C] [--num-gpus G] [--ship-code]

works through the same job folder as `python -m core.jobs run DIR` (see core/jobs.py), with the
same contract: the same shard ranges of input.parquet, shards/NNNNN.parquet written under a
temporary name and renamed, progress.json, log.txt, pid, and done.json / failed.json /
cancelled.json at the end. Only where the stage's worker runs changes, so the catalog's owner
ingests a Ray job exactly as a local one, and a job may be started by one runner and resumed by
the other: finished shards are skipped by both, so nothing is lost or duplicated.

How it runs:
- This process (the driver) reads the config and the input, lists the shards not finished yet and
  makes a Ray Dataset of them, one row per shard: its index and its input rows (Arrow IPC bytes,
  so every column keeps its exact type).
- `map_batches` with a callable class runs the SAME worker as the local runner
  (`jobs._worker(config)`, contract `worker(ctx, rows) -> pa.Table`) in a fixed pool of Ray
  actors, one shard per call. An actor loads the model once, on its first shard, and keeps it.
- Each finished shard comes back to the driver, which writes it (temporary name, then rename) and
  rewrites progress.json. Workers therefore need no shared filesystem with the driver: the job
  folder lives where the catalog's owner is. They do need winnow's dependencies and the model (a
  path that exists on every node, or a hub id; vLLM workers: see the README).
- A worker's exception comes back as the shard's error: the driver writes failed.json with the
  reason (as the local runner words it) and stops; finished shards stay.
- Killed at any point (SIGKILL of the driver: Ray ends the job's actors with it), the job resumes
  by running again; a shard still in flight is redone whole. A cancel stops the driver after the
  next shard that finishes.

Address: `--address`, else $RAY_ADDRESS (Ray's own variable), else a one-off local Ray instance
on this machine (e.g. one vLLM actor per GPU of one box). A process that is already connected
(ray.init done, as in the tests) is used as it is and left connected.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from core import jobs

# Launch options a caller passes through the environment (core.jobs.launch(..., engine="ray",
# extra_env={...})); the command-line flags override them.
ENV_WORKERS, ENV_NUM_CPUS, ENV_NUM_GPUS, ENV_SHIP_CODE = ("WINNOW_RAY_WORKERS", "WINNOW_RAY_NUM_CPUS",
                                                          "WINNOW_RAY_NUM_GPUS", "WINNOW_RAY_SHIP_CODE")


def launch_env(address: str | None = None, workers: int | None = None, num_cpus: float | None = None,
               num_gpus: float | None = None, ship_code: bool = False) -> dict[str, str]:
    """The environment that carries Ray options to a launched job:
    `jobs.launch(job_dir, extra_env=launch_env(address="auto", num_gpus=1), engine="ray")`."""
    pairs = (("RAY_ADDRESS", address), (ENV_WORKERS, workers), (ENV_NUM_CPUS, num_cpus), (ENV_NUM_GPUS, num_gpus),
             (ENV_SHIP_CODE, "1" if ship_code else None))
    return {key: str(value) for key, value in pairs if value is not None}


def launcher(address: str | None = None, workers: int | None = None, num_cpus: float | None = None,
             num_gpus: float | None = None, ship_code: bool = False) -> Callable[[Path], subprocess.Popen]:
    """A `launch` for rounds and the owner (`rounds.drive(ws, name, launch=ray_jobs.launcher("auto"))`):
    map jobs run on Ray, a runner job (training) is launched as before, on this machine."""
    env = launch_env(address, workers, num_cpus, num_gpus, ship_code)

    def launch(job_dir: Path) -> subprocess.Popen:
        if (jobs.read_json(Path(job_dir) / jobs.CONFIG) or {}).get("runner"):
            return jobs.launch(job_dir)
        return jobs.launch(job_dir, extra_env=env or None, engine="ray")

    return launch


# --------------------------------------------------------------------------------------------
# Inside a Ray actor
# --------------------------------------------------------------------------------------------


def to_ipc(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def from_ipc(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.BufferReader(data)).read_all()


class RemoteContext(jobs.JobContext):
    """The worker's context on a Ray node: the same config and lazily loaded model, but log lines
    are kept and sent back with the shard (the job folder is on the driver's machine). `job_dir`
    is the driver's path, for workers that record the job's name in their rows."""

    def __init__(self, job_dir: Path, config: dict):
        super().__init__(job_dir, config)
        self.lines: list[str] = []

    def log(self, message: str) -> None:
        self.lines.append(message)

    def take_lines(self) -> list[str]:
        lines, self.lines = self.lines, []
        return lines


class ShardWorker:
    """A Ray Data callable class: one instance per actor, so one model load per actor."""

    def __init__(self, job_dir: str, config: dict):
        self.ctx = RemoteContext(Path(job_dir), config)
        self.worker = jobs._worker(config)

    def __call__(self, batch: pa.Table) -> pa.Table:
        out: dict[str, list] = {"shard": [], "output": [], "rows": [], "tokens": [], "log": [], "error": []}
        for index, data in zip(batch["shard"].to_pylist(), batch["input"].to_pylist(), strict=True):
            result, n_rows, tokens, error = None, 0, 0, None
            try:
                rows = from_ipc(data)
                n_rows = rows.num_rows
                table = self.worker(self.ctx, rows)
                if "n_tokens" in table.column_names:
                    tokens = int(pa.compute.sum(table["n_tokens"]).as_py() or 0)
                result = to_ipc(table)
            except Exception as exc:  # sent back as the shard's error: the driver records it and stops
                error = f"{type(exc).__name__}: {exc}"
                self.ctx.log(f"shard {index} failed: {error}\n{traceback.format_exc()}")
            for key, value in (("shard", index), ("output", result), ("rows", n_rows),
                               ("tokens", tokens), ("log", json.dumps(self.ctx.take_lines())), ("error", error)):
                out[key].append(value)
        return pa.table(out, schema=RESULT_SCHEMA)


class ShardFailed(Exception):
    """A worker's exception on a Ray node, already worded "Type: message" there."""


RESULT_SCHEMA = pa.schema([("shard", pa.int64()), ("output", pa.binary()), ("rows", pa.int64()),
                           ("tokens", pa.int64()), ("log", pa.string()), ("error", pa.string())])


# --------------------------------------------------------------------------------------------
# The driver
# --------------------------------------------------------------------------------------------


def _options(address: str | None, workers: int | None, num_cpus: float | None, num_gpus: float | None,
             ship_code: bool | None) -> dict:
    """Flags first, then the environment; every value checked, naming the bad one."""
    env = os.environ

    def number(value, name, cast, minimum):
        if value is None or value == "":
            return None
        try:
            parsed = cast(value)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a number, not {value!r}") from None
        if parsed < minimum:
            raise ValueError(f"{name} must be ≥ {minimum}, not {value!r}")
        return parsed

    return {
        "address": address or env.get("RAY_ADDRESS") or None,
        "workers": number(workers if workers is not None else env.get(ENV_WORKERS), "workers", int, 1),
        "num_cpus": number(num_cpus if num_cpus is not None else env.get(ENV_NUM_CPUS), "num_cpus", float, 0),
        "num_gpus": number(num_gpus if num_gpus is not None else env.get(ENV_NUM_GPUS), "num_gpus", float, 0),
        "ship_code": bool(ship_code) or env.get(ENV_SHIP_CODE, "") not in ("", "0"),
    }


def _pool_size(ray, wanted: int | None, num_cpus: float, num_gpus: float, todo: int) -> int:
    """Actors in the pool: as asked, else as many as the cluster's CPUs (or GPUs) hold; never more
    than shards to do (an idle actor would still load a model)."""
    if wanted is None:
        resources = ray.cluster_resources()
        if num_gpus:
            wanted = int(resources.get("GPU", 0) // num_gpus)
            if wanted < 1:
                raise ValueError(f"num_gpus={num_gpus} per worker, but the cluster has {resources.get('GPU', 0)} GPUs")
        else:
            wanted = int(resources.get("CPU", 1) // max(num_cpus, 1e-9)) if num_cpus else int(resources.get("CPU", 1))
    return max(1, min(wanted, todo))


def _connect(ray, options: dict) -> bool:
    """Connect to the cluster (or start a local one); True when this call connected, so the
    caller disconnects at the end and leaves an outside connection alone."""
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
    runtime_env: dict = {}
    if os.environ.get("PYTHONPATH"):
        # Where the worker's and the model's modules are (core.jobs.launch sets it), ahead of the
        # node's own path (Ray expands ${PYTHONPATH} on the node; a path a node lacks is skipped).
        runtime_env["env_vars"] = {"PYTHONPATH": f"{os.environ['PYTHONPATH']}{os.pathsep}${{PYTHONPATH}}"}
    if options["ship_code"]:  # a cluster without winnow installed: send this checkout's core package
        runtime_env["py_modules"] = [str(Path(__file__).resolve().parent)]
    ray.init(address=options["address"], include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING, runtime_env=runtime_env or None)
    return True


def _write_progress(job_dir: Path, total: int, done: int, done_now: int, tokens: int, started: float) -> None:
    """Same fields as core.jobs.run writes, so the Jobs page and the CLI read a Ray job alike."""
    elapsed = max(time.time() - started, 1e-9)
    remaining = total - done
    jobs.write_json(job_dir / jobs.PROGRESS, {
        "done": done, "total": total, "tokens": tokens, "tokens_per_s": round(tokens / elapsed, 1),
        "items_per_s": round(done_now / elapsed, 3),
        "eta_s": round(remaining / (done_now / elapsed), 1) if done_now else None, "updated": jobs._now(),
        "engine": "ray"})


def run(job_dir: Path, address: str | None = None, workers: int | None = None, num_cpus: float | None = None,
        num_gpus: float | None = None, ship_code: bool | None = None) -> int:
    """Run (or resume) a map job's unfinished shards on Ray. Exit code as core.jobs.run: 0 done or
    cancelled, 1 failed (failed.json says why), 2 no job here."""
    job_dir = Path(job_dir)
    config = jobs.read_json(job_dir / jobs.CONFIG)
    if config is None:
        print(f"{job_dir}: no {jobs.CONFIG}", file=sys.stderr)
        return 2
    jobs.write_json(job_dir / jobs.PID, {"pid": os.getpid(), "started": jobs._now(), "engine": "ray"})
    for marker in (jobs.FAILED, jobs.CANCELLED):
        (job_dir / marker).unlink(missing_ok=True)
    for stale in (job_dir / jobs.SHARDS).glob("*.tmp"):  # a shard cut off by a kill is redone whole
        stale.unlink()
    connected = False
    try:
        if config.get("runner"):
            raise ValueError(f"job {job_dir.name} is a runner job ({config['runner']}): it has no shards to spread "
                             "over Ray; launch it with engine='local' (nproc=N for torchrun)")
        options = _options(address, workers, num_cpus, num_gpus, ship_code)
        size, total = config["shard_size"], config["total"]
        todo = [i for i in range(jobs.n_shards(total, size)) if not jobs.shard_path(job_dir, i).exists()]
        done_before = total - sum(min(size, total - i * size) for i in todo)
        jobs.log(job_dir, f"ray run: {len(todo)} of {jobs.n_shards(total, size)} shards to do")
        if not todo:
            jobs.write_json(job_dir / jobs.DONE, {"at": jobs._now(), "total": total})
            return 0
        import ray  # imported here: listing or running local jobs never needs ray

        connected = _connect(ray, options)
        return _run_on_ray(ray, job_dir, config, todo, done_before, options)
    except Exception as exc:  # any failure is recorded with its reason; the job can be resumed
        reason = str(exc) if isinstance(exc, ShardFailed) else f"{type(exc).__name__}: {exc}"
        jobs.write_json(job_dir / jobs.FAILED, {"at": jobs._now(), "error": reason})
        jobs.log(job_dir, f"failed: {reason}\n{traceback.format_exc()}")
        return 1
    finally:
        if connected:
            import ray

            ray.shutdown()


def _run_on_ray(ray, job_dir: Path, config: dict, todo: list[int], done_before: int, options: dict) -> int:
    import ray.data

    logging.getLogger("ray.data").setLevel(logging.WARNING)  # its INFO lines per run would fill the job's log
    size, total = config["shard_size"], config["total"]
    num_cpus = options["num_cpus"] if options["num_cpus"] is not None else (0 if options["num_gpus"] else 1)
    num_gpus = options["num_gpus"] or 0
    pool = _pool_size(ray, options["workers"], num_cpus, num_gpus, len(todo))
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the job's own progress.json is the progress
    table = pq.read_table(job_dir / jobs.INPUT)
    items = [{"shard": i, "input": to_ipc(table.slice(i * size, size))} for i in todo]
    # One block per shard, so the pool hands out shards one by one (a slow shard never holds others back).
    dataset = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        ShardWorker, fn_constructor_kwargs={"job_dir": str(job_dir), "config": config},
        batch_size=1, batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=pool),
        num_cpus=num_cpus, num_gpus=num_gpus or None)
    jobs.log(job_dir, f"ray: {pool} worker(s), {num_cpus} CPU and {num_gpus} GPU each, "
                      f"cluster {ray.cluster_resources().get('CPU', 0):g} CPU / {ray.cluster_resources().get('GPU', 0):g} GPU")
    started, tokens, done_now = time.time(), 0, 0
    for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
        for row in batch.to_pylist():
            index = row["shard"]
            for line in json.loads(row["log"] or "[]"):
                jobs.log(job_dir, f"[shard {index}] {line}")
            if row["error"] is not None:
                raise ShardFailed(row["error"])
            tmp = jobs.shard_path(job_dir, index).with_suffix(".parquet.tmp")
            pq.write_table(from_ipc(row["output"]), tmp)
            os.replace(tmp, jobs.shard_path(job_dir, index))
            done_now += min(size, total - index * size)
            tokens += row["tokens"]
            _write_progress(job_dir, total, done_before + done_now, done_now, tokens, started)
            if (job_dir / jobs.CANCEL).exists():
                jobs.write_json(job_dir / jobs.CANCELLED, {"at": jobs._now(), "done": done_before + done_now})
                jobs.log(job_dir, "cancelled")
                return 0
    missing = [i for i in todo if not jobs.shard_path(job_dir, i).exists()]
    if missing:  # never mark a job done that lacks a shard
        raise RuntimeError(f"Ray returned no result for shard(s) {missing[:10]}")
    jobs.write_json(job_dir / jobs.DONE, {"at": jobs._now(), "total": total})
    jobs.log(job_dir, f"done: {done_now} items this run on Ray, {tokens} tokens in {time.time() - started:.1f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.ray_jobs", description="run a map job's shards on Ray")
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run", help="run (or resume) the job in DIR on a Ray cluster")
    run_parser.add_argument("job_dir", type=Path)
    run_parser.add_argument("--address", help="auto, HOST:PORT or ray://HOST:10001 (default: $RAY_ADDRESS, "
                                              "else a local Ray instance)")
    run_parser.add_argument("--workers", type=int, help=f"actors in the pool (default: ${ENV_WORKERS}, else "
                                                        "what the cluster's CPUs or GPUs hold)")
    run_parser.add_argument("--num-cpus", type=float, help=f"CPUs per worker (default: ${ENV_NUM_CPUS}, else 1; "
                                                           "0 with GPUs)")
    run_parser.add_argument("--num-gpus", type=float, help=f"GPUs per worker (default: ${ENV_NUM_GPUS}, else 0)")
    run_parser.add_argument("--ship-code", action="store_true", default=None,
                            help="send this checkout's core package to the workers (a cluster without winnow)")
    a = parser.parse_args(sys.argv[1:] if argv is None else argv)
    return run(a.job_dir, address=a.address, workers=a.workers, num_cpus=a.num_cpus, num_gpus=a.num_gpus,
               ship_code=a.ship_code)


if __name__ == "__main__":
    sys.exit(main())
