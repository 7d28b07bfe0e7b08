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
MIN_LENGTH_BINS = 5  # the length histogram's x axis spans at least this many bins


def _label(value) -> str:
    return "(none)" if value is None or (isinstance(value, float) and pd.isna(value)) else html.escape(str(value))


def _empty(title: str, message: str = "nothing to show") -> go.Figure:
    fig = go.Figure()
    fig.update_layout(title=title, xaxis={"visible": False}, yaxis={"visible": False}, height=260,
                      annotations=[{"text": message, "showarrow": False, "xref": "paper", "yref": "paper",
                                    "x": 0.5, "y": 0.5}])
    return fig


def _count_ticks(max_count: int, ticks: int = 6) -> int:
    """A whole-number tick step for a count axis (never 0.5 of an instruction): 1, 2 or 5 times a
    power of ten, at most about `ticks` steps up to max_count."""
    target = max(int(max_count), 1) / ticks
    step = 1
    while step < target:
        for factor in (2, 5, 10):
            if step * factor >= target:
                return step * factor
        step *= 10
    return step


def _count_axis(max_count: int) -> dict:
    """Axis settings for a count: from 0, whole-number ticks (one match shows 0 and 1, not 0.2 … 1)."""
    return {"rangemode": "tozero", "tickformat": ",d", "dtick": _count_ticks(max_count), "tick0": 0}


def length_histogram(df: pd.DataFrame, bin_width: int, title: str = "Instruction length (characters, input included)") -> go.Figure:
    """Bars from `Workspace.length_histogram`: columns `bin_start` and `n`, one bar per bin.

    Each bar spans its bin, [bin_start, bin_start + bin_width); the x axis runs from 0 (a length is
    never negative) to the end of the last bin, and the count axis has whole-number ticks."""
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
    # An explicit range: autorange started the axis half a bin below 0 (−50 for 100-character bins).
    # At least MIN_LENGTH_BINS bins wide, so one match is one narrow bar, not a band across the chart.
    fig.update_xaxes(range=[0, max(max(starts) + bin_width, MIN_LENGTH_BINS * bin_width)])
    fig.update_yaxes(**_count_axis(max(counts)))
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
    fig.update_xaxes(**_count_axis(int(data[value].max())))
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
    stacked = data.groupby("label")["n"].sum()  # the bars' heights: the count axis must reach the tallest
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
    fig.update_yaxes(**_count_axis(int(stacked.max())))
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


# --------------------------------------------------------------------------------------------
# Difficulty and tasks (app_pages/7_Difficulty_and_Tasks.py)
# --------------------------------------------------------------------------------------------

KEPT_COLOUR = "#54A24B"
DROPPED_COLOUR = "#BAB0AC"
MIX_COLOURS = {"now": "#4C78A8", "target": "#F58518", "after resampling": "#54A24B"}


def mfd_histogram(df: pd.DataFrame, bin_width: float, delta: float | None = None,
                  title: str = "MFD = judge(teacher answer) − judge(student answer)") -> go.Figure:
    """Bars from `core.difficulty.difficulty_histogram` (bin_start, n; rows with no value left
    out), on a numeric axis that starts at the data's first bin, with a dashed line at δ."""
    w = float(bin_width)
    if not w > 0:
        raise ValueError(f"bin_width must be positive, not {bin_width}")
    data = df[df["bin_start"].notna()] if df is not None and not df.empty else None
    if data is None or data.empty:
        return _empty(title, "no instruction has an MFD")
    starts = [float(s) for s in data["bin_start"]]
    counts = [int(n) for n in data["n"]]
    fig = go.Figure(go.Bar(
        x=starts, y=counts, width=[w] * len(starts), offset=0, marker_color=BAR_COLOUR,
        customdata=[s + w for s in starts],
        hovertemplate="MFD %{x:g} to %{customdata:g}: %{y} instructions<extra></extra>",
    ))
    lo, hi = min(starts), max(starts) + w
    if delta is not None:
        fig.add_vline(x=float(delta), line_dash="dash", line_color="#444",
                      annotation_text=f"δ = {float(delta):g}: keep MFD > δ", annotation_position="top right")
        lo, hi = min(lo, float(delta)), max(hi, float(delta))
    fig.update_layout(title=title, xaxis_title="MFD", yaxis_title="instructions", bargap=0.05, height=300,
                      margin={"t": 50, "b": 40, "l": 50, "r": 10})
    fig.update_xaxes(range=[lo, hi])
    # Head room above the tallest bar keeps the δ label clear of the bars.
    fig.update_yaxes(tickformat="d", dtick=_count_ticks(max(counts)), range=[0, max(counts) * 1.2])
    return fig


def kept_bars(df: pd.DataFrame, title: str = "Kept per task at MFD > δ") -> go.Figure:
    """Stacked horizontal bars from `core.views.kept_table` (task, instructions with MFD, kept):
    kept and not kept per task, the largest task on top."""
    if df is None or df.empty:
        return _empty(title, "no instruction has an MFD")
    data = df.head(MAX_BARS)
    labels = [_label(t) for t in data["task"]][::-1]
    kept = [int(k) for k in data["kept"]][::-1]
    dropped = [int(v) - int(k) for v, k in zip(data["instructions with MFD"], data["kept"], strict=True)][::-1]
    fig = go.Figure([
        go.Bar(x=kept, y=labels, orientation="h", name="kept (MFD > δ)", marker_color=KEPT_COLOUR,
               hovertemplate="%{y}: %{x} kept<extra></extra>"),
        go.Bar(x=dropped, y=labels, orientation="h", name="not kept", marker_color=DROPPED_COLOUR,
               hovertemplate="%{y}: %{x} not kept<extra></extra>"),
    ])
    fig.update_layout(title=title, barmode="stack", xaxis_title="instructions",
                      height=max(220, 24 * len(labels) + 100), margin={"t": 50, "b": 40, "l": 10, "r": 10},
                      legend={"orientation": "h", "y": -0.15})
    fig.update_yaxes(automargin=True, type="category")
    fig.update_xaxes(tickformat="d", dtick=_count_ticks(max(int(v) for v in data["instructions with MFD"])))
    return fig


def task_mix_bars(df: pd.DataFrame, title: str = "Task mix: now, target, after resampling") -> go.Figure:
    """Grouped bars from `core.views.task_mix` (task, now share, target share, after share and the
    counts behind them): one group per task, shares on the y axis, counts in the hover."""
    if df is None or df.empty:
        return _empty(title, "no instruction in the pool")
    labels = [_label(t) for t in df["task"]]
    series = (("now", "now share", "now"), ("target", "target share", "target"),
              ("after resampling", "after share", "after"))
    fig = go.Figure([
        go.Bar(x=labels, y=[float(v) for v in df[share]], name=name, marker_color=MIX_COLOURS[name],
               customdata=[float(v) for v in df[count]],
               hovertemplate="%{x}: %{y:.1%} (%{customdata:,.4~g} instructions)<extra>" + name + "</extra>")
        for name, share, count in series
    ])
    fig.update_layout(title=title, barmode="group", yaxis_title="share of the pool", yaxis_tickformat=".0%",
                      height=340, margin={"t": 50, "b": 40, "l": 50, "r": 10}, legend={"orientation": "h", "y": 1.12})
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=labels, automargin=True)
    return fig


# --------------------------------------------------------------------------------------------
# Curation
# --------------------------------------------------------------------------------------------

CURATE_SERIES = (("before", "now", "#BAB0AC"), ("after", "after filters", "#4C78A8"),
                 ("planned", "after rebalancing", "#F58518"))


def curate_counts_bars(per_task: pd.DataFrame, title: str = "Samples per task: now and after the filters") -> go.Figure:
    """Grouped bars from `core.curate.counts(...).per_task` (task, before, after[, planned]): one
    group per task, a bar for now, after the filters and (with a rebalancing plan) after it."""
    if per_task is None or per_task.empty:
        return _empty(title, "no sample in the spec's pool")
    labels = [_label(t) for t in per_task["task"]]
    fig = go.Figure()
    for column, name, colour in CURATE_SERIES:
        if column in per_task.columns:
            fig.add_trace(go.Bar(x=labels, y=per_task[column].astype(int).tolist(), name=name, marker_color=colour,
                                 hovertemplate="%{x}: %{y}<extra>" + name + "</extra>"))
    fig.update_layout(title=title, barmode="group", xaxis_title="task", yaxis_title="samples", height=340,
                      margin={"t": 50, "b": 40, "l": 50, "r": 10}, legend_title_text="")
    fig.update_xaxes(type="category", automargin=True)
    counted = [column for column, _, _ in CURATE_SERIES if column in per_task.columns]
    fig.update_yaxes(**_count_axis(int(per_task[counted].max().max()) if counted else 1))
    return fig


# --------------------------------------------------------------------------------------------
# Home
# --------------------------------------------------------------------------------------------

REVIEW_STATES = (("accepted", "accepted", "#54A24B"), ("rejected", "rejected", "#E45756"),
                 ("unreviewed", "not reviewed", "#BAB0AC"))


def review_state_bars(df: pd.DataFrame, title: str = "Tasks by review state", max_bars: int = MAX_BARS) -> go.Figure:
    """Stacked horizontal bars from `Store.tasks_by_review_state` (task, accepted, rejected,
    unreviewed): one bar per task, largest first, split by the latest human verdict, so what is
    left to review and where the rejects pile up show at a glance. Tasks past max_bars are
    summed into "(other)"."""
    if df is None or df.empty:
        return _empty(title, "no instructions yet")
    columns = [c for c, _, _ in REVIEW_STATES]
    data = df[["task", *columns]].copy()
    data[columns] = data[columns].astype(int)
    data = data.assign(_total=data[columns].sum(axis=1)).sort_values("_total", ascending=False, kind="stable")
    if len(data) > max_bars:
        rest = data.iloc[max_bars - 1:][columns].sum()
        data = pd.concat([data.iloc[: max_bars - 1],
                          pd.DataFrame([{"task": "(other)", **{c: int(rest[c]) for c in columns}}])], ignore_index=True)
    labels = [_label(t) for t in data["task"]][::-1]  # plotly draws the first category at the bottom
    total = int(data[columns].to_numpy().sum())
    reviewed = total - int(data["unreviewed"].sum())
    fig = go.Figure()
    for column, name, colour in REVIEW_STATES:
        fig.add_trace(go.Bar(x=data[column].tolist()[::-1], y=labels, name=name, orientation="h", marker_color=colour,
                             hovertemplate="%{y}: %{x} " + name + "<extra></extra>"))
    fig.update_layout(title=f"{title}: {reviewed:,} of {total:,} instructions reviewed", barmode="stack",
                      height=max(240, 26 * len(labels) + 110), margin={"t": 50, "b": 40, "l": 10, "r": 10},
                      # The legend in the bars' order, under the axis (the title says what is counted).
                      legend={"orientation": "h", "y": -0.1, "yanchor": "top", "traceorder": "normal"},
                      legend_title_text="")
    fig.update_yaxes(automargin=True, type="category")
    fig.update_xaxes(**_count_axis(int(data[columns].sum(axis=1).max())))
    return fig


# --------------------------------------------------------------------------------------------
# Training (app_pages/10_Train.py)
# --------------------------------------------------------------------------------------------

TRAIN_COLOURS = {"loss": "#4C78A8", "eval loss": "#F58518", "learning rate": "#54A24B", "grad norm": "#B279A2"}


def training_curves(records, title: str = "Training curves") -> go.Figure:
    """Loss (and eval loss when logged), learning rate and gradient norm against the optimizer step,
    side by side, from a run's records (core.train.job.metrics) or core.train_views.curve_frame."""
    from plotly.subplots import make_subplots

    frame = records if isinstance(records, pd.DataFrame) else pd.DataFrame(list(records or []))
    if frame.empty or "step" not in frame.columns:
        return _empty(title, "no step logged yet")
    frame = frame.sort_values("step", kind="stable")
    fig = make_subplots(rows=1, cols=3, subplot_titles=("Loss", "Learning rate", "Gradient norm"),
                        horizontal_spacing=0.08)
    panels = (("loss", "loss", 1), ("eval_loss", "eval loss", 1), ("lr", "learning rate", 2),
              ("grad_norm", "grad norm", 3))
    for column, name, col in panels:
        if column not in frame.columns:
            continue
        points = frame[["step", column]].apply(pd.to_numeric, errors="coerce").dropna()
        if points.empty:
            continue  # e.g. no eval loss logged yet: no empty trace in the legend
        fig.add_trace(go.Scatter(x=points["step"].tolist(), y=points[column].tolist(), name=name,
                                 mode="lines+markers" if len(points) < 50 else "lines",
                                 line={"color": TRAIN_COLOURS[name]},
                                 hovertemplate=f"step %{{x}}: {name} %{{y:.4g}}<extra></extra>"),
                      row=1, col=col)
    fig.update_xaxes(title_text="step", rangemode="tozero")
    fig.update_yaxes(exponentformat="e", row=1, col=2)  # learning rates are 1e-5-ish: powers, not "10µ"
    fig.update_layout(title=title, height=320, margin={"t": 60, "b": 40, "l": 50, "r": 10},
                      legend={"orientation": "h", "y": -0.25})
    return fig


# --------------------------------------------------------------------------------------------
# Rounds (app_pages/11_Rounds.py; frames from core.rounds_views)
# --------------------------------------------------------------------------------------------

ROUND_COLOURS = ("#4C78A8", "#F58518")
STEP_COLOURS = {"done": "#54A24B", "running": "#4C78A8", "failed": "#E45756"}


def interval_points(df: pd.DataFrame, label: str, value: str, title: str, axis_title: str,
                    reference: float | None = None) -> go.Figure:
    """One point per row with its interval as error bars (columns `label`, `value`, low, high, n),
    on a 0–1 axis, a dashed line at `reference` (a win rate of 0.5: no better than the start)."""
    data = df[df[value].notna()] if df is not None and not df.empty else None
    if data is None or data.empty:
        return _empty(title, "no evaluation yet")
    values = [float(v) for v in data[value]]
    lows = [float(lo) if pd.notna(lo) else v for v, lo in zip(values, data["low"], strict=True)]
    highs = [float(h) if pd.notna(h) else v for v, h in zip(values, data["high"], strict=True)]
    labels = [_label(x) for x in data[label]]
    fig = go.Figure(go.Scatter(
        x=values, y=labels, mode="markers", marker={"size": 11, "color": BAR_COLOUR},
        error_x={"type": "data", "symmetric": False, "array": [h - v for v, h in zip(values, highs, strict=True)],
                 "arrayminus": [v - lo for v, lo in zip(values, lows, strict=True)], "thickness": 2, "width": 6},
        customdata=list(zip(lows, highs, [int(n) if pd.notna(n) else 0 for n in data["n"]], strict=True)),
        hovertemplate="%{y}: %{x:.2f} [%{customdata[0]:.2f}, %{customdata[1]:.2f}], n = %{customdata[2]}"
                      "<extra></extra>",
    ))
    if reference is not None:
        fig.add_vline(x=reference, line_dash="dash", line_color="#444")
    fig.update_layout(title=title, xaxis_title=axis_title, height=max(200, 50 * len(labels) + 110),
                      margin={"t": 50, "b": 40, "l": 10, "r": 10}, showlegend=False)
    fig.update_xaxes(range=[0, 1.02])
    fig.update_yaxes(automargin=True, type="category", autorange="reversed")
    return fig


def mfd_overlay(df: pd.DataFrame, bin_width: float, delta: float | None = None,
                title: str = "MFD of each round (overlaid)") -> go.Figure:
    """Two rounds' MFD histograms from `core.rounds_views.mfd_overlay_frame` (round, bin_start,
    n) overlaid on one numeric axis, with a dashed line at δ: a shift left means the student
    found the pool easier."""
    w = float(bin_width)
    if not w > 0:
        raise ValueError(f"bin_width must be positive, not {bin_width}")
    if df is None or df.empty:
        return _empty(title, "no instruction has an MFD")
    fig = go.Figure()
    for i, (name, part) in enumerate(df.groupby("round", sort=False)):
        starts = [float(s) for s in part["bin_start"]]
        fig.add_trace(go.Bar(x=starts, y=[int(n) for n in part["n"]], width=[w] * len(starts), offset=0,
                             name=_label(name), marker_color=ROUND_COLOURS[i % len(ROUND_COLOURS)], opacity=0.55,
                             customdata=[s + w for s in starts],
                             hovertemplate="MFD %{x:g} to %{customdata:g}: %{y}<extra>" + _label(name) + "</extra>"))
    lo, hi = float(df["bin_start"].min()), float(df["bin_start"].max()) + w
    if delta is not None:
        fig.add_vline(x=float(delta), line_dash="dash", line_color="#444", annotation_text=f"δ = {float(delta):g}",
                      annotation_position="top right")
        lo, hi = min(lo, float(delta)), max(hi, float(delta))
    fig.update_layout(title=title, barmode="overlay", xaxis_title="MFD", yaxis_title="instructions", height=320,
                      margin={"t": 50, "b": 40, "l": 50, "r": 10}, legend={"orientation": "h", "y": 1.12})
    fig.update_xaxes(range=[lo, hi])
    fig.update_yaxes(**_count_axis(int(df["n"].max())))
    return fig


def round_task_mix(df: pd.DataFrame, title: str = "Task mix of each round's training set") -> go.Figure:
    """Grouped bars from `core.rounds_views.task_mix_frame` (round, task, n, share): one group per
    task, a bar per round, shares on the y axis and counts in the hover."""
    if df is None or df.empty:
        return _empty(title, "no training snapshot yet")
    tasks = list(dict.fromkeys(df["task"]))
    labels = [_label(t) for t in tasks]
    fig = go.Figure()
    for i, (name, part) in enumerate(df.groupby("round", sort=False)):
        by_task = part.set_index("task")
        fig.add_trace(go.Bar(x=labels, y=[float(by_task["share"].get(t, 0.0)) for t in tasks], name=_label(name),
                             marker_color=ROUND_COLOURS[i % len(ROUND_COLOURS)],
                             customdata=[int(by_task["n"].get(t, 0)) for t in tasks],
                             hovertemplate="%{x}: %{y:.1%} (%{customdata} samples)<extra>" + _label(name) + "</extra>"))
    fig.update_layout(title=title, barmode="group", yaxis_title="share of the training set", yaxis_tickformat=".0%",
                      height=340, margin={"t": 50, "b": 40, "l": 50, "r": 10}, legend={"orientation": "h", "y": 1.12})
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=labels, automargin=True)
    return fig


def round_timeline(df: pd.DataFrame, title: str = "Steps over time") -> go.Figure:
    """A Gantt chart from `core.rounds_views.steps_timeline_frame` (round, step, status, start,
    end): one bar per step from its start to its end (now, while it runs), coloured by status."""
    if df is None or df.empty:
        return _empty(title, "no step has started yet")
    labels = [f"{_label(r)} · {_label(s)}" for r, s in zip(df["round"], df["step"], strict=True)]
    starts = pd.to_datetime(df["start"])
    # A bar's length on a date axis is in milliseconds; a compute step of 0 ms still shows.
    spans = [max((e - s).total_seconds() * 1000, 300.0) for s, e in zip(starts, pd.to_datetime(df["end"]), strict=True)]
    fig = go.Figure()
    for status in dict.fromkeys(df["status"]):
        idx = [i for i, st in enumerate(df["status"]) if st == status]
        fig.add_trace(go.Bar(
            x=[spans[i] for i in idx], base=[starts.iloc[i].isoformat() for i in idx], y=[labels[i] for i in idx],
            orientation="h", name=_label(status), marker_color=STEP_COLOURS.get(status, DROPPED_COLOUR),
            customdata=[spans[i] / 1000 for i in idx],
            hovertemplate="%{y}: %{customdata:.1f} s<extra>" + _label(status) + "</extra>"))
    fig.update_layout(title=title, height=max(220, 20 * len(labels) + 110), margin={"t": 50, "b": 40, "l": 10, "r": 10},
                      legend={"orientation": "h", "y": -0.15}, barmode="overlay")
    fig.update_xaxes(type="date")
    fig.update_yaxes(automargin=True, type="category", categoryorder="array", categoryarray=labels,
                     autorange="reversed")
    return fig


def embedding_map(df: pd.DataFrame, colour: str = "category", title: str = "Instructions in 2-D (PCA of their embeddings)") -> go.Figure:
    """A scatter of `core.categories_views.embedding_map_frame` (x, y, category, task, text): one
    trace per value of `colour` (category or task), the instruction's start as hover text."""
    if df is None or df.empty:
        return _empty(title, "no instruction has a category yet")
    fig = go.Figure()
    groups = df[colour].where(df[colour].notna(), None)
    for value in dict.fromkeys(groups):
        part = df[groups.isna()] if value is None else df[groups == value]
        fig.add_trace(go.Scatter(x=part["x"], y=part["y"], mode="markers", name=_label(value),
                                 text=[_label(t) for t in part["text"]], marker={"size": 8, "opacity": 0.8},
                                 hovertemplate="%{text}<extra>" + _label(value) + "</extra>"))
    fig.update_layout(title=title, height=420, margin={"t": 50, "b": 40, "l": 40, "r": 10},
                      xaxis_title="component 1", yaxis_title="component 2", legend={"orientation": "h", "y": -0.15})
    return fig
