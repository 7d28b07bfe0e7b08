"""Stage jobs on Ray Data (core/ray_jobs.py) on a real local Ray cluster of 2 CPUs: the same shards
as the local runner, killed and resumed by either runner, ingested by the catalog's owner as today.

One Ray instance for the module (starting one costs 10-30 s here); jobs launched as subprocesses
join it through RAY_ADDRESS, as they would join a real cluster."""

from __future__ import annotations

import json
import logging
import os
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core import jobs, ray_jobs, synthetic
from core.selection import ExploreFilter
from core.workspace import Workspace

ray = pytest.importorskip("ray")

TEACHER = {"name": "teacher", "backend": "python", "path": "core.synthetic:addition_teacher",
           "extra": {"options": {"error_rate": 0.7, "seed": 5}}}
EXACT = {"name": "exact", "backend": "python", "path": "core.synthetic:addition_judge"}
WORKERS = 2


@pytest.fixture(scope="module")
def cluster():
    """A local Ray of 2 CPUs (a pool of 2 one-CPU actors); its address for job subprocesses."""
    os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
    ray.init(num_cpus=WORKERS, include_dashboard=False, log_to_driver=False, object_store_memory=200 * 2**20,
             logging_level=logging.WARNING)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture
def addition_ws(tmp_path):
    files = synthetic.write_prompt_files(tmp_path / "files", "addition", n_train=0, n_heldout=40, seed=5)
    ws = Workspace(tmp_path / "ws")
    ws.import_paths([files.heldout], "addition")
    ws.add_model(TEACHER)
    ws.add_model(EXACT)
    yield ws
    ws.close()


def shard_tables(job_dir) -> dict[str, list[dict]]:
    return {path.name: pq.read_table(path).to_pylist() for path in jobs.finished_shards(job_dir)}


def loads_in_log(job_dir) -> int:
    return (job_dir / jobs.LOG).read_text().count("loading model")


def run_both(ws, stage: str, params: dict, shard_size: int = 4) -> tuple:
    """The same job twice: once by the local runner, once on Ray; both folders."""
    local = ws.job_dir(ws.create_job(stage, params, shard_size=shard_size))
    on_ray = ws.job_dir(ws.create_job(stage, params, shard_size=shard_size))
    assert jobs.run(local) == 0, (local / jobs.LOG).read_text()
    assert ray_jobs.run(on_ray) == 0, (on_ray / jobs.LOG).read_text()
    return local, on_ray


# -- without a cluster -----------------------------------------------------------------------


def test_launch_refuses_an_unknown_engine_and_ray_refuses_a_runner_job(tmp_path):
    job_dir = jobs.create(tmp_path / "job", "generate", pa.table({"x": [1]}), {"model": {"name": "m"}})
    with pytest.raises(ValueError, match="engine must be one of local, ray, not 'spark'"):
        jobs.launch(job_dir, engine="spark")
    assert not (job_dir / jobs.PID).exists(), "nothing started"
    train = tmp_path / "train"
    train.mkdir()
    jobs.write_json(train / jobs.CONFIG, {"kind": "train", "runner": "core.train.job:run", "model": {"name": "m"}})
    assert ray_jobs.run(train) == 1
    assert "runner job" in json.loads((train / jobs.FAILED).read_text())["error"]


@pytest.mark.parametrize(("flags", "message"), [
    ({"workers": 0}, "workers must be ≥ 1, not 0"),
    ({"num_gpus": "x"}, "num_gpus must be a number, not 'x'"),
    ({"num_cpus": -1}, "num_cpus must be ≥ 0, not -1"),
])
def test_bad_ray_options_fail_the_job_naming_the_value(tmp_path, flags, message):
    job_dir = jobs.create(tmp_path / "job", "generate", pa.table({"x": [1]}), {"model": {"name": "m"}})
    assert ray_jobs.run(job_dir, **flags) == 1
    assert message in json.loads((job_dir / jobs.FAILED).read_text())["error"]
    assert not jobs.finished_shards(job_dir)


def test_a_job_whose_shards_are_all_finished_is_done_without_ray(tmp_path, monkeypatch):
    job_dir = jobs.create(tmp_path / "job", "generate", pa.table({"x": [1, 2]}), {"model": {"name": "m"}}, shard_size=2)
    pq.write_table(pa.table({"x": [1, 2]}), jobs.shard_path(job_dir, 0))
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")  # nothing listens there: connecting would fail
    assert ray_jobs.run(job_dir) == 0 and jobs.status(job_dir) == "done"


def test_the_launcher_sends_map_jobs_to_ray_and_training_jobs_to_this_machine(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(jobs, "launch", lambda job_dir, extra_env=None, nproc=1, engine="local":
                        calls.append((job_dir.name, engine, extra_env)))
    shards = jobs.create(tmp_path / "map", "generate", pa.table({"x": [1]}), {"model": {"name": "m"}})
    train = tmp_path / "train"
    train.mkdir()
    jobs.write_json(train / jobs.CONFIG, {"kind": "train", "runner": "core.train.job:run"})
    launch = ray_jobs.launcher("ray://head:10001", workers=4, num_gpus=1)
    launch(shards)
    launch(train)
    env = {"RAY_ADDRESS": "ray://head:10001", ray_jobs.ENV_WORKERS: "4", ray_jobs.ENV_NUM_GPUS: "1"}
    assert calls == [("map", "ray", env), ("train", "local", None)]


# -- on the local cluster --------------------------------------------------------------------


@pytest.mark.slow
def test_generate_and_judge_on_ray_equal_the_local_runs_and_ingest_alike(cluster, addition_ws):
    ws = addition_ws
    local, on_ray = run_both(ws, "generate", {"model": "teacher", "role": "teacher", "temperature": 0.0,
                                              "max_tokens": 8})
    assert shard_tables(on_ray) == shard_tables(local) and len(shard_tables(on_ray)) == 10
    assert (on_ray / jobs.DONE).exists() and not list((on_ray / jobs.SHARDS).glob("*.tmp"))
    progress = json.loads((on_ray / jobs.PROGRESS).read_text())
    assert progress["done"] == progress["total"] == 40 and progress["tokens"] > 0 and progress["engine"] == "ray"
    # One model load per actor, not per shard: 10 shards, at most 2 loads.
    assert 1 <= loads_in_log(on_ray) <= WORKERS < 10
    # The owner ingests the Ray job's shards; the local job's identical rows then add nothing.
    assert ws.ingest_job(on_ray.name)["new"] == 40
    assert ws.ingest_job(local.name)["new_now"] == 0
    assert ws.explore_count(ExploreFilter(roles=["teacher"])) == 40

    local, on_ray = run_both(ws, "judge", {"model": "exact", "rubric": "pointwise_5", "roles": ["teacher"],
                                           "mode": "probability"})
    assert shard_tables(on_ray) == shard_tables(local)
    assert ws.ingest_job(on_ray.name)["new"] == 40
    scores = ws.store._rows("""SELECT j.score, i.text, r.text FROM judgments j JOIN responses r ON r.id = j.target_id
                               JOIN instructions i ON i.id = r.instruction_id""")
    assert len(scores) == 40 and {s for s, _, _ in scores} == {1.0, 5.0}
    assert all(score == (5.0 if synthetic.exact_match(prompt, text) else 1.0) for score, prompt, text in scores)


@pytest.mark.slow
def test_a_cancelled_ray_job_stops_after_a_shard_and_resumes_to_the_same_rows(cluster, addition_ws):
    ws = addition_ws
    params = {"model": "teacher", "role": "teacher", "temperature": 0.0, "max_tokens": 8}
    whole = ws.job_dir(ws.create_job("generate", params, shard_size=2))
    assert jobs.run(whole) == 0
    job_dir = ws.job_dir(ws.create_job("generate", params, shard_size=2))
    (job_dir / jobs.CANCEL).touch()  # asked to stop before it starts: it stops after its first shard
    assert ray_jobs.run(job_dir) == 0
    cancelled = json.loads((job_dir / jobs.CANCELLED).read_text())
    assert 1 <= len(jobs.finished_shards(job_dir)) < 20 and cancelled["done"] < 40
    (job_dir / jobs.CANCEL).unlink()  # as jobs.launch does before a resume
    assert ray_jobs.run(job_dir) == 0 and (job_dir / jobs.DONE).exists()
    assert shard_tables(job_dir) == shard_tables(whole)


@pytest.mark.slow
def test_a_failing_model_on_ray_fails_the_job_with_the_workers_reason(cluster, addition_ws, tmp_path):
    ws = addition_ws
    missing = {"name": "gone", "backend": "hf", "path": str(tmp_path / "no-such-model")}
    job_dir = ws.job_dir(ws.create_job("generate", {"model": missing, "role": "student", "max_tokens": 4},
                                       limit=4, shard_size=2))
    assert ray_jobs.run(job_dir) == 1
    error = json.loads((job_dir / jobs.FAILED).read_text())["error"]  # status says running: this process ran it
    assert error.startswith("FileNotFoundError") and "no folder" in error, error
    assert not jobs.finished_shards(job_dir)
    assert "Traceback" in (job_dir / jobs.LOG).read_text(), "the worker's traceback reaches the job's log"


@pytest.mark.slow
def test_a_ray_job_killed_partway_resumes_by_the_local_runner_losing_and_duplicating_nothing(cluster, tmp_path):
    """A real model in the actors (tiny-random), the driver a subprocess joined to the cluster and
    SIGKILLed mid-run; the owner ingests what exists, the local runner finishes the rest."""
    from conftest import write_jsonl

    ws = Workspace(tmp_path / "ws")
    try:
        # 12 shards: Ray hands results back in bursts, and a quiet machine finished 6 before the kill.
        rows = [{"instruction": f"Write a short note number {i} about tea."} for i in range(24)]
        ws.import_paths([write_jsonl(tmp_path / "prompts.jsonl", rows)], "prompts")
        params = {"model": ws.model("tiny-random").to_dict(), "role": "student", "max_tokens": 8, "seed": 7}
        job_id = ws.create_job("generate", params, shard_size=2)
        job_dir = ws.job_dir(job_id)
        jobs.launch(job_dir, extra_env={"RAY_ADDRESS": cluster}, engine="ray")
        deadline = time.time() + 240
        while len(jobs.finished_shards(job_dir)) < 2 and time.time() < deadline and jobs.status(job_dir) == "running":
            time.sleep(0.05)
        jobs.kill(job_dir)
        time.sleep(0.5)
        killed_at = len(jobs.finished_shards(job_dir))
        assert jobs.status(job_dir) == "stopped", (job_dir / jobs.LOG).read_text()
        assert 2 <= killed_at < 12, "the kill should land mid-run"
        assert ws.ingest_job(job_id)["shards"] == killed_at  # the owner ingests while the job is down

        assert jobs.run(job_dir) == 0, (job_dir / jobs.LOG).read_text()
        assert not list((job_dir / jobs.SHARDS).glob("*.tmp")), "no half-written shard is left"
        ids = [i for rows in shard_tables(job_dir).values() for i in (r["instruction_id"] for r in rows)]
        assert len(ids) == len(set(ids)) == 24, "every instruction answered exactly once across both runners"
        # The same answers as one local run (seeded sampling): ids and texts equal; log-probs agree
        # to float32 noise (an actor's torch runs on 1 thread, the local runner's on 2).
        whole = ws.job_dir(ws.create_job("generate", params, shard_size=2))
        assert jobs.run(whole) == 0
        mixed, local = (sum(shard_tables(d).values(), []) for d in (job_dir, whole))
        assert [(r["id"], r["text"]) for r in mixed] == [(r["id"], r["text"]) for r in local]
        assert all(json.loads(m["meta"])["mean_logprob"] == pytest.approx(json.loads(n["meta"])["mean_logprob"], rel=1e-5)
                   for m, n in zip(mixed, local, strict=True))
        final = ws.ingest_job(job_id)
        assert final["shards"] == 12
        assert ws.explore_count(ExploreFilter(roles=["student"])) == 24 == ws.stats()["responses"]
        # Ray ended the killed driver's actors: the cluster's CPUs are free again.
        deadline = time.time() + 30
        while ray.available_resources().get("CPU", 0) < WORKERS and time.time() < deadline:
            time.sleep(0.5)
        assert ray.available_resources().get("CPU", 0) == WORKERS
    finally:
        ws.close()
