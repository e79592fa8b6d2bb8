"""Tests of kexue_lib.cost: the FLOP model against FlopCounterMode, crossovers against root finding."""

from __future__ import annotations

import math
import time

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from kexue_lib._core import make_generator
from kexue_lib.attention import elu_plus_one, linear_attention
from kexue_lib.cost import (
    NOMINAL_H200,
    arithmetic_intensity,
    cost_crossovers,
    count_flops,
    roofline_seconds,
    time_fn,
    transformer_layer_cost,
)
from tests.conftest import requires_cuda


class ExplicitLayer(nn.Module):
    """A plain post-LN encoder layer written with explicit matmuls (no fused SDPA)."""

    def __init__(self, h, d, *, attention="softmax", key_mult=1, value_mult=1, ffn_mult=4):
        super().__init__()
        D = h * d
        self.h, self.dk, self.dv, self.attention = h, key_mult * d, value_mult * d, attention
        self.q = nn.Linear(D, h * self.dk, bias=False)
        self.k = nn.Linear(D, h * self.dk, bias=False)
        self.v = nn.Linear(D, h * self.dv, bias=False)
        self.o = nn.Linear(h * self.dv, D, bias=False)
        self.f1 = nn.Linear(D, ffn_mult * D, bias=False)
        self.f2 = nn.Linear(ffn_mult * D, D, bias=False)
        self.n1, self.n2 = nn.LayerNorm(D), nn.LayerNorm(D)

    def forward(self, x):
        B, n, _ = x.shape

        def heads(t, size):
            return t.view(B, n, self.h, size).transpose(1, 2)

        q, k, v = heads(self.q(x), self.dk), heads(self.k(x), self.dk), heads(self.v(x), self.dv)
        if self.attention == "softmax":
            a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.dk), -1) @ v
        else:
            a = linear_attention(q, k, v, feature_map=elu_plus_one)
        x = self.n1(x + self.o(a.transpose(1, 2).reshape(B, n, -1)))
        return self.n2(x + self.f2(F.gelu(self.f1(x))))


@pytest.mark.parametrize("n", [8, 32, 100])
def test_softmax_layer_formula_matches_flop_counter(n):
    h, d = 2, 8
    layer = ExplicitLayer(h, d)
    x = torch.randn(1, n, h * d, generator=make_generator(n))
    counted = count_flops(layer, x)
    model = transformer_layer_cost(n, h, d, unit="flop")
    assert counted == model["total"], (counted, model)
    assert model["total"] == 2 * transformer_layer_cost(n, h, d)["total"]
    # the post's closed forms: C_SA = 4 n h^2 d^2 + 2 n^2 h d, C_FFN = 8 n h^2 d^2
    mul = transformer_layer_cost(n, h, d)
    assert (
        mul["qkv_proj"] + mul["out_proj"] + mul["attn_core"]
        == 4 * n * h**2 * d**2 + 2 * n**2 * h * d
    )
    assert mul["ffn"] == 8 * n * h**2 * d**2


@pytest.mark.parametrize("km,vm", [(1, 1), (4, 1), (4, 4)])
def test_linear_layer_formula_matches_flop_counter(km, vm):
    h, d, n = 2, 4, 24
    layer = ExplicitLayer(h, d, attention="linear", key_mult=km, value_mult=vm)
    counted = count_flops(layer, torch.randn(1, n, h * d, generator=make_generator(km * 10 + vm)))
    model = transformer_layer_cost(
        n, h, d, attention="linear", key_mult=km, value_mult=vm, widen_projections=True, unit="flop"
    )
    # linear_attention computes the normaliser as one extra value column: 2 matmuls of n*d_k
    normaliser = 2 * (2 * h * n * km * d)
    assert counted == model["total"] + normaliser, (counted, model)
    assert model["quadratic_share"] == 0


def test_sdpa_is_counted_or_reported_as_zero():
    q = torch.randn(1, 2, 16, 8, generator=make_generator(3))
    c = count_flops(F.scaled_dot_product_attention, q, q, q)
    assert c in (0, 4 * 2 * 16 * 16 * 8)  # CPU fused kernels may be unregistered in FlopCounterMode


def test_post_numbers_for_bert_base():
    h, d = 12, 64
    c = cost_crossovers(h, d)
    assert c["sa_gt_ffn"] == 1536 and c["quadratic_dominates"] == 4608
    assert c["linear_core_cheaper"] == 1024 and c["linear_layer_cheaper_widened"] == 2560
    assert c["linear_core_cheaper_equal_size"] == 64
    assert abs(transformer_layer_cost(512, h, d)["quadratic_share"] - 0.1) < 1e-12
    # sheet table: std / linear(4d, post's accounting)
    for n, ratio in [(128, 0.841), (512, 0.909), (1024, 1.000), (4096, 1.545), (65536, 12.455)]:
        std = transformer_layer_cost(n, h, d)["total"]
        lin = transformer_layer_cost(n, h, d, attention="linear", key_mult=4, value_mult=4)["total"]
        assert abs(std / lin - ratio) < 5e-4, (n, std / lin)
    # widened projections: 10 n h^2 d^2 instead of 4 n h^2 d^2
    w = transformer_layer_cost(100, h, d, attention="linear", key_mult=4, widen_projections=True)
    assert w["qkv_proj"] + w["out_proj"] == 10 * 100 * h**2 * d**2


def _brentq(f, lo, hi):
    from scipy.optimize import brentq

    return brentq(f, lo, hi, xtol=1e-9)


@settings(max_examples=30, deadline=None)
@given(h=st.integers(1, 16), d=st.integers(2, 128), km=st.sampled_from([1.5, 2, 4, 8]))
def test_crossovers_solve_the_cost_equalities(h, d, km):
    c = cost_crossovers(h, d, key_mult=km)

    def exact(n, **kw):
        # evaluate the polynomial terms from two integer points (linear) and three (quadratic)
        vals = [transformer_layer_cost(m, h, d, **kw) for m in (1, 2, 3)]
        out = {}
        for key in ("qkv_proj", "out_proj", "ffn", "attn_core"):
            y1, y2, y3 = (v[key] for v in vals)
            a2 = (y3 - 2 * y2 + y1) / 2
            a1 = y2 - y1 - 3 * a2
            a0 = y1 - a1 - a2
            out[key] = a2 * n * n + a1 * n + a0
        return out

    def sa_minus_ffn(n):
        e = exact(n)
        return e["qkv_proj"] + e["out_proj"] + e["attn_core"] - e["ffn"]

    def quad_minus_lin(n):
        e = exact(n)
        return e["attn_core"] - (e["qkv_proj"] + e["out_proj"] + e["ffn"])

    def std_minus_lin(n, **kw):
        s, lin = exact(n), exact(n, attention="linear", **kw)
        return sum(s.values()) - sum(lin.values())

    hi = 1e7
    assert abs(_brentq(sa_minus_ffn, 0.5, hi) - c["sa_gt_ffn"]) < 1e-6 * c["sa_gt_ffn"]
    assert (
        abs(_brentq(quad_minus_lin, 0.5, hi) - c["quadratic_dominates"])
        < 1e-6 * c["quadratic_dominates"]
    )
    r = _brentq(lambda n: std_minus_lin(n, key_mult=km, value_mult=km), 1e-3, hi)
    assert abs(r - c["linear_core_cheaper"]) < 1e-6 * c["linear_core_cheaper"]
    r = _brentq(lambda n: std_minus_lin(n, key_mult=km, widen_projections=True), 1e-3, hi)
    assert abs(r - c["linear_layer_cheaper_widened"]) < 1e-6 * c["linear_layer_cheaper_widened"]
    r = _brentq(lambda n: std_minus_lin(n), 1e-3, hi)
    assert abs(r - c["linear_core_cheaper_equal_size"]) < 1e-6 * d


def test_time_fn_median_and_threads():
    calls = []

    def f(x):
        calls.append(x)
        time.sleep(0.002)

    t = time_fn(f, 1, repeats=5, warmup=2, threads=1)
    assert len(calls) == 7 and 0.0015 < t < 0.05
    before = torch.get_num_threads()
    time_fn(lambda: None, repeats=2, threads=1)
    assert torch.get_num_threads() == before


def test_roofline_numbers():
    assert abs(NOMINAL_H200["ridge_bf16_flop_per_byte"] - 206.04) < 0.1
    # FFN-up GEMM at n=512, hidden 768 in bf16 (sheet: ~279 FLOP/B)
    n, D = 512, 768
    flops = 2 * n * D * 4 * D
    nbytes = 2 * (n * D + D * 4 * D + n * 4 * D)
    assert abs(arithmetic_intensity(flops, nbytes) - 279.3) < 0.5
    assert roofline_seconds(989e12, 1.0) == pytest.approx(1.0)
    assert roofline_seconds(1.0, 4.8e12) == pytest.approx(1.0)


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"^n\b"):
        transformer_layer_cost(0, 2, 2)
    with pytest.raises(TypeError, match=r"^h\b"):
        transformer_layer_cost(4, 2.0, 2)
    with pytest.raises(ValueError, match=r"^attention\b"):
        transformer_layer_cost(4, 2, 2, attention="flash")
    with pytest.raises(ValueError, match=r"^unit\b"):
        transformer_layer_cost(4, 2, 2, unit="bytes")
    with pytest.raises(ValueError, match=r"^key_mult\b"):
        transformer_layer_cost(4, 2, 2, key_mult=0)
    with pytest.raises(ValueError, match=r"^key_mult\b"):
        cost_crossovers(2, 2, key_mult=-1)
    with pytest.raises(TypeError, match=r"^fn_or_module\b"):
        count_flops(3)
    with pytest.raises(ValueError, match=r"^repeats\b"):
        time_fn(lambda: None, repeats=0)
    with pytest.raises(ValueError, match=r"^bytes_moved\b"):
        arithmetic_intensity(1.0, 0.0)


@requires_cuda
def test_cuda_count_and_time():
    layer = ExplicitLayer(2, 8).cuda()
    x = torch.randn(1, 16, 16, generator=make_generator(4)).cuda()
    assert count_flops(layer, x) == transformer_layer_cost(16, 2, 8, unit="flop")["total"]
    assert time_fn(layer, x, repeats=3, warmup=1) > 0
    q = torch.randn(1, 2, 64, 16, generator=make_generator(5)).to("cuda", torch.float16)
    assert count_flops(F.scaled_dot_product_attention, q, q, q) in (0, 4 * 2 * 64 * 64 * 16)
