"""The SimCSE temperature widget against the library loss and a per-row loop."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

from kexue_lib.widgets.frontends import animate  # noqa: E402
from kexue_lib.widgets.simcse import TAUS, simcse_temperature_explorer  # noqa: E402
from tests.conftest import assert_redraws_within_budget  # noqa: E402


@pytest.fixture(scope="module")
def h():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(16, 8, generator=g, dtype=torch.float64)
    return base.repeat_interleave(2, 0) + 0.3 * torch.randn(32, 8, generator=g, dtype=torch.float64)


def test_data_against_loss_and_loop(h):
    ex = simcse_temperature_explorer(h)
    x = torch.nn.functional.normalize(h, dim=1)
    for tau in TAUS:
        d = ex.data(tau=tau)
        assert abs(d["loss"] - d["loss_lib"]) < 1e-10
        assert abs(d["probs"].sum(1) - 1).max() < 1e-12 and (d["probs"].diagonal() == 0).all()
        i = 5  # row 5's twin is row 4
        den = sum(math.exp(float(x[i] @ x[j]) / tau) for j in range(32) if j != i)
        assert abs(d["p_pos"][i] - math.exp(float(x[i] @ x[4]) / tau) / den) < 1e-10
        assert 1 <= d["eff_negatives"] <= 30 + 1e-9
    # high temperature: the softmax spreads over all 30 negatives; low: concentrates
    assert ex.data(tau=1.0)["eff_negatives"] > ex.data(tau=0.01)["eff_negatives"]


def test_bad_input(h):
    with pytest.raises(ValueError, match=r"^h\b"):
        simcse_temperature_explorer(h[:3])
    with pytest.raises(TypeError, match=r"^h\b"):
        simcse_temperature_explorer(h.long())


def test_redraw_budget_and_animation(h):
    ex = simcse_temperature_explorer(h)
    assert_redraws_within_budget(
        ex, [dict(tau=0.05), dict(tau=0.2), dict(tau=0.02)], name="simcse_temperature_explorer"
    )
    assert animate(ex, "tau", [0.02, 0.1]).count("data:image/png;base64,") >= 2
