"""A stage declared outside core (as a user's plugin would be): the job process imports its
worker by name, so nothing but this module and one `register` call is needed."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from core import stages
from core.ids import content_id


@dataclass(frozen=True)
class ShoutParams:
    model: object = stages.param(help="model name", kind="model")
    role: str = stages.param("shout", "role of the answers", kind="role")
    times: int = stages.param(1, "exclamation marks", kind="int", minimum=1, maximum=5)

    def __post_init__(self) -> None:
        stages.check_role(self.role)
        if not 1 <= self.times <= 5:
            raise ValueError(f"times must be between 1 and 5, not {self.times!r}")


def shout_shard(ctx, rows: pa.Table) -> pa.Table:
    """Answers each instruction with itself in capitals (no model needed), and adds one follow-up
    instruction per input row: a shard that feeds two tables."""
    cfg = ctx.config
    out = {k: [] for k in ("output", "id", "instruction_id", "role", "text", "n_chars", "model", "round", "method",
                           "dataset_id", "parent_id")}
    for ins_id, text in zip(rows["id"].to_pylist(), rows["text"].to_pylist(), strict=True):
        answer = text.upper() + "!" * cfg["times"]
        follow = f"Say it again: {text}"
        for output, rid, iid, t, dataset, parent in (
                ("responses", content_id(ins_id, cfg["role"], answer), ins_id, answer, None, None),
                ("instructions", content_id("follow", ins_id), None, follow, cfg["dataset_id"], ins_id)):
            for key, value in (("output", output), ("id", rid), ("instruction_id", iid), ("role", cfg["role"]),
                               ("text", t), ("n_chars", len(t)), ("model", cfg["model"]["name"]), ("round", 0),
                               ("method", "shout"), ("dataset_id", dataset), ("parent_id", parent)):
                out[key].append(value)
    return pa.table(out)


def select_instructions(ws, p, selection, limit):
    rows = ws.store.instructions_for_job(selection, limit)
    return pa.table({"id": [r["id"] for r in rows], "text": [r["text"] for r in rows]})
