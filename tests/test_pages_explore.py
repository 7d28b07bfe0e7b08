"""AppTest tests of the Explore page's triage table, its compact sample view, the review form and
the Documents view, against real workspaces on disk (the demo's python-docs corpus included)."""

from __future__ import annotations

from urllib.parse import parse_qs

import pyarrow as pa
import pytest
from conftest import dataframe_with, metric, open_page
from streamlit.testing.v1 import AppTest

from core import judge
from core.demo import build_demo
from core.ids import content_id
from core.render import visible_text
from core.review_queue import QueueSource
from core.store.documents import DocumentFilter
from core.workspace import ExploreFilter, Workspace

JUDGE = ("judge-m", "pointwise_5")


@pytest.fixture
def seeded(app_ws, pairs_file) -> Workspace:
    app_ws.import_paths([pairs_file], "small")
    return app_ws


@pytest.fixture
def demo(app_ws) -> Workspace:
    build_demo(app_ws)
    return app_ws


def shown(at: AppTest, block=None) -> str:
    """Every text the page (or one block of it) shows: plain text, code, and rendered markdown."""
    root = block if block is not None else at
    parts = [t.value for t in root.text] + [c.value for c in root.code]
    parts += [visible_text(h.proto.body) for h in root.get("html")]
    return "\n".join(parts)


def table(at: AppTest):
    return next(df for df in at.dataframe if df.key and df.key.startswith("explore_table_"))


def select_row(at: AppTest, row: int) -> None:
    at.session_state[table(at).key] = {"selection": {"rows": [row], "columns": [], "cells": []}}
    at.run()
    assert not at.exception, at.exception


def column_with(at: AppTest, key_prefix: str):
    """The layout column that holds the table whose key starts with `key_prefix`, and the one after it."""
    columns = list(at.columns)
    for i, col in enumerate(columns[:-1]):
        if any(df.key and df.key.startswith(key_prefix) for df in col.dataframe):
            return col, columns[i + 1]
    raise AssertionError(f"no column holds a table {key_prefix}…")


def page_links(at: AppTest) -> dict[str, dict]:
    return {link.value: {k: v[0] for k, v in parse_qs(link.proto.query_string).items()} for link in at.get("page_link")}


def judge_some(ws: Workspace) -> dict[str, float]:
    """Judge three of the small dataset's responses: scores by instruction text."""
    page = ws.explore_page(ExploreFilter(), page_size=50)
    by_text = dict(zip(page["instruction"], page["id"], strict=True))
    scores = {"What is 12 * 7?": 5, "Name three primary colours.": 2, "Translate 'good morning' into French.": 4}
    rids = [ws.sample(by_text[t])["responses"][0]["id"] for t in scores]
    ws.record_judgments(judge.judgment_rows(JUDGE[1], JUDGE[0], rids, [f"Fine.\nScore: {s}" for s in scores.values()]))
    return scores


# --------------------------------------------------------------------------------------------
# The triage table
# --------------------------------------------------------------------------------------------


def test_table_shows_review_first_and_a_response_preview(seeded):
    at = open_page("2_Explore.py")
    t = table(at)
    columns = list(t.value.columns)
    assert "review" in columns[:2]
    assert "judge_score" not in columns  # no judge chosen yet
    preview = t.value.set_index("instruction")["response"]
    assert preview["Name three primary colours."] == "Red, yellow and blue."
    assert preview["Write a Python function that reverses a string."].startswith("def reverse(s):")


def test_a_page_past_the_end_shows_the_last_page(seeded):
    # The page is read beside the count (explore_view), from the page asked for; when the count
    # shrank under it (here: a page far past the end), the last page is read and shown instead.
    at = open_page("2_Explore.py")
    everything = table(at).value["instruction"].tolist()
    assert 0 < len(everything) < 25  # one page at the smallest page size
    at.selectbox(key="explore_page_size").set_value(25).run()
    at.session_state["explore_page"] = 99
    at.run()
    assert not at.exception, at.exception
    assert at.session_state["explore_page"] == 0
    assert table(at).value["instruction"].tolist() == everything


def test_column_chooser_changes_the_columns_and_keeps_review_in_front(seeded):
    at = open_page("2_Explore.py")
    at.multiselect(key="explore_columns").set_value(["task", "instruction", "review"]).run()
    assert not at.exception, at.exception
    assert list(table(at).value.columns) == ["review", "instruction", "task"]
    at.multiselect(key="explore_columns").set_value(["n_chars", "source_line"]).run()
    assert list(table(at).value.columns) == ["n_chars", "source_line"]
    # The choice is kept for the session: a filter change does not reset it.
    at.multiselect(key="explore_tasks").set_value(["math"]).run()
    assert list(table(at).value.columns) == ["n_chars", "source_line"]


def test_judge_score_column_and_server_side_score_orders(seeded):
    scores = judge_some(seeded)
    at = open_page("2_Explore.py")
    assert "judge score, high first" not in at.selectbox(key="explore_order").options
    at.selectbox(key="explore_judge").set_value(JUDGE).run()
    assert not at.exception, at.exception
    t = table(at).value
    assert "judge_score" in t.columns and "response" in t.columns
    by_text = t.set_index("instruction")["judge_score"]
    for text, score in scores.items():
        assert by_text[text] == score
    assert by_text.isna().sum() == 3  # the unjudged rows are empty, never 0

    order = at.selectbox(key="explore_order")
    assert {"judge score, high first", "judge score, low first"} <= set(order.options)
    order.set_value("judge score, high first").run()
    assert table(at).value["instruction"].tolist()[:3] == sorted(scores, key=scores.get, reverse=True)
    at.selectbox(key="explore_order").set_value("judge score, low first").run()
    t = table(at).value
    assert t["instruction"].tolist()[:3] == sorted(scores, key=scores.get)
    assert t["judge_score"].iloc[3:].isna().all()  # unscored last either way

    # Choosing no judge drops the column and the score orders (the order falls back to oldest).
    at.selectbox(key="explore_judge").set_value(None).run()
    assert not at.exception, at.exception
    assert "judge_score" not in table(at).value.columns
    assert at.selectbox(key="explore_order").value == "oldest"


def test_selected_sample_shows_beside_the_table_in_step_with_the_selectbox(seeded):
    at = open_page("2_Explore.py")
    ids = seeded.explore_page(ExploreFilter())["id"].tolist()
    assert "Select a row" in shown(at, column_with(at, "explore_table_")[1])

    select_row(at, 3)
    left, right = column_with(at, "explore_table_")
    beside = shown(at, right)
    assert "Write a Python function that reverses a string." in beside
    assert "def reverse(s):" in beside and "not reviewed" in beside
    assert at.session_state["explore_selected"] == ids[3]
    assert next(s for s in at.selectbox if s.label == "Open sample").value == ids[3]  # it follows the table
    assert "Review this in the queue" in page_links(at)

    # The selectbox drives the table too: the chosen row is highlighted in a fresh table.
    next(s for s in at.selectbox if s.label == "Open sample").set_value(ids[1]).run()
    assert at.session_state["explore_selected"] == ids[1]
    assert "Name three primary colours." in shown(at, column_with(at, "explore_table_")[1])
    assert '"rows": [1]' in table(at).proto.selection_default.replace("'", '"')


def test_review_these_in_the_queue_links_the_filter(seeded):
    at = open_page("2_Explore.py")
    at.multiselect(key="explore_tasks").set_value(["math", "translation"]).run()
    links = page_links(at)
    assert "Review these 2 in the queue" in links
    source = QueueSource.from_query(links["Review these 2 in the queue"])
    assert source.kind == "filter" and sorted(source.filter.tasks) == ["math", "translation"]
    assert seeded.explore_count(source.filter) == 2


# --------------------------------------------------------------------------------------------
# The review form
# --------------------------------------------------------------------------------------------


def test_review_form_keeps_the_saved_decision_edits_on_request_and_stores_the_reviewer(seeded):
    at = open_page("2_Explore.py")
    at.text_input(key="reviewer_name").set_value("Ana").run()
    select_row(at, 5)  # the tomato question
    sample = seeded.sample(at.session_state["explore_selected"])
    rid = sample["responses"][0]["id"]

    assert at.radio(key=f"explore_decision_{rid}").value == "none"
    assert not [a for a in at.text_area if a.key == f"explore_edit_{rid}"]  # no edit box until asked for
    at.toggle(key=f"explore_editing_{rid}").set_value(True).run()
    at.text_area(key=f"explore_edit_{rid}").set_value("A tomato is a fruit.")
    at.radio(key=f"explore_decision_{rid}").set_value("reject")
    at.button(key=f"explore_save_{rid}").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]

    assert at.radio(key=f"explore_decision_{rid}").value == "reject"  # not back to "No decision"
    assert not [a for a in at.text_area if a.key == f"explore_edit_{rid}"]  # the box closed again
    assert at.toggle(key=f"explore_editing_{rid}").value is False
    reviews = seeded.sample(sample["instruction"]["id"])["reviews"]
    assert [(r["decision"], r["edited_text"], r["reviewer"], r["source"]) for r in reviews] == \
        [("reject", "A tomato is a fruit.", "Ana", "explore")]

    # The reviewer's name survives a switch to the Documents view and back.
    at.segmented_control(key="explore_view").set_value("Documents").run()
    at.segmented_control(key="explore_view").set_value("Instructions").run()
    assert at.text_input(key="reviewer_name").value == "Ana"
    assert at.radio(key=f"explore_decision_{rid}").value == "reject"

    # A second decision replaces the first, and the radio shows it.
    at.radio(key=f"explore_decision_{rid}").set_value("accept")
    at.button(key=f"explore_save_{rid}").click().run()
    assert at.radio(key=f"explore_decision_{rid}").value == "accept"
    assert table(at).value.set_index("instruction")["review"]["Is a tomato a fruit or a vegetable?"] == "accept"


# --------------------------------------------------------------------------------------------
# Documents
# --------------------------------------------------------------------------------------------


def _documents(at: AppTest):
    return next(df for df in at.dataframe if df.key and df.key.startswith("explore_docs_table_"))


def test_documents_view_lists_searches_and_opens_a_passage(demo):
    store = demo.store
    n_docs = store.documents_count(DocumentFilter(datasets=["python-docs"]))
    assert n_docs > 50
    at = open_page("2_Explore.py")
    at.segmented_control(key="explore_view").set_value("Documents").run()
    assert not at.exception, at.exception
    assert metric(at, "Matching documents") == f"{n_docs:,}"
    docs = _documents(at).value
    assert len(docs) == 50 and set(docs["dataset"]) == {"python-docs"}
    assert {"file", "passage", "line", "title", "n_chars", "preview", "instructions"} <= set(docs.columns)

    at.text_input(key="explore_docs_search").set_value("heapq").run()
    expected = store.documents_count(DocumentFilter(search="heapq"))
    assert 0 < expected < n_docs
    assert metric(at, "Matching documents") == str(expected)
    docs = _documents(at).value
    assert len(docs) == expected

    # An instruction generated from the first match names it as its parent.
    first = store.documents_page(DocumentFilter(search="heapq"), limit=1).iloc[0]
    dataset_id = content_id("dataset", "python-docs")
    text = "What does heapq.heappush do?"
    row = {"id": content_id(dataset_id, "", "", text, ""), "dataset_id": dataset_id, "text": text, "input": "",
           "n_chars": len(text), "round": 1, "method": "backtranslate", "parent_id": first["id"]}
    with store.transaction() as cur:
        assert store.insert_batch(cur, "instructions", pa.Table.from_pylist([row])) == 1
    at.run()
    assert _documents(at).value["instructions"].tolist()[0] == 1

    at.session_state[_documents(at).key] = {"selection": {"rows": [0], "columns": [], "cells": []}}
    at.run()
    assert not at.exception, at.exception
    assert at.session_state["explore_doc_selected"] == first["id"]
    beside = shown(at, column_with(at, "explore_docs_table_")[1])
    doc = store.document(first["id"])
    assert f"Source file: {doc['source_file']}" in beside
    assert f"line {doc['source_line']}" in beside and f"passage {doc['segment'] + 1}" in beside
    assert doc["text"].split("\n")[0].strip() in beside
    children = dataframe_with(at, "instruction")
    assert children["instruction"].tolist() == [text]

    # Opening the generated instruction goes to the Instructions view with it selected.
    next(s for s in at.selectbox if s.label == "Open a generated instruction").set_value(row["id"]).run()
    assert not at.exception, at.exception
    assert at.segmented_control(key="explore_view").value == "Instructions"
    assert at.session_state["explore_selected"] == row["id"]
    assert text in shown(at)


def test_a_document_with_no_generated_instruction_says_none_yet(demo):
    at = open_page("2_Explore.py")
    at.segmented_control(key="explore_view").set_value("Documents").run()
    next(s for s in at.selectbox if s.label == "Open document").set_value(_ids(demo)[0]).run()
    assert "None yet" in shown(at)


def _ids(ws: Workspace) -> list[str]:
    return ws.store.documents_page(DocumentFilter(), limit=5)["id"].tolist()


def test_corpus_only_dataset_says_so_and_opens_its_documents(demo):
    n_docs = demo.store.documents_count(DocumentFilter(datasets=["python-docs"]))
    at = open_page("2_Explore.py")
    at.multiselect(key="explore_tasks").set_value([]).run()
    at.multiselect(key="explore_datasets").set_value(["python-docs"]).run()
    assert metric(at, "Matching instructions") == "0"
    assert any(f"python-docs has {n_docs} documents and no instructions" in i.value for i in at.info)
    assert not any("No instruction matches" in i.value for i in at.info)
    at.button(key="explore_to_documents").click().run()
    assert not at.exception, at.exception
    assert at.segmented_control(key="explore_view").value == "Documents"
    assert at.multiselect(key="explore_docs_datasets").value == ["python-docs"]
    assert metric(at, "Matching documents") == f"{n_docs:,}"
    # The Instructions view's filters were kept meanwhile.
    at.segmented_control(key="explore_view").set_value("Instructions").run()
    assert at.multiselect(key="explore_datasets").value == ["python-docs"]


def test_a_filter_that_mixes_in_a_dataset_with_instructions_is_not_the_corpus_message(demo):
    at = open_page("2_Explore.py")
    at.multiselect(key="explore_datasets").set_value(["python-docs", "seed"]).run()
    at.text_input(key="explore_search").set_value("no such text anywhere").run()
    assert any("No instruction matches" in i.value for i in at.info)
    assert not any("no instructions" in i.value for i in at.info)


def test_documents_view_of_a_workspace_without_documents(seeded):
    at = open_page("2_Explore.py")
    at.segmented_control(key="explore_view").set_value("Documents").run()
    assert metric(at, "Matching documents") == "0"
    assert any("No documents yet" in i.value for i in at.info)
