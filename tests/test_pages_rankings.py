"""AppTest tests for the Rankings page (app_pages/13_Rankings.py) against a real workspace: the
empty state, then real rankings of both methods (tiny-random's sampled answers by log-prob; a
python listwise judge that ranks, and one that babbles: invalid verdicts with their raw text) and
the download of each export."""

from __future__ import annotations

import json

import pytest
from conftest import APPTEST_TIMEOUT, REPO, SMALL_PAIRS, metric, open_page, texts, write_jsonl
from streamlit.testing.v1 import AppTest
from test_tuna import PY_MODULES, python_models, run_and_ingest

from core import rankings_views as views
from core.ranking import rank_contextual, rank_probabilistic

PAGE = "13_Rankings.py"


def open_rankings() -> AppTest:
    """Through app.py's navigation once the page is listed there; until then the page alone."""
    if PAGE in (REPO / "app.py").read_text(encoding="utf-8"):
        return open_page(PAGE)
    at = AppTest.from_file(str(REPO / "app_pages" / PAGE), default_timeout=APPTEST_TIMEOUT).run()
    assert not at.exception, at.exception
    return at


def seed_rankings(ws, tmp_path) -> None:
    ws.import_paths([write_jsonl(tmp_path / "pairs.jsonl", SMALL_PAIRS)], "small")
    python_models(ws)
    ws.add_model({"name": "babbler", "backend": "python", "path": "core.methods.tuna:sampled_answer",
                  "extra": {"modules": PY_MODULES}})
    run_and_ingest(ws, "generate", {"model": "tiny-random", "role": "teacher", "n": 3, "temperature": 1.0,
                                    "max_tokens": 8, "seed": 3}, limit=3)
    run_and_ingest(ws, "generate", {"model": "sampler", "role": "c1", "n": 3, "temperature": 1.0,
                                    "max_tokens": 200, "seed": 1}, round=1, limit=4)
    for judge in ("length-judge", "babbler"):
        run_and_ingest(ws, "judge", {"model": judge, "rubric": "listwise", "roles": ["c1"], "seed": 4}, round=1)
    assert rank_probabilistic(ws, "teacher", "tiny-random").ranked >= 2
    assert rank_contextual(ws, "length-judge", "c1", "sampler", round=1).ranked == 4
    assert rank_contextual(ws, "babbler", "c1", "sampler", round=1).invalid == 4


def test_an_empty_workspace_says_what_to_do(app_ws):
    at = open_rankings()
    assert any("No ranking yet" in i.value and "tuna-tiny.yaml" in i.value for i in at.info)


@pytest.mark.slow  # a tiny-random generate job and four python jobs: ~20–50 s on the shared CPU
def test_the_page_shows_both_methods_invalid_verdicts_and_exports(app_ws, tmp_path):
    seed_rankings(app_ws, tmp_path)
    keys = views.ranking_keys(app_ws)
    at = open_rankings()
    assert not at.exception, at.exception
    assert metric(at, "Probabilistic rankings") == str(views.totals(keys)["probabilistic"]["valid"])
    assert metric(at, "Contextual rankings (valid)") == "4" and metric(at, "Contextual verdicts invalid") == "4"
    shown = texts(at)
    assert "mean log-prob" in shown and "#1" in shown

    # contextual, the ranking judge: ranks with the place each answer was shown at
    at.radio(key="rankings_method").set_value("contextual").run()
    options = at.selectbox(key="rankings_key").options
    ranked = next(i for i, o in enumerate(options) if "length-judge" in o)
    at.selectbox(key="rankings_key").set_value(ranked).run()
    shown = texts(at)
    assert "judge rank 1 · shown as Answer" in shown and "Ranking:" in shown
    assert not at.error

    # the babbling judge: every verdict invalid, the raw text and the parse error shown
    babbled = next(i for i, o in enumerate(options) if "babbler" in o)
    at.selectbox(key="rankings_key").set_value(babbled).run()
    assert len(at.error) == 4 and all("Invalid ranking: no_score" in e.value.replace("\\", "") for e in at.error)
    raw = app_ws.store._rows("SELECT raw FROM rankings WHERE judge = 'babbler' LIMIT 1")[0][0]
    assert raw in texts(at)
    assert any(t.key == "rankings_only_invalid" for t in at.toggle)

    # downloads: what the export functions write, for the chosen key
    at.selectbox(key="rankings_key").set_value(ranked).run()
    at.radio(key="rankings_export").set_value("all").run()
    assert not at.exception, at.exception
    key = next(k for k in keys if k.get("judge") == "length-judge")
    data, name, n = views.export_file(app_ws, key, "all")
    lines = [json.loads(x) for x in data.decode().splitlines()]
    assert n == len(lines) == 4 * 3 and set(lines[0]) == {"prompt", "chosen", "rejected"}
    assert name.endswith("-all.jsonl")
    assert any(f"{n} lines of JSONL" in c.value for c in at.caption)
