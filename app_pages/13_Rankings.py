"""Rankings: Tuna's ranked answers (core.ranking), read through core.rankings_views.

Choose a method and round; per prompt the N answers in rank order with their scores (the
teacher's mean log-prob for probabilistic rankings; the judge's rank and the shuffled place each
answer was shown at for contextual ones), the invalid verdicts with the judge's raw text, counts,
and a download of the rankings or of TRL preference pairs."""

import streamlit as st

import ui
from core import rankings_views as views

st.set_page_config(page_title="Rankings · Winnow", page_icon="🌾", layout="wide")

ws = ui.workspace()
st.title("Rankings")
st.caption("Tuna's rankings: a teacher's several answers to a prompt ordered by its own mean token log-prob "
           "(probabilistic), or a judge's listwise order of a model's own answers, shown to it shuffled "
           "(contextual). A Tuna round trains on them with a margin ranking loss.")

keys = views.ranking_keys(ws)
if not keys:
    st.info("No ranking yet. Run a Tuna round (`winnow round run recipes/tuna-tiny.yaml`, or Start on the Rounds "
            "page), or generate several answers per prompt (Jobs page: generate with n ≥ 2) and rank them.")
    st.stop()

totals = views.totals(keys)
cols = st.columns(4)
cols[0].metric("Probabilistic rankings", totals["probabilistic"]["valid"])
cols[1].metric("Contextual rankings (valid)", totals["contextual"]["valid"])
cols[2].metric("Contextual verdicts invalid", totals["contextual"]["invalid"])
cols[3].metric("Ranked sets of answers", len(keys))

methods = sorted({k["method"] for k in keys}, key=lambda m: m != "probabilistic")
method = st.radio("Method", methods, key="rankings_method", horizontal=True,
                  format_func=lambda m: views.METHOD_LABELS.get(m, m))
choices = [k for k in keys if k["method"] == method]
index = st.selectbox("Round and answers", range(len(choices)), key="rankings_key",
                     format_func=lambda i: views.key_label(choices[i]))
key = choices[index if index is not None and index < len(choices) else 0]

only_invalid = False
if key["invalid"]:
    only_invalid = st.toggle(f"Only the {key['invalid']} invalid verdicts", key="rankings_only_invalid")
page_state = "rankings_page"
found = views.cards(ws, key, st.session_state.get(page_state, 0), only_invalid=only_invalid)
if found["pages"] > 1:
    page = st.number_input(f"Page (of {found['pages']})", 1, found["pages"], found["page"] + 1, key="rankings_page_in")
    st.session_state[page_state] = int(page) - 1
    found = views.cards(ws, key, int(page) - 1, only_invalid=only_invalid)
st.caption(f"{found['n']} prompts · page {found['page'] + 1} of {found['pages']}")

for i, card in enumerate(found["cards"]):
    # An expander's label is markdown that links bare URLs and loads images even when escaped: the
    # prompt's own words go inside (as safe markdown), the label only names it.
    title = f"prompt {card['instruction_id'][:8]} · {len(card['answers'])} answers"
    with st.expander(("" if card["valid"] else "⚠ invalid · ") + title, expanded=i < 3):
        ui.show_text(card["instruction"] + (f"\n\n{card['input']}" if card["input"] else ""), "Prompt")
        if not card["valid"]:
            st.error(ui.md_escape(f"Invalid ranking: {card['parse_error']}"))
        for a in card["answers"]:
            ui.show_text(a["text"], a["label"], height=200)
        if card["raw"]:
            st.text("The judge wrote")
            ui.show_text(card["raw"], markdown=False, height=160)

st.subheader("Download")
what = st.radio("Export", list(views.EXPORTS), key="rankings_export", format_func=views.EXPORTS.get, horizontal=True)
data, filename, n = views.export_file(ws, key, what)
st.caption(f"{n} lines of JSONL from the valid rankings of this round and method"
           + (" (TRL's conversational prompt/chosen/rejected format)" if what != "rankings" else ""))
st.download_button("Download JSONL", data, file_name=filename, mime="application/jsonl", key="rankings_download",
                   disabled=n == 0)
