"""Shared fixtures: real workspaces (DuckDB files on disk) in temporary folders."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from core import jobs, render
from core.workspace import Workspace

REPO = Path(__file__).resolve().parent.parent

SMALL_PAIRS = [
    {"instruction": "What is 12 * 7?", "input": "", "output": "12 * 7 = 84.", "task": "math"},
    {"instruction": "Name three primary colours.", "input": "", "output": "Red, yellow and blue.", "task": "open_qa"},
    {"instruction": "Summarise the passage.", "input": "The cat sat on the mat all day long.",
     "output": "A cat spent the day on a mat.", "task": "summarization"},
    {"instruction": "Write a Python function that reverses a string.", "input": "",
     "output": "def reverse(s):\n    return s[::-1]", "task": "code_generation"},
    {"instruction": "Translate 'good morning' into French.", "input": "", "output": "Bonjour.", "task": "translation"},
    {"instruction": "Is a tomato a fruit or a vegetable?", "input": "",
     "output": "Botanically a fruit; in cooking it is treated as a vegetable.", "task": "closed_qa"},
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


# -- the order of files: the longest first -----------------------------------------------------
# `make test` hands whole files to two xdist workers in collection order. A long file handed out
# last keeps one worker busy while the other idles, so files are sorted by their duration in the
# last run (pytest's cache), else in a recorded run (tests/file_seconds.json, for a fresh clone),
# else by their count of slow tests; ties keep the alphabetical order.
FILE_SECONDS_KEY = "winnow/file_seconds"
RECORDED_SECONDS = Path(__file__).with_name("file_seconds.json")
_file_seconds: dict[str, float] = {}


def pytest_collection_modifyitems(session, config, items):
    cache = getattr(config, "cache", None)
    known = json.loads(RECORDED_SECONDS.read_text()) if RECORDED_SECONDS.exists() else {}
    known |= cache.get(FILE_SECONDS_KEY, {}) if cache else {}
    slow: dict[str, int] = {}
    for item in items:
        slow[item.location[0]] = slow.get(item.location[0], 0) + bool(item.get_closest_marker("slow"))
    weight = {f: known.get(f, 60.0 * n) for f, n in slow.items()}
    order = {f: i for i, f in enumerate(dict.fromkeys(item.location[0] for item in items))}
    items.sort(key=lambda item: (-weight[item.location[0]], order[item.location[0]]))


def pytest_runtest_logreport(report):
    _file_seconds[report.location[0]] = _file_seconds.get(report.location[0], 0.0) + report.duration


def pytest_sessionfinish(session, exitstatus):
    """Stop the warm job servers the suite's launches started (core.warm), rather than leave them
    idling for 15 minutes; only in the controller, never in an xdist worker while others run.
    The controller also keeps each file's duration for the next run's order."""
    if not hasattr(session.config, "workerinput"):
        from core import warm

        warm.stop_all()
        cache = getattr(session.config, "cache", None)
        if cache and _file_seconds:
            known = cache.get(FILE_SECONDS_KEY, {})
            cache.set(FILE_SECONDS_KEY, known | {f: round(s, 1) for f, s in _file_seconds.items()})


@pytest.fixture
def workspace(tmp_path) -> Workspace:
    ws = Workspace(tmp_path / "ws")
    yield ws
    ws.close()


@pytest.fixture
def pairs_file(tmp_path) -> Path:
    return write_jsonl(tmp_path / "pairs.jsonl", SMALL_PAIRS)


@pytest.fixture
def seeded_workspace(workspace, pairs_file) -> Workspace:
    workspace.import_paths([pairs_file], "small")
    return workspace


@pytest.fixture
def app_env(tmp_path, monkeypatch):
    """The folder of the workspace the app under AppTest opens ($WINNOW_WORKSPACE)."""
    monkeypatch.syspath_prepend(str(REPO))
    root = tmp_path / "app_ws"
    monkeypatch.setenv("WINNOW_WORKSPACE", str(root))
    yield root
    import ui

    ui._loaded_backend.clear()  # on_release closes the models Try-a-prompt loaded
    ui._open_workspace.clear()  # on_release: stop the owner thread, close the catalog


@pytest.fixture
def app_ws(app_env) -> Workspace:
    """The app's workspace, opened by the test too (same process: DuckDB shares one database)."""
    ws = Workspace(app_env)
    yield ws
    # Never leave a job process behind: cancel, then kill whatever still runs.
    for info in ws.jobs():
        if info["status"] == "running":
            jobs.cancel(ws.job_dir(info["id"]))
            jobs.kill(ws.job_dir(info["id"]))
    ws.close()


# --------------------------------------------------------------------------------------------
# AppTest helpers shared by the page tests
# --------------------------------------------------------------------------------------------

APPTEST_TIMEOUT = 30


def open_page(page: str | None = None) -> AppTest:
    """Run the home script, then switch to `page` (pages resolve relative to app.py)."""
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=APPTEST_TIMEOUT).run()
    assert not at.exception, at.exception
    if page:
        at.switch_page(f"app_pages/{page}").run()
        assert not at.exception, at.exception
    return at


def metric(at: AppTest, label: str) -> str:
    values = [m.value for m in at.metric if m.label == label]
    assert values, f"no metric {label!r} in {[m.label for m in at.metric]}"
    return values[0]


def texts(at: AppTest) -> str:
    """Everything a page shows as text: st.text, st.code and, as a browser shows it, the markdown
    that ui.show_text renders (tags dropped, entities decoded)."""
    rendered = [render.visible_text(h.value) for h in at.html if h.value.startswith('<div class="winnow-md">')]
    return "\n".join([t.value for t in at.text] + [c.value for c in at.code] + rendered)


def dataframe_with(at: AppTest, column: str) -> pd.DataFrame:
    for df in at.dataframe:
        if column in df.value.columns:
            return df.value
    raise AssertionError(f"no dataframe with column {column!r}")
