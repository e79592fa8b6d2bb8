"""Tests of kexue_lib.generation's truncation rules against explicit numpy loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kexue_lib._core import make_generator
from kexue_lib.generation import top_k_filter, top_p_filter
from tests.conftest import requires_cuda

FLOATS = [torch.float64, torch.float32]


def _loop_top_p(row: np.ndarray, p: float) -> np.ndarray:
    """Keep-mask by walking the sorted distribution until the mass reaches p."""
    w = np.exp(row - row.max())
    w = w / w.sum()
    keep = np.zeros(len(row), dtype=bool)
    mass = 0.0
    for i in np.argsort(-row, kind="stable"):
        keep[i] = True
        mass += w[i]
        if mass >= p:
            break
    return keep


@pytest.mark.parametrize("dtype", FLOATS)
def test_top_p_matches_a_loop(dtype):
    g = make_generator(0)
    logits = (torch.randn(6, 40, generator=g, dtype=torch.float64) * 2).to(dtype)
    for p in (0.05, 0.3, 0.9, 0.99, 1.0):
        out = top_p_filter(logits, p)
        assert out.dtype == dtype and out.shape == logits.shape
        for i in range(6):
            keep = _loop_top_p(logits[i].double().numpy(), p)
            np.testing.assert_array_equal(torch.isfinite(out[i]).numpy(), keep)
            torch.testing.assert_close(out[i][keep], logits[i][keep])
        renorm = torch.softmax(out.double(), -1)
        assert ((renorm > 0).sum(-1) >= 1).all()
    torch.testing.assert_close(top_p_filter(logits.T, 0.9, dim=0).T, top_p_filter(logits, 0.9))


@pytest.mark.parametrize("dtype", FLOATS)
def test_top_k_matches_sorting(dtype):
    g = make_generator(1)
    logits = torch.randn(5, 30, generator=g, dtype=torch.float64).to(dtype)
    for k in (1, 4, 29, 30, 100):
        out = top_k_filter(logits, k)
        for i in range(5):
            keep = np.zeros(30, dtype=bool)
            keep[np.argsort(-logits[i].double().numpy(), kind="stable")[: min(k, 30)]] = True
            np.testing.assert_array_equal(torch.isfinite(out[i]).numpy(), keep)
    torch.testing.assert_close(top_k_filter(logits.T, 3, dim=0).T, top_k_filter(logits, 3))


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(-10, 10), min_size=1, max_size=20),
    st.floats(1e-3, 1.0),
)
def test_top_p_keeps_enough_mass_and_no_more(vals, p):
    o = torch.tensor(vals, dtype=torch.float64)
    out = top_p_filter(o, p)
    kept = torch.isfinite(out)
    probs = torch.softmax(o, -1)
    assert probs[kept].sum() >= min(p, 1.0) - 1e-12 or kept.all()
    # minimal: without its least probable kept entry, the mass is below p
    if kept.sum() > 1:
        assert probs[kept].sum() - probs[kept].min() < p + 1e-12
    assert kept[o.argmax()]  # the mode always survives


def test_masked_inputs_and_bad_arguments():
    o = torch.tensor([0.0, -math.inf, 1.0, 2.0])
    assert not torch.isfinite(top_p_filter(o, 1.0))[1]
    with pytest.raises(ValueError, match=r"^p\b"):
        top_p_filter(o, 0.0)
    with pytest.raises(ValueError, match=r"^p\b"):
        top_p_filter(o, 1.5)
    with pytest.raises(ValueError, match=r"^k\b"):
        top_k_filter(o, 0)
    with pytest.raises(TypeError, match=r"^k\b"):
        top_k_filter(o, 2.0)
    with pytest.raises(TypeError, match=r"^logits\b"):
        top_p_filter(torch.arange(4), 0.5)
    with pytest.raises(ValueError, match=r"^logits\b"):
        top_p_filter(torch.tensor([0.0, math.nan]), 0.5)


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_half_precision(half):
    o = torch.randn(3, 50, generator=make_generator(2)).to(half)
    out = top_p_filter(o, 0.9)
    assert out.dtype == half
    ref = top_p_filter(o.float(), 0.9)
    np.testing.assert_array_equal(torch.isfinite(out).numpy(), torch.isfinite(ref).numpy())


@requires_cuda
def test_cuda():
    o = torch.randn(4, 100, generator=make_generator(3))
    for fn, arg in ((top_p_filter, 0.8), (top_k_filter, 7)):
        out = fn(o.cuda(), arg)
        assert out.device.type == "cuda"
        torch.testing.assert_close(out.cpu(), fn(o, arg))
