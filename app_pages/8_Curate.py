"""Curate: a spec (filters, rebalancing, weights, system tags) → live counts per task → a named,
immutable snapshot; snapshots listed, compared, explained ("why in / why out") and exported
(DESIGN.md §7). Every number comes from core.curate (and core.curate_views over it)."""

from pathlib import Path

import pandas as pd
import streamlit as st

import ui
from core import charts, curate
from core import curate_views as views
from core import views as difficulty_views  # the Difficulty & tasks page's hints, word for word
from core.curate import KINDS, REVIEWS, SNAPSHOT_FORMATS, SnapshotExists, SpecError
from core.export import FILE_TYPES, ExportError
from core.review_queue import QueueSource
from core.workspace import TEST_MODELS

st.set_page_config(page_title="Curate · Winnow", page_icon="🌾", layout="wide")

ws = ui.workspace()
st.title("Curate")
st.caption("Build a spec, watch the counts per task move, then save it as a named, immutable snapshot: "
           "what training, export and rounds consume.")

MAX_SPEC_BYTES = 1024 * 1024
MIME = {"jsonl": "application/jsonl", "parquet": "application/vnd.apache.parquet"}
KIND_HELP = {"sft": "sft: (instruction, response) pairs of the chosen roles",
             "prompts": "prompts: instructions only", "preference": "preference: instructions with preference pairs"}
REBALANCE_LABELS = {"off": "No rebalancing", "tapir": "TAPIR task mix (math, reasoning, code boosted)",
                    "custom": "Custom task shares"}
SOURCES = {"builder": "Filter builder", "yaml": "YAML spec"}
FORMAT_HELP = {"alpaca": "alpaca (SFT, with a weight column)", "messages": "messages (SFT, with a weight column)",
               "preference": "preference (chosen / rejected, with a weight column)",
               "prompts": "prompts (instructions only)"}
get = st.session_state.get

options = ws.filter_options()
if not options["datasets"]:
    st.info("The workspace is empty: import data first, then build a curation spec here.")
    st.page_link("app_pages/1_Import.py", label="Import a file", icon=":material/upload_file:")
    st.stop()

stamp = views.catalog_stamp(ws)  # part of every cache key below: a new verdict or label is seen at once


@st.cache_data(max_entries=8, show_spinner=False)
def builder_options(root: str, stamp: str) -> tuple[pd.DataFrame, dict, list[str]]:
    return views.judge_options(ws), views.difficulty_options(ws), views.task_options(ws)


judges, difficulty, task_names = builder_options(str(ws.root), stamp)


@st.cache_data(max_entries=32, show_spinner=False)
def judge_trust(root: str, judge: str, rubric: str, stamp: str):
    # Keyed by the catalog's fingerprint: a new label or verdict recomputes it.
    return ws.judge_trust(judge, rubric)


def trust_line(judge: str, rubric: str, only_flagged: bool = False) -> None:
    """A judge's trust beside the rule that reads its scores: a warning when it is at chance on the
    user's labels, else a caption (issue 12: flagged wherever its scores show)."""
    try:
        trust = judge_trust(str(ws.root), judge, rubric, stamp)
    except ValueError:  # a typed spec's unknown rubric: the spec's own error says so
        return
    style, text = views.trust_flag(judge, rubric, trust)
    if style == "warning" or not only_flagged:
        getattr(st, style)(ui.md_escape(text))

# Never preselect a test model: real judges first.
judges = judges.assign(_test=judges["judge_model"].isin(TEST_MODELS)).sort_values("_test", kind="stable")
judge_keys = judges["key"].tolist()
scales = {k: (lo, hi) for k, lo, hi in zip(judges["key"], judges["scale_min"], judges["scale_max"], strict=True)}

for key, value in views.builder_defaults().items():
    st.session_state.setdefault(key, value)
st.session_state.setdefault("curate_source", "builder")

# --------------------------------------------------------------------------------------------
# Loading a pasted or uploaded spec
# --------------------------------------------------------------------------------------------


def _flash(kind: str, message: str) -> None:
    st.session_state["curate_flash"] = {"kind": kind, "message": message}


def _spec_text(text_key: str, file_key: str) -> str | None:
    upload = get(file_key)
    if upload is not None:
        data = upload.getvalue()
        if len(data) > MAX_SPEC_BYTES:
            _flash("error", f"The spec file is {len(data):,} bytes; a spec is at most {MAX_SPEC_BYTES:,}.")
            return None
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            _flash("error", "The spec file is not UTF-8 text.")
            return None
    return get(text_key) or ""


def _into_builder(spec) -> bool:
    """Set the builder's widgets to a spec; False (and the spec as YAML instead) when they cannot say it."""
    try:
        values = views.widgets_from_spec(spec)
    except views.NotRepresentable as exc:
        st.session_state["curate_source"] = "yaml"
        st.session_state["curate_yaml"] = views.spec_yaml(spec)
        _flash("info", f"{exc}: the spec is used as YAML (edit it there).")
        return False
    for key in [k for k in st.session_state if k.startswith(("curate_judge_", "curate_weight_", "curate_tag_"))]:
        del st.session_state[key]
    st.session_state.update(values)
    st.session_state["curate_source"] = "builder"
    return True


def _load(text_key: str, file_key: str) -> None:
    """Button callback: a pasted or uploaded YAML/JSON spec, validated, into the builder."""
    text = _spec_text(text_key, file_key)
    if text is None:
        return
    try:
        spec = curate.load_spec(text if "\n" in text else text + "\n")
    except SpecError as exc:
        _flash("error", f"Not a valid spec: {exc}")
        return
    if _into_builder(spec):
        _flash("success", "Spec loaded into the filter builder.")


def _load_snapshot_spec(name: str) -> None:
    if _into_builder(curate.snapshot(ws, name, page_size=1).spec):
        _flash("success", f"The spec of snapshot {name} is in the filter builder.")


def _to_yaml() -> None:
    """Radio callback: switching to YAML starts from what the builder says."""
    if get("curate_source") == "yaml":
        try:
            st.session_state["curate_yaml"] = views.spec_yaml(curate.load_spec(views.spec_from_widgets(
                {k: v for k, v in st.session_state.items() if isinstance(k, str)})))
        except SpecError:
            st.session_state.setdefault("curate_yaml", "")


def _union(*lists) -> list:
    return list(dict.fromkeys(x for values in lists for x in (values or []) if x is not None))


def _clamp(key: str, lo: float, hi: float, default: float) -> None:
    """A slider's stored value inside its range (its range changes with the judge or source)."""
    value = get(key)
    value = default if value is None else value
    st.session_state[key] = float(min(max(float(value), lo), hi))


# --------------------------------------------------------------------------------------------
# The filter builder (sidebar)
# --------------------------------------------------------------------------------------------


def judge_rules() -> None:
    st.subheader("Judge scores")
    if not judge_keys and not get("curate_n_judges"):
        st.info("No judgments yet: run a judge job on the Jobs page; a pointwise judge's scores can then "
                "filter samples here.")
        return
    st.number_input("Judge rules", min_value=0, max_value=views.MAX_JUDGES, step=1, key="curate_n_judges",
                    help="Each rule keeps a response whose mean parsed score of that judge is in range; "
                         "a response the judge has no verdict on is out.")
    for i in range(int(get("curate_n_judges") or 0)):
        key = f"curate_judge_{i}"
        choices = _union(judge_keys, [get(key)])
        if get(key) not in choices:
            st.session_state[key] = choices[0]
        chosen = st.selectbox(f"Judge {i + 1}", choices, key=key, format_func=views.judge_label)
        trust_line(*views.parse_judge_key(chosen))
        lo, hi = scales.get(chosen) or views.rubric_scale(ws, *views.parse_judge_key(chosen))
        step = views.slider_step(lo, hi)
        st.session_state.setdefault(f"curate_judge_has_min_{i}", True)
        if st.checkbox("Minimum score", key=f"curate_judge_has_min_{i}"):
            _clamp(f"curate_judge_min_{i}", lo, hi, views.default_min(views.parse_judge_key(chosen)[1], lo, hi))
            st.slider("Keep score ≥", lo, hi, step=step, key=f"curate_judge_min_{i}")
        st.session_state.setdefault(f"curate_judge_has_max_{i}", False)
        if st.checkbox("Maximum score", key=f"curate_judge_has_max_{i}"):
            _clamp(f"curate_judge_max_{i}", lo, hi, hi)
            st.slider("Keep score ≤", lo, hi, step=step, key=f"curate_judge_max_{i}")


def difficulty_rules() -> None:
    st.subheader("Difficulty")
    rounds = ["latest", *[str(r) for r in difficulty["rounds"]]]
    if get("curate_round") not in rounds:
        rounds.append(get("curate_round"))
    st.selectbox("Round", rounds, key="curate_round", format_func=lambda r: "each instruction's latest" if r == "latest"
                 else f"round {r}")
    mfd = difficulty["mfd"]
    if mfd["sources"] or get("curate_mfd_on"):
        st.selectbox("MFD source", _union([None], mfd["sources"], [get("curate_mfd_source")]), key="curate_mfd_source",
                     format_func=lambda s: "any source (the newest row)" if s is None else s)
        if st.checkbox("Keep MFD > δ (TAPIR)", key="curate_mfd_on"):
            lo = float(min(mfd["min"] if mfd["min"] is not None else -10.0, 0.0))
            hi = float(max(mfd["max"] if mfd["max"] is not None else 10.0, lo + 1.0))
            _clamp("curate_mfd_min", lo, hi, 0.0)
            st.slider("δ", lo, hi, step=views.slider_step(lo, hi), key="curate_mfd_min",
                      help="MFD = judge(teacher answer) − judge(student answer); an instruction without an MFD is out.")
    else:
        st.caption(ui.md_escape(difficulty_views.MFD_HINT))
    ifd = difficulty["ifd"]
    if ifd["sources"] or get("curate_ifd_on"):
        st.selectbox("IFD source", _union([None], ifd["sources"], [get("curate_ifd_source")]), key="curate_ifd_source",
                     format_func=lambda s: "any source (the newest row)" if s is None else s)
        if st.checkbox("Keep IFD in a range", key="curate_ifd_on"):
            lo = float(ifd["min"] if ifd["min"] is not None else 0.0)
            hi = float(ifd["max"] if ifd["max"] is not None else 2.0)
            hi = hi if hi > lo else lo + 1.0
            current = get("curate_ifd_range") or (lo, hi)
            st.session_state["curate_ifd_range"] = (float(min(max(current[0], lo), hi)),
                                                    float(min(max(current[1], lo), hi)))
            st.slider("IFD (above the lower end, up to the upper end)", lo, hi, step=(hi - lo) / 100,
                      key="curate_ifd_range")
    else:
        st.caption(ui.md_escape(difficulty_views.IFD_HINT))


def rebalancing() -> None:
    st.subheader("Near-duplicates and rebalancing")
    if st.checkbox("Remove near-duplicate instructions", key="curate_dedup_on",
                   help="Applied when the snapshot is made (MiniLM embeddings); live counts do not include it."):
        st.slider("Cosine threshold", 0.80, 1.00, step=0.01, key="curate_dedup_threshold")
        st.selectbox("Keep the best-scored by", _union([None], judge_keys, [get("curate_dedup_judge")]),
                     key="curate_dedup_judge", format_func=lambda k: "insertion order" if k is None else views.judge_label(k))
    mode = st.radio("Task mix", views.REBALANCE_MODES, key="curate_rebalance", format_func=REBALANCE_LABELS.get)
    if mode == "custom":
        st.text_input("Shares", key="curate_shares", placeholder="math: 1/6, reasoning: 1/6, open_qa: 0.5",
                      help="task: share pairs; shares are renormalised over the tasks that have samples.")
    if mode != "off":
        st.number_input("Size (0: the pool after filters)", min_value=0, step=100, key="curate_rebalance_size")
        st.number_input("Seed", min_value=0, step=1, key="curate_rebalance_seed")


def weights_and_tags() -> None:
    st.subheader("Weights")
    st.number_input("Default weight", min_value=0.0, step=0.5, key="curate_weight_default")
    st.number_input("Weight rules (first match wins)", min_value=0, max_value=views.MAX_WEIGHT_RULES, step=1,
                    key="curate_n_weight_rules")
    for i in range(int(get("curate_n_weight_rules") or 0)):
        with st.container(border=True):
            st.multiselect("When task is", _union(task_names, get(f"curate_weight_tasks_{i}")),
                           key=f"curate_weight_tasks_{i}", placeholder="any task")
            st.multiselect("and dataset is", _union(options["datasets"], get(f"curate_weight_datasets_{i}")),
                           key=f"curate_weight_datasets_{i}", placeholder="any dataset")
            st.number_input("and MFD >", value=None, step=0.5, key=f"curate_weight_mfd_{i}")
            st.session_state.setdefault(f"curate_weight_value_{i}", 2.0)
            st.number_input("weight", min_value=0.0, step=0.5, key=f"curate_weight_value_{i}")
    st.subheader("System tags")
    st.text_input("Default system prompt", key="curate_tag_default", placeholder="empty: the instruction's own")
    st.number_input("Tag rules (first match wins)", min_value=0, max_value=views.MAX_TAG_RULES, step=1,
                    key="curate_n_tag_rules")
    for i in range(int(get("curate_n_tag_rules") or 0)):
        with st.container(border=True):
            st.multiselect("When dataset is", _union(options["datasets"], get(f"curate_tag_datasets_{i}")),
                           key=f"curate_tag_datasets_{i}", placeholder="any dataset")
            st.multiselect("and task is", _union(task_names, get(f"curate_tag_tasks_{i}")),
                           key=f"curate_tag_tasks_{i}", placeholder="any task")
            st.text_input("system prompt", key=f"curate_tag_text_{i}")


def builder() -> None:
    kind = st.selectbox("Kind", KINDS, key="curate_kind", format_func=KIND_HELP.get)
    st.multiselect("Datasets", _union(options["datasets"], get("curate_datasets")), key="curate_datasets",
                   placeholder="all datasets")
    if kind == "sft":
        st.multiselect("Response roles (the training target)", _union(options["roles"], get("curate_roles")),
                       key="curate_roles")
    st.multiselect("Tasks", _union(task_names, get("curate_tasks")), key="curate_tasks", placeholder="all tasks",
                   help="The current task (human > imported > model label); (none): no task yet.")
    st.selectbox("Review state", REVIEWS, key="curate_review",
                 help="The latest human decision on the response, else on its instruction.")
    c1, c2 = st.columns(2)
    c1.number_input("Min characters", min_value=0, value=None, step=50, key="curate_min_chars")
    c2.number_input("Max characters", min_value=0, value=None, step=50, key="curate_max_chars")
    if kind == "sft":
        judge_rules()
    difficulty_rules()
    rebalancing()
    weights_and_tags()


with st.sidebar:
    st.header("Spec")
    source = st.radio("Edit the spec with", list(SOURCES), key="curate_source", format_func=SOURCES.get,
                      horizontal=True, on_change=_to_yaml)
    if source == "builder":
        builder()
    else:
        st.text_area("Spec (YAML or JSON)", key="curate_yaml", height=400)
        st.file_uploader("or upload a spec file", type=["yaml", "yml", "json"], key="curate_yaml_file")
        st.button("Load into the filter builder", key="curate_yaml_to_builder", on_click=_load,
                  args=("curate_yaml", "curate_yaml_file"))

flash = st.session_state.pop("curate_flash", None)
if flash:
    getattr(st, flash["kind"])(ui.md_escape(flash["message"]))

spec = None
try:
    if source == "builder":
        spec = curate.load_spec(views.spec_from_widgets({k: v for k, v in st.session_state.items() if isinstance(k, str)}))
    else:
        text = get("curate_yaml") or ""
        spec = curate.load_spec(text if "\n" in text else text + "\n")
except SpecError as exc:
    st.error(ui.md_escape(f"The spec is not valid: {exc}"))

# --------------------------------------------------------------------------------------------
# The spec, live counts and a preview
# --------------------------------------------------------------------------------------------


@st.cache_data(max_entries=64, show_spinner=False)
def live_counts(root: str, spec_json: str, stamp: str) -> curate.Counts:
    # Keyed by the workspace, the spec's JSON and the catalog's fingerprint: never stale.
    return curate.counts(ws, spec_json)


@st.cache_data(max_entries=16, show_spinner=False)
def preview_page(root: str, spec_json: str, stamp: str, page: int) -> tuple[pd.DataFrame, int]:
    return views.preview(ws, spec_json, page, views.PREVIEW_ROWS)


counts = None
if spec is not None:
    with st.expander("The spec as YAML", expanded=False):
        st.code(views.spec_yaml(spec), language="yaml")
        if source == "builder":
            st.text_area("Paste a spec (YAML or JSON)", key="curate_paste", height=160)
            st.file_uploader("or upload a spec file", type=["yaml", "yml", "json"], key="curate_upload")
            st.button("Load spec", key="curate_load", on_click=_load, args=("curate_paste", "curate_upload"))
    try:
        counts = live_counts(str(ws.root), spec.to_json(), stamp)
    except SpecError as exc:
        st.error(ui.md_escape(f"The spec is not valid here: {exc}"))

if counts is not None:
    st.subheader("Live counts")
    cols = st.columns(4 if counts.planned is not None else 3)
    cols[0].metric("Samples now", f"{counts.before:,}", help="Samples of the spec's pool: datasets, roles, kind.")
    cols[1].metric("After filters", f"{counts.after:,}")
    cols[2].metric("Dropped", f"{counts.before - counts.after:,}")
    if counts.planned is not None:
        cols[3].metric("After rebalancing", f"{counts.planned:,}")
    if counts.before == 0:
        st.info("The spec's pool is empty: no sample of these datasets has a response of these roles "
                "(or, for preference, a preference pair). Choose other datasets or roles.")
    if counts.not_counted:
        st.caption("Near-duplicate removal is applied when the snapshot is made: these counts do not include it.")
    for judge, rubric in views.spec_judges(spec):  # also a spec written as YAML, which has no sidebar rule
        trust_line(judge, rubric, only_flagged=True)
    if counts.missing_tasks:
        st.warning(ui.md_escape("Tasks with a target share but no samples (reported, never invented): "
                                + ", ".join(counts.missing_tasks)))
    left, right = st.columns([3, 2])
    with left:
        st.plotly_chart(charts.curate_counts_bars(counts.per_task), key="curate_chart")
    with right:
        st.dataframe(views.counts_table(counts), hide_index=True, width="stretch", key="curate_counts")
        st.text("Dropped per rule (a sample counts for the first rule it fails)")
        if counts.rules.empty:
            st.text("No rule yet: every sample of the pool is kept. Add filters in the sidebar.")
        else:
            st.dataframe(counts.rules, hide_index=True, width="stretch", key="curate_rules")

    st.subheader("What the spec keeps")
    n_pages = max(1, -(-counts.after // views.PREVIEW_ROWS))
    if get("curate_preview_page", 1) > n_pages:
        st.session_state["curate_preview_page"] = 1
    page = st.number_input(f"Page (of {n_pages})", min_value=1, max_value=n_pages, step=1, key="curate_preview_page")
    rows, kept = preview_page(str(ws.root), spec.to_json(), stamp, int(page) - 1)
    if rows.empty:
        st.info("The filters keep no sample: loosen a rule (the table above says which one drops the most).")
    else:
        st.dataframe(rows, hide_index=True, width="stretch", key="curate_preview")
        st.caption(f"{kept:,} samples pass every rule, in the stable order; near-duplicate removal and "
                   "rebalancing are decided when the snapshot is made.")

# --------------------------------------------------------------------------------------------
# Save as snapshot
# --------------------------------------------------------------------------------------------

snapshot_rows = curate.snapshots(ws)
names = [r["name"] for r in snapshot_rows]

if counts is not None:
    st.subheader("Save as snapshot")
    c1, c2 = st.columns([3, 1])
    name = c1.text_input("Snapshot name", key="curate_snapshot_name", placeholder="e.g. round1-seed",
                         help="Letters, digits, '.', '_' and '-'. Snapshots are immutable: a name is used once.")
    c2.write("")
    if c2.button("Save as snapshot", key="curate_save", type="primary"):
        name = (name or "").strip()
        existing = next((r for r in snapshot_rows if r["name"] == name), None)
        if not name:
            st.error("Give the snapshot a name first.")
        elif existing is not None:
            st.error(ui.md_escape(f"A snapshot named {name!r} exists already (created {existing['created_at']}, "
                                  f"hash {existing['content_hash'][:12]}). Snapshots are immutable: "
                                  "choose another name."))
        else:
            try:
                with st.spinner("Materialising the snapshot…"):
                    made = curate.create_snapshot(ws, spec, name)
            except (SnapshotExists, SpecError, ValueError) as exc:
                st.error(ui.md_escape(exc))
            except (OSError, RuntimeError, ImportError) as exc:  # dedup's embedder could not load or run
                st.error(ui.md_escape(f"The snapshot could not be made: {exc}"))
            else:
                st.session_state["curate_saved"] = made.name
                snapshot_rows = curate.snapshots(ws)
                names = [r["name"] for r in snapshot_rows]
    saved = get("curate_saved")
    if saved in names:
        snap = curate.snapshot(ws, saved, page_size=1)
        st.success(f"Saved snapshot {saved}: {snap.n_members:,} members, {snap.n_instructions:,} instructions.")
        st.text("Content hash")
        st.code(snap.content_hash, language=None)
        left, right = st.columns([3, 2])
        left.dataframe(views.snapshot_stats_table(snap.stats), hide_index=True, width="stretch", key="curate_saved_tasks")
        right.dataframe(views.snapshot_rules_table(snap.stats), hide_index=True, width="stretch",
                        key="curate_saved_rules")
        ui.review_link(QueueSource("snapshot", snapshot=saved), "Review this snapshot in the queue")

# --------------------------------------------------------------------------------------------
# Snapshots: list, diff, export, why in / why out
# --------------------------------------------------------------------------------------------

st.subheader("Snapshots")
if not snapshot_rows:
    st.info("No snapshots yet: build a spec, check its counts above, then save it as a snapshot.")
    st.stop()

st.dataframe(views.snapshots_table(snapshot_rows), hide_index=True, width="stretch", key="curate_snapshots")
diff_tab, export_tab, why_tab, spec_tab = st.tabs(["Diff two snapshots", "Export", "Why in / why out", "Inspect"])

with diff_tab:
    if len(names) < 2:
        st.info("A diff needs two snapshots: save another one (e.g. with a different threshold).")
    else:
        c1, c2 = st.columns(2)
        a = c1.selectbox("Snapshot A", names, key="curate_diff_a")
        st.session_state.setdefault("curate_diff_b", names[1])
        b = c2.selectbox("Snapshot B", names, key="curate_diff_b")
        if a == b:
            st.info("Choose two different snapshots.")
        else:
            result = curate.diff(ws, a, b)
            m = st.columns(3)
            m[0].metric("Only in A", f"{result['n_only_a']:,}")
            m[1].metric("Only in B", f"{result['n_only_b']:,}")
            m[2].metric("Weight or copies changed", f"{result['n_changed']:,}")
            st.dataframe(result["per_task"], hide_index=True, width="stretch", key="curate_diff_tasks")
            for change, label in (("only_a", "Only in A"), ("only_b", "Only in B"), ("changed", "Changed")):
                if result[f"n_{change}"]:
                    with st.expander(f"{label}: the first {len(result[change])} of {result[f'n_{change}']:,}"):
                        st.dataframe(result[change], hide_index=True, width="stretch", key=f"curate_diff_{change}")

with export_tab:
    kinds = {r["name"]: r["kind"] for r in snapshot_rows}
    chosen = st.selectbox("Snapshot", names, key="curate_export_snapshot")
    default_format = {"sft": "alpaca", "prompts": "prompts", "preference": "preference"}.get(kinds.get(chosen), "alpaca")
    if get("curate_export_for") != chosen:
        st.session_state["curate_export_for"] = chosen
        st.session_state["curate_export_format"] = default_format
    fmt = st.selectbox("Format", SNAPSHOT_FORMATS, key="curate_export_format", format_func=FORMAT_HELP.get)
    file_type = st.radio("File type", FILE_TYPES, horizontal=True, key="curate_export_type")
    st.text(f"Writes {ws.exports_dir / f'{chosen}.{fmt}.{file_type}'} from the snapshot's own file "
            "(the texts as they were when it was made).")
    if st.button("Export", key="curate_export", type="primary"):
        try:
            written = curate.export_snapshot(ws, chosen, fmt, file_type)
        except (ExportError, ValueError) as exc:
            st.session_state.pop("curate_export_result", None)
            st.error(ui.md_escape(exc))
        else:
            st.session_state["curate_export_result"] = {"path": str(written.path), "format": written.format,
                                                        "n_records": written.n_records}
    done = get("curate_export_result")
    if done and Path(done["path"]).exists():
        out = Path(done["path"])
        st.success(f"Wrote {done['n_records']:,} {done['format']} records.")
        st.code(str(out), language=None)
        st.download_button(f"Download {out.name}", data=out.read_bytes(), file_name=out.name,
                           mime=MIME.get(out.suffix.lstrip("."), "application/octet-stream"), on_click="ignore",
                           key="curate_download")
        st.dataframe(ui.file_preview(out), hide_index=True, width="stretch", key="curate_export_preview")

with why_tab:
    against = [*names] + (["(the spec above, live)"] if spec is not None else [])
    versus = st.selectbox("Against", against, key="curate_why_against")
    sample_id = st.text_input("Sample id (a response id, or an instruction id)", key="curate_why_id").strip()
    if not sample_id:
        st.text("Type a sample id (Explore's lineage and the preview above show them) to see whether it is in, "
                "and if not, the first rule that dropped it and the value it had.")
    else:
        try:
            why = curate.explain(ws, spec if versus == "(the spec above, live)" else versus, sample_id)
        except (ValueError, SpecError) as exc:
            st.warning(ui.md_escape(exc))
        else:
            st.text(views.explain_sentence(why))
            st.dataframe(views.explain_table(why), hide_index=True, width="stretch", key="curate_why")

with spec_tab:
    inspect = st.selectbox("Snapshot", names, key="curate_inspect")
    snap = curate.snapshot(ws, inspect, page_size=20)
    st.text(f"{snap.n_members:,} members · {snap.n_instructions:,} instructions · created {snap.created_at}")
    st.code(snap.content_hash, language=None)
    ui.review_link(QueueSource("snapshot", snapshot=inspect), "Review this snapshot in the queue")
    st.code(views.spec_yaml(snap.spec), language="yaml")
    for judge, rubric in views.spec_judges(snap.spec):  # how far the judges it was cut with are trusted now
        trust_line(judge, rubric)
    st.dataframe(views.snapshot_stats_table(snap.stats), hide_index=True, width="stretch", key="curate_inspect_tasks")
    st.text("First members")
    st.dataframe(snap.members, hide_index=True, width="stretch", key="curate_inspect_members")
    st.button("Load this spec into the builder", key="curate_inspect_load", on_click=_load_snapshot_spec,
              args=(inspect,))
