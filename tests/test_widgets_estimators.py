"""The zeroth-order smoothing widget: drawn data checked against scipy quadrature and numpy."""

from __future__ import annotations

import math
import re

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from kexue_lib._core import make_generator  # noqa: E402
from kexue_lib.estimators import zo_grad  # noqa: E402
from kexue_lib.widgets.estimators import (  # noqa: E402
    ESTIMATORS,
    quantised_quadratic,
    smoothed_quantised_quadratic,
    smoothing_explorer,
)
from kexue_lib.widgets.frontends import animate, live  # noqa: E402
from tests.conftest import assert_redraws_within_budget  # noqa: E402


@pytest.fixture(scope="module")
def ex():
    return smoothing_explorer(n_hist=3000, n_grid=9, seed=3)


def test_quantised_quadratic_is_a_staircase_under_the_parabola():
    x = np.linspace(-2, 2, 1001)
    f = quantised_quadratic(x)
    assert (f <= x**2 / 2 + 1e-12).all() and (x**2 / 2 - f < 0.25 + 1e-12).all()
    np.testing.assert_allclose(quantised_quadratic(torch.tensor(x)).numpy(), f)
    assert set(np.round(f / 0.25, 9)) <= set(range(0, 10))


@pytest.mark.parametrize("x", [0.0, 0.8, -1.3])
@pytest.mark.parametrize("eps", [0.05, 0.4, 1.5])
def test_smoothed_values_match_scipy_quadrature(x, eps):
    from scipy import integrate, stats

    def integrand(u, power):
        return quantised_quadratic(x + eps * u) * u**power * stats.norm.pdf(u)

    # break points where x + eps u crosses a step
    a = np.sqrt(0.5 * np.arange(1, 400))
    pts = sorted(p for p in np.concatenate([(a - x) / eps, (-a - x) / eps]) if abs(p) < 9)
    value = sum(
        integrate.quad(integrand, lo, hi, args=(0,))[0]
        for lo, hi in zip([-9, *pts], [*pts, 9], strict=True)
    )
    # Stein: f_eps'(x) = E[f(x + eps u) u] / eps
    slope = (
        sum(
            integrate.quad(integrand, lo, hi, args=(1,))[0]
            for lo, hi in zip([-9, *pts], [*pts, 9], strict=True)
        )
        / eps
    )
    v, s = smoothed_quantised_quadratic(np.array(x), eps)
    assert abs(float(v) - value) < 1e-7 and abs(float(s) - slope) < 1e-6


def test_rows_are_the_library_estimates_from_the_shared_noise(ex):
    for est in ESTIMATORS:
        for eps in (0.05, 0.5):
            d = ex.data(eps=eps, estimator=est)
            u = torch.randn(3000, 1, generator=make_generator(3), dtype=torch.float64)[:, 0].numpy()
            np.testing.assert_array_equal(d["dirs"], u)  # one noise for every eps / estimator
            fp = quantised_quadratic(0.8 + eps * u)
            fm = quantised_quadratic(0.8 - eps * u)
            rows = {
                "no baseline": fp * u / eps,
                "baseline f(x)": (fp - quantised_quadratic(0.8)) * u / eps,
                "antithetic": (fp - fm) * u / (2 * eps),
            }[est]
            np.testing.assert_allclose(d["rows"], rows, rtol=1e-12, atol=1e-12)
            # unbiased for the smoothed slope, not for x0 (the parabola's slope)
            assert abs(d["mean"] - d["slope"]) < 4.5 * d["se"] + 1e-12


def test_std_table_against_monte_carlo(ex):
    x = torch.tensor([0.8], dtype=torch.float64)
    for eps in (0.1, 1.0):
        d = ex.data(eps=eps)
        for est, kw in zip(
            ESTIMATORS, ({"baseline": None}, {"baseline": "fx"}, {"antithetic": True}), strict=True
        ):
            _, info = zo_grad(
                lambda z: quantised_quadratic(z[:, 0]),
                x,
                eps,
                400_000,
                generator=make_generator(4),
                **kw,
            )
            mc = info["rows"].std().item()
            assert abs(mc / d["std"][est] - 1) < 0.03, (eps, est, mc, d["std"][est])


def test_small_eps_estimates_vanish_and_noise_ordering(ex):
    d = ex.data(eps=0.01, estimator="baseline f(x)")
    # the nearest step is 0.093 away from x0 = 0.8: at eps = 0.01 no draw reaches it
    assert d["zero_frac"] == 1.0 and abs(d["slope"]) < 1e-12
    d = ex.data(eps=0.01, estimator="no baseline")
    assert abs(d["std"]["no baseline"] - 0.25 / 0.01) < 1e-6  # f(x0) / eps
    # at large eps the curvature term makes baseline f(x) as noisy as no baseline; pairs are not
    d = ex.data(eps=2.0)
    assert d["std"]["antithetic"] < 0.5 * d["std"]["baseline f(x)"]
    assert abs(d["slope"] - 0.8) < 0.05  # the smoothed staircase has the parabola's slope


def test_live_slider_drive(ex):
    w = live(ex)
    w.sliders["eps"].value = 0.2
    w.sliders["estimator"].value = "antithetic"
    d = w.last_data
    assert d["estimator"] == "antithetic" and abs(d["eps"] - 0.2) < 0.01
    np.testing.assert_allclose(d["f_eps"], smoothed_quantised_quadratic(d["xs"], d["eps"])[0])


def test_redraw_is_fast():
    ex = smoothing_explorer()
    ex.data()
    settings = [dict(eps=v) for v in (0.2, 0.25, 0.3, 0.35, 0.4)]
    assert_redraws_within_budget(ex, settings, name="ZO smoothing")


def test_animate_frames(ex):
    html = animate(ex, "eps", [0.02, 0.1, 0.5, 2.0])
    assert len(re.findall(r"data:image/png;base64,", html)) in (4, 5)


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"^eps_range\b"):
        smoothing_explorer(eps_range=(1.0, 0.5))
    with pytest.raises(ValueError, match=r"^x0\b"):
        smoothing_explorer(x0=9.0)
    with pytest.raises(ValueError, match=r"^n_hist\b"):
        smoothing_explorer(n_hist=1)
    with pytest.raises(ValueError, match=r"^step\b"):
        smoothing_explorer(step=0.0)
    e = smoothing_explorer(n_hist=20, n_grid=2, n_quad=201)
    with pytest.raises(ValueError, match=r"^eps\b"):
        e.data(eps=5.0)
    with pytest.raises(ValueError, match=r"^estimator\b"):
        e.data(estimator="optimal")
    assert math.isfinite(e.data(eps=0.01)["std"]["baseline f(x)"])
