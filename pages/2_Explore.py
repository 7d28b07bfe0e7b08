"""Explore: server-side filters, counts, a length histogram, one page of samples, and the sample
view with a human review form per response."""

import hashlib
import json
import math

import pandas as pd
import streamlit as st

import ui
from core import charts, curate
from core import curate_views as curate_views_mod
from core import reviews as reviews_mod
from core import tasks as tasks_mod
from core.store import EXPLORE_ORDERS
from core.workspace import ExploreFilter

st.set_page_config(page_title="Explore · Winnow", page_icon="🌾", layout="wide")

ws = ui.workspace()
st.title("Explore")

REVIEW_STATES = ("any", "accepted", "rejected", "unreviewed")
DECISIONS = {"none": "No decision", "accept": "Accept", "reject": "Reject"}
PAGE_COLUMNS = ["dataset", "task", "instruction", "n_chars", "n_responses", "roles", "review", "round",
                "method", "source_file", "source_line"]

# --------------------------------------------------------------------------------------------
# Filters (sidebar) → ExploreFilter
# --------------------------------------------------------------------------------------------

options = ws.filter_options()
with st.sidebar:
    st.header("Filters")
    datasets = st.multiselect("Datasets", options["datasets"], key="explore_datasets")
    tasks = st.multiselect("Tasks", options["tasks"], key="explore_tasks")
    roles = st.multiselect("Response roles", options["roles"], key="explore_roles",
                           help="Instructions with at least one response of these roles.")
    sources = st.multiselect("Source files", options["sources"], key="explore_sources")
    rounds = st.multiselect("Rounds", options["rounds"], key="explore_rounds")
    methods = st.multiselect("Methods", options["methods"], key="explore_methods")
    review = st.selectbox("Review state", REVIEW_STATES, key="explore_review",
                          help="The latest human decision on the instruction or any of its responses.")
    c1, c2 = st.columns(2)
    min_chars = c1.number_input("Min characters", min_value=0, value=None, step=50, key="explore_min_chars")
    max_chars = c2.number_input("Max characters", min_value=0, value=None, step=50, key="explore_max_chars")
    search = st.text_input("Search text", key="explore_search", help="Case-insensitive substring of the instruction or input.")
    search_responses = st.checkbox("Search responses too", key="explore_search_responses")
    st.header("View")
    order = st.selectbox("Order", list(EXPLORE_ORDERS), key="explore_order")
    page_size = st.selectbox("Page size", (25, 50, 100), index=1, key="explore_page_size")
    bin_width = st.selectbox("Histogram bin (characters)", (25, 50, 100, 250, 500, 1000), index=2, key="explore_bin")

try:
    selection = ExploreFilter(datasets=datasets, tasks=tasks, roles=roles, sources=sources, rounds=rounds,
                              methods=methods, min_chars=min_chars, max_chars=max_chars, search=search,
                              search_responses=search_responses, review=review)
except ValueError as exc:
    st.error(ui.md_escape(exc))
    st.stop()

# A new filter, order or page size starts again at the first page.
signature = hashlib.sha1(repr((selection, order, page_size)).encode()).hexdigest()[:10]
if st.session_state.get("explore_signature") != signature:
    st.session_state["explore_signature"] = signature
    st.session_state["explore_page"] = 0

# --------------------------------------------------------------------------------------------
# Counts and histogram
# --------------------------------------------------------------------------------------------

total = ws.explore_count(ExploreFilter())
count = ws.explore_count(selection)
n_pages = max(1, math.ceil(count / page_size))
page = min(max(int(st.session_state.get("explore_page", 0)), 0), n_pages - 1)
st.session_state["explore_page"] = page

c1, c2 = st.columns([1, 3])
with c1:
    st.metric("Matching instructions", f"{count:,}")
    st.caption(f"of {total:,} in the workspace")
with c2:
    st.plotly_chart(charts.length_histogram(ws.length_histogram(selection, bin_width), bin_width),
                    key="explore_histogram")

if total == 0:
    st.info("The workspace is empty.")
    st.page_link("pages/1_Import.py", label="Import a file", icon=":material/upload_file:")
    st.stop()

# --------------------------------------------------------------------------------------------
# One page of rows
# --------------------------------------------------------------------------------------------


def _turn_page(delta: int) -> None:
    st.session_state["explore_page"] = max(0, int(st.session_state.get("explore_page", 0)) + delta)


def _pick(pick_key: str) -> None:
    if st.session_state.get(pick_key):
        st.session_state["explore_selected"] = st.session_state[pick_key]


rows = ws.explore_page(selection, page, page_size, order)
ids = rows["id"].tolist()

nav = st.columns([1, 2, 1])
nav[0].button("← Previous", key="explore_prev", disabled=page == 0, on_click=_turn_page, args=(-1,))
nav[1].text(f"Page {page + 1} of {n_pages} · rows {page * page_size + 1 if count else 0}–"
            f"{page * page_size + len(rows)} of {count:,}")
nav[2].button("Next →", key="explore_next", disabled=page >= n_pages - 1, on_click=_turn_page, args=(1,))

if rows.empty:
    st.info("No instruction matches these filters.")
else:
    table_key = f"explore_table_{signature}_{page}"
    event = st.dataframe(rows[[c for c in PAGE_COLUMNS if c in rows.columns]], hide_index=True, width="stretch",
                         key=table_key, on_select="rerun", selection_mode="single-row")
    # A row selected in the table opens that sample; only a *new* selection does, so a later choice
    # in the selectbox below is not overridden by a row that is still highlighted.
    picked = list(event.selection.rows)
    seen = (table_key, picked[0]) if picked else None
    if seen != st.session_state.get("explore_table_seen"):
        st.session_state["explore_table_seen"] = seen
        if picked and picked[0] < len(ids):
            st.session_state["explore_selected"] = ids[picked[0]]
    texts = dict(zip(ids, rows["instruction"], strict=True))
    pick_key = f"explore_pick_{signature}_{page}"
    st.selectbox("Open sample", [None, *ids], key=pick_key, on_change=_pick, args=(pick_key,),
                 format_func=lambda i: "select a row above, or choose here" if i is None
                 else f"{i[:8]} · {ui.clip(texts.get(i, ''), 90)}")

# --------------------------------------------------------------------------------------------
# The sample view
# --------------------------------------------------------------------------------------------


def _save_review(target_id: str, kind: str, current_text: str | None) -> None:
    """Form callback: runs before the page renders, so the page shows the new state."""
    decision = st.session_state.get(f"explore_decision_{target_id}", "none")
    edited = st.session_state.get(f"explore_edit_{target_id}")
    note = st.session_state.get(f"explore_note_{target_id}")
    # Only a change to the text is an edit; the unchanged prefilled text is not.
    if edited is None or current_text is None or edited == current_text or not edited.strip():
        edited = None
    try:
        ws.review(target_id, None if decision == "none" else decision, edited, note, target_kind=kind)
    except ValueError as exc:
        st.session_state["explore_flash"] = {"target": target_id, "ok": False, "message": str(exc)}
    else:
        st.session_state["explore_flash"] = {"target": target_id, "ok": True}
        st.session_state[f"explore_note_{target_id}"] = ""
        st.session_state[f"explore_decision_{target_id}"] = "none"


def _flash(target_id: str, verdict: dict) -> None:
    flash = st.session_state.get("explore_flash")
    if not flash or flash["target"] != target_id:
        return
    del st.session_state["explore_flash"]  # shown once
    if flash["ok"]:
        st.success(f"Review saved. Now: {reviews_mod.describe_verdict(verdict)}.")
    else:
        st.error(ui.md_escape(flash["message"]))


def review_form(target_id: str, kind: str, current_text: str | None, verdict: dict) -> None:
    with st.form(key=f"explore_form_{target_id}", border=True):
        st.radio("Decision", list(DECISIONS), format_func=DECISIONS.get, horizontal=True,
                 key=f"explore_decision_{target_id}")
        if current_text is not None:
            st.text_area("Edited text (used on export when changed)", value=current_text, height=160,
                         key=f"explore_edit_{target_id}")
        st.text_input("Note", key=f"explore_note_{target_id}")
        st.form_submit_button("Save review", on_click=_save_review, args=(target_id, kind, current_text),
                              key=f"explore_save_{target_id}")
    _flash(target_id, verdict)


def lineage_frame(ins: dict) -> pd.DataFrame:
    fields = [("dataset", ins.get("dataset")), ("source file", ins.get("source_file")),
              ("source line", ins.get("source_line")), ("round", ins.get("round")), ("method", ins.get("method")),
              ("model", ins.get("model")), ("parent", ins.get("parent_id")), ("task", ins.get("task")),
              ("category", ins.get("category")), ("created at", ins.get("created_at")), ("id", ins.get("id"))]
    return pd.DataFrame({"field": [f for f, _ in fields],
                         "value": ["—" if v is None else str(v) for _, v in fields]})


def history_text(history) -> str:
    turns = json.loads(history) if isinstance(history, str) else history
    return "\n\n".join(f"[{t.get('role', '?')}]\n{t.get('content', '')}" for t in turns)


def render_task(instruction_id: str) -> None:
    """The instruction's current task, where it came from, and its label history."""
    st.subheader("Task")
    info = tasks_mod.task_of(ws, instruction_id)
    if not info or not info.get("task"):
        st.text("No task label yet: import one with the data, or label tasks with the task classifier.")
        return
    confidence = info.get("confidence")
    st.text(f"Current task: {info['task']}" + (f" ({info['family']})" if info.get("family") else "")
            + f" · source: {info.get('source') or '—'}"
            + (f" · confidence {confidence:.2f}" if isinstance(confidence, int | float) else "")
            + f" · imported label: {info.get('imported') or '—'}")
    history = curate_views_mod.label_history_table(info)
    if not history.empty:
        st.dataframe(history, hide_index=True, width="stretch", key="explore_labels")


def render_curation(ins: dict, role_of: dict, judgments: list[dict]) -> None:
    """Labels, judge scores, difficulty, and in or out of a chosen snapshot (why), for one sample."""
    render_task(ins["id"])

    st.subheader("Judge scores")
    scores = curate_views_mod.judge_scores_table(judgments, role_of)
    if scores.empty:
        st.text("No judge scores yet: run a pointwise judge job on the Jobs page.")
    else:
        st.dataframe(scores, hide_index=True, width="stretch", key="explore_judge_scores")

    st.subheader("Difficulty (MFD, IFD)")
    difficulty = curate_views_mod.sample_difficulty(ws, ins["id"])
    if difficulty.empty:
        st.text("No MFD or IFD computed yet: run the difficulty chain (teacher and student answers, one judge "
                "on both) or an ifd job; the Difficulty & tasks page shows them.")
    else:
        st.dataframe(difficulty, hide_index=True, width="stretch", key="explore_difficulty")

    st.subheader("In a snapshot?")
    names = [r["name"] for r in curate.snapshots(ws)]
    if not names:
        st.text("No snapshots yet: build a spec and save it on the Curate page.")
        st.page_link("pages/8_Curate.py", label="Curate", icon=":material/filter_alt:")
        return
    if st.session_state.get("explore_snapshot") not in names:
        st.session_state.pop("explore_snapshot", None)
    chosen = st.selectbox("Snapshot", [None, *names], key="explore_snapshot",
                          format_func=lambda n: "choose a snapshot" if n is None else n)
    if chosen is None:
        return
    try:
        why = curate.explain(ws, chosen, ins["id"])
    except ValueError as exc:
        st.warning(ui.md_escape(exc))
        return
    st.text(f"Snapshot {chosen}: {curate_views_mod.explain_sentence(why)}")
    st.dataframe(curate_views_mod.explain_table(why, role_of), hide_index=True, width="stretch", key="explore_why")


def render_sample(sample: dict) -> None:
    ins, responses, reviews = sample["instruction"], sample["responses"], sample["reviews"]
    st.divider()
    head, close = st.columns([5, 1])
    head.subheader("Sample")
    close.button("Close", key="explore_close", on_click=lambda: st.session_state.pop("explore_selected", None))

    left, right = st.columns([3, 2])
    with left:
        ui.show_text(ins["text"], "Instruction")
        if ins.get("input"):
            ui.show_text(ins["input"], "Input")
        if ins.get("system"):
            ui.show_text(ins["system"], "System prompt")
        if ins.get("history"):
            ui.show_text(history_text(ins["history"]), "Earlier turns")
    with right:
        st.text("Lineage")
        lineage = lineage_frame(ins)
        st.dataframe(lineage, hide_index=True, width="stretch", height=35 * (len(lineage) + 1) + 3,
                     key="explore_lineage")

    marks: dict[str, list[str]] = {}
    for p in sample["pairs"]:
        marks.setdefault(p["chosen_id"], []).append("chosen")
        marks.setdefault(p["rejected_id"], []).append("rejected")

    st.subheader(f"Responses ({len(responses)})")
    if not responses:
        st.text("This instruction has no response yet. Review the instruction itself:")
        verdict = reviews_mod.current_verdict(reviews, ins["id"])
        st.text(f"Verdict: {reviews_mod.describe_verdict(verdict)}")
        review_form(ins["id"], "instruction", None, verdict)
    per_row = 3
    for start in range(0, len(responses), per_row):
        chunk = responses[start:start + per_row]
        for col, r in zip(st.columns(len(chunk)), chunk, strict=True):
            with col:
                verdict = reviews_mod.current_verdict(reviews, r["id"])
                mark = " · ".join(sorted(set(marks.get(r["id"], []))))
                st.text(f"{r['role']}" + (f" · {mark.upper()}" if mark else ""))
                st.text(f"model: {r.get('model') or '—'} · {r['n_chars']:,} chars · round {r['round']} · {r['method']}")
                ui.show_text(r["text"], height=320)
                if verdict["edited_text"]:
                    ui.show_text(verdict["edited_text"], "Latest edit (exported instead of the text above)", height=240)
                st.text(f"Verdict: {reviews_mod.describe_verdict(verdict)}")
                review_form(r["id"], "response", verdict["edited_text"] or r["text"], verdict)

    if responses:
        with st.expander("Review the instruction itself"):
            verdict = reviews_mod.current_verdict(reviews, ins["id"])
            st.text(f"Verdict: {reviews_mod.describe_verdict(verdict)}")
            review_form(ins["id"], "instruction", None, verdict)

    role_of = {r["id"]: r["role"] for r in responses} | {ins["id"]: "instruction"}
    st.subheader("Review history")
    if reviews:
        st.dataframe(pd.DataFrame([{
            "created_at": v["created_at"], "target": role_of.get(v["target_id"], v["target_id"]),
            "decision": v["decision"] or "", "edit": ui.clip(v["edited_text"], 120) if v["edited_text"] else "",
            "note": v["note"] or "", "reviewer": v["reviewer"] or "",
        } for v in reviews]), hide_index=True, width="stretch", key="explore_reviews")
    else:
        st.text("No human review yet.")

    render_curation(ins, role_of, sample["judgments"])

    if sample["judgments"]:
        st.subheader("Judgments")
        st.dataframe(pd.DataFrame([{
            "target": role_of.get(j["target_id"], j["target_id"]), "judge": j["judge_model"], "rubric": j["rubric"],
            "kind": j["kind"], "score": j["score"], "of": j["scale_max"], "parse error": j["parse_error"] or "",
            "rationale": ui.clip(j["rationale"], 200) if j["rationale"] else "", "raw": ui.clip(j["raw"], 200),
        } for j in sample["judgments"]]), hide_index=True, width="stretch", key="explore_judgments")


selected = st.session_state.get("explore_selected")
if selected:
    sample = ws.sample(selected)
    if sample is None:
        st.warning("That sample is no longer in the workspace.")
        st.session_state.pop("explore_selected", None)
    else:
        render_sample(sample)
