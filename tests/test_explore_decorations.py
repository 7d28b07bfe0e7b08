"""The Explore table's per-instruction decorations, which are computed in Python from one
query's rows (core.store.explore.explore_decorations): the rules that used to be SQL aggregates."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from core.store import ExploreFilter
from core.store.explore import PageDecoration, explore_decorations
from core.workspace import Workspace

EARLY, LATE = datetime(2026, 1, 1, 9), datetime(2026, 1, 1, 10)


def test_preview_is_chosen_first_then_role_then_time_then_id():
    # PAGE_DECORATIONS columns: kind, instruction id, response id, role (or decision), preview, created_at.
    rows = [
        ("response", "i1", "r-c", "seed", "later seed", LATE),
        ("response", "i1", "r-a", "seed", "early seed", EARLY),
        ("response", "i1", "r-b", "teacher", "teacher text", EARLY),
    ]
    assert explore_decorations(rows)["i1"] == PageDecoration(3, "seed, teacher", "early seed", "")
    chosen = rows + [("chosen", "i1", "r-b", None, None, None)]
    assert explore_decorations(chosen)["i1"].preview == "teacher text"
    # Same role and time: the smaller id decides, so the preview never depends on row order.
    tied = [("response", "i2", "r-z", "seed", "z", EARLY), ("response", "i2", "r-y", "seed", "y", EARLY)]
    assert explore_decorations(tied)["i2"].preview == explore_decorations(tied[::-1])["i2"].preview == "y"


def test_a_verdict_without_responses_and_responses_without_a_verdict():
    rows = [("review", "i1", None, "reject", None, None), ("response", "i2", "r1", "seed", "", EARLY)]
    decorations = explore_decorations(rows)
    assert decorations["i1"] == PageDecoration(0, "", "", "reject")
    assert decorations["i2"] == PageDecoration(1, "seed", "", "")
    assert explore_decorations([]) == {}


def test_page_decorations_from_the_store(tmp_path: Path):
    (tmp_path / "a.jsonl").write_text(json.dumps({"instruction": "Q one", "output": "seed one"}) + "\n")
    (tmp_path / "p.jsonl").write_text(json.dumps({"instruction": "Q two"}) + "\n")
    (tmp_path / "t.jsonl").write_text(json.dumps({"instruction": "Q one", "output": "a teacher"}) + "\n")
    ws = Workspace(tmp_path / "ws")
    try:
        ws.import_paths([tmp_path / "a.jsonl"], "d")
        ws.import_paths([tmp_path / "p.jsonl"], "d")
        ws.import_paths([tmp_path / "t.jsonl"], "d", role="teacher")
        ids = dict(zip(*[ws.explore_page(ExploreFilter())[c] for c in ("instruction", "id")], strict=True))
        ws.review(ids["Q two"], "accept", target_kind="instruction")
        page = ws.explore_page(ExploreFilter()).set_index("instruction")
        assert page.loc["Q one", ["n_responses", "roles", "response", "review"]].tolist() == [
            2, "seed, teacher", "seed one", ""]
        assert page.loc["Q two", ["n_responses", "roles", "response", "review"]].tolist() == [0, "", "", "accept"]
        empty = ws.explore_page(ExploreFilter(), page=10)
        assert empty.empty and empty["id"].dtype == object  # `.str` still works on an empty page
    finally:
        ws.close()
