"""AppTest tests for the Categories page (app_pages/15_Categories.py) against a real workspace:
the empty state, the table of categories with members assigned by real MiniLM embeddings, an
edit of the criteria saved in place (a bad one refused, nothing saved), the nearest members
with their similarity and the 2-D map coloured by category, then by task."""

from __future__ import annotations

import json

import pytest
from conftest import REPO, dataframe_with, write_jsonl
from streamlit.testing.v1 import AppTest

from core import categories
from core.selection import ExploreFilter

PAGE = REPO / "app_pages" / "15_Categories.py"
POOL = [{"instruction": "What is 12 plus 30?", "task": "math"},
        {"instruction": "What is 9 times 9?", "task": "math"},
        {"instruction": "Write a poem about the moon.", "task": "creative_writing"},
        {"instruction": "Write a short story about a brave mouse.", "task": "creative_writing"}]
RECIPE = [{"name": "Sums", "description": "Arithmetic.", "criteria": ["the number is right"],
           "examples": ["What is 5 plus 7?"]},
          {"name": "Stories", "description": "Creative texts.", "criteria": ["vivid", "on topic"],
           "examples": ["Write a poem about the sea."]}]


def open_categories() -> AppTest:
    # The page is run on its own: app.py's navigation lists it once the integrator adds it.
    at = AppTest.from_file(str(PAGE), default_timeout=60).run()
    assert not at.exception, at.exception
    return at


def chart(at) -> dict:
    (c,) = at.get("plotly_chart")
    return json.loads(c.proto.spec)


def test_the_empty_page_says_what_to_do(app_ws):
    at = open_categories()
    assert "No categories yet: run `winnow round run recipes/citing-tiny.yaml`" in at.info[0].value


@pytest.mark.slow  # real MiniLM embeddings, several reruns of the page
def test_categories_are_shown_edited_in_place_and_mapped(app_ws, tmp_path):
    app_ws.import_paths([write_jsonl(tmp_path / "pool.jsonl", POOL)], "pool")
    categories.load_categories(app_ws, "demo", RECIPE, proposals=False)
    categories.assign(app_ws, "demo", ExploreFilter(datasets=["pool"]))
    at = open_categories()
    table = dataframe_with(at, "criteria")
    assert dict(zip(table["category"], table["members"], strict=True)) == {"Sums": 2, "Stories": 2}

    sums = next(c for c in categories.categories(app_ws, "demo") if c["name"] == "Sums")
    at.selectbox(key="cat_chosen").set_value(sums["id"]).run()
    members = dataframe_with(at, "similarity")
    assert set(members["instruction"]) == {"What is 12 plus 30?", "What is 9 times 9?"}
    assert members["similarity"].between(0.3, 1.0).all()  # MiniLM: sums are close to the example sum

    # A bad edit is refused and saves nothing; a good one is saved and makes the category human.
    at.text_input(key=f"cat_name_{sums['id']}").input("").run()
    next(b for b in at.button if b.label == "Save").click().run()
    assert "name: one line of 1–60 characters" in at.error[0].value.replace("\\", "")
    assert app_ws.store.category(sums["id"])["name"] == "Sums"
    at.text_input(key=f"cat_name_{sums['id']}").input("Arithmetic").run()
    at.text_area(key=f"cat_criteria_{sums['id']}").input("the number is right\nthe steps are shown").run()
    next(b for b in at.button if b.label == "Save").click().run()
    assert not at.exception and at.success[0].value.replace("\\", "") == "Saved."
    saved = app_ws.store.category(sums["id"])
    assert (saved["name"], saved["criteria"], saved["origin"]) == (
        "Arithmetic", ["the number is right", "the steps are shown"], "human")

    figure = chart(at)
    assert sorted(t["name"] for t in figure["data"]) == ["Arithmetic", "Stories"]
    assert sum(len(t["x"]) for t in figure["data"]) == 4
    at.radio(key="cat_colour").set_value("task").run()
    assert sorted(t["name"] for t in chart(at)["data"]) == ["creative_writing", "math"]

    # Deleting a category leaves its members unplaced; the button places them again.
    stories = next(c for c in categories.categories(app_ws, "demo") if c["name"] == "Stories")
    categories.delete_category(app_ws, stories["id"])
    app_ws.import_paths([write_jsonl(tmp_path / "more.jsonl", [{"instruction": "What is 2 plus 2?"}])], "more")
    at.run()
    next(b for b in at.button if b.label == "Assign unplaced instructions").click().run()
    assert not at.exception and at.success[0].value.replace("\\", "") == "Assigned 3 instructions."
    assert dict(zip(*(dataframe_with(at, "criteria")[k] for k in ("category", "members")), strict=True)) == \
        {"Arithmetic": 5}


def test_pca_puts_points_on_their_two_main_directions():
    import numpy as np

    from core.categories_views import pca_2d

    # Points along one line in 3-D: the first component carries all the spread, the second none.
    line = np.array([[0, 0, 0], [1, 1, 0], [2, 2, 0], [3, 3, 0]], dtype=np.float32)
    xy = pca_2d(line)
    assert xy.shape == (4, 2) and np.allclose(xy[:, 1], 0, atol=1e-6)
    assert np.allclose(np.abs(np.diff(xy[:, 0])), np.sqrt(2), atol=1e-5)
    assert pca_2d(np.ones((1, 3))).shape == (1, 2)
