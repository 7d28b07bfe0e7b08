"""The app open while its owner ingests a finished generation job of 1M rows (issue 15).

The app's server process owns the catalog (DESIGN.md §3): one connection, a cursor per thread, and
an owner thread that ingests finished job shards, one transaction per shard. Here the app is
opened under AppTest on a workspace holding a finished generation job of 1M answers (written
directly as the job's Parquet shards, as a job process leaves them), and while its owner ingests
them:

- a reader thread polls the Explore query 100 times the way the Explore page asks it (the total
  count, the filtered count and one page of 50, on the app's own cached Workspace) and times each;
- the Explore page itself is rerun, and a CLI command is handed to the owner from another process.

Asserted: no raw DuckDB lock error ("Could not set lock") anywhere, every poll answered, and the
ingest complete and exact. The issue's latency target (p95 ≤ 100 ms during the ingest) is met on a
quiet machine here (three runs: p95 71, 59 and 67 ms during the ingest, p50 24-33 ms; 3.5 s of
ingest, 53-57 polls inside it), but it is not what is asserted, as a loaded CI machine can miss it
without anything being wrong: the bound is BLOCKED_MS, or RATIO times the p95 once the ingest is
over, whichever is larger. That catches the app being blocked by the ingest (a write lock held
across it would make polls wait for seconds). Every figure is printed. The ingest shares the two
cores (and the GIL) with the reader.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import REPO, open_page, texts

from core import jobs
from core.generate import OUTPUT_COLUMNS
from core.ids import content_id
from core.selection import ExploreFilter
from core.workspace import Workspace

pytestmark = [pytest.mark.slow, pytest.mark.serial]  # 100k instructions, 1M answers, ~2 min; it measures latency

INSTRUCTIONS = 100_000
ANSWERS_EACH = 10  # 1M answers in all
SHARD_INSTRUCTIONS = 5_000  # 50k answers a shard: 20 shards, 20 transactions
POLLS = 100
POLL_GAP_S = 0.02  # the ingest of 1M answers takes ~3 s here: polls close enough that >= 30 fall inside it
PAGE_RERUN_GAP_S = 3.0
TARGET_P95_MS = 100.0  # the target, printed beside the figures (met when quiet, see above)
BLOCKED_MS = 500.0  # a p95 past this on a quiet machine means the ingest blocks the app
RATIO = 5.0  # on a loaded machine: the query with the ingest beside it against the same query alone
TASKS = ("math", "reasoning", "code_generation", "open_qa", "summarization")
WORDS = "tea data fox model list query round judge score teacher student value".split()
LOCK_ERROR = "Could not set lock"


def build_workspace(root: Path) -> tuple[str, int]:
    """100k imported prompts and a finished generation job of 1M answers, not yet ingested.
    Returns the job id and its number of shards."""
    rng = random.Random(0)
    prompts = root.parent / "prompts.jsonl"
    with open(prompts, "w", encoding="utf-8") as fh:
        for i in range(INSTRUCTIONS):
            text = f"Question {i}: " + " ".join(rng.choices(WORDS, k=rng.randint(3, 20)))
            fh.write(json.dumps({"instruction": text, "task": TASKS[i % len(TASKS)]}) + "\n")
    with Workspace(root) as ws:
        ws.import_paths([prompts], "pool")  # large enough for the bulk path
        ws.add_model({"name": "adder", "backend": "python", "path": "core.synthetic:teacher"})
        job_id = ws.create_job("generate", {"model": "adder", "role": "teacher", "n": ANSWERS_EACH},
                               limit=INSTRUCTIONS, shard_size=SHARD_INSTRUCTIONS)
        job_dir = ws.job_dir(job_id)
    ids = pq.read_table(job_dir / jobs.INPUT)["instruction_id"].to_pylist()
    n_shards = jobs.n_shards(len(ids), SHARD_INSTRUCTIONS)
    params = json.dumps({"temperature": 1.0, "n": ANSWERS_EACH})
    for index in range(n_shards):  # what core.generate.run_shard writes, without running a model
        chunk = ids[index * SHARD_INSTRUCTIONS:(index + 1) * SHARD_INSTRUCTIONS]
        instruction_ids = [i for i in chunk for _ in range(ANSWERS_EACH)]
        answers = [f"Answer {k} to {i}." for i in chunk for k in range(ANSWERS_EACH)]
        n = len(answers)
        shard = pa.table({
            "id": [content_id(i, "teacher", "adder", a) for i, a in zip(instruction_ids, answers, strict=True)],
            "instruction_id": instruction_ids, "role": ["teacher"] * n, "text": answers,
            "n_chars": [len(a) for a in answers], "model": ["adder"] * n, "round": [0] * n,
            "method": ["generate"] * n, "params": [params] * n,
            "meta": [json.dumps({"sample": k}) for k in range(ANSWERS_EACH)] * len(chunk),
            "finish_reason": ["stop"] * n, "n_tokens": [6] * n})
        assert tuple(shard.column_names) == OUTPUT_COLUMNS
        tmp = jobs.shard_path(job_dir, index).with_suffix(".parquet.tmp")
        pq.write_table(shard, tmp)
        os.replace(tmp, jobs.shard_path(job_dir, index))
    jobs.write_json(job_dir / jobs.DONE, {"at": "test", "total": len(ids)})
    return job_id, n_shards


class ExplorePoller:
    """The Explore page's queries, asked from a thread of their own as a page script runs."""

    def __init__(self, ws: Workspace, seed: int = 1):
        self.ws, self.rng = ws, random.Random(seed)

    def poll(self) -> float:
        task, low = self.rng.choice(TASKS), self.rng.randint(20, 80)
        selection = ExploreFilter(tasks=[task], min_chars=low, max_chars=low + 60)
        started = time.perf_counter()
        self.ws.explore_count(ExploreFilter())
        count = self.ws.explore_count(selection)
        page = self.ws.store.explore_page(selection, limit=50, offset=self.rng.randint(0, 20) * 50)
        elapsed = time.perf_counter() - started
        assert count > 0 and not page.empty  # an answer, not an empty shell
        return elapsed


def p95_ms(seconds: list[float]) -> float:
    return 1000 * (statistics.quantiles(seconds, n=20)[-1] if len(seconds) >= 20 else max(seconds))


def test_the_app_answers_the_explore_query_while_its_owner_ingests_a_1m_row_job(app_env):
    import ui

    started = time.perf_counter()
    job_id, n_shards = build_workspace(app_env)
    built_s = time.perf_counter() - started

    # The same queries with nothing else running, before (and after, below) the ingest.
    with Workspace(app_env) as ws:
        assert ws.store.job_ingest_counts(job_id)["shards"] == 0
        idle_poller = ExplorePoller(ws, seed=2)
        idle_poller.poll()  # warm
        idle = [idle_poller.poll() for _ in range(30)]

    at = open_page("2_Explore.py")  # the app opens the catalog; its owner finds the finished job
    ws, owner = ui._open_workspace(str(app_env.resolve()))  # the page's own Workspace (cached resource)
    poller = ExplorePoller(ws)

    polls: list[tuple[float, int]] = []  # (seconds, shards ingested when the poll began)
    ingest_over: list[float] = []  # when the reader first saw every shard ingested
    errors: list[str] = []

    def reader() -> None:
        # At least POLLS polls, and on until the ingest is over: a fast ingest must not leave too
        # few polls inside it to measure, and a slow one is measured to its end.
        stop_at = time.time() + 180
        while len(polls) + len(errors) < POLLS or (
                int(ws.store.job_ingest_counts(job_id)["shards"]) < n_shards and time.time() < stop_at):
            shards = int(ws.store.job_ingest_counts(job_id)["shards"])
            if shards == n_shards and not ingest_over:
                ingest_over.append(time.perf_counter())
            try:
                polls.append((poller.poll(), shards))
            except Exception as exc:  # noqa: BLE001 - every failure is counted and shown below
                errors.append(f"{type(exc).__name__}: {exc}")
            time.sleep(POLL_GAP_S)

    deadline = time.time() + 60
    while ws.store.job_ingest_counts(job_id)["shards"] == 0:  # the owner's loop begins within 2 s
        assert time.time() < deadline, f"the owner never began ingesting ({owner.current})"
        time.sleep(0.02)
    ingest_began = time.perf_counter()
    thread = threading.Thread(target=reader, name="explore-page")
    thread.start()
    # Meanwhile a CLI command from another process is handed to the owner, and the page reruns.
    cli = subprocess.Popen([sys.executable, "-m", "core.cli", "--workspace", str(app_env), "stats", "--json"], cwd=REPO,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env=os.environ | {"PYTHONPATH": str(REPO)})
    page_runs = 0
    while thread.is_alive():
        thread.join(timeout=PAGE_RERUN_GAP_S)  # a user clicking now and then, not a rerun storm
        at.run()
        page_runs += 1
        assert not at.exception, at.exception
        assert LOCK_ERROR not in texts(at)
    out, err = cli.communicate(timeout=120)

    deadline = time.time() + 120
    while ws.store.job_ingest_counts(job_id)["shards"] < n_shards:
        assert time.time() < deadline, f"the ingest did not finish ({owner.current})"
        time.sleep(0.1)
    ingest_s = (ingest_over[0] if ingest_over else time.perf_counter()) - ingest_began

    # The same queries again with the ingest over: the catalog now holds the 1M answers the page
    # decorates its rows with, so this, not the emptier catalog before, is the fair baseline.
    after = [poller.poll() for _ in range(30)]
    during = [s for s, shards in polls if 0 < shards < n_shards]
    figures = {
        "built_s": round(built_s, 1), "ingest_s": round(ingest_s, 1), "polls": len(polls),
        "polls_during_ingest": len(during), "page_reruns": page_runs, "errors": len(errors),
        "before_p50_ms": round(1000 * statistics.median(idle), 1), "before_p95_ms": round(p95_ms(idle), 1),
        "after_p50_ms": round(1000 * statistics.median(after), 1), "after_p95_ms": round(p95_ms(after), 1),
        "during_p50_ms": round(1000 * statistics.median(during), 1) if during else None,
        "during_p95_ms": round(p95_ms(during), 1) if during else None,
        "all_p95_ms": round(p95_ms([s for s, _ in polls]), 1), "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    print("\ningest-while-exploring " + json.dumps(figures), file=sys.stderr)

    lock_errors = [e for e in errors if LOCK_ERROR in e]
    assert not lock_errors, lock_errors
    assert not errors, errors  # nor any other failure: every poll answered
    assert len(polls) >= POLLS
    assert cli.returncode == 0 and LOCK_ERROR not in err, err
    assert json.loads(out)["responses"] >= 0
    assert len(during) >= 30, f"too few polls fell inside the ingest to measure it: {figures}"
    stats = ws.stats()
    assert stats["responses"] == INSTRUCTIONS * ANSWERS_EACH  # every answer once: nothing lost or doubled
    assert ws.store.job_ingest_counts(job_id)["shards"] == n_shards
    bound = max(BLOCKED_MS, RATIO * figures["after_p95_ms"])
    print(f"Explore p95 during the ingest: {figures['during_p95_ms']} ms (target {TARGET_P95_MS:.0f} ms)")
    assert figures["during_p95_ms"] <= bound, (
        f"the Explore query's p95 during the ingest is {figures['during_p95_ms']} ms, over "
        f"{bound:.0f} ms ({BLOCKED_MS:.0f} ms, or {RATIO}x its p95 with no ingest): the ingest blocks the app: {figures}")
