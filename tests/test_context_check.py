"""Prompts longer than the model's context, counted before a job is submitted (core.context_check)."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from conftest import open_page, write_jsonl

from core import context_check, jobs
from core.llm.base import GenerationParams
from core.llm.builtin import TINY_CONTEXT
from core.llm.registry import BUILTIN_SPECS
from core.workspace import ExploreFilter, Workspace

SHORT = [f"Name a colour, number {i}." for i in range(4)]
MEDIUM = "hello world " * 90  # fits the 512-token context alone, not with 300 tokens kept for the answer
LONG = "hello world " * 400  # over the context on its own


def prompts_workspace(ws: Workspace, tmp_path) -> dict[str, str]:
    rows = [{"instruction": text} for text in SHORT] + [{"instruction": MEDIUM}, {"instruction": LONG}]
    ws.import_paths([write_jsonl(tmp_path / "prompts.jsonl", rows)], "prompts")
    return {i: ws.sample(i)["instruction"]["text"] for i in ws.explore_page(ExploreFilter(), page_size=50)["id"]}


def test_the_count_is_what_the_backend_marks_too_long_at_run_time(workspace, tmp_path):
    ids = prompts_workspace(workspace, tmp_path)
    params = {"model": "tiny-random", "role": "student", "max_tokens": 300}
    check = context_check.check_job(workspace, "generate", params)
    assert check.context_length == TINY_CONTEXT and check.checked == 6 and check.id_kind == "instruction"
    assert check.too_long == 2 and len(check.kept_ids) == 4
    # The backend itself, on the same prompts: it refuses the ones counted (at once, without
    # decoding) and its own counts leave room for the answer in the others.
    conversation = {i: [{"role": "user", "content": text}] for i, text in ids.items()}
    with workspace.load_model("tiny-random") as backend:
        out = backend.generate([conversation[i] for i in check.too_long_ids],
                               GenerationParams(temperature=0, max_tokens=300))
        assert all(samples[0].finish_reason == "too_long" for samples in out)
        assert all(backend.count_tokens(conversation[i]) + 300 <= backend.context_length for i in check.kept_ids)
        assert check.longest_prompt == max(backend.count_tokens(c) for c in conversation.values())
    assert {ids[i] for i in check.too_long_ids} == {MEDIUM, LONG}
    sentence = check.sentence()
    assert "2 of 6 prompts" in sentence and check.too_long_ids[0] in sentence and "512" in sentence
    # With a small answer budget only the long prompt is over.
    small = context_check.check_job(workspace, "generate", params | {"max_tokens": 16})
    assert small.too_long == 1 and ids[small.too_long_ids[0]] == LONG and "1 of 6" in small.sentence()
    assert context_check.check_job(workspace, "generate", params | {"max_tokens": 16},
                                   ExploreFilter(max_chars=100)).too_long == 0


def test_dropping_them_creates_the_job_on_the_prompts_that_fit(workspace, tmp_path):
    ids = prompts_workspace(workspace, tmp_path)
    params = {"model": "tiny-random", "role": "student", "max_tokens": 300}
    check = context_check.check_job(workspace, "generate", params)
    selection = context_check.without_too_long(ExploreFilter(datasets=["prompts"]), check)
    job_id = workspace.create_job("generate", params, selection)
    snapshot = pq.read_table(workspace.job_dir(job_id) / jobs.INPUT)["instruction_id"].to_pylist()
    assert sorted(snapshot) == sorted(check.kept_ids) and len(snapshot) == 4
    assert not set(snapshot) & set(check.too_long_ids) and set(snapshot) <= set(ids)


def test_a_judge_job_counts_its_rubric_prompts(workspace, tmp_path):
    rows = [{"instruction": "Say hi.", "output": "Hi!"}, {"instruction": "Say hello.", "output": LONG}]
    workspace.import_paths([write_jsonl(tmp_path / "pairs.jsonl", rows)], "pairs")
    # The rubric alone is ~600 of tiny-random's tokens: the same weights, told of a longer context.
    judge_model = BUILTIN_SPECS["tiny-random"].to_dict() | {"context_length": 2048}
    params = {"model": judge_model, "rubric": "pointwise_5", "roles": ["seed"], "mode": "generate",
              "max_tokens": 32}
    check = context_check.check_job(workspace, "judge", params)
    assert check.checked == 2 and check.too_long == 1 and check.id_kind == "response"
    assert check.context_length == 2048 and check.longest_prompt > 2048
    long_id = [r["id"] for r in workspace.sample(workspace.explore_page(ExploreFilter(search="hello"))["id"][0])
               ["responses"]][0]
    assert check.too_long_ids == (long_id,)
    probability = context_check.check_job(workspace, "judge", params | {"mode": "probability"})
    # The probability prompt is shorter (no reasoning asked for) and needs a label, not 32 tokens: it fits.
    assert probability.answer_tokens < 32 and probability.longest_prompt < check.longest_prompt
    assert probability.too_long == 0 and probability.longest_prompt + probability.answer_tokens <= 2048
    with pytest.raises(ValueError, match="only instructions can be dropped"):
        context_check.without_too_long(None, check)


def test_models_without_a_context_say_so_and_bad_params_fail_as_create_job_does(workspace, tmp_path):
    prompts_workspace(workspace, tmp_path)
    workspace.add_model({"name": "adder", "backend": "python", "path": "core.synthetic:teacher"})
    check = context_check.check_job(workspace, "generate", {"model": "adder", "role": "teacher"})
    assert check.unavailable and check.too_long == 0 and "not checked" in check.sentence()
    # A server that is down: the check says why; it does not block the job.
    workspace.add_model({"name": "gone", "backend": "openai", "base_urls": ["http://127.0.0.1:9/v1"], "model": "m"})
    gone = context_check.check_job(workspace, "generate", {"model": "gone", "role": "teacher"})
    assert gone.unavailable and gone.too_long == 0
    with pytest.raises(ValueError, match="role"):
        context_check.check_job(workspace, "generate", {"model": "tiny-random", "role": "Bad Role"})
    with pytest.raises(ValueError, match="nothing to generate"):
        context_check.check_job(workspace, "generate", {"model": "tiny-random", "role": "student"},
                                ExploreFilter(search="no such prompt"))


def test_the_jobs_page_warns_and_offers_to_drop_them(app_ws, tmp_path):
    ids = prompts_workspace(app_ws, tmp_path)
    at = open_page("5_Jobs.py")
    at.selectbox(key="jobs_generate_model").set_value("tiny-random")
    at.text_input(key="jobs_generate_role").set_value("student")
    at.number_input(key="jobs_generate_max_tokens").set_value(300)
    at.number_input(key="jobs_generate_shard_size").set_value(64)
    at.button(key="jobs_generate_start").click().run()
    assert not at.exception, at.exception
    warning = " ".join(w.value for w in at.warning)
    assert "2 of 6 prompts" in warning and "512" in warning
    assert any(i in warning for i in ids if ids[i] in (MEDIUM, LONG))  # one example id, named
    assert app_ws.jobs() == []  # nothing submitted yet
    at.button(key="jobs_generate_too_long_drop").click().run()
    assert not at.exception, at.exception
    [info] = app_ws.jobs()
    assert info["total"] == 4 and any(s.value.startswith("Started generate") for s in at.success)
    assert not at.warning  # the question is gone once answered


def test_the_cli_warns_before_the_job_and_drops_them_when_asked(tmp_path, capsys):
    from core.cli import main

    root = tmp_path / "ws"
    with Workspace(root) as ws:
        prompts_workspace(ws, tmp_path)
    args = ["generate", "--model", "tiny-random", "--role", "student", "--max-tokens", "300", "--detach",
            "--workspace", str(root)]
    assert main(args) == 0
    first = capsys.readouterr()
    err = first.err
    assert "WARNING: 2 of 6 prompts are longer than tiny-random's context" in err and "--drop-too-long" in err
    assert main([*args, "--drop-too-long"]) == 0
    captured = capsys.readouterr()
    assert "Left out (--drop-too-long)." in captured.err
    with Workspace(root) as ws:
        kept = pq.read_table(ws.job_dir(captured.out.strip()) / jobs.INPUT)["instruction_id"].to_pylist()
        texts = {ws.sample(i)["instruction"]["text"] for i in kept}
        for out in (first.out, captured.out):  # the detached jobs are not this test's subject
            jobs.kill(ws.job_dir(out.strip()))
    assert len(kept) == 4 and MEDIUM not in texts and LONG not in texts
