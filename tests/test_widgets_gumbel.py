"""The Gumbel-softmax temperature widget: the drawn data checked against independent numpy math."""

from __future__ import annotations

import math
import re

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from kexue_lib._core import make_generator  # noqa: E402
from kexue_lib.estimators import reinforce_grad_samples  # noqa: E402
from kexue_lib.widgets.frontends import animate, live  # noqa: E402
from kexue_lib.widgets.gumbel import PRESETS, temperature_explorer, ternary_xy  # noqa: E402
from tests.conftest import assert_redraws_within_budget  # noqa: E402

N = 1500
TAUS = (0.05, 0.1, 0.3, 1.0, 3.0, 10.0)


@pytest.fixture(scope="module")
def ex():
    return temperature_explorer(n_samples=N, n_grad=2000, n_grid=17, seed=1)


def _np_softmax(z):
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("preset", list(PRESETS))
def test_argmax_frequencies_flat_in_tau_and_equal_p(ex, preset):
    p = np.array(PRESETS[preset])
    freqs = [ex.data(tau=t, preset=preset)["argmax_freq"] for t in TAUS]
    argmaxes = [ex.data(tau=t, preset=preset)["relaxed_argmax"] for t in TAUS]
    for f, a in zip(freqs, argmaxes):
        np.testing.assert_array_equal(f, freqs[0])  # exactly flat: the noise is shared
        np.testing.assert_array_equal(a, argmaxes[0])  # the same class for every sample
        np.testing.assert_allclose(np.bincount(a, minlength=3) / N, f)
    se = np.sqrt(p * (1 - p) / N)
    assert (np.abs(freqs[0] - p) < 4 * se + 1e-12).all(), (freqs[0], p)


def test_samples_are_softmax_of_shifted_noise_and_drift_with_tau(ex):
    means = []
    for t in TAUS:
        d = ex.data(tau=t)
        y = _np_softmax((np.log(d["p"]) + d["noise"]) / t)
        np.testing.assert_allclose(d["samples"], y, atol=1e-12)
        np.testing.assert_allclose(d["relaxed_mean"], y.mean(0), atol=1e-12)
        np.testing.assert_array_equal(d["relaxed_argmax"], d["argmax"])
        means.append(d["relaxed_mean"])
    # tau -> 0: the relaxed mean approaches the argmax frequencies; large tau: 1/3 each, to
    # first order 1/3 + (log p_i - mean log p) / (3 tau) (the noise terms average out)
    d = ex.data(tau=0.05)
    assert np.abs(means[0] - d["argmax_freq"]).max() < 0.02
    lp = np.log(d["p"])
    assert np.abs(means[-1] - (1 / 3 + (lp - lp.mean()) / 30)).max() < 0.01
    dist = [np.abs(m - d["p"]).max() for m in means]
    assert dist[-1] > dist[0] and dist[-1] > 0.2  # E[y_tau] is not p (pitfall of sheet 11)


def test_ternary_coordinates():
    xy = ternary_xy(np.eye(3))
    np.testing.assert_allclose(xy, [[0, 0], [1, 0], [0.5, math.sqrt(3) / 2]], atol=1e-15)
    centre = ternary_xy(np.full((1, 3), 1 / 3))
    np.testing.assert_allclose(centre[0], [0.5, math.sqrt(3) / 6], atol=1e-15)


def test_gradient_panel_against_closed_forms(ex):
    c = np.array([1.0, -1.0, 2.0])
    d = ex.data(tau=1.0, preset="(0.6, 0.3, 0.1)")
    p = d["p"]
    np.testing.assert_allclose(d["exact_grad"], p * (c - p @ c), atol=1e-15)
    # REINFORCE variances vs Monte Carlo of the library's sampler
    o = torch.tensor(np.log(p))
    ct = torch.tensor(c)
    s0 = reinforce_grad_samples(o, ct, 200_000, generator=make_generator(0))
    sb = reinforce_grad_samples(o, ct, 200_000, baseline=float(p @ c), generator=make_generator(0))
    assert abs(s0.var(0).sum().item() / d["reinforce_var"] - 1) < 0.03
    assert abs(sb.var(0).sum().item() / d["reinforce_var_baseline"] - 1) < 0.03
    # pathwise rows for a linear f: y * (c - y.c) / tau; regenerate the grid noise from the seed
    from kexue_lib.gumbel import sample_gumbel

    g = make_generator(1)
    sample_gumbel((N, 3), dtype=torch.float64, generator=g)
    gn = sample_gumbel((2000, 3), dtype=torch.float64, generator=g).numpy()
    for j in (0, 8, 16):
        tau = d["taus"][j]
        y = _np_softmax((np.log(p) + gn) / tau)
        rows = y * (c - (y @ c)[:, None]) / tau
        assert abs(rows.var(0, ddof=1).sum() - d["grid_var"][j]) < 1e-9 * max(1, d["grid_var"][j])
        bias2 = ((rows.mean(0) - d["exact_grad"]) ** 2).sum()
        assert abs(bias2 - d["grid_bias2"][j]) < 1e-12 + 1e-9 * bias2


def test_bias_grows_and_variance_shrinks_with_tau(ex):
    d = ex.data(preset="(0.6, 0.3, 0.1)")
    var, bias2, taus = d["grid_var"], d["grid_bias2"], d["taus"]
    assert (np.diff(var) < 0).all()  # variance falls monotonically as tau grows
    big = taus > 0.5
    assert (np.diff(bias2[big]) > 0).all()  # the relaxation bias grows with tau
    assert bias2[-1] > 100 * d["mc_floor"][-1]  # ... far above Monte Carlo resolution
    assert var[0] > d["reinforce_var"] > var[-1]  # the curves cross REINFORCE's variance
    # the current-tau marker sits on the tabulated curve
    at = ex.data(tau=float(taus[5]), preset="(0.6, 0.3, 0.1)")
    assert abs(at["var"] / var[5] - 1) < 1e-9 and abs(at["bias2"] / bias2[5] - 1) < 1e-9


def test_live_slider_drive(ex):
    w = live(ex)
    w.sliders["tau"].value = 0.2
    w.sliders["preset"].value = "(0.9, 0.05, 0.05)"
    data = w.last_data
    assert data["preset"] == "(0.9, 0.05, 0.05)" and abs(data["tau"] - 0.2) < 0.01
    y = _np_softmax((np.log(data["p"]) + data["noise"]) / data["tau"])
    np.testing.assert_allclose(data["samples"], y, atol=1e-12)
    np.testing.assert_array_equal(
        data["argmax_freq"], ex.data(preset="(0.9, 0.05, 0.05)")["argmax_freq"]
    )


def test_redraw_is_fast():
    ex = temperature_explorer()  # the default (chapter) size
    ex.data()
    settings = [dict(tau=v) for v in (0.5, 0.6, 0.7, 0.55, 0.65)]
    assert_redraws_within_budget(ex, settings, name="Gumbel temperature")


def test_animate_frames(ex):
    html = animate(ex, "tau", [0.1, 0.3, 1.0, 3.0])
    # one PNG per frame (the player may repeat the first as its initial image)
    assert len(re.findall(r"data:image/png;base64,", html)) in (4, 5)
    assert "<img" in html


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"^n_samples\b"):
        temperature_explorer(n_samples=0)
    with pytest.raises(ValueError, match=r"^tau_range\b"):
        temperature_explorer(tau_range=(1.0, 0.5))
    with pytest.raises(ValueError, match=r"^values\b"):
        temperature_explorer(values=(1.0, 2.0))
    ex = temperature_explorer(n_samples=50, n_grad=50, n_grid=3)
    with pytest.raises(ValueError, match=r"^tau\b"):
        ex.data(tau=20.0)
    with pytest.raises(ValueError, match=r"^preset\b"):
        ex.data(preset="(0.5, 0.5, 0)")
