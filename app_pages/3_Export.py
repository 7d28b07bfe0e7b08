"""Export: a selection of the workspace → a training file under the workspace's exports/ folder."""

from pathlib import Path

import pandas as pd
import streamlit as st

import ui
from core.export import EXPORT_FORMATS, FILE_TYPES, ExportError
from core.workspace import ExploreFilter

st.set_page_config(page_title="Export · Winnow", page_icon="🌾", layout="wide")

ws = ui.workspace()
st.title("Export")

FORMAT_HELP = {
    "alpaca": "alpaca: {instruction, input, output} — one record per response of the chosen roles",
    "messages": "messages: {messages: [...]} — TRL's conversational SFT format, one record per response",
    "preference": "preference: {prompt, chosen, rejected} — TRL's DPO format, one record per preference pair",
    "prompts": "prompts: {instruction, input} — instructions only, e.g. to generate answers elsewhere",
}
MIME = {"jsonl": "application/jsonl", "parquet": "application/vnd.apache.parquet"}

options = ws.filter_options()
if not options["datasets"]:
    st.info("The workspace is empty: import data first.")
    st.page_link("app_pages/1_Import.py", label="Import a file", icon=":material/upload_file:")
    st.stop()

left, right = st.columns(2)
with left:
    fmt = st.selectbox("Format", EXPORT_FORMATS, key="export_format", format_func=FORMAT_HELP.get)
    file_type = st.radio("File type", FILE_TYPES, horizontal=True, key="export_file_type")
    name = st.text_input("File name", key="export_name", placeholder=fmt,
                         help="Written under the workspace's exports/ folder; the suffix follows the file type.")
with right:
    datasets = st.multiselect("Datasets", options["datasets"], key="export_datasets", placeholder="all datasets")
    tasks = st.multiselect("Tasks", options["tasks"], key="export_tasks", placeholder="all tasks")
    roles: list[str] | None = None
    exclude_rejected = False
    if fmt in ("alpaca", "messages"):
        default_roles = ["seed"] if "seed" in options["roles"] else options["roles"][:1]
        roles = st.multiselect("Response roles", options["roles"], default=default_roles, key="export_roles",
                               help="One record per response of these roles.")
        exclude_rejected = st.checkbox("Exclude samples whose latest human decision is reject", value=True,
                                       key="export_exclude_rejected")
    else:
        st.caption("Human edits of responses are applied; reject decisions only filter alpaca and messages exports.")

selection = ExploreFilter(datasets=datasets, tasks=tasks)
path = ui.export_path(ws, name or fmt, file_type)
st.text(f"{ws.explore_count(selection):,} instructions selected · writes {path}"
        + (" (replacing the existing file)" if path.exists() else ""))

if st.button("Export", key="export_button", type="primary"):
    if roles is not None and not roles:
        st.error("Choose at least one response role.")
    else:
        try:
            result = ws.export(fmt, path, selection, roles=roles, exclude_rejected=exclude_rejected,
                               file_type=file_type)
        except (ExportError, ValueError) as exc:
            st.session_state.pop("export_result", None)
            st.error(ui.md_escape(exc))
        else:
            st.session_state["export_result"] = {"path": str(result.path), "format": result.format,
                                                 "n_records": result.n_records}

result = st.session_state.get("export_result")
if result and Path(result["path"]).exists():
    out = Path(result["path"])
    st.success(f"Wrote {result['n_records']:,} {result['format']} records.")
    st.code(str(out), language=None)
    st.download_button(f"Download {out.name}", data=out.read_bytes if out.stat().st_size else b"",
                       file_name=out.name, mime=MIME.get(out.suffix.lstrip("."), "application/octet-stream"),
                       on_click="ignore", key="export_download")
    st.text("First records")
    st.dataframe(ui.file_preview(out), hide_index=True, width="stretch", key="export_preview")

files = ws.export_files()
if files:
    st.subheader("Files in exports/")
    st.dataframe(pd.DataFrame(files), hide_index=True, width="stretch", key="export_files")
