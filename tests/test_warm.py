"""Warm starts (core.warm): a resident process with torch imported forks each local job. Real
servers, real forks, real jobs; each test uses its own runtime folder, so servers never mix."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, write_jsonl

from core import jobs, warm
from core.workspace import Workspace

pytestmark = pytest.mark.slow  # each test starts a server: ~10 s of imports


@pytest.fixture
def runtime(tmp_path, monkeypatch):
    """A private runtime folder and a short idle time, inherited by the servers this test starts."""
    folder = tmp_path / "rt"
    folder.mkdir(mode=0o700)
    monkeypatch.setattr(warm, "_runtime_dir", lambda: folder)
    # tests/ on the path too, for the probe module (warm_probe) the server's children import.
    env = os.environ | {"PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}", "WINNOW_WARM_IDLE_S": "30"}
    yield folder, env
    warm.stop_all()


def ready_server(env: dict) -> Path:
    """Start the server for env (as a first launch does) and wait until its socket answers."""
    path = warm.ensure_server(env)
    log = warm.socket_path(env).with_suffix(".log")
    assert path is not None, log.read_text() if log.exists() else "no server log"
    return path


def probe_job(root: Path, name: str) -> Path:
    job_dir = root / name
    job_dir.mkdir(parents=True)
    return job_dir


def test_a_probe_job_is_forked_into_its_own_session_with_the_callers_env_and_cwd(runtime, tmp_path, monkeypatch):
    folder, env = runtime
    ready_server(env)
    job_dir = probe_job(tmp_path, "probe")
    monkeypatch.chdir(tmp_path)
    proc = warm.spawn(job_dir, env | {"WINNOW_PROBE": "seen"}, module="warm_probe")
    assert isinstance(proc, warm.WarmProcess)
    assert proc.wait(timeout=30) == 0
    facts = json.loads((job_dir / "probe.json").read_text())
    assert facts["pid"] == proc.pid and facts["sid"] == proc.pid  # a session leader of its own
    assert facts["probe"] == "seen" and facts["cwd"] == str(tmp_path)
    assert facts["torch_preloaded"] and facts["threads"] == 1
    assert facts["argv"] == ["warm_probe", "run", str(job_dir.resolve())]
    assert "probe wrote its facts" in (job_dir / "log.txt").read_text()
    # A failing job's handle says so.
    failing = probe_job(tmp_path, "failing")
    proc = warm.spawn(failing, env | {"WINNOW_PROBE_EXIT": "3"}, module="warm_probe")
    assert proc.wait(timeout=30) == 1 and (failing / "probe.json").exists()


def test_a_warm_generate_job_equals_a_cold_one_and_survives_sigkill_and_resume(runtime, tmp_path, monkeypatch):
    monkeypatch.setenv("WINNOW_WARM_IDLE_S", "30")  # the server jobs.launch starts inherits it
    rows = [{"instruction": f"Write note {i} about tea.", "task": "creative_writing"} for i in range(12)]
    prompts = write_jsonl(tmp_path / "prompts.jsonl", rows)
    results, handles = {}, {}
    for name in ("cold", "warm"):
        if name == "warm":
            ready_server(os.environ | {"PYTHONPATH": str(REPO)})
        else:
            monkeypatch.setenv(warm.ENV_SWITCH, "0")
        with Workspace(tmp_path / name) as ws:
            ws.import_paths([prompts], "prompts")
            spec = ws.model("tiny-random").to_dict()
            job_id = ws.create_job("generate", {"model": spec, "role": "student", "max_tokens": 16,
                                                "temperature": 0.0, "seed": 0}, shard_size=2)
            job_dir = ws.job_dir(job_id)
            proc = jobs.launch(job_dir)
            handles[name] = type(proc).__name__
            if name == "warm":  # killed once two shards landed, then resumed warm too
                deadline = time.time() + 60
                while len(jobs.finished_shards(job_dir)) < 2 and proc.poll() is None:
                    assert time.time() < deadline
                    time.sleep(0.01)
                proc.send_signal(signal.SIGKILL)
                assert proc.wait(timeout=30) == -signal.SIGKILL
                assert not jobs.pid_alive(proc.pid)  # reaped by the server, no zombie left
                assert jobs.status(job_dir) == "stopped"
                landed = len(jobs.finished_shards(job_dir))
                proc = jobs.launch(job_dir)
                assert isinstance(proc, warm.WarmProcess)
            assert proc.wait(timeout=120) == 0, ws.job_log(job_id)
            assert jobs.status(job_dir) == "done"
            ws.ingest_job(job_id)
            results[name] = sorted(ws.store.cursor().execute("SELECT text FROM responses WHERE role = 'student'").fetchall())
        monkeypatch.delenv(warm.ENV_SWITCH, raising=False)
    assert handles == {"cold": "Popen", "warm": "WarmProcess"}
    assert 2 <= landed < 6
    assert len(results["warm"]) == 12 and results["warm"] == results["cold"]


def test_the_socket_is_named_by_code_interpreter_and_import_environment(runtime, tmp_path, monkeypatch):
    _, env = runtime
    base = warm.fingerprint(env)
    assert warm.fingerprint(env | {"WINNOW_ANYTHING": "x"}) == base  # set per job, not at import
    assert warm.fingerprint(env | {"HF_HUB_OFFLINE": "1"}) != base
    assert warm.fingerprint(env | {"OMP_NUM_THREADS": "7"}) != base
    # What torch sets in a running process does not split the servers.
    assert warm.fingerprint(env | {"KMP_INIT_AT_FORK": "FALSE", "TORCHINDUCTOR_CACHE_DIR": "/tmp/x"}) == base
    code = tmp_path / "repo" / "core"
    code.mkdir(parents=True)
    (code / "a.py").write_text("x = 1\n")
    monkeypatch.setattr(warm, "REPO", tmp_path / "repo")
    before = warm.fingerprint(env)
    (code / "a.py").write_text("x = 22\n")  # an edit: a new server, never stale code
    assert warm.fingerprint(env) != before


def test_no_server_means_a_cold_start_and_one_server_started_for_the_next(runtime, tmp_path):
    folder, env = runtime
    job_dir = probe_job(tmp_path, "first")
    assert warm.spawn(job_dir, env, module="warm_probe") is None  # nothing answers yet
    assert warm.spawn(job_dir, env, module="warm_probe") is None  # and only one server is starting
    deadline = time.time() + 120
    while not warm.socket_path(env).exists():
        assert time.time() < deadline
        time.sleep(0.1)
    servers = subprocess.run(["pgrep", "-f", f"core.warm serve {folder}"], capture_output=True, text=True).stdout.split()
    assert len(servers) == 1, servers
    proc = warm.spawn(job_dir, env, module="warm_probe")
    assert proc is not None and proc.wait(timeout=30) == 0
    assert warm.spawn(job_dir, env | {warm.ENV_SWITCH: "0"}, module="warm_probe") is None  # switched off


def test_an_idle_server_exits_and_removes_its_socket(runtime):
    folder, env = runtime
    env = env | {"WINNOW_WARM_IDLE_S": "1"}
    path = ready_server(env)
    deadline = time.time() + 60
    while path.exists():
        assert time.time() < deadline, "the idle server never exited"
        time.sleep(0.2)
    assert not list(folder.glob("*.sock"))


def test_stop_all_stops_the_servers(runtime):
    folder, env = runtime
    path = ready_server(env)
    assert warm.stop_all() == 1
    deadline = time.time() + 30
    while path.exists():
        assert time.time() < deadline
        time.sleep(0.1)
    # One still importing (as a test run's last launch can leave) is stopped too, never binds.
    warm._start_server(path, env)
    pid = int(path.with_suffix(".starting").read_text())
    assert warm.stop_all() == 1
    deadline = time.time() + 30
    while jobs.pid_alive(pid):
        assert time.time() < deadline, "the importing server was not stopped"
        time.sleep(0.1)
    assert not path.exists() and not path.with_suffix(".starting").exists()
    assert subprocess.run([sys.executable, "-m", "core.warm", "bogus"], cwd=REPO, capture_output=True).returncode == 2


def test_a_dead_servers_socket_is_replaced_and_a_cold_marker_is_respected(runtime, tmp_path):
    folder, env = runtime
    path = ready_server(env)
    server = int(subprocess.run(["pgrep", "-f", f"core.warm serve {path}"], capture_output=True,
                                text=True).stdout.split()[0])
    os.kill(server, signal.SIGKILL)  # killed: its socket stays, and nobody listens on it
    deadline = time.time() + 30
    while jobs.pid_alive(server):
        assert time.time() < deadline
        time.sleep(0.05)
    job_dir = probe_job(tmp_path, "after")
    assert warm.spawn(job_dir, env, module="warm_probe") is None  # cold this once, a new server started
    # Launches go on cold until the new server answers (under load that may take a few tries).
    deadline, proc = time.time() + 120, None
    while proc is None:
        assert time.time() < deadline, "no new server answered after the old one was killed"
        warm.ensure_server(env)
        proc = warm.spawn(job_dir, env, module="warm_probe")
    assert proc.wait(timeout=30) == 0 and proc.pid != server
    # A server that found CUDA initialised leaves a marker: launches then start cold, none retries.
    path.with_suffix(".cold").write_text("test\n")
    assert warm.spawn(probe_job(tmp_path, "cold"), env, module="warm_probe") is None
    assert not path.with_suffix(".starting").exists()
