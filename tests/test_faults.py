"""Faults survived (issue 15), with real processes and real signals, each bounded in time:

- generation and judge jobs SIGKILLed at seeded random points, resumed each time: every row once,
  the result equal to an uninterrupted run at temperature 0;
- the catalog's owner SIGKILLed mid-import and mid-ingest: the catalog opens and holds exactly
  what was committed (a whole file or nothing, whole shards), and the next ingest completes it;
- a write-ahead log DuckDB cannot replay is moved aside and reported, never a crash loop;
- owner failure modes: a stale owner file (dead or reused pid), an owner dying mid-request, a
  second launch of a running job.
(The round driver killed mid-round is tests/test_rounds.py; training resumed after SIGKILL is
tests/test_train_job.py.)"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, write_jsonl

from core import jobs, owner, synthetic
from core.selection import ExploreFilter
from core.workspace import Workspace

pytestmark = pytest.mark.slow  # real subprocesses: about two minutes in all


def child(code: str, root: Path) -> subprocess.Popen:
    """A Python process working on the workspace; it prints READY when it has the catalog."""
    return subprocess.Popen([sys.executable, "-c", code, str(root)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=os.environ | {"PYTHONPATH": str(REPO)})


def wait_ready(proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = proc.stdout.readline()
        if line.strip() == "READY":
            return
        if not line and proc.poll() is not None:
            raise AssertionError(f"the child ended before READY: {proc.stdout.read()}")
    raise AssertionError("the child never got ready")


def sigkill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


# -- jobs killed at seeded random points --------------------------------------------------------


def prompts_workspace(root: Path, n: int = 40) -> Workspace:
    ws = Workspace(root)
    rows = [{"instruction": f"Write note {i} about tea.", "task": "creative_writing"} for i in range(n)]
    ws.import_paths([write_jsonl(root.parent / f"{root.name}-prompts.jsonl", rows)], "prompts")
    return ws


def kill_at_random_points(ws: Workspace, job_id: str, rng: random.Random, kills: int, total_shards: int) -> list[int]:
    """Launch, SIGKILL once a seeded random number of shards has landed, ingest, relaunch; `kills`
    times. Returns the shard counts at each kill."""
    job_dir, at = ws.job_dir(job_id), []
    for _ in range(kills):
        target = min(total_shards - 1, len(jobs.finished_shards(job_dir)) + rng.randint(1, 3))
        proc = jobs.launch(job_dir)
        deadline = time.time() + 120
        while len(jobs.finished_shards(job_dir)) < target and proc.poll() is None:
            assert time.time() < deadline, ws.job_log(job_id)
            time.sleep(0.01)
        time.sleep(rng.random() * 0.05)  # somewhere inside the next shard
        sigkill(proc)
        at.append(len(jobs.finished_shards(job_dir)))
        ws.ingest_job(job_id)  # the owner ingests what landed while the job ran
    proc = jobs.launch(job_dir)
    assert jobs.wait(job_dir, timeout=180)["status"] == "done", ws.job_log(job_id)
    proc.wait(timeout=30)
    ws.ingest_job(job_id)
    return at


def answers(ws: Workspace, role: str) -> dict[str, list[str]]:
    page = ws.explore_page(ExploreFilter(roles=[role]), page_size=500)
    out = {}
    for iid in page["id"]:
        sample = ws.sample(iid)
        out[sample["instruction"]["text"]] = sorted(r["text"] for r in sample["responses"] if r["role"] == role)
    return out


def verdicts(ws: Workspace) -> dict[str, float]:
    rows = ws.store.cursor().execute(
        "SELECT r.text, j.score FROM judgments j JOIN responses r ON r.id = j.target_id").fetchall()
    return {text: round(score, 6) for text, score in rows}


def test_generation_and_judge_jobs_killed_at_random_points_equal_an_uninterrupted_run(tmp_path):
    rng = random.Random(0)
    params = {"role": "student", "max_tokens": 24, "temperature": 0.0, "seed": 0}
    judge = {"rubric": "pointwise_5", "mode": "probability", "roles": ["student"]}
    runs = {}
    for name, kills in (("clean", 0), ("killed", 3)):
        ws = prompts_workspace(tmp_path / name, n=24)
        spec = ws.model("tiny-random").to_dict()
        gen = ws.create_job("generate", params | {"model": spec}, shard_size=2)
        killed = kill_at_random_points(ws, gen, rng, kills, total_shards=12)
        rated = ws.create_job("judge", judge | {"model": spec}, shard_size=2)
        killed += kill_at_random_points(ws, rated, rng, kills, total_shards=12)
        assert len(killed) == 2 * kills and all(0 <= k < 12 for k in killed), killed
        runs[name] = (answers(ws, "student"), verdicts(ws), ws.stats())
        ws.close()
    clean, killed = runs["clean"], runs["killed"]
    assert len(clean[0]) == 24 and all(len(v) == 1 for v in killed[0].values())  # every prompt answered once
    assert killed[0] == clean[0]
    assert len(killed[1]) == len(clean[1]) and killed[1] == clean[1]  # every answer judged once, same scores
    assert killed[2]["responses"] == clean[2]["responses"] == 24
    assert killed[2]["judgments"] == clean[2]["judgments"]


# -- the catalog's owner killed mid-write --------------------------------------------------------


IMPORT_CHILD = """
import sys
from core.workspace import Workspace
ws = Workspace(sys.argv[1])
print("READY", flush=True)
ws.import_paths([sys.argv[1] + "/../big.jsonl"], "big")
print("DONE", flush=True)
"""


def test_the_owner_killed_mid_import_leaves_the_whole_file_or_nothing(tmp_path):
    rows = [{"instruction": f"Question {i}: what is {i} + {i}?", "output": str(2 * i)} for i in range(30_000)]
    write_jsonl(tmp_path / "big.jsonl", rows)
    root = tmp_path / "ws"
    Workspace(root).close()
    started = time.perf_counter()
    proc = child(IMPORT_CHILD, root)
    wait_ready(proc)
    proc.wait(timeout=120)
    import_seconds = time.perf_counter() - started
    shutil.rmtree(root)
    Workspace(root).close()
    rng, outcomes = random.Random(7), []
    for _ in range(3):
        proc = child(IMPORT_CHILD, root)
        wait_ready(proc)
        time.sleep(rng.random() * import_seconds)
        sigkill(proc)
        with Workspace(root) as ws:  # opens: no crash loop, no lock left behind
            n = ws.stats()["instructions"]
            assert n in (0, 30_000), n  # one transaction: all of it or none of it
            assert ws.stats()["responses"] == n
            outcomes.append(n)
            assert ws.recovery_message is None
    with Workspace(root) as ws:  # and an import after it works
        ws.import_paths([tmp_path / "big.jsonl"], "big")
        assert ws.stats()["instructions"] == 30_000


INGEST_CHILD = """
import sys
from core.workspace import Workspace
ws = Workspace(sys.argv[1])
print("READY", flush=True)
ws.ingest_job(sys.argv[2] if len(sys.argv) > 2 else open(sys.argv[1] + "/../job_id").read().strip())
print("DONE", flush=True)
"""


def test_the_owner_killed_mid_ingest_keeps_whole_shards_and_the_next_ingest_completes(tmp_path):
    files = synthetic.write_prompt_files(tmp_path / "files", "addition-short", 600, 10, seed=0)
    root = tmp_path / "ws"
    with Workspace(root) as ws:
        ws.import_paths([files.train], "pool")
        ws.add_model({"name": "adder", "backend": "python", "path": "core.synthetic:teacher"})
        job_id = ws.create_job("generate", {"model": "adder", "role": "teacher", "max_tokens": 8}, shard_size=10)
        jobs.launch(ws.job_dir(job_id))
        assert jobs.wait(ws.job_dir(job_id), timeout=120)["status"] == "done"
        n_shards = len(jobs.finished_shards(ws.job_dir(job_id)))
    (tmp_path / "job_id").write_text(job_id)
    rng = random.Random(3)
    for _ in range(3):
        proc = child(INGEST_CHILD, root)
        wait_ready(proc)
        time.sleep(rng.random() * 1.5)
        sigkill(proc)
        with Workspace(root) as ws:
            done = ws.store.ingested_shards(job_id)
            responses = ws.explore_count(ExploreFilter(roles=["teacher"]))
            assert responses == 10 * len(done), (responses, len(done))  # whole shards only
    with Workspace(root) as ws:
        ws.ingest_job(job_id)
        assert len(ws.store.ingested_shards(job_id)) == n_shards == 60
        assert ws.explore_count(ExploreFilter(roles=["teacher"])) == 600 == ws.stats()["responses"]


# -- an unreadable write-ahead log ---------------------------------------------------------------


WRITE_AND_DIE = """
import os, signal, sys
from core.workspace import Workspace
ws = Workspace(sys.argv[1])
ws.store.cursor().execute("SET checkpoint_threshold = '1GB'")
ws.import_paths([sys.argv[1] + "/../late.jsonl"], "late")
print("READY", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_an_unreplayable_write_ahead_log_is_moved_aside_and_reported(tmp_path):
    root = tmp_path / "ws"
    write_jsonl(tmp_path / "early.jsonl", [{"instruction": "early", "output": "1"}])
    write_jsonl(tmp_path / "late.jsonl", [{"instruction": "late", "output": "2"}])
    with Workspace(root) as ws:
        ws.import_paths([tmp_path / "early.jsonl"], "early")
    proc = child(WRITE_AND_DIE, root)
    proc.wait(timeout=60)
    wal = root / "winnow.duckdb.wal"
    assert wal.exists(), "the killed writer left its log"
    stale = wal.read_bytes()
    with Workspace(root) as ws:  # a log that replays is replayed: nothing lost
        assert ws.stats()["instructions"] == 2 and ws.recovery_message is None
        ws.store.checkpoint()  # the file moves on to a new checkpoint
    # Now that log again (a backup restored beside the file, a copy gone wrong): a log of an older
    # checkpoint, which DuckDB refuses to open the file with, every time.
    wal.write_bytes(stale)
    for attempt in range(2):  # and the second open is clean: no crash loop
        with Workspace(root) as ws:
            assert ws.stats()["instructions"] == 2
            if attempt == 0:
                assert "could not be replayed" in ws.recovery_message
                moved = Path(ws.store.wal_recovery["moved_to"])
                assert moved.is_file() and moved.read_bytes() == stale
            else:
                assert ws.recovery_message is None
    log = [json.loads(line) for line in (root / "recovery.log").read_text().splitlines()]
    assert len(log) == 1 and log[0]["moved_to"] == str(moved)
    cli = subprocess.run([sys.executable, "-m", "core.cli", "--workspace", str(root), "stats"], cwd=REPO,
                         capture_output=True, text=True, env=os.environ | {"PYTHONPATH": str(REPO)})
    assert cli.returncode == 0 and "WARNING" not in cli.stderr  # reported once, at the open that recovered


# -- the owner's failure modes -------------------------------------------------------------------


def test_a_stale_owner_file_is_not_taken_for_a_live_owner(tmp_path):
    root = tmp_path / "ws"
    Workspace(root).close()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (root / owner.OWNER_FILE).write_text(json.dumps({"pid": dead.pid, "started": 0}))
    assert owner.owner_pid(root) is None
    # a live pid that is some other process now (a reused pid): its start time gives it away
    (root / owner.OWNER_FILE).write_text(json.dumps({"pid": os.getpid(), "started": 0, "process_start": 1}))
    assert owner.owner_pid(root) is None
    (root / owner.OWNER_FILE).write_text(json.dumps({"pid": os.getpid(), "process_start": owner.process_start(os.getpid())}))
    assert owner.owner_pid(root) == os.getpid()
    (root / owner.OWNER_FILE).write_text("{not json")
    assert owner.owner_pid(root) is None
    # with a stale file, the CLI opens the catalog itself instead of waiting for nobody
    (root / owner.OWNER_FILE).write_text(json.dumps({"pid": dead.pid}))
    cli = subprocess.run([sys.executable, "-m", "core.cli", "--workspace", str(root), "stats"], cwd=REPO,
                         capture_output=True, text=True, timeout=60, env=os.environ | {"PYTHONPATH": str(REPO)})
    assert cli.returncode == 0 and "handing" not in cli.stderr, cli.stderr


SILENT_OWNER = """
import json, os, sys, time
from core.owner import OWNER_FILE, process_start
from core.workspace import Workspace
ws = Workspace(sys.argv[1])  # holds the catalog, claims to own it, and never answers
(ws.root / OWNER_FILE).write_text(json.dumps({"pid": os.getpid(), "process_start": process_start(os.getpid())}))
print("READY", flush=True)
time.sleep(120)
"""


def test_an_owner_dying_mid_request_is_reported_not_waited_on(tmp_path):
    root = tmp_path / "ws"
    Workspace(root).close()
    proc = child(SILENT_OWNER, root)
    wait_ready(proc)
    started = time.time()
    killer = subprocess.Popen([sys.executable, "-c", f"import os, signal, time; time.sleep(1.5); os.kill({proc.pid}, signal.SIGKILL)"])
    with pytest.raises(owner.OwnerGone, match="stopped"):
        owner.submit(root, "stats", {}, timeout=60)
    assert time.time() - started < 20
    killer.wait(timeout=10)
    proc.wait(timeout=10)
    with Workspace(root) as ws:  # the catalog is free again and intact
        assert ws.stats()["instructions"] == 0


def test_a_second_launch_of_a_running_job_is_refused(tmp_path):
    ws = prompts_workspace(tmp_path / "ws")
    job_id = ws.create_job("generate", {"model": ws.model("tiny-random").to_dict(), "role": "student",
                                        "max_tokens": 24}, shard_size=2)
    job_dir = ws.job_dir(job_id)
    proc = jobs.launch(job_dir)
    try:
        with pytest.raises(RuntimeError, match="already running"):
            jobs.launch(job_dir)
    finally:
        jobs.cancel(job_dir)
        proc.wait(timeout=120)
    jobs.launch(job_dir)
    assert jobs.wait(job_dir, timeout=180)["status"] == "done"
    ws.ingest_job(job_id)
    assert ws.explore_count(ExploreFilter(roles=["student"])) == 40
    ws.close()


def test_a_job_whose_server_is_gone_fails_with_the_reason_and_writes_no_shard(tmp_path):
    """No server answering is a failure of the run, not a verdict on each prompt: were every prompt
    recorded as an error, the job would end "done" and ingest would drop the rows for good. (The
    server killed mid-job and back again is tests/test_vllm.py, against a real `vllm serve`.)"""
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    ws = prompts_workspace(tmp_path / "ws", n=4)
    ws.add_model({"name": "served", "backend": "openai", "base_urls": [url], "model": "m",
                  "extra": {"max_retries": 1, "backoff": 0.01}})
    job_id = ws.create_job("generate", {"model": "served", "role": "teacher", "max_tokens": 8}, shard_size=2)
    job_dir = ws.job_dir(job_id)
    jobs.launch(job_dir).wait(timeout=120)
    info = jobs.summary(job_dir)
    assert info["status"] == "failed", ws.job_log(job_id)
    assert info["error"].startswith("BackendUnavailable: model served: no server answered at " + url), info["error"]
    assert jobs.finished_shards(job_dir) == [] and not list((job_dir / jobs.SHARDS).glob("*.tmp"))
    ws.close()
