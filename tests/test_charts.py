"""Histogram axes (core.charts): lengths start at 0, counts have whole-number ticks.

The figures are checked as plotly builds them for the browser (`fig.full_figure_for_development`
needs kaleido, which is not installed), so the tests read the layout the page sends: an explicit
x range and the y axis's tick settings."""

from __future__ import annotations

import pandas as pd
import pytest

from core import charts


def _ticks(axis, max_count: int) -> list[float]:
    """The tick values plotly draws for a linear axis with tick0 and dtick set, up to max_count."""
    step, value, ticks = float(axis.dtick), float(axis.tick0 or 0), []
    while value <= max_count:
        ticks.append(value)
        value += step
    return ticks


def _assert_integer_count_axis(axis, max_count: int) -> None:
    assert axis.tickformat in ("d", ",d")
    assert axis.rangemode == "tozero"
    assert float(axis.dtick).is_integer() and axis.dtick >= 1
    ticks = _ticks(axis, max_count)
    assert ticks[0] == 0 and all(t.is_integer() for t in ticks)
    assert 2 <= len(ticks) <= 11  # readable: neither one tick nor a comb


@pytest.mark.parametrize("counts", [[1], [3], [7, 2], [100, 3], [12_345, 5]])
def test_count_ticks_are_whole_nice_steps(counts):
    step = charts._count_ticks(max(counts))
    assert isinstance(step, int) and step >= 1
    mantissa = step / 10 ** (len(str(step)) - 1)
    assert mantissa in (1, 2, 5)
    assert max(counts) / step <= 6


def test_length_histogram_single_match_starts_at_zero_with_integer_ticks():
    fig = charts.length_histogram(pd.DataFrame({"bin_start": [0], "n": [1]}), 100)
    bar = fig.data[0]
    assert list(bar.x) == [0] and list(bar.y) == [1] and bar.offset == 0 and list(bar.width) == [100]
    lo, hi = fig.layout.xaxis.range
    assert lo == 0  # not −50: the bar is drawn from bin_start to bin_start + width
    assert hi == charts.MIN_LENGTH_BINS * 100  # one bar is a fifth of the axis, not a full-width band
    _assert_integer_count_axis(fig.layout.yaxis, 1)
    assert _ticks(fig.layout.yaxis, 1) == [0, 1]


def test_length_histogram_range_covers_the_last_bin():
    fig = charts.length_histogram(pd.DataFrame({"bin_start": [0, 100, 900], "n": [40, 2, 1]}), 100)
    assert list(fig.layout.xaxis.range) == [0, 1000]
    _assert_integer_count_axis(fig.layout.yaxis, 40)
    wide = charts.length_histogram(pd.DataFrame({"bin_start": [200], "n": [3]}), 50)
    assert list(wide.layout.xaxis.range) == [0, 250]


def test_score_histogram_count_axis_is_integer_and_reaches_the_stacked_total():
    df = pd.DataFrame({"role": ["a", "b", "a"], "bin_start": [4.0, 4.0, 5.0], "n": [1, 1, 1]})
    fig = charts.score_histogram(df, 1.0, scale_min=1, scale_max=5)
    _assert_integer_count_axis(fig.layout.yaxis, 2)
    assert fig.layout.yaxis.dtick == 1
    big = pd.DataFrame({"role": ["a", "b"], "bin_start": [3.0, 3.0], "n": [400, 300]})
    assert charts.score_histogram(big, 1.0).layout.yaxis.dtick == 200  # 700 stacked: 0, 200, … 600


def test_other_count_axes_are_integer():
    bars = charts.count_bars(pd.DataFrame({"task": ["x"], "instructions": [1]}), "task", "instructions", "per task")
    _assert_integer_count_axis(bars.layout.xaxis, 1)
    curate = charts.curate_counts_bars(pd.DataFrame({"task": ["x", "y"], "before": [3, 1], "after": [2, 0]}))
    _assert_integer_count_axis(curate.layout.yaxis, 3)
    mfd = charts.mfd_histogram(pd.DataFrame({"bin_start": [-1.0, 0.0], "n": [1, 2]}), 1.0)
    assert mfd.layout.yaxis.tickformat == "d" and mfd.layout.yaxis.dtick == 1
