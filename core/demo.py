"""The demo workspace: seed pairs and eval prompts this project wrote, plus an unlabeled corpus
harvested at run time from the local Python installation's own documentation.

The corpus is real human-written text (PSF licence) that every machine with Python has, so
nothing third-party is committed and nothing is downloaded.
"""

from __future__ import annotations

import importlib
import inspect
import json
import warnings
from pathlib import Path

from core.ingest import CorpusOptions

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
SEED_FILE = DATA_DIR / "seed.jsonl"
EVAL_FILE = DATA_DIR / "eval_prompts.jsonl"

# Standard-library modules with long, well-written docstrings and no import side effects.
DOC_MODULES = (
    "abc", "argparse", "ast", "asyncio", "base64", "bisect", "calendar", "cmd", "collections",
    "concurrent.futures", "configparser", "contextlib", "copy", "csv", "dataclasses", "datetime",
    "decimal", "difflib", "email", "enum", "fnmatch", "fractions", "functools", "getopt", "gettext",
    "glob", "graphlib", "gzip", "hashlib", "heapq", "hmac", "html", "http.client", "http.server",
    "imaplib", "inspect", "ipaddress", "itertools", "json", "locale", "logging", "mailbox", "mimetypes",
    "multiprocessing", "numbers", "operator", "optparse", "os", "pathlib", "pickle", "pickletools",
    "pkgutil", "platform", "plistlib", "pprint", "queue", "random", "re", "sched", "secrets", "selectors",
    "shelve", "shlex", "shutil", "smtplib", "socket", "socketserver", "sqlite3", "statistics", "string",
    "struct", "subprocess", "tarfile", "tempfile", "textwrap", "threading", "timeit", "tokenize",
    "trace", "traceback", "typing", "unittest", "urllib.parse", "uuid", "warnings", "weakref",
    "xml.dom.minidom", "zipfile", "zoneinfo",
)


def module_text(name: str) -> str:
    """A module's docstring followed by the docstrings of its public classes and functions."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = importlib.import_module(name)
    parts = [f"{name}\n\n{inspect.cleandoc(module.__doc__ or '')}"]
    for attr, obj in sorted(vars(module).items()):
        if attr.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        doc = inspect.getdoc(obj)
        if doc and len(doc) >= 200:
            parts.append(f"{name}.{attr}\n\n{doc}")
    return "\n\n".join(parts)


def harvest_python_docs(dest: Path, modules: tuple[str, ...] = DOC_MODULES) -> list[Path]:
    """Write one .txt file per importable module under `dest`; skip modules that fail to import."""
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for name in modules:
        try:
            text = module_text(name)
        except Exception:  # a module missing from this Python build is simply left out
            continue
        path = dest / f"{name}.txt"
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def build_demo(ws) -> dict[str, dict]:
    """Import the demo datasets into a workspace: `seed`, `eval` and `python-docs`. Idempotent."""
    results = {}
    seed = ws.import_paths([SEED_FILE], "seed", fmt="alpaca")
    results["seed"] = {"new": seed.n_new}
    evals = ws.import_paths([EVAL_FILE], "eval", fmt="prompts")
    results["eval"] = {"new": evals.n_new}
    corpus_dir = ws.root / "runs" / "corpus" / "python-docs"
    files = harvest_python_docs(corpus_dir)
    docs = ws.import_paths(files, "python-docs", fmt="corpus", corpus=CorpusOptions(min_chars=300, max_chars=1500))
    results["python-docs"] = {"new": docs.n_new, "files": len(files)}
    return results


# --------------------------------------------------------------------------------------------
# The demo's first numbers, computed in the background on the first `make run`
# --------------------------------------------------------------------------------------------

PIPELINE_KEY = "demo_pipeline"
DEMO_JUDGE = {"model": "smollm2-135m-instruct", "rubric": "pointwise_5", "roles": ["seed"], "mode": "probability"}


def queue_pipeline(ws) -> None:
    """Ask the app to judge the demo seed and label its tasks once it starts (`winnow init --demo`).
    Queued, not run: the app's owner starts it, so `init` stays quick and tests stay light."""
    if pipeline_state(ws) is None:
        _save(ws, {"state": "queued"})


def pipeline_state(ws) -> dict | None:
    raw = ws.store.setting(PIPELINE_KEY)
    return json.loads(raw) if raw else None


def _save(ws, state: dict) -> None:
    ws.store.set_setting(PIPELINE_KEY, json.dumps(state))


def advance_pipeline(ws, launch) -> dict | None:
    """One step of the demo pipeline; the owner calls it every few seconds. Queued: start the
    judge job (the built-in SmolLM2 in probability mode on every seed answer) through `launch`, and
    label the eval prompts' tasks with the embedding classifier trained on the seed's labels.
    Running: done once the judge job is done and ingested. Returns the state."""
    from core import jobs, tasks
    from core.selection import ExploreFilter

    state = pipeline_state(ws)
    if state is None or state["state"] in ("done", "failed"):
        return state
    if state["state"] == "queued":
        job_id = ws.create_job("judge", DEMO_JUDGE, ExploreFilter(datasets=["seed"]), shard_size=8)
        launch(ws.job_dir(job_id))
        state = {"state": "running", "judge_job": job_id}
        _save(ws, state)
        try:
            summary = tasks.classify(ws, "embed", ExploreFilter(datasets=["eval"]), include_labelled=True)
            state["tasks"] = {k: summary[k] for k in ("classifier", "n_labelled", "n_failed")}
        except Exception as exc:  # the judge still runs; say why the labels are missing
            state["tasks"] = {"error": f"{type(exc).__name__}: {exc}"}
        _save(ws, state)
        return state
    info = jobs.summary(ws.job_dir(state["judge_job"]))
    if info["status"] == "failed":
        state["state"], state["error"] = "failed", info["error"]
        _save(ws, state)
    elif info["status"] == "done" and ws.job_ingest_counts(state["judge_job"])["shards"] >= \
            len(jobs.finished_shards(ws.job_dir(state["judge_job"]))):
        state["state"] = "done"
        _save(ws, state)
    return state
