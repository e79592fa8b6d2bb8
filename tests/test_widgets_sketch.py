"""The SimHash widget: drawn data checked against brute force and the arcsine law."""

from __future__ import annotations

import math
import re

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from kexue_lib.sketch import simhash  # noqa: E402
from kexue_lib.widgets.frontends import animate, live  # noqa: E402
from kexue_lib.widgets.sketch import simhash_cosine_explorer  # noqa: E402
from tests.conftest import assert_redraws_within_budget  # noqa: E402


@pytest.fixture(scope="module")
def ex():
    return simhash_cosine_explorer(n_pairs=1500, dim=32, max_bits=1024, seed=1)


def test_data_match_brute_force_counts(ex):
    d = ex.data(n_bits=64)
    assert d["n_bits"] == 64 and d["sign_cos"].shape == (1500,)
    # rebuild the pairs and their codes from the same seed, then count differing bits one by one
    g = torch.Generator()
    g.manual_seed(1)
    theta = torch.rand(1500, dtype=torch.float64, generator=g) * math.pi
    np.testing.assert_allclose(d["cos"], np.cos(theta.numpy()), rtol=0, atol=1e-12)
    x = torch.randn(1500, 32, dtype=torch.float64, generator=g)
    x = x / x.norm(dim=1, keepdim=True)
    u = torch.randn(1500, 32, dtype=torch.float64, generator=g)
    u = u - (u * x).sum(1, keepdim=True) * x
    u = u / u.norm(dim=1, keepdim=True)
    y = torch.cos(theta)[:, None] * x + torch.sin(theta)[:, None] * u
    np.testing.assert_allclose((x * y).sum(1).numpy(), d["cos"], rtol=0, atol=1e-12)
    codes = simhash(torch.cat([x, y]), 1024, generator=g)[:, :64].numpy()
    h_loop = [sum(int(a != b) for a, b in zip(codes[i], codes[1500 + i])) for i in range(1500)]
    np.testing.assert_array_equal(d["hamming"], np.array(h_loop))
    np.testing.assert_allclose(d["sign_cos"], 1 - 2 * d["hamming"] / 64, atol=1e-12)
    np.testing.assert_allclose(d["decoded"], np.sin(np.pi / 2 * d["sign_cos"]), atol=1e-12)
    assert d["hamming"].min() >= 0 and d["hamming"].max() <= 64


def test_sign_cosine_follows_arcsine_law_and_decoding_helps(ex):
    d = ex.data(n_bits=1024)
    c = d["cos"]
    arcsine = 2 / np.pi * np.arcsin(c)
    p = np.arccos(c) / np.pi  # per-bit mismatch probability
    # residuals around the arcsine law are Binomial noise: variance 4 p (1 - p) / n
    z = (d["sign_cos"] - arcsine) / np.sqrt(4 * p * (1 - p) / 1024 + 1e-12)
    assert abs(z.mean()) < 4 / math.sqrt(len(z)) * 1.5 and 0.8 < z.std() < 1.2
    # raw codes are biased towards the arcsine curve; decoding removes most of the error
    assert d["rmse_sign"] > 0.1 > 0.05 > d["rmse_decoded"]
    small = ex.data(n_bits=16)
    assert small["rmse_decoded"] > d["rmse_decoded"]


def test_live_slider_and_render_time(ex):
    w = live(ex)
    w.sliders["n_bits"].value = 256
    assert w.last_data["n_bits"] == 256
    np.testing.assert_allclose(w.last_data["sign_cos"], ex.data(n_bits=256)["sign_cos"])
    ex.data(n_bits=32)
    assert_redraws_within_budget(ex, [dict(n_bits=32)] * 3, name="SimHash cosines")


def test_animate_and_bad_args(ex):
    html = animate(ex, "n_bits", [16, 64, 256])
    assert "<img" in html
    # one PNG per frame (the player may also embed the first one as its initial image)
    assert len(re.findall(r"data:image/png;base64,", html)) in (3, 4)
    assert not re.search(r"https?://", html)
    with pytest.raises(ValueError, match=r"^max_bits\b"):
        simhash_cosine_explorer(max_bits=100)
    with pytest.raises(ValueError, match=r"^n_bits\b"):
        ex.data(n_bits=3)
