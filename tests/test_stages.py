"""The stage registry: a stage declared once shows up in job creation, ingest, the CLI and the
Jobs page; a shard may feed several tables."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from conftest import SMALL_PAIRS, open_page, write_jsonl

from core import cli, jobs, stages
from core.selection import ExploreFilter
from tests.stage_plugin import ShoutParams, select_instructions


@pytest.fixture
def shout_stage(seeded_workspace):
    dataset_id = seeded_workspace.store.dataset("small")["id"]
    stage = stages.register(stages.Stage(
        name="shout", help="shout every instruction back", params=ShoutParams, select=select_instructions,
        worker="tests.stage_plugin:shout_shard",
        outputs=(stages.Output("responses", stages.RESPONSE_COLUMNS),
                 stages.Output("instructions", ("id", "dataset_id", "text", "n_chars", "round", "method", "model",
                                                "parent_id"))),
        config=lambda p: {"role": p.role, "times": p.times, "dataset_id": dataset_id}))
    yield stage
    stages.REGISTRY.pop("shout")


def test_a_registered_stage_runs_as_a_job_and_feeds_two_tables(seeded_workspace, shout_stage):
    ws = seeded_workspace
    before = ws.store.table_counts()
    job_id = ws.create_job("shout", {"model": "tiny-random", "times": 2}, ExploreFilter(datasets=["small"]),
                           shard_size=4)
    assert jobs.run(ws.job_dir(job_id)) == 0
    result = ws.ingest_job(job_id)
    after = ws.store.table_counts()
    n = len(SMALL_PAIRS)
    assert result["new_now"] == 2 * n and result["shards"] == 2
    assert after["responses"] == before["responses"] + n
    assert after["instructions"] == before["instructions"] + n
    shouted = ws.store._rows("SELECT text FROM responses WHERE role = 'shout' ORDER BY text")
    assert all(t.endswith("!!") and t[:-2] == t[:-2].upper() for (t,) in shouted)
    follow = ws.store._rows("SELECT count(*) FROM instructions WHERE method = 'shout' AND parent_id IS NOT NULL")
    assert follow[0][0] == n
    # Ingest is idempotent: the shards are recorded with their rows.
    assert ws.ingest_job(job_id)["new_now"] == 0


def test_stage_params_are_validated_with_the_bad_value_named(seeded_workspace, shout_stage):
    with pytest.raises(ValueError, match="times must be between 1 and 5, not 9"):
        seeded_workspace.create_job("shout", {"model": "tiny-random", "times": 9})
    with pytest.raises(ValueError, match="no parameter.*volume"):
        seeded_workspace.create_job("shout", {"model": "tiny-random", "volume": 3})
    with pytest.raises(ValueError, match="no model named 'nope'"):
        seeded_workspace.create_job("shout", {"model": "nope"})
    with pytest.raises(ValueError, match="unknown stage 'whisper'"):
        seeded_workspace.create_job("whisper", {"model": "tiny-random"})


def test_a_registered_stage_is_a_cli_command(seeded_workspace, shout_stage, capsys):
    parser = cli.build_parser()
    a = parser.parse_args(["shout", "--model", "tiny-random", "--times", "3", "--dataset", "small"])
    assert a.func is cli.cmd_stage and a.times == 3 and a.dataset == ["small"]
    seeded_workspace.close()
    code = cli.main(["shout", "--model", "tiny-random", "--times", "3", "-w", str(seeded_workspace.root)])
    assert code == 0
    out = capsys.readouterr().out
    assert f"{2 * len(SMALL_PAIRS)} new" in out


def test_a_registered_stage_has_a_form_on_the_jobs_page(tmp_path, monkeypatch, shout_stage):
    monkeypatch.setenv("WINNOW_WORKSPACE", str(tmp_path / "page-ws"))
    from core.workspace import Workspace

    with Workspace(tmp_path / "page-ws") as ws:
        ws.import_paths([write_jsonl(tmp_path / "p.jsonl", SMALL_PAIRS)], "small")
    at = open_page("5_Jobs.py")
    assert "Shout" in [t.label for t in at.tabs]
    assert at.number_input(key="jobs_shout_times").value == 1
    assert at.selectbox(key="jobs_shout_model").value != "tiny-random", "never the test model by default"


def test_builtin_stages_are_generate_and_judge_with_their_flags():
    parser = cli.build_parser()
    a = parser.parse_args(["judge", "-j", "smollm2-135m-instruct", "--rubric", "pointwise_5", "-r", "teacher",
                           "-r", "student", "--mode", "probability"])
    assert (a.model, a.rubric, a.roles, a.mode) == ("smollm2-135m-instruct", "pointwise_5", ["teacher", "student"],
                                                    "probability")
    a = parser.parse_args(["generate", "-m", "tiny-random", "-r", "student", "--n", "2", "--temperature", "0.5"])
    assert (a.model, a.role, a.n, a.temperature) == ("tiny-random", "student", 2, 0.5)
    with pytest.raises(ValueError, match="pairwise judge compares two roles"):
        stages.get("judge").make_params({"model": "x", "rubric": "pairwise", "roles": ["seed"]})


def test_demo_pipeline_judges_the_seed_and_labels_tasks_in_the_background(tmp_path, monkeypatch):
    """What `make run` starts: queued by `init --demo --demo-pipeline`, advanced by the owner.
    The judge is swapped for tiny-random here (SmolLM2 is the slow-marked integration test)."""
    from core import demo
    from core.workspace import Workspace

    with Workspace(tmp_path / "ws") as ws:
        # tiny-random's 512-token context is shorter than the rubric prompt: give it room.
        tiny = ws.model("tiny-random").to_dict() | {"context_length": 2048}
        monkeypatch.setattr(demo, "DEMO_JUDGE", demo.DEMO_JUDGE | {"model": tiny})
        ws.import_paths([demo.SEED_FILE], "seed", fmt="alpaca")
        ws.import_paths([demo.EVAL_FILE], "eval", fmt="prompts")
        assert ws.demo_status() is None
        demo.queue_pipeline(ws)
        launched = []
        state = demo.advance_pipeline(ws, lambda d: launched.append(jobs.launch(d)))
        assert state["state"] == "running" and len(launched) == 1
        assert state["tasks"]["n_labelled"] == ws.explore_count(ExploreFilter(datasets=["eval"]))
        jobs.wait(ws.job_dir(state["judge_job"]), timeout=300)
        ws.ingest_finished_jobs()
        assert demo.advance_pipeline(ws, launched.append)["state"] == "done"
        n_seed = ws.explore_count(ExploreFilter(datasets=["seed"]))
        verdicts = ws.store._rows("SELECT count(*), count(score), count(*) FILTER (mode = 'probability') "
                                  "FROM judgments WHERE rubric = 'pointwise_5'")[0]
        assert verdicts == (n_seed, n_seed, n_seed), "every seed answer has a probability verdict"


def test_the_judge_asks_only_what_it_has_not_judged_when_told_and_asks_failed_calls_again(workspace, tmp_path):
    """`unjudged`: a round judges its new answers only. An answer with a verdict is left out; one
    whose call failed (here: an addition-only judge shown a reversal prompt) is asked again."""
    from core.synthetic import get_task

    addition = get_task("addition")
    rows = [{"instruction": addition.prompt((47, 38)), "output": "58"},
            {"instruction": addition.prompt((12, 30)), "output": "24"},
            {"instruction": "Reverse the letters of: abcde", "output": "edcba"}]
    workspace.import_paths([write_jsonl(tmp_path / "sums.jsonl", rows)], "sums")
    workspace.add_model({"name": "adder-judge", "backend": "python", "path": "core.synthetic:addition_judge"})
    params = {"model": "adder-judge", "rubric": "pointwise_5", "roles": ["seed"], "mode": "probability"}
    everything = ExploreFilter(datasets=["sums"])
    job = workspace.create_job("judge", params, everything)
    jobs.launch(workspace.job_dir(job)).wait(timeout=120)
    workspace.ingest_job(job)
    again = workspace.create_job("judge", params | {"unjudged": True}, everything)
    asked = pq.read_table(workspace.job_dir(again) / jobs.INPUT).to_pylist()  # the job's input snapshot
    assert [r["instruction"] for r in asked] == ["Reverse the letters of: abcde"]
    with pytest.raises(ValueError, match="unjudged applies to pointwise rubrics only"):
        stages.get("judge").make_params({"model": "adder-judge", "rubric": "pairwise", "roles": ["a", "b"],
                                         "unjudged": True})
