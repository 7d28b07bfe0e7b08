"""Selections of the store → training files (JSONL or Parquet).

Formats:
- `alpaca`: {"instruction", "input", "output"} (+ "task", "system" when set)
- `messages`: {"messages": [...]} — TRL's conversational SFT format
- `preference`: {"prompt", "chosen", "rejected"} — TRL's preference (DPO) format; conversational
  (for every record of the file) when any exported sample has a system prompt or earlier turns
- `prompts`: {"instruction", "input"} — instructions only, e.g. for a generate stage elsewhere

A reviewer's latest edit of a response replaces its text; `exclude_rejected` drops samples
whose latest human decision is reject (for a preference pair: its instruction's or chosen answer's). Files are written under a temporary name and renamed,
so a reader never sees half a file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from core.store import ExploreFilter, Store

EXPORT_FORMATS = ("alpaca", "messages", "preference", "prompts")
FILE_TYPES = ("jsonl", "parquet")


class ExportError(ValueError):
    """The export request is invalid; nothing was written."""


@dataclass
class ExportResult:
    path: Path
    format: str
    n_records: int


def _user_content(row: dict) -> str:
    return f"{row['instruction']}\n\n{row['input']}" if row.get("input") else row["instruction"]


def _prefix_turns(row: dict) -> list[dict]:
    turns = [{"role": "system", "content": row["system"]}] if row.get("system") else []
    if row.get("history"):
        turns.extend(orjson.loads(row["history"]))
    return turns


def _labels(row: dict) -> dict:
    return {"task": row["task"]} if row.get("task") else {}


def to_alpaca(row: dict) -> dict:
    out = {"instruction": row["instruction"], "input": row.get("input") or "", "output": row["output"]}
    if row.get("system"):
        out["system"] = row["system"]
    return out | _labels(row)


def to_messages(row: dict) -> dict:
    turns = _prefix_turns(row) + [{"role": "user", "content": _user_content(row)},
                                  {"role": "assistant", "content": row["output"]}]
    return {"messages": turns} | _labels(row)


def to_prompt(row: dict) -> dict:
    out = {"instruction": row["instruction"], "input": row.get("input") or ""}
    if row.get("system"):
        out["system"] = row["system"]
    return out | _labels(row)


def to_preference(row: dict, conversational: bool = False) -> dict:
    """TRL's standard form (strings), or its conversational form when asked or when the sample
    has a system prompt or earlier turns."""
    prefix = _prefix_turns(row)
    if prefix or conversational:
        return {"prompt": prefix + [{"role": "user", "content": _user_content(row)}],
                "chosen": [{"role": "assistant", "content": row["chosen"]}],
                "rejected": [{"role": "assistant", "content": row["rejected"]}]} | _labels(row)
    return {"prompt": _user_content(row), "chosen": row["chosen"], "rejected": row["rejected"]} | _labels(row)


def _rows(frame) -> list[dict[str, Any]]:
    """DataFrame rows as dicts with None for SQL NULL (pandas turns a NULL string into NaN, which is truthy)."""
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


def build_records(store: Store, fmt: str, selection: ExploreFilter, roles: list[str] | None = None,
                  exclude_rejected: bool = False) -> list[dict[str, Any]]:
    if fmt not in EXPORT_FORMATS:
        raise ExportError(f"unknown export format {fmt!r}: choose one of {', '.join(EXPORT_FORMATS)}")
    if fmt == "preference":
        rows = _rows(store.export_preferences(selection, exclude_rejected))
        # One form for the whole file: a column cannot hold both strings and turns (Parquet
        # refuses, and TRL and `datasets` expect one form), so any conversational sample makes all so.
        conversational = any(r.get("system") or r.get("history") for r in rows)
        return [to_preference(r, conversational) for r in rows]
    if fmt == "prompts":
        return [to_prompt(r) for r in _rows(store.export_prompts(selection, exclude_rejected))]
    rows = _rows(store.export_pairs(selection, roles or ["seed"], exclude_rejected))
    convert = to_alpaca if fmt == "alpaca" else to_messages
    return [convert(r) for r in rows]


def write_records(records: list[dict], path: Path, file_type: str) -> None:
    if file_type not in FILE_TYPES:
        raise ExportError(f"unknown file type {file_type!r}: choose jsonl or parquet")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        if file_type == "jsonl":
            with open(tmp, "wb") as fh:
                for rec in records:
                    fh.write(orjson.dumps(rec))
                    fh.write(b"\n")
        else:
            # from_pylist takes its columns from the first record; give every record every key.
            keys = list(dict.fromkeys(k for rec in records for k in rec))
            pq.write_table(pa.Table.from_pylist([{k: rec.get(k) for k in keys} for rec in records]), tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a failed export leaves the previous file, and no half-written one
        raise


def export(store: Store, fmt: str, out: Path, selection: ExploreFilter | None = None,
           roles: list[str] | None = None, exclude_rejected: bool = False,
           file_type: str | None = None) -> ExportResult:
    file_type = file_type or ("parquet" if out.suffix == ".parquet" else "jsonl")
    records = build_records(store, fmt, selection or ExploreFilter(), roles, exclude_rejected)
    if not records:
        raise ExportError("the selection holds no records for this format; nothing was written")
    write_records(records, out, file_type)
    return ExportResult(path=out, format=fmt, n_records=len(records))
