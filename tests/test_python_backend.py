"""The python model backend and the synthetic tasks it serves (issue 13, item 7): a teacher with
a systematic error rate and an exact-match judge, run through Winnow's own generate and judge
stages on a real workspace."""

from __future__ import annotations

import json
import math

import pytest

from core import jobs, judge, synthetic
from core.llm.base import GenerationParams
from core.llm.python_backend import PythonBackend, label_logprobs
from core.llm.registry import BACKENDS, ModelSpec, load_backend
from core.selection import ExploreFilter

ADD = synthetic.TASKS["addition"]


def sampled_teacher(conversation, rng, prefix="guess"):
    """A user's own generator that samples (for the extra-modules and seeding tests)."""
    return f"{prefix} {rng.randint(0, 10**9)}"


def no_rng_teacher(conversation):
    return "same"


def conv(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def py(path: str, **extra) -> PythonBackend:
    return load_backend(ModelSpec("m", "python", path=path, extra=extra))


# -- the synthetic task and its teacher ------------------------------------------------------


def test_addition_prompts_answers_and_the_teachers_one_mistake():
    prompt = ADD.prompt((47, 38))
    assert prompt == "What is 47 + 38? Answer with the digits of the sum, least significant first."
    assert synthetic.reference_answer(prompt) == "58"
    assert synthetic.reference_answer(ADD.prompt((99, 99))) == "891"
    assert ADD.is_hard((47, 38)) and not ADD.is_hard((41, 38))
    assert ADD.wrong_answer((47, 38)) == "57"  # the carry into the tens dropped: 75
    assert synthetic.teacher_answer(prompt, error_rate=1.0) == "57"
    assert synthetic.teacher_answer(prompt, error_rate=0.0) == "58"
    assert synthetic.teacher_answer(ADD.prompt((41, 38)), error_rate=1.0) == "97"  # no carry: always right
    assert synthetic.exact_match(prompt, " 58\n") and not synthetic.exact_match(prompt, "85")
    assert not synthetic.exact_match(prompt, "58.") and not synthetic.exact_match(prompt, None)
    with pytest.raises(ValueError, match="not a prompt of any synthetic task"):
        synthetic.reference_answer("What is 4 + 3?")
    with pytest.raises(ValueError, match="error_rate must be a number between 0 and 1, not 1.5"):
        synthetic.teacher_answer(prompt, error_rate=1.5)


@pytest.mark.parametrize("error_rate", [0.7, 0.3])
def test_teacher_accuracy_on_held_out_prompts_follows_the_rule(error_rate):
    _, heldout = synthetic.split_problems("addition", 1000, 2000, seed=0)
    prompts = [ADD.prompt(p) for p in heldout]
    answers = [synthetic.teacher_answer(p, error_rate) for p in prompts]
    right = [synthetic.exact_match(p, a) for p, a in zip(prompts, answers, strict=True)]
    carries = [ADD.is_hard(p) for p in heldout]
    # Only carry cases go wrong, and always with the one systematic mistake.
    assert all(ok or (hard and a == ADD.wrong_answer(p))
               for ok, hard, a, p in zip(right, carries, answers, heldout, strict=True))
    # The rule: each carry case is wrong with probability error_rate, so the wrong count is
    # Binomial(n_carry, error_rate); accuracy = 1 - wrong / n, within 4 standard deviations.
    n, n_carry = len(prompts), sum(carries)
    assert 0.40 < n_carry / n < 0.50  # 45 of the 100 units-digit pairs carry
    wrong = n - sum(right)
    sd = math.sqrt(n_carry * error_rate * (1 - error_rate))
    assert abs(wrong - error_rate * n_carry) <= 4 * sd, (wrong, error_rate * n_carry, sd)
    # Over all 8,100 pairs the carry share is exactly 0.45: expected accuracy 1 - 0.45 * error_rate
    # (0.685 at 0.7, the issue's "about 0.68").
    everything = [(a, b) for a in range(10, 100) for b in range(10, 100)]
    assert sum(map(ADD.is_hard, everything)) == 0.45 * len(everything)


def test_teacher_is_exact_at_error_rate_zero_and_systematic_by_seed():
    _, heldout = synthetic.split_problems("addition", 100, 300, seed=3)
    prompts = [ADD.prompt(p) for p in heldout]
    assert all(synthetic.exact_match(p, synthetic.teacher_answer(p, 0.0)) for p in prompts)
    first = [synthetic.teacher_answer(p, 0.7, seed=1) for p in prompts]
    assert first == [synthetic.teacher_answer(p, 0.7, seed=1) for p in prompts]  # the same prompt, the same answer
    other = [synthetic.teacher_answer(p, 0.7, seed=2) for p in prompts]
    assert other != first  # another seed picks other carry cases to get wrong


def test_split_keeps_addend_pairs_on_one_side_and_is_seeded():
    train, heldout = synthetic.split_problems("addition", 1500, 300, seed=0)
    assert len(train) == 1500 and len(heldout) == 300
    assert len(set(train) | set(heldout)) == 1800
    assert not {tuple(sorted(p)) for p in train} & {tuple(sorted(p)) for p in heldout}
    assert (train, heldout) == synthetic.split_problems("addition", 1500, 300, seed=0)
    assert heldout != synthetic.split_problems("addition", 1500, 300, seed=1)[1]
    with pytest.raises(ValueError, match="too few problems"):
        synthetic.split_problems("addition", 8000, 1000)


def test_reversal_task_teacher_and_judge():
    rev = synthetic.TASKS["reversal"]
    assert synthetic.reference_answer(rev.prompt("abcdefg")) == "gfedcba"
    assert synthetic.teacher_answer(rev.prompt("abcdefg"), 1.0) == "fedcba"  # a long word loses a letter
    assert synthetic.teacher_answer(rev.prompt("abc"), 1.0) == "cba"
    judge_fn = py("core.synthetic:reversal_judge")
    convs = judge.build_pointwise_requests([{"instruction": rev.prompt("abc"), "response": "cba"}], "pointwise_5")
    assert judge_fn.generate(convs)[0][0].text.endswith("Score: 5")
    with pytest.raises(ValueError, match="not a prompt of the reversal task"):
        synthetic.reversal_judge(ADD.prompt((10, 10)), "02")


def test_prompt_files_are_winnow_import_files(tmp_path):
    files = synthetic.write_prompt_files(tmp_path, "addition", n_train=30, n_heldout=10, seed=0)
    rows = [json.loads(line) for line in files.heldout.read_text().splitlines()]
    refs = [json.loads(line) for line in files.heldout_reference.read_text().splitlines()]
    assert len(rows) == 10 and len(files.train.read_text().splitlines()) == 30
    assert set(rows[0]) == {"instruction", "task", "synthetic", "reference"} and rows[0]["task"] == "math"
    assert all(r["reference"] == synthetic.reference_answer(r["instruction"]) for r in rows)
    assert [r["output"] for r in refs] == [r["reference"] for r in rows]


# -- the backend -----------------------------------------------------------------------------


def test_python_is_a_backend_and_a_spec_round_trips():
    assert "python" in BACKENDS
    spec = ModelSpec("teacher", "python", path="core.synthetic:addition_teacher",
                     extra={"options": {"error_rate": 0.3, "seed": 2}})
    assert ModelSpec.from_json(spec.to_json()) == spec
    backend = load_backend(spec.to_dict())
    assert isinstance(backend, PythonBackend) and backend.role == "generator" and not backend.supports_choice_logprobs
    with pytest.raises(ValueError, match="unknown option.*option for the python backend"):
        ModelSpec("t", "python", path="core.synthetic:addition_teacher", extra={"option": {}})
    with pytest.raises(ValueError, match="needs `path`, a function as module:function"):
        ModelSpec("t", "python")
    with pytest.raises(ValueError, match="no chat template"):
        ModelSpec("t", "python", path="core.synthetic:addition_teacher", chat_template="{{ x }}")


def test_generator_answers_n_per_conversation_counting_characters():
    teacher = py("core.synthetic:addition_teacher", options={"error_rate": 1.0})
    prompts = [ADD.prompt((47, 38)), ADD.prompt((41, 38))]
    out = teacher.generate([conv(p) for p in prompts], GenerationParams(n=3, temperature=0))
    assert [[g.text for g in samples] for samples in out] == [["57"] * 3, ["97"] * 3]
    g = out[0][0]
    assert g.finish_reason == "stop" and g.n_tokens == 2 and g.n_prompt_tokens == len(prompts[0])
    assert teacher.count_tokens(conv(prompts[0])) == len(prompts[0])
    # max_tokens counts characters; stop strings cut the answer.
    assert teacher.generate([conv(ADD.prompt((99, 99)))], GenerationParams(max_tokens=2))[0][0].text == "88"
    cut = teacher.generate([conv(ADD.prompt((99, 99)))], GenerationParams(max_tokens=2))[0][0]
    assert cut.finish_reason == "length"
    assert teacher.generate([conv(ADD.prompt((99, 99)))], GenerationParams(stop=("1",)))[0][0].text == "88"
    # A prompt the function cannot answer fails that call only, with the reason.
    bad, good = teacher.generate([conv("hello"), conv(prompts[1])])
    assert bad[0].finish_reason == "error" and "not a prompt of the addition task" in bad[0].error
    assert good[0].text == "97"
    # A context length makes a long prompt too_long, as with other backends.
    small = load_backend(ModelSpec("m", "python", path="core.synthetic:oracle", context_length=20))
    assert small.generate([conv(prompts[0])])[0][0].finish_reason == "too_long"
    with pytest.raises(NotImplementedError, match="no log-probabilities"):
        teacher.score([conv(prompts[0])], ["58"])
    with pytest.raises(NotImplementedError, match="generator, not a judge"):
        teacher.choice_logprobs([conv(prompts[0])], [" 1", " 2"])


def test_a_users_own_sampling_function_is_seeded_by_params_seed():
    extra = {"modules": ["tests.test_python_backend"], "options": {"prefix": "x"}}
    backend = py("tests.test_python_backend:sampled_teacher", **extra)
    params = GenerationParams(n=3, seed=11)
    first = [g.text for g in backend.generate([conv("a")], params)[0]]
    assert first == [g.text for g in backend.generate([conv("a")], params)[0]]
    assert len(set(first)) == 3 and all(t.startswith("x ") for t in first)
    assert first != [g.text for g in backend.generate([conv("a")], GenerationParams(n=3, seed=12))[0]]
    assert first != [g.text for g in backend.generate([conv("b")], params)[0]]  # each prompt its own stream
    fixed = py("tests.test_python_backend:no_rng_teacher", modules=["tests.test_python_backend"])
    assert [g.text for g in fixed.generate([conv("a")], params)[0]] == ["same"] * 3


def test_judge_reads_instruction_and_answer_back_from_every_template():
    exact = py("core.synthetic:addition_judge")
    assert exact.role == "judge" and exact.supports_choice_logprobs
    prompt = ADD.prompt((47, 38))
    # An answer quoting the template's own markers is still read whole (and is not an exact match).
    tricky = "58\n[End of answer]\n\nScore: 5"
    items = [{"instruction": prompt, "response": r} for r in ("58", "57", tricky, " 58 ")]
    for rubric, low, high in (("pointwise_5", 1, 5), ("pointwise_10", 1, 10)):
        r = judge.get_rubric(rubric)
        texts = [s[0].text for s in exact.generate(judge.build_pointwise_requests(items, rubric))]
        assert [r.parse(t).score for t in texts] == [high, low, low, high]
        results = exact.choice_logprobs(judge.build_pointwise_requests(items, rubric, mode="probability"),
                                        judge.labels_of(rubric), prefill=judge.prefill_of(rubric))
        verdicts = [judge.probability_verdict(r, res) for res in results]
        assert [v.score for v in verdicts] == [high, low, low, high] and {v.confidence for v in verdicts} == {1.0}
    # Pairwise: both answers scored; the better one wins, equal ones tie, in both orders.
    pairs = [{"instruction": prompt, "answer_a": "58", "answer_b": "57"},
             {"instruction": prompt, "answer_a": "57", "answer_b": "57"}]
    for mode in ("generate", "probability"):
        requests = judge.build_pairwise_requests(pairs, rng=0, mode=mode)
        convs = [q.conversation for q in requests]
        if mode == "generate":
            shown = [judge.parse_pairwise(s[0].text).winner for s in exact.generate(convs)]
        else:
            results = exact.choice_logprobs(convs, judge.labels_of("pairwise"), prefill=judge.prefill_of("pairwise"))
            shown = [["A", "B", "tie"][res.logprobs.index(0.0)] for res in results]
        expected = ["tie" if q.index == 1 else ("B" if q.swapped else "A") for q in requests]
        assert shown == expected, mode
    # A prompt that fits no judge template fails that call, never a made-up score.
    assert exact.generate([conv(prompt)])[0][0].finish_reason == "error"
    failed = exact.choice_logprobs([conv(prompt)], [" 1", " 5"])[0]
    assert not failed.ok and "fits no pointwise or pairwise judge template" in failed.error


def test_label_logprobs_put_the_mass_on_the_verdict():
    labels = [" 1", " 2", " 3", " 4", " 5"]
    assert label_logprobs(5.0, labels) == [-math.inf] * 4 + [0.0]
    split = label_logprobs(4.25, labels)
    score, mass, _ = judge.expected_score(split, [1, 2, 3, 4, 5])
    assert score == pytest.approx(4.25) and mass == pytest.approx(1.0)
    assert label_logprobs("tie", [" A", " B"]) == [math.log(0.5)] * 2
    with pytest.raises(ValueError, match="no label"):
        label_logprobs(7.0, labels)


@pytest.mark.parametrize("path, extra, message", [
    ("core.synthetic.addition_teacher", {}, "must be 'module:function'"),
    ("os:system", {}, "module 'os' is not allowed"),
    ("os:system", {"modules": ["os"]}, "'os' is a standard-library module"),
    ("subprocess:run", {"modules": ["subprocess"]}, "standard-library"),
    ("core.synthetic:_unit", {}, "public names only"),
    ("core.synthetic:write_prompt_files", {}, "no model function 'write_prompt_files'"),
    ("core.synthetic:nothing_here", {}, "no model function 'nothing_here'.*addition_teacher"),
    ("core.synthetic:TASKS", {}, "TASKS is a dict, not a function"),
    ("tests.no_such_module:f", {"modules": ["tests.no_such_module"]}, "cannot import module"),
    ("core.synthetic:addition_teacher", {"options": {"eror_rate": 0.5}}, "unexpected keyword argument 'eror_rate'"),
    ("core.synthetic:addition_judge", {"role": "critic"}, "role must be one of generator, judge"),
])
def test_a_bad_function_path_is_refused_and_nothing_written(workspace, path, extra, message):
    before = workspace.store.models()
    with pytest.raises(ValueError, match=message):
        workspace.add_model({"name": "bad", "backend": "python", "path": path, "extra": extra})
    assert workspace.store.models() == before and workspace.store.model_spec("bad") is None


def test_a_job_naming_a_missing_function_fails_with_the_reason(tmp_path, workspace):
    files = synthetic.write_prompt_files(tmp_path / "files", n_train=0, n_heldout=4)
    workspace.import_paths([files.heldout], "heldout")
    spec = {"name": "ghost", "backend": "python", "path": "core.synthetic:ghost_teacher"}
    job_id = workspace.create_job("generate", {"model": spec, "role": "teacher"})
    assert jobs.run(workspace.job_dir(job_id)) == 1
    failed = json.loads((workspace.job_dir(job_id) / jobs.FAILED).read_text())
    assert "no model function 'ghost_teacher'" in failed["error"]
    assert workspace.ingest_job(job_id)["new_now"] == 0 and workspace.stats()["responses"] == 0


# -- through Winnow's stages -----------------------------------------------------------------

SQL_TEACHER = ("SELECT r.id, i.text, r.text FROM responses r JOIN instructions i ON i.id = r.instruction_id "
               "WHERE r.role = 'teacher' ORDER BY r.id")
SQL_JUDGMENTS = ("SELECT target_id, score, confidence, call_error, parse_error FROM judgments "
                 "WHERE mode = ? AND rubric = ? ORDER BY target_id")


def run_and_ingest(ws, stage: str, params: dict, dataset: str) -> dict:
    job_id = ws.create_job(stage, params, ExploreFilter(datasets=[dataset]), shard_size=16)
    assert jobs.run(ws.job_dir(job_id)) == 0, ws.job_log(job_id)
    return ws.ingest_job(job_id)


def test_teacher_and_judge_jobs_through_the_stages_agree_with_exact_match(tmp_path, workspace):
    ws = workspace
    files = synthetic.write_prompt_files(tmp_path / "files", "addition", n_train=0, n_heldout=80, seed=5)
    ws.import_paths([files.heldout], "addition_heldout")
    ws.import_paths([files.heldout_reference], "addition_heldout", role="reference")
    assert ws.stats()["instructions"] == 80  # the reference file adds answers, not instructions
    ws.add_model({"name": "teacher", "backend": "python", "path": "core.synthetic:addition_teacher",
                  "extra": {"options": {"error_rate": 0.7, "seed": 5}}})
    ws.add_model({"name": "exact", "backend": "python", "path": "core.synthetic:addition_judge"})

    run_and_ingest(ws, "generate", {"model": "teacher", "role": "teacher", "temperature": 0.0, "max_tokens": 8},
                   "addition_heldout")
    responses = ws.store._rows(SQL_TEACHER)
    assert len(responses) == 80
    matches = {rid: synthetic.exact_match(prompt, text) for rid, prompt, text in responses}
    prompts = [json.loads(line)["instruction"] for line in files.heldout.read_text().splitlines()]
    direct = [synthetic.exact_match(p, synthetic.teacher_answer(p, 0.7, seed=5)) for p in prompts]
    assert sum(matches.values()) == sum(direct)  # the job's answers are the teacher's
    assert 0 < sum(matches.values()) < 80  # right and wrong answers both present

    for mode in ("probability", "generate"):
        result = run_and_ingest(ws, "judge", {"model": "exact", "rubric": "pointwise_5", "roles": ["teacher"],
                                              "mode": mode}, "addition_heldout")
        rows = ws.store._rows(SQL_JUDGMENTS, [mode, "pointwise_5"])
        assert result["new"] >= len(rows) == 80, mode
        assert all(call_error is None and parse_error is None for _, _, _, call_error, parse_error in rows), rows[:3]
        assert {target: score for target, score, *_ in rows} == {rid: 5.0 if ok else 1.0 for rid, ok in matches.items()}
        if mode == "probability":
            assert {confidence for _, _, confidence, *_ in rows} == {1.0}

    # Pairwise (the evaluation slice's judge): the teacher against the right answer, both orders.
    run_and_ingest(ws, "judge", {"model": "exact", "rubric": "pairwise", "roles": ["teacher", "reference"],
                                 "mode": "probability"}, "addition_heldout")
    pair_rows = ws.store._rows("SELECT params, score FROM judgments WHERE rubric = 'pairwise'")
    assert len(pair_rows) == 160  # 80 pairs, each asked in both orders
    for params, score in pair_rows:
        assert score == (0.5 if matches[json.loads(params)["a"]] else 0.0)  # a tie when right, else B wins


def test_a_generator_as_judge_is_a_call_error_not_a_score(tmp_path, workspace):
    files = synthetic.write_prompt_files(tmp_path / "files", n_train=0, n_heldout=5)
    workspace.import_paths([files.heldout_reference], "h", role="reference")
    workspace.add_model({"name": "oracle", "backend": "python", "path": "core.synthetic:oracle"})
    run_and_ingest(workspace, "judge", {"model": "oracle", "rubric": "pointwise_5", "roles": ["reference"],
                                        "mode": "probability"}, "h")
    rows = workspace.store._rows(SQL_JUDGMENTS, ["probability", "pointwise_5"])
    assert len(rows) == 5 and all(score is None and error.startswith("unsupported") for _, score, _, error, _ in rows)



def test_the_cli_adds_a_python_model_with_its_options_and_refuses_a_bad_path(tmp_path, capsys):
    from core import cli
    from core.workspace import Workspace

    root = tmp_path / "cli_ws"
    assert cli.main(["init", "--workspace", str(root)]) == 0
    assert cli.main(["models", "add", "teacher-30", "--backend", "python", "--path", "core.synthetic:addition_teacher",
                     "--option", "error_rate=0.3", "--workspace", str(root)]) == 0
    assert "added teacher-30 (python)" in capsys.readouterr().out
    assert cli.main(["models", "add", "bad", "--backend", "python", "--path", "os:system",
                     "--workspace", str(root)]) != 0
    with Workspace(root) as ws:
        spec = ws.model("teacher-30")
        assert (spec.path, spec.extra["options"]) == ("core.synthetic:addition_teacher", {"error_rate": 0.3})
        assert "bad" not in {s.name for s in ws.models()}
