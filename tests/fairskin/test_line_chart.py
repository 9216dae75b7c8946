"""fairskin.charts' line chart (a run's loss): round ticks that cover the data, tick labels with
the decimals their spacing needs, long series averaged, non-finite points left out."""

import math

import pytest

from fairskin.charts import line_chart, nice_ticks, tick_label


@pytest.mark.parametrize(
    ("low", "high", "count", "expected"),
    [
        (0.0123, 0.4567, 5, [0.0, 0.2, 0.4, 0.6]),
        (1, 10_000, 6, [0, 2000, 4000, 6000, 8000, 10_000]),
        (0.101, 0.149, 5, [0.1, 0.12, 0.14, 0.16]),
        (2.0, 2.0, 5, [1.9, 1.95, 2.0, 2.05, 2.1]),  # a flat series gets a span around it
    ],
)
def test_ticks_are_round_and_cover_the_range(low, high, count, expected):
    ticks = nice_ticks(low, high, count)
    assert ticks == pytest.approx(expected)
    assert ticks[0] <= low and ticks[-1] >= high


def test_ticks_refuse_non_finite_bounds():
    with pytest.raises(ValueError, match="finite"):
        nice_ticks(0.0, math.nan)


@pytest.mark.parametrize(
    ("value", "step", "text"),
    [(0.25, 0.25, "0.25"), (0.005, 0.005, "0.005"), (10_000, 2000, "10,000"), (0.4, 0.2, "0.4")],
)
def test_tick_labels_have_the_decimals_their_spacing_needs(value, step, text):
    assert tick_label(value, step) == text


def test_the_chart_maps_points_into_the_plot_area_with_titles():
    chart = line_chart([(1, 1.0), (2, 0.5), (4, 0.25)], x_title="step", y_title="loss")
    xs_ys = [tuple(map(float, p.split(","))) for p in chart["points"].split()]
    assert all(chart["left"] <= x <= chart["right"] for x, _ in xs_ys)
    assert all(chart["top"] <= y <= chart["bottom"] for _, y in xs_ys)
    assert xs_ys[0][1] < xs_ys[-1][1]  # higher loss sits higher (smaller y)
    assert [t["label"] for t in chart["x_ticks"]] == ["1", "2", "3", "4"]
    assert chart["x_title"]["text"] == "step" and chart["y_title"]["text"] == "loss"
    assert chart["last"] == {"x": chart["right"], "y": xs_ys[-1][1], "value": 0.25, "at": 4}


def test_long_series_are_averaged_and_non_finite_points_dropped():
    points = [(s, 1.0 if s % 2 else 0.0) for s in range(1, 2001)] + [(2001, math.nan)]
    chart = line_chart(points, x_title="step", y_title="loss", most=500)
    plotted = chart["points"].split()
    assert chart["averaged"] == 4 and len(plotted) == 500 and chart["dropped"] == 1
    ys = {float(p.split(",")[1]) for p in plotted}
    assert len(ys) == 1  # every run of 4 alternating 1/0 averages to 0.5: one height
    assert line_chart([(1, math.inf)], x_title="s", y_title="l") is None
    assert line_chart([], x_title="s", y_title="l") is None
