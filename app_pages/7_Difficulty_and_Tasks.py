"""Difficulty & tasks (TAPIR, DESIGN.md §1, §6, §7): MFD per instruction from one judge's stored
verdicts, with a δ slider and live kept counts per task at MFD > δ; NULL MFD by reason; MFD vs IFD
rank correlation; the task mix now / target / after resampling; the taxonomy; where the task
labels come from; and a form to relabel one instruction by hand.

Everything shown is computed by core (core.views over core.difficulty, core.tasks, core.curate):
aggregate DuckDB queries, cached per argument and per data version, never a materialisation."""

import streamlit as st

import ui
from core import charts, views
from core import tasks as tasks_mod
from core.selection import ExploreFilter

st.set_page_config(page_title="Difficulty & tasks · Winnow", page_icon="🌾", layout="wide")

ws = ui.workspace()
st.title("Difficulty & tasks")
st.caption("TAPIR keeps the instructions the student has not learned yet (MFD > δ), then rebalances them "
           "by task. MFD = judge(teacher answer) − judge(student answer), from one judge's stored verdicts.")

CACHE_ENTRIES = 64
BIN_WIDTHS = (0.25, 0.5, 1.0, 2.0)
PATH = str(ui.workspace_path())
N_INSTRUCTIONS = ws.explore_count(ExploreFilter())
ALL_SOURCES = ws.store.difficulty_sources()
# Part of every cache key: a relabel, an import or a recomputation is seen at once.
VERSION = views.data_version(ws, ALL_SOURCES, N_INSTRUCTIONS)


# --------------------------------------------------------------------------------------------
# Cached queries (keyed by workspace, data version and arguments; `_ws` is not hashed)
# --------------------------------------------------------------------------------------------


@st.cache_data(max_entries=CACHE_ENTRIES, show_spinner=False)
def kept_table(_ws, path: str, version: str, source: str, round: int, delta: float):
    return views.kept_table(_ws, source, delta, round)


@st.cache_data(max_entries=CACHE_ENTRIES, show_spinner=False)
def histogram(_ws, path: str, version: str, source: str, round: int, bin_width: float):
    return views.histogram(_ws, source, round, bin_width)


@st.cache_data(max_entries=CACHE_ENTRIES, show_spinner=False)
def null_reasons(_ws, path: str, version: str, source: str, round: int):
    return views.null_reasons(_ws, source, round)


@st.cache_data(max_entries=16, show_spinner=False)
def correlation(_ws, path: str, version: str, source: str, ifd_source: str, round: int):
    return views.rank_correlation(_ws, source, ifd_source, round)


@st.cache_data(max_entries=CACHE_ENTRIES, show_spinner=False)
def task_mix(_ws, path: str, version: str, pool: str, source, delta, round: int, target_label: str, size):
    target = rebalance_targets(_ws, path, version).get(target_label, "tapir")
    return views.task_mix(_ws, pool, source, delta, round, target, size)


@st.cache_data(max_entries=8, show_spinner=False)
def rebalance_targets(_ws, path: str, version: str):
    return views.rebalance_targets(_ws)


@st.cache_data(max_entries=8, show_spinner=False)
def label_sources(_ws, path: str, version: str):
    return views.label_sources(_ws), views.classifier_labels(_ws)


def keep_valid(key: str, options: list) -> None:
    """Forget a remembered choice that is no longer an option (another source, another search)."""
    if key in st.session_state and st.session_state[key] not in options:
        del st.session_state[key]


# --------------------------------------------------------------------------------------------
# MFD
# --------------------------------------------------------------------------------------------

st.header("MFD")
sources = views.difficulty_sources(ws, "mfd", ALL_SOURCES)
source = round_ = delta = None
if sources.empty:
    st.info(views.MFD_HINT)
    st.page_link("app_pages/5_Jobs.py", label="Start the difficulty chain on the Jobs page",
                 icon=":material/rocket_launch:")
else:
    c1, c2, c3 = st.columns([3, 1, 1])
    names = list(dict.fromkeys(sources["source"]))
    keep_valid("difficulty_source", names)
    source = c1.selectbox("MFD source (judge model / rubric)", names, key="difficulty_source",
                          help="One judge's verdicts on the teacher's and the student's answers.")
    mine = sources[sources["source"] == source]
    rounds = [int(r) for r in mine["round"]]
    keep_valid("difficulty_round", rounds)
    round_ = int(c2.selectbox("Round", rounds, index=len(rounds) - 1, key="difficulty_round"))
    bin_width = float(c3.selectbox("Bin width", BIN_WIDTHS, index=BIN_WIDTHS.index(1.0), key="difficulty_bin"))
    row = mine[mine["round"] == round_].iloc[0]
    rng = views.delta_range(row["min_value"], row["max_value"])
    delta = float(st.slider("δ: keep MFD > δ", rng.low, rng.high, rng.default, rng.step,
                            key=f"difficulty_delta_{source}_{round_}",
                            help="TAPIR's seed rule: an instruction is kept when the teacher's answer scores more "
                                 "than δ above the student's. A NULL MFD is never kept."))

    kept = kept_table(ws, PATH, VERSION, source, round_, delta)
    totals = views.kept_totals(kept)
    n_null = int(row["rows"]) - int(row["valued"])
    m = st.columns(4)
    m[0].metric("Instructions with MFD", f"{totals['valued']:,}")
    m[1].metric("Kept (MFD > δ)", f"{totals['kept']:,}")
    m[2].metric("Share kept", f"{totals['share']:.0%}" if totals["valued"] else "—")
    m[3].metric("NULL MFD", f"{n_null:,}", help="Instructions of this source and round with no MFD (reasons below).")

    if totals["valued"] == 0:
        st.info("No instruction has an MFD in this source and round: every row is NULL (see the reasons below). "
                "Judge both the teacher's and the student's answers, then compute MFD again.")
    else:
        left, right = st.columns(2)
        with left:
            st.plotly_chart(charts.mfd_histogram(histogram(ws, PATH, VERSION, source, round_, bin_width), bin_width,
                                                 delta), key="difficulty_histogram")
        with right:
            st.plotly_chart(charts.kept_bars(kept), key="difficulty_kept_chart")
        st.dataframe(kept, hide_index=True, width="stretch", key="difficulty_kept_table",
                     column_config={"share kept": st.column_config.NumberColumn(format="percent")})

    st.subheader("NULL MFD by reason")
    reasons = null_reasons(ws, PATH, VERSION, source, round_)
    if reasons.empty:
        st.caption("Every instruction of this source and round has an MFD.")
    else:
        st.caption("MFD is NULL (never 0) when a score is missing. Answer or judge what is missing, then compute "
                   "MFD again.")
        st.dataframe(reasons, hide_index=True, width="content", key="difficulty_null_reasons")

    st.subheader("MFD vs IFD")
    ifd = views.ifd_sources(ws, round_, ALL_SOURCES)
    if not ifd:
        st.info(views.IFD_HINT)
    else:
        ifd_source = st.selectbox("IFD source (scoring model / answer role)", ifd, key="difficulty_ifd_source") \
            if len(ifd) > 1 else ifd[0]
        corr = correlation(ws, PATH, VERSION, source, ifd_source, round_)
        st.metric(ui.md_escape(f"Kendall τ, MFD vs IFD ({ifd_source})"),
                  "—" if corr.n < 2 or corr.kendall.value != corr.kendall.value else f"{corr.kendall.value:.2f}")
        st.text(views.correlation_text(corr))

# --------------------------------------------------------------------------------------------
# Tasks
# --------------------------------------------------------------------------------------------

st.header("Tasks")
try:
    taxonomy = views.taxonomy_frame(ws)
except ValueError as exc:  # a hand-edited taxonomy setting that no longer validates
    st.error(ui.md_escape(exc))
    taxonomy = None
n_instructions = N_INSTRUCTIONS

st.subheader("Task mix")
if n_instructions == 0:
    st.info("No instructions yet: import a file (with a `task` field, or relabel below), then the task mix "
            "now, TAPIR's target and the mix after resampling show here.")
    st.page_link("app_pages/1_Import.py", label="Import a file", icon=":material/upload_file:")
else:
    pools = [views.POOL_KEPT, views.POOL_ALL] if source is not None else [views.POOL_ALL]
    keep_valid("difficulty_pool", pools)
    targets = rebalance_targets(ws, PATH, VERSION)
    keep_valid("difficulty_target", list(targets))
    c1, c2, c3 = st.columns([2, 2, 1])
    pool = c1.radio("Pool", pools, key="difficulty_pool", horizontal=True,
                    help="What is rebalanced: the instructions kept at the δ above, or every instruction.")
    target_label = c2.selectbox("Target", list(targets), key="difficulty_target",
                                help="TAPIR: math and reasoning 1/6 each, code 1/12 each, the rest spread evenly. "
                                     "Snapshot targets come from this workspace's snapshot specs.")
    size = c3.number_input("Resampled size", min_value=1, value=None, step=10, key="difficulty_mix_size",
                           placeholder="the pool's size")
    mix = task_mix(ws, PATH, VERSION, pool, source, delta if pool == views.POOL_KEPT else None,
                   round_ or 0, target_label, int(size) if size else None)
    if mix.table.empty:
        st.info("No instruction in this pool: lower δ above, or choose all instructions.")
    else:
        st.plotly_chart(charts.task_mix_bars(mix.table), key="difficulty_mix_chart")
        st.caption(f"{mix.pool_size:,} instructions in the pool → {mix.size:,} after resampling (largest remainder, "
                   "over-full tasks down-sampled, under-full ones repeated).")
        st.dataframe(mix.table, hide_index=True, width="stretch", key="difficulty_mix_table",
                     column_config={c: st.column_config.NumberColumn(format="percent")
                                    for c in ("now share", "target share", "after share")} |
                     {"target": st.column_config.NumberColumn(format="%.1f")})
        if mix.missing:
            st.caption(ui.md_escape(f"Tasks with a target share but nothing in the pool (not invented): "
                                    f"{', '.join(mix.missing)}."))

left, right = st.columns([3, 2])
with left:
    st.subheader("Taxonomy")
    if taxonomy is not None:
        custom = ws.store.setting(tasks_mod.TASKS_SETTING) is not None
        st.caption("This workspace's taxonomy." if custom else "The default taxonomy (the workspace has not set its own).")
        st.dataframe(taxonomy, hide_index=True, width="stretch", key="difficulty_taxonomy")
with right:
    st.subheader("Where the task labels come from")
    current_sources, stored = label_sources(ws, PATH, VERSION)
    if current_sources.empty:
        st.info("No task labels yet: import data with a `task` field, relabel instructions below, or label them "
                "with the embedding or LLM classifier (core.tasks.classify).")
    else:
        st.dataframe(current_sources, hide_index=True, width="stretch", key="difficulty_label_sources")
        st.caption("The current task of each instruction: a human relabel wins, then the imported label, then the "
                   "latest model label.")
        if not stored.empty:
            st.dataframe(stored, hide_index=True, width="stretch", key="difficulty_label_classifiers")
            st.caption("Stored label rows per classifier, the replaced ones included.")

# --------------------------------------------------------------------------------------------
# Relabel a sample
# --------------------------------------------------------------------------------------------


def save_relabel(instruction_id: str) -> None:
    """Form callback: runs before the page renders, so everything above shows the new label."""
    task = st.session_state.get(f"difficulty_relabel_task_{instruction_id}")
    reviewer = st.session_state.get("difficulty_relabel_reviewer")
    try:
        tasks_mod.relabel(ws, instruction_id, task, reviewer)
    except ValueError as exc:
        st.session_state["difficulty_relabel_flash"] = {"ok": False, "message": str(exc)}
    else:
        st.session_state["difficulty_relabel_flash"] = {
            "ok": True, "message": f"Saved: {task} is now the human label of instruction {instruction_id[:8]}."}


st.subheader("Relabel a sample")
if n_instructions == 0:
    st.info("No instruction to relabel yet: import data first.")
elif taxonomy is None:
    st.info("Fix the workspace's task taxonomy (above) to relabel instructions.")
else:
    search = st.text_input("Search instructions", key="difficulty_relabel_search",
                           help="Case-insensitive substring of the instruction or its input.")
    candidates = views.relabel_candidates(ws, search)
    if candidates.empty:
        st.info("No instruction contains that text: try a shorter search.")
    else:
        ids = candidates["id"].tolist()
        labels = {i: f"{i[:8]} · {t or '(no task)'} · {ui.clip(text, 90)}"
                  for i, t, text in zip(ids, candidates["task"], candidates["instruction"], strict=True)}
        keep_valid("difficulty_relabel_pick", ids)
        iid = st.selectbox(f"Instruction ({len(ids)} shown, the first matches)", ids, key="difficulty_relabel_pick",
                           format_func=labels.get)
        found = tasks_mod.task_of(ws, iid)
        sample = ws.sample(iid)
        if found is None or sample is None:
            st.info("That instruction is gone; choose another.")
        else:
            ins = sample["instruction"]
            ui.show_text(ins["text"], label="Instruction", height=200)
            if ins.get("input"):
                ui.show_text(ins["input"], label="Input", height=160)
            current = found["task"] or "(no task)"
            confidence = f", confidence {found['confidence']:.2f}" if found.get("confidence") is not None else ""
            st.text(f"Current task: {current} ({found['source'] or 'no label'}{confidence})"
                    + (f" · family {found['family']}" if found.get("family") else ""))
            st.text(f"Imported label: {found['imported'] or '(none)'}")
            history = views.history_frame(found)
            if history.empty:
                st.caption("No model or human label yet.")
            else:
                st.dataframe(history, hide_index=True, width="stretch", key=f"difficulty_relabel_history_{iid}")
            names = taxonomy["name"].tolist()
            families = dict(zip(taxonomy["name"], taxonomy["family"], strict=True))
            with st.form(key="difficulty_relabel_form", border=True):
                st.selectbox("New task", names, index=names.index(found["task"]) if found["task"] in names else 0,
                             key=f"difficulty_relabel_task_{iid}",
                             format_func=lambda n: f"{n} · {families[n]}")
                st.text_input("Reviewer (optional)", key="difficulty_relabel_reviewer")
                st.form_submit_button("Save label", on_click=save_relabel, args=(iid,), key="difficulty_relabel_save")
    flash = st.session_state.pop("difficulty_relabel_flash", None)
    if flash:
        (st.success if flash["ok"] else st.error)(ui.md_escape(flash["message"]))
