"""Tests of the Performer widget: drawn data against independent numpy formulas."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")


import numpy as np  # noqa: E402
import pytest  # noqa: E402

from kexue_lib.widgets.attention import performer_explorer  # noqa: E402
from kexue_lib.widgets.frontends import animate, live  # noqa: E402
from tests.conftest import assert_redraws_within_budget  # noqa: E402


@pytest.fixture(scope="module")
def ex():
    return performer_explorer(seed=0)


def numpy_softmax_weights(q, k):
    s = q @ k.T
    e = np.exp(s - s.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def numpy_performer_weights(q, k, omega):
    """phi(x)_l = exp(w_l.x - |x|^2/2) / sqrt(m); rows normalised: the unbiased estimator."""
    fq = np.exp(q @ omega.T - 0.5 * (q**2).sum(1, keepdims=True)) / np.sqrt(len(omega))
    fk = np.exp(k @ omega.T - 0.5 * (k**2).sum(1, keepdims=True)) / np.sqrt(len(omega))
    s = fq @ fk.T
    return s / s.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("features", ["iid", "orthogonal"])
@pytest.mark.parametrize("m", [4, 64])
def test_drawn_weights_match_numpy_formulas(ex, m, features):
    d = ex.data(m=m, scale=1.0, features=features)
    q, k, om = d["q_in"], d["k_in"], d["omega"]
    assert om.shape == (m, q.shape[1])
    np.testing.assert_allclose(d["exact"], numpy_softmax_weights(q, k), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(
        d["approx"], numpy_performer_weights(q, k, om), rtol=1e-9, atol=1e-12
    )
    rel = np.linalg.norm(d["approx"] - d["exact"]) / np.linalg.norm(d["exact"])
    assert abs(rel - d["err"]) < 1e-10
    # the inputs are scaled so that the estimator targets softmax(scale q.k / sqrt(d))
    assert np.allclose((q**2).sum(1), np.sqrt(q.shape[1]))  # |q'|^2 = scale sqrt(d)


def test_orthogonal_rows_are_orthogonal_within_blocks(ex):
    om = ex.data(m=32, features="orthogonal")["omega"]
    dim = om.shape[1]
    block = om[:dim] / np.linalg.norm(om[:dim], axis=1, keepdims=True)
    np.testing.assert_allclose(block @ block.T, np.eye(dim), atol=1e-10)


def test_error_decays_like_inverse_sqrt_m(ex):
    d = ex.data(scale=0.0625)
    slope = np.polyfit(np.log(d["ms"]), np.log(d["err_iid"]), 1)[0]
    assert -0.75 < slope < -0.3, slope
    assert d["err_iid"][-1] < d["err_iid"][0] / 4
    # a sharper softmax (larger scale) is harder to estimate with the same m
    assert ex.data(m=64, scale=1.0)["mean_err"] > 3 * ex.data(m=64, scale=0.0625)["mean_err"]
    # the curves average independent draws; the drawn heatmap is the first draw
    assert abs(d["err_iid"][0] - d["errors_iid"][:, 0].mean()) < 1e-12


def test_live_sliders_drive_the_data(ex):
    w = live(ex)
    w.sliders["m"].value = 256
    w.sliders["features"].value = "orthogonal"
    got = w.last_data
    assert got["m"] == 256 and got["features"] == "orthogonal"
    np.testing.assert_allclose(
        got["approx"],
        numpy_performer_weights(got["q_in"], got["k_in"], got["omega"]),
        rtol=1e-9,
        atol=1e-12,
    )


def test_render_is_fast(ex):
    ex.figure(m=128, scale=0.5, features="iid")  # warm matplotlib's font and text caches
    settings = [dict(m=m, scale=0.5, features="iid") for m in (16, 64, 128)]
    assert_redraws_within_budget(ex, settings, name="Performer random features")


def test_animate_frames(ex):
    frames = [4, 16, 64, 256]
    html = animate(ex, "m", frames, scale=1.0)
    assert "<img" in html
    assert html.count("frames[") >= len(frames) or html.count("data:image/png") >= len(frames)


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"^n\b"):
        performer_explorer(n=0)
    ex = performer_explorer(n=8, d=4, n_repeats=2)
    with pytest.raises(ValueError, match=r"^m\b"):
        ex.data(m=5)
