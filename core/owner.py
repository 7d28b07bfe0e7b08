"""The catalog's owner and its request queue (DESIGN.md §3).

DuckDB lets one process hold the catalog read-write. While the app runs, the app's server
process is that owner; a CLI command that finds the catalog busy hands its work to the owner
by writing a JSON request into `requests/` and waits for the result file beside it.

    requests/<id>.json          the request: {"op": ..., "args": {...}}
    requests/<id>.result.json   written by the owner when done: {"ok": true, "result": ...}
                                or {"ok": false, "error": "...", "kind": "ImportRejected"}

Both paths (local and handed over) run the same `execute` dispatch, so a command behaves the
same whoever owns the catalog.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from core.export import ExportError
from core.ingest import ImportRejected
from core.jobs import write_json
from core.selection import ExploreFilter

OWNER_FILE = "owner.json"
POLL_SECONDS = 0.2
INGEST_SECONDS = 2.0
USER_ERRORS = (ImportRejected, ExportError, ValueError, FileNotFoundError)


class OwnerGone(RuntimeError):
    """The process that owns the catalog stopped before answering."""


class RequestFailed(RuntimeError):
    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.kind = kind


def selection_from_dict(data: dict | None) -> ExploreFilter:
    known = {f.name for f in fields(ExploreFilter)}
    unknown = set(data or {}) - known
    if unknown:
        raise ValueError(f"unknown selection fields: {sorted(unknown)}")
    return ExploreFilter(**(data or {}))


def _import(ws, args: dict) -> dict:
    summary = ws.import_paths(args["paths"], args["dataset"], fmt=args.get("fmt"),
                              skip_invalid=bool(args.get("skip_invalid")), role=args.get("role", "seed"))
    return asdict(summary) | {"new": summary.n_new, "rejected": summary.n_rejected}


def _export(ws, args: dict) -> dict:
    result = ws.export(args["fmt"], args.get("out"), selection_from_dict(args.get("selection")),
                       roles=args.get("roles"), exclude_rejected=bool(args.get("exclude_rejected")),
                       file_type=args.get("file_type", "jsonl"))
    return {"path": str(result.path), "format": result.format, "records": result.n_records}


def _stats(ws, args: dict) -> dict:
    return ws.stats()


def _create_job(ws, args: dict) -> dict:
    job_id = ws.create_job(args["stage"], args.get("params") or {}, selection_from_dict(args.get("selection")),
                           limit=int(args.get("limit") or 1_000_000), round=int(args.get("round") or 0),
                           shard_size=int(args.get("shard_size") or 16))
    return {"job": job_id, "dir": str(ws.job_dir(job_id))}


def _models(ws, args: dict) -> dict:
    return {"models": [spec.to_dict() | {"builtin": spec.is_builtin} for spec in ws.models()]}


def _model(ws, args: dict) -> dict:
    return ws.model(args["name"]).to_dict()


def _add_model(ws, args: dict) -> dict:
    return ws.add_model(args["spec"], replace=bool(args.get("replace"))).to_dict()


def _judge_summary(ws, args: dict) -> dict:
    counts = ws.store.judge_verdict_counts(args["judge"], args["rubric"])
    n, failed = int(counts["judgments"]), int(counts["unparsed"])
    mean = counts["mean_score"]
    flips = ws.flip_rate(args["judge"], args["rubric"])
    return {"judgments": n, "failed": failed, "failure_rate": failed / n if n else 0.0,
            "call_errors": int(counts["call_errors"]),
            "mean_score": None if mean is None else round(float(mean), 2),
            "flip_pairs": flips.n, "flip_rate": flips.value if flips.n else None,
            "trust": ws.judge_trust(args["judge"], args["rubric"]).as_dict()}


def _judges(ws, args: dict) -> dict:
    """Every judge and rubric with its verdict counts and trust (is it better than chance?)."""
    return {"judges": [{"judge_model": j["judge_model"], "rubric": j["rubric"], "kind": j["kind"],
                        "judgments": j["judgments"], "trust": j["trust"].as_dict()} for j in ws.judge_trusts()]}


def _ingest_job(ws, args: dict) -> dict:
    return ws.ingest_job(args["job"])


def _jobs(ws, args: dict) -> dict:
    return {"jobs": ws.jobs()}


def _job_dir(ws, args: dict) -> dict:
    return {"dir": str(ws.job_dir(args["job"]))}


def _tasks_classify(ws, args: dict) -> dict:
    from core import tasks

    return tasks.classify(ws, args.get("method", "embed"), selection_from_dict(args.get("selection")),
                          model=args.get("model"), include_labelled=bool(args.get("all")))


def _tasks_relabel(ws, args: dict) -> dict:
    from core import tasks

    label = tasks.relabel(ws, args["instruction"], args["task"], reviewer=args.get("reviewer"))
    return {"label": label, "current": tasks.task_of(ws, args["instruction"])}


def _tasks_accuracy(ws, args: dict) -> dict:
    from core import tasks

    return tasks.accuracy_report(tasks.holdout_accuracy(
        ws, args.get("method", "embed"), test_share=float(args.get("test_share", 0.25)), seed=int(args.get("seed", 0)),
        model=args.get("model"), selection=selection_from_dict(args.get("selection")), limit=args.get("limit")))


def _difficulty_chain(ws, args: dict) -> dict:
    from core import difficulty

    result = difficulty.run_difficulty_chain(
        ws, args["teacher"], args["student"], args["judge"], args["datasets"], rubric=args.get("rubric", "pointwise_10"),
        limit=args.get("limit"), round=int(args.get("round") or 0), judge_mode=args.get("mode", "auto"))
    return result.as_dict()


def _evaluate(ws, args: dict) -> dict:
    from core import evaluate

    return evaluate.evaluate(
        ws, args["model_a"], args["model_b"], args["prompts"], args["judge"], rubric=args.get("rubric", "pairwise"),
        round=int(args.get("round") or 0), limit=args.get("limit"), max_tokens=int(args.get("max_tokens") or 256),
        pointwise=args.get("pointwise"), mode=args.get("mode", "auto")).as_dict()


def _round_start(ws, args: dict) -> dict:
    from core import rounds

    return rounds.start_run(ws, args["recipe"], args.get("rounds"))


def _round_status(ws, args: dict) -> dict:
    from core import rounds

    names = [args["name"]] if args.get("name") else [r["name"] for r in rounds.runs(ws)]
    return {"runs": [rounds.run_status(ws, name) for name in names]}


def _round_compare(ws, args: dict) -> dict:
    from core import rounds

    return rounds.compare(ws, args["a"], args["b"])


def _binarise(ws, args: dict) -> dict:
    from core import feedback

    summary = feedback.binarise(ws, args["judge"], list(args["roles"]), rubric=args.get("rubric") or feedback.DEFAULT_RUBRIC,
                                seed=int(args.get("seed") or 0), round=int(args.get("round") or 0),
                                selection=selection_from_dict({"datasets": args.get("datasets") or []}),
                                min_margin=float(args.get("min_margin") or 0.0))
    return summary.as_dict() | {"line": summary.line()}


def _rank(ws, args: dict) -> dict:
    from core import ranking

    selection = selection_from_dict({"datasets": args.get("datasets") or []})
    rnd = int(args.get("round") or 0)
    if args["method"] == "contextual":
        if not args.get("judge"):
            raise ValueError("contextual ranking reads a listwise judge's verdicts: name the judge (--judge)")
        summary = ranking.rank_contextual(ws, args["judge"], args["role"], args["model"], round=rnd, selection=selection)
    else:
        summary = ranking.rank_probabilistic(ws, args["role"], args["model"], selection, round=rnd)
    return summary.as_dict() | {"line": summary.line()}


def _categories_assign(ws, args: dict) -> dict:
    from core import categories

    return categories.assign(ws, args["scheme"], selection_from_dict({"datasets": args.get("datasets") or []}))


def _curate_create(ws, args: dict) -> dict:
    from core import curate

    snap = curate.create_snapshot(ws, curate.load_spec(args["spec"]), args["name"])
    return snap.to_dict()


def _curate_list(ws, args: dict) -> dict:
    from core import curate

    return {"snapshots": [s | {"created_at": str(s["created_at"])} for s in curate.snapshots(ws)]}


def _curate_explain(ws, args: dict) -> dict:
    from core import curate

    return curate.explain(ws, args["snapshot"], args["sample"])


def _curate_diff(ws, args: dict) -> dict:
    from core import curate

    diff = curate.diff(ws, args["a"], args["b"])
    return {k: v.to_dict("records") if hasattr(v, "to_dict") else v for k, v in diff.items()}


def _curate_export(ws, args: dict) -> dict:
    from core import curate

    result = curate.export_snapshot(ws, args["name"], args["fmt"], args.get("file_type", "jsonl"), args.get("out"))
    return {"path": str(result.path), "format": result.format, "records": result.n_records}


def _context_check(ws, args: dict) -> dict:
    """How many of a generate or judge job's prompts are longer than its model's context, before the
    job is created (core.context_check); with drop_too_long, the selection without them."""
    from core import context_check

    selection = selection_from_dict(args.get("selection"))
    check = context_check.check_job(ws, args["stage"], args.get("params") or {}, selection,
                                    limit=int(args.get("limit") or 1_000_000))
    if check is None:
        return {"checked": 0, "too_long": 0}
    out = check.as_dict()
    if args.get("drop_too_long") and check.too_long and check.id_kind == "instruction":
        out["selection"] = asdict(context_check.without_too_long(selection, check))
    return out


def _text_index(ws, args: dict) -> dict:
    """The search index: its status, or a rebuild from the catalog (core.text_index)."""
    from core import text_index

    action = args.get("action", "status")
    if action not in ("status", "rebuild"):
        raise ValueError(f"action must be status or rebuild, not {action!r}")
    out = {}
    if action == "rebuild":
        started = time.time()
        out["indexed"] = text_index.rebuild(ws.store)
        out["seconds"] = round(time.time() - started, 2)
    return out | text_index.status(ws.store)


OPERATIONS: dict[str, Callable[[Any, dict], dict]] = {
    "import": _import, "export": _export, "stats": _stats, "create_job": _create_job,
    "judge_summary": _judge_summary, "judges": _judges,
    "models": _models, "model": _model, "add_model": _add_model,
    "ingest_job": _ingest_job, "jobs": _jobs, "job_dir": _job_dir,
    "tasks_classify": _tasks_classify, "tasks_relabel": _tasks_relabel, "tasks_accuracy": _tasks_accuracy,
    "difficulty_chain": _difficulty_chain, "evaluate": _evaluate, "curate_create": _curate_create, "curate_list": _curate_list,
    "curate_explain": _curate_explain, "curate_diff": _curate_diff, "curate_export": _curate_export,
    "round_start": _round_start, "round_status": _round_status, "round_compare": _round_compare,
    "binarise": _binarise, "rank": _rank, "categories_assign": _categories_assign,
    "context_check": _context_check, "text_index": _text_index,
}


def execute(ws, op: str, args: dict) -> dict:
    if op not in OPERATIONS:
        raise ValueError(f"unknown operation {op!r}")
    return OPERATIONS[op](ws, args)


# --------------------------------------------------------------------------------------------
# Owner side
# --------------------------------------------------------------------------------------------


class Owner:
    """Runs in the process that holds the catalog; executes queued requests in order."""

    def __init__(self, ws):
        self.ws = ws
        self.requests = ws.root / "requests"
        self.requests.mkdir(exist_ok=True)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.current: str | None = None  # what the owner is doing, for the UI
        self._procs: list = []  # job processes this owner started (reaped as they end)

    def start(self) -> Owner:
        write_json(self.ws.root / OWNER_FILE, {"pid": os.getpid(), "started": time.time(),
                                               "process_start": process_start(os.getpid())})
        self._thread = threading.Thread(target=self._loop, name="winnow-owner", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        owner_file = self.ws.root / OWNER_FILE
        if owner_pid(self.ws.root) == os.getpid():
            owner_file.unlink(missing_ok=True)

    def pending(self) -> list[Path]:
        return sorted(p for p in self.requests.glob("*.json")
                      if not p.name.endswith(".result.json") and not p.name.startswith(".")
                      and not p.with_name(p.stem + ".result.json").exists())

    def run_pending(self) -> int:
        handled = 0
        for path in self.pending():
            try:
                request = json.loads(path.read_text(encoding="utf-8"))
                self.current = f"{request.get('op')} (request {path.stem})"
                result = {"ok": True, "result": execute(self.ws, request["op"], request.get("args", {}))}
            except USER_ERRORS as exc:
                result = {"ok": False, "error": str(exc), "kind": type(exc).__name__}
            except Exception as exc:  # report, never kill the owner thread
                result = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "kind": "InternalError"}
            finally:
                self.current = None
            write_json(path.with_name(path.stem + ".result.json"), result)
            handled += 1
        return handled

    def _launch(self, job_dir: Path) -> None:
        from core import jobs

        self._procs = [p for p in self._procs if p.poll() is None]  # reap the ones that ended
        self._procs.append(jobs.launch(job_dir))

    def _advance_background_work(self) -> None:
        """Work the owner starts by itself: the demo's first judge and task labels (core.demo),
        and every active round run (core.rounds), each as far as it goes without waiting."""
        from core import demo, rounds

        try:
            demo.advance_pipeline(self.ws, self._launch)
        except Exception as exc:  # never kill the owner thread; the home page shows the state
            self.current = f"demo pipeline: {type(exc).__name__}: {exc}"
        try:
            rounds.advance(self.ws, self._launch)
        except Exception as exc:  # a run's own failures are stored with it; this is anything else
            self.current = f"rounds: {type(exc).__name__}: {exc}"

    def _loop(self) -> None:
        last_ingest = 0.0
        while not self._stop.is_set():
            self.run_pending()
            if time.time() - last_ingest > INGEST_SECONDS:  # jobs' finished shards flow in as they land
                last_ingest = time.time()
                try:
                    self.ws.ingest_finished_jobs()
                except Exception as exc:  # a bad shard must not stop the owner; the Jobs page shows it
                    self.current = f"ingest failed: {exc}"
                self._advance_background_work()
            self._stop.wait(POLL_SECONDS)


# --------------------------------------------------------------------------------------------
# Client side
# --------------------------------------------------------------------------------------------


def process_start(pid: int) -> int | None:
    """When a process started (clock ticks since boot, from /proc), or None where /proc is not
    there: with the pid it names one process, so a reused pid is not taken for the owner."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # field 22; the name before ")" may hold spaces


def owner_pid(root: Path) -> int | None:
    """The pid of the live process that owns this workspace, or None (no owner file, a dead
    owner, or a stale file whose pid now belongs to another process)."""
    try:
        record = json.loads((root / OWNER_FILE).read_text(encoding="utf-8"))
        pid = int(record["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    started = record.get("process_start")
    if started is not None and process_start(pid) not in (None, started):
        return None
    if _is_zombie(pid):  # killed, not yet reaped by its parent: gone for our purposes
        return None
    return pid


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def submit(root: Path, op: str, args: dict, timeout: float = 3600,
           on_wait: Callable[[float], None] | None = None) -> dict:
    """Queue a request for the owner and wait for its result."""
    requests = root / "requests"
    requests.mkdir(exist_ok=True)
    request_id = f"{time.time():.6f}-{uuid.uuid4().hex[:8]}"
    write_json(requests / f"{request_id}.json", {"op": op, "args": args})
    result_path = requests / f"{request_id}.result.json"
    started = time.time()
    while not result_path.exists():
        waited = time.time() - started
        if waited > timeout:
            raise TimeoutError(f"the owner did not answer request {request_id} within {timeout:.0f} s")
        if owner_pid(root) is None:
            raise OwnerGone("the Winnow app that owned the workspace stopped; run the command again")
        if on_wait:
            on_wait(waited)
        time.sleep(POLL_SECONDS)
    result = json.loads(result_path.read_text(encoding="utf-8"))
    for path in (requests / f"{request_id}.json", result_path):
        path.unlink(missing_ok=True)
    if not result["ok"]:
        raise RequestFailed(result["error"], result.get("kind", "InternalError"))
    return result["result"]
