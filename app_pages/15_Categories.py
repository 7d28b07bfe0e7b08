"""Categories: CITING's categories of a scheme (core.categories): their sizes and evaluation
criteria (edited in place and saved), each category's members nearest to its seeds with their
similarity, a 2-D map of the members' embeddings coloured by category or task, and the teacher's
proposals as it wrote them. Everything shown is computed by core.categories_views."""

import streamlit as st

import ui
from core import categories, charts
from core import categories_views as views
from core.selection import ExploreFilter

st.set_page_config(page_title="Categories · Winnow", page_icon="🌾", layout="wide")

ws = ui.workspace()
st.title("Categories")
st.caption("CITING groups instructions into categories and writes, for each, the criteria a good answer meets; "
           "the teacher then revises the student's answers against them. An instruction joins the category whose "
           "seed members its embedding is closest to on average.")
get = st.session_state.get
FLASH = "cat_flash"

schemes = views.schemes(ws)
if not schemes:
    st.info("No categories yet: run `winnow round run recipes/citing-tiny.yaml` (a CITING run proposes and assigns "
            "them in its first round), or start a `propose_categories` job on the Jobs page, then come back.")
    st.stop()

scheme = st.selectbox("Scheme", schemes, key="cat_scheme", help="A round run keeps its categories under its name.")
flash = st.session_state.pop(FLASH, None)
if flash:
    (st.success if flash["ok"] else st.error)(ui.md_escape(flash["message"]))

table = views.category_table(ws, scheme)
cats = categories.categories(ws, scheme)
left, right = st.columns(2)
left.metric("Categories", len(cats))
right.metric("Members", int(table["members"].sum()) if not table.empty else 0)
st.dataframe(table, hide_index=True, width="stretch")
if not cats:
    st.info("This scheme has no category left: add one below, or run a proposal again.")


def _assign() -> None:
    # The same assignment a round makes (core.categories.assign): every instruction without a
    # category of this scheme joins the nearest one; members already placed stay where they are.
    try:
        counts = categories.assign(ws, scheme, ExploreFilter())
    except ValueError as exc:
        st.session_state[FLASH] = {"ok": False, "message": str(exc)}
    else:
        st.session_state[FLASH] = {"ok": True, "message": f"Assigned {counts['assigned']} instructions."}


st.button("Assign unplaced instructions", key="cat_assign", on_click=_assign, disabled=not cats,
          help="Instructions that have no category in this scheme (new imports, members of a deleted "
               "category) join the category whose seeds they are closest to.")

# --------------------------------------------------------------------------------------------
# One category: edit in place, nearest members
# --------------------------------------------------------------------------------------------

if cats:
    by_id = {c["id"]: c for c in cats}
    chosen = st.selectbox("Category", list(by_id), key="cat_chosen",
                          format_func=lambda cid: ui.clip(f"{by_id[cid]['name']} ({by_id[cid]['members']} members)"))
    cat = by_id[chosen]
    st.caption(ui.md_escape(f"origin: {cat['origin']} · seeds: {cat['seeds']}"))

    def _save(cid: str) -> None:
        error = views.save_edit(ws, cid, get(f"cat_name_{cid}", ""), get(f"cat_description_{cid}", ""),
                                get(f"cat_criteria_{cid}", ""))
        st.session_state[FLASH] = {"ok": error is None, "message": error or "Saved."}

    def _delete(cid: str) -> None:
        categories.delete_category(ws, cid)
        st.session_state[FLASH] = {"ok": True, "message": "Deleted; its members are unassigned until the next "
                                                          "assignment."}

    # Widget keys per category: each keeps its own unsaved edits while another is shown.
    with st.container(border=True):
        st.text_input("Name", value=cat["name"], key=f"cat_name_{chosen}")
        st.text_input("Description", value=cat["description"], key=f"cat_description_{chosen}")
        st.text_area("Criteria (one per line)", value="\n".join(cat["criteria"]), key=f"cat_criteria_{chosen}",
                     height=140)
        st.button("Save", key=f"cat_save_{chosen}", on_click=_save, args=(chosen,), type="primary")
    confirm = st.checkbox("I want to delete this category", key=f"cat_confirm_{chosen}")
    st.button("Delete category", key=f"cat_delete_{chosen}", disabled=not confirm, on_click=_delete, args=(chosen,))

    st.subheader("Nearest members")
    members = views.nearest_members(ws, chosen, k=int(get("cat_k", 10)))
    if members.empty:
        st.info("No member yet: the next round (or `categories.assign`) puts instructions here.")
    else:
        st.dataframe(members, hide_index=True, width="stretch")
    st.number_input("Members shown", min_value=1, max_value=200, value=10, key="cat_k")

# --------------------------------------------------------------------------------------------
# The map, new categories, the teacher's proposals
# --------------------------------------------------------------------------------------------

st.subheader("Map")
colour = st.radio("Colour by", ["category", "task"], horizontal=True, key="cat_colour")
st.plotly_chart(charts.embedding_map(views.embedding_map_frame(ws, scheme), colour), key="cat_map")

with st.expander("Add a category"):
    def _add() -> None:
        try:
            categories.add_category(ws, scheme, get("cat_new_name", ""), get("cat_new_description", ""),
                                    get("cat_new_criteria", ""))
        except ValueError as exc:
            st.session_state[FLASH] = {"ok": False, "message": str(exc)}
        else:
            st.session_state[FLASH] = {"ok": True, "message": "Added."}

    st.text_input("Name", key="cat_new_name")
    st.text_input("Description", key="cat_new_description")
    st.text_area("Criteria (one per line)", key="cat_new_criteria")
    st.button("Add", key="cat_add", on_click=_add)

proposals = ws.store.category_proposals(scheme)
with st.expander(f"Teacher proposals ({len(proposals)})"):
    if not proposals:
        st.text("No proposal: the categories came from the recipe or a person.")
    for p in proposals:
        outcome = p["call_error"] or p["parse_error"] or f"{len(p['parsed'] or [])} categories parsed"
        st.text(f"{p['model']} · round {p['round']} · {len(p['sample_ids'])} instructions shown · {outcome}")
        st.code(p["raw"] or "(empty reply)", language=None, wrap_lines=True)
