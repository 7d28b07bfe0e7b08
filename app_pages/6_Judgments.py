"""Judgments: how far to trust each judge (DESIGN.md §6). First a flag: does the judge beat chance
on the user's own labels (AUC / Kendall τ intervals, issue 12)? Then score histograms per judge,
rubric and role; parse failures; order-flip rate; precision/recall/agreement/AUC/Kendall τ against
human labels at a threshold, with intervals; the samples in any score bin; the samples worth
labeling next, and a link that opens them in the review queue."""

import math

import pandas as pd
import streamlit as st

import ui
from core import charts
from core.calibration import parse_failure_rate
from core.judge import RUBRICS
from core.judge import scale_of as judge_scale_of
from core.review_queue import QueueSource

st.set_page_config(page_title="Judgments · Winnow", page_icon="🌾", layout="wide")

ws = ui.workspace()
st.title("Judgments")

PAGE_SIZE = 50
DECISIONS = {"accept": "Accept", "reject": "Reject"}
QUEUE_SIZE = 20  # the judge queue's default size (core.review_queue.DEFAULT_SIZE)
# How the trust flag shows: a judge no better (or worse) than chance is a warning, not a footnote.
TRUST_FLAG = {"at_chance": st.warning, "inverted": st.warning, "unknown": st.info, "better": st.success}
TRUST_ICON = {"at_chance": ":material/warning:", "inverted": ":material/warning:", "unknown": ":material/help:",
              "better": ":material/check_circle:"}

judges = ws.judges()
if judges.empty:
    st.info("No judgments yet. Start a judge job on the Jobs page; its verdicts appear here as they are ingested.")
    ui.jobs_link("judge", "Start a judge job")
    st.stop()


# --------------------------------------------------------------------------------------------
# Which judge: in the main area, where model and rubric names show in full (the sidebar cut them)
# --------------------------------------------------------------------------------------------


def rubric_description(name: str) -> str:
    """What a stored rubric name means ("zephyr_aspects.honesty": one aspect of zephyr_aspects)."""
    base, _, aspect = name.partition(".")
    definition = RUBRICS.get(name) or RUBRICS.get(base)
    if definition is None:
        return ""
    return f"{definition.description} (aspect: {aspect.replace('_', ' ')})" if aspect else definition.description


options = ws.filter_options()
judge_models = list(dict.fromkeys(judges["judge_model"]))
pick_model, pick_rubric = st.columns([1, 2])
judge_model = pick_model.selectbox("Judge model", judge_models, key="judgments_model", format_func=ui.model_label)
mine = judges[judges["judge_model"] == judge_model]
rubrics = mine["rubric"].tolist()
if st.session_state.get("judgments_rubric") not in rubrics:  # another judge's rubric: start on this one's first
    st.session_state["judgments_rubric"] = rubrics[0]
rubric = pick_rubric.radio("Rubric", rubrics, key="judgments_rubric", horizontal=True)
st.caption(ui.md_escape(f"{judge_model} · {rubric}" + (f": {rubric_description(rubric)}"
                                                       if rubric_description(rubric) else "")))
with st.sidebar:
    st.header("Judge")
    roles = st.multiselect("Response roles", options["roles"], key="judgments_roles", placeholder="all roles",
                           help="Filters the histogram and the bin samples; calibration covers every target.")
    split = st.checkbox("Split the histogram by role", value=True, key="judgments_split")

row = mine[mine["rubric"] == rubric].iloc[0]
evidence = ws.judge_evidence(judge_model, rubric)

# Does this judge beat chance on the user's own labels? Said first, before any of its numbers
# (filled in once the calibration below has computed the AUC and τ it stands on).
trust_flag = st.empty()
population = evidence.population
scale = judge_scale_of(rubric, pd.to_numeric(population["score"], errors="coerce").dropna().tolist()
                       if not population.empty else [])
with st.sidebar:
    bin_width = st.selectbox("Score bin width", (0.25, 0.5, 1.0, 2.0), index=(0.25, 0.5, 1.0, 2.0).index(scale.bin_width),
                             key="judgments_bin")
scale_min, scale_max = scale.low, scale.high
if not scale.higher_is_better:
    st.caption("Listwise scores are ranks: 1 is best, so the threshold keeps scores at or below it.")

# --------------------------------------------------------------------------------------------
# Counts, parse failures, flip rate
# --------------------------------------------------------------------------------------------

failures = parse_failure_rate(evidence.n_failed, evidence.n_judgments)
pairwise = [r for r, k in zip(mine["rubric"], mine["kind"], strict=True) if k == "pairwise"]

cols = st.columns(5 if pairwise else 4)
cols[0].metric("Verdicts", f"{evidence.n_judgments:,}")
cols[1].metric("Judged targets", f"{int(row['targets']):,}")
cols[2].metric("Parse failures", f"{evidence.n_failed:,}",
               help="Verdicts that did not parse: stored with a NULL score and the parse error, never as 0.")
cols[2].caption(f"rate {ui.interval(failures)}" if failures.n else "")
cols[3].metric("Failed calls", f"{int(row['call_errors']):,}",
               help="Calls the backend could not answer (a prompt longer than the context, a server error): "
                    "a failure of the call, not of the judge's verdict, and counted apart.")
for name in pairwise[:1]:
    flips = ws.flip_rate(judge_model, name)
    cols[4].metric("Order-flip rate", f"{flips.value:.0%}" if flips.n else "—",
                   help="Pairs judged in both orders (A/B and B/A) whose verdict changed with the order.")
    cols[4].caption(f"{name}: {ui.interval(flips)}" if flips.n else f"{name}: no pair judged in both orders yet")

# --------------------------------------------------------------------------------------------
# Histogram (click a bar to list its samples)
# --------------------------------------------------------------------------------------------

lo, hi, step = scale.low, scale.high, scale.step
default_threshold = scale.default_threshold

threshold_key = f"judgments_threshold_{judge_model}_{rubric}"
threshold = st.slider("Threshold: keep score " + ("≥" if scale.higher_is_better else "≤"), lo, hi,
                      default_threshold, step, key=threshold_key)
calibration = evidence.calibrate(threshold)
trust = calibration.trust()  # threshold-free: the same AUC and τ at any threshold
with trust_flag:
    TRUST_FLAG[trust.status](ui.md_escape(trust.sentence()), icon=TRUST_ICON[trust.status])
st.info(ui.md_escape(calibration.sentence()))
# The labels that narrow the interval most are the unlabeled targets nearest the threshold: one
# link opens them in the review queue (one record at a time, save and next).
queue = ws.review_queue(judge_model, rubric, threshold, k=QUEUE_SIZE)
if queue.empty:
    st.caption("Every judged target with a parsed score has a label: nothing left to narrow the interval with.")
else:
    n_queue = len(queue)
    ui.review_link(QueueSource("judge", judge_model=judge_model, rubric=rubric, threshold=threshold),
                   f"Label the {n_queue} sample{'s' if n_queue != 1 else ''} that narrow this interval most")
flash = st.session_state.pop("judgments_flash", None)  # a label saved below, counted above
if flash:
    (st.success if flash["ok"] else st.error)(ui.md_escape(flash["message"]))

histogram = ws.judge_score_histogram(judge_model, rubric, bin_width, roles)
bins = charts.score_bins(histogram, bin_width, scale_min, scale_max)
chart_key = f"judgments_hist_{judge_model}_{rubric}_{bin_width}_{'-'.join(roles)}_{split}"
event = st.plotly_chart(charts.score_histogram(histogram, bin_width, threshold, scale_min, scale_max, split),
                        key=chart_key, on_select="rerun", selection_mode=("points", "box"))

# A bar selected in the chart opens its bin; only a *new* selection does, so the selectbox below
# can still choose another bin while the bar stays highlighted.
picked = charts.selected_bin(charts.selection_points(event), bins)
seen = (chart_key, picked)
if picked and seen != st.session_state.get("judgments_chart_seen"):
    st.session_state["judgments_bin_pick"] = picked
    st.session_state["judgments_bin_page"] = 0
st.session_state["judgments_chart_seen"] = seen

# --------------------------------------------------------------------------------------------
# Calibration against human labels
# --------------------------------------------------------------------------------------------

st.subheader("Against human labels")
m = st.columns(5)
m[0].metric("Labels", f"{calibration.n_labels:,}", help="Judged targets with a human accept/reject "
            "(on the response, or else on its instruction).")
for col, (label, p) in zip(m[1:], (("Precision", calibration.precision), ("Recall", calibration.recall),
                                    ("Agreement", calibration.agreement), ("Kept", calibration.kept)), strict=True):
    col.metric(label, f"{p.value:.2f}" if p.n else "—")
    col.caption(f"± {p.half_width:.2f} ({p.k}/{p.n})" if p.n else "no data")
tau = calibration.kendall
auc = calibration.auc
metrics = pd.DataFrame([
    {"metric": label, "value": None if p.value is None else round(p.value, 3), "95% interval":
     f"[{p.low:.2f}, {p.high:.2f}]" if p.n else "—", "k / n": f"{p.k} / {p.n}"}
    for label, p in (("precision (humans accept what it keeps)", calibration.precision),
                     ("recall (it keeps what humans accept)", calibration.recall),
                     ("agreement (keep/drop matches the human)", calibration.agreement),
                     ("kept share (of every judged target)", calibration.kept),
                     ("parse failures (of every verdict)", calibration.parse_failures))
] + [{"metric": "Kendall τ-b (score vs human label)",
      "value": None if math.isnan(tau.value) else round(tau.value, 3),
      "95% interval": "—" if math.isnan(tau.low) else f"[{tau.low:.2f}, {tau.high:.2f}] (bootstrap)",
      "k / n": f"n = {tau.n}"}]
   + [{"metric": "ROC AUC (an accepted target outscores a rejected one; 0.5 is chance)",
       "value": None if math.isnan(auc.value) else round(auc.value, 3),
       "95% interval": "—" if math.isnan(auc.low) else f"[{auc.low:.2f}, {auc.high:.2f}] (stratified bootstrap)",
       "k / n": f"{auc.n_accept} accept / {auc.n_reject} reject"}])
st.dataframe(metrics, hide_index=True, width="stretch", key="judgments_metrics")
if calibration.n_labels == 0:
    st.caption("Label some of the samples below (accept/reject) to measure precision and recall.")

sweep = evidence.sweep()
st.plotly_chart(charts.threshold_sweep(sweep, threshold), key="judgments_sweep")

# --------------------------------------------------------------------------------------------
# Reviewing samples: a form shared by the bin list and the review queue
# --------------------------------------------------------------------------------------------


def _review(target_id: str, key: str) -> None:
    decision = st.session_state.get(key)
    try:
        ws.review(target_id, decision, target_kind="response")
    except ValueError as exc:
        st.session_state["judgments_flash"] = {"ok": False, "message": str(exc)}
    else:
        st.session_state["judgments_flash"] = {"ok": True, "message": f"Saved: {decision}. The numbers above "
                                               "now count this label."}


def _open_in_explore(instruction_id: str) -> None:
    st.session_state["explore_selected"] = instruction_id


def sample_view(row: dict, key: str) -> None:
    """One judged response in full, as text, with its verdict and a way to label it."""
    left, right = st.columns(2)
    with left:
        ui.show_text(row.get("instruction"), "Instruction", height=200)
        if row.get("input"):
            ui.show_text(row["input"], "Input", height=160)
        ui.show_text(row.get("response"), f"Response ({row.get('role')})", height=300)
    with right:
        score = row.get("score")
        st.text(f"Score: {'unparsed' if score is None or score != score else f'{score:g}'}"
                + (f" · {int(row['n_verdicts'])} verdicts" if row.get("n_verdicts") else ""))
        if "raw" in row:
            ui.show_text(row.get("raw"), "Raw verdict (latest)", height=240, markdown=False)
        if row.get("parse_error"):
            ui.show_text(row["parse_error"], "Parse error", markdown=False)
        if row.get("target_kind", "response") == "response":
            decision_key = f"judgments_decision_{key}_{row['target_id']}"
            c1, c2 = st.columns(2)
            c1.radio("Label", list(DECISIONS), format_func=DECISIONS.get, horizontal=True, key=decision_key)
            c2.button("Save label", key=f"judgments_save_{key}_{row['target_id']}", on_click=_review,
                      args=(row["target_id"], decision_key))
        if row.get("instruction_id"):
            if st.button("Open in Explore", key=f"judgments_explore_{key}_{row['target_id']}",
                         on_click=_open_in_explore, args=(row["instruction_id"],)):
                st.switch_page("app_pages/2_Explore.py")


def pick_row(frame: pd.DataFrame, key: str, label: str) -> dict | None:
    texts = dict(zip(frame["target_id"], frame["instruction"].fillna(""), strict=True))
    choice = st.selectbox(label, [None, *frame["target_id"].tolist()], key=key,
                          format_func=lambda t: "choose one to read it in full" if t is None
                          else f"{t[:8]} · {ui.clip(texts.get(t, ''), 90)}")
    if choice is None:
        return None
    return frame[frame["target_id"] == choice].iloc[0].to_dict()


def table(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    out = frame[[c for c in columns if c in frame.columns]].copy()
    for c in ("instruction", "response", "raw", "parse_error"):
        if c in out.columns:
            out[c] = [ui.clip(v, 160) if isinstance(v, str) else "" for v in out[c]]
    return out


# --------------------------------------------------------------------------------------------
# The samples in one score bin
# --------------------------------------------------------------------------------------------

st.subheader("Samples in a score bin")


def _set_page(page: int) -> None:
    st.session_state["judgments_bin_page"] = max(0, page)


labels = list(bins)
if st.session_state.get("judgments_bin_pick") not in [None, *labels]:
    st.session_state["judgments_bin_pick"] = None
bin_label = st.selectbox("Score bin", [None, *labels], key="judgments_bin_pick", on_change=_set_page, args=(0,),
                         format_func=lambda b: "click a bar above, or choose here" if b is None else b)
if bin_label is not None:
    bin_start = bins[bin_label]
    in_bin = histogram[histogram["bin_start"].isna()] if bin_start is None else \
        histogram[histogram["bin_start"] == bin_start]
    count = int(in_bin["n"].sum())
    n_pages = max(1, math.ceil(count / PAGE_SIZE))
    page = min(max(int(st.session_state.get("judgments_bin_page", 0)), 0), n_pages - 1)
    samples = ws.judge_bin_samples(judge_model, rubric, bin_start, bin_width, roles, page, PAGE_SIZE)
    nav = st.columns([1, 2, 1])
    nav[0].button("← Previous", key="judgments_prev", disabled=page == 0, on_click=_set_page, args=(page - 1,))
    nav[1].text(f"Bin {bin_label}: {count:,} target{'s' if count != 1 else ''} · page {page + 1} of {n_pages}")
    nav[2].button("Next →", key="judgments_next", disabled=page >= n_pages - 1, on_click=_set_page,
                  args=(page + 1,))
    if samples.empty:
        st.text("No judged target in this bin.")
    else:
        st.dataframe(table(samples, ["role", "score", "n_verdicts", "instruction", "response", "raw", "parse_error"]),
                     hide_index=True, width="stretch", key=f"judgments_bin_table_{bin_label}_{page}")
        chosen = pick_row(samples, f"judgments_bin_sample_{bin_label}_{page}", "Read a sample")
        if chosen:
            sample_view(chosen, "bin")

# --------------------------------------------------------------------------------------------
# Review next: unlabeled samples nearest the threshold
# --------------------------------------------------------------------------------------------

st.subheader("Label next")
st.caption(f"Unlabeled targets nearest score {threshold:g}: a label on these narrows the precision interval most. "
           "Label them here one by one, or all in a row in the review queue (the link under the threshold).")
if queue.empty:
    st.text("No unlabeled target with a parsed score.")
else:
    st.dataframe(table(queue, ["role", "score", "distance", "kept", "instruction", "response"]),
                 hide_index=True, width="stretch", key="judgments_queue_table")
    chosen = pick_row(queue, f"judgments_queue_pick_{threshold}", "Label a sample")
    if chosen:
        sample_view(chosen, "queue")
