"""AppTest tests for the Revisions page (app_pages/16_Revisions.py): the empty state, then the
revisions of a real revise job (a python-backend teacher whose answers are known) beside their
drafts, with the criteria and a word diff whose model text is escaped, never markup."""

from __future__ import annotations

from conftest import REPO, write_jsonl
from streamlit.testing.v1 import AppTest
from test_revise import run_job

from core import categories
from core.selection import ExploreFilter

PAGE = REPO / "app_pages" / "16_Revisions.py"


def open_revisions() -> AppTest:
    at = AppTest.from_file(str(PAGE), default_timeout=60).run()
    assert not at.exception, at.exception
    return at


def test_the_empty_page_says_what_to_do(app_ws):
    at = open_revisions()
    assert "No revision yet: run `winnow round run recipes/citing-tiny.yaml`" in at.info[0].value


def test_a_revision_is_shown_beside_its_draft_with_criteria_and_a_safe_diff(app_ws, tmp_path):
    ws = app_ws
    ws.add_model({"name": "reviser", "backend": "python", "path": "tests.test_revise:reviser",
                  "extra": {"modules": ["tests.test_revise"]}})
    ws.import_paths([write_jsonl(tmp_path / "a.jsonl", [
        {"instruction": "Name a fruit.", "output": "an apple <script>alert(1)</script>"}])], "pool", role="student")
    categories.load_categories(ws, "s", [{"name": "General", "criteria": ["right", "short"],
                                          "examples": ["Name a vegetable."]}], proposals=False)
    categories.assign(ws, "s", ExploreFilter(datasets=["pool"]))
    job = ws.create_job("revise", {"model": "reviser", "scheme": "s", "out_role": "revised"},
                        ExploreFilter(datasets=["pool"]))
    run_job(ws, job)

    at = open_revisions()
    shown = "\n".join(t.value for t in at.text)
    assert "category: General" in shown and "• right" in shown and "• short" in shown
    assert "Word diff: 5 words inserted, 3 deleted" in shown
    diff = next(h.value for h in at.html if 'class="winnow-diff"' in h.value)
    assert '<span class="diff-ins">AN APPLE &lt;SCRIPT&gt;ALERT(1)&lt;/SCRIPT&gt; (2 criteria)</span>' in diff
    assert '<span class="diff-del">an apple &lt;script&gt;alert(1)&lt;/script&gt;</span>' in diff
    assert "<script" not in diff.lower()
    rendered = " ".join(h.value for h in at.html if h.value.startswith('<div class="winnow-md">'))
    assert "AN APPLE" in rendered and "<script" not in rendered.lower()


def test_the_word_diff_rebuilds_both_texts_and_escapes_everything():
    from core import categories_views as views

    old, new = "The cat sat on the mat.", "The black cat sat on a mat.\n<b>Done</b>"
    ops = views.diff_ops(old, new)
    assert "".join(t for op, t in ops if op != "insert").split() == old.split()
    assert "".join(t for op, t in ops if op != "delete") == new
    assert ops == [("equal", "The "), ("insert", "black "), ("equal", "cat sat on "), ("delete", "the "),
                   ("insert", "a "), ("equal", "mat.\n"), ("insert", "<b>Done</b>")]
    assert views.diff_counts(old, new) == {"inserted": 3, "deleted": 1}
    fragment = views.diff_html(old, new)
    assert "&lt;b&gt;Done&lt;/b&gt;" in fragment and "<b>" not in fragment
    assert views.diff_html("", "") == '<div class="winnow-diff"></div>'
