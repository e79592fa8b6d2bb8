"""The dimension-formula widget: drawn thresholds checked against closed forms and mpmath."""

from __future__ import annotations

import math
import re

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from kexue_lib.geometry import LAPLACE_COEF, LAPLACE_CONST, skipgram_entropy_offset  # noqa: E402
from kexue_lib.widgets.dimension import threshold_explorer  # noqa: E402
from kexue_lib.widgets.frontends import animate, live  # noqa: E402
from tests.conftest import assert_redraws_within_budget  # noqa: E402


@pytest.fixture(scope="module")
def ex():
    return threshold_explorer()


def test_rules_are_the_closed_forms(ex):
    d = ex.data(N=1e5)
    N = d["N_grid"]
    assert N[0] == pytest.approx(1e2) and N[-1] == pytest.approx(1e8) and len(N) == 121
    np.testing.assert_allclose(d["rule_833"], 8.33 * np.log(N), rtol=1e-14)
    np.testing.assert_allclose(d["rule_8"], 8.0 * np.log(N), rtol=1e-14)
    # the post's examples: 96 dimensions for 1e5 words, 128 for 5e6, 52 for L = 512
    assert round(ex.data(N=1e5)["at_833"]) == 96
    assert round(ex.data(N=5e6)["at_833"]) == 128
    assert round(ex.data(N=512.0)["at_833"]) == 52
    assert d["at_8"] == pytest.approx(8 * math.log(1e5), rel=1e-14)


@pytest.mark.parametrize("N", [512.0, 1e5, 5e6])
def test_exact_value_is_a_root_by_mpmath(ex, N):
    """At the slider's N, 2 ln N + h_n vanishes, h_n by 40-digit quadrature of the raw integral."""
    n = ex.data(N=N)["at_exact"]
    assert abs(2 * math.log(N) + skipgram_entropy_offset(n, method="mpmath")) < 1e-8
    # the exact roots quoted in the chapter
    ref = {512.0: 51.54, 1e5: 95.39, 5e6: 127.91}[N]
    assert abs(n - ref) < 0.005


def test_exact_curve_against_mpmath_and_laplace(ex):
    d = ex.data(N=1e5)
    N, n = d["N_grid"], d["exact"]
    # a few grid points: each drawn root makes 2 ln N + h_n (mpmath) vanish to interpolation error
    for k in (0, 40, 80, 120):
        resid = 2 * math.log(N[k]) + skipgram_entropy_offset(float(n[k]), method="mpmath")
        assert abs(resid) < 0.24 * 0.01, (N[k], n[k], resid)  # i.e. n within ~0.01 of the root
    # and the whole curve follows the Laplace form (2 ln N + b) / 0.2406 up to O(1/n)
    laplace = (2 * np.log(N) + LAPLACE_CONST) / -LAPLACE_COEF
    assert np.abs(n - laplace).max() < 0.1
    assert np.all(np.diff(n) > 0)  # more words need more dimensions
    # the exact root sits below 8.33 ln N (slope 2 / 0.2406 = 8.31 and a negative offset)
    assert np.all(n < d["rule_833"])


def test_live_slider_and_render_time(ex):
    w = live(ex)
    w.sliders["N"].value = 1e6
    assert w.last_data["N"] == pytest.approx(1e6, rel=1e-9)
    assert w.last_data["at_833"] == pytest.approx(8.33 * math.log(1e6), rel=1e-9)
    assert_redraws_within_budget(
        ex, [dict(N=2e3), dict(N=2e3), dict(N=2e3)], name="dimension thresholds"
    )


def test_animate_frames_and_bad_args(ex):
    values = [1e2, 1e4, 1e6, 1e8]
    html = animate(ex, "N", values)
    assert "<img" in html
    # one PNG per frame (the player also shows the first as its initial image)
    assert len(re.findall(r"data:image/png;base64,", html)) in (len(values), len(values) + 1)
    assert not re.search(r"https?://", html)
    with pytest.raises(ValueError, match="N"):
        ex.data(N=10.0)
    with pytest.raises(ValueError, match="N_range"):
        threshold_explorer(N_range=(1.0, 1e3))
    with pytest.raises(ValueError, match="default_N"):
        threshold_explorer(N_range=(1e2, 1e3), default_N=1e5)
    with pytest.raises(ValueError, match="n_grid"):
        threshold_explorer(n_grid=3)


def test_narrow_range_keeps_only_heads_inside():
    small = threshold_explorer(N_range=(1e2, 1e3), default_N=500.0, n_grid=20)
    d = small.data()
    np.testing.assert_array_equal(d["heads_L"], [512.0])
    assert d["N"] == 500.0 and len(d["exact"]) == 20
