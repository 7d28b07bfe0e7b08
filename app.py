"""Winnow home: what is in the workspace, and what to do next."""

import streamlit as st

import ui
from core import charts

st.set_page_config(page_title="Winnow", page_icon="🌾", layout="wide")

ws = ui.workspace()
stats = ws.stats()

st.title("Winnow")
st.caption("Curate instruction-tuning and preference data: import, explore, review, generate, judge, export.")
st.text("Workspace")
st.code(stats["workspace"], language=None)

metrics = [("Datasets", "datasets"), ("Instructions", "instructions"), ("Responses", "responses"),
           ("Preference pairs", "preference_pairs"), ("Documents", "documents"),
           ("Human reviews", "reviews"), ("Judgments", "judgments"), ("Rejected rows", "import_rejects")]
for col, (label, key) in zip(st.columns(len(metrics)), metrics, strict=True):
    col.metric(label, f"{int(stats[key]):,}")

empty = stats["datasets"] == 0


_demo = ws.demo_status()


@st.fragment(run_every=3 if _demo and _demo["state"] in ("queued", "running") else None)
def demo_progress() -> None:
    """The demo's first numbers, computed in the background after `make run` (core.demo)."""
    status = ws.demo_status()
    if not status or status["state"] == "done":
        if status and st.session_state.pop("home_demo_running", False):
            st.rerun()  # the numbers below are in: show them
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

st.subheader("What to do next")
if empty:
    st.info("This workspace is empty. Import a file of instruction/response pairs, prompts, chats, "
            "preference pairs or plain-text documents, or load the demo data from a terminal.")
    st.page_link("pages/1_Import.py", label="Import a file", icon=":material/upload_file:")
    st.text("Demo data from the command line:")
    st.code(f"WINNOW_WORKSPACE={stats['workspace']} winnow init --demo", language="bash")
else:
    links = [
        ("2_Explore.py", "Explore and review samples", "search",
         "Filter by dataset, task, role and length; read samples; accept, reject or edit responses."),
        ("3_Export.py", "Export a training file", "download", "Alpaca, messages, preference (DPO) or prompts; JSONL or Parquet."),
        ("1_Import.py", "Import more data", "upload_file", "Files are validated and previewed before anything is written."),
        ("4_Models.py", "Models", "smart_toy",
         "Built-in and your own models (local folders or OpenAI-compatible servers); try a prompt."),
        ("5_Jobs.py", "Generate or judge responses", "rocket_launch",
         "Jobs run in their own processes: live progress, logs, cancel and resume."),
        ("6_Judgments.py", "Check the judges", "balance",
         "Score histograms, parse failures, and precision against your labels at a threshold."
         if stats["judgments"] else "Once a judge job has run: how far its scores can be trusted."),
        ("7_Difficulty_and_Tasks.py", "Difficulty and tasks", "insights",
         "TAPIR's MFD with a δ slider and kept counts per task; the task mix and its TAPIR target."),
        ("8_Curate.py", "Curate a snapshot", "filter_alt",
         "Filters, judge thresholds, MFD > δ, rebalancing and weights, with live counts; "
         "save an immutable snapshot and export it."),
    ]
    for start in range(0, len(links), 3):
        for column, (page, label, icon, caption) in zip(st.columns(3), links[start:start + 3], strict=False):
            with column:
                st.page_link(f"pages/{page}", label=label, icon=f":material/{icon}:")
                st.caption(caption)
    if stats["import_rejects"]:
        st.warning(f"{int(stats['import_rejects']):,} rows were rejected on import; "
                   "the Import page lists them with file, line and reason.")

if not empty:
    st.subheader("Datasets")
    datasets = ws.store.datasets()
    st.dataframe(datasets, hide_index=True, width="stretch")

    tasks = ws.store.task_counts()
    roles = ws.store.role_counts()
    left, right = st.columns(2)
    with left:
        st.plotly_chart(charts.count_bars(datasets, "name", "instructions", "Instructions per dataset"),
                        key="home_chart_datasets")
        st.plotly_chart(charts.count_bars(tasks, "task", "instructions", "Instructions per task"),
                        key="home_chart_tasks")
    with right:
        st.text("Responses per role")
        st.dataframe(roles, hide_index=True, width="stretch")
        with st.expander("Instructions per task (table)"):
            st.dataframe(tasks, hide_index=True, width="stretch")
