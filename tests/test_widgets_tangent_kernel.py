"""The path-kernel reconstruction widget: drawn data checked against direct training runs."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from kexue_lib.widgets.frontends import animate, live  # noqa: E402
from kexue_lib.widgets.tangent_kernel import (  # noqa: E402
    RULES,
    reconstruction_explorer,
    sine_regression_data,
    small_tanh_mlp,
)
from tests.conftest import assert_redraws_within_budget  # noqa: E402


@pytest.fixture(scope="module")
def ex():
    return reconstruction_explorer(width=8, horizon=4.0, lrs=(0.4, 0.2, 0.1), seed=1)


def test_trained_curve_matches_torch_sgd(ex):
    """f_T in the widget is what torch.optim.SGD produces on the same loss and steps."""
    d = ex.data(lr=0.2, rule="euler")
    X, y, Xq = sine_regression_data(seed=1)
    model = small_tanh_mlp(8, seed=1)
    assert np.allclose(d["f0"], model(Xq)[:, 0].detach().numpy())
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    for _ in range(d["steps"]):
        opt.zero_grad()
        (0.5 * ((model(X)[:, 0] - y) ** 2).mean()).backward()
        opt.step()
    assert d["steps"] == 20
    assert np.allclose(d["fT"], model(Xq)[:, 0].detach().numpy(), atol=1e-12)
    assert d["error"] == pytest.approx(np.abs(d["recon"] - d["fT"]).max())


def test_error_orders(ex):
    errs = ex.data()["errors"]
    assert errs.shape == (len(RULES), 3)
    lrs = np.array([0.4, 0.2, 0.1])
    slope = [np.polyfit(np.log(lrs), np.log(e), 1)[0] for e in errs]
    assert 0.7 < slope[0] < 1.3 and 1.6 < slope[1] < 2.4
    assert (errs[1] < errs[0]).all()


def test_builders_and_bad_input():
    m = small_tanh_mlp(16, head_scale=0.0, seed=3)
    assert torch.equal(
        m(torch.randn(4, 1, dtype=torch.float64)), torch.zeros(4, 1, dtype=torch.float64)
    )
    X, y, Xq = sine_regression_data(7, 9, noise=0.0)
    assert X.shape == (7, 1) and Xq.shape == (9, 1)
    assert torch.allclose(y, torch.sin(3 * X[:, 0]))
    with pytest.raises(ValueError, match=r"^width\b"):
        small_tanh_mlp(0)
    with pytest.raises(ValueError, match=r"^n_train\b"):
        sine_regression_data(1)
    with pytest.raises(ValueError, match=r"^horizon\b"):
        reconstruction_explorer(horizon=0.0)


def test_frontends_and_budget(ex):
    box = live(ex)
    box.sliders["rule"].value = "midpoint"
    assert box.last_values["rule"] == "midpoint"
    assert "data:image/png;base64," in animate(ex, "lr", [0.4, 0.1], rule="euler")
    assert_redraws_within_budget(
        ex, [{"lr": 0.1, "rule": "euler"}, {"lr": 0.4, "rule": "midpoint"}],
        name="tangent_kernel.reconstruction",
    )  # fmt: skip
