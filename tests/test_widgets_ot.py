"""The minibatch-paradox widget: drawn data checked against direct computation."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from kexue_lib._core import make_generator  # noqa: E402
from kexue_lib.ot import exact_ot, gaussian_batch_ratio  # noqa: E402
from kexue_lib.widgets.frontends import animate  # noqa: E402
from kexue_lib.widgets.ot import BATCHES, DIMS, batch_ratio_explorer  # noqa: E402
from tests.conftest import assert_redraws_within_budget  # noqa: E402


@pytest.fixture(scope="module")
def ex():
    return batch_ratio_explorer(reps=1, seed=2)


def test_panel_a_averages_are_the_two_w1(ex):
    d = ex.data(D=64, B=8)
    assert d["matched"].mean() * 8 == pytest.approx(d["w_bb"], rel=1e-12)
    g = make_generator(2 + 1000 * 64 + 8)
    xy = torch.randn(16, 64, generator=g, dtype=torch.float64)
    assert d["w_bb"] == pytest.approx(exact_ot(xy[:8], xy[8:])[0].item(), rel=1e-12)
    assert d["w_bm"] == pytest.approx(xy[:8].norm(dim=1).mean().item(), rel=1e-12)


def test_ratio_stays_below_sqrt2_and_grows_with_dimension(ex):
    table = ex.data()["table"]
    assert set(table) == set(BATCHES)
    for r in table.values():
        assert r.shape == (len(DIMS),) and (r < math.sqrt(2)).all()
        assert r[-1] > r[0]


def test_gaussian_batch_ratio_bad_input_and_dtype():
    out = gaussian_batch_ratio(4, 5, reps=2, generator=make_generator(0), dtype=torch.float32)
    assert out["ratio"].shape == (2,) and np.isfinite(out["ratio"]).all()
    with pytest.raises(ValueError, match=r"^dim\b"):
        gaussian_batch_ratio(0, 5, reps=2)
    with pytest.raises(ValueError, match=r"^D\b"):
        ex_bad = batch_ratio_explorer(reps=1)
        ex_bad.data(D=3)


def test_animation_and_redraw_budget(ex):
    html = animate(ex, "D", [1, 64, 1024])
    assert "<img" in html or "data:image/png" in html
    assert_redraws_within_budget(ex, [dict(D=128, B=32), dict(D=16, B=128)], name="ot batch ratio")
