"""CoSENT scale widget: drawn gradients checked against the closed form; redraw budget."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from kexue_lib.widgets.frontends import animate, live  # noqa: E402
from kexue_lib.widgets.ranking_losses import cosent_scale_explorer  # noqa: E402
from tests.conftest import assert_redraws_within_budget  # noqa: E402


@pytest.fixture(scope="module")
def ex():
    return cosent_scale_explorer(n_pairs=16, seed=3)


def closed_form(c, y, lam):
    terms = [
        math.exp(lam * (c[b] - c[a])) for a in range(len(c)) for b in range(len(c)) if y[a] > y[b]
    ]
    Z = 1 + sum(terms)
    out = []
    for a in range(len(c)):
        up = sum(math.exp(lam * (c[a] - c[b])) for b in range(len(c)) if y[b] > y[a])
        down = sum(math.exp(lam * (c[b] - c[a])) for b in range(len(c)) if y[b] < y[a])
        out.append(lam / Z * (up - down))
    return np.array(out)


@pytest.mark.parametrize("lam", [1.0, 20.0, 50.0])
def test_gradients_match_closed_form(ex, lam):
    d = ex.data(scale=lam)
    np.testing.assert_allclose(
        d["grad"], closed_form(d["cos"], d["labels"], lam), rtol=1e-10, atol=1e-14
    )
    assert abs(d["grad"].sum()) < 1e-10


def test_share_grows_with_scale_and_live(ex):
    shares = [ex.data(scale=s)["worst_share"] for s in (1.0, 5.0, 20.0, 50.0)]
    assert shares == sorted(shares)
    w = live(ex)
    w.sliders["scale"].value = 7.0
    assert w.last_data["scale"] == pytest.approx(7.0)
    html = animate(ex, "scale", [1.0, 20.0])
    assert "<img" in html or "data:image" in html


def test_redraw_budget(ex):
    assert_redraws_within_budget(ex, [{"scale": 3.0}, {"scale": 30.0}], name="cosent scale")


def test_bad_input():
    with pytest.raises(ValueError, match=r"^scale_range\b"):
        cosent_scale_explorer(scale_range=(5.0, 1.0))
