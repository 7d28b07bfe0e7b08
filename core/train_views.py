"""What the Train page and the Models page's lineage view show, computed without streamlit.

- Settings: the TrainConfig fields the Train page's form offers (FORM_FIELDS), checked by
  TrainConfig itself; the settings of an earlier run (its job's config.json) and named presets
  under workspace/train_presets/<name>.json, both preloadable into the form.
- Runs: every training job with its snapshot, steps, latest loss, tokens/s and ETA, read from the
  job folders (never from a session), so a reloaded browser sees the same state.
- Curves: a run's per-step records (core.train.job.metrics) as a frame that charts.training_curves
  plots.
- Lineage: the trained models of a workspace with where each came from; a LoRA adapter merged
  into a full model folder (what vLLM or a next training round loads).
"""

from __future__ import annotations

import math
import os
import re
import shutil
from dataclasses import fields
from pathlib import Path

import pandas as pd

from core import jobs
from core.train import job as train_job
from core.train.config import TrainConfig

PRESETS = "train_presets"
PRESET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$")
# The settings a user moves most (the form's first rows), then the rest (its "more settings").
MAIN_FIELDS = ("method", "max_steps", "epochs", "batch_size", "learning_rate", "max_seq_len", "packing",
               "lora_r", "lora_alpha", "lr_scheduler", "warmup_steps")
MORE_FIELDS = ("grad_accum", "lora_dropout", "warmup_ratio", "weight_decay", "max_grad_norm", "seed", "dtype",
               "gradient_checkpointing", "logging_steps", "save_steps", "save_total_limit", "parallel")
# base_model comes from the form's model choice; chat_template from the base model's spec;
# target_modules from the architecture; trust_remote_code is a per-model decision, not a setting.
FORM_FIELDS = MAIN_FIELDS + MORE_FIELDS
RESUMABLE = ("stopped", "failed", "cancelled", "pending")


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------


def default_settings() -> dict:
    """TrainConfig's defaults for every field the form shows."""
    defaults = {f.name: f.default for f in fields(TrainConfig)}
    return {name: defaults[name] for name in FORM_FIELDS}


def form_settings(config: TrainConfig | dict) -> dict:
    """The form's fields of a TrainConfig (or its dict); a field the dict lacks gets its default."""
    d = config.to_dict() if isinstance(config, TrainConfig) else dict(config)
    return default_settings() | {k: d[k] for k in FORM_FIELDS if k in d}


def build_config(base_model: str, settings: dict) -> TrainConfig:
    """The TrainConfig of the form's settings on `base_model`; a ValueError names a bad value or an
    unknown setting."""
    unknown = set(settings) - set(FORM_FIELDS)
    if unknown:
        raise ValueError(f"unknown trainer setting(s): {', '.join(sorted(unknown))}")
    return TrainConfig.from_dict({"base_model": base_model} | dict(settings))


def settings_problem(base_model: str, settings: dict) -> str | None:
    """What is wrong with these settings (TrainConfig's message), or None."""
    try:
        build_config(base_model, settings)
    except (ValueError, TypeError) as exc:
        return str(exc)
    return None


def run_settings(ws, job_id: str) -> dict:
    """The settings an earlier training job ran with (its config.json): base_model (the model name
    the user chose), snapshot, round, threads and `train` (the form's fields)."""
    config = jobs.read_json(ws.job_dir(job_id) / jobs.CONFIG) or {}
    if config.get("kind") != train_job.KIND:
        raise ValueError(f"job {job_id} is not a training job")
    return {"base_model": config.get("base_model"), "snapshot": (config.get("snapshot") or {}).get("name"),
            "round": int(config.get("round") or 0), "threads": config.get("threads"),
            "train": form_settings(config.get("train") or {})}


# --------------------------------------------------------------------------------------------
# Presets: named settings under workspace/train_presets/
# --------------------------------------------------------------------------------------------


def check_preset_name(name: str) -> str:
    name = (name or "").strip()
    if not PRESET_NAME.match(name):
        raise ValueError(f"preset name {name!r} is invalid: use 1–64 letters, digits, '.', '_' or '-', "
                         "starting with a letter or digit")
    return name


def presets_dir(ws) -> Path:
    return Path(ws.root) / PRESETS


def presets(ws) -> list[str]:
    """The saved preset names, sorted."""
    folder = presets_dir(ws)
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.json") if PRESET_NAME.match(p.stem))


def _checked_preset(name: str, data) -> dict:
    if not isinstance(data, dict) or not isinstance(data.get("train"), dict):
        raise ValueError(f"preset {name!r} holds no trainer settings")
    threads = data.get("threads")
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise ValueError(f"preset {name!r}: threads must be an integer ≥ 1 or empty, not {threads!r}")
    unknown = set(data["train"]) - set(FORM_FIELDS)
    if unknown:
        raise ValueError(f"preset {name!r}: unknown trainer setting(s): {', '.join(sorted(unknown))}")
    train = form_settings(data["train"])
    problem = settings_problem("preset", train)  # any base name: only the settings are checked here
    if problem:
        raise ValueError(f"preset {name!r}: {problem}")
    return {"train": train, "threads": threads}


def save_preset(ws, name: str, settings: dict, threads: int | None = None) -> Path:
    """Save the form's settings under a name (checked first; replaces a preset of that name)."""
    name = check_preset_name(name)
    preset = _checked_preset(name, {"train": dict(settings), "threads": threads})
    folder = presets_dir(ws)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    jobs.write_json(path, preset)  # temporary file, then rename: a preset is whole or absent
    return path


def load_preset(ws, name: str) -> dict:
    """A saved preset: {"train": the form's settings, "threads": ...}, checked again (the file may
    have been edited by hand)."""
    name = check_preset_name(name)
    path = presets_dir(ws) / f"{name}.json"
    if not path.is_file():
        raise ValueError(f"no preset named {name!r}")
    return _checked_preset(name, jobs.read_json(path))


# --------------------------------------------------------------------------------------------
# Base models and the new model's name
# --------------------------------------------------------------------------------------------


def _adapter_folder(spec) -> bool:
    """A workspace model whose folder is a LoRA adapter (no full weights to start from)."""
    if spec.path is None or spec.path.startswith("builtin:"):
        return False
    folder = Path(spec.path).expanduser()
    return (folder / "adapter_config.json").is_file() and not (folder / "config.json").is_file()


def trainable_models(ws) -> list[str]:
    """Models a run can start from: local Hugging Face weights (hf or vllm), LoRA adapters left
    out (merge one first); the random test model last."""
    from core.workspace import TEST_MODELS

    names = [s.name for s in ws.models() if s.backend in ("hf", "vllm") and s.path and not _adapter_folder(s)]
    return sorted(names, key=lambda n: n in TEST_MODELS)


def model_name_problem(ws, name: str) -> str | None:
    """Why `name` cannot be a new model's name (invalid, taken, its folder in use), or None."""
    from core.llm.registry import NAME_RE

    name = (name or "").strip()
    if not NAME_RE.match(name):
        return (f"model name {name!r} is invalid: use 1–80 letters, digits, '.', '_' or '-', starting with a "
                "letter or digit")
    if name in {s.name for s in ws.models()}:
        return f"a model named {name!r} exists already"
    folder = Path(ws.root) / "models" / name
    if folder.exists() and any(folder.iterdir()):
        return f"{folder} exists already"
    for info in ws.jobs():
        if info["kind"] == train_job.KIND and info["model"] == name:
            return f"training job {info['id']} trains a model named {name!r} already"
    return None


def suggest_model_name(ws, base_model: str, snapshot: str) -> str:
    """A free name for the model trained from `base_model` on `snapshot`: base-snapshot, then -2, -3…"""
    stem = re.sub(r"[^A-Za-z0-9._\-]+", "-", f"{base_model}-{snapshot}").strip("-._")[:72] or "model"
    candidate, n = stem, 1
    while model_name_problem(ws, candidate):
        n += 1
        candidate = f"{stem}-{n}"
    return candidate


def start_run(ws, name: str, snapshot: str, base_model: str, settings: dict, round: int = 0,
              threads: int | None = None) -> str:
    """Create the training job (nothing is written when a value is wrong); returns its id. The page
    launches it (ui.launch_job)."""
    problem = model_name_problem(ws, name)
    if problem:
        raise ValueError(problem)
    config = build_config(base_model, settings)
    return ws.create_training_job(name.strip(), snapshot, config.to_dict(), round=round, base_model=base_model,
                                  threads=threads)


# --------------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------------


def training_runs(ws) -> list[dict]:
    """Every training job, newest first: core.jobs.summary's fields (status, done, total, tokens/s,
    ETA, …) plus snapshot, base_model, method, loss, epoch, registered and live."""
    runs = []
    for info in ws.jobs():
        if info["kind"] != train_job.KIND:
            continue
        folder = Path(info["dir"])
        config = jobs.read_json(folder / jobs.CONFIG) or {}
        progress = jobs.read_json(folder / jobs.PROGRESS) or {}
        runs.append(info | {
            "snapshot": (config.get("snapshot") or {}).get("name"), "base_model": config.get("base_model"),
            "method": (config.get("train") or {}).get("method"), "round": config.get("round"),
            "loss": progress.get("loss"), "epoch": progress.get("epoch")})
    return runs


def any_live(runs: list[dict]) -> bool:
    """Whether a run will change by itself (it runs, or its model is yet to be registered)."""
    return any(r.get("live") for r in runs)


def runs_frame(runs: list[dict]) -> pd.DataFrame:
    """The runs table: one row per run; ETA in seconds (running runs only) for the page to word."""
    return pd.DataFrame([{
        "run": r["id"], "status": r["status"], "model": r["model"], "base": r["base_model"],
        "snapshot": r["snapshot"], "method": r["method"],
        "steps": f"{int(r['done'] or 0):,} / {int(r['total'] or 0):,}" if r["total"] else f"{int(r['done'] or 0):,}",
        "loss": r["loss"], "tokens/s": r["tokens_per_s"],
        "ETA": r["eta_s"] if r["status"] == "running" else None,
        "created": r["created"],
    } for r in runs], columns=["run", "status", "model", "base", "snapshot", "method", "steps", "loss", "tokens/s",
                               "ETA", "created"])


def run_records(ws, job_id: str) -> list[dict]:
    """The run's per-step records (core.train.job.metrics), in step order."""
    return train_job.metrics(ws.job_dir(job_id))


CURVE_COLUMNS = ("step", "loss", "eval_loss", "lr", "grad_norm", "tokens_per_s", "eta_s", "epoch")


def curve_frame(records: list[dict]) -> pd.DataFrame:
    """One row per logged step: step, loss, lr, grad_norm, tokens_per_s, eta_s, epoch, and eval_loss
    when any record has one (NaN where a record lacks a value)."""
    present = [c for c in CURVE_COLUMNS if c != "eval_loss" or any("eval_loss" in r for r in records)]
    frame = pd.DataFrame([{c: r.get(c) for c in present} for r in records], columns=present)
    for column in present:
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return frame.sort_values("step", kind="stable").reset_index(drop=True)


def _number(value) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def run_numbers(info: dict, records: list[dict]) -> dict:
    """The selected run's numbers: step, total, first and latest loss, tokens/s, ETA (None unless it
    runs) and epoch, from its latest record (or its summary before the first record)."""
    last = records[-1] if records else {}
    return {"step": int(last.get("step", info.get("done") or 0)),
            "total": int(last.get("total_steps", info.get("total") or 0)),
            "first_loss": _number(records[0].get("loss")) if records else None,
            "loss": _number(last.get("loss")),
            "eval_loss": _number(next((r["eval_loss"] for r in reversed(records) if "eval_loss" in r), None)),
            "tokens_per_s": _number(last.get("tokens_per_s", info.get("tokens_per_s"))),
            "eta_s": _number(last.get("eta_s", info.get("eta_s"))) if info.get("status") == "running" else None,
            "epoch": _number(last.get("epoch"))}


# --------------------------------------------------------------------------------------------
# Lineage (the Models page)
# --------------------------------------------------------------------------------------------


def trained_models(ws) -> list[dict]:
    """Every workspace model Winnow trained (or merged), with its lineage: dicts name, lineage."""
    out = []
    for spec in ws.models():
        if spec.is_builtin or spec.backend not in ("hf", "vllm") or not spec.path:
            continue  # a built-in's folder is built on first use: never touch it just to list
        lineage = ws.model_lineage(spec.name)
        if lineage:
            out.append({"name": spec.name, "lineage": lineage})
    return out


def lineage_summary(lineage: dict) -> dict:
    """The lineage as the Models page lists it, in reading order."""
    def loss(value):
        return None if value is None else round(float(value), 4)

    return {"base model": lineage.get("base_model"), "snapshot": lineage.get("snapshot"),
            "snapshot hash": lineage.get("snapshot_hash"), "method": lineage.get("method"),
            "round": lineage.get("round"), "training job": lineage.get("job"), "steps": lineage.get("steps"),
            "first loss": loss(lineage.get("first_loss")), "final loss": loss(lineage.get("final_loss")),
            "trained at": lineage.get("trained_at"), "merged from": lineage.get("merged_from")}


def config_frame(train_config: dict | None) -> pd.DataFrame:
    """A trainer config as (setting, value) rows, values as text (a column of mixed types)."""
    return pd.DataFrame([{"setting": k, "value": "—" if v is None else str(v)}
                         for k, v in sorted((train_config or {}).items())], columns=["setting", "value"])


def is_adapter(ws, name: str) -> bool:
    """Whether the model is a LoRA adapter (loaded through peft on its base; mergeable)."""
    return _adapter_folder(ws.model(name))


def merge_adapter_model(ws, name: str, new_name: str):
    """Fold the LoRA adapter `name` into its base as a full model folder models/<new_name>/model
    (with the adapter's lineage and merged_from), and register it; returns its ModelSpec."""
    from core.llm.hf import merge_adapter
    from core.llm.registry import ModelSpec

    spec = ws.model(name)
    if not _adapter_folder(spec):
        raise ValueError(f"model {name!r} is not a LoRA adapter; there is nothing to merge")
    new_name = (new_name or "").strip()
    problem = model_name_problem(ws, new_name)
    if problem:
        raise ValueError(problem)
    final = Path(ws.root) / "models" / new_name / "model"
    tmp = final.with_name(".model.tmp")  # merged whole, then renamed: a folder is complete or absent
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    merge_adapter(spec.local_path(), tmp)
    lineage = (ws.model_lineage(name) or {}) | {"merged_from": name}
    jobs.write_json(tmp / train_job.LINEAGE, lineage)
    os.replace(tmp, final)
    return ws.add_model(ModelSpec(new_name, "hf", path=str(final), chat_template=spec.chat_template,
                                  context_length=spec.context_length, dtype=spec.dtype,
                                  trust_remote_code=spec.trust_remote_code))
