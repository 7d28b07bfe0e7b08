"""Jobs: start a job of any registered stage (generate, judge, ifd, …: one form each, built from
the stage's params), follow their progress live, read their logs, cancel, resume, and ingest what
they wrote. Each job runs in its own process."""


import streamlit as st

import ui
from core import context_check, jobs, judge, stages
from core.workspace import TEST_MODELS, ExploreFilter

st.set_page_config(page_title="Jobs · Winnow", page_icon="🌾", layout="wide")

ws = ui.workspace()
st.title("Jobs")
ui.reap_jobs()

RESUMABLE = ("stopped", "failed", "cancelled", "pending")
ABBREVIATIONS = {"ifd": "IFD"}  # stage names that are acronyms, as their tab shows them

options = ws.filter_options()
# The random test model is listed last (and says what it is): never the one a form starts on.
model_names = sorted((s.name for s in ws.models()), key=lambda name: name in TEST_MODELS)
STAGES = stages.all_stages()
TAB_LABELS = {s.name: ABBREVIATIONS.get(s.name, s.name.replace("_", " ").capitalize()) for s in STAGES}


def _rubric_option(name: str) -> str:
    """A rubric as the judge form lists it: its name and what it does, so the choice reads in full."""
    rubric = judge.RUBRICS.get(name)
    return f"{name} · {rubric.description}" if rubric is not None and rubric.description else name


# Choice parameters whose options need a description beside the bare name.
CHOICE_DESCRIPTIONS = {"rubric": _rubric_option}

# --------------------------------------------------------------------------------------------
# Starting jobs: one form per registered stage, built from its params (core.stages)
# --------------------------------------------------------------------------------------------


def _flash(ok: bool, message: str) -> None:
    st.session_state["jobs_flash"] = {"ok": ok, "message": message}


JOB_ERRORS = (ValueError, FileNotFoundError, RuntimeError, TypeError)
PENDING_KEY = "jobs_too_long"  # a job held back: some prompts do not fit the model's context


def _start(name: str) -> None:
    """Form callback: count the prompts that do not fit the model's context (core.context_check);
    if there are any, hold the job back and ask (PENDING_KEY); else create and launch it."""
    get = st.session_state.get
    prefix = f"jobs_{name}"
    stage = stages.get(name)
    selection = ExploreFilter(datasets=get(f"{prefix}_datasets") or [], tasks=get(f"{prefix}_tasks") or [])
    params = {}
    for f in stage.fields():
        value = get(f"{prefix}_{f.name}")
        if isinstance(value, str):
            value = value.strip()
        if f.kind == "int" and value is not None:
            value = int(value)
        params[f.name] = value
    job = {"stage": name, "params": params, "selection": selection, "limit": int(get(f"{prefix}_limit")),
           "round": int(get(f"{prefix}_round")), "shard_size": int(get(f"{prefix}_shard_size"))}
    st.session_state.pop(PENDING_KEY, None)
    try:
        check = context_check.check_job(ws, name, params, selection, job["limit"])
    except JOB_ERRORS as exc:
        _flash(False, str(exc))
        return
    if check is not None and check.too_long:
        st.session_state[PENDING_KEY] = job | {"check": check}
        return
    _create(job)


def _create(job: dict, drop_too_long: bool = False) -> None:
    """Snapshot the selection into a job folder, then launch it (held-back jobs: from the buttons)."""
    st.session_state.pop(PENDING_KEY, None)
    try:
        selection = context_check.without_too_long(job["selection"], job["check"]) if drop_too_long \
            else job["selection"]
        job_id = ws.create_job(job["stage"], job["params"], selection, limit=job["limit"], round=job["round"],
                               shard_size=job["shard_size"])
        ui.launch_job(ws.job_dir(job_id))
    except JOB_ERRORS as exc:
        _flash(False, str(exc))
    else:
        st.session_state["jobs_selected"] = job_id
        _flash(True, f"Started {job_id}.")


def too_long_prompt(stage_name: str) -> None:
    """The held-back job of this stage: how many prompts do not fit, one example, and the choice."""
    job = st.session_state.get(PENDING_KEY)
    if not job or job["stage"] != stage_name:
        return
    check = job["check"]
    st.warning(ui.md_escape(check.sentence()))
    prefix = f"jobs_{stage_name}_too_long"
    left, middle, right = st.columns(3)
    if check.id_kind == "instruction":
        left.button(f"Drop the {check.too_long} and start", key=f"{prefix}_drop", type="primary",
                    on_click=_create, args=(job, True), disabled=not check.kept_ids,
                    help="Start the job on the prompts that fit; the others stay in the workspace, unanswered.")
    middle.button("Start with them", key=f"{prefix}_keep", on_click=_create, args=(job,),
                  help="They are recorded as too long (counted apart from failures) and not answered.")
    right.button("Cancel", key=f"{prefix}_cancel", on_click=lambda: st.session_state.pop(PENDING_KEY, None))


def _field(container, f, key: str) -> None:
    """One stage parameter as a widget; the kind decides which."""
    label, help = f.label, f.help or None
    if f.kind == "model":
        container.selectbox(label, model_names, index=model_names.index(ui.default_model(model_names)),
                            key=key, help=help, format_func=ui.model_label)
    elif f.kind == "roles":
        container.multiselect(label, options["roles"], default=options["roles"][:1], key=key, help=help)
    elif f.kind == "choice":
        choices = list(f.choices)
        describe = CHOICE_DESCRIPTIONS.get(f.name)
        container.selectbox(label, choices, index=choices.index(f.default) if f.default in choices else 0,
                            key=key, help=help, format_func=describe or str)
    elif f.kind == "bool":
        container.checkbox(label, value=bool(f.default), key=key, help=help)
    elif f.kind in ("int", "float"):
        number = int if f.kind == "int" else float
        container.number_input(label, min_value=None if f.minimum is None else number(f.minimum),
                               max_value=None if f.maximum is None else number(f.maximum),
                               value=None if f.default is None else number(f.default),
                               step=1 if f.kind == "int" else 0.1, key=key, help=help)
    else:
        default = {"role": "student"}.get(f.kind, "") if f.default is None else str(f.default)
        container.text_input(label, value=default, key=key, help=help)


def stage_form(stage) -> None:
    prefix = f"jobs_{stage.name}"
    with st.form(f"{prefix}_form", border=True):
        st.caption(stage.help[:1].upper() + stage.help[1:] + ".")
        fields = stage.fields()
        # A described choice (the judge's rubric) gets the full width, so every option reads in full.
        for f in fields:
            if f.name in CHOICE_DESCRIPTIONS and f.kind == "choice":
                _field(st, f, f"{prefix}_{f.name}")
        columns = st.columns(3)
        rest = [f for f in fields if not (f.name in CHOICE_DESCRIPTIONS and f.kind == "choice")]
        for i, f in enumerate(rest):
            _field(columns[i % 3], f, f"{prefix}_{f.name}")
        c1, c2 = st.columns(2)
        c1.multiselect("Datasets", options["datasets"], key=f"{prefix}_datasets", placeholder="all datasets")
        c2.multiselect("Tasks", options["tasks"], key=f"{prefix}_tasks", placeholder="all tasks")
        c1, c2, c3 = st.columns(3)
        c1.number_input("Limit (items)", min_value=1, value=1000, step=100, key=f"{prefix}_limit")
        c2.number_input("Round", min_value=0, value=0, step=1, key=f"{prefix}_round")
        c3.number_input("Shard size", min_value=1, max_value=4096, value=16, step=8, key=f"{prefix}_shard_size",
                        help="Items per output shard: a killed job redoes at most one shard.")
        st.form_submit_button(f"Start {stage.name} job", type="primary", on_click=_start, args=(stage.name,),
                              key=f"{prefix}_start")
    too_long_prompt(stage.name)


if not options["datasets"]:
    st.info("The workspace is empty: import prompts or pairs first.")
    st.page_link("app_pages/1_Import.py", label="Import a file", icon=":material/upload_file:")

# A link names the tab it opens with ?stage=<stage> (ui.jobs_link): that tab is the default. The
# default is part of the tabs' identity, so a link to another stage opens afresh on its tab, while
# a tab the user opens afterwards stays open. (The URL is not rewritten on a tab change: Streamlit
# 1.67 applies a query-string change made during a tab's rerun one rerun late.)
stage_tabs = st.tabs(list(TAB_LABELS.values()), default=TAB_LABELS.get(st.query_params.get("stage", "")),
                     key="jobs_stage_tab", on_change="rerun")
for tab, stage in zip(stage_tabs, STAGES, strict=True):
    with tab:
        stage_form(stage)

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
    ui.show_text(ws.job_log(job_id) or "(no log yet)", height=300, markdown=False)
    st.caption(f"Folder: {info['dir']}")


def live(infos: list[dict]) -> bool:
    return any(j["live"] for j in infos)


polling = live(ws.jobs())


@st.fragment(run_every=2 if polling else None)
def jobs_panel() -> None:
    infos = ws.jobs()
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
