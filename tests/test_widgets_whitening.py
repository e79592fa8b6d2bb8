"""The whitening widget: its curves against a direct fit + scipy, and its redraw budget."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from kexue_lib.whitening import apply_whitening, fit_whitening  # noqa: E402
from kexue_lib.widgets.frontends import animate  # noqa: E402
from kexue_lib.widgets.whitening import (  # noqa: E402
    spearman_per_prefix,
    whitening_spearman_explorer,
)
from tests.conftest import assert_redraws_within_budget  # noqa: E402


def data(seed=0, n=2000, d=20, m=150):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g, dtype=torch.float64) * torch.logspace(0, -1.5, d)[:, None]
    off = 3 * torch.randn(1, d, generator=g, dtype=torch.float64)
    train = torch.randn(n, d, generator=g, dtype=torch.float64) @ mix + off
    za = torch.randn(m, d, generator=g, dtype=torch.float64)
    zb = za + torch.rand(m, 1, generator=g, dtype=torch.float64) * 2 * torch.randn(
        m, d, generator=g, dtype=torch.float64
    )
    s = torch.nn.functional.cosine_similarity(za, zb)
    return train, {"toy": (za @ mix + off, zb @ mix + off, s)}


@pytest.fixture(scope="module")
def ex():
    train, ev = data()
    return whitening_spearman_explorer(train, ev), train, ev


def test_curves_match_direct_whitening_and_scipy(ex):
    e, train, ev = ex
    a, b, s = ev["toy"]
    for beta, gamma, k in ((1.0, 1.0, 20), (1.0, 1.0, 7), (0.5, 0.5, 12), (0.0, 0.0, 20)):
        got = e.data(beta=beta, gamma=gamma, k=k)["at_k"]["toy"]
        w = fit_whitening(train, beta=beta, gamma=gamma, n_components=k)
        ca = (apply_whitening(a, w) * apply_whitening(b, w)).sum(1)
        assert abs(got - spearmanr(ca.numpy(), s.numpy()).statistic) < 1e-10
    # rotation only with all dimensions: the raw cosine's Spearman
    d = e.data(beta=0.0, gamma=0.0, k=20)
    assert abs(d["curves"]["toy"][-1] - d["raw"]["toy"]) < 1e-10


def test_spearman_per_prefix_against_scipy_with_ties():
    g = torch.Generator().manual_seed(5)
    a = torch.randn(60, 6, generator=g, dtype=torch.float64)
    b = torch.randn(60, 6, generator=g, dtype=torch.float64)
    s = torch.randint(0, 4, (60,), generator=g).double()  # many tied human scores
    rho = spearman_per_prefix(a, b, s)
    for k in range(2, 7):  # k = 1: cosines are +-1, rounding decides their ties
        ck = torch.nn.functional.cosine_similarity(a[:, :k], b[:, :k])
        assert abs(rho[k - 1] - spearmanr(ck.numpy(), s.numpy()).statistic) < 1e-12


def test_bad_input():
    train, ev = data()
    with pytest.raises(ValueError, match=r"^evals\b"):
        whitening_spearman_explorer(train, {})
    a, b, s = ev["toy"]
    with pytest.raises(ValueError, match=r"^evals\b"):
        whitening_spearman_explorer(train, {"x": (a[:, :3], b, s)})


def test_redraw_budget_and_animation(ex):
    e = ex[0]
    assert_redraws_within_budget(
        e, [dict(k=10), dict(k=15), dict(k=5)], name="whitening_spearman_explorer"
    )
    html = animate(e, "gamma", [0.0, 0.5, 1.0], k=12)
    assert html.count("data:image/png;base64,") >= 3
