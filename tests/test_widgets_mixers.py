"""Tests of the token-mixer widget: drawn Jacobians against torch.autograd and closed forms."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import math  # noqa: E402
import re  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from kexue_lib.widgets.frontends import animate, live  # noqa: E402
from kexue_lib.widgets.mixers import MIXER_NAMES, _build, mixing_jacobian_explorer  # noqa: E402
from tests.conftest import assert_redraws_within_budget  # noqa: E402


@pytest.fixture(scope="module")
def ex():
    return mixing_jacobian_explorer(seed=0)


def _autograd_jacobian(module, x: np.ndarray) -> np.ndarray:
    xt = torch.from_numpy(x)
    full = torch.autograd.functional.jacobian(lambda t: module(t[None])[0], xt)
    return full.pow(2).sum(dim=(1, 3)).sqrt().numpy()


def test_drawn_jacobians_match_autograd(ex):
    t, n = 0.35, 8
    data = ex.data(t=t, n=n)
    assert data["J"].shape == (len(MIXER_NAMES), n, n)
    _, _, mixers, _ = _state(ex, n)
    x = data["x"]
    x0, x1 = ex.data(t=0.0, n=n)["x"], ex.data(t=1.0, n=n)["x"]
    np.testing.assert_allclose(x, (1 - t) * x0 + t * x1, rtol=0, atol=1e-14)
    for i, name in enumerate(MIXER_NAMES):
        np.testing.assert_allclose(
            data["J"][i], _autograd_jacobian(mixers[name], x), rtol=1e-9, atol=1e-12, err_msg=name
        )


def _state(ex, n, seed=0):
    """The same random weights the explorer built (the reference is autograd, not the weights)."""
    return None, None, _build(n, 8, seed), None


def test_fixed_mixers_do_not_change_and_attention_does(ex):
    data = ex.data(t=1.0, n=16)
    change = dict(zip(MIXER_NAMES, data["change"], strict=True))
    assert change["linear mixing"] == 0.0 and change["FNet"] == 0.0
    for k in ("attention", "Synthesizer-Dense", "external attention"):
        assert change[k] > 0.05, (k, change[k])
    # linear mixing: J = sqrt(d) |W|
    _, _, mixers, _ = _state(ex, 16)
    w = mixers["linear mixing"].mix.weight.detach().numpy()
    d = data["x"].shape[1]
    np.testing.assert_allclose(data["J"][MIXER_NAMES.index("linear mixing")], math.sqrt(d) * abs(w))
    # at t = 0 nothing has changed
    np.testing.assert_allclose(ex.data(t=0.0, n=16)["change"], 0.0, atol=0)


def test_live_sliders_drive_the_data(ex):
    w = live(ex)
    w.sliders["n"].value = 12
    w.sliders["t"].value = 0.5
    got = w.last_data
    assert got["n"] == 12 and got["t"] == 0.5 and got["J"].shape == (5, 12, 12)
    np.testing.assert_allclose(got["J"], ex.data(t=0.5, n=12)["J"])


def test_render_time(ex):
    # fresh values each time: compute (cache miss) + draw + rasterisation, best of 3
    settings = [dict(t=v, n=16) for v in (0.25, 0.3, 0.35)]
    assert_redraws_within_budget(ex, settings, name="token-mixing Jacobians")


def test_animate_frames(ex):
    html = animate(ex, "t", [0.0, 0.5, 1.0], n=8)
    # frames are embedded as base64 PNGs (the first one also as the <img> shown before playing)
    frames = set(re.findall(r"data:image/png;base64,[A-Za-z0-9+/=]+", html))
    assert len(frames) == 3
    assert "<img" in html


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"^d\b"):
        mixing_jacobian_explorer(d=7)
    with pytest.raises(ValueError, match=r"^t\b"):
        mixing_jacobian_explorer(d=4).data(t=2.0)
