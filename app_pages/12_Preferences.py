"""Preferences: the AI-feedback pairs (Zephyr's binarised ratings), chosen and rejected side by side
with their aspect ratings, a human verdict on each, and how far the AI judge agrees with people.

View logic lives in core.preferences_views; verdicts are reviews of the pair (core.feedback.
record_pair_verdict), the same the Explore page and calibration read."""

import pandas as pd
import streamlit as st

import ui
from core import feedback
from core import preferences_views as views

st.set_page_config(page_title="Preferences · Winnow", page_icon="⚖️", layout="wide")

ws = ui.workspace()
st.title("Preferences")
st.caption("Pairs an AI judge made: several models answered each prompt, the judge rated every answer on "
           "helpfulness, honesty, instruction following and truthfulness, the best mean became *chosen* and a "
           "random lower one *rejected*. Say which answer you think is better: your verdicts measure the judge.")

facets = views.facets(ws)
if facets.empty:
    st.info(views.EMPTY)
    st.stop()

FLASH = "prefs_flash"
LABELS = {"chosen": "Chosen is better", "rejected": "Rejected is better", "tie": "Tie"}


def _save(pair_id: str, better: str) -> None:
    try:
        feedback.record_pair_verdict(ws, pair_id, better, reviewer=ui.reviewer())
        st.session_state[FLASH] = (True, f"Saved: {LABELS[better].lower()}.")
    except ValueError as exc:
        st.session_state[FLASH] = (False, str(exc))


left, mid, right = st.columns([2, 1, 1])
judge_model = left.selectbox("Judge", [views.ALL, *facets.judges], key="prefs_judge",
                             format_func=lambda j: "every judge" if j is None else j)
round_ = mid.selectbox("Round", [views.ALL, *facets.rounds], key="prefs_round",
                       format_func=lambda r: "every round" if r is None else f"round {r}")
limit = right.selectbox("Pairs shown", [10, 25, 50, 100], key="prefs_limit")

agreement = views.agreement(ws, judge_model, round_)
a, b, c = st.columns(3)
a.metric("Agreement with people", ui.interval(agreement.agreement),
         help="Share of your non-tie verdicts where you also prefer the chosen answer (Wilson 95% interval).")
b.metric("τ (margin, human)", views.tau_text(agreement),
         help="Kendall τ-b between the judge's margin and your preference (+1 chosen, 0 tie, −1 rejected), "
              "with a bootstrap 95% interval: positive when larger margins are the pairs you agree with.")
c.metric("Human verdicts", f"{agreement.n_verdicts} ({agreement.n_ties} ties)")

flash = st.session_state.pop(FLASH, None)
if flash:
    (st.success if flash[0] else st.error)(ui.md_escape(flash[1]))

cards = views.pair_cards(ws, judge_model, round_, limit)
if not cards:
    st.info("No pair matches these filters: choose every judge or every round.")
    st.stop()
st.caption(f"{len(cards)} pair(s), largest margin first.")

for card in cards:
    pid = card["pair_id"]
    with st.container(border=True):
        st.markdown(f"**Round {card['round']}** · judge {ui.md_escape(card['judge_model'])} ({card['mode']} mode) · "
                    f"margin **{card['margin']:.2f}** · your verdict: *{card['verdict']}*")
        ui.show_text(card["instruction"] + (f"\n\n{card['input']}" if card.get("input") else ""), key=f"prefs_i_{pid}")
        col_c, col_r = st.columns(2)
        for col, side in ((col_c, "chosen"), (col_r, "rejected")):
            with col:
                model = card[f"{side}_model"] or card[f"{side}_role"]
                st.markdown(f"**{side.capitalize()}** · {ui.md_escape(model)} · mean {card[f'{side}_score']:.2f}")
                ui.show_text(card[side], key=f"prefs_{side}_{pid}")
                rows = card[f"{side}_aspects"]
                if rows:
                    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
        b1, b2, b3 = st.columns(3)
        for col, better in ((b1, "chosen"), (b2, "rejected"), (b3, "tie")):
            col.button(LABELS[better], key=f"prefs_{better}_btn_{pid}", on_click=_save, args=(pid, better),
                       width="stretch")
