"""Review: one record at a time from a filter, a snapshot or a judge's suggestions (issue 12).

The queue's source comes from the link (?source=…, core.review_queue.QueueSource) or, without
one, from the chooser at the top. The queue is a frozen list of targets, built once per source
and kept by the server process, so its progress counts over a fixed set; a target is done when it
has a stored decision, so the count survives a reload. Everything a reviewer needs is above the
fold at 1400×900: the progress, the action buttons (each with a keyboard shortcut), the
instruction and every response side by side. Each action saves and moves on. Reviews are
append-only: Back opens the previous record, and a new decision there replaces the old one
(there is no undo that deletes a review).
"""

import json

import streamlit as st

import ui
from core import curate
from core import review_queue as rq
from core.judge import scale_of
from core.review_queue import QueueSource
from core.selection import ExploreFilter

st.set_page_config(page_title="Review · Winnow", page_icon="🌾", layout="wide")
ws = ui.workspace()

REVIEW_STATES = ("unreviewed", "any", "accepted", "rejected")
PER_ROW = 3          # responses side by side
TEXT_HEIGHT = 260    # a response's box; longer texts scroll inside it
DEFAULT_QUEUE = QueueSource("filter", filter=ExploreFilter(review="unreviewed"))

# --------------------------------------------------------------------------------------------
# The reviewer (kept for the whole session, across pages)
# --------------------------------------------------------------------------------------------

st.sidebar.text_input("Reviewer name", key=ui.REVIEWER_KEY, persist_state="session",
                      placeholder="your name", help="Stored with every review you make. Type it and press Enter.")
reviewer = ui.reviewer()

# --------------------------------------------------------------------------------------------
# Which queue
# --------------------------------------------------------------------------------------------

query = {k: st.query_params[k] for k in st.query_params}
has_query = "source" in query
try:
    source = QueueSource.from_query(query) if has_query else DEFAULT_QUEUE
except ValueError as exc:
    st.subheader("Review")
    st.error(ui.md_escape(f"This review link is not valid: {exc}. Nothing was saved."))
    if st.button("Open the default queue", key="review_clear_link"):
        st.query_params.clear()
        st.rerun()
    st.stop()
QKEY = json.dumps(source.to_query(), sort_keys=True)


def open_queue(new: QueueSource) -> None:
    st.query_params.from_dict(new.to_query())


def chooser() -> None:
    """Filter (unreviewed by default), snapshot, or a judge's labels that narrow its interval most."""
    kinds = {"filter": "A filter", "snapshot": "A snapshot", "judge": "A judge's suggestions"}
    kind_col, what_col, size_col, go_col = st.columns([1.2, 3, 0.8, 1], vertical_alignment="bottom")
    kind = kind_col.selectbox("Queue from", list(kinds), format_func=kinds.get, key="review_choose_kind")
    size = size_col.number_input("Size", 1, rq.MAX_SIZE, rq.DEFAULT_SIZE[kind], key=f"review_choose_size_{kind}")
    new = None
    if kind == "filter":
        left, right = what_col.columns(2)
        state = left.selectbox("Review state", REVIEW_STATES, key="review_choose_review")
        datasets = right.multiselect("Datasets", ws.filter_options()["datasets"], key="review_choose_datasets",
                                     placeholder="all datasets")
        new = QueueSource("filter", filter=ExploreFilter(review=state, datasets=datasets), size=int(size))
    elif kind == "snapshot":
        names = [r["name"] for r in curate.snapshots(ws)]
        if not names:
            what_col.text("No snapshots yet: save one on the Curate page.")
        else:
            name = what_col.selectbox("Snapshot", names, key="review_choose_snapshot")
            new = QueueSource("snapshot", snapshot=name, size=int(size))
    else:
        judges = ws.judges()
        judges = judges[judges["kind"] == "pointwise"]  # pairwise and listwise targets are not one review each
        if judges.empty:
            what_col.text("No pointwise judgments yet: run a judge job on the Jobs page.")
        else:
            pairs = list(zip(judges["judge_model"], judges["rubric"], strict=True))
            left, right = what_col.columns([3, 1])
            picked = left.selectbox("Judge and rubric", pairs, key="review_choose_judge",
                                    format_func=lambda p: f"{ui.model_label(p[0])} · {p[1]}")
            scale = scale_of(picked[1])
            threshold = right.number_input("Threshold", value=float(scale.default_threshold), step=float(scale.step),
                                           key=f"review_choose_threshold_{picked[1]}")
            new = QueueSource("judge", judge_model=picked[0], rubric=picked[1], threshold=float(threshold),
                              size=int(size))
    go_col.button("Open queue", key="review_open_queue", type="primary", disabled=new is None,
                  on_click=open_queue, args=(new,) if new else None)


st.subheader("Review")
with st.expander(ui.md_escape(f"Queue: {rq.describe(source)} — choose another"), expanded=not has_query):
    chooser()

# --------------------------------------------------------------------------------------------
# The queue: its frozen items live in the server process, keyed by workspace and source, so a
# reload (a new session) finds the same queue and its progress; skips and the Back trail are
# this session's own.
# --------------------------------------------------------------------------------------------


@st.cache_resource(show_spinner=False)
def frozen_queues(workspace_root: str) -> dict:
    return {}


queues = frozen_queues(str(ws.root))
sessions = st.session_state.setdefault("review_sessions", {})


def build_queue() -> dict:
    calibration = rq.judge_calibration(ws, source)
    return {"items": rq.build(ws, source),
            "built": rq.interval_snapshot(calibration) if calibration is not None else None}


MAX_QUEUES = 100  # per workspace and server process; the oldest built is dropped first

try:
    if QKEY not in queues:
        while len(queues) >= MAX_QUEUES:
            queues.pop(next(iter(queues)))
        queues[QKEY] = build_queue()
except ValueError as exc:  # a snapshot or rubric that does not exist
    st.error(ui.md_escape(f"This queue cannot be built: {exc}. Nothing was saved."))
    st.stop()
queue = queues[QKEY]
items: list[rq.Item] = queue["items"]
state = sessions.setdefault(QKEY, {"skipped": set(), "trail": [], "at": None})


def rebuild() -> None:
    """Build the queue again from its source (for every session on this link) and forget this session's skips."""
    queues.pop(QKEY, None)
    sessions.pop(QKEY, None)
    st.session_state.pop("review_saved", None)
    close_boxes()


def close_boxes() -> None:
    for key in ("review_open_edit", "review_open_note", "review_edit_text", "review_note_text", "review_edit_side"):
        st.session_state.pop(key, None)


def current_item() -> rq.Item | None:
    if state["at"] is not None:
        return next((it for it in items if it.target_id == state["at"]), None)
    return rq.next_item(ws, items, state["skipped"])


# --------------------------------------------------------------------------------------------
# Actions (callbacks: they run before the page is drawn again, so it draws the next record)
# --------------------------------------------------------------------------------------------


def moved_on(item: rq.Item, saved: bool) -> None:
    if not state["trail"] or state["trail"][-1] != item.target_id:
        state["trail"].append(item.target_id)
    state["at"] = None
    st.session_state["review_saved"] = {"qkey": QKEY, "item": item, "stored": saved}
    close_boxes()


def pending_note() -> str | None:
    text = st.session_state.get("review_note_text") if st.session_state.get("review_open_note") else None
    return text if text and text.strip() else None


def pending_edit(originals: dict[str, str]) -> tuple[str | None, str | None]:
    """(edited text, the id it edits) when the edit box is open and its text differs from the current one."""
    if not st.session_state.get("review_open_edit"):
        return None, None
    target = st.session_state.get("review_edit_side") or next(iter(originals), None)
    text = st.session_state.get("review_edit_text")
    if target is None or not text or not text.strip() or text == originals.get(target):
        return None, None
    return text, target


def decide(item: rq.Item, decision: str | None, originals: dict[str, str]) -> None:
    """Store a decision (or a note alone) with the open note and edit; move on after a decision."""
    if not ui.reviewer():
        return  # the buttons are disabled; a stale click saves nothing
    edit, edit_target = pending_edit(originals) if decision == "accept" else (None, None)
    try:
        rq.save(ws, item, decision, reviewer=ui.reviewer(), source=source, note=pending_note(), edited_text=edit,
                edit_target=edit_target if item.target_kind == "pair" else None)
    except ValueError as exc:
        st.session_state["review_error"] = str(exc)
        return
    if decision is None:  # a note alone: the record stays, its decision is still to make
        st.session_state["review_saved"] = {"qkey": QKEY, "item": item, "stored": True}
        st.session_state.pop("review_note_text", None)
        st.session_state["review_open_note"] = False
        return
    state["skipped"].discard(item.target_id)
    moved_on(item, saved=True)


def skip(item: rq.Item) -> None:
    state["skipped"].add(item.target_id)
    moved_on(item, saved=False)


def back() -> None:
    """Open the record acted on before this one (a new decision there replaces its old one)."""
    if state["trail"]:
        state["at"] = state["trail"].pop()
        close_boxes()


def toggle(box: str, originals: dict[str, str] | None = None) -> None:
    key = f"review_open_{box}"
    st.session_state[key] = not st.session_state.get(key)
    if box == "edit" and st.session_state[key]:
        # Prefilled with the current text (the latest edit, else the original): the first of
        # `originals` is the target, or a pair's chosen answer.
        st.session_state["review_edit_text"] = next(iter((originals or {}).values()), "")


def pick_edit_side(originals: dict[str, str]) -> None:
    st.session_state["review_edit_text"] = originals.get(st.session_state["review_edit_side"], "")


def unskip() -> None:
    state["skipped"].clear()


# --------------------------------------------------------------------------------------------
# The top: calibration (judge queues), progress, the last save, the buttons
# --------------------------------------------------------------------------------------------

if source.kind == "judge":
    calibration = rq.judge_calibration(ws, source)
    line = f"{source.judge_model} · {source.rubric}: {calibration.sentence()}"
    if queue["built"] is not None:
        line += f" — {rq.narrowing_line(queue['built'], calibration)}"
    st.info(ui.md_escape(line), icon=":material/balance:")
    # The judge's trust on these labels (AUC and τ intervals): a judge at chance is flagged here too.
    trust = ws.judge_trust(source.judge_model, source.rubric)
    (st.warning if trust.flagged else st.caption)(ui.md_escape(trust.sentence()))

if not items:
    empty = {"filter": "No instruction matches this filter. Choose another queue above, or import data.",
             "snapshot": "This snapshot has no members.",
             "judge": "This judge has no unlabeled judged target left: every one it scored has a human label, "
                      "or it scored none."}
    st.info(empty[source.kind])
    st.button("Rebuild queue", key="review_rebuild", on_click=rebuild)
    st.stop()

done, left = rq.progress(ws, items)
item = current_item()
# One row: the progress (with where this record sits), what the last action stored, Rebuild.
bar, last, rebuild_col = st.columns([4, 3, 1.3], vertical_alignment="center")
where = f" — record {items.index(item) + 1}: {item.target_kind} {item.short_id}" if item else ""
bar.progress(done / len(items), text=rq.progress_line(done, len(items), len(state["skipped"])) + where)
rebuild_col.button("Rebuild queue", key="review_rebuild", on_click=rebuild,
                   help="Build the queue again from its source (new targets, skips forgotten)")
saved = st.session_state.get("review_saved")
if saved and saved["qkey"] == QKEY:
    if saved["stored"]:
        last.success(ui.md_escape(rq.saved_line(saved["item"], rq.latest_review(ws, saved["item"]))),
                     icon=":material/check:")
    else:
        last.info(ui.md_escape(f"Skipped {saved['item'].short_id} (not stored, counted apart)"),
                  icon=":material/skip_next:")
error = st.session_state.pop("review_error", None)
if error:
    st.error(ui.md_escape(error))

if item is None:
    if left == 0:
        st.success(f"This queue is done: all {len(items)} records have a decision.")
    else:
        st.info(f"Every record is done or skipped: {left} skipped this session are left.")
        st.button("Review the skipped ones", key="review_unskip", on_click=unskip)
    st.button("Back (B)", key="review_back", shortcut="B", on_click=back, disabled=not state["trail"])
    st.stop()

rec = rq.record(ws, item)
is_pair = item.target_kind == "pair"
# The texts an edit can start from: the target's, or a pair's two answers (chosen first).
if is_pair:
    originals = {r["id"]: r["edited_text"] or r["text"] for r in rec["responses"] if r["pair_side"]}
elif rec["target_text"] is not None:
    originals = {item.target_id: rec["target_text"]}
else:
    originals = {}
cannot = None if reviewer else "Enter your reviewer name in the sidebar first"

buttons = st.columns(len(rq.ACTIONS))
specs = {
    "accept": dict(on_click=decide, args=(item, "accept", originals), type="primary", disabled=bool(cannot),
                   help=cannot or ("The chosen answer is better" if is_pair else "Keep it (with the edit, if open)")),
    "reject": dict(on_click=decide, args=(item, "reject", originals), disabled=bool(cannot),
                   help=cannot or ("The chosen answer is not better" if is_pair else "Drop it")),
    "tie": dict(on_click=decide, args=(item, "tie", originals), disabled=bool(cannot) or not is_pair,
                help=cannot or ("Neither answer is better" if is_pair else "Only a preference pair can be a tie")),
    "skip": dict(on_click=skip, args=(item,), help="Not stored; the record stays to do"),
    "edit": dict(on_click=toggle, args=("edit", originals), disabled=bool(cannot),
                 help=cannot or "Open an edit box; saving it accepts the edited text"),
    "note": dict(on_click=toggle, args=("note",), disabled=bool(cannot),
                 help=cannot or "Open a note box; the note is saved with the next decision"),
    "back": dict(on_click=back, disabled=not state["trail"], help="The previous record"),
}
for col, action in zip(buttons, rq.ACTIONS, strict=False):
    col.button(action.label, key=action.key, shortcut=action.shortcut, width="stretch", **specs[action.name])
if cannot:
    st.caption(f"{cannot} (Tab to it, type your name, press Enter); skipping and going back work without one.")

# The boxes that open on request: an edit (prefilled with the current text) and a note.
if st.session_state.get("review_open_edit"):
    with st.container(border=True):
        if is_pair:
            chosen_id, rejected_id = rec["pair"]["chosen_id"], rec["pair"]["rejected_id"]
            st.radio("Edit which answer", [chosen_id, rejected_id], key="review_edit_side", horizontal=True,
                     format_func=lambda rid: "chosen" if rid == chosen_id else "rejected",
                     on_change=pick_edit_side, args=(originals,))
        st.text_area("Edited text (saved with an accept)", key="review_edit_text", height=180)
        st.button("Save the edit and accept (Ctrl+Enter)", key="review_save_edit", shortcut="Ctrl+Enter",
                  on_click=decide, args=(item, "accept", originals), disabled=bool(cannot))
if st.session_state.get("review_open_note"):
    with st.container(border=True):
        st.text_area("Note (saved with your next decision)", key="review_note_text", height=80)
        st.button("Save the note alone", key="review_save_note", on_click=decide, args=(item, None, originals),
                  disabled=bool(cannot), shortcut=None if st.session_state.get("review_open_edit") else "Ctrl+Enter")

# --------------------------------------------------------------------------------------------
# The record: instruction, then every response side by side, the target marked
# --------------------------------------------------------------------------------------------

ins = rec["instruction"]
st.caption(ui.md_escape(f"{rq.task_text(rec['task'])} · {rq.lineage_text(rec['lineage'])} · "
                        f"{'pair' if is_pair else item.target_kind} verdict: {rec['target_verdict_text']}"))
if ins["input"]:
    left_col, right_col = st.columns(2)
    with left_col:
        ui.show_text(ins["text"], "Instruction", height=160)
    with right_col:
        ui.show_text(ins["input"], "Input", height=160)
else:
    ui.show_text(ins["text"], "Instruction", height=160)
if ins["system"] or ins["history"]:
    with st.expander("System prompt and earlier turns"):
        if ins["system"]:
            ui.show_text(ins["system"], "System prompt")
        if ins["history"]:
            ui.show_text(ins["history"], "Earlier turns")

responses = rec["responses"]
if not responses:
    st.text("This instruction has no response: the decision is on the instruction itself.")
n_cols = min(PER_ROW, len(responses)) or 1  # two answers get half the width each, not a third
for start in range(0, len(responses), n_cols):
    chunk = responses[start:start + n_cols]
    for col, r in zip(st.columns(n_cols), chunk, strict=False):
        marked = r["is_target"] or r["pair_side"]
        with col.container(border=bool(marked)):
            head = ui.md_escape(f"{r['role']} · {r['model'] or 'no model'} · {r['n_chars']:,} chars")
            if marked:  # the target (or a side of the target pair) is boxed and badged
                color = "orange" if r["pair_side"] == "rejected" else "blue"
                head = f":{color}-badge[{(r['pair_side'] or 'target').upper()}] {head}"
            st.markdown(head)
            if r["edited_text"]:
                ui.show_text(r["edited_text"], "Latest edit (exported instead of the original)", height=TEXT_HEIGHT)
            else:
                ui.show_text(r["text"], height=TEXT_HEIGHT)
            st.text(f"Verdict: {r['verdict_text']}\n{rq.scores_text(r['scores'])}")
            st.caption(ui.md_escape(rq.lineage_text(r["lineage"])))
