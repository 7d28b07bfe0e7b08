"""Training objectives: what a training job optimises, and on which frozen data.

A training job (core.train.job) always trains a base model into a new model, with one TrainConfig
(optimizer, steps, LoRA, dtype, ...). What it optimises is its *objective*:

    sft       next-token loss on an sft snapshot (core.train.sft; the default)
    dpo       Zephyr's direct preference optimisation on a preference snapshot (core.train.dpo)
    ranking   Tuna's NLL + pairwise ranking loss on a ranking set (core.train.ranking)

Each objective lives in its own module, imported only when a job uses it, with three functions:

    parse_objective(d: dict) -> dict
        the objective's settings validated, defaults filled in, JSON-safe ({"kind": ..., ...});
        raises ValueError naming the key and the value
    data_source(ws, name: str, objective: dict) -> dict
        the frozen data the job reads, by name (a snapshot, a ranking set): {"name", "parquet_path",
        "content_hash"}; raises ValueError when it does not exist or is of the wrong kind
    train_objective(config, objective, parquet, output_dir, progress, should_stop, threads)
        trains and returns a core.train.sft.TrainResult; resumes from the newest complete
        checkpoint in output_dir; calls progress(**record) with sft's record fields (step,
        total_steps, epoch, loss, lr, grad_norm, tokens, tokens_per_s, eta_s, elapsed_s) plus any
        of its own; stops at a checkpoint when should_stop() turns true

The job reads only the Parquet file (checked by sha256), never the catalog.
"""

from __future__ import annotations

import importlib
from types import ModuleType

OBJECTIVES: dict[str, str] = {
    "sft": "core.train.objectives",
    "dpo": "core.train.dpo",
    "ranking": "core.train.ranking",
}
DEFAULT = {"kind": "sft"}


def module(kind: str) -> ModuleType:
    if kind not in OBJECTIVES:
        raise ValueError(f"objective kind must be one of {', '.join(OBJECTIVES)}, not {kind!r}")
    return importlib.import_module(OBJECTIVES[kind])


def parse(objective: dict | None) -> dict:
    """A validated objective dict (default: sft)."""
    if objective is None:
        return dict(DEFAULT)
    if not isinstance(objective, dict):
        raise ValueError(f"objective must be a mapping with a kind ({', '.join(OBJECTIVES)}), not {objective!r:.200}")
    return module(objective.get("kind", "sft")).parse_objective(dict(objective))


# -- the sft objective ------------------------------------------------------------------------


def parse_objective(d: dict) -> dict:
    unknown = sorted(set(d) - {"kind"})
    if unknown:
        raise ValueError(f"objective sft takes no settings, got {', '.join(unknown)}")
    return {"kind": "sft"}


def snapshot_source(ws, name: str, kind: str) -> dict:
    """A snapshot of `kind` as a job's data source (shared by sft and dpo)."""
    from core import curate

    snap = curate.snapshot(ws, name, page_size=1)  # ValueError: no snapshot named …
    if snap.spec.kind != kind:
        raise ValueError(f"snapshot {name!r} is a {snap.spec.kind} snapshot; this training job takes a {kind} snapshot")
    return {"name": snap.name, "parquet_path": snap.parquet_path, "content_hash": snap.content_hash}


def data_source(ws, name: str, objective: dict) -> dict:
    return snapshot_source(ws, name, "sft")


def train_objective(config, objective: dict, parquet, output_dir, progress, should_stop, threads):
    from core.train import examples_from_parquet, train

    return train(config, examples_from_parquet(parquet), output_dir, progress=progress, resume_from="latest",
                 should_stop=should_stop, threads=threads)
