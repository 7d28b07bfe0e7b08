"""Backtranslation: Humpback's candidates (a corpus document and the instruction the backward model
wrote for it) beside the curator's score; a k slider with live counts; the curator's precision and
recall at k against human accept/reject labels, with intervals, and buttons to add labels.

Everything shown comes from core.backtranslate_views (aggregate queries, one page of rows at a
time). Document and instruction text is untrusted web and model text: rendered by ui.show_text."""

import streamlit as st

import ui
from core import backtranslate_views as views

st.set_page_config(page_title="Backtranslation · Winnow", page_icon="🌾", layout="wide")
ws = ui.workspace()
st.title("Backtranslation")
st.caption("Humpback's self-augmentation and self-curation: a backward model wrote an instruction for each "
           "document of a corpus; the current model rated each pair on a 5-point scale, and a round keeps the "
           "pairs scoring at least k. A small curator is noisy (the paper measured precision 0.44 at its first "
           "model): label a few pairs below to see how far to trust it.")
st.sidebar.text_input("Reviewer name", key=ui.REVIEWER_KEY, persist_state="session", placeholder="your name",
                      help="Stored with every label you give here.")
PAGE_SIZE = 5

datasets = views.candidate_datasets(ws)
if not datasets:
    st.info("No backtranslated candidates yet. Import a corpus (markdown, HTML or text files) on the Import page, "
            "then run a Humpback recipe: `winnow round run recipes/humpback-tiny.yaml` (or start it on the Rounds "
            "page), or run the backtranslate stage on the Jobs page with a backward model.")
    ui.jobs_link("backtranslate", "Open the backtranslate stage")
    st.stop()

for empty in views.empty_rounds(ws):
    st.warning(ui.md_escape(f"Round {empty['round']} kept no candidate and trained on the seed alone: "
                            f"{empty['reason']}."))

names = [d["name"] for d in datasets]
left, right = st.columns(2)
dataset = left.selectbox("Candidates", names, key="bt_dataset",
                         format_func=lambda n: next(f"{n} ({d['candidates']} candidates from {d['documents']} "
                                                    "documents)" for d in datasets if d["name"] == n))
found = views.curators(ws, dataset)
if not found:
    st.info("No curator has rated these candidates yet. A Humpback round rates them with its current model; "
            "or run the judge stage (rubric pointwise_5, role document) on this dataset from the Jobs page.")
    ui.jobs_link("judge", "Open the judge stage")
    st.stop()
labels = [c.label for c in found]
chosen = right.selectbox("Curator", labels, index=len(labels) - 1, key="bt_curator")
curator = found[labels.index(chosen)]

rounds = views.round_curation(ws)
run_k = views.run_k(rounds, dataset)  # the k of the run these candidates are from, if any
k = st.slider("Keep candidates scoring at least k", 1.0, 5.0, run_k or 4.5, 0.1, key="bt_k",
              help="Humpback keeps a 5 on the 5-point scale; with the probability mode's expectation, 4.5."
                   + (f" The run that made these candidates used k = {run_k:g}." if run_k else ""))
counts = views.counts_at(ws, dataset, curator, k)
c1, c2, c3, c4 = st.columns(4)
c1.metric("Candidates", counts["candidates"])
c2.metric("Rated", counts["judged"])
c3.metric(f"Kept at k = {k:g}", counts["kept"])
c4.metric("Kept share", "n/a" if counts["kept_share"] is None else f"{100 * counts['kept_share']:.0f}%")
if counts["scored"] and not counts["kept"]:
    st.warning(ui.md_escape(f"k = {k:g} keeps nothing: the curator's best score is "
                            f"{counts['max_score']:.2f} (mean {counts['mean_score']:.2f}). A round at this k "
                            "would train on the seed alone."))
if counts["judged"] > counts["scored"]:
    st.caption(f"{counts['judged'] - counts['scored']} rated candidates have no parsed score (counted as not kept).")

cal = views.calibration_at(ws, dataset, curator, k)
lines = views.calibration_lines(cal)
st.subheader("The curator against your labels")
p1, p2 = st.columns(2)
p1.metric("Precision at k", lines["precision"], help="Of the labeled candidates the curator keeps, the share "
                                                      "you accepted (95% Wilson interval).")
p2.metric("Recall at k", lines["recall"], help="Of the candidates you accepted, the share the curator keeps.")
st.caption(ui.md_escape(lines["sentence"]))

st.subheader("Candidates, best score first")
only_kept = st.toggle("Only the kept ones", key="bt_only_kept")
total = counts["kept"] if only_kept else counts["candidates"]
pages = max(1, -(-total // PAGE_SIZE))
page = st.number_input("Page", 1, pages, 1, key="bt_page") - 1
rows = views.page_of(ws, dataset, curator, min_score=k if only_kept else None, page=page, page_size=PAGE_SIZE)
if not rows:
    st.info("No candidate on this page: lower k or turn off 'Only the kept ones'.")


def _label(response_id: str, decision: str) -> None:
    try:
        views.label(ws, response_id, decision, ui.reviewer())
        st.session_state["bt_flash"] = f"Saved: {decision}."
    except ValueError as exc:
        st.session_state["bt_flash"] = f"Not saved: {exc}"


flash = st.session_state.pop("bt_flash", None)
if flash:
    st.toast(ui.md_escape(flash))

for i, row in enumerate(rows):
    with st.container(border=True):
        doc_col, ins_col, score_col = st.columns([5, 3, 2])
        with doc_col:
            st.text(ui.clip(f"Document: {row['title'] or '(untitled)'} · {row['document_chars']} characters", 100))
            ui.show_text(row["document"], height=260, key=f"bt_doc_{page}_{i}")
        with ins_col:
            st.text("Generated instruction")
            ui.show_text(row["instruction"], height=260, key=f"bt_ins_{page}_{i}")
        with score_col:
            score = row["score"]
            st.metric("Curator score", "not rated" if score is None else f"{score:.2f}",
                      delta=None if score is None else ("kept" if score >= k else "dropped"),
                      delta_color="normal" if score is not None and score >= k else "inverse")
            st.text(f"Your label: {row['decision'] or 'none'}")
            st.button("Accept", key=f"bt_accept_{row['response_id']}", on_click=_label,
                      args=(row["response_id"], "accept"), type="primary")
            st.button("Reject", key=f"bt_reject_{row['response_id']}", on_click=_label,
                      args=(row["response_id"], "reject"))

if rounds:
    st.subheader("Curation by round")
    st.dataframe(rounds, hide_index=True)
