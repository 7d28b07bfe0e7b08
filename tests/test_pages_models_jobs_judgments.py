"""AppTest tests for the Models, Jobs and Judgments pages, against real workspaces in temporary
folders (the fixtures of tests/test_pages.py, repeated here), the real tiny-random model and real
job processes."""

from __future__ import annotations

import time

import pandas as pd
import pytest
from conftest import REPO, SMALL_PAIRS, dataframe_with, metric, open_page, texts, write_jsonl
from streamlit.testing.v1 import AppTest

from core import charts, jobs
from core import judge as judge_mod
from core.llm import builtin
from core.workspace import ExploreFilter

TIMEOUT = 30
MODEL_TIMEOUT = 180  # the first load of tiny-random builds it (a few seconds; more on a busy machine)




def ok(at: AppTest) -> None:
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


def test_models_page_lists_models_and_adds_one(app_ws, tmp_path):
    at = open_page("4_Models.py")
    table = dataframe_with(at, "backend").set_index("name")
    assert {"tiny-random", "smollm2-135m-instruct"} <= set(table.index)
    assert table.loc["tiny-random", "backend"] == "hf" and table.loc["tiny-random", "built-in"]

    # A folder that does not exist is refused, with the reason shown.
    at.text_input(key="models_name").set_value("mine")
    at.text_input(key="models_path").set_value(str(tmp_path / "nowhere"))
    at.button(key="models_add").click().run()
    assert not at.exception, at.exception
    assert any("no folder at" in e.value for e in at.error)

    # A server model takes the NAME of the key's variable, never a key.
    at.radio(key="models_kind").set_value("openai").run()
    at.text_input(key="models_name").set_value("served")
    at.text_area(key="models_urls").set_value("http://127.0.0.1:9/v1")
    at.text_input(key="models_model_id").set_value("m")
    at.text_input(key="models_key_env").set_value("sk-abc 123")
    at.button(key="models_add").click().run()
    assert any("NAME of an environment variable" in e.value for e in at.error)
    assert "served" not in [s.name for s in app_ws.models()]

    # The tiny-random folder is a real Hugging Face folder: it is added.
    at.radio(key="models_kind").set_value("hf").run()
    folder = builtin.model_path("tiny-random")
    at.text_input(key="models_name").set_value("tiny-copy")
    at.text_input(key="models_path").set_value(str(folder))
    at.selectbox(key="models_dtype").set_value("float32")
    at.button(key="models_add").click().run()
    ok(at)
    assert any(s.value.startswith("Added tiny") for s in at.success)
    spec = app_ws.model("tiny-copy")
    assert spec.path == str(folder) and spec.dtype == "float32" and spec.backend == "hf"
    assert "tiny-copy" in dataframe_with(at, "backend")["name"].tolist()


def test_models_try_a_prompt_with_tiny_random(app_ws):
    at = open_page("4_Models.py")
    at.selectbox(key="models_try_model").set_value("tiny-random")
    at.text_area(key="models_try_prompt").set_value("Say hello.")
    at.number_input(key="models_try_max_tokens").set_value(8)
    at.slider(key="models_try_temperature").set_value(0.0)
    at.button(key="models_try_generate").click().run(timeout=MODEL_TIMEOUT)
    ok(at)
    result = at.session_state["models_try_result"]
    assert result["model"] == "tiny-random" and result["text"].strip()
    assert 1 <= result["n_tokens"] <= 8 and result["finish_reason"] in ("stop", "length")
    assert any("winnow-md" in h.value for h in at.html)  # the answer, rendered as safe markdown
    at.session_state["raw_text"] = True  # "Show raw text": the answer exactly as the model wrote it
    at.run()
    ok(at)
    assert result["text"] in texts(at)
    assert 1 <= int(metric(at, "Tokens")) <= 8

    # An empty prompt is refused before any model runs.
    at.text_area(key="models_try_prompt").set_value("  ")
    at.button(key="models_try_generate").click().run()
    assert any("Type a prompt" in e.value for e in at.error)


# --------------------------------------------------------------------------------------------
# Jobs
# --------------------------------------------------------------------------------------------


def test_jobs_page_runs_a_generate_job_to_the_end(app_ws, tmp_path):
    prompts = [{"instruction": f"Write a note number {i} about tea."} for i in range(3)]
    app_ws.import_paths([write_jsonl(tmp_path / "prompts.jsonl", prompts)], "prompts")
    at = open_page("5_Jobs.py")
    assert "No jobs yet." in texts(at)

    at.selectbox(key="jobs_generate_model").set_value("tiny-random")
    at.text_input(key="jobs_generate_role").set_value("student")
    at.number_input(key="jobs_generate_max_tokens").set_value(8)
    at.number_input(key="jobs_generate_seed").set_value(3)
    at.button(key="jobs_generate_start").click().run()
    ok(at)
    assert any(s.value.startswith("Started generate") for s in at.success)
    [info] = app_ws.jobs()
    assert info["kind"] == "generate" and info["total"] == 3 and info["model"] == "tiny-random"

    deadline = time.time() + MODEL_TIMEOUT
    # "pending" until the launched process writes its pid: on a loaded machine the first look may see it
    while app_ws.jobs()[0]["status"] in ("pending", "running") and time.time() < deadline:
        time.sleep(0.5)
    info = app_ws.jobs()[0]
    assert info["status"] == "done", app_ws.job_log(info["id"])

    at.run()
    ok(at)
    table = dataframe_with(at, "progress")
    assert table["status"].tolist() == ["done"] and table["progress"].tolist() == [1.0]
    assert metric(at, "Status") == "done"
    assert "done: 3 items this run" in texts(at)  # the log tail
    assert at.button(key=f"jobs_cancel_{info['id']}").disabled
    assert at.button(key=f"jobs_resume_{info['id']}").disabled
    ingest = at.button(key=f"jobs_ingest_{info['id']}")
    if not ingest.disabled:  # the app's owner thread may have ingested the shard already
        ingest.click().run()
        ok(at)
    app_ws.ingest_job(info["id"])  # idempotent
    assert len(app_ws.explore_page(ExploreFilter(roles=["student"]))) == 3
    assert metric(at, "Shards ingested") == "1 / 1" or app_ws.job_ingest_counts(info["id"])["shards"] == 1


def test_jobs_page_refuses_a_bad_job_and_resumes_a_cancelled_one(app_ws, tmp_path, monkeypatch):
    app_ws.import_paths([write_jsonl(tmp_path / "p.jsonl", SMALL_PAIRS)], "small")
    at = open_page("5_Jobs.py")
    at.text_input(key="jobs_generate_role").set_value("Bad Role")
    at.button(key="jobs_generate_start").click().run()
    assert any("role 'Bad Role' is invalid" in e.value for e in at.error)
    at.multiselect(key="jobs_judge_roles").set_value([])
    at.button(key="jobs_judge_start").click().run()
    assert any("at least one response role" in e.value for e in at.error)
    assert app_ws.jobs() == []

    # A job created but cancelled before it ran is offered for resuming; Start launches it.
    import ui

    job_id = app_ws.create_job("generate", {"model": app_ws.model("tiny-random").to_dict(), "role": "student"} | {"max_tokens": 4}, limit=1)
    jobs.cancel(app_ws.job_dir(job_id))
    launched = []
    monkeypatch.setattr(ui, "launch_job", lambda d: launched.append(d))
    at.run()
    ok(at)
    assert metric(at, "Status") == "cancelled"
    at.button(key=f"jobs_resume_{job_id}").click().run()
    assert not at.exception, at.exception
    assert launched == [app_ws.job_dir(job_id)]


# --------------------------------------------------------------------------------------------
# Judgments
# --------------------------------------------------------------------------------------------

SEED_RAWS = ["Fine.\nScore: 5", "Score: 4", "Score: 5", "I cannot decide.", "Score: 2", "Score: 1"]
TEACHER_RAWS = ["Score: 3", "Score: 5", "Score: 4", "Score: 4", "no score here", "Score: 5"]


@pytest.fixture
def judged(app_ws, tmp_path) -> dict:
    """Six seed and six teacher responses judged by one judge (two verdicts unparsable), with
    human labels on four of them."""
    app_ws.import_paths([write_jsonl(tmp_path / "pairs.jsonl", SMALL_PAIRS)], "small")
    teacher = [p | {"output": p["output"] + " (teacher)"} for p in SMALL_PAIRS]
    app_ws.import_paths([write_jsonl(tmp_path / "teacher.jsonl", teacher)], "small", role="teacher")
    ids = app_ws.explore_page(ExploreFilter())["id"].tolist()
    by_role: dict[str, list[str]] = {"seed": [], "teacher": []}
    for instruction_id in ids:
        for r in app_ws.sample(instruction_id)["responses"]:
            by_role[r["role"]].append(r["id"])
    rows = judge_mod.judgment_rows("pointwise_5", "judge-m", by_role["seed"], SEED_RAWS) + \
        judge_mod.judgment_rows("pointwise_5", "judge-m", by_role["teacher"], TEACHER_RAWS)
    assert app_ws.record_judgments(rows) == 12
    for rid, decision in ((by_role["seed"][0], "accept"), (by_role["seed"][1], "reject"),
                          (by_role["seed"][4], "reject"), (by_role["teacher"][1], "accept")):
        app_ws.review(rid, decision)
    return by_role


def info_texts(at: AppTest) -> list[str]:
    return [i.value for i in at.info]


def test_judgments_page_shows_failures_threshold_and_bins(app_ws, judged):
    at = open_page("6_Judgments.py")
    ok(at)
    assert metric(at, "Verdicts") == "12"
    assert metric(at, "Parse failures") == "2"
    assert metric(at, "Labels") == "4"
    slider_key = "judgments_threshold_judge-m_pointwise_5"
    assert at.slider(key=slider_key).value == 5.0  # the rubric's default threshold
    first = info_texts(at)
    assert any("score ≥ 5 keeps 33%" in t and "4 labels" in t for t in first), first

    at.slider(key=slider_key).set_value(3.0).run()
    ok(at)
    second = info_texts(at)
    assert second != first and any("score ≥ 3 keeps" in t and "precision" in t for t in second), second
    metrics = dataframe_with(at, "95% interval").set_index("metric")
    assert metrics.loc["parse failures (of every verdict)", "k / n"] == "2 / 12"

    # Clicking a bar selects its bin (set here as the browser would send the selection) ...
    chart_key = "judgments_hist_judge-m_pointwise_5_1.0__True"
    at.session_state[chart_key] = {"selection": {"points": [{"x": "4", "y": 2, "curve_number": 1}],
                                                 "point_indices": [3], "box": [], "lasso": []}}
    at.run()
    ok(at)
    assert at.session_state["judgments_bin_pick"] == "4"
    assert "Bin 4: 3 targets" in texts(at)
    # ... and a bin chosen in the selectbox lists its samples with their raw verdicts.
    at.selectbox(key="judgments_bin_pick").set_value("5").run()
    ok(at)
    listed = dataframe_with(at, "raw")
    assert len(listed) == 4 and set(listed["role"]) == {"seed", "teacher"}
    assert "Bin 5: 4 targets" in texts(at)
    at.selectbox(key="judgments_bin_pick").set_value(charts.UNPARSED).run()
    listed = dataframe_with(at, "parse_error")
    assert listed["raw"].tolist() == sorted(["I cannot decide.", "no score here"], key=listed["raw"].tolist().index)
    assert all(listed["parse_error"].str.len() > 0)

    # The role filter narrows the histogram and the bins.
    at.multiselect(key="judgments_roles").set_value(["teacher"]).run()
    at.selectbox(key="judgments_bin_pick").set_value("5").run()
    ok(at)
    assert set(dataframe_with(at, "raw")["role"]) == {"teacher"}


def test_judgments_page_labels_a_candidate_near_the_threshold(app_ws, judged):
    at = open_page("6_Judgments.py")
    queue = dataframe_with(at, "distance")
    assert len(queue) == 6  # twelve judged, four labeled, two unparsed
    target = app_ws.review_queue("judge-m", "pointwise_5", 5.0)["target_id"][0]
    pick = next(s for s in at.selectbox if s.key.startswith("judgments_queue_pick_"))
    pick.set_value(target).run()
    ok(at)
    at.radio(key=f"judgments_decision_queue_{target}").set_value("reject")
    at.button(key=f"judgments_save_queue_{target}").click().run()
    ok(at)
    assert any(s.value.startswith("Saved") and "reject" in s.value for s in at.success)
    assert metric(at, "Labels") == "5"
    assert target not in app_ws.review_queue("judge-m", "pointwise_5", 5.0)["target_id"].tolist()


def test_judgments_page_without_judgments_points_to_jobs(app_ws):
    at = open_page("6_Judgments.py")
    assert any("No judgments yet" in i.value for i in at.info)


def test_bin_samples_and_histogram_queries(app_ws, judged):
    hist = app_ws.judge_score_histogram("judge-m", "pointwise_5")
    by = {(r.role, None if pd.isna(r.bin_start) else r.bin_start): r.n for r in hist.itertuples()}
    assert by[("seed", 5.0)] == 2 and by[("teacher", 5.0)] == 2 and by[("seed", None)] == 1
    assert sum(hist["n"]) == 12

    five = app_ws.judge_bin_samples("judge-m", "pointwise_5", 5.0)
    assert len(five) == 4 and set(five["score"]) == {5.0}
    assert set(five["target_id"]) == {judged["seed"][0], judged["seed"][2], judged["teacher"][1], judged["teacher"][5]}
    assert five["instruction"].notna().all() and five["response"].notna().all()
    assert five.set_index("target_id").loc[judged["seed"][0], "raw"] == "Fine.\nScore: 5"

    unparsed = app_ws.judge_bin_samples("judge-m", "pointwise_5", None)
    assert set(unparsed["target_id"]) == {judged["seed"][3], judged["teacher"][4]}
    assert unparsed["score"].isna().all() and unparsed["parse_error"].notna().all()

    teacher_only = app_ws.judge_bin_samples("judge-m", "pointwise_5", 5.0, roles=["teacher"])
    assert set(teacher_only["role"]) == {"teacher"} and len(teacher_only) == 2
    # Bins of width 2: [4, 6) holds the fours and the fives.
    wide = app_ws.judge_bin_samples("judge-m", "pointwise_5", 4.0, bin_width=2)
    assert sorted(wide["score"]) == [4.0, 4.0, 4.0, 5.0, 5.0, 5.0, 5.0]

    # Pages of one: every target once, in score order.
    pages = [app_ws.judge_bin_samples("judge-m", "pointwise_5", 4.0, 2, page=p, page_size=1) for p in range(8)]
    ids = [p["target_id"][0] for p in pages if not p.empty]
    assert len(ids) == 7 and len(set(ids)) == 7 and pages[7].empty
    with pytest.raises(ValueError):
        app_ws.judge_bin_samples("judge-m", "pointwise_5", 5.0, page_size=51)
    with pytest.raises(ValueError):
        app_ws.judge_score_histogram("judge-m", "pointwise_5", bin_width=0)
    assert app_ws.judge_bin_samples("nobody", "pointwise_5", 5.0).empty


def test_score_histogram_figure_and_bin_selection(app_ws, judged):
    hist = app_ws.judge_score_histogram("judge-m", "pointwise_5")
    bins = charts.score_bins(hist, 1.0, 1, 5)
    assert list(bins) == ["1", "2", "3", "4", "5", charts.UNPARSED] and bins["4"] == 4.0 and bins["unparsed"] is None
    fig = charts.score_histogram(hist, 1.0, threshold=4.0, scale_min=1, scale_max=5)
    assert [t.name for t in fig.data] == ["seed", "teacher"]
    seed = fig.data[0]
    assert list(seed.x) == list(bins) and list(seed.y) == [1, 1, 0, 1, 2, 1]
    assert fig.layout.shapes[0].x0 == 2.5  # the threshold line at the start of bin "4"
    merged = charts.score_histogram(hist, 1.0, split_roles=False)
    assert len(merged.data) == 1 and sum(merged.data[0].y) == 12

    assert charts.selected_bin([{"x": "5", "y": 2, "curve_number": 1}], bins) == "5"
    assert charts.selected_bin([{"x": "7"}], bins) is None and charts.selected_bin([], bins) is None
    assert charts.score_bin_label(4.5, 0.5) == "4.5–5" and charts.score_bin_label(float("nan"), 1) == "unparsed"
    half = charts.score_bins(pd.DataFrame({"bin_start": [0.5]}), 0.5, 0, 1)
    assert list(half) == ["0–0.5", "0.5–1", "1–1.5"]

    sweep = app_ws.judge_evidence("judge-m", "pointwise_5").sweep()
    fig = charts.threshold_sweep(sweep, 4.0)
    assert {t.name for t in fig.data} >= {"precision", "recall", "kept share"}
    assert not charts.score_histogram(pd.DataFrame(columns=["role", "bin_start", "n"]), 1.0).data


def test_home_points_to_models_jobs_and_judgments(app_ws, judged):
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT).run()
    ok(at)
    pages = {link.proto.page for link in at.get("page_link")}  # a page link names its page
    assert {"Models", "Jobs", "Judgments"} <= pages


def test_judgments_page_pairwise_listwise_and_aspects(app_ws, judged):
    rids = judged["seed"]
    pair_ids = [(rids[0], rids[1]), (rids[2], rids[3])]
    requests = judge_mod.build_pairwise_requests([{"instruction": "q", "answer_a": "a", "answer_b": "b"}] * 2, 0)
    shown = {(0, False): "A", (0, True): "B", (1, False): "A", (1, True): "A"}  # pair 1 flips with the order
    app_ws.record_judgments(judge_mod.pairwise_rows("judge-m", pair_ids, requests,
                                                    [f"Winner: {shown[(r.index, r.swapped)]}" for r in requests]))
    app_ws.record_judgments(judge_mod.listwise_rows("judge-m", rids[:3], [2, 0, 1], "Ranking: 2 > 3 > 1"))
    app_ws.record_judgments(judge_mod.judgment_rows("zephyr_aspects", "judge-m", rids[:2],
                                                    ["Helpfulness score: 4", "Helpfulness score: 9"]))
    at = open_page("6_Judgments.py")
    ok(at)
    assert metric(at, "Order-flip rate") == "50%"
    for rubric, kept in (("pairwise", "score ≥"), ("listwise", "score ≤"), ("zephyr_aspects.helpfulness", "score ≥")):
        at.radio(key="judgments_rubric").set_value(rubric).run()
        ok(at)
        # Listwise scores are ranks (lower is better): its threshold keeps the scores at or below it.
        assert any(t.startswith(kept) for t in info_texts(at)), rubric
    at.radio(key="judgments_rubric").set_value("pairwise").run()
    at.selectbox(key="judgments_bin").set_value(0.5).run()
    at.selectbox(key="judgments_bin_pick").set_value("1–1.5").run()
    ok(at)
    assert set(dataframe_with(at, "raw")["role"]) == {"(pair)"}
