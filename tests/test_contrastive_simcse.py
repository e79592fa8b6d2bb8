"""SimCSE loss: a double loop, MultipleNegativesRankingLoss, collapse values, bad input."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kexue_lib.contrastive import (
    simcse_alignment_uniformity,
    simcse_twin_labels,
    simcse_unsup_loss,
)
from tests.conftest import requires_cuda


def loop_loss(h, scale, same_view):
    """The post's formula written as explicit sums over rows and candidates."""
    n2 = h.shape[0]
    x = [v / v.norm() for v in h.double()]
    total = 0.0
    for i in range(n2):
        twin = i + 1 if i % 2 == 0 else i - 1
        denom = 0.0
        for j in range(n2):
            if j == i or (not same_view and j % 2 == i % 2):
                continue
            denom += math.exp(scale * float(x[i] @ x[j]))
        total += -(scale * float(x[i] @ x[twin]) - math.log(denom))
    return total / n2


def test_twin_labels():
    assert simcse_twin_labels(6).tolist() == [1, 0, 3, 2, 5, 4]


@pytest.mark.parametrize("same_view", [True, False])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_against_double_loop(same_view, dtype):
    g = torch.Generator().manual_seed(0)
    h = torch.randn(10, 7, generator=g, dtype=dtype)
    got = simcse_unsup_loss(h, scale=5.0, same_view_negatives=same_view)
    assert got.dtype == dtype
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    assert abs(got.item() - loop_loss(h, 5.0, same_view)) < tol


def test_against_sentence_transformers_mnrl():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from sentence_transformers.sentence_transformer.losses import (
            MultipleNegativesRankingLoss,
        )
    g = torch.Generator().manual_seed(1)
    h = torch.randn(16, 5, generator=g, dtype=torch.float64)
    v0, v1 = h[0::2], h[1::2]
    paper = MultipleNegativesRankingLoss(None, scale=20.0)
    post = MultipleNegativesRankingLoss(
        None, scale=20.0, directions=("query_to_doc", "query_to_query")
    )

    def both(loss):  # anchors from each view in turn, averaged as our mean over 2N rows
        return 0.5 * (
            loss.compute_loss_from_embeddings([v0, v1], None)
            + loss.compute_loss_from_embeddings([v1, v0], None)
        )

    torch.testing.assert_close(simcse_unsup_loss(h, same_view_negatives=False), both(paper))
    torch.testing.assert_close(simcse_unsup_loss(h, same_view_negatives=True), both(post))


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 12), d=st.integers(1, 6), scale=st.floats(0.1, 100.0))
def test_collapse_values(n, d, scale):
    h = torch.ones(2 * n, d, dtype=torch.float64)
    post = simcse_unsup_loss(h, scale=scale).item()
    paper = simcse_unsup_loss(h, scale=scale, same_view_negatives=False).item()
    assert abs(post - math.log(2 * n - 1)) < 1e-9
    assert abs(paper - math.log(n)) < 1e-9


def test_half_precision_no_overflow_and_gradient():
    h = (torch.randn(8, 4, generator=torch.Generator().manual_seed(2)) * 100).half()
    assert torch.isfinite(simcse_unsup_loss(h)).all()
    h64 = torch.randn(8, 4, dtype=torch.float64, requires_grad=True)
    simcse_unsup_loss(h64).backward()
    assert torch.isfinite(h64.grad).all()


def test_alignment_uniformity_against_loops():
    g = torch.Generator().manual_seed(3)
    h = torch.randn(12, 3, generator=g, dtype=torch.float64)
    x = torch.nn.functional.normalize(h, dim=1)
    a, b = x[0::2], x[1::2]
    align_ref = sum(float((a[i] - b[i]).norm() ** 2) for i in range(6)) / 6
    pairs = [(i, j) for i in range(6) for j in range(i + 1, 6)]
    unif_ref = math.log(sum(math.exp(-2 * float((a[i] - a[j]).norm() ** 2)) for i, j in pairs) / 15)
    align, unif = simcse_alignment_uniformity(h)
    assert abs(align - align_ref) < 1e-12 and abs(unif - unif_ref) < 1e-12


def test_bad_input():
    with pytest.raises(ValueError, match=r"^n_rows\b"):
        simcse_twin_labels(5)
    with pytest.raises(ValueError, match=r"^h\b"):
        simcse_unsup_loss(torch.zeros(5, 3))
    with pytest.raises(TypeError, match=r"^h\b"):
        simcse_unsup_loss(torch.zeros(4, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"^scale\b"):
        simcse_unsup_loss(torch.zeros(4, 3), scale=0.0)
    with pytest.raises(ValueError, match=r"^h\b"):
        simcse_alignment_uniformity(torch.zeros(2, 3))


@requires_cuda
def test_cuda_matches_cpu():
    h = torch.randn(12, 6, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    for same_view in (True, False):
        got = simcse_unsup_loss(h.cuda(), same_view_negatives=same_view)
        assert got.device.type == "cuda"
        assert abs(got.item() - simcse_unsup_loss(h, same_view_negatives=same_view).item()) < 1e-10
