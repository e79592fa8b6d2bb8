"""The RoPE rotation widget: the drawn data checked against independent numpy math."""

from __future__ import annotations

import math
import re

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from kexue_lib.widgets.frontends import animate, live  # noqa: E402
from kexue_lib.widgets.rope import rotation_explorer  # noqa: E402
from tests.conftest import assert_redraws_within_budget  # noqa: E402

D = 16


@pytest.fixture(scope="module")
def ex():
    return rotation_explorer(d=D, n_positions=32, max_offset=8, seed=3)


def _qk(seed=3, d=D):
    g = torch.Generator()
    g.manual_seed(seed)
    q = torch.randn(d, dtype=torch.float64, generator=g)
    k = torch.randn(d, dtype=torch.float64, generator=g)
    return q.numpy(), k.numpy()


def _rot_np(x, m, base, d=D):
    """Rotate each interleaved pair of x by m * base^(-2i/d) with explicit 2x2 matrices."""
    out = np.empty_like(x)
    for i in range(d // 2):
        a = m * base ** (-2 * i / d)
        c, s = math.cos(a), math.sin(a)
        out[2 * i] = c * x[2 * i] - s * x[2 * i + 1]
        out[2 * i + 1] = s * x[2 * i] + c * x[2 * i + 1]
    return out


def _wrap(a):
    return a % (2 * math.pi)


def _ang_close(a, b, tol=1e-9):
    d = _wrap(a - b)
    return min(d, 2 * math.pi - d) < tol


def test_scores_are_toeplitz_and_match_explicit_rotations(ex):
    data = ex.data(m=2, n=6, shift=5, base=100.0)
    S = data["scores"]
    q, k = _qk()
    N = S.shape[0]
    # every diagonal is constant and equals q^T R_{n'-m'} k computed from 2x2 blocks
    for delta in range(-N + 1, N):
        diag = np.diagonal(S, offset=delta)
        want = q @ _rot_np(k, delta, 100.0)
        np.testing.assert_allclose(diag, want, atol=1e-10)
    assert abs(data["toeplitz_fraction"] - 1) < 1e-12
    s_mn = _rot_np(q, 7, 100.0) @ _rot_np(k, 11, 100.0)
    assert abs(data["s_mn"] - s_mn) < 1e-10 and abs(data["s_rel"] - s_mn) < 1e-10


@pytest.mark.parametrize("pair", [0, 3, 7])
def test_rotation_angles_are_position_times_theta(ex, pair):
    base = 1e4
    data = ex.data(m=1, n=5, shift=13, pair=pair, base=base)
    th = base ** (-2 * pair / D)
    assert abs(data["theta"] - th) < 1e-15
    assert _ang_close(data["angle_q"], 14 * th) and _ang_close(data["angle_k"], 18 * th)
    for key, pos in (("q", 14), ("k", 18)):
        raw, rot = data[f"{key}_pair"], data[f"{key}_rot"]
        turned = math.atan2(rot[1], rot[0]) - math.atan2(raw[1], raw[0])
        assert _ang_close(turned, pos * th)
        assert abs(np.linalg.norm(raw) - np.linalg.norm(rot)) < 1e-12
    assert _ang_close(data["rel_angle"], data["raw_angle"] + 4 * th)
    q, k = _qk()
    assert (
        abs(
            data["dot_pair"]
            - _rot_np(q, 14, base)[2 * pair : 2 * pair + 2]
            @ _rot_np(k, 18, base)[2 * pair : 2 * pair + 2]
        )
        < 1e-12
    )


def test_common_shift_spins_arrows_but_keeps_scores(ex):
    a = ex.data(m=2, n=7, shift=0, pair=1)
    b = ex.data(m=2, n=7, shift=20, pair=1)
    assert not _ang_close(a["angle_q"], b["angle_q"], tol=1e-3)
    assert _ang_close(a["rel_angle"], b["rel_angle"])
    assert abs(a["s_mn"] - b["s_mn"]) < 1e-10 and abs(a["dot_pair"] - b["dot_pair"]) < 1e-10


def test_decay_panel_envelope_values(ex):
    data = ex.data(base=1e4)
    env, deltas = data["envelope"], data["deltas"]
    for i in (0, 1, 10, 40):
        S = np.cumsum(np.exp(1j * deltas[i] * 1e4 ** (-2 * np.arange(D // 2) / D)))
        assert abs(env[i] - np.abs(S).sum() * 2 / D) < 1e-10
    q, k = _qk()
    np.testing.assert_allclose(
        data["s_delta"][:5], [q @ _rot_np(k, t, 1e4) for t in range(5)], atol=1e-10
    )


def test_live_slider_drive(ex):
    w = live(ex, m=1)
    w.sliders["shift"].value = 9
    w.sliders["pair"].value = 2
    data = w.last_data
    assert data["m_pos"] == 1 + 9 and data["n_pos"] == ex.values()["n"] + 9
    th = 1e4 ** (-2 * 2 / D)
    assert _ang_close(data["angle_q"], 10 * th)
    assert abs(data["toeplitz_fraction"] - 1) < 1e-12


def test_redraw_is_fast():
    ex = rotation_explorer()  # the chapter's size: d = 64, 64 positions
    ex.data()
    settings = [dict(shift=s) for s in (1, 2, 3)]
    assert_redraws_within_budget(ex, settings, name="RoPE rotation")


def test_animate_frames(ex):
    html = animate(ex, "shift", [0, 4, 8, 12], m=2, n=5)
    # four distinct frames (the player also shows the first as its initial image)
    assert len(set(re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html))) == 4
    assert "<img" in html


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"^d\b"):
        rotation_explorer(d=7)
    with pytest.raises(ValueError, match=r"^max_offset\b"):
        rotation_explorer(n_positions=8, max_offset=9)
