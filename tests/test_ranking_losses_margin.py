"""AM-Softmax, the metric margin loss, the margin condition and the multi-label softmax CE.

References: explicit log(1 + sum exp) double loops, F.cross_entropy on shifted logits,
pytorch-metric-learning's CosFaceLoss (the same loss under another name), summed binary
cross-entropies where the two losses must agree (one class) and must differ (many classes).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from kexue_lib.geometry import chord_distance, sqrt_cosine_distance
from kexue_lib.ranking_losses import (
    am_softmax_loss,
    margin_condition_fraction,
    margin_condition_holds,
    margin_distance_loss,
    multilabel_categorical_crossentropy,
)
from tests.conftest import requires_cuda


def gen(seed):
    return torch.Generator().manual_seed(seed)


def _am_loop(f, c, y, s, m):
    out = []
    for b in range(f.shape[0]):
        cos = [float(F.cosine_similarity(f[b], c[i], dim=0)) for i in range(c.shape[0])]
        tot = 1.0
        for i in range(c.shape[0]):
            if i != int(y[b]):
                tot += math.exp(s * (cos[i] + m - cos[int(y[b])]))
        out.append(math.log(tot))
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("s, m", [(30.0, 0.35), (5.0, 0.0), (1.0, 0.8)])
def test_am_softmax_matches_double_loop(dtype, s, m):
    g = gen(0)
    f = torch.randn(7, 5, generator=g, dtype=torch.float64)
    c = torch.randn(4, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (7,), generator=g)
    got = am_softmax_loss(f.to(dtype), c.to(dtype), y, scale=s, margin=m, reduction="none")
    assert got.dtype == dtype
    tol = 1e-12 if dtype == torch.float64 else 1e-4
    torch.testing.assert_close(got.double(), _am_loop(f, c, y, s, m), rtol=tol, atol=tol)


def test_am_softmax_matches_cosface_of_pytorch_metric_learning():
    pml = pytest.importorskip("pytorch_metric_learning.losses")
    g = gen(1)
    f = torch.randn(16, 8, generator=g, dtype=torch.float64)
    y = torch.randint(0, 5, (16,), generator=g)
    ref = pml.CosFaceLoss(num_classes=5, embedding_size=8, margin=0.35, scale=30.0)
    ref.W.data = torch.randn(8, 5, generator=g).double()
    want = ref(f, y)
    got = am_softmax_loss(f, ref.W.data.T, y, scale=30.0, margin=0.35)
    torch.testing.assert_close(got, want.to(got.dtype), rtol=1e-10, atol=1e-10)


def test_margin_only_on_target_and_zero_margin_is_normalised_softmax():
    g = gen(2)
    f, c = (
        torch.randn(9, 3, generator=g, dtype=torch.float64),
        torch.randn(5, 3, generator=g, dtype=torch.float64),
    )
    y = torch.randint(0, 5, (9,), generator=g)
    cos = F.normalize(f, dim=-1) @ F.normalize(c, dim=-1).T
    torch.testing.assert_close(
        am_softmax_loss(f, c, y, scale=7.0, margin=0.0), F.cross_entropy(7 * cos, y)
    )
    # subtracting m from every logit (the pitfall) is the same as no margin at all
    torch.testing.assert_close(F.cross_entropy(7 * (cos - 0.3), y), F.cross_entropy(7 * cos, y))
    assert am_softmax_loss(f, c, y, scale=7.0, margin=0.3) > F.cross_entropy(7 * cos, y) + 0.1
    # the loss is invariant to the norms of features and centres (it is a cosine loss)
    torch.testing.assert_close(
        am_softmax_loss(3 * f, 0.1 * c, y, scale=7.0, margin=0.3),
        am_softmax_loss(f, c, y, scale=7.0, margin=0.3),
    )


@given(st.floats(0.0, 1.0), st.floats(0.5, 40.0), st.integers(0, 10_000))
@settings(max_examples=40, deadline=None)
def test_margin_distance_loss_is_the_log1p_sum(m, s, seed):
    """margin_distance_loss = CE with target logit shifted; it is the log(1 + sum) form."""
    g = gen(seed)
    D = torch.rand(6, 4, generator=g, dtype=torch.float64) * 2
    y = torch.randint(0, 4, (6,), generator=g)
    got = margin_distance_loss(D, y, scale=s, margin=m, reduction="none")
    dy = D.gather(1, y[:, None])
    terms = torch.exp(s * (dy + m - D)).masked_fill(F.one_hot(y, 4).bool(), 0.0)
    torch.testing.assert_close(got, torch.log1p(terms.sum(1)), rtol=1e-9, atol=1e-12)


def test_margin_condition_implies_perfect_retrieval_and_matches_loop():
    g = gen(3)
    centres = F.normalize(torch.randn(4, 3, generator=g, dtype=torch.float64), dim=-1)
    labels = torch.arange(4).repeat_interleave(6)
    z = F.normalize(
        centres[labels] + 0.25 * torch.randn(24, 3, generator=g, dtype=torch.float64), dim=-1
    )
    got = margin_condition_holds(z, labels, centres, chord_distance)
    d = chord_distance
    for a in range(24):
        ok, pair_ok, pairs = True, 0, 0
        for b in range(24):
            if b == a or labels[b] != labels[a]:
                continue
            for k in range(24):
                if labels[k] == labels[a]:
                    continue
                lhs = (
                    d(z[a], centres[labels[a]])
                    + d(z[b], centres[labels[a]])
                    + d(z[k], centres[labels[k]])
                )
                ok &= bool(lhs < d(z[a], centres[labels[k]]))
                pair_ok += bool(lhs < d(z[a], centres[labels[k]]))
                pairs += 1
        assert bool(got[a]) == ok
        frac = margin_condition_fraction(z, labels, centres, chord_distance)[a]
        assert abs(float(frac) - pair_ok / pairs) < 1e-12
        assert (float(frac) == 1.0) == ok
        if ok:  # sufficient: every same-class sample is nearer than every other-class one
            dist = d(z[a][None], z)
            same = (labels == labels[a]) & (torch.arange(24) != a)
            assert dist[same].max() < dist[labels != labels[a]].min()
    assert 0 < int(got.sum()) < 24


def _mcce_def(s, y):
    out = []
    for row_s, row_y in zip(s, y):
        neg = sum(math.exp(v) for v, t in zip(row_s.tolist(), row_y.tolist()) if t == 0)
        pos = sum(math.exp(-v) for v, t in zip(row_s.tolist(), row_y.tolist()) if t == 1)
        out.append(math.log(1 + neg) + math.log(1 + pos))
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_multilabel_ce_matches_its_definition(dtype):
    g = gen(4)
    s = 3 * torch.randn(6, 9, generator=g, dtype=torch.float64)
    y = (torch.rand(6, 9, generator=g) < 0.3).double()
    y[0] = 0  # no positive at all
    y[1] = 1  # only positives
    got = multilabel_categorical_crossentropy(s.to(dtype), y.to(dtype))
    assert got.dtype == dtype and got.shape == (6,)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(got.double(), _mcce_def(s, y), rtol=tol, atol=tol)


def test_multilabel_ce_single_class_equals_binary_ce_and_differs_for_many():
    g = gen(5)
    s = torch.randn(50, 1, generator=g, dtype=torch.float64)
    y = (torch.rand(50, 1, generator=g) < 0.5).double()
    bce = F.binary_cross_entropy_with_logits(s, y, reduction="none").sum(1)
    torch.testing.assert_close(multilabel_categorical_crossentropy(s, y), bce)
    # with many classes the log of a sum is not the sum of logs: strictly smaller (n >= 2)
    s = torch.randn(50, 20, generator=g, dtype=torch.float64)
    y = (torch.rand(50, 20, generator=g) < 0.2).double()
    bce = F.binary_cross_entropy_with_logits(s, y, reduction="none").sum(1)
    mc = multilabel_categorical_crossentropy(s, y)
    assert (mc < bce).all() and (bce - mc).min() > 0.1


def test_multilabel_ce_single_label_reduces_to_softmax_ce_with_zero_class():
    """One positive: log(1 + sum_neg e^s) + log(1 + e^-s_t) = CE over the classes plus the
    threshold class at 0 (both of its terms), so it is never below the softmax CE."""
    g = gen(6)
    s = torch.randn(10, 5, generator=g, dtype=torch.float64)
    t = torch.randint(0, 5, (10,), generator=g)
    y = F.one_hot(t, 5).double()
    got = multilabel_categorical_crossentropy(s, y)
    ce = F.cross_entropy(s, t, reduction="none")
    assert (got >= ce - 1e-12).all()  # adding the threshold class only adds terms


def test_multilabel_ce_mask_neg_inf_and_soft_labels():
    g = gen(7)
    s = torch.randn(4, 6, generator=g, dtype=torch.float64)
    y = (torch.rand(4, 6, generator=g) < 0.4).double()
    mask = torch.ones(4, 6, dtype=torch.bool)
    mask[:, 4:] = False
    want = multilabel_categorical_crossentropy(s[:, :4], y[:, :4])
    torch.testing.assert_close(multilabel_categorical_crossentropy(s, y, mask=mask), want)
    s_inf = s.clone()
    s_inf[:, 4:] = float("-inf")
    y2 = y.clone()
    y2[:, 4:] = 1.0  # even labelled positives are absent at -inf
    s_inf.requires_grad_(True)
    loss = multilabel_categorical_crossentropy(s_inf, y2)
    torch.testing.assert_close(loss.detach(), want)
    loss.sum().backward()
    assert torch.isfinite(s_inf.grad).all() and (s_inf.grad[:, 4:] == 0).all()
    # soft labels: log(sum (1-y) e^s + 1) + log(sum y e^-s + 1)
    q = torch.rand(4, 6, generator=g, dtype=torch.float64)
    want = torch.log1p(((1 - q) * s.exp()).sum(1)) + torch.log1p((q * (-s).exp()).sum(1))
    torch.testing.assert_close(multilabel_categorical_crossentropy(s, q), want)


def test_multilabel_ce_extreme_logits_no_nan_half():
    s = torch.tensor([[1e4, -1e4, 0.0]], dtype=torch.float16)
    y = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float16)
    out = multilabel_categorical_crossentropy(s, y)
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    s = torch.tensor([[1e30, -1e30]], dtype=torch.float64)
    assert torch.isfinite(
        multilabel_categorical_crossentropy(s, torch.tensor([[0.0, 1.0]], dtype=torch.float64))
    ).all()


def test_sqrt_cos_metric_loss_is_finite_for_am_scale():
    g = gen(8)
    z, c = torch.randn(5, 4, generator=g), torch.randn(3, 4, generator=g)
    D = sqrt_cosine_distance(z[:, None], c[None])
    y = torch.tensor([0, 1, 2, 0, 1])
    assert torch.isfinite(margin_distance_loss(D, y, scale=64.0, margin=0.5))


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (
            lambda: am_softmax_loss(torch.randn(3, 2), torch.randn(4, 2), torch.tensor([0, 1, 4])),
            ValueError,
            r"^targets\b",
        ),
        (
            lambda: am_softmax_loss(
                torch.randn(3, 2), torch.randn(4, 2), torch.tensor([0, 1, 2]), scale=0.0
            ),
            ValueError,
            r"^scale\b",
        ),
        (
            lambda: am_softmax_loss(
                torch.randn(3, 2), torch.randn(4, 2), torch.tensor([0, 1, 2]), margin=-0.1
            ),
            ValueError,
            r"^margin\b",
        ),
        (
            lambda: am_softmax_loss(torch.randn(3, 2), torch.randn(4, 3), torch.tensor([0, 1, 2])),
            ValueError,
            r"^centers\b",
        ),
        (
            lambda: am_softmax_loss(
                torch.randn(3, 2), torch.randn(4, 2), torch.tensor([0.0, 1, 2])
            ),
            TypeError,
            r"^targets\b",
        ),
        (
            lambda: am_softmax_loss(
                torch.randn(3, 2), torch.randn(4, 2), torch.tensor([0, 1, 2]), reduction="max"
            ),
            ValueError,
            r"^reduction\b",
        ),
        (
            lambda: margin_distance_loss(torch.rand(3), torch.tensor([0, 1, 2])),
            ValueError,
            r"^dists\b",
        ),
        (
            lambda: multilabel_categorical_crossentropy(torch.randn(2, 3), torch.full((2, 3), 2.0)),
            ValueError,
            r"^targets\b",
        ),
        (
            lambda: multilabel_categorical_crossentropy(torch.randn(2, 3), torch.zeros(2, 4)),
            ValueError,
            r"^targets\b",
        ),
        (
            lambda: multilabel_categorical_crossentropy(
                torch.randn(2, 3), torch.zeros(2, 3), mask=torch.ones(2, 3)
            ),
            TypeError,
            r"^mask\b",
        ),
        (
            lambda: multilabel_categorical_crossentropy([1.0], torch.zeros(1)),
            TypeError,
            r"^logits\b",
        ),
        (
            lambda: margin_condition_holds(
                torch.randn(3, 2), torch.tensor([0, 1, 1]), torch.randn(2, 2), None
            ),
            TypeError,
            r"^dist_fn\b",
        ),
    ],
)
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@requires_cuda
def test_cuda_keeps_device():
    f, c = torch.randn(4, 3, device="cuda"), torch.randn(2, 3, device="cuda")
    y = torch.tensor([0, 1, 1, 0], device="cuda")
    assert am_softmax_loss(f, c, y).device.type == "cuda"
    assert multilabel_categorical_crossentropy(f, (f > 0).float()).device.type == "cuda"


@given(st.integers(2, 30), st.integers(0, 10_000), st.floats(0.1, 20.0))
@settings(max_examples=50, deadline=None)
def test_multilabel_ce_is_a_smoothed_hinge(n, seed, scale):
    """softplus(max_neg s) + softplus(-min_pos s) <= L <= the same + 2 log n (log-sum-exp bounds)."""
    g = gen(seed)
    s = scale * torch.randn(1, n, generator=g, dtype=torch.float64)
    y = (torch.rand(1, n, generator=g) < 0.3).double()
    y[0, 0], y[0, 1] = 1.0, 0.0
    L = multilabel_categorical_crossentropy(s, y)[0]
    lo = F.softplus(s[y == 0].max()) + F.softplus(-s[y == 1].min())
    assert lo - 1e-12 <= L <= lo + 2 * math.log(n) + 1e-12
