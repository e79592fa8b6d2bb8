"""The closed-form shrinkage widget: drawn numbers checked against kexue_lib.linear_models."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from kexue_lib import make_generator  # noqa: E402
from kexue_lib.linear_models import analytic_softmax, fit_softmax_mle  # noqa: E402
from kexue_lib.widgets.frontends import animate, live  # noqa: E402
from kexue_lib.widgets.linear_models import (  # noqa: E402
    SHRINKAGES,
    evaluate_split,
    shrinkage_explorer,
    standardize_split,
)
from tests.conftest import assert_redraws_within_budget  # noqa: E402


@pytest.fixture(scope="module")
def wine():
    from sklearn.datasets import load_wine

    d = load_wine()
    return torch.tensor(d.data, dtype=torch.float64), torch.tensor(d.target)


@pytest.fixture(scope="module")
def ex(wine):
    return shrinkage_explorer(*wine, sizes=(30, 90), splits=1, seed=3)


def test_numbers_match_the_library(ex, wine):
    X, y = wine
    N = 90
    perm = torch.randperm(178, generator=make_generator(3 + N))
    tr, te = perm[:N], perm[N:]
    Xtr, Xte = standardize_split(X, tr, te)
    # standardisation written out with numpy
    ref = (X[tr].numpy() - X[tr].numpy().mean(0)) / X[tr].numpy().std(0, ddof=1)
    assert np.allclose(Xtr.numpy(), ref)
    d = ex.data(n_train=N, shrinkage=0.3)
    for j, s in enumerate(SHRINKAGES):
        W, b = analytic_softmax(Xtr, y[tr], 3, whiten=False, shrinkage=s)
        acc, ll = evaluate_split(W, b, Xte, y[te])
        assert d["acc"][j] == pytest.approx(acc) and d["logloss"][j] == pytest.approx(ll)
    W, b = fit_softmax_mle(Xtr, y[tr], 3, l2=1.0 / N)
    logits = Xte @ W + b
    assert d["mle_acc"] == pytest.approx((logits.argmax(-1) == y[te]).double().mean().item())
    nll = -torch.log_softmax(logits, -1)[torch.arange(len(te)), y[te]].mean().item()
    assert d["mle_logloss"] == pytest.approx(nll)
    assert d["j"] == SHRINKAGES.index(0.3)


def test_frontends(ex):
    box = live(ex)
    box.sliders["shrinkage"].value = 0.7
    assert box.last_values["shrinkage"] == 0.7
    html = animate(ex, "shrinkage", [0.1, 0.5], n_train=30)
    assert html.count("data:image/png;base64,") == 3  # the first frame also as the <img> src


def test_bad_input(wine):
    X, y = wine
    with pytest.raises(ValueError, match=r"^sizes\b"):
        shrinkage_explorer(X, y, sizes=(500,))
    with pytest.raises(TypeError, match=r"^X\b"):
        shrinkage_explorer(X.numpy(), y)


def test_redraw_budget(ex):
    assert_redraws_within_budget(
        ex, [{"n_train": 30, "shrinkage": 0.1}, {"n_train": 90, "shrinkage": 0.5}],
        name="linear_models.shrinkage",
    )  # fmt: skip
