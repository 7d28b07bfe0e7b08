"""AppTest tests for the Difficulty & Tasks page (app_pages/7_Difficulty_and_Tasks.py) and the helpers
it renders (core.views), on real workspaces built through the real API: the demo seed imported,
teacher and student answers imported by role, verdicts recorded, MFD computed by core.difficulty.

The kept counts the page shows are checked against two references computed here independently:
plain Python over the scores this file planned, and one SQL count over the difficulty table joined
to the instructions' imported tasks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow as pa
import pytest
from conftest import dataframe_with, metric, open_page, texts, write_jsonl
from streamlit.testing.v1 import AppTest

from core import charts, curate, views
from core import demo as demo_mod
from core import difficulty as dif
from core import judge as judge_mod
from core import tasks as tasks_mod
from core.workspace import Workspace

PAGE = "7_Difficulty_and_Tasks.py"
JUDGE, RUBRIC = "judge-a", "pointwise_10"
SOURCE = dif.mfd_source(JUDGE, RUBRIC)
IFD_SOURCE = dif.ifd_source("student-model", "teacher")


# --------------------------------------------------------------------------------------------
# A workspace with MFD rows, through the real API
# --------------------------------------------------------------------------------------------


def seed_rows() -> list[dict]:
    with open(demo_mod.SEED_FILE, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def planned_scores(i: int) -> tuple[float | None, float | None, str | None]:
    """(teacher score, student score, why there is no MFD) of the i-th seed instruction: scores on
    1-10, MFD = teacher - student from -6 to 9; a few with no student answer or an unparsed teacher
    verdict (NULL MFD with its reason)."""
    if i % 29 == 5:
        return 7.0, None, "no student answer"
    if i % 31 == 7:
        return None, 4.0, "teacher verdict unparsed"
    return float(3 + (i * 7) % 8), float(1 + (i * 5) % 9), None


def verdict(target_id: str, score: float | None) -> dict:
    """A pointwise verdict as the judge stage writes it (score None: it did not parse)."""
    row = {"target_kind": "response", "target_id": target_id, "judge_model": JUDGE, "rubric": RUBRIC,
           "kind": "pointwise", "score": score, "scale_max": 10,
           "raw": f"Rating: {score:g}" if score is not None else "I cannot rate this.",
           "parse_error": None if score is not None else "no_score: no score line", "rationale": None,
           "round": 0, "template_hash": "t0", "params": None, "mode": "generate", "confidence": None,
           "call_error": None}
    return row | {"id": judge_mod.judgment_id(row)}


def build_mfd_workspace(ws: Workspace, folder: Path) -> dict:
    """The seed (168 instructions, 14 tasks) with a teacher and a student answer each (none from the
    student where planned), one verdict per answer, and MFD computed. Returns the plan: per seed
    row its instruction id, task, MFD (None when NULL) and reason."""
    rows = seed_rows()
    ws.import_paths([demo_mod.SEED_FILE], "seed", fmt="alpaca")
    plan = [planned_scores(i) for i in range(len(rows))]
    teacher = [{"instruction": r["instruction"], "input": r["input"], "output": f"Teacher answer {i}."}
               for i, r in enumerate(rows)]
    student = [{"instruction": r["instruction"], "input": r["input"], "output": f"Student answer {i}."}
               for i, (r, (_, s, why)) in enumerate(zip(rows, plan, strict=True)) if why != "no student answer"]
    folder.mkdir(parents=True, exist_ok=True)
    ws.import_paths([write_jsonl(folder / "teacher.jsonl", teacher)], "seed", role="teacher")
    ws.import_paths([write_jsonl(folder / "student.jsonl", student)], "seed", role="student")
    answers = {(t, role): rid for t, role, rid in ws.store._rows(
        "SELECT r.text, r.role, r.id FROM responses r WHERE r.role IN ('teacher', 'student')")}
    verdicts = []
    for i, (t, s, why) in enumerate(plan):
        verdicts.append(verdict(answers[(f"Teacher answer {i}.", "teacher")], t))
        if why != "no student answer":
            verdicts.append(verdict(answers[(f"Student answer {i}.", "student")], s))
    ws.record_judgments(verdicts)
    summary = dif.compute_mfd(ws, JUDGE, RUBRIC)
    ids = {(text, inp): iid for iid, text, inp in ws.store._rows("SELECT id, text, input FROM instructions")}
    out = [{"id": ids[(r["instruction"], r["input"])], "task": r["task"],
            "mfd": None if why else t - s, "missing": why} for r, (t, s, why) in zip(rows, plan, strict=True)]
    assert summary.total == len(rows) and summary.computed == sum(1 for r in out if r["mfd"] is not None)
    return {"rows": out, "summary": summary}


def reference_kept(plan_rows: list[dict], delta: float, tasks: dict[str, str] | None = None) -> dict[str, tuple]:
    """task → (instructions with MFD, kept at MFD > δ), in plain Python over the planned scores."""
    out: dict[str, list[int]] = {}
    for r in plan_rows:
        if r["mfd"] is None:
            continue
        task = (tasks or {}).get(r["id"], r["task"])
        counts = out.setdefault(task, [0, 0])
        counts[0] += 1
        counts[1] += r["mfd"] > delta
    return {t: (v, k) for t, (v, k) in out.items()}


def sql_kept(ws: Workspace, delta: float) -> dict[str, tuple]:
    """The same counts in one SQL statement over the difficulty table and the imported tasks."""
    rows = ws.store._rows("SELECT i.task, count(d.value), count(*) FILTER (WHERE d.value > ?) FROM difficulty d "
                          "JOIN instructions i ON i.id = d.instruction_id WHERE d.metric = 'mfd' AND d.source = ? "
                          "AND d.round = 0 GROUP BY i.task", [float(delta), SOURCE])
    return {t: (int(v), int(k)) for t, v, k in rows if v}


def page_kept(at: AppTest) -> dict[str, tuple]:
    df = dataframe_with(at, "share kept")
    return {r["task"]: (int(r["instructions with MFD"]), int(r["kept"])) for r in df.to_dict("records")}


def chart(at: AppTest, title: str) -> dict:
    """The plotly figure (as JSON) of the page's chart whose title starts with `title`."""
    for element in at.get("plotly_chart"):
        spec = json.loads(element.proto.spec)
        text = (spec["layout"].get("title") or {}).get("text") or ""
        if text.startswith(title):
            return spec
    raise AssertionError(f"no chart titled {title!r}")


def insert_ifd(ws: Workspace, values: dict[str, float]) -> None:
    rows = [{"id": dif.difficulty_id(iid, 0, "ifd", IFD_SOURCE), "instruction_id": iid, "round": 0, "metric": "ifd",
             "source": IFD_SOURCE, "value": v, "teacher_response_id": None, "student_response_id": None,
             "teacher_score": None, "student_score": None, "missing": None, "meta": None}
            for iid, v in values.items()]
    with ws.store.transaction() as cur:
        ws.store.insert_difficulty(cur, pa.Table.from_pylist(rows, schema=dif.DIFFICULTY_SCHEMA))


# --------------------------------------------------------------------------------------------
# Fixtures (as in tests/test_pages_models_jobs_judgments.py)
# --------------------------------------------------------------------------------------------


@pytest.fixture
def mfd_ws(app_ws, tmp_path) -> tuple[Workspace, dict]:
    return app_ws, build_mfd_workspace(app_ws, tmp_path / "answers")


def ok(at: AppTest) -> None:
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]


def delta_slider(at: AppTest):
    sliders = [s for s in at.slider if str(s.key).startswith("difficulty_delta")]
    assert len(sliders) == 1, [s.key for s in at.slider]
    return sliders[0]


def infos(at: AppTest) -> str:
    return "\n".join(e.value for e in list(at.info) + list(at.caption) + list(at.markdown))


# --------------------------------------------------------------------------------------------
# The tests
# --------------------------------------------------------------------------------------------


def test_empty_workspace_shows_hints_and_no_exception(app_ws):
    at = open_page(PAGE)
    ok(at)
    shown = infos(at)
    assert "No MFD yet" in shown and "winnow difficulty" in shown
    assert "No instructions yet" in shown
    assert "No instruction to relabel" in shown
    # The taxonomy is there even with no data: the default one.
    taxonomy = dataframe_with(at, "description")
    assert taxonomy["name"].tolist() == tasks_mod.DEFAULT_TAXONOMY.names
    assert not [s for s in at.slider if str(s.key).startswith("difficulty_delta")]


def test_delta_slider_changes_the_kept_counts_to_the_exact_numbers(mfd_ws):
    ws, built = mfd_ws
    plan_rows = built["rows"]
    at = open_page(PAGE)
    ok(at)
    slider = delta_slider(at)
    assert slider.value == 0.0
    assert page_kept(at) == reference_kept(plan_rows, 0.0) == sql_kept(ws, 0.0)
    valued = sum(v for v, _ in reference_kept(plan_rows, 0.0).values())
    assert metric(at, "Instructions with MFD") == f"{valued:,}"
    seen = set()
    for delta in (2.0, -1.5, 4.25, 0.0):
        delta_slider(at).set_value(delta).run()
        ok(at)
        expected = reference_kept(plan_rows, delta)
        assert expected == sql_kept(ws, delta)
        assert page_kept(at) == expected, delta
        kept = sum(k for _, k in expected.values())
        assert metric(at, "Kept (MFD > δ)") == f"{kept:,}"
        seen.add(kept)
        # The table's shares, and the bar chart's kept bars, are the same numbers.
        table = dataframe_with(at, "share kept")
        for r in table.to_dict("records"):
            assert r["share kept"] == pytest.approx(r["kept"] / r["instructions with MFD"])
        bars = chart(at, "Kept per task")
        kept_trace = next(t for t in bars["data"] if t["name"].startswith("kept"))
        assert dict(zip(kept_trace["y"], kept_trace["x"], strict=True)) == {t: k for t, (_, k) in expected.items()}
        line = chart(at, "MFD")["layout"]["shapes"][0]
        assert line["x0"] == line["x1"] == delta
    assert len(seen) == 4  # every δ above gave another total

    # NULL MFD by reason, shown plainly.
    reasons = dataframe_with(at, "reason")
    expected_reasons: dict[str, int] = {}
    for r in plan_rows:
        if r["missing"]:
            expected_reasons[r["missing"]] = expected_reasons.get(r["missing"], 0) + 1
    assert dict(zip(reasons["reason"], reasons["instructions"], strict=True)) == expected_reasons
    assert "No IFD for this round yet" in infos(at)


def test_views_kept_table_and_histogram_match_the_reference(mfd_ws):
    ws, built = mfd_ws
    for delta in (-7.0, 0.0, 3.0, 9.0):
        table = views.kept_table(ws, SOURCE, delta)
        got = {r["task"]: (r["instructions with MFD"], r["kept"]) for r in table.to_dict("records")}
        assert got == reference_kept(built["rows"], delta)
    values = [r["mfd"] for r in built["rows"] if r["mfd"] is not None]
    hist = views.histogram(ws, SOURCE, 0, 1.0)
    assert hist["n"].sum() == len(values)
    assert hist["bin_start"].min() == math.floor(min(values)) and hist["bin_start"].max() == math.floor(max(values))
    rng = views.delta_range(min(values), max(values))
    assert views.kept_totals(views.kept_table(ws, SOURCE, rng.low))["kept"] == len(values)
    assert views.kept_totals(views.kept_table(ws, SOURCE, rng.high))["kept"] == 0
    fig = charts.mfd_histogram(hist, 1.0, 2.0)
    assert list(fig.data[0].y) == hist["n"].tolist()
    assert fig.layout.shapes[0].x0 == 2.0  # the δ line
    assert fig.layout.xaxis.range[0] == hist["bin_start"].min()
    assert fig.layout.yaxis.tickformat == "d" and float(fig.layout.yaxis.dtick).is_integer()


def test_rank_correlation_shows_when_ifd_rows_exist(mfd_ws):
    ws, built = mfd_ws
    valued = [r for r in built["rows"] if r["mfd"] is not None][:40]
    # IFD falls as MFD rises, with ties broken by the id: a strongly negative τ.
    insert_ifd(ws, {r["id"]: 2.0 - r["mfd"] / 10 for r in valued})
    expected = dif.rank_correlation(ws, SOURCE, IFD_SOURCE)
    at = open_page(PAGE)
    ok(at)
    shown = texts(at)
    assert f"n = {expected.n}" in shown and expected.n == 40
    assert f"Kendall τ {expected.kendall.value:.2f}" in shown and expected.kendall.value < -0.9


def test_task_mix_now_target_after(mfd_ws):
    ws, built = mfd_ws
    at = open_page(PAGE)
    ok(at)
    # All instructions: 12 of each of the 14 seed tasks; TAPIR's target, 168 after resampling.
    at.radio(key="difficulty_pool").set_value(views.POOL_ALL).run()
    ok(at)
    mix = dataframe_with(at, "target share").set_index("task")
    assert set(mix.index) == {r["task"] for r in built["rows"]} and (mix["now"] == 12).all()
    shares = curate.target_shares("tapir", sorted(mix.index))
    for task, row in mix.iterrows():
        assert row["target share"] == pytest.approx(float(shares[task]))
    assert mix["after"].sum() == 168
    assert mix.loc["math", "after"] == 28 and mix.loc["code_generation", "after"] == 14  # 168/6, 168/12
    plan = curate.plan_rebalance(dict(mix["now"]), "tapir", None)
    assert dict(mix["after"]) == plan.counts

    # The grouped bars carry the same numbers: now / target / after shares per task.
    fig = chart(at, "Task mix")
    assert [t["name"] for t in fig["data"]] == ["now", "target", "after resampling"]
    assert fig["layout"]["barmode"] == "group"
    now, target, after = ({x: y for x, y in zip(t["x"], t["y"], strict=True)} for t in fig["data"])
    assert now == {t: pytest.approx(1 / 14) for t in mix.index}
    assert target == {t: pytest.approx(float(shares[t])) for t in mix.index}
    assert after == {t: pytest.approx(n / 168) for t, n in plan.counts.items()}

    # Kept at MFD > δ, resampled to 100.
    at.radio(key="difficulty_pool").set_value(views.POOL_KEPT).run()
    at.number_input(key="difficulty_mix_size").set_value(100).run()
    ok(at)
    mix = dataframe_with(at, "target share").set_index("task")
    kept = {t: k for t, (_, k) in reference_kept(built["rows"], 0.0).items() if k}
    assert dict(mix["now"]) == kept
    assert mix["after"].sum() == 100
    assert dict(mix["after"]) == curate.plan_rebalance(kept, "tapir", 100).counts


def test_task_mix_uses_a_snapshot_target(mfd_ws):
    ws, _ = mfd_ws
    target = {"math": "1/2", "open_qa": "1/2"}
    curate.create_snapshot(ws, {"kind": "prompts", "roles": [], "rebalance": {"target": target, "size": 20}},
                           "half-math")
    targets = views.rebalance_targets(ws)
    assert list(targets) == [views.TAPIR_LABEL, "snapshot half-math"]
    mix = views.task_mix(ws, target=targets["snapshot half-math"]).table.set_index("task")
    assert mix.loc["math", "target share"] == pytest.approx(0.5) and mix.loc["rewriting", "target share"] == 0
    assert mix.loc["math", "after"] == 84 and mix["after"].sum() == 168


def test_relabel_saves_a_human_label_and_the_page_shows_it(mfd_ws):
    ws, built = mfd_ws
    row = next(r for r in built["rows"] if r["task"] == "open_qa" and r["mfd"] is not None and r["mfd"] > 0)
    text = ws.sample(row["id"])["instruction"]["text"]
    at = open_page(PAGE)
    ok(at)
    sources = dataframe_with(at, "source").set_index("source")
    assert sources.loc["import", "instructions"] == 168 and sources.loc["human", "instructions"] == 0

    at.text_input(key="difficulty_relabel_search").set_value(text[:30]).run()
    ok(at)
    at.selectbox(key="difficulty_relabel_pick").set_value(row["id"]).run()
    ok(at)
    assert "Current task: open_qa (import)" in texts(at)
    at.selectbox(key=f"difficulty_relabel_task_{row['id']}").set_value("reasoning")
    at.text_input(key="difficulty_relabel_reviewer").set_value("ana")
    at.button(key="difficulty_relabel_save").click().run()
    ok(at)
    assert any("Saved" in s.value and "reasoning" in s.value for s in at.success)
    assert "Current task: reasoning (human)" in texts(at)
    history = dataframe_with(at, "by")
    assert history.iloc[0]["task"] == "reasoning" and history.iloc[0]["by"] == "human"
    assert history.iloc[0]["reviewer"] == "ana"
    found = tasks_mod.task_of(ws, row["id"])
    assert found["task"] == "reasoning" and found["source"] == "human"

    # The kept counts follow the relabel (the current task, not the imported one).
    assert page_kept(at) == reference_kept(built["rows"], 0.0, {row["id"]: "reasoning"})
    sources = dataframe_with(at, "source").set_index("source")
    assert sources.loc["human", "instructions"] == 1 and sources.loc["import", "instructions"] == 167


def test_instructions_without_mfd_and_a_round_with_only_null_rows(app_ws, tmp_path):
    app_ws.import_paths([demo_mod.SEED_FILE], "seed", fmt="alpaca")
    at = open_page(PAGE)
    ok(at)
    assert "No MFD yet" in infos(at)
    # The task mix has only the all-instructions pool, and shows the seed's 14 × 12.
    assert at.radio(key="difficulty_pool").options == [views.POOL_ALL]
    mix = dataframe_with(at, "target share")
    assert mix["now"].tolist() == [12] * 14 and mix["after"].sum() == 168

    # MFD of a round nobody answered in: every row NULL, with its reason; no chart, no exception.
    built = build_mfd_workspace(app_ws, tmp_path / "answers")
    dif.compute_mfd(app_ws, JUDGE, RUBRIC, round=1)
    at = open_page(PAGE)
    ok(at)
    assert at.selectbox(key="difficulty_round").options == ["0", "1"]
    at.selectbox(key="difficulty_round").set_value(1).run()
    ok(at)
    assert "No instruction has an MFD in this source and round" in infos(at)
    reasons = dataframe_with(at, "reason")
    assert reasons.to_dict("records") == [{"reason": "no teacher or student answer", "instructions": 168}]
    assert metric(at, "Kept (MFD > δ)") == "0" and metric(at, "NULL MFD") == "168"
    at.selectbox(key="difficulty_round").set_value(0).run()
    ok(at)
    assert page_kept(at) == reference_kept(built["rows"], 0.0)


def test_relabel_search_narrows_the_choice_and_an_unknown_search_says_so(mfd_ws):
    ws, built = mfd_ws
    at = open_page(PAGE)
    ok(at)
    assert len(at.selectbox(key="difficulty_relabel_pick").options) == views.MAX_RELABEL_CANDIDATES
    first = at.selectbox(key="difficulty_relabel_pick").value
    target = built["rows"][100]
    text = ws.sample(target["id"])["instruction"]["text"]
    at.text_input(key="difficulty_relabel_search").set_value(text).run()
    ok(at)
    assert at.selectbox(key="difficulty_relabel_pick").value == target["id"] != first
    at.text_input(key="difficulty_relabel_search").set_value("no instruction says this ✗").run()
    ok(at)
    assert "No instruction contains that text" in infos(at)
