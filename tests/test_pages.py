"""AppTest tests for every page, against real workspaces in temporary folders.

Each test points $WINNOW_WORKSPACE at its own folder; `ui.workspace()` caches one Workspace per
resolved path, so tests never share a catalog. The fixture releases the cached workspaces (which
closes them and stops their owner threads) when the test ends.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import REPO, SMALL_PAIRS, dataframe_with, metric, open_page, texts, write_jsonl
from streamlit.testing.v1 import AppTest

from core import charts
from core.workspace import ExploreFilter, Workspace

# --------------------------------------------------------------------------------------------
# Fixtures and helpers
# --------------------------------------------------------------------------------------------


@pytest.fixture
def seeded(app_ws, pairs_file) -> Workspace:
    app_ws.import_paths([pairs_file], "small")
    return app_ws




def widget_by_label(widgets, label: str):
    found = [w for w in widgets if w.label == label]
    assert found, f"no widget labelled {label!r} in {[w.label for w in widgets]}"
    return found[0]


# --------------------------------------------------------------------------------------------
# Home
# --------------------------------------------------------------------------------------------


def test_home_empty_workspace_points_to_import_and_demo(app_env):
    at = open_page()
    assert metric(at, "Datasets") == "0"
    assert at.subheader[0].value == "Start here: Import your data"
    assert any("workspace is empty" in m.value for m in at.markdown)
    assert at.button(key="home_next_step").label == "Import a file"
    assert "winnow init --demo" in texts(at)
    assert str(app_env.resolve()) in texts(at)


def test_home_shows_datasets_counts_and_rejects(seeded, tmp_path):
    bad = write_jsonl(tmp_path / "bad.jsonl", [SMALL_PAIRS[0] | {"instruction": "A new question?"},
                                                {"instruction": 42, "output": "x"}])
    seeded.import_paths([bad], "other", skip_invalid=True)
    at = open_page()
    assert metric(at, "Datasets") == "2"
    assert metric(at, "Instructions") == "7"
    assert metric(at, "Responses") == "7"
    assert metric(at, "Rejected rows") == "1"
    datasets = dataframe_with(at, "kind")
    assert datasets.set_index("name").loc["small", "instructions"] == 6
    assert datasets.set_index("name").loc["other", "rejected_rows"] == 1
    roles = dataframe_with(at, "role")
    assert roles.set_index("role").loc["seed", "responses"] == 7
    tasks = dataframe_with(at, "task")  # tasks by review state: nothing reviewed yet
    assert tasks.set_index("task").loc["math", "unreviewed"] == 2
    assert any("rejected on import" in w.value for w in at.warning)
    assert at.subheader[0].value != "Start here: Import your data"  # the next step has moved on


# --------------------------------------------------------------------------------------------
# Import
# --------------------------------------------------------------------------------------------


def test_import_without_upload_shows_instructions(app_ws):
    at = open_page("1_Import.py")
    assert any("Nothing is written until you press Import" in i.value for i in at.info)
    assert not [b for b in at.button if b.key in ("import_check_button", "import_button")]
    assert "No imports yet." in texts(at)


def test_import_upload_check_then_import(app_ws, pairs_file):
    at = open_page("1_Import.py")
    at.file_uploader(key="import_file").set_value(("my pairs.jsonl", pairs_file.read_bytes(), "application/jsonl"))
    at.run()
    assert not at.exception, at.exception
    assert at.text_input(key="import_dataset").value == "my pairs"
    assert at.button(key="import_check_button")
    assert not [b for b in at.button if b.key == "import_button"]  # no import before a check

    at.button(key="import_check_button").click().run()
    assert not at.exception, at.exception
    assert metric(at, "Detected format") == "alpaca"
    assert metric(at, "Rows read") == "6"
    assert metric(at, "Valid") == "6"
    assert metric(at, "Invalid") == "0"
    preview = dataframe_with(at, "instruction")
    assert len(preview) == 5 and preview["instruction"][0] == SMALL_PAIRS[0]["instruction"]
    assert app_ws.stats()["instructions"] == 0  # checking writes nothing
    saved = list(app_ws.uploads_dir.rglob("*.jsonl"))
    assert [p.name for p in saved] == ["my_pairs.jsonl"]
    assert saved[0].read_bytes() == pairs_file.read_bytes()

    at.text_input(key="import_dataset").set_value("uploaded").run()
    at.button(key="import_button").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert any("6 new" in s.value for s in at.success)
    assert app_ws.store.datasets().set_index("name").loc["uploaded", "instructions"] == 6
    recent = dataframe_with(at, "n_new")
    assert recent["dataset"].tolist() == ["uploaded"] and recent["n_new"].tolist() == [6]


def test_import_invalid_rows_rejected_unless_skipped(app_ws):
    rows = [json.dumps(SMALL_PAIRS[0]), json.dumps(SMALL_PAIRS[1]), '{"instruction": "", "output": "empty"}', "{not json"]
    at = open_page("1_Import.py")
    at.file_uploader(key="import_file").set_value(("mixed.jsonl", "\n".join(rows).encode(), "application/jsonl"))
    at.run()
    at.button(key="import_check_button").click().run()
    assert metric(at, "Valid") == "2"
    assert metric(at, "Invalid") == "2"
    problems = "\n".join(c.value for c in at.code)
    assert "line 3" in problems and "line 4" in problems

    at.button(key="import_button").click().run()
    assert not at.exception, at.exception
    assert any("Nothing was imported" in e.value for e in at.error)
    assert app_ws.stats()["instructions"] == 0

    at.checkbox(key="import_skip_invalid").check().run()
    at.button(key="import_button").click().run()
    assert not at.error, [e.value for e in at.error]
    assert app_ws.stats()["instructions"] == 2
    assert app_ws.stats()["import_rejects"] == 2
    rejects = dataframe_with(at, "reason")
    assert sorted(rejects["line"].tolist()) == [3, 4]


def test_import_unreadable_file_and_bad_dataset_name(app_ws):
    at = open_page("1_Import.py")
    at.file_uploader(key="import_file").set_value(("odd.jsonl", b'{"foo": 1}\n', "application/jsonl"))
    at.run()
    at.button(key="import_check_button").click().run()
    assert "cannot tell the format" in "\n".join(c.value for c in at.code)
    at.button(key="import_button").click().run()
    assert at.error and app_ws.stats()["datasets"] == 0

    at.file_uploader(key="import_file").set_value(("ok.jsonl", json.dumps(SMALL_PAIRS[0]).encode(), "application/jsonl"))
    at.run()
    at.text_input(key="import_dataset").set_value("../etc").run()
    at.button(key="import_check_button").click().run()
    at.button(key="import_button").click().run()
    assert not at.exception, at.exception
    assert any("is invalid" in e.value for e in at.error)
    assert app_ws.stats()["datasets"] == 0


def test_import_helpers(app_ws, tmp_path):
    import ui

    assert ui.safe_filename("../../etc/pass wd.jsonl") == "pass_wd.jsonl"
    assert ui.safe_filename("C:\\Users\\me\\.data.csv") == "data.csv"
    assert ui.safe_filename("...") == "file"
    assert ui.upload_too_large(ui.MAX_UPLOAD_BYTES) is None
    assert "200 MB" in ui.upload_too_large(ui.MAX_UPLOAD_BYTES + 1)
    path, checks = ui.check_upload(app_ws, "../x.parquet.jsonl", b'{"prompt": "Hi?"}\n', "auto")
    assert path.parent.parent == app_ws.uploads_dir and path.name == "x.parquet.jsonl"
    assert checks[0].format == "prompts" and checks[0].ok
    frame = ui.checks_frame(checks)
    assert frame.to_dict("records")[0] | {"file": ""} == {"file": "", "format": "prompts", "rows read": 1,
                                                         "valid": 1, "invalid": 0, "status": "ok"}
    assert app_ws.stats()["instructions"] == 0
    out = ui.export_path(app_ws, "../../evil.jsonl", "parquet")
    assert out == app_ws.exports_dir / "evil.parquet"


# --------------------------------------------------------------------------------------------
# Explore
# --------------------------------------------------------------------------------------------


def test_explore_filters_change_the_count(seeded):
    at = open_page("2_Explore.py")
    assert metric(at, "Matching instructions") == "6"
    assert len(dataframe_with(at, "instruction")) == 6

    at.multiselect(key="explore_tasks").set_value(["math"]).run()
    assert not at.exception, at.exception
    assert metric(at, "Matching instructions") == "1"
    page = dataframe_with(at, "instruction")
    assert page["instruction"].tolist() == ["What is 12 * 7?"]

    at.multiselect(key="explore_tasks").set_value([]).run()
    at.text_input(key="explore_search").set_value("bonjour").run()
    assert metric(at, "Matching instructions") == "0"
    at.checkbox(key="explore_search_responses").check().run()
    assert metric(at, "Matching instructions") == "1"

    at.text_input(key="explore_search").set_value("").run()
    at.number_input(key="explore_min_chars").set_value(30).run()
    expected = sum(len(r["instruction"]) + len(r["input"]) >= 30 for r in SMALL_PAIRS)  # n_chars counts the input
    assert metric(at, "Matching instructions") == str(expected)
    at.number_input(key="explore_max_chars").set_value(10).run()
    assert any("is above" in e.value for e in at.error)


def test_explore_pages_send_one_page(app_ws, tmp_path):
    rows = [{"instruction": f"Question number {i:03d}?", "output": f"Answer {i}.", "task": "open_qa"} for i in range(60)]
    app_ws.import_paths([write_jsonl(tmp_path / "many.jsonl", rows)], "many")
    at = open_page("2_Explore.py")
    at.selectbox(key="explore_page_size").set_value(25).run()
    page = dataframe_with(at, "instruction")
    assert len(page) == 25 and page["instruction"][0] == "Question number 000?"
    assert at.button(key="explore_prev").disabled

    at.button(key="explore_next").click().run()
    page = dataframe_with(at, "instruction")
    assert page["instruction"][0] == "Question number 025?"
    assert "Page 2 of 3" in texts(at)
    at.button(key="explore_next").click().run()
    assert len(dataframe_with(at, "instruction")) == 10
    assert at.button(key="explore_next").disabled

    # A filter change starts again at page 1.
    at.selectbox(key="explore_order").set_value("newest").run()
    page = dataframe_with(at, "instruction")
    assert page["instruction"][0] == "Question number 059?" and "Page 1 of 3" in texts(at)


def _open_sample(at: AppTest, ws: Workspace, text: str) -> str:
    """Choose the sample whose instruction contains `text` in the "Open sample" fallback selectbox."""
    sample_id = ws.explore_page(ExploreFilter(search=text))["id"][0]
    widget_by_label(at.selectbox, "Open sample").set_value(sample_id).run()
    assert not at.exception, at.exception
    assert at.session_state["explore_selected"] == sample_id
    return sample_id


def test_explore_select_sample_and_review(seeded):
    at = open_page("2_Explore.py")
    sample_id = _open_sample(at, seeded, "Is a tomato a fruit")
    sample = seeded.sample(sample_id)
    assert sample["instruction"]["text"] == "Is a tomato a fruit or a vegetable?"
    shown = texts(at)
    assert "Is a tomato a fruit or a vegetable?" in shown
    assert "Botanically a fruit" in shown
    lineage = dataframe_with(at, "field").set_index("field")["value"]
    assert lineage["dataset"] == "small" and lineage["source line"] == "6" and lineage["method"] == "import"
    assert "not reviewed" in shown

    response_id = sample["responses"][0]["id"]
    at.toggle(key=f"explore_editing_{response_id}").set_value(True).run()  # the edit box opens on request
    at.radio(key=f"explore_decision_{response_id}").set_value("reject")
    at.text_area(key=f"explore_edit_{response_id}").set_value("A tomato is a fruit.")
    at.text_input(key=f"explore_note_{response_id}").set_value("too vague")
    at.button(key=f"explore_save_{response_id}").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert any("rejected, edited" in s.value for s in at.success)

    reviews = seeded.sample(sample_id)["reviews"]
    assert len(reviews) == 1
    assert (reviews[0]["decision"], reviews[0]["edited_text"], reviews[0]["note"], reviews[0]["target_kind"]) == \
        ("reject", "A tomato is a fruit.", "too vague", "response")
    history = dataframe_with(at, "decision")
    assert history["decision"].tolist() == ["reject"] and history["note"].tolist() == ["too vague"]

    # Saving with nothing changed is refused, and nothing is written.
    at.button(key=f"explore_save_{response_id}").click().run()
    assert any("needs a decision" in e.value for e in at.error)
    assert len(seeded.sample(sample_id)["reviews"]) == 1

    # The review state filter sees the new verdict.
    at.selectbox(key="explore_review").set_value("rejected").run()
    assert metric(at, "Matching instructions") == "1"
    at.selectbox(key="explore_review").set_value("unreviewed").run()
    assert metric(at, "Matching instructions") == "5"


def test_explore_select_row_in_table_opens_sample(seeded):
    at = open_page("2_Explore.py")
    at.multiselect(key="explore_tasks").set_value(["translation", "math"]).run()
    table = next(df for df in at.dataframe if "instruction" in df.value.columns)
    table_key, page = table.key, table.value
    assert table_key.startswith("explore_table_") and len(page) == 2
    at.session_state[table_key] = {"selection": {"rows": [1], "columns": [], "cells": []}}
    at.run()
    assert not at.exception, at.exception
    shown = texts(at)
    assert page["instruction"][1] in shown
    expected = seeded.explore_page(ExploreFilter(search=page["instruction"][1]))["id"][0]
    assert at.session_state["explore_selected"] == expected
    # The selectbox still switches to another sample while the row stays highlighted.
    other = seeded.explore_page(ExploreFilter(search=page["instruction"][0]))["id"][0]
    widget_by_label(at.selectbox, "Open sample").set_value(other).run()
    assert at.session_state["explore_selected"] == other
    assert page["instruction"][0] in texts(at)


def test_explore_review_instruction_without_responses(app_ws, tmp_path):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "Explain *markdown* <b>safely</b>."}])
    app_ws.import_paths([prompts], "prompts")
    at = open_page("2_Explore.py")
    sample_id = _open_sample(at, app_ws, "Explain *markdown*")
    # Rendered as safe markdown: the emphasis is markdown, the <b> tag is characters, not bold.
    assert "Explain markdown <b>safely</b>." in texts(at)
    shown = [h.value for h in at.html if "winnow-md" in h.value]
    assert any("Explain <em>markdown</em> &lt;b&gt;safely&lt;/b&gt;." in h for h in shown)
    assert not any("<b>safely</b>" in m.value for m in [*at.markdown, *at.html])
    at.session_state["raw_text"] = True  # the sidebar's "Show raw text": exactly as stored
    at.run()
    assert "Explain *markdown* <b>safely</b>." in [c.value for c in at.code]
    at.radio(key=f"explore_decision_{sample_id}").set_value("accept")
    at.button(key=f"explore_save_{sample_id}").click().run()
    assert not at.exception, at.exception
    reviews = app_ws.sample(sample_id)["reviews"]
    assert [(r["target_kind"], r["decision"]) for r in reviews] == [("instruction", "accept")]


def test_explore_empty_workspace(app_ws):
    at = open_page("2_Explore.py")
    assert metric(at, "Matching instructions") == "0"
    assert any("empty" in i.value for i in at.info)


# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------


def test_export_writes_file_under_exports(seeded):
    sample = seeded.sample(seeded.explore_page(ExploreFilter(), 0, 1)["id"][0])
    seeded.review(sample["responses"][0]["id"], "reject")

    at = open_page("3_Export.py")
    at.text_input(key="export_name").set_value("../my set")
    at.button(key="export_button").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    out = seeded.exports_dir / "my_set.jsonl"
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 5  # the rejected sample is excluded by default
    assert any("Wrote 5 alpaca records" in s.value for s in at.success)
    assert at.get("download_button")
    preview = dataframe_with(at, "output")
    assert len(preview) == 5 and preview["instruction"][0] == records[0]["instruction"]

    at.checkbox(key="export_exclude_rejected").uncheck()
    at.radio(key="export_file_type").set_value("parquet")
    at.selectbox(key="export_format").set_value("messages")
    at.run()
    at.button(key="export_button").click().run()
    table = pq.read_table(seeded.exports_dir / "my_set.parquet")
    assert table.num_rows == 6 and "messages" in table.column_names
    files = dataframe_with(at, "size (KB)")
    assert set(files["file"]) == {"my_set.jsonl", "my_set.parquet"}


def test_export_empty_selection_shows_error(seeded):
    at = open_page("3_Export.py")
    at.selectbox(key="export_format").set_value("preference").run()
    at.button(key="export_button").click().run()
    assert not at.exception, at.exception
    assert any("no records" in e.value for e in at.error)
    assert not list(seeded.exports_dir.glob("*.jsonl"))


# --------------------------------------------------------------------------------------------
# Charts and text helpers (no streamlit run needed)
# --------------------------------------------------------------------------------------------


def test_length_histogram_figure():
    fig = charts.length_histogram(pd.DataFrame({"bin_start": [0, 100, 300], "n": [4, 2, 1]}), 100)
    bar = fig.data[0]
    assert list(bar.x) == [0, 100, 300] and list(bar.y) == [4, 2, 1] and list(bar.width) == [100] * 3
    empty = charts.length_histogram(pd.DataFrame({"bin_start": [], "n": []}), 100)
    assert not empty.data and "no instruction" in empty.layout.annotations[0].text
    with pytest.raises(ValueError):
        charts.length_histogram(pd.DataFrame({"bin_start": [0], "n": [1]}), 0)


def test_count_bars_escape_labels_and_fold_the_tail():
    df = pd.DataFrame({"task": ["<b>x</b>", None, *[f"t{i}" for i in range(50)]], "instructions": [100, 90, *range(50)]})
    fig = charts.count_bars(df, "task", "instructions", "per task", max_bars=10)
    labels = list(fig.data[0].y)[::-1]  # largest first
    values = list(fig.data[0].x)[::-1]
    assert labels[:2] == ["&lt;b&gt;x&lt;/b&gt;", "(none)"]
    assert labels[-1] == "(other)" and len(labels) == 10
    assert sum(values) == int(df["instructions"].sum())


def test_md_escape_shows_markup_literally(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))
    import ui

    escaped = ui.md_escape("**bold** :red[x] $x$ <img src=y>\nnext")
    assert "**" not in escaped.replace("\\*", "")
    assert escaped.endswith("  \nnext") and "\\<img" in escaped


def test_uploads_keep_files_apart(app_ws):
    import ui

    a = ui.save_upload(app_ws, "same.jsonl", b'{"prompt": "a"}\n')
    b = ui.save_upload(app_ws, "same.jsonl", b'{"prompt": "b"}\n')
    assert a != b and a.read_bytes() != b.read_bytes() and a.name == b.name == "same.jsonl"
    assert ui.save_upload(app_ws, "same.jsonl", b'{"prompt": "a"}\n') == a


def test_config_caps_uploads_and_disables_usage_stats():
    import tomllib

    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert config["server"]["maxUploadSize"] == 200
    assert config["browser"]["gatherUsageStats"] is False
    assert Path(REPO / "ui.py").read_text().count("MAX_UPLOAD_MB = 200") == 1
