"""A workspace: one folder, one DuckDB catalog, and the single Python API that pages and CLI use.

    workspace/
      winnow.duckdb   catalog: datasets, samples, judgments, reviews, rejects
      runs/           job inputs, shards, logs (and uploads waiting to be imported)
      models/         checkpoints
      exports/        files written by export
      requests/       work handed to the process that owns the catalog (see core.owner)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa

from core import calibration as calib
from core import export as export_mod
from core import ingest, jobs, stages
from core import judge as judge_mod
from core.ids import content_id
from core.selection import ExploreFilter
from core.store import BulkUnreadable, Store, WorkspaceBusy

CATALOG = "winnow.duckdb"
RECOVERY_LOG = "recovery.log"  # one JSON line per write-ahead log moved aside (core.store.base)
DEFAULT_WORKSPACE = "workspace"
SUBDIRS = ("runs", "models", "exports", "requests")
DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._\-]{0,99}$")
REVIEW_DECISIONS = ("accept", "reject", "tie", None)  # tie: pairs only
# Models that exist to test the plumbing; their output is noise. Never a default, always marked.
TEST_MODELS = frozenset({"tiny-random"})

__all__ = ["Workspace", "WorkspaceBusy", "ExploreFilter", "resolve_workspace_path"]


def resolve_workspace_path(path: str | Path | None = None) -> Path:
    """--workspace wins, then $WINNOW_WORKSPACE, then ./workspace."""
    return Path(path or os.environ.get("WINNOW_WORKSPACE") or DEFAULT_WORKSPACE).expanduser()


def check_dataset_name(name: str) -> str:
    name = (name or "").strip()
    if not DATASET_NAME.match(name):
        raise ValueError(f"dataset name {name!r} is invalid: use 1–100 letters, digits, spaces, '.', '_' or '-', "
                         "starting with a letter or digit")
    return name


class Workspace:
    def __init__(self, root: str | Path | None = None, create: bool = True):
        self.root = resolve_workspace_path(root)
        if not create and not (self.root / CATALOG).exists():
            raise FileNotFoundError(f"no Winnow workspace at {self.root} (run `winnow init` first)")
        for sub in SUBDIRS:
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.store = Store(self.root / CATALOG)
        self.store.migrate()
        if self.store.wal_recovery:  # kept beside the catalog too, so the next reader learns of it
            with open(self.root / RECOVERY_LOG, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(self.store.wal_recovery | {"at": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")

    @property
    def recovery_message(self) -> str | None:
        """Said once when this open had to move an unreadable write-ahead log aside."""
        r = self.store.wal_recovery
        if not r:
            return None
        return (f"The catalog's write-ahead log could not be replayed ({r['error'][:200]}); it was moved to "
                f"{r['moved_to']} and the workspace opened at its last checkpoint: the writes in that log are "
                "not in the catalog.")

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def exports_dir(self) -> Path:
        return self.root / "exports"

    @property
    def uploads_dir(self) -> Path:
        path = self.root / "runs" / "uploads"
        path.mkdir(parents=True, exist_ok=True)
        return path

    # -- import -------------------------------------------------------------------------------

    def check_import(self, paths: list[str | Path], fmt: str | None = None, role: str = "seed",
                     corpus: ingest.CorpusOptions | None = None) -> list[ingest.FileCheck]:
        """Validate files without writing anything (the Import page's preview)."""
        return ingest.check_paths(paths, fmt, role, corpus)

    def import_paths(self, paths: list[str | Path], dataset: str, fmt: str | None = None,
                     skip_invalid: bool = False, role: str = "seed",
                     corpus: ingest.CorpusOptions | None = None,
                     checks: list[ingest.FileCheck] | None = None,
                     bulk_min_bytes: int = ingest.BULK_MIN_BYTES) -> ingest.ImportSummary:
        """Import files into a dataset, all or nothing: one transaction for every file.

        Raises ImportRejected (nothing written) on invalid input, unless skip_invalid, in which
        case valid rows go in and rejected rows are recorded. `checks` (from check_import) skips
        re-reading the files. Large clean JSON Lines files take DuckDB's bulk path."""
        try:
            return self._import_paths(paths, dataset, fmt, skip_invalid, role, corpus, checks, bulk_min_bytes)
        except BulkUnreadable:
            # The bulk reader's error aborted the transaction (rolled back, nothing kept): start
            # again with every file on the line-by-line path, which names each bad line.
            return self._import_paths(paths, dataset, fmt, skip_invalid, role, corpus, checks, sys.maxsize)

    def _import_paths(self, paths, dataset, fmt, skip_invalid, role, corpus, checks,
                      bulk_min_bytes) -> ingest.ImportSummary:
        dataset = check_dataset_name(dataset)
        if not role or not re.match(r"^[a-z][a-z0-9_]{0,31}$", role):
            raise ValueError(f"role {role!r} is invalid: use lowercase letters, digits and '_'")
        if fmt is not None and fmt not in ingest.FORMATS:
            raise ingest.ImportRejected(f"unknown format {fmt!r}: choose one of {', '.join(ingest.FORMATS)}")
        files: list[dict] = []
        with self.store.transaction() as cur:
            if checks is None:
                checks = []
                for path in ingest.expand_paths(paths, fmt):
                    done = None
                    if ingest.bulk_eligible(path, fmt, bulk_min_bytes):
                        done = ingest.bulk_import_file(self.store, cur, path, dataset, fmt, role)
                    if done is not None:
                        files.append(done)
                    else:
                        checks.append(ingest.check_file(path, fmt, role, corpus))
            if any(c.fatal for c in checks) or (not skip_invalid and any(not c.ok for c in checks)):
                raise ingest.ImportRejected(ingest.rejection_message(checks))
            if not files and sum(c.n_valid for c in checks) == 0:
                raise ingest.ImportRejected("the input holds no valid record or passage; nothing was imported")
            files.extend(ingest.write_checks(self.store, cur, dataset, checks))
        self.store.refresh_text_index()  # committed: the search index takes the new rows (core/text_index.py)
        return ingest.ImportSummary(dataset=dataset, files=files)

    # -- export -------------------------------------------------------------------------------

    def export(self, fmt: str, out: str | Path | None = None, selection: ExploreFilter | None = None,
               roles: list[str] | None = None, exclude_rejected: bool = False,
               file_type: str = "jsonl") -> export_mod.ExportResult:
        if out is None:
            out = self.exports_dir / f"{fmt}.{file_type}"
        return export_mod.export(self.store, fmt, Path(out), selection, roles, exclude_rejected,
                                 file_type=file_type if Path(out).suffix != ".parquet" else "parquet")

    def export_files(self, limit: int = 50) -> list[dict]:
        """The files in exports/, newest first: name, size and modification time."""
        files = [p for p in self.exports_dir.glob("*.*") if p.is_file() and not p.name.startswith(".")]
        files.sort(key=lambda p: p.stat().st_mtime, reverse=True)
        return [{"file": p.name, "size (KB)": round(p.stat().st_size / 1024, 1),
                 "modified": datetime.fromtimestamp(p.stat().st_mtime).strftime("%Y-%m-%d %H:%M:%S")}
                for p in files[:limit]]

    def export_records(self, fmt: str, selection: ExploreFilter | None = None, roles: list[str] | None = None,
                       exclude_rejected: bool = False) -> list[dict]:
        return export_mod.build_records(self.store, fmt, selection or ExploreFilter(), roles, exclude_rejected)

    # -- overview -----------------------------------------------------------------------------

    def stats(self) -> dict:
        counts = self.store.table_counts()
        datasets = self.store.datasets()
        counts["per_dataset"] = [
            {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}
            for row in datasets.to_dict("records")
        ]
        counts["per_role"] = self.store.role_counts().to_dict("records")
        counts["workspace"] = str(self.root)
        return counts

    # -- explore and review -------------------------------------------------------------------

    def explore_count(self, selection: ExploreFilter) -> int:
        return self.store.explore_count(selection)

    def explore_page(self, selection: ExploreFilter, page: int = 0, page_size: int = 50, order: str = "oldest"):
        return self.store.explore_page(selection, limit=page_size, offset=page * page_size, order=order)

    def explore_view(self, selection: ExploreFilter, page: int = 0, page_size: int = 50, order: str = "oldest"):
        """(count, page): the selection's count and one page of it, read side by side."""
        return self.store.explore_view(selection, limit=page_size, offset=page * page_size, order=order)

    def length_histogram(self, selection: ExploreFilter, bin_width: int = 100):
        """Instruction lengths of the selection in bins of `bin_width` characters (bin_start, n)."""
        if bin_width < 1:
            raise ValueError(f"bin_width must be positive, not {bin_width}")
        return self.store.length_histogram(selection, bin_width)

    def sample(self, instruction_id: str) -> dict | None:
        """Everything about one instruction: text, responses, pairs, reviews, judgments, lineage."""
        ins = self.store.instruction(instruction_id)
        if ins is None:
            return None
        responses = self.store.responses_for(instruction_id)
        ids = [instruction_id] + [r["id"] for r in responses]
        return {
            "instruction": ins,
            "responses": responses,
            "pairs": self.store.pairs_for(instruction_id),
            "reviews": self.store.reviews_for(ids),
            "judgments": self.store.judgments_for(ids),
        }

    def review(self, target_id: str, decision: str | None = None, edited_text: str | None = None,
               note: str | None = None, target_kind: str | None = None, reviewer: str | None = None,
               source: str | None = None) -> str:
        """Record a human review. Reviews are append-only: the latest one is the current verdict.
        A preference pair can be accepted (the chosen answer is better), rejected, or a tie.
        `source`: where it was made (explore, queue:…, cli), kept as lineage."""
        if decision not in REVIEW_DECISIONS:
            raise ValueError(f"decision must be accept, reject, tie or empty, not {decision!r}")
        edited_text = edited_text if edited_text and edited_text.strip() else None
        note = note.strip() if note and note.strip() else None
        if decision is None and edited_text is None and note is None:
            raise ValueError("a review needs a decision, an edit or a note")
        actual_kind = self.store.target_kind(target_id)
        if actual_kind is None:
            raise ValueError(f"no instruction, response or document with id {target_id!r}")
        if target_kind is not None and target_kind != actual_kind:
            raise ValueError(f"{target_id!r} is a {actual_kind}, not a {target_kind}")
        target_kind = actual_kind
        if decision == "tie" and target_kind != "pair":
            raise ValueError(f"tie is a verdict on a preference pair, not on a {target_kind}")
        if edited_text is not None and target_kind == "pair":
            raise ValueError("edit one of the pair's responses, not the pair")
        reviewer = reviewer.strip() if reviewer and reviewer.strip() else None
        review_id = content_id("review", target_id, datetime.now(timezone.utc).isoformat(), decision or "",
                               edited_text or "", note or "")
        self.store.insert_review([review_id, target_kind, target_id, decision, edited_text, note, reviewer, source])
        return review_id

    # -- jobs ---------------------------------------------------------------------------------

    @property
    def jobs_dir(self) -> Path:
        path = self.root / "runs" / "jobs"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def job_dir(self, job_id: str) -> Path:
        if not re.match(r"^[A-Za-z0-9_.\-]+$", job_id or "") or not (self.jobs_dir / job_id / jobs.CONFIG).exists():
            raise ValueError(f"no job {job_id!r} in {self.jobs_dir}")
        return self.jobs_dir / job_id

    def create_job(self, stage: str, params: dict | None = None, selection: ExploreFilter | None = None,
                   limit: int = 1_000_000, round: int = 0, shard_size: int = 16) -> str:
        """Snapshot a stage's input rows from the selection into a new job folder; returns its id.
        Starts nothing (core.jobs.launch does). `params` are the stage's (core.stages); its
        `model` is a model name of this workspace, or a model spec as a dict."""
        from core.llm.registry import ModelSpec

        entry = stages.get(stage)
        p = entry.make_params(params or {})
        model = p.model
        spec = ModelSpec.from_dict(model) if isinstance(model, dict) else self.model(model)
        if not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be a positive integer, not {limit!r}")
        rows = entry.select(self, p, selection or ExploreFilter(), limit)
        config = {"stage_params": stages.params_dict(p) | {"model": spec.name}, "model": spec.to_dict(),
                  "round": int(round), "worker": entry.worker} | entry.config(p)
        return self._create_job(entry.name, rows, config, shard_size)

    @staticmethod
    def _new_job_id(kind: str, config: dict) -> str:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        # The random part keeps two identical jobs created within one second apart.
        return f"{kind}-{stamp}-{content_id(kind, stamp, json.dumps(config, sort_keys=True, default=str), secrets.token_hex(8))[:6]}"

    def _create_job(self, kind: str, table, config: dict, shard_size: int) -> str:
        job_id = self._new_job_id(kind, config)
        jobs.create(self.jobs_dir / job_id, kind, table, config, shard_size)
        self.store.record_job([job_id, kind, str(self.jobs_dir / job_id), config["model"]["name"],
                               json.dumps(config, default=str)])
        return job_id

    def jobs(self) -> list[dict]:
        """Every job folder with its status and progress, newest first; with its finished and
        ingested shard counts (shards_done, shards_ingested) and whether it will change by itself
        (live: it runs, or it has finished shards the owner has yet to ingest)."""
        found = [jobs.summary(d) for d in self.jobs_dir.iterdir() if (d / jobs.CONFIG).exists()]
        for info in found:
            info["shards_done"] = len(jobs.finished_shards(Path(info["dir"])))
            info["shards_ingested"] = int(self.store.job_ingest_counts(info["id"])["shards"])
            info["live"] = info["status"] == "running" or (
                info["status"] == "done" and info["shards_done"] > info["shards_ingested"])
            if info["kind"] == "train":  # a finished training job is "ingested" once its model is registered
                info["registered"] = info["status"] == "done" and self.store.model_spec(info["model"]) is not None
                info["live"] = info["status"] == "running" or (info["status"] == "done" and not info["registered"])
        return sorted(found, key=lambda j: j["created"] or "", reverse=True)

    def ingest_job(self, job_id: str) -> dict:
        """Ingest the job's finished shards that are not in yet (idempotent, one transaction each)."""
        job_dir = self.job_dir(job_id)
        config = jobs.read_json(job_dir / jobs.CONFIG)
        if config["kind"] == "train":  # a training job's output is a model, not rows
            return {"job": job_id, "registered": self.register_trained_model(job_id).name, **jobs.summary(job_dir)}
        stage = stages.get(config["kind"])
        done = self.store.ingested_shards(job_id)
        new = 0
        for path in jobs.finished_shards(job_dir):
            if path.name in done:
                continue
            batches = stage.output_batches(jobs.read_shard(path))
            new += self.store.ingest_shard(job_id, path.name, hashlib.sha256(path.read_bytes()).hexdigest(), batches)
        if new:
            self.store.refresh_text_index()  # committed: the search index takes the new rows (core/text_index.py)
        counts = self.store.job_ingest_counts(job_id)
        return {"job": job_id, "new_now": new, **counts, **jobs.summary(job_dir)}

    def ingest_finished_jobs(self) -> int:
        """Ingest what every job has finished so far (the owner thread calls this)."""
        new = 0
        for info in self.jobs():
            if info["kind"] == "train":
                if info["status"] == "done" and not info["registered"]:
                    self.register_trained_model(info["id"])
            elif info["status"] != "pending" and info["shards_done"] > info["shards_ingested"]:
                new += self.ingest_job(info["id"])["new_now"]
        return new

    def demo_status(self) -> dict | None:
        """The demo's background judge and task labelling (core.demo): state, and the judge job's
        progress while it runs; None when no such work was queued."""
        from core import demo

        state = demo.pipeline_state(self)
        if state and state.get("judge_job"):
            state = state | {"job": jobs.summary(self.job_dir(state["judge_job"]))}
        return state

    def job_log(self, job_id: str, max_chars: int = 8000) -> str:
        """The end of a job's log (at most max_chars characters, starting at a line)."""
        path = self.job_dir(job_id) / jobs.LOG
        if not path.exists():
            return ""
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_chars * 4))
            text = fh.read().decode("utf-8", errors="replace")
        if len(text) > max_chars:
            text = text[-max_chars:]
            text = text[text.find("\n") + 1:] if "\n" in text else text
        return text

    def job_ingest_counts(self, job_id: str) -> dict:
        """Shards of a job ingested so far, their rows and how many of those were new."""
        return self.store.job_ingest_counts(job_id)

    def create_training_job(self, name: str, snapshot: str, config, round: int = 0, base_model: str | None = None,
                            threads: int | None = None, objective: dict | None = None) -> str:
        """A training job (core.train.job) that fine-tunes `base_model` on an SFT snapshot into the
        model `name` (checkpoints and the final model under models/<name>/); returns its id.
        objective (core.train.objectives): {"kind": "sft"} by default; "dpo" takes a preference
        snapshot, "ranking" a ranking set, each named by `snapshot`.
        Starts nothing (core.jobs.launch does, with nproc=N for torchrun). config: a TrainConfig
        or its dict, whose base_model `base_model` replaces when given; either may name a model
        of this workspace (hf) or a local model folder. Everything is checked before anything is
        written. When the job is done, the catalog's owner registers the model (ingest_job)."""
        from core.llm.registry import BUILTIN_SPECS, ModelSpec
        from core.train import TrainConfig, objectives
        from core.train import job as train_job

        if isinstance(config, TrainConfig):
            config = config.to_dict()
        if not isinstance(config, dict):
            raise ValueError(f"config must be a TrainConfig or a dict of its settings, not {config!r:.200}")
        base_name = base_model or config.get("base_model")
        if not isinstance(base_name, str) or not base_name.strip():
            raise ValueError(f"a training job needs a base model (base_model=, or the config's), not {base_name!r}")
        base_spec = self._trainable_base(base_name)
        if base_spec is None and not (Path(base_name).expanduser() / "config.json").is_file():
            known = ", ".join(s.name for s in self.models() if s.backend in ("hf", "vllm"))
            raise ValueError(f"base model {base_name!r} is neither a model of this workspace ({known}) nor a "
                             "local model folder with a config.json")
        config = config | {"base_model": base_spec.path.removeprefix("builtin:") if base_spec else base_name}
        if base_spec and base_spec.chat_template and not config.get("chat_template"):
            config["chat_template"] = base_spec.chat_template  # train on the template the model is used with
        train = TrainConfig.from_dict(config)
        if not isinstance(round, int) or isinstance(round, bool) or round < 0:
            raise ValueError(f"round must be an integer ≥ 0, not {round!r}")
        if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
            raise ValueError(f"threads must be an integer ≥ 1 or None, not {threads!r}")
        output_dir = self.root / "models" / str(name) / "model"
        spec = ModelSpec(name, "hf", path=str(output_dir), chat_template=train.chat_template,
                         context_length=base_spec.context_length if base_spec else None,
                         dtype=base_spec.dtype if base_spec else "auto", trust_remote_code=train.trust_remote_code)
        if name in BUILTIN_SPECS or self.store.model_spec(name) is not None:
            raise ValueError(f"a model named {name!r} exists already; give the trained model another name")
        if (self.root / "models" / name).exists() and any((self.root / "models" / name).iterdir()):
            raise ValueError(f"{self.root / 'models' / name} exists already; give the trained model another name")
        for info in self.jobs():
            if info["kind"] == "train" and info["model"] == name:
                raise ValueError(f"training job {info['id']} trains a model named {name!r} already")
        objective = objectives.parse(objective)
        source = objectives.module(objective["kind"]).data_source(self, snapshot, objective)
        job_config = train_job.job_config(
            train, snapshot=source, model_spec=spec.to_dict(), output_dir=output_dir.parent, round=round,
            base_model=base_name, threads=threads, objective=objective)
        job_id = self._new_job_id(train_job.KIND, job_config)
        job_config["lineage"]["job"] = job_id
        train_job.create(self.jobs_dir / job_id, job_config)
        self.store.record_job([job_id, train_job.KIND, str(self.jobs_dir / job_id), name,
                               json.dumps(job_config, default=str)])
        return job_id

    def _trainable_base(self, name: str):
        """The hf spec a base model name resolves to, or None for a plain folder path."""
        from core.llm.registry import BUILTIN_SPECS

        if name not in BUILTIN_SPECS and self.store.model_spec(name) is None:
            return None
        spec = self.model(name)
        if spec.backend not in ("hf", "vllm") or spec.path is None:
            raise ValueError(f"model {name!r} runs on the {spec.backend} backend; training needs local weights")
        if not spec.path.startswith("builtin:"):
            spec = type(spec).from_dict(spec.to_dict() | {"path": str(spec.local_path())})
        return spec

    def register_trained_model(self, job_id: str):
        """Register the model a finished training job wrote (idempotent); returns its ModelSpec."""
        from core.llm.registry import ModelSpec
        from core.train import job as train_job

        job_dir = self.job_dir(job_id)
        config = jobs.read_json(job_dir / jobs.CONFIG)
        if config.get("kind") != train_job.KIND:
            raise ValueError(f"job {job_id} is a {config.get('kind')} job, not a training job")
        if jobs.status(job_dir) != "done" or train_job.result(job_dir) is None:
            raise ValueError(f"training job {job_id} has not finished (it is {jobs.status(job_dir)})")
        spec = ModelSpec.from_dict(config["model"])
        stored = self.store.model_spec(spec.name)
        if stored is not None:
            if ModelSpec.from_json(stored).path == spec.path:
                return ModelSpec.from_json(stored)
            raise ValueError(f"a model named {spec.name!r} was registered by someone else meanwhile")
        return self.add_model(spec)

    def model_lineage(self, name: str) -> dict | None:
        """Where a trained model comes from (base model, snapshot and its hash, trainer config, job,
        round, losses): the lineage.json beside its weights; None for a model Winnow did not train."""
        from core.train import job as train_job

        spec = self.model(name)
        if spec.backend not in ("hf", "vllm") or spec.path is None:
            return None
        return jobs.read_json(spec.local_path() / train_job.LINEAGE)

    # -- judges and calibration ---------------------------------------------------------------

    def record_judgments(self, rows) -> int:
        """Store judgment rows (core.judge row dicts, or judge.judgments_table) in one transaction;
        returns how many were new (ids are content hashes: recording twice adds nothing)."""
        table = rows if isinstance(rows, pa.Table) else judge_mod.judgments_table(rows)
        with self.store.transaction() as cur:
            return self.store.insert_judgments(cur, table)

    def judges(self):
        """Every (judge_model, rubric) in the workspace with verdict, unparsed and target counts."""
        return self.store.judges()

    def judge_evidence(self, judge_model: str, rubric: str) -> calib.JudgeEvidence:
        """A judge's scores on the human-labeled targets (the latest decision on each target, or on
        its instruction), its score histogram and verdict counts: everything calibration needs and
        nothing that depends on the threshold, so a page can cache it."""
        labels = self.store.judge_labels(judge_model, rubric)
        # A tie (a verdict on a preference pair) is neither an accept nor a reject: not a label here.
        labels = labels[labels["decision"].isin(["accept", "reject"])]
        verdicts = self.store.judge_verdict_counts(judge_model, rubric)
        return calib.JudgeEvidence(
            target_ids=labels["target_id"].tolist(),
            scores=[None if s is None or s != s else float(s) for s in labels["score"].tolist()],
            labels=calib.to_labels(labels["decision"]).tolist(),
            population=self.store.judge_score_counts(judge_model, rubric),
            n_judgments=int(verdicts["judgments"]), n_failed=int(verdicts["unparsed"]),
            higher_is_better=judge_mod.higher_is_better(rubric),
        )

    def calibration(self, judge_model: str, rubric: str, threshold: float, bootstrap: int = 1000,
                    seed: int = 0) -> calib.Calibration:
        """How a judge's `score >= threshold` agrees with the human accept/reject labels: precision,
        recall, agreement, kept share, parse failures and Kendall τ, with intervals; `.sentence()`
        says it in words."""
        return self.judge_evidence(judge_model, rubric).calibrate(threshold, bootstrap, seed)

    def judge_trust(self, judge_model: str, rubric: str, bootstrap: int = 1000, seed: int = 0) -> calib.Trust:
        """Whether a judge beats chance on the human accept/reject labels (no threshold involved):
        AUC and Kendall τ with intervals, at_chance / inverted / not yet known, and about how many
        more labels would settle it; `.sentence()` says it in words."""
        return self.judge_evidence(judge_model, rubric).trust(bootstrap, seed)

    def judge_trusts(self, bootstrap: int = 1000, seed: int = 0) -> list[dict]:
        """Every (judge_model, rubric) of `judges()` with its Trust: dicts with judge_model, rubric,
        kind, judgments and trust (a calibration.Trust), in `judges()` order."""
        return [{"judge_model": row["judge_model"], "rubric": row["rubric"], "kind": row["kind"],
                 "judgments": int(row["judgments"]),
                 "trust": self.judge_trust(row["judge_model"], row["rubric"], bootstrap, seed)}
                for row in self.judges().to_dict("records")]

    def calibration_sweep(self, judge_model: str, rubric: str, thresholds=None):
        """calibration.threshold_sweep over this judge's labeled targets (a DataFrame to plot)."""
        return self.judge_evidence(judge_model, rubric).sweep(thresholds)

    def review_candidates(self, judge_model: str, rubric: str, threshold: float, k: int = 20):
        """Unlabeled judged targets nearest the threshold: the labels that narrow the interval most."""
        if k < 0:
            raise ValueError(f"k must be non-negative, not {k}")
        return self.store.judge_review_candidates(judge_model, rubric, threshold, k,
                                                  judge_mod.higher_is_better(rubric))

    def flip_rate(self, judge_model: str, rubric: str = "pairwise") -> calib.Proportion:
        """Share of pairs judged in both orders whose verdict changed with the order."""
        counts = self.store.pairwise_flips(judge_model, rubric)
        return calib.proportion(int(counts["flipped"]), int(counts["pairs"]))

    def judge_score_histogram(self, judge_model: str, rubric: str, bin_width: float = 1.0,
                              roles: list[str] | None = None):
        """Judged targets per (role, score bin) as a DataFrame (role, bin_start, n), computed in
        DuckDB. A target's score is the mean of its parsed verdicts; bin_start is NaN for targets
        with no parsed verdict. roles: only responses of these roles (None or empty: all)."""
        if not bin_width or bin_width <= 0:
            raise ValueError(f"bin_width must be positive, not {bin_width}")
        return self.store.judge_score_histogram(judge_model, rubric, bin_width, list(roles or []))

    def judge_bin_samples(self, judge_model: str, rubric: str, bin_start: float | None, bin_width: float = 1.0,
                          roles: list[str] | None = None, page: int = 0, page_size: int = 50):
        """One page (at most 50) of the judged targets in the score bin starting at bin_start (the
        binning of judge_score_histogram), or with bin_start None those with no parsed verdict:
        target, role, score, instruction, response and the latest verdict (raw, parse error)."""
        if not bin_width or bin_width <= 0:
            raise ValueError(f"bin_width must be positive, not {bin_width}")
        if not 1 <= page_size <= 50:
            raise ValueError(f"page_size must be between 1 and 50, not {page_size}")
        return self.store.judge_bin_samples(judge_model, rubric, bin_start, bin_width, list(roles or []),
                                            page_size, max(0, page) * page_size)

    def review_queue(self, judge_model: str, rubric: str, threshold: float, k: int = 20):
        """review_candidates with each target's role, instruction and response text."""
        candidates = self.review_candidates(judge_model, rubric, threshold, k)
        if candidates.empty:
            return candidates
        texts = self.store.judge_target_texts(candidates["target_id"].tolist())
        return candidates.merge(texts, on="target_id", how="left")

    # -- models and embeddings ----------------------------------------------------------------

    def models(self):
        """Every model this workspace can use: the built-ins, then user specs by name."""
        from core.llm.registry import ModelSpec, builtin_specs

        return builtin_specs() + [ModelSpec.from_json(row["spec"]) for row in self.store.models()]

    def model(self, name: str):
        """One model spec by name (built-in or user); a ValueError names the known ones."""
        from core.llm.registry import BUILTIN_SPECS, ModelSpec

        if name in BUILTIN_SPECS:
            return BUILTIN_SPECS[name]
        spec_json = self.store.model_spec(name)
        if spec_json is None:
            known = ", ".join(spec.name for spec in self.models())
            raise ValueError(f"no model named {name!r} in this workspace; known models: {known}")
        return ModelSpec.from_json(spec_json)

    def default_model(self) -> str:
        """The model a judge or teacher form starts on: the newest model the user added, else the
        built-in SmolLM2; never the random test model."""
        from core.llm.registry import BUILTIN_SPECS

        users = [row["name"] for row in sorted(self.store.models(), key=lambda r: r["created_at"], reverse=True)]
        return (users or [name for name in BUILTIN_SPECS if name not in TEST_MODELS] or list(BUILTIN_SPECS))[0]

    def add_model(self, spec, replace: bool = False):
        """Register a model spec (a ModelSpec or its dict). A local folder must exist and hold
        config.json and safetensors weights. Built-in names are taken; an existing user spec is
        replaced only with replace=True. Returns the stored spec."""
        from core.llm.registry import BUILTIN_SPECS, ModelSpec

        spec = spec if isinstance(spec, ModelSpec) else ModelSpec.from_dict(spec)
        if spec.name in BUILTIN_SPECS:
            raise ValueError(f"{spec.name!r} is a built-in model; give yours another name")
        if not replace and self.store.model_spec(spec.name) is not None:
            raise ValueError(f"a model named {spec.name!r} exists already (pass replace=True to change it)")
        spec.check_files()
        self.store.upsert_model(spec.name, spec.to_json())
        return spec

    def remove_model(self, name: str) -> None:
        from core.llm.registry import BUILTIN_SPECS

        if name in BUILTIN_SPECS:
            raise ValueError(f"{name!r} is a built-in model and cannot be removed")
        if not self.store.delete_model(name):
            raise ValueError(f"no model named {name!r} in this workspace")

    def load_model(self, name: str):
        """A loaded backend (core.llm.base.Backend) for a model of this workspace; close it after use."""
        from core.llm.registry import load_backend

        return load_backend(self.model(name))

    def embed(self, texts):
        """Unit-length all-MiniLM-L6-v2 vectors (N × 384), cached in the catalog by text hash."""
        if getattr(self, "_embedder", None) is None:
            from core.embed import Embedder

            self._embedder = Embedder(self.store)
        return self._embedder.embed(texts)

    def rejects(self, limit: int = 500):
        return self.store.rejects(limit)

    def imports(self, limit: int = 100):
        return self.store.imports(limit)

    def filter_options(self) -> dict:
        return self.store.filter_options()

