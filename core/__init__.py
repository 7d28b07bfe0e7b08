"""Winnow's core: everything the pages and the CLI show is computed here. Never imports streamlit."""

__version__ = "0.1.0"
