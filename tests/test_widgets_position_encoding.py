"""The sinusoidal inner-product widget: drawn data checked against numpy loops and scipy quad."""

from __future__ import annotations

import math
import re

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from kexue_lib.widgets.frontends import animate, live  # noqa: E402
from kexue_lib.widgets.position_encoding import inner_product_explorer  # noqa: E402
from tests.conftest import assert_redraws_within_budget  # noqa: E402


@pytest.fixture(scope="module")
def ex():
    return inner_product_explorer()


def _sum_np(delta, d, base):
    """sum_i cos(delta * base^(-2i/d)) / (d/2), one frequency at a time."""
    out = np.zeros_like(delta, dtype=np.float64)
    for i in range(d // 2):
        out += np.cos(delta * base ** (-2.0 * i / d))
    return out / (d / 2)


def _integral_quad(x, base):
    from scipy.integrate import quad

    return quad(lambda t: math.cos(x * base ** (-t)), 0, 1, limit=4000, epsabs=1e-11)[0]


@pytest.mark.parametrize("log10_base,d", [(4.0, 128), (2.5, 32), (6.0, 512)])
def test_data_matches_independent_math(ex, log10_base, d):
    data = ex.data(log10_base=log10_base, d=d)
    b = 10.0**log10_base
    np.testing.assert_allclose(data["sum_near"], _sum_np(data["near"], d, b), atol=1e-12)
    np.testing.assert_allclose(data["sum_far"], _sum_np(data["far"], d, b), atol=1e-9)
    for x in (1.0, 17.0, -60.0):
        k = int(np.argmin(np.abs(data["near"] - x)))
        assert abs(data["integral_near"][k] - _integral_quad(x, b)) < 1e-8
    k = len(data["far"]) // 2
    assert abs(data["integral_far"][k] - _integral_quad(data["far"][k], b)) < 1e-8
    gamma = 0.5772156649015329
    np.testing.assert_allclose(data["envelope"], 1 - (gamma + np.log(data["far"])) / math.log(b))
    assert data["zero_predicted"] == pytest.approx(b * math.exp(-gamma))
    assert data["sum_near"][len(data["near"]) // 2] == pytest.approx(1.0)


def test_zero_of_integral_moves_with_base(ex):
    zs = [ex.data(log10_base=v, d=128)["zero_integral"] for v in (2.0, 3.0, 4.0, 5.0)]
    assert all(a < b for a, b in zip(zs, zs[1:], strict=False))
    # each zero is within one log-grid step of a sign change of the quad integral
    z = ex.data(log10_base=3.0, d=128)["zero_integral"]
    step = 10 ** (7 / 399)
    assert _integral_quad(z, 1e3) < 0 < _integral_quad(z / step, 1e3)


def test_live_sliders_drive_the_data(ex):
    w = live(ex)
    w.sliders["log10_base"].value = 3.0
    w.sliders["d"].value = 64
    data = w.last_data
    assert data["base"] == pytest.approx(1e3) and data["d"] == 64
    np.testing.assert_allclose(data["sum_near"], _sum_np(data["near"], 64, 1e3), atol=1e-12)


def test_redraw_is_fast():
    ex = inner_product_explorer()
    ex.data()
    settings = [dict(log10_base=b) for b in (3.0, 4.0, 5.0)]
    assert_redraws_within_budget(ex, settings, name="sinusoidal inner product")


def test_animate_frames(ex):
    html = animate(ex, "log10_base", [2.0, 3.0, 4.0], d=64)
    # three frames, the first also embedded as the initial image
    assert len(re.findall(r"data:image/png;base64,", html)) == 3 + 1
    assert "<img" in html
    assert not re.search(r"https?://", html)


def test_bad_arguments(ex):
    with pytest.raises(ValueError, match=r"^n_near\b"):
        inner_product_explorer(n_near=0)
    with pytest.raises(ValueError, match=r"^log10_base\b"):
        ex.data(log10_base=9.0)
    with pytest.raises(ValueError, match=r"^d\b"):
        ex.data(d=100)
