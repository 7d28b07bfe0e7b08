"""Train: fine-tune a base model on an sft snapshot as a training job (core.train.job), then follow
the run live: loss, learning rate and gradient norm per step, tokens/s and ETA; cancel, resume,
reuse a run's settings or a named preset. Everything shown is read from the job folders (through
core.train_views), so a reloaded browser finds the same runs."""

import streamlit as st

import ui
from core import charts, curate, jobs
from core import train_views as views
from core.train.config import PARALLEL_MODES, SCHEDULERS, TRAIN_DTYPES

st.set_page_config(page_title="Train · Winnow", page_icon="🌾", layout="wide")

ws = ui.workspace()
st.title("Train")
st.caption("Fine-tune a base model on an sft snapshot. The run is a job in its own process: it checkpoints, "
           "resumes where it stopped, and its model is registered (with its lineage) when it finishes.")
ui.reap_jobs()
get = st.session_state.get

METHODS = {"full": "Full fine-tune", "lora": "LoRA adapter"}
LENGTHS = {"epochs": "Epochs", "steps": "Fixed number of steps"}
FLOAT_FIELDS = {"learning_rate", "lora_dropout", "warmup_ratio", "weight_decay", "max_grad_norm"}
DEFAULT_STEPS = 100  # the steps field's value while the run is measured in epochs

snapshots = [s for s in curate.snapshots(ws) if s["kind"] == "sft"]
snapshot_by_name = {s["name"]: s for s in snapshots}
bases = views.trainable_models(ws)
runs = views.training_runs(ws)


# --------------------------------------------------------------------------------------------
# The form's state: plain session keys, so a run's settings or a preset can be put into them
# --------------------------------------------------------------------------------------------


def _put(settings: dict, threads=None, base: str | None = None, round_: int | None = None) -> None:
    """Write settings into the form's keys (before its widgets are drawn: only callbacks call it)."""
    for name, value in settings.items():
        if name == "max_steps":
            st.session_state["train_length"] = "steps" if value else "epochs"
            st.session_state["train_max_steps"] = int(value) if value else get("train_max_steps", DEFAULT_STEPS)
        else:
            st.session_state[f"train_{name}"] = float(value) if name in FLOAT_FIELDS and value is not None else value
    st.session_state["train_threads"] = threads
    if base in bases:
        st.session_state["train_base"] = base
    if round_ is not None:
        st.session_state["train_round"] = int(round_)


def _defaults() -> None:
    keys = {f"train_{k}": v for k, v in views.default_settings().items() if k != "max_steps"}
    keys |= {"train_length": "epochs", "train_max_steps": DEFAULT_STEPS, "train_threads": None, "train_round": 0,
             "train_name": ""}
    for key, value in keys.items():
        st.session_state.setdefault(key, value)
    if get("train_snapshot") not in snapshot_by_name and snapshots:
        st.session_state["train_snapshot"] = snapshots[0]["name"]
    if get("train_base") not in bases and bases:
        st.session_state["train_base"] = ui.default_model(bases)  # never the test model unless it is all


def _settings() -> dict:
    """The form's settings as TrainConfig fields (unchecked)."""
    out = {}
    for name in views.FORM_FIELDS:
        if name == "max_steps":
            out[name] = int(get("train_max_steps") or 0) if get("train_length") == "steps" else 0
        else:
            out[name] = get(f"train_{name}")
    return out


def _threads():
    value = get("train_threads")
    return None if value is None else int(value)


def _flash(ok: bool, message: str) -> None:
    st.session_state["train_flash"] = {"ok": ok, "message": message}


def _model_name() -> str:
    typed = (get("train_name") or "").strip()
    if typed:
        return typed
    if get("train_snapshot") and get("train_base"):
        return views.suggest_model_name(ws, get("train_base"), get("train_snapshot"))
    return ""


def _start() -> None:
    """Button callback: create the training job (nothing is written when a value is wrong), launch it."""
    try:
        job_id = views.start_run(ws, _model_name(), get("train_snapshot"), get("train_base"), _settings(),
                                 round=int(get("train_round") or 0), threads=_threads())
    except (ValueError, FileNotFoundError, TypeError) as exc:
        _flash(False, str(exc))
        return
    try:
        ui.launch_job(ws.job_dir(job_id))
    except (RuntimeError, OSError) as exc:
        _flash(False, f"Created {job_id} but could not start it: {exc}. Start it from the runs below.")
    else:
        _flash(True, f"Started {job_id}.")
    st.session_state["train_selected"] = job_id
    st.session_state["train_name"] = ""
    st.session_state["train_rerun"] = True


def _reuse(job_id: str) -> None:
    try:
        saved = views.run_settings(ws, job_id)
    except ValueError as exc:
        _flash(False, str(exc))
        return
    _put(saved["train"], saved["threads"], saved["base_model"], saved["round"])
    _flash(True, f"Loaded the settings of {job_id} (base model {saved['base_model']}).")
    st.session_state["train_rerun"] = True  # from the runs panel: redraw the form too


def _load_preset() -> None:
    try:
        preset = views.load_preset(ws, get("train_preset_pick") or "")
    except ValueError as exc:
        _flash(False, str(exc))
        return
    _put(preset["train"], preset["threads"])
    _flash(True, f"Loaded preset {get('train_preset_pick')}.")


def _save_preset() -> None:
    try:
        path = views.save_preset(ws, get("train_preset_name") or "", _settings(), _threads())
    except ValueError as exc:
        _flash(False, str(exc))
    else:
        _flash(True, f"Saved preset {path.stem} ({path}).")


# --------------------------------------------------------------------------------------------
# A new run
# --------------------------------------------------------------------------------------------


def _snapshot_label(name: str) -> str:
    s = snapshot_by_name[name]
    return f"{name} · {int(s['n_members']):,} samples · {s['content_hash'][:12]}"


def new_run_form() -> None:
    st.subheader("New run")
    with st.expander("Saved settings: reuse a run's or a preset"):
        c1, c2 = st.columns(2)
        with c1:
            if runs:
                st.selectbox("Reuse the settings of run", [r["id"] for r in runs], key="train_reuse_run",
                             format_func=lambda i: f"{i} · {next(r['model'] for r in runs if r['id'] == i)}")
                st.button("Load its settings", key="train_reuse", on_click=lambda: _reuse(get("train_reuse_run")),
                          help="Its base model and every setting below (not the snapshot or the name).")
            else:
                st.text("No earlier run yet: its settings could be reused here.")
        with c2:
            names = views.presets(ws)
            if names:
                st.selectbox("Preset", names, key="train_preset_pick")
                st.button("Load preset", key="train_preset_load", on_click=_load_preset)
            st.text_input("Save the settings below as preset", key="train_preset_name", placeholder="small-lora")
            st.button("Save preset", key="train_preset_save", on_click=_save_preset,
                      help=f"Saved under {views.presets_dir(ws)}; a preset of that name is replaced.")

    left, right = st.columns(2)
    with left:
        st.selectbox("Snapshot (sft)", list(snapshot_by_name), key="train_snapshot", format_func=_snapshot_label)
        snap = snapshot_by_name[get("train_snapshot")]
        st.caption(f"{int(snap['n_members']):,} samples over {int(snap['n_instructions']):,} instructions · "
                   f"content hash {snap['content_hash']}")
    with right:
        st.selectbox("Base model", bases, key="train_base", format_func=ui.model_label,
                     help="A built-in or workspace model with local weights (a LoRA adapter: merge it on "
                          "the Models page first).")
    suggested = views.suggest_model_name(ws, get("train_base"), get("train_snapshot"))
    st.text_input("New model name", key="train_name", placeholder=suggested,
                  help="Empty: the suggested name. The model is registered under it when the run finishes.")
    name = _model_name()
    name_problem = views.model_name_problem(ws, name)
    if name_problem:
        st.error(ui.md_escape(name_problem))
    else:
        st.caption(f"The model will be registered as {name}.")

    st.radio("Method", list(METHODS), format_func=METHODS.get, key="train_method", horizontal=True)
    lora = get("train_method") == "lora"
    steps_mode = get("train_length") == "steps"
    c = st.columns(4)
    c[0].radio("Length", list(LENGTHS), format_func=LENGTHS.get, key="train_length")
    c[1].number_input("Steps", min_value=1, step=10, key="train_max_steps", disabled=not steps_mode,
                      help="Optimizer steps; the data is cycled as needed.")
    c[1].number_input("Epochs", min_value=1, step=1, key="train_epochs", disabled=steps_mode,
                      help="Passes over the snapshot.")
    c[2].number_input("Batch size", min_value=1, step=1, key="train_batch_size",
                      help="Rows per micro-batch and process; a step is grad_accum micro-batches.")
    c[2].number_input("Learning rate", min_value=0.0, step=1e-5, format="%.2e", key="train_learning_rate")
    c[3].number_input("Max sequence length", min_value=1, step=128, key="train_max_seq_len",
                      help="Tokens per row; longer examples are cut.")
    c[3].checkbox("Packing", key="train_packing", help="Pack several examples into one sequence.")
    c = st.columns(4)
    c[0].number_input("LoRA r", min_value=1, step=4, key="train_lora_r", disabled=not lora)
    c[1].number_input("LoRA alpha", min_value=1, step=4, key="train_lora_alpha", disabled=not lora)
    c[2].selectbox("Scheduler", SCHEDULERS, key="train_lr_scheduler")
    c[3].number_input("Warmup steps", min_value=0, step=10, key="train_warmup_steps")
    c = st.columns(4)
    c[0].number_input("CPU threads (empty: torch decides)", min_value=1, value=None, step=1, key="train_threads",
                      help="On a shared CPU, fewer threads often train faster.")
    with st.expander("More settings"):
        c = st.columns(4)
        c[0].number_input("Gradient accumulation", min_value=1, step=1, key="train_grad_accum")
        c[1].number_input("LoRA dropout", min_value=0.0, step=0.05, key="train_lora_dropout", disabled=not lora)
        c[2].number_input("Warmup ratio", min_value=0.0, step=0.01, key="train_warmup_ratio",
                          help="A share of the steps (instead of warmup steps, not both).")
        c[3].number_input("Weight decay", min_value=0.0, step=0.01, key="train_weight_decay")
        c = st.columns(4)
        c[0].number_input("Max grad norm (0: no clipping)", min_value=0.0, step=0.1, key="train_max_grad_norm")
        c[1].number_input("Seed", min_value=0, step=1, key="train_seed")
        c[2].selectbox("dtype", TRAIN_DTYPES, key="train_dtype",
                       help="auto: bfloat16 autocast on a GPU that has it, float32 elsewhere.")
        c[3].checkbox("Gradient checkpointing", key="train_gradient_checkpointing")
        c = st.columns(4)
        c[0].number_input("Log every N steps", min_value=1, step=1, key="train_logging_steps")
        c[1].number_input("Checkpoint every N steps (0: at the end)", min_value=0, step=50, key="train_save_steps")
        c[2].number_input("Keep newest N checkpoints (empty: all)", min_value=1, value=None, step=1,
                          key="train_save_total_limit")
        c[3].number_input("Round", min_value=0, step=1, key="train_round", help="Recorded in the model's lineage.")
        c = st.columns(4)
        c[0].selectbox("Across processes", PARALLEL_MODES, key="train_parallel",
                       help="Under torchrun or accelerate launch: ddp keeps a whole copy per process, fsdp shards "
                            "weights, gradients and optimizer state (for models one device cannot hold).")

    problem = views.settings_problem(get("train_base"), _settings())
    if problem:
        st.error(ui.md_escape(problem))
    st.button("Start training", type="primary", key="train_start", on_click=_start,
              disabled=bool(problem or name_problem))


_defaults()
if not snapshots:
    st.info("No sft snapshot yet: make an sft snapshot on Curate first (the samples a run trains on), then "
            "come back here.")
    st.page_link("app_pages/8_Curate.py", label="Curate a snapshot", icon=":material/filter_alt:")
elif not bases:
    st.info("No model with local weights to start from: add a Hugging Face folder on the Models page.")
else:
    new_run_form()

flash = st.session_state.pop("train_flash", None)
if flash:
    (st.success if flash["ok"] else st.error)(ui.md_escape(flash["message"]))


# --------------------------------------------------------------------------------------------
# Runs (a fragment: while one runs, only this part reruns, every 2 seconds)
# --------------------------------------------------------------------------------------------


def _cancel(job_id: str) -> None:
    jobs.cancel(ws.job_dir(job_id))
    _flash(True, f"Asked {job_id} to stop after its current step (it saves a checkpoint).")


def _resume(job_id: str) -> None:
    try:
        ui.launch_job(ws.job_dir(job_id))
    except (RuntimeError, ValueError) as exc:
        _flash(False, str(exc))
    else:
        _flash(True, f"Resumed {job_id} from its last checkpoint.")
        st.session_state["train_rerun"] = True


def _fmt(value, spec: str = ",.4f") -> str:
    return "—" if value is None else format(value, spec)


def run_detail(info: dict) -> None:
    job_id, status = info["id"], info["status"]
    records = views.run_records(ws, job_id)
    n = views.run_numbers(info, records)
    total = max(n["total"], 1)
    st.progress(min(n["step"] / total, 1.0), text=f"step {n['step']:,} of {n['total']:,} · {status}")
    cols = st.columns([1, 1.5, 1, 1, 1, 1])  # "1,234 / 3,000" needs the room
    cols[0].metric("Status", status)
    cols[1].metric("Step", f"{n['step']:,} / {n['total']:,}")
    cols[2].metric("Loss", _fmt(n["loss"]), help=f"first logged loss: {_fmt(n['first_loss'])}")
    cols[3].metric("Tokens/s", _fmt(n["tokens_per_s"], ",.0f"))
    cols[4].metric("ETA", ui.duration(n["eta_s"]) if n["eta_s"] is not None else "—")
    cols[5].metric("Epoch", _fmt(n["epoch"], ".2f"))
    if n["eval_loss"] is not None:
        st.caption(f"Latest eval loss: {n['eval_loss']:.4f}")
    st.plotly_chart(charts.training_curves(views.curve_frame(records)), key=f"train_curves_{job_id}")
    if info["error"]:
        st.error(ui.md_escape(info["error"]))
    b1, b2, b3, _ = st.columns([1, 1, 1, 3])
    b1.button("Cancel", key=f"train_cancel_{job_id}", disabled=status != "running", on_click=_cancel, args=(job_id,))
    b2.button("Resume" if status != "pending" else "Start", key=f"train_resume_{job_id}",
              disabled=status not in views.RESUMABLE, on_click=_resume, args=(job_id,))
    b3.button("Reuse settings", key=f"train_reuse_{job_id}", on_click=_reuse, args=(job_id,),
              help="Load this run's base model and settings into the form above.")
    if info.get("registered"):
        st.page_link("app_pages/4_Models.py", label=f"Model {info['model']}: its lineage on the Models page",
                     icon=":material/smart_toy:", query_params={"model": info["model"]})
    elif status == "done":
        st.caption("Finished: the model is being registered.")
    with st.expander("Settings of this run"):
        saved = views.run_settings(ws, job_id)
        st.caption(f"Base model {saved['base_model']} · snapshot {saved['snapshot']} · round {saved['round']} · "
                   f"threads {saved['threads'] or 'torch default'}")
        st.dataframe(views.config_frame(saved["train"]), hide_index=True, key=f"train_settings_{job_id}")
    st.text("Log (latest lines)")
    ui.show_text(ws.job_log(job_id) or "(no log yet)", height=300, markdown=False)
    st.caption(f"Folder: {info['dir']}")


polling = views.any_live(runs)


@st.fragment(run_every=2 if polling else None)
def runs_panel() -> None:
    current = views.training_runs(ws)
    if st.session_state.pop("train_rerun", False) or views.any_live(current) != polling:
        st.rerun()  # redraw the whole page: start or stop the refresh, or show loaded settings in the form
    st.subheader("Runs")
    if not current:
        st.text("No training runs yet." + (" Start one above." if snapshots else ""))
        return
    frame = views.runs_frame(current)
    frame["ETA"] = [ui.duration(s) if s is not None else "" for s in frame["ETA"]]
    st.dataframe(frame, hide_index=True, width="stretch", key="train_runs_table",
                 column_config={"loss": st.column_config.NumberColumn("loss", format="%.4f"),
                                "tokens/s": st.column_config.NumberColumn("tokens/s", format="%.0f")})
    ids = [r["id"] for r in current]
    if get("train_selected") not in ids:
        # A link (the Models page's lineage) names the run; else the one running, else the newest.
        wanted = st.query_params.get("job")
        running = [r["id"] for r in current if r["status"] == "running"]
        st.session_state["train_selected"] = wanted if wanted in ids else (running or ids)[0]
    by_id = {r["id"]: r for r in current}
    selected = st.selectbox("Run", ids, key="train_selected",
                            format_func=lambda i: f"{i} · {by_id[i]['model']} · {by_id[i]['status']}")
    run_detail(by_id[selected])
    flash = st.session_state.pop("train_flash", None)
    if flash:
        (st.success if flash["ok"] else st.error)(ui.md_escape(flash["message"]))


runs_panel()
