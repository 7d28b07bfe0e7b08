"""Shared fixtures: real workspaces (DuckDB files on disk) in temporary folders."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

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


# --------------------------------------------------------------------------------------------
# AppTest helpers shared by the page tests
# --------------------------------------------------------------------------------------------

APPTEST_TIMEOUT = 30


def open_page(page: str | None = None) -> AppTest:
    """Run the home script, then switch to `page` (pages resolve relative to app.py)."""
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=APPTEST_TIMEOUT).run()
    assert not at.exception, at.exception
    if page:
        at.switch_page(f"pages/{page}").run()
        assert not at.exception, at.exception
    return at


def metric(at: AppTest, label: str) -> str:
    values = [m.value for m in at.metric if m.label == label]
    assert values, f"no metric {label!r} in {[m.label for m in at.metric]}"
    return values[0]


def texts(at: AppTest) -> str:
    return "\n".join([t.value for t in at.text] + [c.value for c in at.code])


def dataframe_with(at: AppTest, column: str) -> pd.DataFrame:
    for df in at.dataframe:
        if column in df.value.columns:
            return df.value
    raise AssertionError(f"no dataframe with column {column!r}")
