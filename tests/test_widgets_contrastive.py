"""The gradient-accumulation widget: drawn data against independent full-batch gradients."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from kexue_lib.widgets.contrastive import accumulation_explorer  # noqa: E402
from kexue_lib.widgets.frontends import animate, live  # noqa: E402
from tests.conftest import assert_redraws_within_budget  # noqa: E402


@pytest.fixture(scope="module")
def ex():
    return accumulation_explorer(batch=16, seed=1)


def test_two_pass_exact_naive_not(ex):
    for scale in (1.0, 20.0):
        d = ex.data(micro=4, scale=scale)
        assert list(d["micros"]) == [2, 4, 8, 16]
        assert (d["exact_rel"] < 1e-13).all()
        # naive is exact only when one micro-batch holds the whole batch
        assert (d["naive_rel"][:-1] > 1e-2).all() and d["naive_rel"][-1] < 1e-13
        # a micro-batch of one pair has no negatives: its loss and gradient vanish
        assert d["naive_rel"][0] == pytest.approx(1.0, abs=1e-12) and d["naive_cos"][0] == 0.0
        assert d["naive_tensor"].shape == d["exact_tensor"].shape == (4,)


def test_per_tensor_errors_follow_the_micro_slider(ex):
    a, b = ex.data(micro=4, scale=5.0), ex.data(micro=16, scale=5.0)
    assert (a["naive_tensor"] > 1e-3).all() and (b["naive_tensor"] < 1e-12).all()
    np.testing.assert_array_equal(a["naive_rel"], b["naive_rel"])


def test_live_and_animate(ex):
    w = live(ex)
    w.sliders["micro"].value = 8
    assert w.last_data["micro"] == 8
    html = animate(ex, "micro", [2, 4, 8, 16], scale=20.0)
    assert html.count("data:image/png;base64,") == 4 + 1  # the first frame is shown twice


def test_bad_input():
    with pytest.raises(ValueError, match=r"^batch\b"):
        accumulation_explorer(batch=12)


def test_redraw_budget(ex):
    assert_redraws_within_budget(
        ex, [dict(micro=4, scale=20.0), dict(micro=8, scale=20.0)], name="contrastive"
    )
