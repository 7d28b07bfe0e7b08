"""AppTest tests for the Curate page (app_pages/8_Curate.py) and the curation part of Explore's sample
view, against real workspaces built through the API: data/seed.jsonl imported, judgments recorded
with Workspace.record_judgments, snapshots made with core.curate."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import dataframe_with, metric, open_page, texts
from streamlit.testing.v1 import AppTest

from core import charts, curate, demo, tasks
from core import curate_views as views
from core.judge import judgment_id
from core.store import ExploreFilter
from core.workspace import Workspace

JUDGE, RUBRIC = "jm", "pointwise_5"
JUDGE_KEY = views.judge_key(JUDGE, RUBRIC)

# --------------------------------------------------------------------------------------------
# Fixtures and helpers
# --------------------------------------------------------------------------------------------


@pytest.fixture
def seeded(app_ws) -> Workspace:
    app_ws.import_paths([demo.SEED_FILE], "seed", fmt="alpaca")
    return app_ws


def seed_samples(ws: Workspace) -> pd.DataFrame:
    """(instruction_id, response_id, task, instruction) of every seed response, in insertion order."""
    return ws.store.export_pairs(ExploreFilter(), ["seed"], False)[["instruction_id", "response_id", "task",
                                                                     "instruction"]]


def verdicts_for(k: int) -> list[float | None]:
    """Response k's verdicts: one score 1–5 by k; every 7th two verdicts (a mean); every 11th unparsed."""
    if k % 11 == 0:
        return [None]
    if k % 7 == 0:
        return [float(k % 5 + 1), float(min(5, k % 5 + 2))]
    return [float(k % 5 + 1)]


def judgment_rows(response_ids, judge: str = JUDGE, rubric: str = RUBRIC, verdicts=verdicts_for) -> list[dict]:
    rows = []
    for k, rid in enumerate(response_ids):
        for n, score in enumerate(verdicts(k)):
            row = {"target_kind": "response", "target_id": rid, "judge_model": judge, "rubric": rubric,
                   "kind": "pointwise", "score": score, "scale_max": 5,
                   "raw": "no score here" if score is None else f"Score: {score:g} (verdict {n})",
                   "parse_error": "no score line" if score is None else None, "rationale": None, "round": 0,
                   "template_hash": "t", "params": "{}", "mode": "generate", "call_error": None}
            row["id"] = judgment_id(row)
            rows.append(row)
    return rows


def mean_scores(response_ids, verdicts=verdicts_for) -> dict[str, float | None]:
    """The reference: each response's mean parsed score (None: no parsed verdict), in pure Python."""
    out = {}
    for k, rid in enumerate(response_ids):
        parsed = [s for s in verdicts(k) if s is not None]
        out[rid] = sum(parsed) / len(parsed) if parsed else None
    return out


@pytest.fixture
def judged(seeded) -> tuple[Workspace, pd.DataFrame, dict]:
    samples = seed_samples(seeded)
    seeded.record_judgments(judgment_rows(samples["response_id"]))
    return seeded, samples, mean_scores(samples["response_id"])


def kept(means: dict, lo: float | None = None, hi: float | None = None) -> set[str]:
    return {r for r, m in means.items() if m is not None and (lo is None or m >= lo) and (hi is None or m <= hi)}


def ok(at: AppTest) -> None:
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]


def judge_spec(lo: float, **extra) -> dict:
    return {"judges": [{"judge": JUDGE, "rubric": RUBRIC, "min": lo}], **extra}


# --------------------------------------------------------------------------------------------
# Empty states
# --------------------------------------------------------------------------------------------


def test_curate_empty_workspace_says_import_first(app_ws):
    at = open_page("8_Curate.py")
    ok(at)
    assert any("empty" in i.value and "import" in i.value for i in at.info)
    assert any("Import" in link.value for link in at.get("page_link"))


def test_curate_without_judgments_or_snapshots_says_what_to_do(seeded):
    at = open_page("8_Curate.py")
    ok(at)
    n = len(seed_samples(seeded))
    assert metric(at, "Samples now") == f"{n:,}" and metric(at, "After filters") == f"{n:,}"
    infos = [i.value for i in at.info]
    assert any(i.startswith("No judgments yet:") for i in infos), infos
    assert any(i.startswith("No snapshots yet:") for i in infos), infos
    assert "No MFD yet" in "\n".join(c.value for c in at.caption).replace("\\", "")
    assert "No rule yet" in texts(at)
    preview = dataframe_with(at, "response")
    assert len(preview) == views.PREVIEW_ROWS and set(preview["task"]) <= set(seed_samples(seeded)["task"])


# --------------------------------------------------------------------------------------------
# Live counts
# --------------------------------------------------------------------------------------------


def test_judge_min_slider_changes_the_live_count_to_the_reference(judged):
    ws, samples, means = judged
    at = open_page("8_Curate.py")
    at.number_input(key="curate_n_judges").set_value(1).run()
    ok(at)
    assert at.selectbox(key="curate_judge_0").value == JUDGE_KEY
    for lo in (4.0, 2.5, 1.0, 5.0):
        at.slider(key="curate_judge_min_0").set_value(lo).run()
        ok(at)
        expected = kept(means, lo)
        assert metric(at, "After filters") == f"{len(expected):,}", lo
        # Per task, from the reference too.
        table = dataframe_with(at, "after filters").set_index("task")
        by_task = samples.assign(keep=samples["response_id"].isin(expected)).groupby("task")["keep"].sum()
        assert table["after filters"].to_dict() == {t: int(n) for t, n in by_task.items()}
        assert table["now"].sum() == len(samples)
        rules = next(df.value for df in at.dataframe if "rule" in df.value.columns).set_index("rule")["dropped"]
        assert rules[f"judge {JUDGE}/{RUBRIC}: no verdict"] == sum(m is None for m in means.values())
        assert rules[f"judge {JUDGE}/{RUBRIC} min {lo:g}"] == sum(m is not None and m < lo for m in means.values())
    # The preview shows kept samples only, with the judge's score.
    preview = dataframe_with(at, f"score {JUDGE}/{RUBRIC}")
    assert (preview[f"score {JUDGE}/{RUBRIC}"] >= 5.0).all() and len(preview) == min(20, len(kept(means, 5.0)))

    # A maximum too.
    at.slider(key="curate_judge_min_0").set_value(2.0).run()
    at.checkbox(key="curate_judge_has_max_0").check().run()
    at.slider(key="curate_judge_max_0").set_value(3.5).run()
    ok(at)
    assert metric(at, "After filters") == f"{len(kept(means, 2.0, 3.5)):,}"


def test_live_counts_see_new_judgments(judged):
    ws, samples, means = judged
    at = open_page("8_Curate.py")
    at.number_input(key="curate_n_judges").set_value(1).run()
    at.slider(key="curate_judge_min_0").set_value(4.0).run()
    before = len(kept(means, 4.0))
    assert metric(at, "After filters") == f"{before:,}"
    # A second, high verdict on a response that had none parsed: the cached count is not reused.
    unjudged = [r for r, m in means.items() if m is None][0]
    ws.record_judgments(judgment_rows([unjudged], verdicts=lambda k: [5.0]))
    at.run()
    assert metric(at, "After filters") == f"{before + 1:,}"


def test_other_filters_and_a_rebalancing_plan(judged):
    ws, samples, means = judged
    at = open_page("8_Curate.py")
    at.multiselect(key="curate_tasks").set_value(["math", "reasoning"]).run()
    ok(at)
    assert metric(at, "After filters") == str(int(samples["task"].isin(["math", "reasoning"]).sum()))
    at.multiselect(key="curate_tasks").set_value([]).run()
    at.radio(key="curate_rebalance").set_value("tapir").run()
    at.number_input(key="curate_rebalance_size").set_value(120).run()
    ok(at)
    assert metric(at, "After rebalancing") == "120"
    table = dataframe_with(at, "after rebalancing").set_index("task")["after rebalancing"]
    assert table["math"] == 20 and table["reasoning"] == 20  # 1/6 of 120
    assert any("rebalance: {target: tapir, size: 120, seed: 0}" in c.value for c in at.code)


# --------------------------------------------------------------------------------------------
# The spec as YAML
# --------------------------------------------------------------------------------------------


def test_paste_a_yaml_spec_into_the_builder(judged):
    ws, samples, means = judged
    at = open_page("8_Curate.py")
    at.text_area(key="curate_paste").set_value(f"judges:\n  - {{judge: {JUDGE}, rubric: {RUBRIC}, min: 4}}\n"
                                               "weights: {default: 1.5}\n")
    at.button(key="curate_load").click().run()
    ok(at)
    assert any("loaded" in s.value for s in at.success)
    assert at.session_state["curate_n_judges"] == 1 and at.session_state["curate_judge_min_0"] == 4.0
    assert at.session_state["curate_weight_default"] == 1.5
    assert metric(at, "After filters") == f"{len(kept(means, 4.0)):,}"
    assert "min: 4.0" in "\n".join(c.value for c in at.code)

    # A spec the builder cannot show is used as YAML, as is.
    at.text_area(key="curate_paste").set_value(f"judges: [{{judge: {JUDGE}, rubric: {RUBRIC}, min: 2, max: 4}}]\n"
                                               "weights: {rules: [{when: {roles: [seed]}, weight: 3}]}\n")
    at.button(key="curate_load").click().run()
    assert not at.exception, at.exception
    assert at.radio(key="curate_source").value == "yaml"
    assert metric(at, "After filters") == f"{len(kept(means, 2.0, 4.0)):,}"

    # An invalid spec names the key and the value; nothing is counted.
    at.text_area(key="curate_yaml").set_value("review: maybe\n").run()
    assert any("review" in e.value and "maybe" in e.value for e in at.error)
    assert not [m for m in at.metric if m.label == "After filters"]


def test_builder_round_trips_and_yaml_is_minimal():
    text = """
    kind: sft
    datasets: [seed]
    tasks: [math]
    review: not_rejected
    min_chars: 20
    judges: [{judge: m, rubric: pointwise_5, min: 4}, {judge: n, rubric: pointwise_10, max: 9}]
    mfd_min: 0.5
    ifd_min: 0.2
    ifd_max: 0.9
    difficulty: {round: 1, mfd_source: m/pointwise_10}
    dedup: {threshold: 0.9, judge: m, rubric: pointwise_5}
    rebalance: {target: {math: "1/6", open_qa: 0.5}, size: 60, seed: 3}
    weights: {default: 1.0, rules: [{when: {task: [math], mfd_min: 1.0}, weight: 2.0}]}
    system_tags: {default: Be brief., rules: [{when: {dataset: [seed]}, tag: "Answer as an AI assistant."}]}
    """
    spec = curate.load_spec(text)
    assert curate.load_spec(views.spec_from_widgets(views.widgets_from_spec(spec))) == spec
    assert curate.load_spec(views.spec_yaml(spec)) == spec
    assert views.spec_yaml({}) == "kind: sft\nroles: [seed]\n"
    with pytest.raises(views.NotRepresentable, match="mfd_max"):
        views.widgets_from_spec({"mfd_max": 2})
    assert views.parse_shares("math: 1/6, open_qa: 0.5") == {"math": "1/6", "open_qa": 0.5}


# --------------------------------------------------------------------------------------------
# Snapshots
# --------------------------------------------------------------------------------------------


def test_save_a_snapshot_then_refuse_the_same_name(judged):
    ws, samples, means = judged
    at = open_page("8_Curate.py")
    at.number_input(key="curate_n_judges").set_value(1).run()
    at.slider(key="curate_judge_min_0").set_value(4.0).run()
    at.text_input(key="curate_snapshot_name").set_value("high").run()
    at.button(key="curate_save").click().run()
    ok(at)
    rows = curate.snapshots(ws)
    assert [r["name"] for r in rows] == ["high"]
    assert rows[0]["n_members"] == len(kept(means, 4.0))
    assert any(f"{len(kept(means, 4.0)):,} members" in s.value for s in at.success)
    assert rows[0]["content_hash"] in [c.value for c in at.code]
    members = pq.read_table(curate.snapshot(ws, "high").parquet_path).column("response_id").to_pylist()
    assert set(members) == kept(means, 4.0)
    assert dataframe_with(at, "instructions")["name"].tolist() == ["high"]
    # Under the saved snapshot and in the Inspect tab: a link that opens it in the review queue.
    queue_links = [link for link in at.get("page_link") if link.proto.label == "Review this snapshot in the queue"]
    assert len(queue_links) == 2 and all("snapshot=high" in link.proto.query_string for link in queue_links)

    # The same name again, even with other filters, is refused with a clear message.
    at.slider(key="curate_judge_min_0").set_value(2.0).run()
    at.button(key="curate_save").click().run()
    assert not at.exception, at.exception
    assert any("exists already" in e.value and "immutable" in e.value for e in at.error)
    assert len(curate.snapshots(ws)) == 1 and curate.snapshot(ws, "high").n_members == len(kept(means, 4.0))

    # A bad name is refused too.
    at.text_input(key="curate_snapshot_name").set_value("no spaces allowed").run()
    at.button(key="curate_save").click().run()
    assert any("invalid" in e.value for e in at.error)


def test_diff_two_snapshots(judged):
    ws, samples, means = judged
    curate.create_snapshot(ws, judge_spec(4.0), "a")
    curate.create_snapshot(ws, judge_spec(2.0, weights={"default": 2.0}), "b")
    at = open_page("8_Curate.py")
    at.selectbox(key="curate_diff_a").set_value("a").run()
    at.selectbox(key="curate_diff_b").set_value("b").run()
    ok(at)
    high, low = kept(means, 4.0), kept(means, 2.0)
    assert metric(at, "Only in A") == "0"
    assert metric(at, "Only in B") == f"{len(low - high):,}"
    assert metric(at, "Weight or copies changed") == f"{len(high):,}"  # weight 1 → 2
    per_task = dataframe_with(at, "only_b").set_index("task")
    task_of = dict(zip(samples["response_id"], samples["task"], strict=True))
    for task, row in per_task.iterrows():
        assert row["only_b"] == sum(task_of[r] == task for r in low - high)
        assert row["in_a"] == sum(task_of[r] == task for r in high)


def test_export_a_snapshot_with_a_weight_column(judged):
    ws, samples, means = judged
    curate.create_snapshot(ws, judge_spec(3.0, weights={"default": 1.0, "rules": [
        {"when": {"tasks": ["math"]}, "weight": 2.5}]}), "weighted")
    at = open_page("8_Curate.py")
    assert at.selectbox(key="curate_export_format").value == "alpaca"
    at.button(key="curate_export").click().run()
    ok(at)
    path = ws.exports_dir / "weighted.alpaca.jsonl"
    assert path.exists() and str(path) in [c.value for c in at.code]
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(records) == len(kept(means, 3.0))
    assert all("weight" in r and {"instruction", "input", "output"} <= set(r) for r in records)
    math_texts = set(samples.loc[samples["task"] == "math", "instruction"])
    assert {r["weight"] for r in records if r["instruction"] in math_texts} == {2.5}
    assert {r["weight"] for r in records if r["instruction"] not in math_texts} == {1.0}
    assert at.get("download_button")

    # Parquet, messages.
    at.selectbox(key="curate_export_format").set_value("messages").run()
    at.radio(key="curate_export_type").set_value("parquet").run()
    at.button(key="curate_export").click().run()
    ok(at)
    table = pq.read_table(ws.exports_dir / "weighted.messages.parquet")
    assert "weight" in table.column_names and table.num_rows == len(records)

    # A preference export of an sft snapshot says why not.
    at.selectbox(key="curate_export_format").set_value("preference").run()
    at.button(key="curate_export").click().run()
    assert any("preference" in e.value for e in at.error)


def test_why_in_and_why_out_on_the_curate_page(judged):
    ws, samples, means = judged
    curate.create_snapshot(ws, judge_spec(4.0), "high")
    low = next(r for r, m in means.items() if m is not None and m < 4.0)
    at = open_page("8_Curate.py")
    at.selectbox(key="curate_why_against").set_value("high").run()
    at.text_input(key="curate_why_id").set_value(low).run()
    ok(at)
    assert f"out: judge {JUDGE}/{RUBRIC} min 4 (value {means[low]:g})" in texts(at)
    high = next(r for r, m in means.items() if m is not None and m >= 4.0)
    at.text_input(key="curate_why_id").set_value(high).run()
    assert "in (weight 1)" in texts(at)
    at.text_input(key="curate_why_id").set_value("no-such-id").run()
    assert any("no instruction or response" in w.value for w in at.warning)


# --------------------------------------------------------------------------------------------
# Explore's sample view
# --------------------------------------------------------------------------------------------


def test_explore_sample_view_shows_labels_scores_and_why_out(judged):
    ws, samples, means = judged
    curate.create_snapshot(ws, judge_spec(4.0), "high")
    first_page = set(ws.explore_page(ExploreFilter(), 0, 50)["id"])
    row = next(r for r in samples.itertuples() if r.instruction_id in first_page
               and means[r.response_id] is not None and means[r.response_id] < 4.0)
    at = open_page("2_Explore.py")
    next(s for s in at.selectbox if s.label == "Open sample").set_value(row.instruction_id).run()
    ok(at)
    shown = texts(at)
    assert f"Current task: {row.task}" in shown and "source: import" in shown
    scores = dataframe_with(at, "verdicts")
    assert scores["score"].tolist() == [means[row.response_id]] and scores["judge"].tolist() == [JUDGE]
    assert "No MFD or IFD computed yet" in shown

    at.selectbox(key="explore_snapshot").set_value("high").run()
    ok(at)
    assert f"Snapshot high: out: judge {JUDGE}/{RUBRIC} min 4 (value {means[row.response_id]:g})" in texts(at)
    why = dataframe_with(at, "duplicate of")
    assert why["in"].tolist() == ["out"] and why["rule"].tolist() == [f"judge {JUDGE}/{RUBRIC} min 4"]


def test_explore_sample_view_difficulty_and_no_snapshots(seeded):
    samples = seed_samples(seeded)
    first = seeded.explore_page(ExploreFilter(), 0, 1)["id"][0]
    seeded.store.curate_insert_difficulty([
        {"id": "d1", "instruction_id": first, "round": 0, "metric": "mfd", "source": "jm/pointwise_10", "value": 2.5},
        {"id": "d2", "instruction_id": first, "round": 1, "metric": "mfd", "source": "jm/pointwise_10", "value": -1.0},
        {"id": "d3", "instruction_id": samples["instruction_id"][1], "round": 0, "metric": "ifd", "source": "s/teacher",
         "value": 0.7},
    ])
    tasks.relabel(seeded, first, "brainstorming", reviewer="ann")
    at = open_page("2_Explore.py")
    next(s for s in at.selectbox if s.label == "Open sample").set_value(first).run()
    ok(at)
    assert "Current task: brainstorming" in texts(at) and "source: human" in texts(at)
    history = dataframe_with(at, "classifier")
    assert history[["value", "classifier", "reviewer"]].values.tolist() == [["brainstorming", "human", "ann"]]
    table = dataframe_with(at, "metric")
    values = {(m, s, r): v for m, s, r, v in table[["metric", "source", "round", "value"]].itertuples(index=False)}
    assert values[("mfd", "jm/pointwise_10", 0)] == 2.5 and values[("mfd", "jm/pointwise_10", 1)] == -1.0
    assert pd.isna(values[("ifd", "s/teacher", 0)])  # another instruction's IFD: no value here
    assert "No snapshots yet" in texts(at) and "No judge scores yet" in texts(at)

    # The MFD rule on the Curate page reads the same values.
    at = open_page("8_Curate.py")
    at.checkbox(key="curate_mfd_on").check().run()
    at.slider(key="curate_mfd_min").set_value(0.0).run()
    ok(at)
    assert metric(at, "After filters") == "0"  # the latest round (1) has MFD -1
    at.selectbox(key="curate_round").set_value("0").run()
    assert metric(at, "After filters") == "1"


def test_curate_counts_bars_figure():
    per_task = pd.DataFrame({"task": ["math", "<b>x</b>"], "before": [10, 5], "after": [4, 5], "planned": [6, 4]})
    fig = charts.curate_counts_bars(per_task)
    assert [t.name for t in fig.data] == ["now", "after filters", "after rebalancing"]
    assert list(fig.data[1].y) == [4, 5] and list(fig.data[0].x) == ["math", "&lt;b&gt;x&lt;/b&gt;"]
    assert fig.layout.barmode == "group"
    assert len(charts.curate_counts_bars(per_task.drop(columns="planned")).data) == 2
    assert charts.curate_counts_bars(per_task.iloc[0:0]).layout.annotations



# --------------------------------------------------------------------------------------------
# Judge trust beside the rules that use its scores, and snapshots into the review queue (issue 12)
# --------------------------------------------------------------------------------------------


def test_a_judge_at_chance_is_flagged_beside_its_rule_and_a_snapshot_links_its_queue(judged):
    from urllib.parse import parse_qs

    from core.review_queue import QueueSource

    ws, samples, means = judged
    # Labels by parity: the judge's k % 5 + 1 scores say nothing about them.
    for k, rid in enumerate(samples["response_id"][:40]):
        ws.review(rid, "accept" if k % 2 == 0 else "reject")
    trust = ws.judge_trust(JUDGE, RUBRIC)
    assert trust.status == "at_chance" and trust.more_labels > 0
    curate.create_snapshot(ws, judge_spec(4.0), "high")
    at = open_page("8_Curate.py")
    at.number_input(key="curate_n_judges").set_value(1).run()
    ok(at)
    flag = f"{JUDGE} · {RUBRIC}: {trust.sentence()}"
    sidebar = [w.value.replace("\\", "") for w in at.sidebar.warning]
    assert flag in sidebar, sidebar                        # beside the rule ...
    assert flag in [w.value.replace("\\", "") for w in at.main.warning]  # ... and over the live counts
    # The Inspect tab opens the snapshot's members in the review queue, and flags its judge too.
    [link] = [link for link in at.get("page_link") if link.proto.label == "Review this snapshot in the queue"]
    source = QueueSource.from_query({k: v[0] for k, v in parse_qs(link.proto.query_string).items()})
    assert (source.kind, source.snapshot) == ("snapshot", "high") and link.proto.page == "Review"
