"""Import: upload a file, check it (nothing written), then import it into a dataset."""

import re
from pathlib import Path

import pandas as pd
import streamlit as st

import ui
from core.ingest import CORPUS_SUFFIXES, FORMATS, RECORD_SUFFIXES, ImportRejected

st.set_page_config(page_title="Import · Winnow", page_icon="🌾", layout="wide")

ws = ui.workspace()
st.title("Import")

SUFFIXES = sorted({s.lstrip(".") for s in (*RECORD_SUFFIXES, *CORPUS_SUFFIXES)})


def default_dataset_name(file_name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9 ._\-]", "_", Path(file_name).stem).lstrip(" ._-")[:100]
    return stem or "dataset"


uploaded = st.file_uploader(f"File to import (up to {ui.MAX_UPLOAD_MB} MB)", type=SUFFIXES,
                            key="import_file", max_upload_size=ui.MAX_UPLOAD_MB)

if uploaded is None:
    st.info("Upload a file to check it. Nothing is written until you press Import, after the check.")
    st.markdown(
        "- **Records** (`.jsonl`, `.json`, `.csv`, `.parquet`): Alpaca pairs "
        "(`instruction`, `input`, `output`), prompts only (`instruction` or `prompt`), chats "
        "(`messages` or ShareGPT `conversations`), or preference pairs (`prompt`, `chosen`, `rejected`). "
        "The format is detected from the fields, or chosen below.\n"
        "- **Documents** (`.txt`, `.md`, `.rst`, `.html`): plain text split into passages, e.g. for "
        "instruction backtranslation.\n"
        f"- Larger files than {ui.MAX_UPLOAD_MB} MB, or whole folders: "
        "`winnow import PATH --dataset NAME` from a terminal."
    )
    st.session_state.pop("import_check", None)
else:
    # A new file proposes a dataset name from its file name (the user can change it).
    if st.session_state.get("import_for_file") != uploaded.file_id:
        st.session_state["import_for_file"] = uploaded.file_id
        st.session_state["import_dataset"] = default_dataset_name(uploaded.name)
        st.session_state.pop("import_check", None)
        st.session_state.pop("import_summary", None)

    left, right = st.columns(2)
    with left:
        dataset = st.text_input("Dataset name", key="import_dataset",
                                help="Letters, digits, spaces, '.', '_' or '-'. An existing name adds to that dataset.")
        fmt = st.selectbox("Format", ["auto", *FORMATS], key="import_format",
                           help="auto detects the format from the first record's fields (or the file suffix for documents).")
    with right:
        role = st.text_input("Response role", value="seed", key="import_role",
                             help="The role given to imported responses (seed, teacher, student, ...).")
        skip_invalid = st.checkbox("Skip invalid rows (import the valid ones and record the rejects)",
                                   key="import_skip_invalid")

    too_large = ui.upload_too_large(uploaded.size)
    if too_large:
        st.error(ui.md_escape(too_large))
        st.stop()

    options = {"file_id": uploaded.file_id, "format": fmt, "role": role}
    if st.button("Check", key="import_check_button", type="primary"):
        try:
            path, checks = ui.check_upload(ws, uploaded.name, uploaded.getvalue(), fmt, role)
        except (ValueError, ImportRejected) as exc:
            st.session_state.pop("import_check", None)
            st.error(ui.md_escape(exc))
        else:
            st.session_state["import_check"] = options | {"path": str(path), "checks": checks}
            st.session_state.pop("import_summary", None)

    stored = st.session_state.get("import_check")
    current = stored is not None and all(stored[k] == v for k, v in options.items())
    if stored is not None and not current:
        st.info("The format or role changed since the check: press Check again.")

    if current:
        checks = stored["checks"]
        n_read = sum(c.n_read for c in checks)
        n_valid = sum(c.n_valid for c in checks)
        n_invalid = sum(len(c.rejected) + (1 if c.fatal else 0) for c in checks)
        st.subheader("Check")
        cols = st.columns(4)
        cols[0].metric("Detected format", ", ".join(sorted({c.format for c in checks})))
        cols[1].metric("Rows read", f"{n_read:,}")
        cols[2].metric("Valid", f"{n_valid:,}")
        cols[3].metric("Invalid", f"{n_invalid:,}")
        st.dataframe(ui.checks_frame(checks), hide_index=True, width="stretch", key="import_checks_table")
        problems = ui.check_problems(checks)
        if problems:
            st.warning(f"{n_invalid:,} problem{'s' if n_invalid != 1 else ''} found. Without "
                       "“Skip invalid rows” nothing will be imported.")
            st.code("\n".join(problems), language=None, wrap_lines=True)
        else:
            st.success("Every row is valid.")
        preview = ui.records_preview(checks)
        if not preview.empty:
            st.text("First records as they will be imported")
            st.dataframe(preview, hide_index=True, width="stretch", key="import_preview_table")

        if st.button("Import", key="import_button", type="primary"):
            try:
                summary = ws.import_paths([Path(stored["path"])], dataset, ui.format_arg(fmt),
                                          skip_invalid=skip_invalid, role=role, checks=checks)
            except ImportRejected as exc:
                st.error(ui.md_escape(exc))
                if not skip_invalid and not any(c.fatal for c in checks):
                    st.info("Tick “Skip invalid rows” to import the valid rows and record the invalid ones.")
            except ValueError as exc:  # a bad dataset name or role
                st.error(ui.md_escape(exc))
            else:
                st.session_state["import_summary"] = summary
                st.session_state.pop("import_check", None)

    summary = st.session_state.get("import_summary")
    if summary is not None:
        st.success(f"Imported into “{ui.md_escape(summary.dataset)}”: {summary.n_new:,} new, "
                   f"{sum(f['new_responses'] for f in summary.files):,} new responses, "
                   f"{sum(f['duplicates'] for f in summary.files):,} duplicates skipped, "
                   f"{summary.n_rejected:,} rejected rows recorded.")
        st.dataframe(pd.DataFrame(summary.files), hide_index=True, width="stretch", key="import_summary_table")
        st.page_link("app_pages/2_Explore.py", label="Explore the imported samples", icon=":material/search:")

st.divider()
st.subheader("Recent imports")
imports = ws.imports()
if imports.empty:
    st.text("No imports yet.")
else:
    st.dataframe(imports, hide_index=True, width="stretch", key="import_recent_table")

st.subheader("Rejected rows")
rejects = ws.rejects()
if rejects.empty:
    st.text("No rejected rows.")
else:
    st.caption(f"The latest {len(rejects):,} rows rejected on import (invalid rows skipped with “Skip invalid rows”).")
    st.dataframe(rejects, hide_index=True, width="stretch", key="import_rejects_table")
