"""Plotly figures built from the DataFrames that the workspace queries return.

Pure functions: a DataFrame in, a `plotly.graph_objects.Figure` out. No streamlit here (the
pages only pass the figure to `st.plotly_chart`), so tests can check a figure's data directly.

Category labels (task names, dataset names, roles) come from imported data. Plotly renders a
small subset of HTML in text (`<b>`, `<br>`, `<a href>`), so every label is HTML-escaped and
shows literally.
"""

from __future__ import annotations

import html

import pandas as pd
import plotly.graph_objects as go

BAR_COLOUR = "#4C78A8"
MAX_BARS = 40  # a bar chart with more categories is unreadable; the rest are summed into "(other)"


def _label(value) -> str:
    return "(none)" if value is None or (isinstance(value, float) and pd.isna(value)) else html.escape(str(value))


def _empty(title: str, message: str = "nothing to show") -> go.Figure:
    fig = go.Figure()
    fig.update_layout(title=title, xaxis={"visible": False}, yaxis={"visible": False}, height=260,
                      annotations=[{"text": message, "showarrow": False, "xref": "paper", "yref": "paper",
                                    "x": 0.5, "y": 0.5}])
    return fig


def length_histogram(df: pd.DataFrame, bin_width: int, title: str = "Instruction length (characters, input included)") -> go.Figure:
    """Bars from `Workspace.length_histogram`: columns `bin_start` and `n`, one bar per bin."""
    if bin_width < 1:
        raise ValueError(f"bin_width must be positive, not {bin_width}")
    if df is None or df.empty:
        return _empty(title, "no instruction matches the filters")
    starts = df["bin_start"].astype(int).tolist()
    counts = df["n"].astype(int).tolist()
    fig = go.Figure(go.Bar(
        x=starts, y=counts, width=[bin_width] * len(starts), offset=0, marker_color=BAR_COLOUR,
        customdata=[s + bin_width - 1 for s in starts],
        hovertemplate="%{x}–%{customdata} chars: %{y}<extra></extra>",
    ))
    fig.update_layout(title=title, xaxis_title="characters", yaxis_title="instructions", bargap=0.05,
                      height=280, margin={"t": 40, "b": 40, "l": 50, "r": 10})
    return fig


def count_bars(df: pd.DataFrame, category: str, value: str, title: str, max_bars: int = MAX_BARS) -> go.Figure:
    """Horizontal bars, largest first: e.g. instructions per task or per dataset."""
    if df is None or df.empty:
        return _empty(title)
    data = df[[category, value]].copy()
    data[value] = data[value].astype(int)
    data = data.sort_values(value, ascending=False, kind="stable")
    if len(data) > max_bars:
        rest = int(data[value].iloc[max_bars - 1:].sum())
        data = pd.concat([data.iloc[: max_bars - 1],
                          pd.DataFrame({category: ["(other)"], value: [rest]})], ignore_index=True)
    labels = [_label(v) for v in data[category]]
    fig = go.Figure(go.Bar(x=data[value].tolist()[::-1], y=labels[::-1], orientation="h",
                           marker_color=BAR_COLOUR, hovertemplate="%{y}: %{x}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title=value, height=max(220, 28 * len(labels) + 80),
                      margin={"t": 40, "b": 40, "l": 10, "r": 10})
    fig.update_yaxes(automargin=True, type="category")
    return fig
