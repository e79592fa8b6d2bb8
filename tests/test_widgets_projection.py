"""The JL distortion explorer: drawn data against torch.pdist, scipy.stats.chi2 and sklearn."""

from __future__ import annotations

import math
import re

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from scipy import stats  # noqa: E402

from kexue_lib import projection as P  # noqa: E402
from kexue_lib.widgets.frontends import animate, live  # noqa: E402
from kexue_lib.widgets.projection import jl_distortion_explorer  # noqa: E402
from tests.conftest import assert_redraws_within_budget  # noqa: E402


@pytest.fixture(scope="module")
def ex():
    return jl_distortion_explorer(seed=0, m=256, Ns=(50, 100, 200))


def reference_ratios(ex, N, data, projection, d_out):
    """Independent recomputation: project the first N points, torch.pdist in float64."""
    X = ex.state.points[data][:N]
    A = ex.state.matrix(projection, d_out)
    dx = torch.pdist(X) ** 2
    dy = torch.pdist(X @ A.T) ** 2
    keep = dx > 0
    return (dy[keep] / dx[keep]).numpy()


@pytest.mark.parametrize(
    "data, projection, d_out, N",
    [
        ("gaussian", "gaussian", 64, 200),
        ("clusters", "rademacher", 16, 100),
        ("sparse_bow", "very_sparse", 256, 50),
        ("low_rank", "orthogonal", 8, 200),
    ],
)
def test_drawn_ratios_match_pdist(ex, data, projection, d_out, N):
    d = ex.data(data=data, projection=projection, d_out=d_out, N=N)
    ref = reference_ratios(ex, N, data, projection, d_out)
    assert d["n_pairs"] == ref.size
    np.testing.assert_allclose(d["ratios"], ref, rtol=1e-7)
    out = np.abs(ref - 1) >= d["eps"]
    assert d["frac_out"] == pytest.approx(out.mean(), abs=1e-12)


def test_matrices_have_the_jl_scale(ex):
    A = ex.state.matrix("gaussian", 16)
    assert A.shape == (16, 256)
    assert abs(A.var().item() * 16 - 1) < 0.05
    B = ex.state.matrix("orthogonal", 64)
    torch.testing.assert_close(B @ B.T, torch.eye(64, dtype=B.dtype) * 256 / 64)


def test_out_of_band_mass_is_the_chi_square_tail():
    """Gaussian data and map: mean observed out-of-band fraction over 2 seeds vs exact tail.

    Pairs sharing a point (or the matrix) are correlated; across seeds the spread of the
    fraction was measured at ~ sqrt(p(1-p) N / (15 P)), so the tolerance uses N / 10.
    """
    N = 500
    exs = [jl_distortion_explorer(seed=s, m=256, Ns=(N,)) for s in (3, 4)]
    for d_out, eps in ((16, 0.3), (64, 0.2), (256, 0.1)):
        fr = [e.data(N=N, d_out=d_out, eps=eps)["frac_out"] for e in exs]
        d = exs[0].data(N=N, d_out=d_out, eps=eps)
        p = stats.chi2.cdf(d_out * (1 - eps), d_out) + stats.chi2.sf(d_out * (1 + eps), d_out)
        assert d["p_exact"] == pytest.approx(p, rel=1e-9)
        sd = math.sqrt(p * (1 - p) * N / (10 * d["n_pairs"]) / len(exs))
        assert abs(np.mean(fr) - p) < 4 * sd, (fr, p, sd)
        assert d["expected_out"] == pytest.approx(p * N * (N - 1) / 2)


def test_histogram_and_overlay_are_densities(ex):
    for q in ("squared", "plain"):
        d = ex.data(d_out=32, eps=0.3, quantity=q)
        width = np.diff(d["edges"])
        inside = (d["hist"] * width).sum()
        assert inside == pytest.approx(1 - d["below"] - d["above"], abs=1e-12)
        x, y = d["pdf_x"], d["pdf_y"]
        lo, hi = x[0], x[-1]
        if q == "squared":
            mass = stats.chi2.cdf(hi * 32, 32) - stats.chi2.cdf(lo * 32, 32)
            assert d["band"] == pytest.approx((0.7, 1.3))
        else:
            mass = stats.chi.cdf(hi * math.sqrt(32), 32) - stats.chi.cdf(lo * math.sqrt(32), 32)
            assert d["band"] == pytest.approx((math.sqrt(0.7), math.sqrt(1.3)))
            np.testing.assert_allclose(d["ratios"] ** 0.5, np.sqrt(d["ratios"]))
        assert np.trapezoid(y, x) == pytest.approx(mass, abs=2e-3)


def test_right_panel_curves(ex):
    from sklearn.random_projection import johnson_lindenstrauss_min_dim

    N = 200
    d = ex.data(N=N, eps=0.2)
    ns = d["ns"].astype(int)
    for k in (0, 4, 8):
        ref = reference_ratios(ex, N, "gaussian", "gaussian", int(ns[k]))
        assert d["max_dist"][k] == pytest.approx(np.abs(ref - 1).max(), rel=1e-7)
    np.testing.assert_allclose(d["eps24"], np.sqrt(24 * math.log(N) / ns))
    np.testing.assert_allclose(d["eps16"], np.sqrt(16 * math.log(N) / ns))
    for n, e in zip(ns, d["eps_union"], strict=True):
        assert e == pytest.approx(P.jl_eps_for_union(N, int(n), 0.5))
    for n, e in zip(ns, d["eps_dg"], strict=True):
        if np.isnan(e):  # no eps in (0, 1) reaches n: sklearn's rule needs more dimensions
            assert johnson_lindenstrauss_min_dim(N, eps=0.999) > n
        else:
            assert johnson_lindenstrauss_min_dim(N, eps=e * (1 + 1e-9)) <= n
            assert johnson_lindenstrauss_min_dim(N, eps=e * (1 - 1e-6)) >= n - 1
    assert d["n24"] == P.jl_min_dim(N, 0.2) and d["n_dg"] == johnson_lindenstrauss_min_dim(
        N, eps=0.2
    )
    assert d["vacuous"] == (N * (N - 1) * math.exp(-64 * 0.04 / 8) >= 1)


def test_teaching_points(ex):
    # (i) orthonormal rows at n = m preserve every distance exactly
    d = ex.data(projection="orthogonal", d_out=256)
    np.testing.assert_allclose(d["ratios"], 1.0, rtol=1e-9)
    # (ii) a very sparse map on bag-of-words data leaves far more pairs out of the band
    sp = ex.data(projection="very_sparse", data="sparse_bow", d_out=64, N=200)
    assert sp["frac_out"] > 1.5 * sp["p_exact"]
    # (iii) the worst pair at N=200 is within eps=0.2 well before the Chernoff-24 dimension
    g = ex.data(N=200, eps=0.2)
    first_ok = g["ns"][np.argmax(g["max_dist"] <= 0.2 + 0.05)]
    assert first_ok < g["n24"] / 2


def test_live_slider_drive(ex):
    w = live(ex)
    assert w.last_data["d_out"] == 64
    w.sliders["d_out"].value = 256
    w.sliders["projection"].value = "rademacher"
    d = w.last_data
    assert d["d_out"] == 256 and d["projection"] == "rademacher"
    np.testing.assert_allclose(
        d["ratios"], reference_ratios(ex, 200, "gaussian", "rademacher", 256), rtol=1e-7
    )
    w.sliders["eps"].value = 0.5
    assert w.last_data["p_exact"] == pytest.approx(P.jl_pair_failure_prob(256, 0.5))


def test_redraw_time(ex):
    ex.data(d_out=128)  # warm the ladder cache of this (data, projection)
    settings = [dict(d_out=128, eps=e) for e in (0.15, 0.25, 0.35, 0.45, 0.55)]
    assert_redraws_within_budget(ex, settings, name="JL distortion")


def test_animate_returns_frames(ex):
    html = animate(ex, "d_out", [8, 64, 512], N=100)
    assert "<img" in html
    # one distinct embedded PNG per frame (a player may repeat the first as its poster)
    images = set(re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html))
    assert len(images) == 3


def test_bad_values(ex):
    with pytest.raises(ValueError, match=r"^eps\b"):
        ex.data(eps=0.95)
    with pytest.raises(ValueError, match=r"^d_out\b"):
        ex.data(d_out=100)
    with pytest.raises(ValueError, match=r"^projection\b"):
        ex.data(projection="fjlt")
