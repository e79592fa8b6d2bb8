"""Spearman, discordant pairs and the exact best-threshold sweep against scipy and brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kexue_lib.metrics import best_binary_threshold, discordant_pairs, spearman


def brute_threshold(y, s):
    """Accuracy of every candidate threshold (-inf, every score) by direct counting."""
    y, s = np.asarray(y), np.asarray(s, dtype=np.float64)
    best = -1.0
    for thr in [-np.inf, *s.tolist()]:
        best = max(best, float(np.mean((s > thr).astype(int) == y)))
    return best


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_spearman_matches_scipy_with_ties(dtype):
    from scipy.stats import spearmanr

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 5, (200,), generator=g).to(dtype)  # heavy ties
    y = (x + torch.randn(200, generator=g, dtype=torch.float64).to(dtype)).round()
    assert spearman(x, y) == pytest.approx(
        spearmanr(x.double().numpy(), y.double().numpy()).statistic
    )
    assert np.isnan(spearman(torch.ones(5), torch.arange(5.0)))


def test_discordant_pairs_loop():
    g = torch.Generator().manual_seed(1)
    s = torch.randint(0, 4, (30,), generator=g).double()
    y = torch.randint(0, 3, (30,), generator=g)
    count = sum(1 for a in range(30) for b in range(30) if y[a] > y[b] and s[a] <= s[b])
    assert discordant_pairs(s, y) == count


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_threshold_matches_brute_force(dtype):
    for seed in range(10):
        g = torch.Generator().manual_seed(seed)
        y = torch.randint(0, 2, (60,), generator=g)
        s = (y + 1.2 * torch.randn(60, generator=g, dtype=torch.float64)).to(dtype)
        if seed % 2:
            s = (s * 3).round() / 3  # ties
        thr, acc = best_binary_threshold(y, s)
        assert acc == pytest.approx(brute_threshold(y.numpy(), s.double().numpy()))
        # the returned threshold achieves it under the stated rule, in the scores' dtype
        assert float(((s > thr).long() == y).double().mean()) == pytest.approx(acc)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.integers(-5, 5)), min_size=1, max_size=25))
def test_threshold_property(items):
    y = torch.tensor([a for a, _ in items])
    s = torch.tensor([float(b) for _, b in items], dtype=torch.float64)
    thr, acc = best_binary_threshold(y, s)
    assert acc == pytest.approx(brute_threshold(y.numpy(), s.numpy()))
    assert acc >= max(float(y.double().mean()), 1 - float(y.double().mean())) - 1e-12
    assert float(((s > thr).long() == y).double().mean()) == pytest.approx(acc)


def test_bad_input():
    with pytest.raises(ValueError, match=r"^y\b"):
        spearman(torch.rand(3), torch.rand(4))
    with pytest.raises(ValueError, match=r"^x\b"):
        spearman(torch.tensor([1.0, float("nan")]), torch.rand(2))
    with pytest.raises(ValueError, match=r"^y_true\b"):
        best_binary_threshold(torch.tensor([0, 2]), torch.rand(2))
    with pytest.raises(TypeError, match=r"^y_true\b"):
        best_binary_threshold(torch.tensor([0.0, 1.0]), torch.rand(2))
    with pytest.raises(ValueError, match=r"^scores\b"):
        best_binary_threshold(torch.tensor([0, 1]), torch.rand(3))
    with pytest.raises(ValueError, match=r"^labels\b"):
        discordant_pairs(torch.rand(3), torch.rand(2))


def test_class_weights_never_worse_than_argmax_and_binary_reduction():
    from kexue_lib.metrics import class_weight_thresholds, predict_with_weights

    g = torch.Generator().manual_seed(3)
    logits = torch.randn(300, 3, generator=g, dtype=torch.float64)
    y = torch.distributions.Categorical(
        logits=logits * 1.5 + torch.tensor([0.0, 0.0, 1.5])
    ).sample()
    probs = torch.softmax(logits, -1)  # miscalibrated: class 2 is under-predicted
    t, acc = class_weight_thresholds(y, probs)
    base = (probs.argmax(-1) == y).double().mean().item()
    assert acc >= base
    assert float((predict_with_weights(probs, t) == y).double().mean()) == pytest.approx(acc)
    assert torch.equal(predict_with_weights(probs, t), predict_with_weights(probs, 3 * t))
    # two classes: weights are a threshold, and the exact sweep is at least as good as Powell
    p1 = torch.rand(200, generator=g, dtype=torch.float64)
    y2 = (torch.rand(200, generator=g, dtype=torch.float64) < p1**2).long()
    probs2 = torch.stack([1 - p1, p1], -1)
    t2, acc2 = class_weight_thresholds(y2, probs2)
    tau = (t2[0] / (t2[0] + t2[1])).item()
    assert torch.equal(predict_with_weights(probs2, t2), (p1 * t2[1] > (1 - p1) * t2[0]).long())
    assert float(((p1 > tau).long() == y2).double().mean()) == pytest.approx(acc2, abs=1 / 200)
    assert best_binary_threshold(y2, p1)[1] >= acc2 - 1e-12


def test_class_weights_bad_input():
    from kexue_lib.metrics import class_weight_thresholds, predict_with_weights

    with pytest.raises(ValueError, match=r"^y_true\b"):
        class_weight_thresholds(torch.tensor([0, 3]), torch.rand(2, 3))
    with pytest.raises(ValueError, match=r"^t\b"):
        predict_with_weights(torch.rand(2, 3), torch.tensor([1.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match=r"^probs\b"):
        class_weight_thresholds(torch.tensor([0, 1]), torch.rand(2))
