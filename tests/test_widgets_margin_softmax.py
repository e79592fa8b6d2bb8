"""The AM-Softmax margin widget: drawn data against numpy cosines and the loss definition."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from kexue_lib.widgets.frontends import animate, live  # noqa: E402
from kexue_lib.widgets.margin_softmax import margin_circle_explorer  # noqa: E402
from tests.conftest import assert_redraws_within_budget  # noqa: E402


@pytest.fixture(scope="module")
def ex():
    return margin_circle_explorer()


@pytest.mark.parametrize("m, s", [(0.0, 1.0), (0.35, 30.0), (0.8, 64.0)])
def test_loss_and_arcs_against_numpy(ex, m, s):
    d = ex.data(m=m, s=s)
    phi, c = d["phi"], d["centres"]
    cos = np.stack([np.cos(phi), np.sin(phi)], 1) @ c.T
    np.testing.assert_allclose(d["cos"], cos, atol=1e-12)
    logits = s * (cos - m * (np.arange(3) == 0))
    lse = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
    np.testing.assert_allclose(d["loss"], lse - logits[:, 0], rtol=1e-10, atol=1e-10)
    others = np.sort(cos, 1)
    wins = (cos.argmax(1) == 0) & (others[:, -1] - others[:, -2] > m)
    np.testing.assert_array_equal(d["margin_class"] == 0, wins)
    assert (d["loss"] >= d["loss_m0"] - 1e-12).all()


def test_accepted_arc_shrinks_with_margin(ex):
    widths = [ex.data(m=m, s=30.0)["accept_width"] for m in (0.0, 0.2, 0.4, 0.6)]
    assert all(a > b for a, b in zip(widths, widths[1:]))
    # m = 0: the Voronoi arc of c0 between its neighbours at 100° and 220° (half-angles 50°, 70°)
    assert abs(widths[0] - math.radians(120)) < 2 * 2 * math.pi / 720


def test_live_and_animate(ex):
    box = live(ex)
    box.sliders["m"].value = 0.2
    assert "<img" in animate(ex, "m", [0.0, 0.4])


def test_redraw_budget(ex):
    assert_redraws_within_budget(
        ex, [dict(m=0.1, s=10.0), dict(m=0.3, s=20.0)], name="margin_softmax"
    )
