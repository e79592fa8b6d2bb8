"""The importance-sampling widget (kexue.fm 8791): drawn data against the exact linear-Gaussian
marginal, closed-form ELBOs and a direct recomputation of the weights."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from kexue_lib.widgets.estimators import PROPOSALS, importance_explorer  # noqa: E402
from kexue_lib.widgets.frontends import animate, live  # noqa: E402
from tests.conftest import assert_redraws_within_budget  # noqa: E402


@pytest.fixture(scope="module")
def ex():
    return importance_explorer(n_repeats=400, m_max=256, seed=2)


def test_exact_posterior_has_zero_variance(ex):
    for M in (1, 16, 256):
        d = ex.data(M=M, proposal="posterior")
        np.testing.assert_allclose(d["estimates"], d["log_px"], rtol=0, atol=1e-9)
        assert d["ess"] == pytest.approx(M, rel=1e-9)
        np.testing.assert_allclose(d["weights"], 1 / M, rtol=1e-9)
        assert d["elbo"] == pytest.approx(d["log_px"], abs=1e-9)


@pytest.mark.parametrize("proposal", ["prior", "encoder"])
def test_m1_mean_is_the_closed_form_elbo(ex, proposal):
    d = ex.data(M=1, proposal=proposal)
    se = d["std"] / math.sqrt(d["estimates"].size)
    assert abs(d["mean"] - d["elbo"]) < 4 * se
    assert d["elbo"] < d["log_px"]


def test_bound_ladder_rises_toward_log_px(ex):
    d = ex.data(M=1, proposal="encoder")
    mu, sd = d["curves"]["encoder"]
    n = d["estimates"].size
    # E log q_M <= log p(x) (within noise) and rising from M = 1 to the largest M
    assert (mu <= d["log_px"] + 4 * sd / math.sqrt(n) + 1e-12).all()
    assert mu[-1] - mu[0] > 4 * (sd[0] + sd[-1]) / math.sqrt(n)
    assert abs(mu[-1] - d["log_px"]) < abs(mu[0] - d["log_px"]) / 5
    # the spread shrinks as M grows
    assert sd[-1] < sd[0] / 4
    # the prior needs many more samples than the encoder at every M
    assert (d["curves"]["prior"][0] < mu).all()


def test_weights_and_ess_of_the_first_row(ex):
    d = ex.data(M=64, proposal="encoder")
    w = d["weights"]
    assert w.shape == (64,) and (np.diff(w) <= 0).all()
    assert w.sum() == pytest.approx(1.0, abs=1e-12)
    assert d["ess"] == pytest.approx(1 / (w**2).sum(), rel=1e-9)
    assert 1 <= d["ess"] <= 64
    assert d["hist"].sum() == d["estimates"].size


def test_front_ends_and_redraw_budget(ex):
    box = live(ex)
    assert set(box.sliders) == {"M", "proposal"}
    html = animate(ex, "M", [1, 16, 256], proposal="encoder")
    assert "<img" in html
    small = importance_explorer()
    assert_redraws_within_budget(
        small,
        [
            {"M": 8, "proposal": "encoder"},
            {"M": 128, "proposal": "prior"},
            {"M": 2, "proposal": "posterior"},
        ],  # fmt: skip
        name="estimators.importance_explorer",
    )


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"^m_max\b"):
        importance_explorer(m_max=100)
    with pytest.raises(ValueError, match=r"^sigma\b"):
        importance_explorer(sigma=0.0)
    with pytest.raises(ValueError, match=r"^n_repeats\b"):
        importance_explorer(n_repeats=1)
    ex = importance_explorer(n_repeats=8, m_max=8)
    with pytest.raises(ValueError, match=r"^M\b"):
        ex.data(M=3)
    with pytest.raises(ValueError, match=r"^proposal\b"):
        ex.data(proposal="uniform")
    assert set(PROPOSALS) == {"prior", "encoder", "posterior"}
