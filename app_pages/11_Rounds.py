"""Rounds: start a recipe's rounds (core.rounds.start_run), follow them live, compare two rounds.

The page never drives a run: the app's owner thread advances every active run (core.owner), so
closing the browser loses nothing. Everything shown is read from the catalog and the job folders
(through core.rounds and core.rounds_views), so a reloaded browser finds the same state; the
comparison is `core.rounds.compare`, the same numbers `winnow round compare --json` prints."""

import streamlit as st

import ui
from core import charts, rounds
from core import rounds_views as views
from core.recipes import RecipeError, load_recipe

st.set_page_config(page_title="Rounds · Winnow", page_icon="🌾", layout="wide")

ws = ui.workspace()
st.title("Rounds")
st.caption("A recipe's rounds: each round finds what the student has not learned, builds a training set from it, "
           "trains the next model and evaluates it against the one it started from. The app runs the rounds in "
           "the background; this page starts them and shows where they are.")
get = st.session_state.get

WHAT_TO_DO = "run `winnow round run recipes/tapir-tiny.yaml` or press Start"
SOURCES = {"file": "A shipped recipe", "upload": "Upload a YAML file", "paste": "Paste YAML"}
ERRORS = (RecipeError, ValueError, FileNotFoundError, OSError)
RUN_FLASH = "rounds_run_flash"


def _flash(ok: bool, message: str, key: str = "rounds_flash") -> None:
    st.session_state[key] = {"ok": ok, "message": message}


def _show_flash(key: str = "rounds_flash") -> None:
    """A callback's outcome, once; the start form and the run panel each have their own key."""
    flash = st.session_state.pop(key, None)
    if flash:
        (st.success if flash["ok"] else st.error)(ui.md_escape(flash["message"]))


# --------------------------------------------------------------------------------------------
# Start a recipe
# --------------------------------------------------------------------------------------------


def _recipe_text() -> tuple[str | None, str | None]:
    """(what load_recipe reads, the YAML text) of the chosen source; (None, None) when empty."""
    source = get("rounds_source", "file")
    if source == "file":
        path = get("rounds_recipe_file")
        if not path:
            return None, None
        return path, open(path, encoding="utf-8").read()
    if source == "upload":
        upload = get("rounds_upload")
        if upload is None:
            return None, None
        text = upload.getvalue().decode("utf-8", errors="replace")
        return text, text
    text = get("rounds_yaml") or ""
    return (text, text) if text.strip() else (None, None)


def _load():
    """The chosen recipe with the rounds override (a RecipeError names the bad key); None when empty."""
    source, _ = _recipe_text()
    if source is None:
        return None
    override = get("rounds_rounds")
    return load_recipe(source, int(override) if override else None)


def _start() -> None:
    """Start button: nothing is written unless the recipe is valid and names known models."""
    try:
        recipe = _load()
        if recipe is None:
            raise ValueError("choose, upload or paste a recipe first")
        missing = views.missing_models(ws, recipe)
        if missing:
            raise ValueError(f"the recipe names models this workspace does not have: {', '.join(missing)}")
        status = rounds.start_run(ws, recipe)
    except ERRORS as exc:
        _flash(False, str(exc))
        return
    notes = "; ".join(status.get("prepared") or [])
    n = status["rounds_wanted"]
    _flash(True, f"Started run {status['name']} ({n} round{'s' if n != 1 else ''})" + (f": {notes}." if notes else ".")
           + " The app advances it in the background.")
    st.session_state["rounds_run"] = status["name"]


def start_form(existing: dict[str, dict]) -> None:
    st.subheader("Start a recipe")
    st.radio("Recipe", list(SOURCES), format_func=SOURCES.get, key="rounds_source", horizontal=True)
    source = get("rounds_source")
    if source == "file":
        files = views.recipe_files()
        if not files:
            st.info(f"No recipe in {views.RECIPES_DIR}: upload or paste one.")
            return
        st.selectbox("Shipped recipe", [str(p) for p in files], key="rounds_recipe_file",
                     format_func=lambda p: next(f.name for f in files if str(f) == p))
    elif source == "upload":
        st.file_uploader("Recipe YAML", type=["yaml", "yml"], key="rounds_upload",
                         help="Relative data.files paths are read from the folder the app runs in.")
    else:
        st.text_area("Recipe YAML", key="rounds_yaml", height=220, placeholder="name: my-run\nmethod: tapir\n…",
                     help="Relative data.files paths are read from the folder the app runs in.")
    st.number_input("Rounds (empty: the recipe's)", min_value=1, value=None, step=1, key="rounds_rounds")

    problem, recipe, text = None, None, None
    try:
        _, text = _recipe_text()
        recipe = _load()
    except ERRORS as exc:
        problem = str(exc)
    if text:
        comment = views.recipe_comment(text)
        if comment:
            st.text(comment)
    if problem:
        st.error(ui.md_escape(f"This recipe cannot start: {problem}"))
    missing = []
    if recipe is not None:
        st.dataframe(views.recipe_facts(recipe), hide_index=True, key="rounds_recipe_facts")
        missing = views.missing_models(ws, recipe)
        if missing:
            st.warning(ui.md_escape(f"The recipe names models this workspace does not have: {', '.join(missing)}. "
                                    "Add them on the Models page (or under the recipe's register:) first."))
        run = existing.get(recipe.name)
        if run is not None:
            st.info(ui.md_escape(f"A run named {recipe.name} exists ({run['status']}): Start continues it with "
                                 f"{recipe.rounds} rounds in all and retries a failed step; finished steps are kept."))
    st.button("Start", type="primary", key="rounds_start", on_click=_start,
              disabled=recipe is None or bool(problem) or bool(missing))
    _show_flash()


# --------------------------------------------------------------------------------------------
# A run: its rounds and their steps (a fragment: while the run is active, every 2 seconds)
# --------------------------------------------------------------------------------------------


def _retry(name: str) -> None:
    run = next((r for r in rounds.runs(ws) if r["name"] == name), None)
    if run is None:
        _flash(False, f"no run named {name}", RUN_FLASH)
        return
    try:
        rounds.start_run(ws, rounds.recipe_from_dict(run["recipe"]))
    except ERRORS as exc:
        _flash(False, str(exc), RUN_FLASH)
    else:
        _flash(True, f"Retrying run {name}: its failed step runs again.", RUN_FLASH)


def _step_progress(step: dict) -> None:
    p = views.step_progress(step)
    if not p or not p["total"]:
        return
    extra = []
    if p["tokens_per_s"]:
        extra.append(f"{p['tokens_per_s']:,.0f} tokens/s")
    if p["eta_s"] is not None:
        extra.append(f"ETA {ui.duration(p['eta_s'])}")
    st.progress(min(p["done"] / p["total"], 1.0),
                text=f"{step['name']}: {p['done']:,} / {p['total']:,}" + (" · " + " · ".join(extra) if extra else ""))


def round_detail(r: dict) -> None:
    label = f"Round {r['number']}: {r['student']} → {r['model'] or '…'} · {r['status']}"
    with st.expander(label, expanded=r["status"] != "done"):
        if r.get("error"):
            st.error(ui.md_escape(r["error"]))
        for step in r["steps"]:
            if step["status"] == "running":
                _step_progress(step)
        frame = views.steps_frame(r)
        frame["ETA s"] = [ui.duration(s) if s is not None else "" for s in frame["ETA s"]]
        st.dataframe(frame.rename(columns={"ETA s": "ETA"}), hide_index=True, width="stretch",
                     key=f"rounds_steps_{r['id']}",
                     column_config={"tokens/s": st.column_config.NumberColumn("tokens/s", format="%.0f")})
        for step in r["steps"]:
            link = views.step_link(step)
            if link:
                st.page_link(link["page"], label=link["label"], query_params=link["query_params"] or None,
                             icon=":material/model_training:" if step["kind"] == "train" else ":material/rocket_launch:")


def run_panel(name: str, live: bool, n_done: int) -> None:
    try:
        status = rounds.run_status(ws, name)
    except ValueError as exc:
        st.error(ui.md_escape(exc))
        return
    done = sum(r["status"] == "done" for r in status["rounds"])
    if views.is_live(status) != live or done != n_done:
        st.rerun()  # the whole page: start or stop the refresh, offer a finished round for comparison
    cols = st.columns(4)
    cols[0].metric("Run status", status["status"])
    cols[1].metric("Rounds done", f"{done} / {status['rounds_wanted']}")
    cols[2].metric("Method", status["method"])
    cols[3].metric("Recipe", (status["source"] or "(not a file)").rsplit("/", 1)[-1], help=status["source"])
    if status["status"] == "failed":
        st.error(ui.md_escape(f"The run stopped: {status['error']}"))
        st.button("Retry", key=f"rounds_retry_{name}", on_click=_retry, args=(name,),
                  help="Start the run again with its stored recipe: the failed step runs again, finished steps are kept.")
    elif live:
        current = next((r for r in status["rounds"] if r["status"] != "done"), None)
        st.caption("Active: the app advances it in the background" +
                   (f" (round {current['number']})." if current else " (the next round starts shortly)."))
    _show_flash(RUN_FLASH)
    if not status["rounds"]:
        st.text("No round has started yet." + (" It starts within a few seconds." if live else ""))
        return
    st.dataframe(views.timeline_frame(status), hide_index=True, width="stretch", key="rounds_timeline",
                 column_config={"α": st.column_config.NumberColumn("α", format="%.2f")})
    for r in status["rounds"]:
        round_detail(r)
    with st.expander("Steps over time"):
        st.plotly_chart(charts.round_timeline(views.steps_timeline_frame(status)), key="rounds_timeline_chart")


# --------------------------------------------------------------------------------------------
# Compare two rounds
# --------------------------------------------------------------------------------------------


def _round_row(statuses: list[dict], ref: str) -> dict:
    return next(r for s in statuses for r in s["rounds"] if r["id"] == ref)


def compare_section(statuses: list[dict], selected: str, recipes: dict[str, dict]) -> None:
    st.subheader("Compare two rounds")
    options = views.comparable_rounds(statuses)
    if not options:
        st.info(f"No finished round to compare yet: {WHAT_TO_DO}, and wait for a round to finish.")
        return
    own = [o for o in options if o.split("/")[0] == selected] or options
    if get("rounds_cmp_a") not in options:
        st.session_state["rounds_cmp_a"] = own[0]
    if get("rounds_cmp_b") not in options:
        st.session_state["rounds_cmp_b"] = own[-1]
    c1, c2 = st.columns(2)
    a = c1.selectbox("Round A", options, key="rounds_cmp_a")
    b = c2.selectbox("Round B", options, key="rounds_cmp_b")
    try:
        cmp = rounds.compare(ws, a, b)
    except ValueError as exc:
        st.error(ui.md_escape(exc))
        return
    cols = st.columns(5)
    for i, side in enumerate(("a", "b")):
        f = cmp[side]
        ev = f.get("evaluation") or {}
        cols[2 * i].metric(f"Win rate · {f['round']}", views.rate_text(ev.get("win_rate")),
                           help=f"{f['model']} vs {f['student']}: {views.win_text(ev)}")
        cols[2 * i + 1].metric(f"Exact match · {f['round']}", views.rate_text(ev.get("exact_match_a")),
                               help=f"{f['model']}: {views.exact_text(ev, 'a')}; its start {f['student']}: "
                                    f"{views.exact_text(ev, 'b')}")
    shift = cmp.get("mfd_shift")
    cols[4].metric("Mean MFD shift", "—" if shift is None else f"{shift:+.2f}",
                   help="Mean MFD of B minus A: below 0, the student finds the pool easier.")
    st.dataframe(views.comparison_frame(cmp), hide_index=True, width="stretch", key="rounds_cmp_table")
    head = cmp.get("head_to_head")
    if head:
        st.text(f"Head to head: {head['line']}")
    elif cmp["a"]["model"] and cmp["b"]["model"] and a != b:
        recipe = recipes.get(b.split("/")[0]) or {}
        judge = (recipe.get("evaluate") or {}).get("judge") or recipe.get("judge") or "JUDGE"
        st.caption(ui.md_escape(
            f"No head-to-head evaluation of {cmp['b']['model']} and {cmp['a']['model']} yet: "
            f"winnow eval -m {cmp['b']['model']} -b {cmp['a']['model']} -d {recipe.get('heldout', 'HELDOUT')} "
            f"-j {judge}"))
    left, right = st.columns(2)
    with left:
        st.plotly_chart(charts.interval_points(views.win_rate_frame(cmp), "comparison", "win_rate",
                                               "Win rate (95% interval; 0.5: no better)", "win rate", reference=0.5),
                        key="rounds_win_chart")
    with right:
        st.plotly_chart(charts.interval_points(views.exact_match_frame(cmp), "model", "exact_match",
                                               "Exact match on the held-out prompts (95% interval)", "exact match"),
                        key="rounds_exact_chart")
    frame, width = views.mfd_overlay_frame(cmp)
    delta = ((_round_row(statuses, a).get("metrics") or {}).get("delta"))
    left, right = st.columns(2)
    with left:
        st.plotly_chart(charts.mfd_overlay(frame, width, delta), key="rounds_mfd_chart")
    with right:
        st.plotly_chart(charts.round_task_mix(views.task_mix_frame(cmp)), key="rounds_mix_chart")


# --------------------------------------------------------------------------------------------
# The page
# --------------------------------------------------------------------------------------------

runs = views.newest_first(rounds.runs(ws))
by_name = {r["name"]: r for r in runs}
with st.expander("Start a recipe", expanded=not runs):
    start_form(by_name)

st.subheader("Runs")
if not runs:
    st.info(f"No round run yet: {WHAT_TO_DO}.")
else:
    statuses = {r["name"]: rounds.run_status(ws, r["name"]) for r in runs}
    names = list(by_name)
    if get("rounds_run") not in names:
        wanted = st.query_params.get("run")
        st.session_state["rounds_run"] = wanted if wanted in names else names[0]
    selected = st.selectbox("Run", names, key="rounds_run",
                            format_func=lambda n: views.run_label(by_name[n], statuses[n]))
    live = views.is_live(statuses[selected])
    n_done = sum(r["status"] == "done" for r in statuses[selected]["rounds"])
    st.fragment(run_panel, run_every=2 if live else None)(selected, live, n_done)
    compare_section(list(statuses.values()), selected, {r["name"]: r["recipe"] for r in runs})
