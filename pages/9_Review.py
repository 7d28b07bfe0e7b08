"""Review: one record at a time from a filter, a snapshot or a judge's suggestions (in progress)."""

import streamlit as st

import ui

st.set_page_config(page_title="Review · Winnow", page_icon="🌾", layout="wide")
ws = ui.workspace()
st.title("Review")
st.info("The review queue is being built.")
