"""Jobs as real subprocesses on the tiny-random model: generate, judge, kill, resume, cancel, fail."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest
from conftest import REPO, write_jsonl

from core import jobs
from core.store import ExploreFilter
from core.workspace import Workspace

TINY = {"max_tokens": 8, "temperature": 1.0, "seed": 7}


@pytest.fixture
def prompts_ws(tmp_path):
    rows = [{"instruction": f"Write a short note number {i} about tea.", "task": "creative_writing"} for i in range(48)]
    ws = Workspace(tmp_path / "ws")
    ws.import_paths([write_jsonl(tmp_path / "prompts.jsonl", rows)], "prompts")
    yield ws
    ws.close()


def tiny_spec(ws):
    return ws.model("tiny-random").to_dict()


def run_to_done(ws, job_id: str, timeout: float = 120) -> dict:
    """Launch a job, wait for it, check it finished, ingest its shards."""
    jobs.launch(ws.job_dir(job_id))
    info = jobs.wait(ws.job_dir(job_id), timeout=timeout)
    assert info["status"] == "done", (ws.job_dir(job_id) / jobs.LOG).read_text()
    return ws.ingest_job(job_id)


def with_student_answers(tmp_path, params: dict, limit: int) -> Workspace:
    """SMALL_PAIRS (role seed) plus tiny-random answers (role student) to the first `limit`."""
    from conftest import SMALL_PAIRS

    ws = Workspace(tmp_path / "ws")
    ws.import_paths([write_jsonl(tmp_path / "pairs.jsonl", SMALL_PAIRS)], "small")
    run_to_done(ws, ws.create_job("generate", {"model": tiny_spec(ws), "role": "student"} | params, limit=limit, shard_size=limit))
    return ws


def shard_instruction_ids(job_dir) -> list[str]:
    ids = []
    for path in jobs.finished_shards(job_dir):
        ids.extend(pq.read_table(path)["instruction_id"].to_pylist())
    return ids


def test_generate_job_writes_shards_and_ingests_responses_with_lineage(prompts_ws):
    ws = prompts_ws
    job_id = ws.create_job("generate", {"model": tiny_spec(ws), "role": "student"} | TINY | {"n": 2}, ExploreFilter(datasets=["prompts"]), limit=6, round=1, shard_size=2)
    job_dir = ws.job_dir(job_id)
    assert jobs.status(job_dir) == "pending"
    proc = jobs.launch(job_dir)
    info = jobs.wait(job_dir, timeout=120)
    proc.wait(timeout=30)
    assert info["status"] == "done", (job_dir / jobs.LOG).read_text()
    assert len(jobs.finished_shards(job_dir)) == 3
    progress = json.loads((job_dir / jobs.PROGRESS).read_text())
    assert progress["done"] == progress["total"] == 6 and progress["tokens"] > 0

    result = ws.ingest_job(job_id)
    assert result["shards"] == 3 and result["new"] > 0
    page = ws.explore_page(ExploreFilter(roles=["student"]), page_size=50)
    assert len(page) == 6
    sample = ws.sample(page["id"][0])
    student = [r for r in sample["responses"] if r["role"] == "student"]
    assert 1 <= len(student) <= 2  # n=2; identical samples are one response
    assert all(r["model"] == "tiny-random" and r["round"] == 1 and r["method"] == "generate" for r in student)
    assert json.loads(student[0]["params"])["seed"] == 7
    assert json.loads(student[0]["meta"])["finish_reason"] in ("stop", "length")
    # Ingesting again adds nothing: shards are recorded with their rows.
    again = ws.ingest_job(job_id)
    assert again["new_now"] == 0 and ws.stats()["responses"] == result["new"]


def test_sigkill_mid_run_then_resume_loses_and_duplicates_nothing(prompts_ws):
    ws = prompts_ws
    job_id = ws.create_job("generate", {"model": tiny_spec(ws), "role": "student"} | TINY | {"max_tokens": 24}, shard_size=2)
    job_dir = ws.job_dir(job_id)
    jobs.launch(job_dir)
    deadline = time.time() + 120
    while len(jobs.finished_shards(job_dir)) < 3 and time.time() < deadline:
        time.sleep(0.05)
    jobs.kill(job_dir)
    time.sleep(0.5)
    killed_at = len(jobs.finished_shards(job_dir))
    assert jobs.status(job_dir) == "stopped"
    assert 3 <= killed_at < 24, "the kill should land mid-run"
    # Ingest what exists, as the owner would while the job runs.
    first = ws.ingest_job(job_id)
    assert first["shards"] == killed_at

    jobs.launch(job_dir)
    info = jobs.wait(job_dir, timeout=180)
    assert info["status"] == "done", (job_dir / jobs.LOG).read_text()
    assert not list((job_dir / jobs.SHARDS).glob("*.tmp")), "no half-written shard is left"
    ids = shard_instruction_ids(job_dir)
    assert len(ids) == len(set(ids)) == 48, "every instruction answered exactly once across both runs"
    final = ws.ingest_job(job_id)
    assert final["shards"] == 24
    responses = ws.explore_count(ExploreFilter(roles=["student"]))
    assert responses == 48
    assert ws.stats()["responses"] == final["new"]


def test_cancel_stops_cleanly_and_resume_finishes(prompts_ws):
    ws = prompts_ws
    job_id = ws.create_job("generate", {"model": tiny_spec(ws), "role": "student"} | TINY | {"max_tokens": 24}, shard_size=2)
    job_dir = ws.job_dir(job_id)
    jobs.launch(job_dir)
    while not jobs.finished_shards(job_dir):
        time.sleep(0.05)
    jobs.cancel(job_dir)
    info = jobs.wait(job_dir, timeout=60)
    assert info["status"] == "cancelled"
    assert info["done"] < 48
    jobs.launch(job_dir)
    assert jobs.wait(job_dir, timeout=180)["status"] == "done"
    assert len(set(shard_instruction_ids(job_dir))) == 48


def test_a_failing_model_marks_the_job_failed_with_its_reason(prompts_ws, tmp_path):
    ws = prompts_ws
    missing = {"name": "gone", "backend": "hf", "path": str(tmp_path / "no-such-model")}
    job_id = ws.create_job("generate", {"model": missing, "role": "student"} | TINY, limit=4)
    job_dir = ws.job_dir(job_id)
    jobs.launch(job_dir)
    info = jobs.wait(job_dir, timeout=60)
    assert info["status"] == "failed"
    assert "no folder" in info["error"]
    assert not jobs.finished_shards(job_dir)


def test_judge_job_scores_every_target_in_probability_mode_and_keeps_parse_failures_honest(prompts_ws):
    ws = prompts_ws
    run_to_done(ws, ws.create_job("generate", {"model": tiny_spec(ws), "role": "student"} | TINY, limit=4, shard_size=4))
    assert ws.explore_count(ExploreFilter(roles=["student"])) == 4
    judge = {"model": tiny_spec(ws), "rubric": "pointwise_10", "roles": ["student"]}
    # Default mode on the hf backend: probability. Every one of the 4 answers gets a score.
    run_to_done(ws, ws.create_job("judge", judge))
    rows = ws.store._dicts("SELECT * FROM judgments WHERE mode = 'probability'")
    assert len(rows) == 4 and sum(r["score"] is not None for r in rows) == 4
    assert all(1 <= r["score"] <= 10 and 0 < r["confidence"] <= 1 and r["raw"] and r["template_hash"] for r in rows)
    assert all(r["parse_error"] is None and r["call_error"] is None for r in rows)
    # Generate mode: the long pointwise_10 rubric (over 600 tokens under tiny's tokenizer) does not fit
    # tiny-random's 512-token context, so all 4 calls fail: stored as call errors with score NULL
    # (never 0), not as parse failures.
    run_to_done(ws, ws.create_job("judge", judge | {"mode": "generate", "max_tokens": 12}))
    rows = ws.store._dicts("SELECT * FROM judgments WHERE mode = 'generate'")
    assert len(rows) == 4
    assert sum(r["score"] is None for r in rows) == 4 and sum(r["parse_error"] is not None for r in rows) == 0
    assert [r["call_error"].split(":")[0] for r in rows] == ["too_long"] * 4
    assert len({r["template_hash"] for r in ws.store._dicts("SELECT template_hash FROM judgments")}) == 2


def test_cli_generate_and_judge_end_to_end(prompts_ws):
    root = prompts_ws.root
    prompts_ws.close()
    env = os.environ | {"WINNOW_WORKSPACE": str(root)}

    def winnow(*args):
        return subprocess.run([sys.executable, "-m", "core.cli", *args], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=240)

    result = winnow("generate", "--model", "tiny-random", "--role", "student", "--limit", "3", "--max-tokens", "8",
                    "--seed", "1", "--shard-size", "2")
    assert result.returncode == 0, result.stderr
    assert "done 3/3" in result.stderr and "rows from 2 shards" in result.stdout
    result = winnow("judge", "--judge", "tiny-random", "--rubric", "pointwise_5", "--role", "student",
                    "--max-tokens", "8")
    assert result.returncode == 0, result.stderr
    assert "judgments" in result.stdout and "unparsable" in result.stdout
    listed = winnow("jobs", "list")
    assert listed.returncode == 0 and listed.stdout.count("done") == 2
    # A job that is not running can be resumed: nothing left to do, nothing added.
    job_id = listed.stdout.split()[0]
    resumed = winnow("jobs", "resume", job_id)
    assert resumed.returncode == 0 and resumed.stdout.rstrip().endswith(", 0 new"), resumed.stdout


def test_sigterm_then_resume_leaves_only_whole_shards(prompts_ws):
    """SIGTERM (a machine shutting down) may cut a shard write; resume clears it and completes."""
    ws = prompts_ws
    job_id = ws.create_job("generate", {"model": tiny_spec(ws), "role": "student"} | TINY | {"max_tokens": 24}, shard_size=4)
    job_dir = ws.job_dir(job_id)
    proc = jobs.launch(job_dir)
    while not jobs.finished_shards(job_dir):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)
    assert jobs.status(job_dir) == "stopped"
    jobs.launch(job_dir)
    assert jobs.wait(job_dir, timeout=180)["status"] == "done"
    assert not list((job_dir / jobs.SHARDS).glob("*.tmp"))
    ids = shard_instruction_ids(job_dir)
    assert len(ids) == len(set(ids)) == 48


@pytest.mark.slow
def test_smollm2_generates_and_judges_eight_prompts_through_real_jobs(tmp_path):
    """Integration: the built-in SmolLM2-135M-Instruct answers 8 eval prompts and judges them."""
    from core.demo import EVAL_FILE

    ws = Workspace(tmp_path / "ws")
    try:
        ws.import_paths([EVAL_FILE], "eval", fmt="prompts")
        spec = ws.model("smollm2-135m-instruct").to_dict()
        gen = ws.create_job("generate", {"model": spec, "role": "student"} | {"max_tokens": 48, "temperature": 0.7, "top_p": 0.9,
                                                              "seed": 3}, limit=8, shard_size=4)
        jobs.launch(ws.job_dir(gen))
        info = jobs.wait(ws.job_dir(gen), timeout=600)
        assert info["status"] == "done", (ws.job_dir(gen) / jobs.LOG).read_text()
        assert ws.ingest_job(gen)["new"] == 8
        answers = ws.store._dicts("SELECT text FROM responses WHERE role = 'student'")
        assert len(answers) == 8 and all(len(a["text"].split()) >= 3 for a in answers)

        judge = ws.create_job("judge", {"model": spec, "rubric": "pointwise_10", "roles": ["student"]} | {"max_tokens": 96}, shard_size=4)
        jobs.launch(ws.job_dir(judge))
        info = jobs.wait(ws.job_dir(judge), timeout=600)
        assert info["status"] == "done", (ws.job_dir(judge) / jobs.LOG).read_text()
        ws.ingest_job(judge)
        counts = ws.store.judge_verdict_counts("smollm2-135m-instruct", "pointwise_10")
        assert counts["judgments"] == 8 and counts["unparsed"] == 0
        rows = ws.store._dicts("SELECT score, mode, confidence FROM judgments")
        assert sum(r["score"] is not None for r in rows) == 8, "probability mode: every verdict exists"
        assert all(1 <= r["score"] <= 10 and 0 < r["confidence"] <= 1 and r["mode"] == "probability" for r in rows)
    finally:
        ws.close()


def test_pairwise_judge_job_asks_both_orders(tmp_path):
    ws = with_student_answers(tmp_path, TINY, limit=3)
    try:
        with pytest.raises(ValueError, match="two roles"):
            ws.create_job("judge", {"model": tiny_spec(ws), "rubric": "pairwise", "roles": ["seed"]})
        run_to_done(ws, ws.create_job("judge", {"model": tiny_spec(ws), "rubric": "pairwise", "roles": ["seed", "student"]} | {"max_tokens": 8}))
        rows = ws.store._dicts("SELECT target_kind, target_id, kind, score, mode, params FROM judgments")
        assert len(rows) == 6, "3 pairs, each asked as shown and swapped"
        assert sum(r["score"] is not None for r in rows) == 6, "probability mode: every call has a preference"
        orders: dict[str, set] = {}
        for row in rows:
            assert row["target_kind"] == "pair" and row["kind"] == "pairwise" and row["mode"] == "probability"
            assert 0 <= row["score"] <= 1
            orders.setdefault(row["target_id"], set()).add(json.loads(row["params"])["order"])
        assert all(o == {"ab", "ba"} for o in orders.values()) and len(orders) == 3
    finally:
        ws.close()


def test_listwise_judge_job_ranks_every_answer(tmp_path):
    ws = with_student_answers(tmp_path, TINY | {"n": 2}, limit=2)
    try:
        run_to_done(ws, ws.create_job("judge", {"model": tiny_spec(ws), "rubric": "listwise", "roles": ["seed", "student"]} | {"max_tokens": 8}))
        ranked = ws.store._dicts("SELECT target_id, kind, score, mode, parse_error, call_error FROM judgments")
        answers = ws.store._dicts("""SELECT r.id FROM responses r JOIN instructions i ON i.id = r.instruction_id
                                     WHERE i.id IN (SELECT instruction_id FROM responses WHERE role = 'student')""")
        assert {r["target_id"] for r in ranked} == {a["id"] for a in answers}, "one rank row per answer"
        assert all(r["kind"] == "listwise" and r["mode"] == "generate" for r in ranked)  # listwise: generate only
        # tiny-random writes noise, so no ranking parses: every answer's rank is NULL with a parse
        # error (never 0), and none of them is a call error.
        assert len(ranked) == len(answers)
        assert sum(r["score"] is None and r["parse_error"] is not None for r in ranked) == len(answers)
        assert sum(r["call_error"] is not None for r in ranked) == 0
    finally:
        ws.close()
