"""The loss.svg a run writes into its folder reads on its own: axis titles, tick values on both
axes, the curve over the whole step range; an empty history and a diverged loss do not break
it."""

import math
import xml.etree.ElementTree as ET

from fairskin.diffusion.reports import loss_svg

NS = "{http://www.w3.org/2000/svg}"


def tree(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # noqa: S314 -- our own output, not untrusted input


def texts(svg: str) -> list[str]:
    return [t.text for t in tree(svg).iter(f"{NS}text")]


def test_the_loss_svg_has_axis_titles_and_tick_values():
    svg = loss_svg([(step, 1.0 / step) for step in range(1, 121)])
    labels = texts(svg)
    assert "training step" in labels and "loss" in labels
    assert {"0", "25", "50", "100"} <= set(labels)  # round step ticks
    assert {"0.00", "0.50", "1.00"} <= set(labels)  # round loss ticks cover 1/120 .. 1
    (line,) = tree(svg).iter(f"{NS}polyline")
    assert len(line.get("points").split()) == 120
    title = next(tree(svg).iter(f"{NS}title")).text
    assert title == "Training loss by step: last 0.0083 at step 120"


def test_an_empty_or_diverged_history_still_gives_an_svg():
    assert tree(loss_svg([])).tag == f"{NS}svg"
    svg = loss_svg([(1, 0.9), (2, math.nan), (3, 0.7)])
    (line,) = tree(svg).iter(f"{NS}polyline")
    assert len(line.get("points").split()) == 2  # the NaN step is left out
