"""Tests of kexue_lib.models.position_scores: each module against a per-(i, j) loop of its formula."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kexue_lib.linalg import toeplitz_fraction
from kexue_lib.models.position_scores import (
    AbsoluteScore,
    DeBERTaScore,
    RoPEScore,
    ShawScore,
    T5BiasScore,
    TransformerXLScore,
    shift_equivariance_error,
)
from tests.conftest import requires_cuda

B, N, D, H = 2, 6, 8, 2
DH = D // H


def make_x(dtype=torch.float64, seed=0, n=N):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, n, D, generator=g, dtype=torch.float64).to(dtype)


def build(cls, dtype=torch.float64, seed=1, **kw):
    torch.manual_seed(seed)
    return cls(D, H, **kw).to(dtype)


def sin_vec(pos: float, d: int, base: float = 1e4) -> torch.Tensor:
    """Vaswani's p_pos written out: slot 2i = sin(pos base^(-2i/d)), slot 2i+1 = cos(...)."""
    out = []
    for i in range(d // 2):
        a = pos / base ** (2 * i / d)
        out += [math.sin(a), math.cos(a)]
    return torch.tensor(out, dtype=torch.float64)


def heads_of(W: torch.nn.Linear, v: torch.Tensor, h: int) -> torch.Tensor:
    """Head ``h`` slice of ``v W^T`` for a single vector ``v: (D,)``."""
    return (W.weight.double() @ v.double())[h * DH : (h + 1) * DH]


def t5_bucket(r: int, nb=32, md=128) -> int:
    nb //= 2
    out = nb if r > 0 else 0
    n = abs(r)
    exact = nb // 2
    if n < exact:
        return out + n
    return out + min(nb - 1, exact + int(math.log(n / exact) / math.log(md / exact) * (nb - exact)))


def clip(r: int, k: int) -> int:
    return min(max(r, -k), k) + k


def rotate(v: torch.Tensor, pos: float, base: float = 1e4) -> torch.Tensor:
    out = v.clone()
    for p in range(len(v) // 2):
        a = pos * base ** (-2 * p / len(v))
        c, s = math.cos(a), math.sin(a)
        out[2 * p] = v[2 * p] * c - v[2 * p + 1] * s
        out[2 * p + 1] = v[2 * p] * s + v[2 * p + 1] * c
    return out


def loop_logits(m, x, pos, kind: str) -> torch.Tensor:
    """The formula of each scheme, one (b, head, i, j) at a time, float64."""
    x = x.double()
    out = torch.zeros(B, H, N, N, dtype=torch.float64)
    s = 1 / math.sqrt(DH)
    for b in range(B):
        for h in range(H):
            for i in range(N):
                for j in range(N):
                    pi, pj = float(pos[i]), float(pos[j])
                    r = int(pos[j] - pos[i]) if kind not in ("xl", "rope") else pj - pi
                    xi, xj = x[b, i], x[b, j]
                    if kind == "abs":
                        qi = heads_of(m.W_Q, xi + sin_vec(pi, D), h)
                        kj = heads_of(m.W_K, xj + sin_vec(pj, D), h)
                        val = qi @ kj * s
                    elif kind == "abs_learned":
                        P = m.P.double()
                        qi = heads_of(m.W_Q, xi + P[int(pi)], h)
                        kj = heads_of(m.W_K, xj + P[int(pj)], h)
                        val = qi @ kj * s
                    elif kind == "abs_mul":
                        qi = heads_of(m.W_Q, xi * sin_vec(pi, D), h)
                        kj = heads_of(m.W_K, xj * sin_vec(pj, D), h)
                        val = qi @ kj * s
                    elif kind == "shaw":
                        qi, kj = heads_of(m.W_Q, xi, h), heads_of(m.W_K, xj, h)
                        val = qi @ (kj + m.rel_k.double()[clip(r, m.max_rel)]) * s
                    elif kind == "xl":
                        qi, kj = heads_of(m.W_Q, xi, h), heads_of(m.W_K, xj, h)
                        Rk = heads_of(m.W_KR, sin_vec(r, D), h)
                        u, v = m.u.double()[h], m.v.double()[h]
                        val = ((qi + u) @ kj + (qi + v) @ Rk) * s
                    elif kind == "t5":
                        qi, kj = heads_of(m.W_Q, xi, h), heads_of(m.W_K, xj, h)
                        val = qi @ kj * s + m.bias.double()[t5_bucket(r), h]
                    elif kind == "deberta":
                        qi, kj = heads_of(m.W_Q, xi, h), heads_of(m.W_K, xj, h)
                        Pr = m.rel_emb.double()
                        Kr = heads_of(m.W_KR, Pr[clip(r, m.max_rel)], h)
                        Qr = heads_of(m.W_QR, Pr[clip(-r, m.max_rel)], h)
                        val = (qi @ kj + qi @ Kr + kj @ Qr) / math.sqrt(3 * DH)
                    elif kind == "rope":
                        qi = rotate(heads_of(m.W_Q, xi, h), pi)
                        kj = rotate(heads_of(m.W_K, xj, h), pj)
                        val = qi @ kj * s
                    out[b, h, i, j] = val
    return out


CASES = [
    ("abs", AbsoluteScore, {}),
    ("abs_learned", AbsoluteScore, {"table": "learned", "max_len": 64}),
    ("abs_mul", AbsoluteScore, {"combine": "mul"}),
    ("shaw", ShawScore, {"max_rel": 2}),
    ("xl", TransformerXLScore, {}),
    ("t5", T5BiasScore, {}),
    ("deberta", DeBERTaScore, {"max_rel": 2}),
    ("rope", RoPEScore, {}),
]
RELATIVE = [c for c in CASES if not c[0].startswith("abs")]


def _needs_rope(kind):
    if kind == "rope":
        pytest.importorskip("kexue_lib.rope")


@pytest.mark.parametrize("kind,cls,kw", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 2e-4)])
def test_module_matches_formula_loop(kind, cls, kw, dtype, tol):
    _needs_rope(kind)
    m = build(cls, dtype, **kw)
    x = make_x(dtype)
    # positions with gaps and a large offset, so clipping and big buckets are exercised
    pos = torch.tensor([0, 1, 3, 4, 9, 40]) + (0 if kind == "abs_learned" else 20)
    got = m(x, positions=pos)
    assert got.shape == (B, H, N, N) and got.dtype == dtype
    ref = loop_logits(m, x, pos, kind)
    torch.testing.assert_close(got.double(), ref, atol=tol, rtol=tol)


def test_default_positions_and_batched_positions():
    m = build(T5BiasScore)
    x = make_x()
    torch.testing.assert_close(m(x), m(x, positions=torch.arange(N)))
    pos = torch.stack([torch.arange(N), torch.arange(N) * 50])
    both = m(x, positions=pos)
    torch.testing.assert_close(both[1:], m(x[1:], positions=pos[1]))
    torch.testing.assert_close(both[:1], m(x[:1], positions=pos[0]))


def test_xl_real_positions_match_loop():
    m = build(TransformerXLScore)
    x = make_x()
    pos = torch.tensor([0.0, 0.5, 1.25, 3.0, 7.5, 8.0], dtype=torch.float64)
    torch.testing.assert_close(
        m(x, positions=pos), loop_logits(m, x, pos, "xl"), atol=1e-10, rtol=0
    )


def test_shaw_value_side_matches_loop():
    m = build(ShawScore, max_rel=2)
    x = make_x()
    pos = torch.arange(N) * 2
    w = torch.softmax(m(x, positions=pos), -1)
    got = m.attend(x, w, positions=pos)
    ref = torch.zeros(B, H, N, DH, dtype=torch.float64)
    for b in range(B):
        for h in range(H):
            for i in range(N):
                for j in range(N):
                    vj = heads_of(m.W_V, x[b, j], h)
                    r = int(pos[j] - pos[i])
                    ref[b, h, i] += w[b, h, i, j] * (vj + m.rel_v.double()[clip(r, 2)])
    torch.testing.assert_close(got, ref)


@pytest.mark.parametrize("kind,cls,kw", RELATIVE, ids=[c[0] for c in RELATIVE])
@pytest.mark.parametrize("shift", [1, 7, 100, 1000])
def test_relative_schemes_are_shift_equivariant(kind, cls, kw, shift):
    _needs_rope(kind)
    m = build(cls, **kw)
    x = make_x(n=12)
    assert shift_equivariance_error(m, x, shift) < 1e-9


@pytest.mark.parametrize("kind,cls,kw", RELATIVE, ids=[c[0] for c in RELATIVE])
def test_relative_schemes_give_toeplitz_logits_on_constant_content(kind, cls, kw):
    _needs_rope(kind)
    m = build(cls, **kw)
    x = make_x(n=1).expand(B, 16, D).contiguous()
    S = m(x).detach()
    assert float(toeplitz_fraction(S).min()) > 1 - 1e-10


@pytest.mark.parametrize("kw", [{}, {"table": "learned"}, {"combine": "mul"}])
def test_absolute_is_neither_equivariant_nor_toeplitz(kw):
    m = build(AbsoluteScore, **kw)
    x = make_x(n=1).expand(B, 16, D).contiguous()
    assert float(toeplitz_fraction(m(x).detach()).max()) < 0.99
    assert shift_equivariance_error(m, make_x(n=12), 5) > 1e-2


def test_float_shift_and_float32():
    m = (
        build(RoPEScore, dtype=torch.float32)
        if _rope_ok()
        else build(TransformerXLScore, torch.float32)
    )
    x = make_x(torch.float32, n=10)
    assert shift_equivariance_error(m, x, 2.5) < 1e-4


def _rope_ok():
    try:
        import kexue_lib.rope  # noqa: F401
    except ImportError:
        return False
    return True


def test_gradients_flow_to_position_parameters():
    for cls, kw, name in [
        (ShawScore, {"max_rel": 2}, "rel_k"),
        (T5BiasScore, {}, "bias"),
        (DeBERTaScore, {"max_rel": 2}, "rel_emb"),
        (TransformerXLScore, {}, "v"),
    ]:
        m = build(cls, **kw)
        m(make_x()).square().sum().backward()
        g = getattr(m, name).grad
        assert g is not None and g.abs().sum() > 0, cls.__name__


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"^heads\b"):
        ShawScore(10, 3)
    with pytest.raises(ValueError, match=r"^heads\b"):
        RoPEScore(6, 2)  # head size 3 is odd
    with pytest.raises(ValueError, match=r"^table\b"):
        AbsoluteScore(8, 2, table="rope")
    with pytest.raises(ValueError, match=r"^combine\b"):
        AbsoluteScore(8, 2, combine="cat")
    with pytest.raises(ValueError, match=r"^max_rel\b"):
        ShawScore(8, 2, max_rel=-1)
    with pytest.raises(ValueError, match=r"^num_buckets\b"):
        T5BiasScore(8, 2, num_buckets=2)
    m = build(ShawScore)
    with pytest.raises(ValueError, match=r"^x\b"):
        m(torch.zeros(2, 5, 7, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"^x\b"):
        m(torch.zeros(2, 5, 8, dtype=torch.long))
    with pytest.raises(ValueError, match=r"^positions\b"):
        m(make_x(), positions=torch.arange(N + 1))
    with pytest.raises(TypeError, match=r"^positions\b"):
        m(make_x(), positions=torch.arange(N) * 0.5)
    with pytest.raises(ValueError, match=r"^positions\b"):
        build(AbsoluteScore, table="learned", max_len=8)(make_x(), positions=torch.arange(N) + 5)
    with pytest.raises(ValueError, match=r"^weights\b"):
        m.attend(make_x(), torch.zeros(B, H, N, N + 1, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"^shift\b"):
        shift_equivariance_error(m, make_x(), "1")


@requires_cuda
@pytest.mark.parametrize("kind,cls,kw", CASES, ids=[c[0] for c in CASES])
def test_cuda_matches_cpu(kind, cls, kw):
    _needs_rope(kind)
    m = build(cls, torch.float32, **kw)
    x = make_x(torch.float32)
    cpu = m(x).detach()
    mc = m.to("cuda")
    gpu = mc(x.cuda()).detach()
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=1e-4)


@settings(max_examples=25, deadline=None)
@given(
    idx=st.integers(0, len(RELATIVE) - 1),
    shift=st.integers(-5000, 5000),
    seed=st.integers(0, 2**16),
    n=st.integers(1, 10),
)
def test_shift_equivariance_property(idx, shift, seed, n):
    kind, cls, kw = RELATIVE[idx]
    if kind == "rope" and not _rope_ok():
        return
    m = build(cls, seed=seed, **kw)
    x = make_x(seed=seed, n=n)
    # RoPE angles at position ~5000 carry ~1e-12 absolute rounding in float64
    assert shift_equivariance_error(m, x, shift) < 1e-8
