"""Home: the one next step for this workspace, where it stands in its round, and what is in it.

The step and the counts come from core.home (pure, tested there); this page only renders them."""

import streamlit as st

import ui
from core import charts, home

st.set_page_config(page_title="Winnow", page_icon="🌾", layout="wide")

ws = ui.workspace()
stats = ws.stats()
overview = home.overview(ws)
step = home.next_step(overview)

STEP_ICONS = {"demo": ":material/hourglass_top:", "import": ":material/upload_file:",
              "generate": ":material/edit_note:", "judge": ":material/balance:", "review": ":material/rate_review:",
              "curate": ":material/filter_alt:", "train": ":material/download:"}

st.title("Winnow")
st.caption("Curate instruction-tuning and preference data in rounds: import, judge, review, curate, train.")

_demo = ws.demo_status()


@st.fragment(run_every=3 if _demo and _demo["state"] in ("queued", "running") else None)
def demo_progress() -> None:
    """The demo's first numbers, computed in the background after `make run` (core.demo)."""
    status = ws.demo_status()
    if not status or status["state"] == "done":
        if status and st.session_state.pop("home_demo_running", False):
            st.rerun()  # the numbers below are in, and the next step has changed: show them
        return
    st.session_state["home_demo_running"] = True
    job = status.get("job")
    if status["state"] == "failed":
        st.error(ui.md_escape(f"The demo judge job failed: {status.get('error')}. See the Jobs page."))
    elif job:
        total = max(int(job["total"] or 0), 1)
        st.progress(min(job["done"] / total, 1.0),
                    text=f"Judging the demo seed with the built-in SmolLM2 (probability scoring): "
                         f"{job['done']:,} of {job['total']:,} answers · ETA {ui.duration(job['eta_s'])}. "
                         "The app is usable meanwhile.")
    else:
        st.info("Starting the demo's background judge and task labelling …")


demo_progress()

# --------------------------------------------------------------------------------------------
# Start here: the one next step
# --------------------------------------------------------------------------------------------

with st.container(border=True, key="home_start_here"):
    st.subheader(f"Start here: {step.title}")
    st.markdown(ui.md_escape(step.why))
    # A primary button, not a link: it is the one thing on this page to do next.
    if st.button(step.button_label, key="home_next_step", type="primary", icon=STEP_ICONS.get(step.key)):
        st.switch_page(step.page, query_params=step.query_params or None)
    if step.key == "import" and not overview.documents:
        st.text("Or load the demo data from a terminal:")
        st.code(f"WINNOW_WORKSPACE={stats['workspace']} winnow init --demo", language="bash")

# --------------------------------------------------------------------------------------------
# This round: each count against what the round needs
# --------------------------------------------------------------------------------------------

st.subheader("This round")
goals = home.round_goals(overview)
for column, goal in zip(st.columns(len(goals)), goals, strict=True):
    with column:
        if goal.need is None:
            st.markdown(f"**{ui.md_escape(goal.label)}**: {goal.have:,}")
            if goal.note:
                st.caption(ui.md_escape(goal.note))
        else:
            st.progress(goal.fraction, text=f"**{ui.md_escape(goal.label)}**: {goal.have:,} of {goal.need:,}")
            if goal.note:
                st.caption(ui.md_escape(goal.note))
if stats["import_rejects"]:
    st.warning(f"{int(stats['import_rejects']):,} rows were rejected on import; "
               "the Import page lists them with file, line and reason.")

# --------------------------------------------------------------------------------------------
# The workspace: counts, datasets, tasks by review state, every page
# --------------------------------------------------------------------------------------------

st.subheader("Workspace")
st.code(stats["workspace"], language=None)
metrics = [("Datasets", "datasets"), ("Instructions", "instructions"), ("Responses", "responses"),
           ("Preference pairs", "preference_pairs"), ("Documents", "documents"),
           ("Human reviews", "reviews"), ("Judgments", "judgments"), ("Rejected rows", "import_rejects")]
for col, (label, key) in zip(st.columns(len(metrics)), metrics, strict=True):
    col.metric(label, f"{int(stats[key]):,}")

if stats["datasets"]:
    by_state = ws.store.tasks_by_review_state()
    left, right = st.columns([3, 2])
    with left:
        st.plotly_chart(charts.review_state_bars(by_state), key="home_chart_review_state")
        with st.expander("Tasks by review state (table)"):
            st.dataframe(by_state, hide_index=True, width="stretch", key="home_tasks_table")
    with right:
        st.text("Datasets")
        st.dataframe(ws.store.datasets(), hide_index=True, width="stretch", key="home_datasets")
        st.text("Responses per role")
        st.dataframe(ws.store.role_counts(), hide_index=True, width="stretch", key="home_roles")

# Every page, one line each: less prominent than the step above, for when you know where to go.
LINKS = [
    ("app_pages/1_Import.py", "Import data", "upload_file",
     "Files are validated and previewed before anything is written."),
    ("app_pages/2_Explore.py", "Explore and review samples", "search",
     "Filter by dataset, task, role and length; read samples; accept, reject or edit responses."),
    ("app_pages/9_Review.py", "Review queue", "rate_review",
     "One record at a time from a filter, a snapshot or the judge's suggestions, with keyboard shortcuts."),
    ("app_pages/4_Models.py", "Models", "smart_toy",
     "Built-in and your own models (local folders or OpenAI-compatible servers); try a prompt."),
    ("app_pages/5_Jobs.py", "Generate or judge responses", "rocket_launch",
     "Jobs run in their own processes: live progress, logs, cancel and resume."),
    ("app_pages/6_Judgments.py", "Check the judges", "balance",
     "Score histograms, parse failures, and precision against your labels at a threshold."),
    ("app_pages/7_Difficulty_and_Tasks.py", "Difficulty and tasks", "insights",
     "TAPIR's MFD with a δ slider and kept counts per task; the task mix and its TAPIR target."),
    ("app_pages/8_Curate.py", "Curate a snapshot", "filter_alt",
     "Filters, judge thresholds, MFD > δ, rebalancing and weights, with live counts; save and export a snapshot."),
    ("app_pages/3_Export.py", "Export a training file", "download",
     "Alpaca, messages, preference (DPO) or prompts; JSONL or Parquet."),
]
with st.expander("All pages", expanded=bool(stats["datasets"])):
    for start in range(0, len(LINKS), 3):
        for column, (page, label, icon, caption) in zip(st.columns(3), LINKS[start:start + 3], strict=False):
            with column:
                st.page_link(page, label=label, icon=f":material/{icon}:")
                st.caption(caption)
