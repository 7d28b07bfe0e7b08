"""Evaluation (core.evaluate, `winnow eval`) with python models: a perfect addition teacher against
one that drops the carry on 70% of carry cases, judged by exact match in both orders.

The expected counts come from core.synthetic directly (the teachers' answers recomputed here), so
a wrong orientation (A/B swapped), a lost order, a flip or a miscounted tie shows as a number.
"""

from __future__ import annotations

import json

import pytest

from core import cli, jobs, synthetic
from core.evaluate import EvalConfig, Evaluation, answer_role, evaluate, evaluations, latest_evaluation
from core.stages import ROLE_RE
from core.workspace import Workspace

N_PROMPTS = 40
NOISE = 0.7


def add_models(ws) -> None:
    for name, rate in (("perfect", 0.0), ("noisy", NOISE)):
        ws.add_model({"name": name, "backend": "python", "path": "core.synthetic:addition_teacher",
                      "extra": {"options": {"error_rate": rate}}})
    ws.add_model({"name": "exact", "backend": "python", "path": "core.synthetic:addition_judge"})


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """A workspace with 40 held-out addition prompts, evaluated once: perfect vs noisy, with a
    pointwise score too. Yields (root, the Evaluation, the prompts, seconds it took)."""
    import time

    tmp = tmp_path_factory.mktemp("eval")
    files = synthetic.write_prompt_files(tmp / "files", "addition", n_train=0, n_heldout=N_PROMPTS, seed=3)
    root = tmp / "ws"
    with Workspace(root) as ws:
        ws.import_paths([files.heldout], "heldout")
        add_models(ws)
        started = time.time()
        ev = evaluate(ws, "perfect", "noisy", "heldout", "exact", pointwise="pointwise_5", max_tokens=8)
        seconds = time.time() - started
    prompts = [json.loads(line)["instruction"] for line in files.heldout.read_text().splitlines()]
    return root, ev, prompts, seconds


def expected(prompts: list[str]) -> dict:
    noisy_right = [synthetic.exact_match(p, synthetic.teacher_answer(p, NOISE)) for p in prompts]
    return {"wins": noisy_right.count(False), "ties": noisy_right.count(True), "noisy_exact": sum(noisy_right)}


def test_counts_follow_the_teachers_answers(evaluated):
    root, ev, prompts, seconds = evaluated
    want = expected(prompts)
    assert 0 < want["wins"] < N_PROMPTS  # the noisy teacher is wrong on some prompts, right on others
    assert (ev.n_prompts, ev.n, ev.n_both_orders) == (N_PROMPTS, N_PROMPTS, N_PROMPTS)
    assert (ev.wins, ev.ties, ev.losses, ev.flips) == (want["wins"], want["ties"], 0, 0)
    assert ev.win.value == pytest.approx(want["wins"] / N_PROMPTS)
    assert ev.win.low < ev.win.value < ev.win.high
    # The references come from the prompt file's meta: the perfect teacher matches all of them.
    assert (ev.n_reference, ev.exact_a, ev.exact_b) == (N_PROMPTS, N_PROMPTS, want["noisy_exact"])
    assert ev.score_a == 5.0 and ev.score_b == pytest.approx(1 + 4 * want["noisy_exact"] / N_PROMPTS)
    assert [s.status for s in ev.steps] == ["done"] * 4 and all(s.job for s in ev.steps)
    assert [s.new for s in ev.steps] == [N_PROMPTS, N_PROMPTS, 2 * N_PROMPTS, 2 * N_PROMPTS]
    line = ev.line()
    assert line.startswith(f"perfect vs noisy on heldout ({N_PROMPTS} prompts): win {ev.win.value:.2f} [")
    assert f"tie {want['ties'] / N_PROMPTS:.2f}, loss 0.00, order flips 0.00" in line
    assert f"exact match perfect 1.00 / noisy {want['noisy_exact'] / N_PROMPTS:.2f}" in line
    print(f"\n{line}\n(evaluation with 4 jobs: {seconds:.1f} s)")


def test_answers_have_their_own_roles_and_never_mix_with_training_data(evaluated):
    root, *_ = evaluated
    with Workspace(root) as ws:
        roles = dict(ws.store._rows("SELECT role, count(*) FROM responses GROUP BY role"))
    assert roles == {"eval_perfect": N_PROMPTS, "eval_noisy": N_PROMPTS}
    assert answer_role("teacher-30") != answer_role("teacher_30")
    for name in ("teacher-30", "Qwen2.5-0.5B-Instruct/round-3", "x" * 80, "perfect"):
        assert ROLE_RE.match(answer_role(name)), name
    assert answer_role("perfect") == "eval_perfect"


def test_the_row_is_stored_and_read_back(evaluated):
    root, ev, *_ = evaluated
    with Workspace(root) as ws:
        stored = evaluations(ws)
        latest = latest_evaluation(ws, "perfect", "noisy", "heldout")
        row = ws.store.evaluation(ev.id)
    assert [e.id for e in stored if (e.config.model_a, e.config.model_b) == ("perfect", "noisy")] == [ev.id]
    for got in (latest, Evaluation.from_row(row)):
        assert got.config == ev.config
        assert (got.wins, got.ties, got.losses, got.flips, got.n, got.exact_a, got.exact_b, got.score_b) == (
            ev.wins, ev.ties, ev.losses, ev.flips, ev.n, ev.exact_a, ev.exact_b, ev.score_b)
        assert sorted(got.jobs) == sorted(s.job for s in ev.steps)
    assert row["win_rate"] == pytest.approx(ev.win.value) and row["win_low"] == pytest.approx(ev.win.low)
    assert row["flip_rate"] == 0.0 and row["pointwise_rubric"] == "pointwise_5"


def test_a_second_call_skips_every_finished_step(evaluated):
    root, ev, *_ = evaluated
    with Workspace(root) as ws:
        n_jobs = len(ws.jobs())
        again = evaluate(ws, "perfect", "noisy", "heldout", "exact", pointwise="pointwise_5", max_tokens=8)
        assert len(ws.jobs()) == n_jobs
        assert [e.id for e in evaluations(ws, "perfect", round=0)].count(ev.id) == 1  # replaced, not added
        assert evaluations(ws, round=1) == []
    assert [s.status for s in again.steps] == ["skipped"] * 4 and not any(s.job for s in again.steps)
    assert again.row() | {"jobs": None} == ev.row() | {"jobs": None}
    assert sorted(again.jobs) == sorted(ev.jobs)  # the jobs that made the inputs are kept


def test_the_other_direction_reuses_the_answers_and_mirrors_the_counts(evaluated):
    root, ev, *_ = evaluated
    with Workspace(root) as ws:
        back = evaluate(ws, "noisy", "perfect", "heldout", "exact", max_tokens=8)
    # Both models answered already; only the pairwise judge runs, on (noisy, perfect) pairs.
    assert [s.status for s in back.steps] == ["skipped", "skipped", "done"]
    assert (back.wins, back.ties, back.losses) == (0, ev.ties, ev.wins)
    assert (back.exact_a, back.exact_b) == (ev.exact_b, ev.exact_a)


def test_the_cli_prints_the_line_and_json(evaluated, capsys):
    root, ev, *_ = evaluated
    argv = ["eval", "--model", "perfect", "--against", "noisy", "--prompts", "heldout", "--judge", "exact",
            "--pointwise", "pointwise_5", "--max-tokens", "8", "--workspace", str(root)]
    assert cli.main(argv) == 0
    assert capsys.readouterr().out.strip() == ev.line()
    assert cli.main([*argv, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["wins"], out["ties"], out["losses"], out["flips"]) == (ev.wins, ev.ties, 0, 0)
    assert out["exact_match_a"] == 1.0 and out["win_low"] < out["win_rate"] < out["win_high"]
    assert {s["status"] for s in out["steps"]} == {"skipped"}


def test_bad_inputs_are_clear_errors_with_nothing_written(tmp_path, capsys):
    files = synthetic.write_prompt_files(tmp_path / "files", "addition", n_train=0, n_heldout=6, seed=1)
    root = tmp_path / "ws"
    with Workspace(root) as ws:
        ws.import_paths([files.heldout], "heldout")
        ws.import_paths([files.heldout_reference], "heldout", role="reference")
        add_models(ws)
        before = ws.stats()
        for args, message in (
            (("ghost", "noisy", "heldout", "exact"), "no model named 'ghost'.*known models"),
            (("perfect", "noisy", "heldout", "nobody"), "no model named 'nobody'"),
            (("perfect", "noisy", "no_such_set", "exact"), "no dataset named 'no_such_set'"),
            (("perfect", "perfect", "heldout", "exact"), "both 'perfect'"),
        ):
            with pytest.raises(ValueError, match=message):
                evaluate(ws, *args)
        with pytest.raises(ValueError, match="pairwise rubric.*'pointwise_5'"):
            evaluate(ws, "perfect", "noisy", "heldout", "exact", rubric="pointwise_5")
        with pytest.raises(ValueError, match="limit must be a positive integer"):
            EvalConfig("perfect", "noisy", "heldout", "exact", limit=0)
        assert ws.stats() == before and ws.store.evaluations() == [] and not list(ws.jobs_dir.glob("*/config.json"))
    assert cli.main(["eval", "-m", "ghost", "-b", "noisy", "-d", "heldout", "-j", "exact", "-w", str(root)]) == 2
    assert "no model named 'ghost'" in capsys.readouterr().err

    # A valid call on the first 4 prompts, judged in generate mode; references here are responses
    # of role 'reference' (the alpaca file's outputs).
    with Workspace(root) as ws:
        ev = evaluate(ws, "perfect", "noisy", "heldout", "exact", limit=4, mode="generate", max_tokens=8)
        judged = ws.store._rows("SELECT DISTINCT mode FROM judgments")
        assert all(jobs.status(ws.job_dir(s.job)) == "done" for s in ev.steps)
    assert judged == [("generate",)]
    assert (ev.n_prompts, ev.n, ev.n_reference, ev.exact_a, ev.losses, ev.flips) == (4, 4, 4, 4, 0, 0)
    assert ev.wins + ev.ties == 4 and ev.wins == 4 - ev.exact_b
