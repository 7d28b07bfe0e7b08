"""AppTest tests for the Backtranslation page (app_pages/14_Backtranslation.py) on a real
workspace: the empty state, then candidates written by a real backtranslate job and rated by a
real judge job (this module's python backward model and curator, from tests/test_backtranslate.py):
the side-by-side rows, the k slider's live counts, and accept/reject buttons that move the
curator's precision and recall."""

from __future__ import annotations

import pytest
from conftest import REPO, metric, texts
from streamlit.testing.v1 import AppTest
from test_backtranslate import CORPUS, DATA, MODULE, run_job

from core import backtranslate as bt
from core.selection import ExploreFilter

PAGE_ENTRY = ("app_pages/14_Backtranslation.py", "Backtranslation", ":material/translate:")


@pytest.fixture
def router(app_env, tmp_path):
    """The app's router (app.py) with this page in its navigation: app.py itself once the page is
    listed there; until then a copy beside a link to app_pages/ that lists it (page links such as
    the Jobs page's resolve against the router's folder)."""
    source = (REPO / "app.py").read_text(encoding="utf-8")
    if PAGE_ENTRY[0] in source:
        return REPO / "app.py"
    folder = tmp_path / "router"
    folder.mkdir()
    (folder / "app_pages").symlink_to(REPO / "app_pages")
    marker = "\n\ndef navigation()"
    assert marker in source
    source = source.replace(marker, f"\n\nSECTIONS['Train'].append({PAGE_ENTRY!r})" + marker, 1)
    (folder / "app.py").write_text(source, encoding="utf-8")
    return folder / "app.py"


def open_backtranslation(router) -> AppTest:
    at = AppTest.from_file(str(router), default_timeout=60).run()
    assert not at.exception, at.exception
    at.switch_page(PAGE_ENTRY[0]).run()
    assert not at.exception, at.exception
    return at


def test_the_empty_page_says_what_to_do(app_ws, router):
    at = open_backtranslation(router)
    assert any("No backtranslated candidates yet" in i.value for i in at.info)
    assert any("humpback-tiny.yaml" in i.value for i in at.info)


@pytest.fixture
def curated(app_ws):
    ws = app_ws
    ws.add_model({"name": "backward", "backend": "python", "path": "tests.test_backtranslate:backward",
                  "extra": MODULE})
    ws.add_model({"name": "curator", "backend": "python", "path": "tests.test_backtranslate:curator",
                  "extra": MODULE | {"role": "judge"}})
    ws.import_paths([DATA / "corpus"], "corpus", fmt="corpus")
    run_job(ws, ws.create_job("backtranslate", {"model": "backward", "out_dataset": "cands"}, CORPUS, round=1))
    return ws


@pytest.mark.slow
def test_candidates_side_by_side_with_live_counts_and_labels(curated, router):
    at = open_backtranslation(router)
    assert any("No curator has rated these candidates yet" in i.value for i in at.info)
    run_job(curated, curated.create_job("judge", {"model": "curator", "rubric": "pointwise_5",
                                                  "roles": [bt.CANDIDATE_ROLE]}, ExploreFilter(datasets=["cands"])))
    at = open_backtranslation(router)
    assert metric(at, "Candidates") == "5" and metric(at, "Rated") == "5"
    assert metric(at, "Kept at k = 4.5") == "3" and metric(at, "Kept share") == "60%"
    shown = texts(at)
    assert "Generated instruction" in shown and "Explain this:" in shown and "tyre" in shown  # side by side
    assert metric(at, "Precision at k").startswith("n/a")
    at.slider(key="bt_k").set_value(1.5).run()
    assert metric(at, "Kept at k = 1.5") == "5"
    at.slider(key="bt_k").set_value(4.5).run()
    # The best-scored row first: accept it, reject the second (both kept): precision 1/2.
    accepts = [b for b in at.button if b.key.startswith("bt_accept_")]
    rejects = [b for b in at.button if b.key.startswith("bt_reject_")]
    accepts[0].click().run()
    at = at.run()
    [b for b in at.button if b.key.startswith("bt_reject_")][1].click().run()
    assert not at.exception, at.exception
    assert metric(at, "Precision at k").startswith("0.50 [") and "(1/2)" in metric(at, "Precision at k")
    assert metric(at, "Recall at k").startswith("1.00 [")
    assert "Your label: accept" in texts(at) and len(rejects) == 5
    at.slider(key="bt_k").set_value(5.0).run()
    assert metric(at, "Kept at k = 5") == "3"
    at.slider(key="bt_k").set_value(1.0).run()
    assert metric(at, "Kept at k = 1") == "5"
