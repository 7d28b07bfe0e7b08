"""Plotly figures built from the DataFrames that the workspace queries return.

Pure functions: a DataFrame in, a `plotly.graph_objects.Figure` out. No streamlit here (the
pages only pass the figure to `st.plotly_chart`), so tests can check a figure's data directly.

Category labels (task names, dataset names, roles) come from imported data. Plotly renders a
small subset of HTML in text (`<b>`, `<br>`, `<a href>`), so every label is HTML-escaped and
shows literally.
"""

from __future__ import annotations

import html
import math

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


# --------------------------------------------------------------------------------------------
# Judgments
# --------------------------------------------------------------------------------------------

UNPARSED = "unparsed"
ROLE_COLOURS = ["#4C78A8", "#F58518", "#54A24B", "#B279A2", "#E45756", "#72B7B2", "#EECA3B", "#9D755D"]


def score_bin_label(bin_start, bin_width: float) -> str:
    """The x label of one score bin ("4", "4.5–5"); "unparsed" for targets with no parsed verdict."""
    if bin_start is None or (isinstance(bin_start, float) and pd.isna(bin_start)):
        return UNPARSED
    start = float(bin_start)
    if float(bin_width) == 1 and start.is_integer():
        return f"{start:g}"
    return f"{start:g}–{start + float(bin_width):g}"


def score_bins(df: pd.DataFrame, bin_width: float, scale_min: float | None = None,
               scale_max: float | None = None) -> dict[str, float | None]:
    """Every bin the score histogram shows, in order: label → bin_start (None for "unparsed").

    The rubric's whole scale is shown (empty bins included) so the bars keep their place when a
    filter changes; bins seen outside the scale are added; "unparsed" comes last when present."""
    w = float(bin_width)
    if w <= 0:
        raise ValueError(f"bin_width must be positive, not {bin_width}")
    starts: set[float] = set()
    if scale_min is not None and scale_max is not None:
        k = int(math.floor(float(scale_min) / w))
        while k * w <= float(scale_max) + 1e-9:
            starts.add(k * w)
            k += 1
    has_unparsed = False
    if df is not None and not df.empty:
        for value in df["bin_start"]:
            if value is None or pd.isna(value):
                has_unparsed = True
            else:
                starts.add(float(value))
    bins: dict[str, float | None] = {score_bin_label(s, w): s for s in sorted(starts)}
    if has_unparsed:
        bins[UNPARSED] = None
    return bins


def score_histogram(df: pd.DataFrame, bin_width: float, threshold: float | None = None,
                    scale_min: float | None = None, scale_max: float | None = None, split_roles: bool = True,
                    title: str = "Judge scores (one per target: the mean of its parsed verdicts)") -> go.Figure:
    """Bars from `Workspace.judge_score_histogram` (role, bin_start, n): one bar per score bin, stacked
    by response role when split_roles, with an "unparsed" bar for targets whose verdict did not parse
    and a dashed line at the threshold. Bars are selectable: a point's x is its bin label."""
    if df is None or df.empty:
        return _empty(title, "no judgment matches")
    bins = score_bins(df, bin_width, scale_min, scale_max)
    labels = list(bins)
    data = df.copy()
    data["label"] = [score_bin_label(b, bin_width) for b in data["bin_start"]]
    if not split_roles:
        data["role"] = "all roles"
    fig = go.Figure()
    for i, (role, part) in enumerate(data.groupby("role", sort=True, dropna=False)):
        counts = part.groupby("label")["n"].sum()
        fig.add_trace(go.Bar(
            x=labels, y=[int(counts.get(label, 0)) for label in labels], name=_label(role),
            marker_color=ROLE_COLOURS[i % len(ROLE_COLOURS)],
            hovertemplate="score %{x}: %{y} targets<extra>" + _label(role) + "</extra>",
        ))
    numeric = [(label, start) for label, start in bins.items() if start is not None]
    if threshold is not None and numeric:
        # On a category axis bar i sits at x = i; a score s in bin i is at i - 0.5 + (s - start) / width.
        w = float(bin_width)
        position = None
        for i, (_, start) in enumerate(numeric):
            if start <= threshold < start + w:
                position = i - 0.5 + (threshold - start) / w
                break
        if position is None:
            position = -0.5 if threshold < numeric[0][1] else len(numeric) - 0.5
        fig.add_vline(x=position, line_dash="dash", line_color="#444",
                      annotation_text=f"≥ {threshold:g} kept", annotation_position="top right")
    fig.update_layout(title=title, barmode="stack", xaxis_title="score", yaxis_title="targets", height=320,
                      margin={"t": 50, "b": 40, "l": 50, "r": 10}, clickmode="event+select",
                      legend_title_text="role", showlegend=split_roles)
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=labels)
    return fig


def selection_points(event) -> list[dict]:
    """The selected points of a `st.plotly_chart(on_select=...)` event (or the same as a plain dict)."""
    try:
        return list(event["selection"]["points"] or []) if event else []
    except (KeyError, TypeError):
        return []


def selected_bin(points: list[dict] | None, bins: dict[str, float | None]) -> str | None:
    """The bin label of the first selected bar in a plotly selection event's points (None if none)."""
    for point in points or []:
        label = point.get("x")
        if label is not None and str(label) in bins:
            return str(label)
    return None


def threshold_sweep(df: pd.DataFrame, threshold: float | None = None,
                    title: str = "What each threshold buys (95% intervals shaded)") -> go.Figure:
    """Precision, recall and kept share per threshold from `calibration.threshold_sweep`, with the
    Wilson interval of precision and recall as bands and a line at the chosen threshold."""
    if df is None or df.empty:
        return _empty(title, "no parsed score yet")
    fig = go.Figure()
    x = df["threshold"].tolist()
    for name, colour in (("precision", "#4C78A8"), ("recall", "#F58518")):
        if df[name].notna().any():
            fig.add_trace(go.Scatter(x=x + x[::-1], y=df[f"{name}_high"].tolist() + df[f"{name}_low"].tolist()[::-1],
                                     fill="toself", fillcolor=colour, opacity=0.15, line={"width": 0},
                                     hoverinfo="skip", showlegend=False, name=f"{name} interval"))
            fig.add_trace(go.Scatter(x=x, y=df[name].tolist(), mode="lines+markers", name=name,
                                     line={"color": colour}))
    fig.add_trace(go.Scatter(x=x, y=df["kept_share"].tolist(), mode="lines+markers", name="kept share",
                             line={"color": "#54A24B", "dash": "dot"}))
    if threshold is not None:
        fig.add_vline(x=threshold, line_dash="dash", line_color="#444")
    fig.update_layout(title=title, xaxis_title="threshold (keep score ≥ threshold)", yaxis_title="share",
                      yaxis_range=[0, 1.02], height=320, margin={"t": 50, "b": 40, "l": 50, "r": 10})
    return fig
