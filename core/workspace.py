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
import sys
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from core import export as export_mod
from core import ingest, jobs
from core.ids import content_id
from core.store import BulkUnreadable, ExploreFilter, Store, WorkspaceBusy

CATALOG = "winnow.duckdb"
DEFAULT_WORKSPACE = "workspace"
SUBDIRS = ("runs", "models", "exports", "requests")
DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._\-]{0,99}$")
REVIEW_DECISIONS = ("accept", "reject", None)

def _finished_generations(shard: pa.Table):
    """Only answers that finished (stop or length) become responses; too_long and errors stay in
    the job's shards and log."""
    return pc.is_in(shard["finish_reason"], value_set=pa.array(["stop", "length"]))


# kind → (table, columns to insert, row filter): what a job's shards become in the catalog.
INGEST_TARGETS = {
    "generate": ("responses", ["id", "instruction_id", "role", "text", "n_chars", "model", "round", "method",
                               "params", "meta"], _finished_generations),
}

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
        return ingest.ImportSummary(dataset=dataset, files=files)

    # -- export -------------------------------------------------------------------------------

    def export(self, fmt: str, out: str | Path | None = None, selection: ExploreFilter | None = None,
               roles: list[str] | None = None, exclude_rejected: bool = False,
               file_type: str = "jsonl") -> export_mod.ExportResult:
        if out is None:
            out = self.exports_dir / f"{fmt}.{file_type}"
        return export_mod.export(self.store, fmt, Path(out), selection, roles, exclude_rejected,
                                 file_type=file_type if Path(out).suffix != ".parquet" else "parquet")

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
               note: str | None = None, target_kind: str | None = None, reviewer: str | None = None) -> str:
        """Record a human review. Reviews are append-only: the latest one is the current verdict."""
        if decision not in REVIEW_DECISIONS:
            raise ValueError(f"decision must be accept, reject or empty, not {decision!r}")
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
        review_id = content_id("review", target_id, datetime.now(timezone.utc).isoformat(), decision or "",
                               edited_text or "", note or "")
        self.store.insert_review([review_id, target_kind, target_id, decision, edited_text, note, reviewer])
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

    def create_generate_job(self, model: dict, role: str, selection: ExploreFilter | None = None,
                            params: dict | None = None, limit: int = 1_000_000, round: int = 0,
                            shard_size: int = 16) -> str:
        """Snapshot the selected instructions into a new generate job; returns its id. Starts nothing."""
        if not re.match(r"^[a-z][a-z0-9_]{0,31}$", role or ""):
            raise ValueError(f"role {role!r} is invalid: use lowercase letters, digits and '_'")
        from core.generate import input_table
        from core.llm.base import GenerationParams

        params = GenerationParams.from_dict(params or {}).to_dict()
        rows = self.store.instructions_for_job(selection or ExploreFilter(), limit)
        if not rows:
            raise ValueError("the selection holds no instruction; nothing to generate")
        config = {"model": model, "role": role, "params": params, "round": round, "method": "generate"}
        return self._create_job("generate", input_table(rows), config, shard_size)

    def _create_job(self, kind: str, table, config: dict, shard_size: int) -> str:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        job_id = f"{kind}-{stamp}-{content_id(kind, stamp, json.dumps(config, sort_keys=True, default=str))[:6]}"
        jobs.create(self.jobs_dir / job_id, kind, table, config, shard_size)
        self.store.record_job([job_id, kind, str(self.jobs_dir / job_id), config["model"]["name"],
                               json.dumps(config, default=str)])
        return job_id

    def jobs(self) -> list[dict]:
        """Every job folder with its status and progress, newest first."""
        found = [jobs.summary(d) for d in self.jobs_dir.iterdir() if (d / jobs.CONFIG).exists()]
        return sorted(found, key=lambda j: j["created"] or "", reverse=True)

    def ingest_job(self, job_id: str) -> dict:
        """Ingest the job's finished shards that are not in yet (idempotent, one transaction each)."""
        job_dir = self.job_dir(job_id)
        config = jobs.read_json(job_dir / jobs.CONFIG)
        table, columns, keep = INGEST_TARGETS[config["kind"]]
        done = self.store.ingested_shards(job_id)
        new = 0
        for path in jobs.finished_shards(job_dir):
            if path.name in done:
                continue
            shard = jobs.read_shard(path)
            shard = shard.filter(keep(shard)) if keep else shard
            new += self.store.ingest_shard(job_id, path.name, hashlib.sha256(path.read_bytes()).hexdigest(),
                                           table, shard.select([c for c in columns if c in shard.column_names]))
        counts = self.store.job_ingest_counts(job_id)
        return {"job": job_id, "new_now": new, **counts, **jobs.summary(job_dir)}

    def ingest_finished_jobs(self) -> int:
        """Ingest what every job has finished so far (the owner thread calls this)."""
        new = 0
        for info in self.jobs():
            if info["status"] in ("running", "done", "stopped", "cancelled", "failed") and \
                    len(jobs.finished_shards(Path(info["dir"]))) > len(self.store.ingested_shards(info["id"])):
                new += self.ingest_job(info["id"])["new_now"]
        return new

    def rejects(self, limit: int = 500):
        return self.store.rejects(limit)

    def imports(self, limit: int = 100):
        return self.store.imports(limit)

    def filter_options(self) -> dict:
        return self.store.filter_options()


def summary_dict(summary: ingest.ImportSummary) -> dict:
    return asdict(summary) | {"new": summary.n_new, "rejected": summary.n_rejected}
