"""Tests of kexue_lib.metrics against set-based loops."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kexue_lib._core import make_generator
from kexue_lib.metrics import topk_overlap
from tests.conftest import requires_cuda


def loop_overlap(approx, exact, k):
    """Python sets of the top-k indices (scores made distinct so the sets are unambiguous)."""
    vals = []
    for a, e in zip(approx.tolist(), exact.tolist(), strict=True):
        top_a = set(sorted(range(len(a)), key=lambda i: -a[i])[:k])
        top_e = set(sorted(range(len(e)), key=lambda i: -e[i])[:k])
        vals.append(len(top_a & top_e) / k)
    return torch.tensor(vals, dtype=torch.float64)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_topk_overlap_vs_set_loop(dtype):
    g = make_generator(0)
    exact = torch.randn(20, 50, dtype=dtype, generator=g)
    approx = exact + 0.7 * torch.randn(20, 50, dtype=dtype, generator=g)
    for k in (1, 5, 10, 50):
        want = loop_overlap(approx, exact, k)
        per_q = topk_overlap(approx, exact, k, reduction="none")
        assert per_q.dtype == dtype and per_q.shape == (20,)
        torch.testing.assert_close(per_q.double(), want)
        torch.testing.assert_close(topk_overlap(approx, exact, k).double(), want.mean())
    # k = N: every item is retrieved
    assert topk_overlap(approx, exact, 50).item() == 1.0


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 8), st.integers(2, 30), st.integers(0, 2**31 - 1))
def test_topk_overlap_properties(q, n, seed):
    g = make_generator(seed)
    exact = torch.randn(q, n, dtype=torch.float64, generator=g)
    k = max(1, n // 3)
    # identical and monotonically transformed rankings -> 1; reversed -> set-loop value
    assert topk_overlap(exact, exact, k).item() == 1.0
    assert topk_overlap(torch.exp(3 * exact), exact, k).item() == 1.0
    torch.testing.assert_close(
        topk_overlap(-exact, exact, k), loop_overlap(-exact, exact, k).mean()
    )


def test_integer_scores_and_bad_inputs():
    exact = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    approx = torch.tensor([[0, 5, 9, 1]])  # e.g. negated Hamming distances are integers
    assert topk_overlap(approx, exact, 2).item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match=r"^exact_scores\b"):
        topk_overlap(torch.randn(2, 4), torch.randn(2, 5), 1)
    with pytest.raises(ValueError, match=r"^approx_scores\b"):
        topk_overlap(torch.randn(4), torch.randn(4), 1)
    with pytest.raises(ValueError, match=r"^k\b"):
        topk_overlap(torch.randn(2, 4), torch.randn(2, 4), 5)
    with pytest.raises(TypeError, match=r"^k\b"):
        topk_overlap(torch.randn(2, 4), torch.randn(2, 4), 1.0)
    with pytest.raises(ValueError, match=r"^reduction\b"):
        topk_overlap(torch.randn(2, 4), torch.randn(2, 4), 1, reduction="sum")
    with pytest.raises(ValueError, match=r"^approx_scores\b"):
        topk_overlap(torch.tensor([[float("nan"), 1.0]]), torch.randn(1, 2), 1)
    with pytest.raises(TypeError, match=r"^exact_scores\b"):
        topk_overlap(torch.randn(1, 2), torch.ones(1, 2, dtype=torch.bool), 1)


@requires_cuda
def test_topk_overlap_cuda():
    g = make_generator(1)
    exact = torch.randn(5, 40, generator=g)
    approx = exact + torch.randn(5, 40, generator=g)
    got = topk_overlap(approx.cuda(), exact.cuda(), 7, reduction="none")
    assert got.device.type == "cuda"
    torch.testing.assert_close(got.cpu().double(), loop_overlap(approx, exact, 7))
