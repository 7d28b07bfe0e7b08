"""Winnow's entry point (`streamlit run app.py`): the router. It names the pages, in the order a
round goes (import, judge, review, curate), and runs the one the browser asked for; Home is the
default. Every page sets its own page config; the one here covers the moment before it runs."""

import streamlit as st

import ui

st.set_page_config(page_title="Winnow", page_icon="🌾", layout="wide")

# (file, sidebar title, icon) per section. The URL of each page stays the one the app_pages/ folder
# gave it before the router existed (/Explore, /Jobs, ...): st.Page infers it from the file name.
HOME = ("app_pages/0_Home.py", "Home", ":material/home:")
SECTIONS: dict[str, list[tuple[str, str, str]]] = {
    "Data": [
        ("app_pages/1_Import.py", "Import", ":material/upload_file:"),
        ("app_pages/2_Explore.py", "Explore", ":material/search:"),
    ],
    "Models & jobs": [
        ("app_pages/4_Models.py", "Models", ":material/smart_toy:"),
        ("app_pages/5_Jobs.py", "Jobs", ":material/rocket_launch:"),
    ],
    "Review": [
        ("app_pages/9_Review.py", "Review", ":material/rate_review:"),
        ("app_pages/6_Judgments.py", "Judgments", ":material/balance:"),
    ],
    "Curate": [
        ("app_pages/7_Difficulty_and_Tasks.py", "Difficulty & tasks", ":material/insights:"),
        ("app_pages/8_Curate.py", "Curate", ":material/filter_alt:"),
        ("app_pages/3_Export.py", "Export", ":material/download:"),
    ],
    "Train": [
        ("app_pages/10_Train.py", "Train", ":material/model_training:"),
        ("app_pages/11_Rounds.py", "Rounds", ":material/autorenew:"),
    ],
    "Methods": [  # each method's own data, as its rounds make it
        ("app_pages/12_Preferences.py", "Preferences", ":material/thumbs_up_down:"),            # Zephyr
        ("app_pages/13_Rankings.py", "Rankings", ":material/format_list_numbered:"),            # Tuna
        ("app_pages/14_Backtranslation.py", "Backtranslation", ":material/swap_horiz:"),        # Humpback
        ("app_pages/15_Categories.py", "Categories", ":material/category:"),                    # CITING
        ("app_pages/16_Revisions.py", "Revisions", ":material/difference:"),                    # CITING
    ],
}


def navigation() -> dict[str, list]:
    home = st.Page(HOME[0], title=HOME[1], icon=HOME[2], default=True)
    pages = {"": [home]}  # no header above Home
    for section, entries in SECTIONS.items():
        pages[section] = [st.Page(path, title=title, icon=icon) for path, title, icon in entries]
    return pages


page = st.navigation(navigation())
ui.raw_toggle()  # one sidebar switch for every page: model text as rendered markdown, or exact
page.run()
