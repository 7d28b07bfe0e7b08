"""Jobs: start generate and judge jobs (each runs in its own process), follow their progress live,
read their logs, cancel, resume, and ingest what they wrote."""

from pathlib import Path

import streamlit as st

import ui
from core import jobs
from core.judge import RUBRICS
from core.workspace import ExploreFilter

st.set_page_config(page_title="Jobs · Winnow", page_icon="🌾", layout="wide")

ws = ui.workspace()
st.title("Jobs")
ui.reap_jobs()

POINTWISE = [name for name, r in RUBRICS.items() if r.kind == "pointwise"]
RESUMABLE = ("stopped", "failed", "cancelled", "pending")

options = ws.filter_options()
model_names = [s.name for s in ws.models()]

# --------------------------------------------------------------------------------------------
# Starting jobs
# --------------------------------------------------------------------------------------------


def _flash(ok: bool, message: str) -> None:
    st.session_state["jobs_flash"] = {"ok": ok, "message": message}


def _start(kind: str) -> None:
    """Form callback: snapshot the selection into a job folder, then launch it."""
    get = st.session_state.get
    prefix = f"jobs_{kind}"
    selection = ExploreFilter(datasets=get(f"{prefix}_datasets") or [], tasks=get(f"{prefix}_tasks") or [])
    try:
        spec = ws.model(get(f"{prefix}_model"))
        seed = get(f"{prefix}_seed")
        params = {"temperature": float(get(f"{prefix}_temperature")), "max_tokens": int(get(f"{prefix}_max_tokens"))}
        if seed is not None:
            params["seed"] = int(seed)
        common = dict(selection=selection, limit=int(get(f"{prefix}_limit")), round=int(get(f"{prefix}_round")),
                      shard_size=int(get(f"{prefix}_shard_size")))
        if kind == "generate":
            params["n"] = int(get("jobs_generate_n"))
            job_id = ws.create_generate_job(spec.to_dict(), (get("jobs_generate_role") or "").strip(),
                                            params=params, **common)
        else:
            roles = get("jobs_judge_roles") or []
            if not roles:
                raise ValueError("choose at least one response role to judge")
            job_id = ws.create_judge_job(spec.to_dict(), get("jobs_judge_rubric"), roles, params=params, **common)
        ui.launch_job(ws.job_dir(job_id))
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        _flash(False, str(exc))
    else:
        st.session_state["jobs_selected"] = job_id
        _flash(True, f"Started {job_id}.")


def _shared_fields(prefix: str, default_limit: int, default_tokens: int, default_temperature: float) -> None:
    c1, c2 = st.columns(2)
    c1.multiselect("Datasets", options["datasets"], key=f"{prefix}_datasets", placeholder="all datasets")
    c2.multiselect("Tasks", options["tasks"], key=f"{prefix}_tasks", placeholder="all tasks")
    c1, c2, c3 = st.columns(3)
    c1.number_input("Limit (items)", min_value=1, value=default_limit, step=100, key=f"{prefix}_limit")
    c2.number_input("Max tokens", min_value=1, max_value=32768, value=default_tokens, step=64,
                    key=f"{prefix}_max_tokens")
    c3.number_input("Temperature", min_value=0.0, max_value=2.0, value=default_temperature, step=0.1,
                    key=f"{prefix}_temperature")
    c1, c2, c3 = st.columns(3)
    c1.number_input("Seed (optional)", min_value=0, value=None, step=1, key=f"{prefix}_seed")
    c2.number_input("Round", min_value=0, value=0, step=1, key=f"{prefix}_round")
    c3.number_input("Shard size", min_value=1, max_value=4096, value=16, step=8, key=f"{prefix}_shard_size",
                    help="Items per output shard: a killed job redoes at most one shard.")


if not options["datasets"]:
    st.info("The workspace is empty: import prompts or pairs first.")
    st.page_link("pages/1_Import.py", label="Import a file", icon=":material/upload_file:")

gen_tab, judge_tab = st.tabs(["Generate", "Judge"])
with gen_tab, st.form("jobs_generate_form", border=True):
    st.caption("A model answers the selected instructions; its answers become responses of the role you name.")
    c1, c2, c3 = st.columns(3)
    c1.selectbox("Model", model_names, key="jobs_generate_model")
    c2.text_input("Response role", value="student", key="jobs_generate_role",
                  help="Lowercase letters, digits and '_' (teacher, student, ...).")
    c3.number_input("Samples per instruction (n)", min_value=1, max_value=256, value=1, key="jobs_generate_n")
    _shared_fields("jobs_generate", 1000, 256, 0.7)
    st.form_submit_button("Start generate job", type="primary", on_click=_start, args=("generate",),
                          key="jobs_generate_start")

with judge_tab, st.form("jobs_judge_form", border=True):
    st.caption("A judge model scores the selected responses on a pointwise rubric; verdicts that do not "
               "parse are kept with their raw text and counted.")
    c1, c2, c3 = st.columns(3)
    c1.selectbox("Judge model", model_names, key="jobs_judge_model")
    c2.selectbox("Rubric", POINTWISE, key="jobs_judge_rubric",
                 format_func=lambda r: f"{r} — {RUBRICS[r].description}")
    c3.multiselect("Response roles", options["roles"], default=options["roles"][:1], key="jobs_judge_roles")
    _shared_fields("jobs_judge", 1000, 256, 0.0)
    st.form_submit_button("Start judge job", type="primary", on_click=_start, args=("judge",),
                          key="jobs_judge_start")

flash = st.session_state.pop("jobs_flash", None)
if flash:
    (st.success if flash["ok"] else st.error)(ui.md_escape(flash["message"]))

# --------------------------------------------------------------------------------------------
# The jobs (a fragment: while one runs, only this part reruns, every 2 seconds)
# --------------------------------------------------------------------------------------------


def _cancel(job_id: str) -> None:
    jobs.cancel(ws.job_dir(job_id))
    _flash(True, f"Asked {job_id} to stop after its current shard.")


def _resume(job_id: str) -> None:
    try:
        ui.launch_job(ws.job_dir(job_id))
    except (RuntimeError, ValueError) as exc:
        _flash(False, str(exc))
    else:
        _flash(True, f"Resumed {job_id}: finished shards are kept, the rest run now.")
        st.session_state["jobs_restart_polling"] = True


def _ingest(job_id: str) -> None:
    try:
        result = ws.ingest_job(job_id)
    except Exception as exc:  # a corrupt shard: say which, keep the page up
        _flash(False, f"{type(exc).__name__}: {exc}")
    else:
        _flash(True, f"Ingested {job_id}: {result['new_now']:,} new rows now, {result['new']:,} in all "
                     f"from {result['shards']:,} shards.")


def job_detail(info: dict) -> None:
    job_id, status = info["id"], info["status"]
    total = max(int(info["total"] or 0), 1)
    st.progress(min(info["done"] / total, 1.0), text=f"{info['done']:,} of {info['total']:,} items · {status}")
    ingested = ws.job_ingest_counts(job_id)
    n_shards = info["shards_done"]
    cols = st.columns(5)
    cols[0].metric("Status", status)
    cols[1].metric("Tokens/s", f"{info['tokens_per_s']:,.1f}" if info["tokens_per_s"] else "—")
    cols[2].metric("ETA", ui.duration(info["eta_s"]) if status == "running" else "—")
    cols[3].metric("Tokens", f"{int(info['tokens'] or 0):,}")
    cols[4].metric("Shards ingested", f"{int(ingested['shards']):,} / {n_shards:,}",
                   help=f"{int(ingested['new']):,} new rows in the catalog from this job")
    if info["error"]:
        st.error(ui.md_escape(info["error"]))
    b1, b2, b3, _ = st.columns([1, 1, 1, 3])
    b1.button("Cancel", key=f"jobs_cancel_{job_id}", disabled=status != "running", on_click=_cancel, args=(job_id,))
    b2.button("Resume" if status != "pending" else "Start", key=f"jobs_resume_{job_id}",
              disabled=status not in RESUMABLE, on_click=_resume, args=(job_id,))
    b3.button("Ingest now", key=f"jobs_ingest_{job_id}", disabled=n_shards <= int(ingested["shards"]),
              on_click=_ingest, args=(job_id,))
    st.text("Log (latest lines)")
    ui.show_text(ws.job_log(job_id) or "(no log yet)", height=300)
    st.caption(f"Folder: {info['dir']}")


def with_shards(infos: list[dict]) -> list[dict]:
    """Each job's summary plus its finished and ingested shard counts."""
    return [j | {"shards_done": len(jobs.finished_shards(Path(j["dir"]))),
                 "shards_ingested": int(ws.job_ingest_counts(j["id"])["shards"])} for j in infos]


def live(infos: list[dict]) -> bool:
    """Something will change by itself: a job runs, or the owner has finished shards to ingest."""
    return any(j["status"] == "running" or (j["status"] == "done" and j["shards_done"] > j["shards_ingested"])
               for j in infos)


polling = live(with_shards(ws.jobs()))


@st.fragment(run_every=2 if polling else None)
def jobs_panel() -> None:
    infos = with_shards(ws.jobs())
    running = [j for j in infos if j["status"] == "running"]
    if st.session_state.pop("jobs_restart_polling", False) or live(infos) != polling:
        st.rerun()  # start or stop the 2-second refresh (the whole page reruns once)
    st.subheader("Jobs")
    if not infos:
        st.text("No jobs yet.")
        return
    for j in running:
        total = max(int(j["total"] or 0), 1)
        st.progress(min(j["done"] / total, 1.0),
                    text=f"{j['id']} · {j['done']:,}/{j['total']:,} · "
                         f"{j['tokens_per_s'] or 0:,.1f} tokens/s · ETA {ui.duration(j['eta_s'])}")
    st.dataframe(ui.jobs_frame(infos), hide_index=True, width="stretch", key="jobs_table",
                 column_config={"progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0,
                                                                            format="percent")})
    ids = [j["id"] for j in infos]
    if st.session_state.get("jobs_selected") not in ids:
        st.session_state["jobs_selected"] = (running or infos)[0]["id"]
    by_id = {j["id"]: j for j in infos}
    selected = st.selectbox("Job", ids, key="jobs_selected",
                            format_func=lambda i: f"{i} · {by_id[i]['model']}")
    job_detail(by_id[selected])
    flash = st.session_state.pop("jobs_flash", None)
    if flash:
        (st.success if flash["ok"] else st.error)(ui.md_escape(flash["message"]))


jobs_panel()
