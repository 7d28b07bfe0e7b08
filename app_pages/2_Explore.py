"""Explore: two views over the workspace.

Instructions: server-side filters, counts, a length histogram, a triage table (chosen columns, a
response preview, a judge's score) with the open sample beside it, and the full sample view with
a human review form per response. Documents: corpus passages with their source file and
position, filtered and searched, each with the instructions later generated from it."""

import hashlib
import json
import math

import pandas as pd
import streamlit as st

import ui
from core import charts, curate
from core import curate_views as curate_views_mod
from core import explore_views as views
from core import reviews as reviews_mod
from core import tasks as tasks_mod
from core.review_queue import MAX_SIZE, QueueSource
from core.store import EXPLORE_ORDERS
from core.store.documents import DocumentFilter
from core.store.explore import JUDGE_ORDERS
from core.workspace import ExploreFilter

st.set_page_config(page_title="Explore · Winnow", page_icon="🌾", layout="wide")

ws = ui.workspace()
st.title("Explore")

VIEW_KEY = "explore_view"
VIEWS = ("Instructions", "Documents")
REVIEW_STATES = ("any", "accepted", "rejected", "unreviewed")
DECISIONS = {"none": "No decision", "accept": "Accept", "reject": "Reject"}
PAGE_SIZES = (25, 50, 100)
TABLE_HEIGHT = 560  # px: about 15 rows, the page's main area at 1400×900
IMPORT_PAGE = "app_pages/1_Import.py"

# Widget state of a view that is not shown this run would be dropped by Streamlit; saving it again
# keeps both views' filters (and the reviewer's name) while the other view is open.
PERSISTED = (VIEW_KEY, ui.REVIEWER_KEY, "explore_datasets", "explore_tasks", "explore_roles", "explore_sources",
             "explore_rounds", "explore_methods", "explore_review", "explore_min_chars", "explore_max_chars",
             "explore_search", "explore_search_responses", "explore_columns", "explore_judge", "explore_order",
             "explore_page_size", "explore_bin", "explore_docs_datasets", "explore_docs_sources",
             "explore_docs_search", "explore_docs_min_chars", "explore_docs_max_chars", "explore_docs_page_size")
for _key in PERSISTED:
    if _key in st.session_state:
        st.session_state[_key] = st.session_state[_key]
# Defaults live in session state rather than in widget arguments, so a value set by a button
# (the corpus message's "Browse documents") never conflicts with a widget default.
for _key, _value in ((VIEW_KEY, VIEWS[0]), ("explore_columns", list(views.DEFAULT_COLUMNS)),
                     ("explore_page_size", 50), ("explore_bin", 100), ("explore_docs_page_size", 50)):
    st.session_state.setdefault(_key, _value)

view = st.segmented_control("View", VIEWS, key=VIEW_KEY, required=True, label_visibility="collapsed")


def _show_documents(datasets: list[str]) -> None:
    """Button callback: switch to the Documents view with these datasets chosen."""
    st.session_state[VIEW_KEY] = "Documents"
    st.session_state["explore_docs_datasets"] = list(datasets)


def _show_instruction(pick_key: str) -> None:
    """Selectbox callback: open a generated instruction in the Instructions view."""
    if st.session_state.get(pick_key):
        st.session_state[VIEW_KEY] = "Instructions"
        st.session_state["explore_selected"] = st.session_state[pick_key]
        st.session_state["explore_table_gen"] = st.session_state.get("explore_table_gen", 0) + 1


def _turn(page_key: str, delta: int) -> None:
    st.session_state[page_key] = max(0, int(st.session_state.get(page_key, 0)) + delta)


def pager(prefix: str, page: int, n_pages: int, page_size: int, n_rows: int, count: int) -> None:
    nav = st.columns([1, 2, 1])
    nav[0].button("← Previous", key=f"{prefix}_prev", disabled=page == 0, on_click=_turn, args=(f"{prefix}_page", -1))
    nav[1].text(f"Page {page + 1} of {n_pages} · rows {page * page_size + 1 if count else 0}–"
                f"{page * page_size + n_rows} of {count:,}")
    nav[2].button("Next →", key=f"{prefix}_next", disabled=page >= n_pages - 1, on_click=_turn,
                  args=(f"{prefix}_page", 1))


def requested_page(prefix: str, signature: str) -> int:
    """The page asked for: the first one after a new filter, order or page size."""
    if st.session_state.get(f"{prefix}_signature") != signature:
        st.session_state[f"{prefix}_signature"] = signature
        st.session_state[f"{prefix}_page"] = 0
    return max(int(st.session_state.get(f"{prefix}_page", 0)), 0)


def current_page(prefix: str, signature: str, count: int, page_size: int) -> tuple[int, int]:
    """The page to show: the one asked for (requested_page), never past the end."""
    n_pages = max(1, math.ceil(count / page_size))
    page = min(requested_page(prefix, signature), n_pages - 1)
    st.session_state[f"{prefix}_page"] = page
    return page, n_pages


def selectable_table(frame: pd.DataFrame, ids: list[str], prefix: str, selected_key: str, signature: str,
                     page: int, column_config: dict | None = None) -> None:
    """A paged table whose row click opens that row (session key `selected_key`).

    Only a *new* row click opens a row, so a later choice in the "Open …" selectbox is not undone by
    a row still highlighted. A choice in the selectbox bumps `{prefix}_table_gen`, which gives the
    table a new key and highlights the chosen row: table and selectbox stay in step."""
    selected = st.session_state.get(selected_key)
    gen = st.session_state.get(f"{prefix}_table_gen", 0)
    table_key = f"{prefix}_table_{signature}_{page}_{gen}"
    default = {"selection": {"rows": [ids.index(selected)], "columns": []}} if selected in ids else None
    event = st.dataframe(frame, hide_index=True, width="stretch", height=TABLE_HEIGHT, key=table_key,
                         on_select="rerun", selection_mode="single-row", selection_default=default,
                         column_config=column_config)
    picked = list(event.selection.rows)
    seen = (table_key, picked[0]) if picked else None
    if seen != st.session_state.get(f"{prefix}_table_seen"):
        st.session_state[f"{prefix}_table_seen"] = seen
        if picked and picked[0] < len(ids):
            st.session_state[selected_key] = ids[picked[0]]


def _pick(pick_key: str, selected_key: str, prefix: str) -> None:
    if st.session_state.get(pick_key):
        st.session_state[selected_key] = st.session_state[pick_key]
        st.session_state[f"{prefix}_table_gen"] = st.session_state.get(f"{prefix}_table_gen", 0) + 1


def open_selectbox(label: str, ids: list[str], names: dict[str, str], prefix: str, selected_key: str,
                   signature: str, page: int) -> None:
    """The keyboard-friendly way to open a row; it shows the row open now."""
    pick_key = f"{prefix}_pick_{signature}_{page}"
    selected = st.session_state.get(selected_key)
    st.session_state[pick_key] = selected if selected in ids else None
    hint = "select a row above, or choose here"
    st.selectbox(label, [None, *ids], key=pick_key, on_change=_pick, args=(pick_key, selected_key, prefix),
                 placeholder=hint,
                 format_func=lambda i: hint if i is None else f"{i[:8]} · {ui.clip(names.get(i, ''), 90)}")


# ============================================================================================
# Instructions view
# ============================================================================================


def instruction_filters() -> tuple[ExploreFilter, str, int, int, tuple[str, str] | None, list[str]]:
    """The sidebar: reviewer, filters, and the table's view settings."""
    options = ws.filter_options()
    judges = views.pointwise_judges(ws.judges())
    if st.session_state.get("explore_judge") not in judges:
        st.session_state["explore_judge"] = None
    with st.sidebar:
        st.text_input("Reviewer", key=ui.REVIEWER_KEY, placeholder="your name",
                      help="Stored with every review you save, on every page.")
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
        search = st.text_input("Search text", key="explore_search",
                               help="Case-insensitive substring of the instruction or input.")
        search_responses = st.checkbox("Search responses too", key="explore_search_responses")
        st.header("View")
        columns = st.multiselect("Columns", list(views.TABLE_COLUMNS), key="explore_columns",
                                 format_func=views.column_label, help="The table's columns, shown in this order.")
        judge = st.selectbox("Judge score", [None, *judges], key="explore_judge", format_func=views.judge_label,
                             help="A pointwise judge and rubric whose latest score shows beside each row "
                                  "(the highest over the instruction's responses)." if judges else
                                  "No pointwise judge has run yet: start a judge job on the Jobs page.")
        orders = list(EXPLORE_ORDERS) + (list(JUDGE_ORDERS) if judge else [])
        if st.session_state.get("explore_order") not in orders:
            st.session_state["explore_order"] = orders[0]
        order = st.selectbox("Order", orders, key="explore_order")
        page_size = st.selectbox("Page size", PAGE_SIZES, key="explore_page_size")
        bin_width = st.selectbox("Histogram bin (characters)", (25, 50, 100, 250, 500, 1000), key="explore_bin")
    try:
        selection = ExploreFilter(datasets=datasets, tasks=tasks, roles=roles, sources=sources, rounds=rounds,
                                  methods=methods, min_chars=min_chars, max_chars=max_chars, search=search,
                                  search_responses=search_responses, review=review)
    except ValueError as exc:
        st.error(ui.md_escape(exc))
        st.stop()
    return selection, order, int(page_size), int(bin_width), judge, columns


def table_config(judge: tuple[str, str] | None) -> dict:
    score_label = f"judge score ({judge[1]})" if judge else "judge score"
    return {
        "review": st.column_config.TextColumn("review", pinned=True, width="small",
                                              help="The latest human decision on the instruction or its responses."),
        "instruction": st.column_config.TextColumn("instruction", width="medium"),
        "response": st.column_config.TextColumn(views.column_label("response"), width="medium",
                                                help=views.PREVIEW_HELP),
        "judge_score": st.column_config.NumberColumn(score_label, format="%.2f", width="small", help=views.SCORE_HELP),
        **{c: st.column_config.Column(views.column_label(c)) for c in views.COLUMN_LABELS
           if c not in ("response", "judge_score")},
    }


def compact_view(sample: dict, judge: tuple[str, str] | None) -> None:
    """The open sample beside the table: enough to triage without scrolling down."""
    card = views.compact_sample(sample, judge)
    head, close = st.columns([4, 1])
    head.text(card["heading"])
    close.button("Close", key="explore_close_compact", on_click=_close)
    info = tasks_mod.task_of(ws, card["id"])
    if info and info.get("task") and info.get("source") not in (None, "import"):
        st.text(f"Task {info['task']} (from {info['source']})")
    st.text(f"Instruction verdict: {card['verdict']}")
    ui.show_text(card["instruction"], "Instruction", height=180)
    if card["input"]:
        ui.show_text(card["input"], "Input", height=120)
    if not card["responses"]:
        st.text("No response yet.")
    for r in card["responses"]:
        ui.show_text(r["text"], r["label"] + (" · edited" if r["edited"] else ""), height=200)
    ins = sample["instruction"]
    one = ExploreFilter(ids=[ins["id"]])
    ui.review_link(QueueSource("filter", filter=one), "Review this in the queue")
    st.caption("The full sample, with its review forms, lineage and scores, is below the table.")


def _close() -> None:
    st.session_state.pop("explore_selected", None)
    st.session_state["explore_table_gen"] = st.session_state.get("explore_table_gen", 0) + 1


def corpus_message(selection: ExploreFilter) -> bool:
    """When the chosen datasets hold only documents, say so and offer their Documents view."""
    if not selection.datasets:
        return False
    only = views.corpus_only(ws.store.dataset_contents(list(selection.datasets)))
    if not only:
        return False
    st.info(views.corpus_only_sentence(only) + " Its passages are in the Documents view; instructions generated "
            "from them will show here.")
    names = [name for name, _ in only]
    st.button(f"Browse the documents of {', '.join(names)}", key="explore_to_documents", icon=":material/article:",
              on_click=_show_documents, args=(names,))
    return True


def instructions_view() -> None:
    selection, order, page_size, bin_width, judge, columns = instruction_filters()
    signature = hashlib.sha1(repr((selection, order, page_size, judge)).encode()).hexdigest()[:10]

    total = ws.explore_count(ExploreFilter())
    # The count and the asked-for page at once (explore_view runs them side by side); the page
    # is read again only when the count shrank under it.
    asked = requested_page("explore", signature)
    count, rows = ws.store.explore_view(selection, limit=page_size, offset=asked * page_size, order=order, judge=judge)
    page, n_pages = current_page("explore", signature, count, page_size)

    # The count and the pager above the table, the histogram below it: at 1400×900 the table
    # starts above the fold.
    top, nav = st.columns([1, 3], vertical_alignment="bottom")
    with top:
        st.metric("Matching instructions", f"{count:,}")
        st.caption(f"of {total:,} in the workspace")

    if total == 0:
        n_documents = ws.store.documents_count(DocumentFilter())
        if n_documents:
            st.info(f"No instructions yet; the workspace holds {n_documents:,} corpus documents.")
            st.button("Browse the documents", key="explore_to_documents", icon=":material/article:",
                      on_click=_show_documents, args=([],))
        else:
            st.info("The workspace is empty.")
            st.page_link(IMPORT_PAGE, label="Import a file", icon=":material/upload_file:")
        st.stop()

    if page != asked:
        rows = ws.store.explore_page(selection, limit=page_size, offset=page * page_size, order=order, judge=judge)
    ids = rows["id"].tolist()
    with nav:
        pager("explore", page, n_pages, page_size, len(rows), count)

    if rows.empty:
        if not corpus_message(selection):
            st.info("No instruction matches these filters.")
    else:
        left, right = st.columns([3, 2])
        with left:
            shown = views.table_columns(columns, judge is not None) or ["instruction"]
            selectable_table(rows[shown], ids, "explore", "explore_selected", signature, page, table_config(judge))
            open_selectbox("Open sample", ids, dict(zip(ids, rows["instruction"], strict=True)), "explore",
                           "explore_selected", signature, page)
            n = min(count, MAX_SIZE)
            ui.review_link(QueueSource("filter", filter=selection, size=n),
                           f"Review these {n:,} in the queue" if n == count else f"Review the first {n:,} in the queue")
        with right, st.container(height=TABLE_HEIGHT + 90, border=True):
            selected = st.session_state.get("explore_selected")
            sample = ws.sample(selected) if selected else None
            if sample is None:
                st.text("Select a row (or choose one under the table) to see the sample here.")
            else:
                compact_view(sample, judge)

    st.plotly_chart(charts.length_histogram(ws.length_histogram(selection, bin_width), bin_width),
                    key="explore_histogram")

    selected = st.session_state.get("explore_selected")
    if selected and not rows.empty:  # a sample stays chosen while a filter matches nothing, but is not shown
        sample = ws.sample(selected)
        if sample is None:
            st.warning("That sample is no longer in the workspace.")
            st.session_state.pop("explore_selected", None)
        else:
            render_sample(sample)


# --------------------------------------------------------------------------------------------
# The full sample view and its review forms
# --------------------------------------------------------------------------------------------


def _save_review(target_id: str, kind: str, current_text: str | None, current_decision: str) -> None:
    """Form callback: runs before the page renders, so the page shows the new state."""
    decision = st.session_state.get(f"explore_decision_{target_id}", "none")
    editing = st.session_state.get(f"explore_editing_{target_id}", False)
    edited = st.session_state.get(f"explore_edit_{target_id}") if editing else None
    note = st.session_state.get(f"explore_note_{target_id}")
    # Only a change is saved: the decision already in force and the unchanged prefilled text are not.
    if decision in ("none", current_decision):
        decision = None
    if edited is None or current_text is None or edited == current_text or not edited.strip():
        edited = None
    try:
        ws.review(target_id, decision, edited, note, target_kind=kind, reviewer=ui.reviewer(), source="explore")
    except ValueError as exc:
        st.session_state["explore_flash"] = {"target": target_id, "ok": False, "message": str(exc)}
    else:
        st.session_state["explore_flash"] = {"target": target_id, "ok": True}
        st.session_state[f"explore_note_{target_id}"] = ""
        st.session_state[f"explore_editing_{target_id}"] = False
        # The radio and the edit box start again from the saved verdict on the next render.
        st.session_state.pop(f"explore_decision_{target_id}", None)
        st.session_state.pop(f"explore_edit_{target_id}", None)


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
    decision_key = f"explore_decision_{target_id}"
    current = views.decision_of(verdict)
    if st.session_state.get(decision_key) not in DECISIONS:
        st.session_state[decision_key] = current  # the radio shows the decision in force
    editing = False
    if current_text is not None:
        editing = st.toggle("Edit the text", key=f"explore_editing_{target_id}",
                            help="An edited text is exported instead of the original.")
    with st.form(key=f"explore_form_{target_id}", border=True):
        st.radio("Decision", list(DECISIONS), format_func=DECISIONS.get, horizontal=True, key=decision_key)
        if editing:
            st.text_area("Edited text (used on export when changed)", value=current_text, height=160,
                         key=f"explore_edit_{target_id}")
        st.text_input("Note", key=f"explore_note_{target_id}")
        st.form_submit_button("Save review", on_click=_save_review,
                              args=(target_id, kind, current_text, current), key=f"explore_save_{target_id}")
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
        st.page_link("app_pages/8_Curate.py", label="Curate", icon=":material/filter_alt:")
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
    close.button("Close", key="explore_close", on_click=_close)

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
                st.text(f"model: {r.get('model') or '—'} · {r['n_chars']:,} chars · round {r['round']} · "
                        f"{r['method']}")
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
            "note": v["note"] or "", "reviewer": v["reviewer"] or "", "where": v.get("source") or "",
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


# ============================================================================================
# Documents view
# ============================================================================================


def document_filters() -> tuple[DocumentFilter, int]:
    options = ws.store.document_filter_options(st.session_state.get("explore_docs_datasets") or None)
    for key, allowed in (("explore_docs_datasets", options["datasets"]), ("explore_docs_sources", options["sources"])):
        if key in st.session_state:  # a dataset no longer chosen takes its files out of the choice
            st.session_state[key] = [v for v in st.session_state[key] if v in allowed]
    with st.sidebar:
        st.header("Documents")
        datasets = st.multiselect("Datasets", options["datasets"], key="explore_docs_datasets",
                                  help="The datasets that hold corpus documents.")
        sources = st.multiselect("Source files", options["sources"], key="explore_docs_sources",
                                 format_func=views.short_path)
        search = st.text_input("Search text", key="explore_docs_search",
                               help="Case-insensitive substring of the passage or its title.")
        c1, c2 = st.columns(2)
        min_chars = c1.number_input("Min characters", min_value=0, value=None, step=100, key="explore_docs_min_chars")
        max_chars = c2.number_input("Max characters", min_value=0, value=None, step=100, key="explore_docs_max_chars")
        page_size = st.selectbox("Page size", PAGE_SIZES, key="explore_docs_page_size")
    try:
        selection = DocumentFilter(datasets=datasets, sources=sources, search=search, min_chars=min_chars,
                                   max_chars=max_chars)
    except ValueError as exc:
        st.error(ui.md_escape(exc))
        st.stop()
    return selection, int(page_size)


def document_view(doc: dict) -> None:
    """One passage: its text, where it came from, and the instructions generated from it."""
    head, close = st.columns([4, 1])
    head.text(f"{doc['dataset']} · {doc.get('title') or '—'} · {doc['n_chars']:,} chars")
    close.button("Close", key="explore_docs_close", on_click=lambda: st.session_state.pop("explore_doc_selected", None))
    st.text(f"Source file: {doc.get('source_file') or '—'}")
    st.text(f"Position: line {doc.get('source_line') if doc.get('source_line') is not None else '—'} · "
            f"passage {doc['segment'] + 1 if doc.get('segment') is not None else '—'} of its file")
    ui.show_text(doc["text"], "Text", height=320)
    st.text("Instructions generated from it")
    children = ws.store.document_instructions(doc["id"])
    if children.empty:
        st.text("None yet: instructions a generation job writes from this passage will be listed here.")
        return
    st.dataframe(children.drop(columns=["id"]), hide_index=True, width="stretch", key="explore_doc_children")
    pick_key = f"explore_doc_child_{doc['id']}"
    names = dict(zip(children["id"], children["instruction"], strict=True))
    st.selectbox("Open a generated instruction", [None, *children["id"]], key=pick_key,
                 on_change=_show_instruction, args=(pick_key,),
                 format_func=lambda i: "choose one to open it in the Instructions view" if i is None
                 else f"{i[:8]} · {ui.clip(names.get(i, ''), 80)}")


def documents_view() -> None:
    selection, page_size = document_filters()
    total = ws.store.documents_count(DocumentFilter())
    count = ws.store.documents_count(selection)
    top, nav = st.columns([1, 3], vertical_alignment="bottom")
    with top:
        st.metric("Matching documents", f"{count:,}")
        st.caption(f"of {total:,} corpus documents in the workspace")
    if total == 0:
        st.info("No documents yet: import a corpus (a folder of text, markdown, reStructuredText or HTML files) "
                "on the Import page.")
        st.page_link(IMPORT_PAGE, label="Import a corpus", icon=":material/upload_file:")
        return
    signature = hashlib.sha1(repr((selection, page_size)).encode()).hexdigest()[:10]
    page, n_pages = current_page("explore_docs", signature, count, page_size)
    rows = ws.store.documents_page(selection, limit=page_size, offset=page * page_size)
    ids = rows["id"].tolist()
    with nav:
        pager("explore_docs", page, n_pages, page_size, len(rows), count)
    if rows.empty:
        st.info("No document matches these filters.")
        return
    left, right = st.columns([3, 2])
    with left:
        config = {"file": st.column_config.TextColumn("file", help="The source file's name; the full path is "
                                                      "beside the table when a passage is open."),
                  "passage": st.column_config.NumberColumn("passage", width="small",
                                                           help="The passage's place in its file (1 = first)."),
                  "line": st.column_config.NumberColumn("line", width="small", help="Its first line in the file."),
                  "title": st.column_config.TextColumn("title", width="small"),
                  "n_chars": st.column_config.NumberColumn("chars", width="small"),
                  "preview": st.column_config.TextColumn("preview", width="medium"),
                  "instructions": st.column_config.NumberColumn(
                      "instructions", help="Instructions generated from the passage (their parent is the passage).")}
        selectable_table(views.documents_table(rows), ids, "explore_docs", "explore_doc_selected", signature, page,
                         config)
        open_selectbox("Open document", ids, dict(zip(ids, rows["preview"], strict=True)), "explore_docs",
                       "explore_doc_selected", signature, page)
    with right, st.container(height=TABLE_HEIGHT + 90, border=True):
        selected = st.session_state.get("explore_doc_selected")
        doc = ws.store.document(selected) if selected else None
        if doc is None:
            st.text("Select a row (or choose one under the table) to read the passage here.")
        else:
            document_view(doc)


if view == "Documents":
    documents_view()
else:
    instructions_view()
