"""Revisions: CITING's revised answers (core.revise) beside the drafts they came from, with a
word-level diff and the category's criteria the teacher revised against. The diff is built by
core.categories_views from escaped text (insertions and deletions marked with our own spans,
then sanitized); the draft and revision themselves go through ui.show_text."""

import streamlit as st

import ui
from core import categories_views as views

st.set_page_config(page_title="Revisions · Winnow", page_icon="🌾", layout="wide")

ws = ui.workspace()
st.title("Revisions")
st.caption("The teacher revises each student answer against the criteria of its category; the student learns "
           "from the revision, both directly (instruction → revision) and as a revision task (instruction, "
           "criteria and draft → revision).")
get = st.session_state.get
PAGE_SIZE = 5

roles = views.revision_roles(ws)
if not roles:
    st.info("No revision yet: run `winnow round run recipes/citing-tiny.yaml` (CITING revises the student's answers "
            "each round), or start a `revise` job on the Jobs page once a scheme has categories.")
    st.stop()

role = st.selectbox("Revision role", roles, key="rev_role", help="A CITING round writes its revisions as rev<round>_<run>.")
rows, total = views.revisions_page(ws, role, int(get("rev_page", 0)), PAGE_SIZE)
pages = max(1, -(-total // PAGE_SIZE))
st.number_input(f"Page (of {pages})", min_value=0, max_value=pages - 1, value=0, step=1, key="rev_page")
st.caption(f"{total} revisions of role {ui.md_escape(role)}")
if not rows:
    st.info("Nothing on this page: go back to page 0.")
st.html(f"<style>{views.DIFF_STYLE}</style>")

for i, r in enumerate(rows):
    with st.container(border=True):
        st.text(f"Instruction · category: {r['category'] or '(none)'} · round {r['round']} · {r['model']}")
        ui.show_text(r["instruction"] + (f"\n\n{r['input']}" if r["input"] else ""), key=f"rev_instruction_{i}")
        draft, revision, criteria = st.columns([2, 2, 1])
        with draft:
            ui.show_text(r["draft"], label=f"Draft ({r['draft_model'] or 'imported'})", key=f"rev_draft_{i}")
        with revision:
            ui.show_text(r["revision"], label="Revision", key=f"rev_revision_{i}")
        with criteria:
            st.text("Criteria")
            for c in r["criteria"]:
                st.text(f"• {c}")
            if not r["criteria_current"]:
                st.caption("The criteria were edited after this revision (its criteria hash differs), or the "
                           "category is gone.")
        counts = views.diff_counts(r["draft"], r["revision"])
        st.text(f"Word diff: {counts['inserted']} words inserted, {counts['deleted']} deleted")
        st.html(views.diff_html(r["draft"], r["revision"]))
