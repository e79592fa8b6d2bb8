"""The position-encoding zoo widget: drawn data against explicit loops and the score modules."""

from __future__ import annotations

import json
import math
import re

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from kexue_lib.models.position_scores import shift_equivariance_error  # noqa: E402
from kexue_lib.widgets.frontends import animate, live  # noqa: E402
from kexue_lib.widgets.position_scores import SCHEMES, scheme_explorer  # noqa: E402
from tests.conftest import assert_redraws_within_budget  # noqa: E402

N, D, H = 32, 32, 2
DH = D // H
RELATIVE = [s for s in SCHEMES if s != "absolute"]


@pytest.fixture(scope="module")
def ex():
    return scheme_explorer(n=N, D=D, heads=H)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float64).numpy()


def _sinusoid(k: int, d: int, base: float = 1e4) -> np.ndarray:
    """Vaswani's table, one entry at a time: p[2i] = sin(k theta_i), p[2i+1] = cos(k theta_i)."""
    p = np.zeros(d)
    for i in range(d // 2):
        theta = base ** (-2.0 * i / d)
        p[2 * i] = math.sin(k * theta)
        p[2 * i + 1] = math.cos(k * theta)
    return p


def _absolute_logits(ex, x: np.ndarray, positions) -> np.ndarray:
    """Head 0 of (x_i + p_i) W_Q W_K^T (x_j + p_j)^T / sqrt(d_head), an explicit double loop."""
    m = ex.score_module("absolute", 8)
    Wq, Wk = _np(m.W_Q.weight)[:DH], _np(m.W_K.weight)[:DH]  # head 0: first DH output rows
    out = np.zeros((N, N))
    for i, pi in enumerate(positions):
        qi = Wq @ (x[i] + _sinusoid(pi, D))
        for j, pj in enumerate(positions):
            out[i, j] = qi @ (Wk @ (x[j] + _sinusoid(pj, D))) / math.sqrt(DH)
    return out


@pytest.mark.parametrize("shift", [0, 7, 50])
def test_absolute_matches_explicit_loop(ex, shift):
    data = ex.data(scheme="absolute", shift=shift)
    pos = list(range(shift, shift + N))
    np.testing.assert_array_equal(data["positions"], pos)
    xc = _np(ex.x_const[0])
    m = ex.score_module("absolute", 8)
    Wq, Wk = _np(m.W_Q.weight)[:DH], _np(m.W_K.weight)[:DH]
    content = (Wq @ xc[0]) @ (Wk @ xc[0]) / math.sqrt(DH)  # the same for every (i, j)
    want = _absolute_logits(ex, xc, pos)
    np.testing.assert_allclose(data["logits_const"], want, atol=1e-12)
    np.testing.assert_allclose(data["pos_part"], want - content, atol=1e-12)
    xr = _np(ex.x_rand[0])
    diff = _absolute_logits(ex, xr, pos) - _absolute_logits(ex, xr, list(range(N)))
    np.testing.assert_allclose(data["diff"], diff, atol=1e-12)
    assert data["max_diff"] == pytest.approx(np.abs(diff).max(), abs=1e-12)


@pytest.mark.parametrize("clip", [1, 3, 8, 16])
def test_shaw_matches_explicit_loop(ex, clip):
    """q_i . a^K[clip(j - i)] / sqrt(d_head), read from the full 33-row table by hand."""
    data = ex.data(scheme="Shaw", shift=11, clip=clip)
    full = ex.score_module("Shaw", 16)  # the widest table; narrower clips use its centre
    table = _np(full.rel_k)
    q = _np(full.W_Q.weight)[:DH] @ _np(ex.x_const[0, 0])
    want = np.zeros((N, N))
    for i in range(N):
        for j in range(N):
            r = max(-clip, min(clip, j - i))
            want[i, j] = q @ table[16 + r] / math.sqrt(DH)
    np.testing.assert_allclose(data["pos_part"], want, atol=1e-12)
    assert data["toeplitz"] == pytest.approx(1.0, abs=1e-10)


def test_t5_position_part_is_the_bias_table(ex):
    m = ex.score_module("T5", 8)
    data = ex.data(scheme="T5", shift=30)
    bias = _np(m.bias)[:, 0]
    for i in range(N):
        for j in range(N):
            r = j - i  # T5 bidirectional, 16 buckets (8 per sign), max_distance 32, by hand
            side = 8 if r > 0 else 0
            a = abs(r)
            b = a if a < 4 else min(7, 4 + int(math.log(a / 4) / math.log(32 / 4) * 4))
            assert data["pos_part"][i, j] == pytest.approx(bias[side + b], abs=1e-12), (i, j)


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("shift", [3, 64])
def test_data_matches_score_modules(ex, scheme, shift):
    data = ex.data(scheme=scheme, shift=shift, clip=5)
    m = ex.score_module(scheme, 5)
    pos = torch.arange(N)
    with torch.no_grad():
        l0 = m(ex.x_rand, positions=pos)[0, 0]
        ls = m(ex.x_rand, positions=pos + shift)[0, 0]
        lc = m(ex.x_const, positions=pos + shift)[0, 0]
    np.testing.assert_allclose(data["logits0"], _np(l0), rtol=0, atol=1e-13)
    np.testing.assert_allclose(data["logits_shift"], _np(ls), rtol=0, atol=1e-13)
    np.testing.assert_allclose(data["logits_const"], _np(lc), rtol=0, atol=1e-13)
    assert data["scale"] == pytest.approx(float(l0.abs().max()))
    # the drawn head's change is bounded by the module's worst change over all heads
    assert data["max_diff"] <= shift_equivariance_error(m, ex.x_rand, shift) + 1e-15


@pytest.mark.parametrize("scheme", RELATIVE)
@pytest.mark.parametrize("shift", [1, 20, 100])
def test_relative_schemes_are_shift_free_and_toeplitz(ex, scheme, shift):
    data = ex.data(scheme=scheme, shift=shift, clip=4)
    assert data["max_diff"] < 1e-12 * max(1.0, data["scale"]), data["max_diff"]
    assert data["toeplitz"] == pytest.approx(1.0, abs=1e-10)
    # Toeplitz by hand: every diagonal j - i is constant
    P = data["pos_part"]
    for r in range(-N + 1, N):
        diag = np.diagonal(P, offset=r)
        assert np.ptp(diag) < 1e-12, (scheme, r)


@pytest.mark.parametrize("shift", [1, 20, 100])
def test_absolute_is_neither(ex, shift):
    data = ex.data(scheme="absolute", shift=shift)
    assert data["max_diff"] > 0.1
    assert data["toeplitz"] < 0.9
    assert data["scale"] > 0.5


def test_shift_zero_changes_nothing(ex):
    for scheme in SCHEMES:
        data = ex.data(scheme=scheme, shift=0)
        assert data["max_diff"] == 0.0
        np.testing.assert_array_equal(data["diff"], np.zeros((N, N)))


def test_clip_flattens_beyond_k(ex):
    for scheme in ("Shaw", "DeBERTa"):
        for k in (2, 6):
            P = ex.data(scheme=scheme, clip=k)["pos_part"]
            beyond = [P[i, j] for i in range(N) for j in range(N) if j - i >= k]
            before = [P[i, j] for i in range(N) for j in range(N) if j - i <= -k]
            assert np.ptp(beyond) < 1e-12 and np.ptp(before) < 1e-12
            assert abs(P[0, k - 1] - P[0, k]) > 1e-6  # not flat inside the clip


def test_toeplitz_fraction_by_hand(ex):
    data = ex.data(scheme="absolute", shift=5)
    P = data["pos_part"]
    T = np.zeros_like(P)
    for r in range(-N + 1, N):
        idx = [(i, i + r) for i in range(N) if 0 <= i + r < N]
        mean = np.mean([P[a] for a in idx])
        for a in idx:
            T[a] = mean
    want = 1 - ((P - T) ** 2).sum() / ((P - P.mean()) ** 2).sum()
    assert data["toeplitz"] == pytest.approx(want, abs=1e-12)


def test_live_sliders_drive_the_data(ex):
    w = live(ex)
    w.sliders["scheme"].value = "DeBERTa"
    w.sliders["clip"].value = 3
    w.sliders["shift"].value = 37
    got = w.last_data
    assert (got["scheme"], got["clip"], got["shift"]) == ("DeBERTa", 3, 37)
    np.testing.assert_array_equal(got["positions"], np.arange(37, 37 + N))
    assert got["max_diff"] < 1e-12
    w.sliders["scheme"].value = "absolute"
    assert w.last_data["scheme"] == "absolute" and w.last_data["max_diff"] > 0.1


def test_redraw_budget(ex):
    settings = [dict(scheme=s, shift=20 + k) for k, s in enumerate(SCHEMES)]
    assert_redraws_within_budget(ex, settings, name="position_scores.scheme_explorer")


def test_animate_frames(ex):
    html = animate(ex, "scheme", list(SCHEMES), shift=20)
    assert "<img" in html
    frames = re.search(r"frames = (\[.*?\]), texts =", html, re.S)
    assert frames is not None
    frames = json.loads(frames.group(1))
    assert len(frames) == len(SCHEMES) and len(set(frames)) == len(SCHEMES)


def test_construction_is_deterministic():
    a, b = scheme_explorer(seed=3), scheme_explorer(seed=3)
    for scheme in SCHEMES:
        np.testing.assert_array_equal(a.data(scheme=scheme)["diff"], b.data(scheme=scheme)["diff"])
    c = scheme_explorer(seed=4)
    assert not np.array_equal(a.data()["pos_part"], c.data()["pos_part"])


def test_global_rng_and_threads_untouched():
    torch.manual_seed(123)
    want = torch.rand(3)
    threads = torch.get_num_threads()
    torch.manual_seed(123)
    e = scheme_explorer()
    e.data(scheme="Shaw", clip=2)
    torch.testing.assert_close(torch.rand(3), want)
    assert torch.get_num_threads() == threads


def test_bad_values(ex):
    with pytest.raises(ValueError, match="scheme"):
        ex.data(scheme="ALiBi")
    with pytest.raises(ValueError, match="shift"):
        ex.data(shift=101)
    with pytest.raises(ValueError, match="shift"):
        ex.data(shift=-1)
    with pytest.raises(ValueError, match="shift"):
        ex.data(shift=2.5)
    with pytest.raises(ValueError, match="clip"):
        ex.data(clip=0)
    with pytest.raises(ValueError, match="clip"):
        ex.data(clip=17)
    with pytest.raises(TypeError, match="shift"):
        ex.data(shift="3")
    with pytest.raises(ValueError, match="unknown"):
        ex.data(heads=3)
    with pytest.raises(ValueError, match="scheme"):
        ex.score_module("ALiBi", 8)
    with pytest.raises(ValueError, match="clip"):
        ex.score_module("Shaw", 40)
    with pytest.raises(ValueError, match="values"):
        animate(ex, "scheme", list(SCHEMES) * 5)
    with pytest.raises(ValueError, match="n"):
        scheme_explorer(n=1)
    with pytest.raises(ValueError, match="heads"):
        scheme_explorer(D=32, heads=3)
    with pytest.raises(ValueError, match="heads"):
        scheme_explorer(D=32, heads=32)  # head size 1 is odd: no RoPE pairs
    with pytest.raises(ValueError, match="head"):
        scheme_explorer(head=2)
    with pytest.raises(ValueError, match="max_shift"):
        scheme_explorer(max_shift=-1)
    with pytest.raises(ValueError, match="rope_base"):
        scheme_explorer(rope_base=0.0)
