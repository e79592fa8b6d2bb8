"""The power-mean and SquarePlus widgets: drawn data against independent numpy math, redraw budget."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from kexue_lib.widgets.activations import squareplus_explorer  # noqa: E402
from kexue_lib.widgets.frontends import animate, live  # noqa: E402
from kexue_lib.widgets.multitask import power_mean_explorer  # noqa: E402
from tests.conftest import assert_redraws_within_budget  # noqa: E402


def test_power_mean_widget_matches_numpy():
    ex = power_mean_explorer(n_grid=41)
    d = ex.data(gamma=2.0, L1=0.5, L2=2.0, L3=8.0)
    L = np.array([0.5, 2.0, 8.0])
    assert d["value"] == pytest.approx(np.mean(L**2) ** 0.5)
    w = L ** (2.0 - 1)
    np.testing.assert_allclose(d["weights"], w / w.sum())
    assert np.all(np.diff(d["curve"]) >= -1e-12)  # non-decreasing in γ
    assert d["curve"][0] > L.min() and d["curve"][-1] < L.max()
    assert d["geo"] == pytest.approx(2.0)


def test_squareplus_widget_matches_numpy():
    ex = squareplus_explorer(n_grid=201)
    d = ex.data(b=1.0)
    x = d["x"]
    np.testing.assert_allclose(d["squareplus"], (x + np.sqrt(x * x + 1)) / 2, rtol=1e-12)
    np.testing.assert_allclose(d["softplus"], np.logaddexp(x, 0), rtol=1e-12)
    assert d["min_err"] == pytest.approx(0.5 - math.log(2))
    d0 = ex.data(b=0.0)
    np.testing.assert_allclose(d0["squareplus"], np.maximum(x, 0), atol=1e-15)  # b = 0 is ReLU


def test_front_ends_and_redraw_budget():
    for ex, name, vals in (
        (power_mean_explorer(), "power_mean", [{"gamma": g} for g in (-2.0, 0.0, 3.0)]),
        (squareplus_explorer(), "squareplus", [{"b": b} for b in (0.5, 1.5, 3.0)]),
    ):
        live(ex)
        key = next(iter(vals[0]))
        html = animate(ex, key, [v[key] for v in vals])
        assert html.count("data:image/png") >= 1
        assert_redraws_within_budget(ex, vals, name=name)


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"^gamma_max\b"):
        power_mean_explorer(gamma_max=-1)
    with pytest.raises(ValueError, match=r"^x_max\b"):
        squareplus_explorer(x_max=0)
    with pytest.raises(ValueError, match=r"^b\b"):
        squareplus_explorer().data(b=5.0)
