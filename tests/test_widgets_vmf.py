"""The vMF concentration widget: drawn data checked against scipy and closed forms."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from kexue_lib.widgets.frontends import animate, live  # noqa: E402
from kexue_lib.widgets.vmf import DIMS, concentration_explorer  # noqa: E402
from tests.conftest import assert_redraws_within_budget  # noqa: E402

stats = pytest.importorskip("scipy.stats")
special = pytest.importorskip("scipy.special")


@pytest.fixture(scope="module")
def ex():
    return concentration_explorer(n_samples=4000, n_curve=9, seed=3)


@pytest.mark.parametrize("kappa, d", [(0.1, 2), (10.0, 3), (300.0, 32), (3000.0, 128)])
def test_samples_follow_the_vmf_cosine_law(ex, kappa, d):
    data = ex.data(kappa=kappa, d=d)
    w, plane = data["w"], data["plane"]
    np.testing.assert_allclose(plane[:, 0], w)
    assert (np.hypot(plane[:, 0], plane[:, 1]) <= 1 + 1e-12).all()
    if d == 2:  # on the circle itself
        np.testing.assert_allclose(np.hypot(plane[:, 0], plane[:, 1]), 1.0, atol=1e-12)
    # mean length against the Bessel ratio; sample mean within 4 SE
    a = special.ive(d / 2, kappa) / special.ive(d / 2 - 1, kappa)
    assert data["mean_length"] == pytest.approx(a, rel=1e-8)
    assert abs(w.mean() - a) < 4 * w.std() / math.sqrt(w.size)
    # e.x has mean zero (nu is uniform on the sphere orthogonal to mu)
    assert abs(plane[:, 1].mean()) < 4 * plane[:, 1].std() / math.sqrt(w.size) + 1e-12


def test_cosine_density_and_kl_against_scipy(ex):
    for d, kappa in [(3, 10.0), (32, 300.0)]:
        data = ex.data(kappa=kappa, d=d)
        g, dens = data["grid"], data["density"]
        # d = 3: p(w) = k e^(k w) / (2 sinh k)
        if d == 3:
            np.testing.assert_allclose(
                dens, kappa * np.exp(kappa * (g - 1)) / -np.expm1(-2 * kappa)
            )
        log_area = math.log(2) + d / 2 * math.log(math.pi) - math.lgamma(d / 2)
        mu = np.eye(d)[0]
        ref = log_area - stats.vonmises_fisher(mu, kappa).entropy()
        assert data["kl"] == pytest.approx(ref, rel=1e-7)
        assert data["hist"].sum() * np.diff(data["edges"])[0] == pytest.approx(1.0, abs=0.01)


def test_kl_curve_small_kappa_law_and_common_random_numbers(ex):
    for d in DIMS:
        data = ex.data(kappa=0.1, d=d)
        # kappa = 0.1 << d: KL = kappa^2/(2d) (1 + O(kappa^2/d))
        assert data["kl_curve"][0] == pytest.approx(data["small_kappa"][0], rel=0.02)
        assert (np.diff(data["kl_curve"]) > 0).all()  # increasing in kappa
    # the same uniforms for every kappa: the angle order of the draws is kept
    w1, w2 = ex.data(kappa=1.0, d=8)["w"], ex.data(kappa=100.0, d=8)["w"]
    np.testing.assert_array_equal(np.argsort(w1), np.argsort(w2))


def test_front_ends_and_redraw_budget(ex):
    w = live(ex)
    assert w is not None
    html = animate(ex, "kappa", [0.3, 3.0, 30.0], d=3)
    assert "<img" in html or "animation" in html.lower()
    small = concentration_explorer(n_curve=9)
    assert_redraws_within_budget(
        small,
        [{"kappa": 10.0, "d": 3}, {"kappa": 300.0, "d": 32}, {"kappa": 1.0, "d": 2}],
        name="vmf.concentration_explorer",
    )


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"^kappa_range\b"):
        concentration_explorer(kappa_range=(5.0, 1.0))
    with pytest.raises(ValueError, match=r"^n_samples\b"):
        concentration_explorer(n_samples=0)
    ex = concentration_explorer(n_curve=3)
    with pytest.raises(ValueError, match=r"^d\b"):
        ex.data(d=5)
    with pytest.raises(ValueError, match=r"^kappa\b"):
        ex.data(kappa=1e5)
