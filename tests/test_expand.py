"""TAPIR's expand and restyle stages (core/expand.py): real workspaces, real jobs, python and
tiny-random models."""

from __future__ import annotations

import json
from collections import Counter

import pyarrow.parquet as pq
import pytest

from core import expand, jobs, prompts, stages, synthetic
from core.ids import content_id
from core.selection import ExploreFilter
from core.workspace import Workspace

SEEDS = ExploreFilter(datasets=["seeds"])


def write_jsonl(path, rows: list[dict]):
    # Not conftest's: the job process imports this module for `stylist`, and conftest is not on its path.
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# A restyling "model" for the python backend (served from this module: the spec lists it in
# extra modules). It answers with the style the prompt asks for, so a test can tell which
# template was used, and with nothing for an answer that says EMPTY (a reply to drop).
def stylist(conversation: list[dict]) -> str:
    prompt = conversation[-1]["content"]
    answer = prompt.split("[Original answer]\n", 1)[1].split("\n[End of original answer]", 1)[0]
    if "EMPTY" in answer:
        return "  "
    style = "STEPS" if "step by step" in prompt else "CODE" if "with comments" in prompt else "OTHER"
    return f"{style}: {answer}"


@pytest.fixture
def ws(tmp_path):
    workspace = Workspace(tmp_path / "ws")
    workspace.add_model({"name": "expander", "backend": "python", "path": "core.synthetic:expander"})
    yield workspace
    workspace.close()


def run_job(ws, job_id: str) -> dict:
    """Launch the job in its own process, wait for it, ingest it; the ingest result."""
    job_dir = ws.job_dir(job_id)
    jobs.launch(job_dir).wait()
    info = jobs.wait(job_dir)
    assert info["status"] == "done", (job_dir / jobs.LOG).read_text()
    return ws.ingest_job(job_id)


def log_of(ws, job_id: str) -> str:
    return (ws.job_dir(job_id) / jobs.LOG).read_text()


def import_seeds(ws, tmp_path, task: str = "addition-short", n: int = 20) -> list[dict]:
    files = synthetic.write_prompt_files(tmp_path / "prompts", task, n_train=n, n_heldout=2)
    ws.import_paths([files.train], "seeds")
    return ws.store.instructions_for_job(SEEDS, 1000)


def rows_of(ws, dataset: str) -> list[dict]:
    return [ws.store.instruction(r["id"]) for r in ws.store.instructions_for_job(ExploreFilter(datasets=[dataset]),
                                                                                 10_000)]


# --------------------------------------------------------------------------------------------
# expand
# --------------------------------------------------------------------------------------------


def test_expand_writes_new_instructions_of_the_seed_task_and_hardness(ws, tmp_path):
    seeds = import_seeds(ws, tmp_path)
    by_id = {s["id"]: s for s in seeds}
    # What the synthetic teacher answers for sample k (0, 1) of each seed.
    expected = {synthetic.TASKS["addition-short"].prompt(synthetic.expand_problem(*synthetic.find_task(s["text"]), k))
                for s in seeds for k in range(2)}

    job_id = ws.create_job("expand", {"model": "expander", "out_dataset": "expanded", "n": 2}, SEEDS, shard_size=8)
    result = run_job(ws, job_id)
    made = rows_of(ws, "expanded")

    assert result["new"] == len(made) == len(expected) > 30
    assert {r["text"] for r in made} == expected
    assert ws.store.dataset("expanded")["kind"] == "prompts"
    samples = set()
    for row in made:
        seed = by_id[row["parent_id"]]
        task, problem = synthetic.find_task(row["text"])
        seed_task, seed_problem = synthetic.find_task(seed["text"])
        assert task is seed_task and problem != seed_problem
        assert task.is_hard(problem) == seed_task.is_hard(seed_problem)
        assert (row["task"], row["method"], row["model"], row["round"], row["input"]) == (
            "math", "expand", "expander", 0, "")
        meta = json.loads(row["meta"])
        assert meta["seed_text"] == seed["text"] and meta["template_hash"] == prompts.template_hash("expand")
        samples.add((row["parent_id"], meta["sample"]))
    # Both samples of a seed were kept, as different problems (duplicates across seeds collapse).
    assert len(samples) == len(made)

    # Ids are the importer's: importing the same texts as prompts into that dataset adds nothing.
    again = write_jsonl(tmp_path / "again.jsonl", [{"instruction": r["text"]} for r in made])
    assert ws.import_paths([again], "expanded").n_new == 0

    # A second job over the same seeds writes the same instructions: nothing new.
    rerun = ws.create_job("expand", {"model": "expander", "out_dataset": "expanded", "n": 2}, SEEDS, shard_size=8)
    assert run_job(ws, rerun)["new"] == 0
    assert len(rows_of(ws, "expanded")) == len(made)


def test_exclude_datasets_drops_exactly_the_held_out_texts(ws, tmp_path):
    seeds = import_seeds(ws, tmp_path, task="addition", n=10)
    outputs = [synthetic.TASKS["addition"].prompt(synthetic.expand_problem(*synthetic.find_task(s["text"])))
               for s in seeds]
    # Three of the expander's answers as held-out prompts, in other case and spacing (normalised
    # equal), plus one unrelated prompt.
    held = [outputs[i].upper().replace(" ", "  ") for i in (0, 3, 7)] + ["Name a colour."]
    ws.import_paths([write_jsonl(tmp_path / "held.jsonl", [{"instruction": t} for t in held])], "held-out")

    job_id = ws.create_job("expand", {"model": "expander", "out_dataset": "clean",
                                      "exclude_datasets": "held-out"}, SEEDS)
    run_job(ws, job_id)
    kept = {r["text"] for r in rows_of(ws, "clean")}
    assert kept == set(outputs) - {outputs[0], outputs[3], outputs[7]}
    assert "dropped 3 held-out" in log_of(ws, job_id)
    # The held-out keys travel in the job's input snapshot, not as texts in its config.
    assert "colour" not in (ws.job_dir(job_id) / jobs.CONFIG).read_text()
    assert expand.excluded_keys(pq.read_table(ws.job_dir(job_id) / jobs.INPUT)) == {expand.text_key(t) for t in held}

    # Without the exclusion the same seeds give all ten.
    plain = ws.create_job("expand", {"model": "expander", "out_dataset": "plain"}, SEEDS)
    run_job(ws, plain)
    assert {r["text"] for r in rows_of(ws, "plain")} == set(outputs)


@pytest.mark.slow  # loading tiny-random in the job process: ~20 s on a shared CPU
def test_expand_with_tiny_random_runs_and_counts_its_drops(ws, tmp_path):
    ws.import_paths([write_jsonl(tmp_path / "s.jsonl", [
        {"instruction": "What is 12 * 7?", "task": "math"},
        {"instruction": "Write a haiku about rain.", "task": "creative_writing"},
        {"instruction": "Name three primary colours."}])], "seeds")
    job_id = ws.create_job("expand", {"model": "tiny-random", "out_dataset": "grown", "n": 2, "max_tokens": 24},
                           SEEDS, shard_size=2)
    result = run_job(ws, job_id)
    shards = [pq.read_table(p) for p in jobs.finished_shards(ws.job_dir(job_id))]
    rows = [r for t in shards for r in t.to_pylist()]
    assert len(rows) == 6  # every sample is in the shards, kept or not, with its raw reply
    dropped = [r["dropped"] for r in rows if r["dropped"]]
    assert set(dropped) <= set(expand.DROP_REASONS)
    assert result["new"] == len(rows) - len(dropped) == len(rows_of(ws, "grown"))
    # The log accounts for every sample, shard by shard: the new ones and each drop reason.
    logged_new, logged_drops = 0, Counter()
    for line in log_of(ws, job_id).splitlines():
        if "expand: " in line:
            head, _, drops = line.split("expand: ", 1)[1].partition("; dropped ")
            logged_new += int(head.split()[0])
            for part in filter(None, drops.split(", ")):
                count, reason = part.split(" ", 1)
                logged_drops[reason] += int(count)
    assert (logged_new, logged_drops) == (result["new"], Counter(dropped))


def test_expand_select_errors(ws, tmp_path):
    with pytest.raises(ValueError, match="nothing to expand"):
        ws.create_job("expand", {"model": "expander", "out_dataset": "x"}, SEEDS)
    import_seeds(ws, tmp_path, n=3)
    with pytest.raises(ValueError, match="no dataset named 'nope'"):
        ws.create_job("expand", {"model": "expander", "out_dataset": "x", "exclude_datasets": ["nope"]}, SEEDS)
    with pytest.raises(ValueError, match="more than 2 instructions"):
        old, expand.MAX_EXCLUDED = expand.MAX_EXCLUDED, 2
        try:
            ws.create_job("expand", {"model": "expander", "out_dataset": "x", "exclude_datasets": ["seeds"]}, SEEDS)
        finally:
            expand.MAX_EXCLUDED = old


@pytest.mark.parametrize("values, match", [
    ({"n": 0}, "n .* not 0"),
    ({"n": 17}, "not 17"),
    ({"n": True}, "not True"),
    ({"out_dataset": "!bad"}, "'!bad'"),
    ({"exclude_datasets": "held out, *x"}, r"'\*x'"),
    ({"exclude_datasets": [3]}, r"not \[3\]"),
    ({"temperature": -1}, "not -1"),
    ({"max_tokens": 0}, "not 0"),
    ({"model": ""}, "not ''"),
])
def test_expand_params_name_the_bad_value(values, match):
    with pytest.raises(ValueError, match=match):
        stages.get("expand").make_params({"model": "m", "out_dataset": "out"} | values)


def test_expand_params_read_names_from_text():
    p = stages.get("expand").make_params({"model": "m", "out_dataset": " out ", "exclude_datasets": "a, b c,a"})
    assert (p.out_dataset, p.exclude_datasets) == ("out", ["a", "b c"])
    assert stages.get("expand").make_params({"model": "m", "out_dataset": "o", "exclude_datasets": "[]"}
                                            ).exclude_datasets == []


# --------------------------------------------------------------------------------------------
# The parser and the synthetic expander (pure)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reply, instruction", [
    ("What is 3 + 4?", "What is 3 + 4?"),
    ('"What is 3 + 4?"', "What is 3 + 4?"),
    ("“Name a river in Spain.”", "Name a river in Spain."),
    ("Instruction: Write a limerick.", "Write a limerick."),
    ("**New instruction:** Write a limerick.", "Write a limerick."),
    ("New Instruction 2: Sort the list [3, 1, 2].", "Sort the list [3, 1, 2]."),
    ("Sure! Here is a new instruction:\n\nWhat is 2**10?\n\nAnswer: 1024", "What is 2**10?"),
    ("### New instruction\n\nExplain TCP.", "Explain TCP."),
    ("# Title\nExplain UDP.", "Explain UDP."),
    ("```\n47+38=\n```", "47+38="),
    ("1. Explain DNS.\n2. Explain DHCP.", "Explain DNS."),
    ("Summarise the text.\nKeep it short.\n\nThe text: ...", "Summarise the text.\nKeep it short."),
    ('"a" or "b"?', '"a" or "b"?'),
    ("", None),
    ("  \n\n  ", None),
    ("Instruction:", None),
    ("```\n```", None),
    (None, None),
])
def test_parse_instruction(reply, instruction):
    assert expand.parse_instruction(reply) == instruction


def test_split_reply_says_whether_the_instruction_ends_the_reply():
    assert expand.split_reply("Write a poem about") == ("Write a poem about", True)
    assert expand.split_reply("Write a poem.\n\nIt should rhyme and") == ("Write a poem.", False)


def test_expander_keeps_task_and_hardness_and_varies_with_the_sample():
    template = prompts.load("expand")
    for seed_text in ("47+38=", "41+23=", "What is 47 + 38? Answer with the digits of the sum, least significant "
                      "first.", "Reverse the letters of: abcdefg", "Reverse the letters of: abc"):
        task, problem = synthetic.find_task(seed_text)
        made = []
        for k in range(16):
            prompt = expand.expansion_prompt(template, seed_text, "", k, 16)
            text = synthetic.expander([{"role": "user", "content": prompt}])
            assert text == synthetic.expander([{"role": "user", "content": prompt}])  # deterministic
            new_task, new_problem = synthetic.find_task(text)
            assert new_task is task and new_problem != problem
            assert task.is_hard(new_problem) == task.is_hard(problem)
            made.append(text)
        assert len(set(made)) == 16
    other_seed = expand.expansion_prompt(template, "47+38=", "", 0, 1)
    assert synthetic.expander([{"role": "user", "content": other_seed}], seed=1) != synthetic.expander(
        [{"role": "user", "content": other_seed}], seed=0)
    with pytest.raises(ValueError, match="quotes no synthetic prompt"):
        synthetic.expander([{"role": "user", "content": expand.expansion_prompt(template, "Name a colour.", "", 0, 1)}])


# --------------------------------------------------------------------------------------------
# restyle
# --------------------------------------------------------------------------------------------


@pytest.fixture
def answered(ws, tmp_path):
    ws.add_model({"name": "stylist", "backend": "python", "path": "tests.test_expand:stylist",
                  "extra": {"modules": ["tests.test_expand"]}})
    rows = [
        {"instruction": "What is 12 * 7?", "output": "84", "task": "math"},
        {"instruction": "What is 9 + 10?", "output": "19", "task": "math"},
        {"instruction": "Solve x + 2 = 5.", "output": "EMPTY", "task": "math"},
        {"instruction": "Write a function that adds two numbers.", "output": "def add(a, b): return a + b",
         "task": "code_generation"},
        {"instruction": "Name a colour.", "output": "Blue.", "task": "open_qa"},
        {"instruction": "Who wrote Hamlet?", "output": "Shakespeare.", "task": "open_qa"},
    ]
    ws.import_paths([write_jsonl(tmp_path / "a.jsonl", rows)], "answers", role="teacher")
    return {r["text"]: r for r in ws.store.instructions_for_job(ExploreFilter(datasets=["answers"]), 100)}


def styled_of(ws, instruction_id: str) -> list[dict]:
    return [r for r in ws.store.responses_for(instruction_id) if r["role"] == "styled"]


def test_restyle_rewrites_only_answers_of_styled_tasks(ws, answered):
    from core import tasks

    # A human's relabel is the current task: this open_qa question is now reasoning, so it is styled.
    tasks.relabel(ws, answered["Who wrote Hamlet?"]["id"], "reasoning")
    job_id = ws.create_job("restyle", {"model": "stylist"}, ExploreFilter(datasets=["answers"]), shard_size=2)
    result = run_job(ws, job_id)
    assert result["new"] == 4
    expect = {"What is 12 * 7?": ("STEPS: 84", "restyle_math"), "What is 9 + 10?": ("STEPS: 19", "restyle_math"),
              "Write a function that adds two numbers.": ("CODE: def add(a, b): return a + b", "restyle_code"),
              "Who wrote Hamlet?": ("STEPS: Shakespeare.", "restyle_math")}
    for text, row in answered.items():
        styled = styled_of(ws, row["id"])
        if text not in expect:  # another task, or an empty rewrite (dropped)
            assert styled == []
            continue
        (s,) = styled
        (source,) = [r for r in ws.store.responses_for(row["id"]) if r["role"] == "teacher"]
        assert (s["text"], json.loads(s["meta"])["style"]) == expect[text]
        assert (s["parent_id"], json.loads(s["meta"])["source_response_id"]) == (source["id"], source["id"])
        assert (s["method"], s["model"]) == ("restyle", "stylist")
        assert s["template_hash"] == prompts.template_hash(expect[text][1])
        assert s["id"] == content_id(row["id"], "styled", "stylist", s["text"])
    assert "1 empty" in log_of(ws, job_id)

    # Rewritten answers are not selected again: only the one whose rewrite came back empty is.
    again = ws.create_job("restyle", {"model": "stylist"}, ExploreFilter(datasets=["answers"]))
    (left,) = pq.read_table(ws.job_dir(again) / jobs.INPUT).to_pylist()
    assert left["instruction_id"] == answered["Solve x + 2 = 5."]["id"]

    # A style for open_qa only: the relabelled question (now reasoning) is not among them.
    with pytest.raises(ValueError, match="nothing to restyle"):
        ws.create_job("restyle", {"model": "stylist", "styles": "open_qa=restyle_code", "out_role": "styled"},
                      ExploreFilter(datasets=["answers"], search="Hamlet"))


def test_restyle_styles_override_and_task_selection(ws, answered):
    job_id = ws.create_job("restyle", {"model": "stylist", "styles": "open_qa=restyle_code", "out_role": "coded"},
                           ExploreFilter(datasets=["answers"]))
    assert run_job(ws, job_id)["new"] == 2
    for text in ("Name a colour.", "Who wrote Hamlet?"):
        (s,) = [r for r in ws.store.responses_for(answered[text]["id"]) if r["role"] == "coded"]
        assert s["text"].startswith("CODE: ")
    assert [r for r in ws.store.responses_for(answered["What is 12 * 7?"]["id"]) if r["role"] == "coded"] == []


@pytest.mark.parametrize("values, match", [
    ({"role": "Teacher!"}, "'Teacher!'"),
    ({"out_role": "teacher"}, "not both 'teacher'"),
    ({"styles": {"math": "nope"}}, "'nope'"),
    ({"styles": "math"}, "not 'math'"),
    ({"styles": "Math Stuff=restyle_math"}, "'Math Stuff'"),
    ({"styles": {}}, "not {}"),
    ({"temperature": 9}, "not 9"),
    ({"max_tokens": -5}, "not -5"),
])
def test_restyle_params_name_the_bad_value(values, match):
    with pytest.raises(ValueError, match=match):
        stages.get("restyle").make_params({"model": "m"} | values)


def test_restyle_default_styles_and_text_form():
    stage = stages.get("restyle")
    assert stage.make_params({"model": "m"}).styles == expand.DEFAULT_STYLES
    assert stage.make_params({"model": "m", "styles": ""}).styles == expand.DEFAULT_STYLES
    assert stage.make_params({"model": "m", "styles": "math=restyle_code, closed_qa=restyle_math"}).styles == {
        "math": "restyle_code", "closed_qa": "restyle_math"}
    assert set(expand.style_templates()) == {"restyle_math", "restyle_code"}


def test_the_cli_has_both_stages(capsys):
    from core import cli

    for name, flag in (("expand", "--out-dataset"), ("restyle", "--out-role")):
        with pytest.raises(SystemExit) as exit_:
            cli.main([name, "--help"])
        assert exit_.value.code == 0 and flag in capsys.readouterr().out
