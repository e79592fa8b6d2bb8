"""The HSIC bandwidth widget: drawn data checked against kexue_lib.hsic and numpy."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from kexue_lib.hsic import hsic, hsic_gamma_test, median_bandwidth  # noqa: E402
from kexue_lib.widgets.frontends import animate, live  # noqa: E402
from kexue_lib.widgets.hsic import (  # noqa: E402
    KINDS,
    SCALES,
    bandwidth_explorer,
    dependence_sample,
)
from tests.conftest import assert_redraws_within_budget  # noqa: E402


@pytest.fixture(scope="module")
def ex():
    return bandwidth_explorer(n=120, seed=2)


@pytest.mark.parametrize("kind", KINDS)
def test_curves_match_the_library(ex, kind):
    d = ex.data(kind=kind, scale=1.0)
    x, y = torch.from_numpy(d["x"]), torch.from_numpy(d["y"])
    assert d["sx"] == pytest.approx(float(median_bandwidth(x)), rel=1e-12)
    # the median heuristic written out with numpy
    dx = (d["x"][:, None] - d["x"][None, :]) ** 2
    assert d["sx"] == pytest.approx(np.sqrt(0.5 * np.median(dx[np.triu_indices(120, 1)])))
    for i, c in enumerate(SCALES):
        kw = dict(bandwidth_x=c * d["sx"], bandwidth_y=c * d["sy"])
        assert d["hsic_curve"][i] == pytest.approx(float(hsic(x, y, **kw)), rel=1e-12)
        ref_u = float(hsic(x, y, estimator="unbiased", **kw))
        assert d["hsic_u_curve"][i] == pytest.approx(ref_u, rel=1e-10, abs=1e-15)
        if np.isfinite(d["p_curve"][i]):
            assert d["p_curve"][i] == pytest.approx(hsic_gamma_test(x, y, **kw).p_value, rel=1e-9)
    assert d["pearson"] == pytest.approx(np.corrcoef(d["x"], d["y"])[0, 1], abs=1e-12)


def test_bandwidth_extremes_and_the_dependence(ex):
    n = 120
    for kind in KINDS:
        d = ex.data(kind=kind, scale=1.0)
        h = d["hsic_curve"]
        # K -> I at tiny bandwidth: HSIC_b -> tr(H H)/n^2 = (n - 1)/n^2
        assert h[0] == pytest.approx((n - 1) / n**2, rel=0.05)
        # huge bandwidth: the centred Gram matrices vanish
        assert h[-1] < 1e-3 * h.max()
        assert abs(d["hsic_u_curve"][0]) < 0.05 * d["hsic_u_curve"].max()
        # at the median heuristic every kind is detected
        assert d["p_value"] < 1e-3
    # y = x^2 and the circle are (nearly) uncorrelated; the linear pair is not
    assert abs(ex.data(kind="square")["pearson"]) < 0.25
    assert abs(ex.data(kind="circle")["pearson"]) < 0.25
    assert ex.data(kind="linear")["pearson"] > 0.9


def test_front_ends_and_redraw_budget(ex):
    assert live(ex) is not None
    html = animate(ex, "scale", [0.04, 1.0, 25.0], kind="circle")
    assert "<img" in html or "animation" in html.lower()
    assert_redraws_within_budget(
        ex,
        [
            {"scale": 1.0, "kind": "square"},
            {"scale": 25.0, "kind": "circle"},
            {"scale": 0.01, "kind": "linear"},
        ],  # fmt: skip
        name="hsic.bandwidth_explorer",
    )


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"^n\b"):
        bandwidth_explorer(n=3)
    with pytest.raises(ValueError, match=r"^noise\b"):
        bandwidth_explorer(noise=-1.0)
    with pytest.raises(ValueError, match=r"^kind\b"):
        dependence_sample("sine", 10)
    ex = bandwidth_explorer(n=20)
    with pytest.raises(ValueError, match=r"^scale\b"):
        ex.data(scale=2.0)
    with pytest.raises(ValueError, match=r"^kind\b"):
        ex.data(kind="sine")
