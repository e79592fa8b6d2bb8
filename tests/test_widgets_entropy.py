"""The entropy-normalisation widget: the drawn data checked against scipy and numpy math."""

from __future__ import annotations

import math
import re

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from kexue_lib.widgets.entropy import BASES, normalisation_explorer  # noqa: E402
from kexue_lib.widgets.frontends import animate, live  # noqa: E402
from tests.conftest import assert_redraws_within_budget  # noqa: E402


@pytest.fixture(scope="module")
def ex():
    return normalisation_explorer(seed=2)


def _np_power(p, gamma):
    w = np.power(p / p.max(), gamma)
    return w / w.sum()


def _np_H(p, gamma):
    from scipy import stats

    return stats.entropy(_np_power(p, gamma))


def _np_var_log_p(p, gamma):
    q = _np_power(p, gamma)
    lp = np.log(p)
    return (q * (lp - (q * lp).sum()) ** 2).sum()


def test_zipf_base_is_the_formula(ex):
    for s, name in ((1.0, "Zipf(1)"), (0.5, "Zipf(0.5)"), (2.0, "Zipf(2)")):
        d = ex.data(base=name, n=37)
        w = np.arange(1, 38, dtype=np.float64) ** -s
        np.testing.assert_allclose(d["p"], w / w.sum(), rtol=1e-12)
        assert (np.diff(d["p_sorted"]) <= 0).all()
        assert abs(d["H_max"] - math.log(37)) < 1e-15


@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize("ratio", [0.02, 0.3, 0.7, 0.98])
def test_solved_gamma_hits_the_target(ex, base, ratio):
    from scipy import optimize, stats

    d = ex.data(base=base, target_ratio=ratio, n=80, iterations=10, safeguarded=True)
    p = d["p"]
    assert not d["failed"] and abs(d["target"] - ratio * math.log(80)) < 1e-12
    assert abs(stats.entropy(d["q"]) - d["target"]) < 1e-9, (base, ratio)
    b = optimize.brentq(lambda x: _np_H(p, math.exp(x)) - d["target"], -12, 12, xtol=1e-14)
    assert abs(d["gamma"] / math.exp(b) - 1) < 1e-7, (d["gamma"], math.exp(b))
    np.testing.assert_allclose(d["q"], _np_power(p, d["gamma"]), atol=1e-12)
    assert (np.diff(d["q_sorted"]) <= 1e-15).all()  # the order of p is kept
    assert abs(d["temperature"] * d["gamma"] - 1) < 1e-12


def test_zero_iterations_show_the_original(ex):
    d = ex.data(iterations=0)
    assert d["gamma"] == 1.0
    np.testing.assert_allclose(d["q"], d["p"], atol=1e-15)


def test_curve_is_the_entropy_of_the_power_family(ex):
    d = ex.data(base="Dirichlet(2)", n=60)
    grid, curve = d["grid"], d["curve"]
    for j in (0, 40, 80, 159):
        assert abs(curve[j] - _np_H(d["p"], grid[j])) < 1e-10
    assert (np.diff(curve) < 0).all()
    assert grid[0] <= d["gamma"] <= grid[-1]


def test_posts_newton_iterates_are_newton_in_gamma(ex):
    d = ex.data(base="Zipf(1)", n=50, target_ratio=0.5, iterations=6, safeguarded=False)
    p, target = d["p"], d["target"]
    gam = [1.0]
    for _ in range(6):  # gamma <- gamma + (H* - H) / H'(gamma), H' = -gamma Var_gamma[log p]
        g = gam[-1]
        gam.append(g + (target - _np_H(p, g)) / (-g * _np_var_log_p(p, g)))
    np.testing.assert_allclose(d["iterates"], gam, rtol=1e-9)
    for t, (xs, ys) in enumerate(d["tangents"]):
        assert abs(xs[0] - gam[t]) < 1e-9 and abs(ys[0] - _np_H(p, gam[t])) < 1e-9
        assert abs(ys[-1] - target) < 1e-9  # each tangent lands on the target line
    assert abs(_np_H(p, gam[-1]) - target) < 1e-10 and not d["failed"]


def test_safeguarded_tangents_are_straight_in_log_gamma(ex):
    d = ex.data(base="softmax N(0, 2²)", n=120, target_ratio=0.3, iterations=8)
    p = d["p"]
    for t, (xs, ys) in enumerate(d["tangents"]):
        g = d["iterates"][t]
        slope = -g * g * _np_var_log_p(p, g)  # dH / dlog(gamma)
        np.testing.assert_allclose(ys, _np_H(p, g) + slope * (np.log(xs) - math.log(g)), atol=1e-9)
    assert abs(d["H_q"] - d["target"]) < 1e-9


def test_raw_newton_failure_is_shown_and_safeguard_fixes_it(ex):
    kw = dict(base="Zipf(2)", n=200, target_ratio=0.98, iterations=6)
    raw = ex.data(safeguarded=False, **kw)
    assert raw["iterates"][1] < 0  # first raw step: negative exponent
    assert raw["failed"] and raw["reversed"]
    assert raw["q_sorted"][0] < raw["q_sorted"][-1]  # the mode became the least likely
    safe = ex.data(safeguarded=True, **kw)
    assert not safe["failed"] and (safe["iterates"] > 0).all()
    assert abs(safe["H_q"] - safe["target"]) < 1e-6
    assert (np.diff(safe["q_sorted"]) <= 1e-15).all()
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(ex.figure(safeguarded=False, **kw)).draw()  # the failure draws too


def test_dirichlet_bases_reproducible_from_seed():
    a = normalisation_explorer(seed=5).data(base="Dirichlet(0.5)", n=30)
    b = normalisation_explorer(seed=5).data(base="Dirichlet(0.5)", n=30)
    c = normalisation_explorer(seed=6).data(base="Dirichlet(0.5)", n=30)
    np.testing.assert_array_equal(a["p"], b["p"])
    assert not np.allclose(a["p"], c["p"])
    assert abs(a["p"].sum() - 1) < 1e-12 and (a["p"] > 0).all()


def test_live_slider_drive(ex):
    w = live(ex)
    w.sliders["target_ratio"].value = 0.2
    w.sliders["n"].value = 120
    w.sliders["iterations"].value = 10
    data = w.last_data
    assert data["n"] == 120 and abs(data["target"] - 0.2 * math.log(120)) < 1e-9
    assert abs(_np_H(data["p"], data["gamma"]) - data["target"]) < 1e-9
    w.sliders["safeguarded"].value = False
    w.sliders["base"].value = "Zipf(2)"
    assert w.last_data["method"] == "newton" and w.last_data["base"] == "Zipf(2)"


def test_redraw_is_fast():
    ex = normalisation_explorer()
    settings = [dict(target_ratio=r, n=200) for r in (0.4, 0.5, 0.6, 0.45, 0.55)]
    assert_redraws_within_budget(ex, settings, name="entropy normalisation")


def test_animate_frames(ex):
    html = animate(ex, "target_ratio", [0.1, 0.3, 0.5, 0.7, 0.9])
    # one PNG per frame (the player may repeat the first as its initial image)
    assert len(re.findall(r"data:image/png;base64,", html)) in (5, 6)
    assert "<img" in html


def test_bad_arguments(ex):
    with pytest.raises(ValueError, match=r"^n_max\b"):
        normalisation_explorer(n_max=3)
    with pytest.raises(ValueError, match=r"^target_ratio\b"):
        ex.data(target_ratio=1.0)
    with pytest.raises(ValueError, match=r"^base\b"):
        ex.data(base="Zipf(3)")
    with pytest.raises(ValueError, match=r"^n\b"):
        ex.data(n=201)
