"""Difficulty: MFD from stored verdicts (exact values and NULL reasons), IFD from a scoring job on
tiny-random, MFD/IFD rank correlation, page summaries, and the TAPIR chain end to end."""

from __future__ import annotations

import json
import math
import random
import time

import pyarrow as pa
import pytest
from conftest import write_jsonl

from core import difficulty as dif
from core import jobs
from core import judge as judge_mod
from core.jobs import JobContext
from core.llm.registry import BUILTIN_SPECS, ModelSpec, load_backend
from core.selection import ExploreFilter
from core.workspace import Workspace

JUDGE, RUBRIC = "judge-a", "pointwise_10"
SOURCE = f"{JUDGE}/{RUBRIC}"


# --------------------------------------------------------------------------------------------
# Helpers: answers by import, verdicts by record_judgments
# --------------------------------------------------------------------------------------------


def import_answers(ws, tmp_path, role: str, answers: dict[str, str], name: str | None = None, tasks=None) -> None:
    """Answers of a role to instructions (by text) in dataset 'd'."""
    rows = [{"instruction": q, "output": a} | ({"task": tasks[q]} if tasks else {}) for q, a in answers.items()]
    path = write_jsonl(tmp_path / f"{name or role}.jsonl", rows)
    ws.import_paths([path], "d", role=role)


def import_prompts(ws, tmp_path, questions: list[str]) -> None:
    ws.import_paths([write_jsonl(tmp_path / "prompts.jsonl", [{"instruction": q} for q in questions])], "d",
                    fmt="prompts")


def answer_ids(ws) -> dict[tuple[str, str], list[str]]:
    """(instruction text, role) -> response ids, oldest first."""
    out: dict[tuple[str, str], list[str]] = {}
    for row in ws.store._dicts("SELECT i.text, r.role, r.id FROM responses r JOIN instructions i "
                               "ON i.id = r.instruction_id ORDER BY r.rowid"):
        out.setdefault((row["text"], row["role"]), []).append(row["id"])
    return out


def instruction_ids(ws) -> dict[str, str]:
    return {r["text"]: r["id"] for r in ws.store._dicts("SELECT text, id FROM instructions")}


def verdict(target_id: str, score: float | None, judge: str = JUDGE, rubric: str = RUBRIC, raw: str | None = None,
            round: int = 0, mode: str = "generate", call_error: str | None = None) -> dict:
    """A judgment row as the judge stage writes it (score None: unparsed, or a failed call)."""
    raw = raw if raw is not None else (f"Score: {score:g}" if score is not None else "no idea")
    unparsed = score is None and call_error is None
    row = {"target_kind": "response", "target_id": target_id, "judge_model": judge, "rubric": rubric,
           "kind": "pointwise", "score": score, "scale_max": 10, "raw": raw,
           "parse_error": "no_score: no score line" if unparsed else None, "rationale": None,
           "round": round, "template_hash": "t0", "params": None, "mode": mode, "confidence": None,
           "call_error": call_error}
    return row | {"id": judge_mod.judgment_id(row)}


def record_call_errors(ws, target_ids: list[str]) -> None:
    """Failed judge calls (a backend error, not a parse failure): score NULL and call_error set."""
    ws.record_judgments([verdict(t, None, raw="", call_error="prompt too long") for t in target_ids])


def mfd_rows(ws, source: str = SOURCE, round: int = 0) -> dict[str, dict]:
    """instruction text -> its MFD row."""
    texts = {v: k for k, v in instruction_ids(ws).items()}
    return {texts[r["instruction_id"]]: r for r in ws.store.difficulty_rows("mfd", source, round)}


@pytest.fixture
def ws(tmp_path):
    w = Workspace(tmp_path / "ws")
    yield w
    w.close()


# --------------------------------------------------------------------------------------------
# MFD
# --------------------------------------------------------------------------------------------


@pytest.fixture
def mfd_ws(ws, tmp_path):
    """Every case of the MFD rule, one instruction each."""
    teacher = {"q-plain": "t", "q-several": "t", "q-no-student": "t", "q-teacher-unparsed": "t",
               "q-student-unparsed": "t", "q-not-judged": "t", "q-other-judge": "t", "q-call-failed": "t",
               "q-negative": "t"}
    student = {"q-plain": "s", "q-several": "s1", "q-teacher-unparsed": "s", "q-student-unparsed": "s",
               "q-not-judged": "s", "q-other-judge": "s", "q-call-failed": "s", "q-negative": "s",
               "q-no-teacher": "s"}
    import_answers(ws, tmp_path, "teacher", teacher)
    import_answers(ws, tmp_path, "student", student)
    import_answers(ws, tmp_path, "student", {"q-several": "s2", "q-no-teacher": "never judged"}, name="student2")
    import_answers(ws, tmp_path, "student", {"q-several": "s3"}, name="student3")
    import_prompts(ws, tmp_path, ["q-no-answers"])
    a = answer_ids(ws)
    t = {q: a[(q, "teacher")][0] for q in teacher}
    s = {q: a[(q, "student")][0] for q in student}
    s1, s2, s3 = a[("q-several", "student")]
    ws.record_judgments([
        verdict(t["q-plain"], 8), verdict(s["q-plain"], 5),
        # Two verdicts on one teacher answer average to 8; the student's three answers: 4, 6 and one
        # whose only verdict did not parse (left out of the mean, never counted as 0): (4 + 6) / 2.
        verdict(t["q-several"], 7), verdict(t["q-several"], 9), verdict(s1, 4), verdict(s2, 6), verdict(s3, None),
        verdict(t["q-no-student"], 9),
        verdict(t["q-teacher-unparsed"], None), verdict(s["q-teacher-unparsed"], 5),
        verdict(t["q-student-unparsed"], 6), verdict(s["q-student-unparsed"], None),
        # Another judge's, and another rubric's, verdicts are not this judge's.
        verdict(t["q-other-judge"], 9, judge="judge-b"), verdict(t["q-other-judge"], 3, rubric="pointwise_5"),
        verdict(s["q-other-judge"], 2),
        verdict(s["q-call-failed"], 5),
        verdict(t["q-negative"], 3), verdict(s["q-negative"], 9),
        verdict(s["q-no-teacher"], 4),
    ])
    record_call_errors(ws, [t["q-call-failed"]])
    return ws


def test_mfd_values_and_null_reasons_are_exact(mfd_ws):
    ws = mfd_ws
    summary = dif.compute_mfd(ws, JUDGE, RUBRIC)
    rows = mfd_rows(ws)
    assert {q: (r["value"], r["missing"]) for q, r in rows.items()} == {
        "q-plain": (3.0, None),
        "q-several": (3.0, None),
        "q-negative": (-6.0, None),
        "q-no-student": (None, "no student answer"),
        "q-no-teacher": (None, "no teacher answer"),
        "q-no-answers": (None, "no teacher or student answer"),
        "q-teacher-unparsed": (None, "teacher verdict unparsed"),
        "q-student-unparsed": (None, "student verdict unparsed"),
        "q-not-judged": (None, "teacher answer not judged"),
        "q-other-judge": (None, "teacher answer not judged"),
        "q-call-failed": (None, "teacher judge call failed"),
    }
    assert summary.computed == 3 and summary.total == 11 == len(rows)
    assert summary.null == {"no student answer": 1, "no teacher answer": 1, "no teacher or student answer": 1,
                            "teacher verdict unparsed": 1, "student verdict unparsed": 1,
                            "teacher answer not judged": 2, "teacher judge call failed": 1}
    several = rows["q-several"]
    assert (several["teacher_score"], several["student_score"]) == (8.0, 5.0)
    a = answer_ids(ws)
    s1, s2, _ = a[("q-several", "student")]
    meta = json.loads(several["meta"])
    assert meta["student_response_ids"] == sorted([s1, s2]), "which answers were averaged (not the unparsed one)"
    assert meta["student_answers"] == 3 and meta["teacher_verdicts"] == 2
    assert several["student_response_id"] == s1 and several["teacher_response_id"] == a[("q-several", "teacher")][0]
    # A NULL row still points at the answer that lacked a verdict, so a page can show it.
    assert rows["q-teacher-unparsed"]["teacher_response_id"] == a[("q-teacher-unparsed", "teacher")][0]
    assert rows["q-teacher-unparsed"]["student_score"] == 5.0


def test_mfd_sql_matches_the_python_reference(mfd_ws):
    ws = mfd_ws
    dif.compute_mfd(ws, JUDGE, RUBRIC)
    responses = ws.store._dicts("SELECT id, instruction_id, role, round FROM responses ORDER BY rowid")
    judgments = ws.store._dicts("SELECT target_id, score, call_error FROM judgments WHERE judge_model = ? "
                                "AND rubric = ?", [JUDGE, RUBRIC])
    expected = dif.mfd_reference(instruction_ids(ws).values(), responses, judgments)
    got = {r["instruction_id"]: r for r in ws.store.difficulty_rows("mfd", SOURCE, 0)}
    assert got.keys() == expected.keys()
    for iid, want in expected.items():
        for key, value in want.items():
            assert got[iid][key] == value, (iid, key)


def test_mfd_sql_matches_the_reference_on_random_cases(ws, tmp_path):
    rng = random.Random(5)
    questions = [f"r{i}" for i in range(60)]
    for k, role in enumerate(["teacher", "student", "teacher", "student"]):
        picked = {q: f"{role}{k}" for q in questions if rng.random() < 0.6}
        import_answers(ws, tmp_path, role, picked, name=f"{role}{k}")
    import_prompts(ws, tmp_path, questions)
    rows = []
    for ids in answer_ids(ws).values():
        for rid in ids:
            for _ in range(rng.choice([0, 1, 1, 2])):
                rows.append(verdict(rid, rng.choice([None, 1, 4, 7, 10]), raw=f"{rng.random()}"))
    ws.record_judgments(rows)
    record_call_errors(ws, [r["target_id"] for r in rows[:5]] + [ids[0] for ids in list(answer_ids(ws).values())[:3]])
    summary = dif.compute_mfd(ws, JUDGE, RUBRIC)
    responses = ws.store._dicts("SELECT id, instruction_id, role, round FROM responses ORDER BY rowid")
    judgments = ws.store._dicts("SELECT target_id, score, call_error FROM judgments")
    expected = dif.mfd_reference(instruction_ids(ws).values(), responses, judgments)
    got = {r["instruction_id"]: r for r in ws.store.difficulty_rows("mfd", SOURCE, 0)}
    assert len(got) == 60 and summary.total == 60
    for iid, want in expected.items():
        assert got[iid]["missing"] == want["missing"], iid
        if want["value"] is None:
            assert got[iid]["value"] is None, iid
        else:
            assert got[iid]["value"] == pytest.approx(want["value"]), iid
    assert summary.computed == sum(1 for w in expected.values() if w["missing"] is None) > 5


def test_recomputing_replaces_rows_and_ids_are_content_hashes(mfd_ws):
    ws = mfd_ws
    dif.compute_mfd(ws, JUDGE, RUBRIC)
    before = mfd_rows(ws)
    a = answer_ids(ws)
    ws.record_judgments([verdict(a[("q-not-judged", "teacher")][0], 10), verdict(a[("q-not-judged", "student")][0], 1)])
    summary = dif.compute_mfd(ws, JUDGE, RUBRIC)
    after = mfd_rows(ws)
    assert ws.store._rows("SELECT count(*) FROM difficulty")[0][0] == len(before) == len(after) == 11
    assert after["q-not-judged"]["value"] == 9.0 and after["q-not-judged"]["missing"] is None
    assert summary.computed == 4
    ids = instruction_ids(ws)
    for q, row in after.items():
        assert row["id"] == before[q]["id"] == dif.difficulty_id(ids[q], 0, "mfd", SOURCE)
    # Another judge's MFD is another source: it sits beside this one, it does not replace it.
    dif.compute_mfd(ws, "judge-b", RUBRIC)
    assert ws.store._rows("SELECT count(*) FROM difficulty")[0][0] == 22


def test_mfd_reads_one_round_and_honours_selection_and_limit(mfd_ws, tmp_path):
    ws = mfd_ws
    # A round-1 student answer does not enter round 0, and round 1 sees only round-1 answers.
    iid = instruction_ids(ws)["q-plain"]
    with ws.store.transaction() as cur:
        cur.execute("INSERT INTO responses (id, instruction_id, role, text, n_chars, round) "
                    "VALUES ('r1-student', ?, 'student', 'later', 5, 1)", [iid])
    ws.record_judgments([verdict("r1-student", 1, round=1)])
    dif.compute_mfd(ws, JUDGE, RUBRIC)
    assert mfd_rows(ws)["q-plain"]["value"] == 3.0
    round1 = dif.compute_mfd(ws, JUDGE, RUBRIC, round=1, limit=3)
    assert round1.total == 3, "the first 3 instructions, oldest first"
    assert mfd_rows(ws, round=1)["q-plain"]["missing"] == "no teacher answer"
    none = dif.compute_mfd(ws, JUDGE, RUBRIC, selection=ExploreFilter(datasets=["no-such-dataset"]))
    assert none.total == 0


def test_mfd_params_are_validated():
    with pytest.raises(ValueError, match="pointwise"):
        dif.MFDParams(JUDGE, "pairwise")
    with pytest.raises(ValueError, match="unknown rubric"):
        dif.MFDParams(JUDGE, "pointwise_11")
    with pytest.raises(ValueError, match="must differ"):
        dif.MFDParams(JUDGE, RUBRIC, teacher_role="student")
    with pytest.raises(ValueError, match="round"):
        dif.MFDParams(JUDGE, RUBRIC, round=-1)
    with pytest.raises(ValueError, match="mode"):
        dif.MFDParams(JUDGE, RUBRIC, mode="vibes")
    assert dif.MFDParams(JUDGE, RUBRIC, mode="probability").source == f"{SOURCE}/probability"


# --------------------------------------------------------------------------------------------
# IFD
# --------------------------------------------------------------------------------------------

LONG_ANSWER = " ".join(["tea"] * 300)


def tiny_short_spec(context_length: int = 96) -> dict:
    """tiny-random with a small context, so a long answer does not fit."""
    return ModelSpec("tiny-short", "hf", path="builtin:tiny-random", context_length=context_length,
                     dtype="float32").to_dict()


def ifd_rows_in(ws, tmp_path) -> pa.Table:
    answers = {"What is tea?": "A drink made from leaves.", "Name a colour.": "Blue.",
               "Count to three.": "One, two, three.", "Describe tea at length.": LONG_ANSWER}
    import_answers(ws, tmp_path, "teacher", answers)
    return dif.select_ifd_rows(ws, dif.IFDParams(model="tiny-short", role="teacher"), ExploreFilter(), 100)


def test_ifd_worker_gives_finite_values_and_null_when_too_long(ws, tmp_path):
    rows = ifd_rows_in(ws, tmp_path)
    assert rows.num_rows == 4
    spec = tiny_short_spec()
    ctx = JobContext(tmp_path, {"model": spec, "role": "teacher", "round": 0})
    try:
        out = dif.run_ifd_shard(ctx, rows)
    finally:
        ctx.close()
    assert out.num_rows == 4 and set(dif.DIFFICULTY_COLUMNS) <= set(out.column_names)
    by_response = {r["teacher_response_id"]: r for r in out.to_pylist()}
    long_id = next(r["response_id"] for r in rows.to_pylist() if r["response"] == LONG_ANSWER)
    assert by_response[long_id]["value"] is None and by_response[long_id]["missing"] == "too long"
    finite = [r for rid, r in by_response.items() if rid != long_id]
    assert all(r["missing"] is None and math.isfinite(r["value"]) and r["value"] > 0 for r in finite)
    assert all(r["metric"] == "ifd" and r["source"] == "tiny-short/teacher" for r in out.to_pylist())
    assert all(n > 0 for n in out["n_tokens"].to_pylist())

    # The value is the ratio of the two perplexities from the backend's own scores.
    backend = load_backend(spec)
    try:
        for row in rows.to_pylist():
            if row["response_id"] == long_id:
                continue
            with_, = backend.score([json.loads(row["conversation"])], [row["response"]])
            without, = backend.score([dif.UNCONDITIONED], [row["response"]])
            ratio = math.exp(-with_.mean_logprob) / math.exp(-without.mean_logprob)
            got = by_response[row["response_id"]]
            assert got["value"] == pytest.approx(ratio, rel=1e-4)
            meta = json.loads(got["meta"])
            assert meta["mean_logprob_conditioned"] == pytest.approx(with_.mean_logprob, rel=1e-4)
            assert meta["n_tokens_unconditioned"] == without.n_tokens
    finally:
        backend.close()


def test_ifd_value_rule():
    from core.llm.base import ScoreResult

    ok = ScoreResult(-2.0, -1.0, 2)
    assert dif.ifd_value(ScoreResult(-4.0, -2.0, 2), ok) == (pytest.approx(math.exp(1.0)), None)
    assert dif.ifd_value(ScoreResult(None, None, 900, too_long=True), ok) == (None, "too long")
    assert dif.ifd_value(ok, ScoreResult(0.0, None, 0)) == (None, "empty response")
    assert dif.ifd_value(ScoreResult(None, None, 0, error="server down"), ok) == (None, "scoring error")


def test_ifd_stage_runs_as_a_resumable_job_and_ingests_into_difficulty(ws, tmp_path):
    from core import stages

    ifd_rows_in(ws, tmp_path)
    with pytest.raises(ValueError, match="role"):
        stages.get("ifd").make_params({"model": "tiny-random", "role": "Teacher!"})
    job_id = ws.create_job("ifd", {"model": tiny_short_spec(), "role": "teacher"}, shard_size=3)
    # In this process: the registry knows the stage once core.difficulty is imported.
    assert jobs.run(ws.job_dir(job_id)) == 0
    assert len(jobs.finished_shards(ws.job_dir(job_id))) == 2
    result = ws.ingest_job(job_id)
    assert result["new"] == 4
    rows = ws.store.difficulty_rows("ifd", "tiny-short/teacher", 0)
    assert len(rows) == 4 and sum(r["value"] is None for r in rows) == 1
    assert ws.ingest_job(job_id)["new_now"] == 0
    # Running the stage again scores only what has no value yet: the too-long answer.
    time.sleep(1.1)  # job ids are kind + second + config hash: the same config within a second collides
    again = ws.create_job("ifd", {"model": tiny_short_spec(), "role": "teacher"})
    assert jobs.read_json(ws.job_dir(again) / jobs.CONFIG)["total"] == 1
    with pytest.raises(ValueError, match="nothing to score"):
        ws.create_job("ifd", {"model": tiny_short_spec(), "role": "student"})


# --------------------------------------------------------------------------------------------
# Rank correlation
# --------------------------------------------------------------------------------------------


def test_rank_correlation_on_constructed_values():
    x = [1, 2, 3, 4, 5, 6]
    same = dif.rank_correlation_values(x, [10, 20, 30, 40, 50, 60], bootstrap=200)
    assert same.n == 6 and same.kendall.value == pytest.approx(1.0) and same.spearman == pytest.approx(1.0)
    reverse = dif.rank_correlation_values(x, [6, 5, 4, 3, 2, 1], bootstrap=0)
    assert reverse.kendall.value == pytest.approx(-1.0) and reverse.spearman == pytest.approx(-1.0)
    # One swapped neighbour pair: τ = (14 - 1) / 15; ρ = 1 - 6·(1 + 1) / (6·35).
    one_swap = dif.rank_correlation_values(x, [1, 2, 4, 3, 5, 6], bootstrap=0)
    assert one_swap.kendall.value == pytest.approx(13 / 15) and one_swap.spearman == pytest.approx(1 - 12 / 210)
    # NaNs are left out; a constant side has no rank correlation.
    with_nan = dif.rank_correlation_values([1, 2, float("nan"), 3], [1, 2, 5, 3], bootstrap=0)
    assert with_nan.n == 3 and with_nan.spearman == pytest.approx(1.0)
    assert math.isnan(dif.rank_correlation_values([1, 1, 1], [1, 2, 3], bootstrap=0).spearman)
    # A large sample: τ on a seeded subsample, ρ on everything.
    rng = random.Random(0)
    xs = [rng.random() for _ in range(3000)]
    big = dif.rank_correlation_values(xs, [v + rng.random() * 0.01 for v in xs], bootstrap=20, max_kendall=500)
    assert big.n == 3000 and big.kendall.n == 500 and big.kendall.value > 0.9 and big.spearman > 0.99


def _difficulty_row(instruction_id: str, metric: str, source: str, value: float | None, round: int = 0) -> dict:
    return {"id": dif.difficulty_id(instruction_id, round, metric, source), "instruction_id": instruction_id,
            "round": round, "metric": metric, "source": source, "value": value, "teacher_response_id": None,
            "student_response_id": None, "teacher_score": None, "student_score": None,
            "missing": None if value is not None else "too long", "meta": None}


def insert_difficulty(ws, rows: list[dict]) -> None:
    with ws.store.transaction() as cur:
        ws.store.insert_difficulty(cur, pa.Table.from_pylist(rows, schema=dif.DIFFICULTY_SCHEMA))


def test_rank_correlation_reads_the_instructions_that_have_both(ws):
    mfd = {"a": 1.0, "b": 2.0, "c": 3.0, "d": None, "e": 5.0}
    ifd = {"a": 0.9, "b": 0.8, "c": 0.7, "d": 0.6}  # e has no IFD
    insert_difficulty(ws, [_difficulty_row(k, "mfd", SOURCE, v) for k, v in mfd.items()]
                      + [_difficulty_row(k, "ifd", "m/teacher", v) for k, v in ifd.items()])
    corr = dif.rank_correlation(ws, SOURCE, "m/teacher", bootstrap=0)
    assert corr.n == 3 and corr.kendall.value == pytest.approx(-1.0) and corr.spearman == pytest.approx(-1.0)
    # Inserting again replaces (same ids): the ingest path of the ifd stage.
    insert_difficulty(ws, [_difficulty_row("a", "ifd", "m/teacher", 0.1)])
    assert ws.store._rows("SELECT count(*) FROM difficulty")[0][0] == 9
    assert dif.rank_correlation(ws, SOURCE, "m/teacher", bootstrap=0).n == 3


# --------------------------------------------------------------------------------------------
# Page summaries
# --------------------------------------------------------------------------------------------


def test_histogram_and_kept_per_task_at_two_deltas(ws, tmp_path):
    tasks = {"m1": "math", "m2": "math", "m3": "math", "c1": "code_generation", "c2": "code_generation",
             "o1": "open_qa"}
    import_answers(ws, tmp_path, "teacher", {q: "t" for q in tasks}, tasks=tasks)
    import_answers(ws, tmp_path, "student", {q: "s" for q in tasks}, tasks=tasks)
    # MFD: m1 5, m2 2, m3 NULL (student unparsed), c1 1, c2 -3, o1 2.5
    scores = {"m1": (9, 4), "m2": (7, 5), "m3": (8, None), "c1": (6, 5), "c2": (2, 5), "o1": (8.5, 6)}
    a = answer_ids(ws)
    ws.record_judgments([verdict(a[(q, role)][0], s) for q, (t, st) in scores.items()
                         for role, s in (("teacher", t), ("student", st))])
    # A human relabel wins over the imported task (the current_tasks view).
    with ws.store.transaction() as cur:
        cur.execute("INSERT INTO labels (id, target_id, kind, value, classifier) VALUES ('l1', ?, 'task', "
                    "'reasoning', 'human')", [instruction_ids(ws)["o1"]])
    dif.compute_mfd(ws, JUDGE, RUBRIC)

    def kept(delta):
        df = dif.kept_per_task(ws, SOURCE, delta)
        return {r["task"]: (r["kept"], r["valued"], r["rows"]) for r in df.to_dict("records")}

    assert kept(0) == {"math": (2, 2, 3), "code_generation": (1, 2, 2), "reasoning": (1, 1, 1)}
    assert kept(2) == {"math": (1, 2, 3), "code_generation": (0, 2, 2), "reasoning": (1, 1, 1)}
    hist = dif.difficulty_histogram(ws, SOURCE, bin_width=2)
    bins = [(None if b != b else b, n) for b, n in zip(hist["bin_start"], hist["n"], strict=True)]
    assert bins == [(-4.0, 1), (0.0, 1), (2.0, 2), (4.0, 1), (None, 1)]
    with pytest.raises(ValueError, match="bin_width"):
        dif.difficulty_histogram(ws, SOURCE, bin_width=0)
    with pytest.raises(ValueError, match="metric"):
        dif.kept_per_task(ws, SOURCE, 0, metric="tfd")
    assert ws.store.difficulty_missing("mfd", SOURCE, 0).to_dict("records") == [
        {"missing": "student verdict unparsed", "n": 1}]


# --------------------------------------------------------------------------------------------
# The chain
# --------------------------------------------------------------------------------------------


def test_chain_asks_again_after_a_server_error_but_not_after_too_long(ws, tmp_path):
    import_answers(ws, tmp_path, "teacher", {"q1": "t", "q2": "t", "q3": "t"})
    a = answer_ids(ws)
    ws.record_judgments([verdict(a[("q1", "teacher")][0], None, raw="", call_error="too_long: prompt of 900"),
                         verdict(a[("q2", "teacher")][0], None, raw="", call_error="error: HTTP 503"),
                         verdict(a[("q3", "teacher")][0], None)])  # unparsed: a verdict, not asked again
    todo = ws.store.responses_missing_verdicts(ExploreFilter(), None, ["teacher", "student"], 0, JUDGE, RUBRIC)
    assert [r["response_id"] for r in todo] == [a[("q2", "teacher")][0]]
    assert ws.store.instructions_missing_answers(ExploreFilter(), 2, "student", "m", 0)[0]["text"] == "q1"
    assert ws.store.count_answers(ExploreFilter(), 2, ["teacher"]) == 2


@pytest.mark.slow
def test_chain_on_four_prompts_with_tiny_random(tmp_path):
    ws = Workspace(tmp_path / "ws")
    try:
        import_prompts(ws, tmp_path, [f"Write one line about tea, number {i}." for i in range(4)] + ["Left out."])
        events = []
        tiny = BUILTIN_SPECS["tiny-random"].name
        # The judge prompt (~580 tokens in tiny-random's tokenizer) exceeds its 512-token context:
        # judge with the same weights under a longer context (rotary positions extrapolate).
        judge = ws.add_model({"name": "tiny-judge", "backend": "hf", "path": "builtin:tiny-random",
                              "context_length": 2048, "dtype": "float32"}).name
        result = dif.run_difficulty_chain(ws, tiny, tiny, judge, ["d"], limit=4, on_progress=events.append,
                                          generation={"max_tokens": 8}, judge_params={"max_tokens": 8},
                                          shard_size=2)
        assert [s.status for s in result.steps] == ["done", "done", "done"]
        assert {e["step"] for e in events} >= {"teacher answers", "student answers", "judge", "mfd"}
        rows = ws.store.difficulty_rows("mfd", f"{judge}/pointwise_10", 0)
        assert len(rows) == 4 == result.mfd.total, "an MFD row (a value or a reason) for every instruction"
        assert ws.store._rows("SELECT count(*) FROM responses")[0][0] == 8
        # Consistent with what the judge produced: a value exactly where both answers got a parsed verdict.
        parsed = {r[0] for r in ws.store._rows("SELECT target_id FROM judgments WHERE score IS NOT NULL")}
        for row in rows:
            both = row["teacher_response_id"] in parsed and row["student_response_id"] in parsed
            assert (row["value"] is not None) == both and (row["missing"] is None) == both
        assert result.mfd.computed == sum(r["value"] is not None for r in rows)
        # The judge's 'auto' mode is the probability mode on a log-prob backend, which always gives a
        # verdict: every instruction gets a value.
        assert {r[0] for r in ws.store._rows("SELECT DISTINCT mode FROM judgments")} == {"probability"}
        assert result.mfd.computed == 4 and all(1 <= r["teacher_score"] <= 10 for r in rows)
        # Everything exists now: a second run does no work and gives the same MFD.
        again = dif.run_difficulty_chain(ws, tiny, tiny, judge, ["d"], limit=4)
        assert [s.status for s in again.steps] == ["skipped"] * 3
        assert again.mfd == result.mfd
    finally:
        ws.close()
