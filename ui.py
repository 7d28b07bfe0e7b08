"""Small helpers shared by the Streamlit pages (app.py and app_pages/*.py).

The pages only render: every number they show comes from `core.workspace.Workspace`. What lives
here is glue that is awkward to test through a page (saving an upload, naming files, shaping
check results and previews into DataFrames) plus the few rendering rules every page follows:

- One `Workspace` per catalog path and process, held by `st.cache_resource` (DESIGN.md §3: the
  app's server process owns the catalog).
- Model and web text is shown through `show_text`: safe markdown from core.render (markdown-it-py
  with raw HTML off, sanitized by nh3: no link, image or script survives), or exactly as stored
  with the raw toggle. Never pass it to st.markdown or st.html yourself (DESIGN.md §9).
- Query results are not cached: a DuckDB query over the catalog is fast, and a stale count after a
  review or an import is worse than a few milliseconds.
- Session keys are prefixed with the page name ("explore_page", "import_checks", ...).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

from core import ingest, render
from core.owner import Owner
from core.workspace import TEST_MODELS, Workspace, WorkspaceBusy, resolve_workspace_path

MAX_UPLOAD_MB = 200  # also server.maxUploadSize in .streamlit/config.toml
MAX_UPLOAD_BYTES = MAX_UPLOAD_MB * 1024 * 1024
PREVIEW_CHARS = 300
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


# --------------------------------------------------------------------------------------------
# The workspace
# --------------------------------------------------------------------------------------------


def _release(opened: tuple[Workspace, Owner]) -> None:
    ws, owner = opened
    owner.stop()
    ws.close()


@st.cache_resource(show_spinner=False, on_release=_release)
def _open_workspace(path: str) -> tuple[Workspace, Owner]:
    # Keyed by the resolved path: two workspaces (e.g. two tests) never share a catalog handle.
    # The app's server process owns the catalog: its owner thread runs the work that CLI commands
    # hand over while the app is up (core.owner).
    ws = Workspace(path)
    return ws, Owner(ws).start()


def workspace_path() -> Path:
    return resolve_workspace_path().resolve()


def workspace() -> Workspace:
    """The process-wide Workspace for $WINNOW_WORKSPACE (or ./workspace). Stops the page with a
    readable message, never a lock traceback, when another process holds the catalog."""
    try:
        ws, owner = _open_workspace(str(workspace_path()))
    except WorkspaceBusy as exc:
        st.error(md_escape(exc))
        st.stop()
        raise  # unreachable: st.stop() raises; keeps type checkers honest
    if owner.current:
        st.sidebar.info(f"Working on a handed-over request: {clip(owner.current)}")
    if ws.recovery_message:
        st.sidebar.warning(md_escape(ws.recovery_message))
    return ws


# --------------------------------------------------------------------------------------------
# Showing text safely
# --------------------------------------------------------------------------------------------


RAW_TEXT_KEY = "raw_text"  # session key: True shows every text exactly as stored, not as markdown
_RAW_TOGGLE_KEY = "raw_text_toggle"
_STYLE_RUN_KEY = "ui_markdown_style_run"  # session key: the run that already has the stylesheet


def raw_toggle() -> bool:
    """The sidebar toggle "Show raw text" (session key RAW_TEXT_KEY); returns whether it is on.

    The choice lives in a plain session key, not in the widget's own key, so it survives a page
    that does not draw the toggle (Streamlit forgets a widget's state when it is not drawn)."""
    def _remember() -> None:
        st.session_state[RAW_TEXT_KEY] = bool(st.session_state[_RAW_TOGGLE_KEY])

    st.sidebar.toggle("Show raw text", value=bool(st.session_state.get(RAW_TEXT_KEY, False)), key=_RAW_TOGGLE_KEY,
                      on_change=_remember,
                      help="Show model and web text exactly as stored (markdown, HTML and URLs as characters) "
                           "instead of rendered as safe markdown.")
    return bool(st.session_state.get(RAW_TEXT_KEY, False))


def _style_once() -> None:
    """Add the markdown stylesheet to the page, once per script run.

    A style-only st.html goes to Streamlit's event container: it takes no room and does not live in
    any column, expander or dialog that may close, and it survives fragment reruns. A run is told
    apart by its cursor table, which Streamlit makes afresh for every run and fragment run
    (ScriptRunContext.reset); holding the table itself (not its id) means a later run's table is
    never mistaken for it. Without a script context (bare mode) the style is always added."""
    ctx = get_script_run_ctx()
    if ctx is not None:
        if st.session_state.get(_STYLE_RUN_KEY) is ctx.cursors:
            return
        st.session_state[_STYLE_RUN_KEY] = ctx.cursors
    st.html(f"<style>{render.STYLE}</style>")


def show_text(text: str | None, label: str | None = None, height: int | None = None, key: str | None = None,
              *, markdown: bool = True) -> None:
    """Model or web text as safe markdown (core.render: raw HTML as text, images as alt text, links
    inert, code highlighted), or exactly as stored when the sidebar's raw toggle is on, when the
    per-text "raw" toggle (shown only when `key` is given) is on, or with markdown=False (logs).

    A fixed height (scrolling) only for long texts; short ones take the room they need."""
    if label:
        st.text(label)
    if text is None or text == "":
        st.text("(empty)")
        return
    text = str(text)
    all_raw = bool(st.session_state.get(RAW_TEXT_KEY, False))
    raw = not markdown or all_raw
    if key is not None and markdown:
        # Disabled while the sidebar shows every text raw: there is nothing for it to switch.
        raw = st.toggle("raw", key=f"{key}_raw", disabled=all_raw, help="Show this text exactly as stored.") or raw
    approx_lines = text.count("\n") + 1 + len(text) // 100
    fixed = height is not None and approx_lines * 22 > height
    if raw:
        st.code(text, language=None, wrap_lines=True, height=height if fixed else "content")
        return
    _style_once()
    with st.container(height=height if fixed else "content", border=True):
        st.html(render.markdown_html(text))


def clip(text: Any, n: int = 80) -> str:
    """One line of at most n characters, for option labels and captions shown as plain text."""
    s = " ".join(str(text or "").split())
    return s if len(s) <= n else s[: n - 1] + "…"


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def safe_filename(name: str, default: str = "file") -> str:
    """A file name that is safe to join to a folder: no directories, no dot files, only
    letters, digits, '.', '_' and '-'; the suffix is kept."""
    base = Path(str(name or "").replace("\\", "/")).name
    base = _UNSAFE_NAME.sub("_", base).lstrip("._-")
    base = re.sub(r"_{2,}", "_", base)
    if not base or base in {".", ".."}:
        base = default
    if len(base) > 120:
        suffix = Path(base).suffix[:16]
        base = base[: 120 - len(suffix)] + suffix
    return base


def upload_too_large(n_bytes: int) -> str | None:
    if n_bytes > MAX_UPLOAD_BYTES:
        return (f"The file is {n_bytes / 1024 / 1024:.1f} MB; uploads are limited to {MAX_UPLOAD_MB} MB. "
                "Import larger files with the CLI: `winnow import FILE --dataset NAME`.")
    return None


def save_upload(ws: Workspace, name: str, data: bytes) -> Path:
    """Write uploaded bytes under the workspace's uploads folder and return the path.

    The file keeps its (sanitised) original name, inside a folder named after its content hash,
    so lineage shows a recognisable name and two different files with one name never collide."""
    problem = upload_too_large(len(data))
    if problem:
        raise ValueError(problem)
    digest = hashlib.sha256(data).hexdigest()[:16]
    folder = ws.uploads_dir / digest
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / safe_filename(name, default="upload.jsonl")
    if not path.exists() or path.stat().st_size != len(data):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    return path


def format_arg(choice: str | None) -> str | None:
    """The format selectbox's value as the API wants it ("auto" → None)."""
    return None if not choice or choice == "auto" else choice


def check_upload(ws: Workspace, name: str, data: bytes, fmt: str | None = None,
                 role: str = "seed") -> tuple[Path, list[ingest.FileCheck]]:
    """Save an upload and validate it; nothing enters the catalog. Raises ValueError when the file
    is too large and ImportRejected for an unknown format."""
    path = save_upload(ws, name, data)
    return path, ws.check_import([path], format_arg(fmt), role)


def checks_frame(checks: list[ingest.FileCheck]) -> pd.DataFrame:
    """One row per checked file: detected format and counts."""
    return pd.DataFrame([{
        "file": c.path.name,
        "format": c.format,
        "rows read": c.n_read,
        "valid": c.n_valid,
        "invalid": len(c.rejected) + (1 if c.fatal else 0),
        "status": "unreadable" if c.fatal else ("ok" if c.ok else "has invalid rows"),
    } for c in checks])


def check_problems(checks: list[ingest.FileCheck]) -> list[str]:
    return [f"{c.path.name}: {p}" for c in checks for p in c.problems()]


def records_preview(checks: list[ingest.FileCheck], n: int = 5) -> pd.DataFrame:
    """The first n parsed records (or corpus passages), as the importer understood them."""
    rows: list[dict] = []
    for c in checks:
        for r in c.records:
            if len(rows) >= n:
                break
            row = {"line": r.line, "instruction": clip(r.instruction, PREVIEW_CHARS),
                   "input": clip(r.input, PREVIEW_CHARS), "task": r.task}
            if r.system:
                row["system"] = clip(r.system, PREVIEW_CHARS)
            if r.history:
                row["earlier turns"] = len(r.history)
            for i, (role, text) in enumerate(r.responses):
                label = ("chosen" if i == 0 else "rejected") if r.is_pair else role
                row[f"response {i + 1} ({label})"] = clip(text, PREVIEW_CHARS)
            rows.append(row)
        for d in c.documents:
            if len(rows) >= n:
                break
            rows.append({"line": d.line, "segment": d.segment, "title": d.title, "text": clip(d.text, PREVIEW_CHARS)})
    return pd.DataFrame(rows)


def export_path(ws: Workspace, name: str, file_type: str) -> Path:
    """Where an export named `name` goes: under the workspace's exports folder, with the suffix of
    its file type."""
    stem = safe_filename(name, default="export")
    for suffix in (".jsonl", ".parquet", ".json"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
    return ws.exports_dir / f"{stem or 'export'}.{file_type}"


def _cell(value: Any) -> Any:
    if isinstance(value, (list, dict)):
        return clip(json.dumps(value, ensure_ascii=False), PREVIEW_CHARS)
    if isinstance(value, str):
        return clip(value, PREVIEW_CHARS)
    return value


def file_preview(path: Path, n: int = 5) -> pd.DataFrame:
    """The first n records of an exported JSONL or Parquet file (nested values as JSON text)."""
    records: list[dict] = []
    if path.suffix == ".parquet":
        pf = pq.ParquetFile(path)
        for batch in pf.iter_batches(batch_size=n):
            records = batch.to_pylist()[:n]
            break
    else:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if len(records) >= n:
                    break
                records.append(json.loads(line))
    return pd.DataFrame([{k: _cell(v) for k, v in rec.items()} for rec in records])


# --------------------------------------------------------------------------------------------
# Reviews
# --------------------------------------------------------------------------------------------


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~:$&=^])")
# Streamlit's markdown links bare URLs ("http://…", "www.…") after escapes are resolved, so a
# backslash cannot stop it: an invisible word joiner inside "://" and after "www" does.
_BARE_URL = re.compile(r"(?<=:)(?=//)|(?i:(?<=\bwww)(?=\.))")
WORD_JOINER = "\u2060"


def md_escape(text: Any) -> str:
    """Text that st.error / st.caption / st.markdown show literally: every markdown, directive
    (`:red[...]`, `:material/x:`), math (`$`) and HTML character is backslash-escaped, bare URLs
    are kept from becoming links (a word joiner in "://" and after "www"); newlines become line
    breaks."""
    escaped = _MD_SPECIAL.sub(r"\\\1", _BARE_URL.sub(WORD_JOINER, str(text)))
    return escaped.replace("\r\n", "\n").replace("\n", "  \n")


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


def _close_backend(backend) -> None:
    backend.close()


@st.cache_resource(show_spinner=False, max_entries=2, on_release=_close_backend)
def _loaded_backend(spec_json: str):
    # Keyed by the spec's JSON, so a changed spec loads afresh; at most two models stay loaded
    # (the oldest is closed, freeing its memory).
    from core.llm.registry import ModelSpec, load_backend

    return load_backend(ModelSpec.from_json(spec_json))


def loaded_backend(spec):
    """The loaded backend of a ModelSpec, shared by every session of this server process."""
    return _loaded_backend(spec.to_json())


def model_label(name: str) -> str:
    """A model's name as a form shows it: the random test model says what it is."""
    return f"{name} (test model: random output)" if name in TEST_MODELS else name


def default_model(names: list[str]) -> str:
    """The model a judge or teacher form starts on (never the test model, see Workspace.default_model)."""
    preferred = workspace().default_model()
    return preferred if preferred in names else names[0]


def models_frame(specs) -> pd.DataFrame:
    """One row per model spec: where it lives and how it is run (never an API key, only its variable)."""
    return pd.DataFrame([{
        "name": s.name,
        "built-in": s.is_builtin,
        "backend": s.backend,
        "path / URL": s.path if s.path else ", ".join(s.base_urls),
        "model id": s.model or "",
        "context length": s.context_length,
        "dtype": s.dtype,
        "API key variable": s.api_key_env or "",
    } for s in specs])


def try_prompt(backend, prompt: str, system: str | None, max_tokens: int, temperature: float,
               seed: int | None = None) -> dict:
    """One answer to one prompt, with its token counts and wall time."""
    import time

    from core.llm.base import GenerationParams

    params = GenerationParams(max_tokens=int(max_tokens), temperature=float(temperature), seed=seed,
                              logprobs=False)
    conversation = ([{"role": "system", "content": system}] if system and system.strip() else []) + \
        [{"role": "user", "content": prompt}]
    started = time.perf_counter()
    generation = backend.generate([conversation], params)[0][0]
    seconds = time.perf_counter() - started
    return {"text": generation.text, "finish_reason": generation.finish_reason, "error": generation.error,
            "n_tokens": generation.n_tokens, "n_prompt_tokens": generation.n_prompt_tokens,
            "seconds": seconds, "tokens_per_s": generation.n_tokens / seconds if seconds > 0 else None}


# --------------------------------------------------------------------------------------------
# Jobs
# --------------------------------------------------------------------------------------------


@st.cache_resource(show_spinner=False)
def _job_processes() -> list:
    return []


def reap_jobs() -> None:
    """Collect the exit status of job processes this server started that have ended (no zombies)."""
    procs = _job_processes()
    procs[:] = [p for p in procs if p.poll() is None]


def launch_job(job_dir: Path) -> None:
    """Start (or resume) a job in its own process (core.jobs.launch) and keep its handle to reap it."""
    from core import jobs

    reap_jobs()
    _job_processes().append(jobs.launch(job_dir))


def duration(seconds: float | None) -> str:
    """"42 s", "3 min 5 s", "2 h 10 min"; "—" when unknown."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "—"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


def jobs_frame(infos: list[dict]) -> pd.DataFrame:
    """The Jobs page's table: one row per job (core.jobs.summary), progress as a 0–1 fraction."""
    return pd.DataFrame([{
        "job": j["id"], "kind": j["kind"], "model": j["model"], "status": j["status"],
        "progress": (j["done"] / j["total"]) if j["total"] else 0.0,
        "done": f"{j['done']:,} / {j['total']:,}",
        "tokens/s": j["tokens_per_s"],
        "ETA": duration(j["eta_s"]) if j["status"] == "running" else "",
        "ingested": f"{j['shards_ingested']:,} / {j['shards_done']:,} shards" if "shards_done" in j else "",
        "error": clip(j["error"], 120) if j["error"] else "",
        "created": j["created"],
    } for j in infos], columns=["job", "kind", "model", "status", "progress", "done", "tokens/s", "ETA", "ingested",
                                "error", "created"])


# --------------------------------------------------------------------------------------------
# Judgments
# --------------------------------------------------------------------------------------------


def interval(p) -> str:
    """A calibration.Proportion as "0.82 [0.70, 0.90] (41/50)"; "n/a" without data."""
    if not p.n:
        return "n/a (no labels)"
    return f"{p.value:.2f} [{p.low:.2f}, {p.high:.2f}] ({p.k}/{p.n})"


# --------------------------------------------------------------------------------------------
# Links that land where they say, and the reviewer
# --------------------------------------------------------------------------------------------

REVIEW_PAGE = "app_pages/9_Review.py"
JOBS_PAGE = "app_pages/5_Jobs.py"
REVIEWER_KEY = "reviewer_name"  # shared by every page that saves a review (not page-prefixed)


def reviewer() -> str | None:
    """The reviewer name of this browser session (None until one is given)."""
    name = str(st.session_state.get(REVIEWER_KEY) or "").strip()
    return name or None


def jobs_link(stage: str, label: str, icon: str = ":material/rocket_launch:") -> None:
    """A link to the Jobs page that opens on `stage`'s tab (the Jobs page reads ?stage=)."""
    st.page_link(JOBS_PAGE, label=label, icon=icon, query_params={"stage": stage})


def review_link(source, label: str, icon: str = ":material/rate_review:") -> None:
    """A link to the Review page with a queue from `source` (core.review_queue.QueueSource)."""
    st.page_link(REVIEW_PAGE, label=label, icon=icon, query_params=source.to_query())
