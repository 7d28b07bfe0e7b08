"""What the Explore page shows, shaped from the store's results: the triage table's columns, the
judges a score column can come from, the compact sample beside the table, the Documents view's
table, and the message for a dataset that holds documents and no instructions.

Pure, no streamlit: every function takes plain values or DataFrames and returns the same, so
tests check them without a page. The queries themselves are in core/store/explore.py and
core/store/documents.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import PurePath
from typing import Any

import pandas as pd

from core import reviews as reviews_mod

# The triage table's columns, in the order they are shown: the review state first, so it is
# visible without scrolling sideways, then the judge's score beside it, then the texts.
TABLE_COLUMNS = ("review", "judge_score", "instruction", "response", "dataset", "task", "n_chars", "n_responses",
                 "roles", "round", "method", "source_file", "source_line")
DEFAULT_COLUMNS = ("review", "judge_score", "instruction", "response", "dataset", "task", "n_chars", "n_responses")
COLUMN_LABELS = {"response": "response preview", "judge_score": "judge score", "n_chars": "chars",
                 "n_responses": "responses", "source_file": "source file", "source_line": "line"}
SCORE_HELP = ("The latest parsed score of the chosen judge and rubric on each of the instruction's responses; "
              "the highest of them when it has several. Empty: not judged yet (or no verdict parsed).")
PREVIEW_HELP = "The start of the chosen response of a preference pair, else of the first response in role order."

DOCUMENT_COLUMNS = ("dataset", "file", "passage", "line", "preview", "instructions", "n_chars", "title")


def column_label(column: str) -> str:
    return COLUMN_LABELS.get(column, column)


def table_columns(chosen: Iterable[str], has_judge: bool) -> list[str]:
    """The chosen columns in TABLE_COLUMNS order; the judge score only when a judge is chosen."""
    wanted = set(chosen)
    return [c for c in TABLE_COLUMNS if c in wanted and (c != "judge_score" or has_judge)]


def pointwise_judges(judges: pd.DataFrame) -> list[tuple[str, str]]:
    """(judge_model, rubric) of every pointwise judge with verdicts (Store.judges), newest first:
    the judges whose scores a score column can show (pairwise verdicts score pairs, not responses)."""
    if judges is None or judges.empty:
        return []
    rows = judges[judges["kind"] == "pointwise"]
    return list(dict.fromkeys(zip(rows["judge_model"], rows["rubric"], strict=True)))


def judge_label(judge: tuple[str, str] | None) -> str:
    return "none" if judge is None else f"{judge[0]} · {judge[1]}"


def latest_scores(judgments: list[dict], judge: tuple[str, str] | None) -> dict[str, float]:
    """target_id → the latest parsed score of `judge` (model, rubric), as the table column reads it."""
    if judge is None:
        return {}
    latest: dict[str, tuple[Any, float]] = {}
    for j in judgments:
        if (j.get("judge_model"), j.get("rubric")) != judge or j.get("score") is None:
            continue
        seen = latest.get(j["target_id"])
        if seen is None or j["created_at"] > seen[0]:
            latest[j["target_id"]] = (j["created_at"], float(j["score"]))
    return {target: score for target, (_, score) in latest.items()}


def compact_sample(sample: Mapping, judge: tuple[str, str] | None = None) -> dict:
    """What the compact view beside the table shows: the instruction and each response with its
    pair mark, its current human verdict and the chosen judge's latest score."""
    ins, reviews = sample["instruction"], sample["reviews"]
    marks: dict[str, set[str]] = {}
    for p in sample.get("pairs", []):
        marks.setdefault(p["chosen_id"], set()).add("chosen")
        marks.setdefault(p["rejected_id"], set()).add("rejected")
    scores = latest_scores(sample.get("judgments", []), judge)
    responses = []
    for r in sample["responses"]:
        verdict = reviews_mod.current_verdict(reviews, r["id"])
        parts = [r["role"]] + [m.upper() for m in sorted(marks.get(r["id"], ()))]
        parts.append(f"{r['n_chars']:,} chars")
        if judge is not None:
            score = scores.get(r["id"])
            parts.append(f"score {score:g}" if score is not None else "not scored")
        parts.append(reviews_mod.describe_verdict(verdict))
        responses.append({"id": r["id"], "label": " · ".join(parts), "text": verdict["edited_text"] or r["text"],
                          "edited": bool(verdict["edited_text"])})
    return {
        "id": ins["id"],
        "heading": f"{ins.get('dataset') or '—'} · task {ins.get('task') or '—'} · "
                   f"round {ins.get('round', 0)} · {ins.get('method') or '—'}",
        "verdict": reviews_mod.describe_verdict(reviews_mod.current_verdict(reviews, ins["id"])),
        "instruction": ins["text"],
        "input": ins.get("input") or "",
        "responses": responses,
    }


def decision_of(verdict: Mapping) -> str:
    """The Decision radio's value for a target's current verdict ("none" when undecided)."""
    return verdict.get("decision") or "none"


def short_path(path: str | None, parts: int = 2) -> str:
    """The last `parts` components of a source path: enough to tell files apart in a narrow column."""
    if not path:
        return "—"
    return "/".join(PurePath(str(path)).parts[-parts:])


def documents_table(page: pd.DataFrame) -> pd.DataFrame:
    """The Documents view's table from Store.documents_page (DOCUMENT_COLUMNS)."""
    if page.empty:
        return pd.DataFrame(columns=list(DOCUMENT_COLUMNS))
    return pd.DataFrame({
        "dataset": page["dataset"],
        "file": [short_path(p, parts=1) for p in page["source_file"]],
        "passage": [None if pd.isna(s) else int(s) + 1 for s in page["segment"]],  # 1-based, as the view says
        "line": page["source_line"],
        "title": page["title"].fillna(""),
        "n_chars": page["n_chars"],
        "preview": [" ".join(str(t or "").split()) for t in page["preview"]],
        "instructions": page["n_instructions"],
    }, columns=list(DOCUMENT_COLUMNS))


def corpus_only(contents: pd.DataFrame) -> list[tuple[str, int]]:
    """(name, documents) of the datasets in `contents` (Store.dataset_contents) that hold documents
    and no instruction; empty unless every one of them is such a dataset."""
    if contents is None or contents.empty:
        return []
    only = [(str(r["name"]), int(r["documents"])) for _, r in contents.iterrows()
            if int(r["instructions"]) == 0 and int(r["documents"]) > 0]
    return only if len(only) == len(contents) else []


def corpus_only_sentence(datasets: list[tuple[str, int]]) -> str:
    """"python-docs has 245 documents and no instructions." (one sentence per dataset)."""
    return " ".join(f"{name} has {n:,} document{'s' if n != 1 else ''} and no instructions." for name, n in datasets)
