"""The momentum-accumulation widget: drawn weights against loops, redraw within budget."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from kexue_lib.widgets.frontends import animate  # noqa: E402
from kexue_lib.widgets.optim import accumulation_weights_explorer  # noqa: E402
from tests.conftest import assert_redraws_within_budget  # noqa: E402


@pytest.fixture(scope="module")
def ex():
    return accumulation_weights_explorer()


@pytest.mark.parametrize(("beta", "k"), [(0.9, 8), (0.5, 1), (0.999, 64), (0.7, 3)])
def test_weights_are_the_unrolled_recursions(ex, beta, k):
    d = ex.data(beta=beta, k=k)
    # unroll each recursion on unit impulses: the weight of the gradient of age a (newest = 1)
    n = 3 * k
    for scheme, (decay_at, add) in {
        "accumulate": (lambda t: beta if (t - 1) % k == 0 else 1.0, (1 - beta) / k),
        "beta_tilde": (lambda t: 1 - (1 - beta) / k, (1 - beta) / k),
        "ema": (lambda t: beta, 1 - beta),
    }.items():
        w = []
        for age in range(1, n + 1):
            m, T = 0.0, n  # the update happens at micro-step T = 3k (a window end)
            for t in range(1, T + 1):
                m = decay_at(t) * m + (add if t == T - age + 1 else 0.0)
            w.append(m)
        np.testing.assert_allclose(d["weights"][scheme], w, rtol=1e-12, atol=1e-15)
    assert abs(d["window_mass"]["accumulate"] - (1 - beta)) < 1e-12
    assert d["beta"] - 1e-12 <= d["beta_tilde"] ** k <= math.exp(-(1 - beta)) + 1e-12


def test_player_and_budget(ex):
    html = animate(ex, "k", [1, 4, 16, 64])
    assert html.count("data:image/png;base64,") >= 4
    assert_redraws_within_budget(
        ex, [{"beta": 0.9, "k": 8}, {"beta": 0.99, "k": 32}], name="momentum accumulation"
    )
