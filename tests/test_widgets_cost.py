"""Tests of the cost widget: drawn data against multiplication counts written out by hand."""

from __future__ import annotations

import json
import re

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from kexue_lib.widgets.cost import MODELS, N_CHOICES, cost_explorer  # noqa: E402
from kexue_lib.widgets.frontends import animate, live  # noqa: E402
from tests.conftest import assert_redraws_within_budget  # noqa: E402


@pytest.fixture(scope="module")
def ex():
    return cost_explorer()


# ------------------------------------------------------------------ hand-written cost model
# Multiplications of one layer, hidden D = h d, written from the matrix shapes:
# Q, K, V, O: four (n x D) @ (D x D); FFN: (n x D) @ (D x 4D) and (n x 4D) @ (4D x D);
# softmax core per head: (n x d) @ (d x n) and (n x n) @ (n x d).


def hand_softmax(n, h, d):
    D = h * d
    return {"proj": 4 * n * D * D, "core": h * (n * d * n + n * n * d), "ffn": 8 * n * D * D}


def hand_linear_post(n, h, d, kappa):
    """Keys and values kappa d; projections cost as in the softmax layer (the post)."""
    D, m = h * d, kappa * d
    # per head: phi(K)^T V is (m x n) @ (n x m), then phi(Q) @ that is (n x m) @ (m x m)
    return {"proj": 4 * n * D * D, "core": h * (m * n * m + n * m * m), "ffn": 8 * n * D * D}


def hand_linear_paid(n, h, d, kappa):
    """Keys kappa d from wider Q and K projections (D -> h kappa d each), values d."""
    D, m = h * d, kappa * d
    proj = 2 * n * D * (h * m) + n * D * D + n * D * D
    return {"proj": proj, "core": h * (m * n * d + n * m * d), "ffn": 8 * n * D * D}


def total(parts):
    return sum(parts.values())


@pytest.mark.parametrize(
    "attention,accounting,hand",
    [
        ("softmax", "post", lambda n, h, d, k: hand_softmax(n, h, d)),
        ("linear", "post", hand_linear_post),
        ("linear", "paid projections", hand_linear_paid),
    ],
)
@pytest.mark.parametrize("model", ["base: h=12, d=64", "7B-like: h=32, d=128"])
def test_drawn_bars_match_hand_counts(ex, attention, accounting, hand, model):
    kappa = 4
    data = ex.data(n=1024, model=model, attention=attention, kappa=kappa, accounting=accounting)
    h, d = MODELS[model]
    assert (data["h"], data["d"]) == (h, d)
    for j, n in enumerate(N_CHOICES):
        want = hand(n, h, d, kappa)
        assert data["ns"][j] == n
        assert data["proj"][j] == want["proj"], n
        assert data["core"][j] == want["core"], n
        assert data["ffn"][j] == want["ffn"], n
        assert data["total"][j] == total(want)
        np.testing.assert_allclose(
            data["shares"][:, j],
            np.array([want["proj"], want["core"], want["ffn"]]) / total(want),
            rtol=1e-14,
        )


def test_bert_base_numbers_of_the_post(ex):
    data = ex.data(n=512)
    i = data["i"]
    assert data["ns"][i] == 512
    # 12 n D^2 + 2 n^2 D at D = 768, n = 512, and the 10% quadratic share
    assert data["total"][i] == 12 * 512 * 768**2 + 2 * 512**2 * 768
    assert abs(data["shares"][1, i] - 0.10) < 1e-12
    # post's table: std / linear(4d) = (12 hd + 2n) / (12 hd + 32 d) = 0.909 at n = 512
    assert abs(data["ratio_at_n"] - (12 * 768 + 1024) / (12 * 768 + 32 * 64)) < 1e-12
    assert (data["sa_gt_ffn"], data["quadratic_dominates"]) == (1536, 4608)


def _bisect(f, lo, hi):
    flo = f(lo)
    assert flo * f(hi) < 0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if (f(mid) < 0) == (flo < 0):
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


@pytest.mark.parametrize("kappa", [1, 2, 4, 8])
@pytest.mark.parametrize("model", list(MODELS))
def test_marked_crossovers_are_where_totals_are_equal(ex, kappa, model):
    h, d = MODELS[model]
    data = ex.data(model=model, kappa=kappa)
    for key, hand in (("cross_post", hand_linear_post), ("cross_paid", hand_linear_paid)):

        def gap(n, hand=hand):  # continuous n: the counts are polynomials in n
            return total(hand_softmax(n, h, d)) - total(hand(n, h, d, kappa))

        root = _bisect(gap, 1.0, 1e7)
        assert abs(data[key] - root) < 1e-6 * root, (key, data[key], root)
        # the drawn ratio curve crosses 1 at the marked length (up to the grid spacing)
        r = data["ratio_post" if key == "cross_post" else "ratio_paid"]
        g = data["grid"]
        if g[0] < root < g[-1]:
            x = np.interp(0.0, np.log(r), np.log(g))  # r increases with n
            assert abs(np.exp(x) / root - 1) < 1e-2, (key, np.exp(x), root)
    if kappa == 4 and model.startswith("base"):
        assert (data["cross_post"], data["cross_paid"]) == (1024, 2560)


def test_ratio_curves_against_hand_totals(ex):
    data = ex.data(model="large: h=16, d=64", kappa=2)
    h, d = 16, 64
    for n, rp, rq in list(zip(data["grid"], data["ratio_post"], data["ratio_paid"]))[::17]:
        n = int(n)
        std = total(hand_softmax(n, h, d))
        assert rp == pytest.approx(std / total(hand_linear_post(n, h, d, 2)), rel=1e-14)
        assert rq == pytest.approx(std / total(hand_linear_paid(n, h, d, 2)), rel=1e-14)
    assert np.all(np.diff(data["ratio_post"]) > 0)


def test_live_sliders_drive_the_data(ex):
    w = live(ex)
    w.sliders["n"].value = 4096
    w.sliders["attention"].value = "linear"
    w.sliders["kappa"].value = 8
    w.sliders["accounting"].value = "paid projections"
    got = w.last_data
    assert (got["n"], got["attention"], got["kappa"]) == (4096, "linear", 8)
    want = hand_linear_paid(4096, 12, 64, 8)
    i = got["i"]
    assert got["core"][i] == want["core"] and got["proj"][i] == want["proj"]
    assert got["ratio_at_n"] == pytest.approx(
        total(hand_softmax(4096, 12, 64)) / total(want), rel=1e-14
    )


def test_render_is_fast(ex):
    ex.figure(n=1024)  # warm matplotlib's font and text caches
    settings = [
        dict(n=1024),
        dict(n=8192, attention="linear"),
        dict(n=256, model="7B-like: h=32, d=128", kappa=8, accounting="paid projections"),
    ]
    assert_redraws_within_budget(ex, settings, name="linear-transformer cost")


def test_animate_frames(ex):
    values = [128, 1024, 8192, 65536]
    html = animate(ex, "n", values, attention="linear")
    assert "<img" in html
    frames = re.search(r"frames = (\[.*?\]), texts =", html, re.S)
    assert frames is not None
    assert len(json.loads(frames.group(1))) == len(values)
    assert len(set(json.loads(frames.group(1)))) == len(values)  # each n draws differently


def test_bad_values(ex):
    with pytest.raises(ValueError, match=r"^n\b"):
        ex.data(n=1000)  # not a choice
    with pytest.raises(ValueError, match="kappa"):
        ex.data(kappa=3)
    with pytest.raises(ValueError, match="attention"):
        ex.data(attention="performer")
    with pytest.raises(ValueError, match="model"):
        ex.data(model="h=12, d=64")
    with pytest.raises(ValueError, match="unknown control"):
        ex.data(d=64)
    with pytest.raises(ValueError, match="values"):
        animate(ex, "n", list(N_CHOICES) * 3)
    with pytest.raises(ValueError, match="n_grid"):
        cost_explorer(n_grid=1)
    with pytest.raises(ValueError, match="n_grid"):
        cost_explorer(n_grid=True)
