"""Home: the one next step for a workspace's state (core.home, pure), the counts set against what
a round needs, the tasks-by-review-state chart, the router's pages, and the defaults the step's
links land on (the Jobs page's judge tab, never the random test model)."""

from __future__ import annotations

import json

import pytest
from conftest import REPO, SMALL_PAIRS, dataframe_with, open_page, write_jsonl
from streamlit.testing.v1 import AppTest

from core import curate, home
from core import judge as judge_mod
from core.review_queue import QueueSource
from core.workspace import TEST_MODELS, ExploreFilter

# --------------------------------------------------------------------------------------------
# core.home.next_step: one step per state, on Overview values
# --------------------------------------------------------------------------------------------

DATA = {"datasets": 1, "instructions": 168, "responses": 168}


def judge_summary(labels: int, judged: int = 168, **kw) -> home.JudgeSummary:
    values = {"model": "smollm2-135m-instruct", "rubric": "pointwise_5", "kind": "pointwise", "judged": judged,
              "of_roles": 168, "roles": "seed", "labels": labels,
              "threshold": judge_mod.scale_of("pointwise_5").default_threshold} | kw
    return home.JudgeSummary(**values)


def test_an_empty_workspace_starts_with_an_import():
    step = home.next_step(home.Overview())
    assert (step.key, step.page, step.query_params) == ("import", "app_pages/1_Import.py", {})
    assert "empty" in step.why
    corpus_only = home.next_step(home.Overview(datasets=1, documents=245))
    assert corpus_only.key == "import" and "245 corpus documents" in corpus_only.why


def test_prompts_without_answers_go_to_the_generate_form():
    step = home.next_step(home.Overview(datasets=1, instructions=20))
    assert (step.key, step.page, step.query_params) == ("generate", "app_pages/5_Jobs.py", {"stage": "generate"})


def test_answers_without_a_judge_go_to_the_judge_form():
    step = home.next_step(home.Overview(**DATA))
    assert (step.key, step.page, step.query_params) == ("judge", "app_pages/5_Jobs.py", {"stage": "judge"})
    # Verdicts of the random test model do not count as a judge: judging is still the next step.
    noise = home.next_step(home.Overview(**DATA, judgments=168, only_test_judges=True))
    assert noise.key == "judge" and "random test model" in noise.why


def test_a_judge_with_few_labels_goes_to_the_review_queue_of_its_suggestions():
    step = home.next_step(home.Overview(**DATA, judgments=168, judge=judge_summary(labels=12)))
    assert step.key == "review" and step.page == "app_pages/9_Review.py"
    source = QueueSource.from_query(step.query_params)
    assert (source.kind, source.judge_model, source.rubric) == ("judge", "smollm2-135m-instruct", "pointwise_5")
    assert source.threshold == 5.0  # pointwise_5's default threshold (core.judge.scale_of)
    assert "12 of the 30" in step.why


def test_enough_labels_go_to_curate_then_a_snapshot_to_train():
    labelled = judge_summary(labels=home.MIN_JUDGE_LABELS)
    assert home.next_step(home.Overview(**DATA, judge=labelled)).key == "curate"
    # With fewer judged targets than the round's 30 labels, labelling all of them is enough.
    small = judge_summary(labels=6, judged=6)
    assert small.labels_needed == 6 and home.next_step(home.Overview(**DATA, judge=small)).key == "curate"
    train = home.next_step(home.Overview(**DATA, judge=labelled, snapshots=1, latest_snapshot="round1"))
    assert train.key == "train" and train.page == "app_pages/10_Train.py"
    assert "round1" in train.why and "Rounds page" in train.why


def test_a_running_demo_says_so_first():
    step = home.next_step(home.Overview(**DATA, demo_running=True))
    assert step.key == "demo" and step.page == "app_pages/2_Explore.py"


def test_round_goals_set_each_count_against_what_a_round_needs():
    goals = home.round_goals(home.Overview(**DATA, documents=245, judge=judge_summary(labels=12)))
    texts = [g.text() for g in goals]
    assert "Documents: 245 (corpus, not yet turned into instructions)" in texts
    assert "Judged responses: 168 of 168 (smollm2-135m-instruct · pointwise_5 · role seed)" in texts
    assert "Human labels on the judge: 12 of 30" in texts
    assert "Snapshots: 0 of 1" in texts
    labels = next(g for g in goals if g.label == "Human labels on the judge")
    assert labels.fraction == pytest.approx(12 / 30)


# --------------------------------------------------------------------------------------------
# core.home.overview and the store's queries, on a real workspace
# --------------------------------------------------------------------------------------------


def response_ids(ws) -> list[str]:
    ids = ws.explore_page(ExploreFilter())["id"].tolist()
    return [r["id"] for i in ids for r in ws.sample(i)["responses"]]


def judge_all(ws, model: str = "judge-m", score: int = 4) -> list[str]:
    rids = response_ids(ws)
    ws.record_judgments(judge_mod.judgment_rows("pointwise_5", model, rids, [f"Score: {score}"] * len(rids)))
    return rids


def test_overview_reads_the_judge_labels_snapshots_and_review_states(seeded_workspace):
    ws = seeded_workspace
    assert home.overview(ws).judge is None
    judge_all(ws, "tiny-random")
    o = home.overview(ws)
    assert o.judge is None and o.only_test_judges and "tiny-random" in TEST_MODELS

    rids = judge_all(ws)
    ws.review(rids[0], "accept")
    ws.review(rids[1], "reject")
    o = home.overview(ws)
    assert (o.judge.model, o.judge.rubric, o.judge.judged, o.judge.of_roles) == ("judge-m", "pointwise_5", 6, 6)
    assert o.judge.labels == 2 and o.judge.roles == "seed" and o.judge.threshold == 5.0
    assert home.next_step(o).key == "review"

    by_state = ws.store.tasks_by_review_state().set_index("task")
    assert by_state[["accepted", "rejected", "unreviewed"]].to_numpy().sum() == len(SMALL_PAIRS)
    assert by_state["accepted"].sum() == 1 and by_state["rejected"].sum() == 1

    for rid in rids[2:]:
        ws.review(rid, "accept")
    o = home.overview(ws)
    assert o.judge.labels == 6 and home.next_step(o).key == "curate"
    curate.create_snapshot(ws, {"datasets": ["small"]}, "round1")
    o = home.overview(ws)
    assert (o.snapshots, o.latest_snapshot) == (1, "round1") and home.next_step(o).key == "train"


# --------------------------------------------------------------------------------------------
# The Home page and the router
# --------------------------------------------------------------------------------------------


def shown_page(at: AppTest) -> str:
    """The title (as st.navigation registered it) of the page the last run showed."""
    return at._registered_pages[at._finished_page_script_hash]["page_name"]


def follow_next_step(at: AppTest) -> AppTest:
    """Click the Start-here card's button on a fresh session; return it on the page it opened."""
    label = at.button(key="home_next_step").label
    opened = open_page()
    assert opened.button(key="home_next_step").label == label
    opened.button(key="home_next_step").click().run()
    assert not opened.exception, opened.exception
    return opened


def chart_traces(at: AppTest, key: str) -> list[dict]:
    [chart] = [c for c in at.get("plotly_chart") if key in c.proto.id]
    return json.loads(chart.proto.spec)["data"]


def test_router_names_home_first_and_every_page(app_env):
    at = open_page()
    assert shown_page(at) == "Home"
    # AppTest keeps the pages st.navigation registered (title, URL path, file) in this attribute.
    pages = list(at._registered_pages.values())
    assert pages[0]["page_name"] == "Home" and pages[0]["url_pathname"] == ""  # the default page, at /
    titles = [p["page_name"] for p in pages]
    assert titles == ["Home", "Import", "Explore", "Models", "Jobs", "Review", "Judgments", "Difficulty & tasks",
                      "Curate", "Export", "Train", "Rounds", "Preferences", "Rankings", "Backtranslation",
                      "Categories", "Revisions"]
    assert "app" not in titles
    # The pages keep the URLs they had before the router (bookmarks still work).
    assert {p["url_pathname"] for p in pages[1:]} >= {"Explore", "Jobs", "Difficulty_and_Tasks", "Review", "Train",
                                                      "Rounds", "Preferences", "Revisions"}


def test_home_steps_from_import_to_judge_to_review(app_ws, pairs_file):
    at = open_page()
    assert at.subheader[0].value == "Start here: Import your data"
    assert shown_page(follow_next_step(at)) == "Import"

    app_ws.import_paths([pairs_file], "small")
    at.run()
    assert not at.exception, at.exception
    assert at.subheader[0].value == "Start here: Score the answers with a judge"
    jobs = follow_next_step(at)  # the Jobs page, on the judge tab, on a real model
    assert shown_page(jobs) == "Jobs" and jobs.query_params == {"stage": "judge"}
    assert jobs.session_state["jobs_stage_tab"] == "Judge"
    assert jobs.selectbox(key="jobs_judge_model").value == app_ws.default_model() not in TEST_MODELS
    traces = chart_traces(at, "home_chart_review_state")
    assert [t["name"] for t in traces] == ["accepted", "rejected", "not reviewed"]
    assert sum(traces[2]["x"]) == len(SMALL_PAIRS) and sum(traces[0]["x"]) == 0

    rids = judge_all(app_ws)
    app_ws.review(rids[0], "reject")
    at.run()
    assert not at.exception, at.exception
    assert at.subheader[0].value == "Start here: Label the judge's most uncertain samples"
    review = follow_next_step(at)
    assert shown_page(review) == "Review"
    source = QueueSource.from_query(review.query_params)
    assert (source.kind, source.judge_model, source.rubric) == ("judge", "judge-m", "pointwise_5")
    assert source.threshold == 5.0
    progress = [p.proto.text for p in at.get("progress")]
    assert any("Human labels on the judge" in t and "1 of 6" in t for t in progress), progress
    traces = chart_traces(at, "home_chart_review_state")
    assert sum(traces[1]["x"]) == 1 and sum(traces[2]["x"]) == len(SMALL_PAIRS) - 1


# --------------------------------------------------------------------------------------------
# The pages the steps open: the named tab, a real model by default
# --------------------------------------------------------------------------------------------


def tab_container(at: AppTest, key: str):
    def walk(node):
        for child in getattr(node, "children", {}).values():
            proto = getattr(child, "proto", None)
            if proto is not None and hasattr(proto, "tab_container") and key in proto.tab_container.id:
                return child
            found = walk(child)
            if found is not None:
                return found
        return None

    found = walk(at.main)
    assert found is not None, f"no tabs with key {key!r}"
    return found


def open_jobs(stage: str | None) -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=30).run()
    at.switch_page("app_pages/5_Jobs.py")
    if stage:
        at.query_params["stage"] = stage
    at.run()
    assert not at.exception, at.exception
    return at


def test_jobs_opens_the_tab_the_link_names_on_a_real_model(app_ws, tmp_path):
    app_ws.import_paths([write_jsonl(tmp_path / "p.jsonl", SMALL_PAIRS)], "small")
    at = open_jobs("judge")
    tabs = tab_container(at, "jobs_stage_tab")
    labels = [t.label for t in tabs.children.values()]
    assert labels[tabs.proto.tab_container.default_tab_index] == "Judge"
    assert at.session_state["jobs_stage_tab"] == "Judge"
    # Every model selectbox starts on a real model; the test model is listed, marked, and last.
    models = [s for s in at.selectbox if s.key and s.key.endswith("_model")]
    assert {s.key for s in models} >= {"jobs_judge_model", "jobs_generate_model"}
    for box in models:
        assert box.value not in TEST_MODELS and box.value == app_ws.default_model()
        assert box.options[-1] == "tiny-random (test model: random output)"
    # The rubric reads in full: its name with what it does.
    rubric = at.selectbox(key="jobs_judge_rubric")
    assert "pointwise_5 · Humpback-style self-curation" in " ".join(rubric.options)

    assert tab_container(open_jobs("generate"), "jobs_stage_tab").proto.tab_container.default_tab_index == 0
    plain = open_jobs(None)  # no ?stage=: the first tab, as before
    assert tab_container(plain, "jobs_stage_tab").proto.tab_container.default_tab_index == 0
    assert tab_container(open_jobs("nonsense"), "jobs_stage_tab").proto.tab_container.default_tab_index == 0


def test_models_page_marks_the_test_model(app_ws):
    at = open_page("4_Models.py")

    table = dataframe_with(at, "backend").set_index("name")
    assert table.loc["tiny-random", "note"] == "test model (random output)"
    assert table.loc["smollm2-135m-instruct", "note"] == ""
    box = at.selectbox(key="models_try_model")
    assert box.value == "smollm2-135m-instruct" and "tiny-random (test model: random output)" in box.options


def test_review_state_bars_stack_escape_and_fold():
    import pandas as pd

    from core import charts

    df = pd.DataFrame({"task": ["<b>math</b>", "code"] + [f"t{i}" for i in range(5)],
                       "accepted": [3, 0, 1, 1, 1, 1, 1], "rejected": [1, 2, 0, 0, 0, 0, 0],
                       "unreviewed": [6, 1, 0, 0, 0, 0, 0]})
    fig = charts.review_state_bars(df, max_bars=4)
    assert fig.layout.barmode == "stack" and [t.name for t in fig.data] == ["accepted", "rejected", "not reviewed"]
    labels = list(fig.data[0].y)
    assert labels[-1] == "&lt;b&gt;math&lt;/b&gt;"  # the largest task on top, its label shown literally
    assert "(other)" in labels and len(labels) == 4
    other = labels.index("(other)")
    assert fig.data[0].x[other] == 4  # t1 … t4 summed (math, code and t0 keep their bars)
    assert "11 of 18 instructions reviewed" in fig.layout.title.text
    assert fig.layout.xaxis.dtick >= 1 and fig.layout.xaxis.tickformat == ",d"
    assert charts.review_state_bars(df.iloc[0:0]).layout.annotations[0].text == "no instructions yet"
