"""Tests of kexue_lib.rope against matrices, loops, complex numbers and transformers' rotary code."""

from __future__ import annotations

import cmath
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kexue_lib.rope import (
    Rotary,
    apply_rope,
    apply_rope_2d,
    commutant_dimension,
    grid_positions,
    recover_position_2d,
    rope2d_generators,
    rope2d_matrix,
    rope_cos_sin,
    rope_decay_envelope,
    rope_matrix,
    rotate_pairs,
)

DTYPES = [(torch.float64, 1e-12), (torch.float32, 2e-5)]
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _gen(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def _randn(*shape, dtype=torch.float64, seed=0):
    return torch.randn(*shape, dtype=torch.float64, generator=_gen(seed)).to(dtype)


# ----------------------------------------------------------------------------- references


def loop_rope(x: torch.Tensor, positions, base: float, layout: str) -> torch.Tensor:
    """Brute force with python floats: rotate every pair of every row by m * base^(-2i/d)."""
    rows = x.detach().to(torch.float64).reshape(-1, x.shape[-2], x.shape[-1]).tolist()
    d = x.shape[-1]
    out = []
    for mat in rows:
        new = []
        for m, v in zip(positions, mat):
            w = list(v)
            for i in range(d // 2):
                a, b = (2 * i, 2 * i + 1) if layout == "interleaved" else (i, i + d // 2)
                ang = m * base ** (-2.0 * i / d)
                w[a] = v[a] * math.cos(ang) - v[b] * math.sin(ang)
                w[b] = v[a] * math.sin(ang) + v[b] * math.cos(ang)
            new.append(w)
        out.append(new)
    return torch.tensor(out, dtype=torch.float64).reshape(x.shape)


def complex_rope(x: torch.Tensor, positions: torch.Tensor, base: float) -> torch.Tensor:
    """Interleaved RoPE as multiplication by e^{i m θ} through torch.view_as_complex."""
    d = x.shape[-1]
    theta = base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    rot = torch.polar(
        torch.ones(len(positions), d // 2, dtype=torch.float64),
        positions.to(torch.float64)[:, None] * theta,
    )
    z = torch.view_as_complex(x.to(torch.float64).reshape(*x.shape[:-1], d // 2, 2).contiguous())
    return torch.view_as_real(z * rot).flatten(-2)


# ----------------------------------------------------------------------------- 1-D: equality


@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("layout", ["interleaved", "half"])
def test_apply_rope_matches_matrix(dtype, tol, layout):
    x = _randn(2, 3, 7, 16, dtype=dtype, seed=1)
    y = apply_rope(x, layout=layout)
    assert y.dtype == dtype and y.shape == x.shape
    for m in range(7):
        R = rope_matrix(m, 16, layout=layout)
        want = x[..., m, :].to(torch.float64) @ R.T  # R_m x for every row
        torch.testing.assert_close(y[..., m, :].to(torch.float64), want, atol=tol, rtol=tol)


@pytest.mark.parametrize("layout", ["interleaved", "half"])
def test_apply_rope_matches_loop(layout):
    x = _randn(2, 5, 12, seed=2)
    pos = [0, 3, 17, 250, 4096]
    y = apply_rope(x, torch.tensor(pos), base=500.0, layout=layout)
    torch.testing.assert_close(y, loop_rope(x, pos, 500.0, layout), atol=1e-12, rtol=1e-12)


def test_rope_matrix_matches_loop():
    d = 10
    R = rope_matrix(2.5, d, base=100.0)
    for j in range(d):
        e = torch.zeros(1, d, dtype=torch.float64)
        e[0, j] = 1
        torch.testing.assert_close(R[:, j], loop_rope(e, [2.5], 100.0, "interleaved")[0])


@pytest.mark.parametrize("dtype,tol", DTYPES)
def test_apply_rope_matches_view_as_complex(dtype, tol):
    x = _randn(3, 9, 32, dtype=dtype, seed=3)
    pos = torch.tensor([0, 1, 2, 5, 8, 13, 100, 1000, 5000])
    y = apply_rope(x, pos)
    torch.testing.assert_close(
        y.to(torch.float64), complex_rope(x, pos, 1e4), atol=tol * 10, rtol=tol * 10
    )


def test_half_equals_interleaved_up_to_permutation():
    d = 16
    perm = torch.cat([torch.arange(0, d, 2), torch.arange(1, d, 2)])
    x = _randn(4, 6, d, seed=4)
    torch.testing.assert_close(
        apply_rope(x[..., perm], layout="half"), apply_rope(x, layout="interleaved")[..., perm]
    )
    # mixing layouts between the table and the rotation breaks the rotation
    cos, sin = rope_cos_sin(torch.arange(6), d, layout="interleaved", dtype=torch.float64)
    wrong = x * cos + rotate_pairs(x, layout="half") * sin
    assert (wrong - apply_rope(x)).abs().max() > 0.1


def test_rotate_pairs_closed_form():
    x = torch.arange(1.0, 7.0)
    assert rotate_pairs(x).tolist() == [-2.0, 1.0, -4.0, 3.0, -6.0, 5.0]
    assert rotate_pairs(x, layout="half").tolist() == [-4.0, -5.0, -6.0, 1.0, 2.0, 3.0]
    # +90° twice is −identity
    torch.testing.assert_close(rotate_pairs(rotate_pairs(x)), -x)


def test_rope_cos_sin_closed_form_and_layouts():
    pos = torch.tensor([0, 1, 7])
    cos, sin = rope_cos_sin(pos, 6, base=100.0, dtype=torch.float64)
    assert cos.shape == (3, 6) and cos.dtype == torch.float64
    for r, m in enumerate(pos.tolist()):
        for j in range(6):
            ang = m * 100.0 ** (-2 * (j // 2) / 6)
            assert abs(cos[r, j].item() - math.cos(ang)) < 1e-14
            assert abs(sin[r, j].item() - math.sin(ang)) < 1e-14
    ch, sh = rope_cos_sin(pos, 6, base=100.0, layout="half", dtype=torch.float64)
    torch.testing.assert_close(ch, torch.cat([cos[:, 0::2], cos[:, 0::2]], -1))
    torch.testing.assert_close(sh, torch.cat([sin[:, 0::2], sin[:, 0::2]], -1))


# ----------------------------------------------------------------------------- transformers


def test_matches_transformers_llama_half_layout():
    llama = pytest.importorskip("transformers.models.llama.modeling_llama")
    from transformers import LlamaConfig

    d, n = 16, 11
    cfg = LlamaConfig(hidden_size=4 * d, num_attention_heads=4, head_dim=d)
    rot = llama.LlamaRotaryEmbedding(config=cfg)
    q, k = (
        _randn(2, 4, n, d, dtype=torch.float32, seed=5),
        _randn(2, 4, n, d, dtype=torch.float32, seed=6),
    )
    pos = torch.arange(n)[None].expand(2, n)
    cos, sin = rot(q, pos)
    q_hf, k_hf = llama.apply_rotary_pos_emb(q, k, cos, sin)
    torch.testing.assert_close(apply_rope(q, layout="half"), q_hf, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(apply_rope(k, layout="half"), k_hf, atol=1e-5, rtol=1e-5)
    mine_cos, mine_sin = rope_cos_sin(torch.arange(n), d, layout="half")
    torch.testing.assert_close(mine_cos, cos[0], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(mine_sin, sin[0], atol=1e-6, rtol=1e-6)
    # rotate_half is our rotate_pairs(layout="half")
    torch.testing.assert_close(rotate_pairs(q, layout="half"), llama.rotate_half(q))


def test_matches_transformers_roformer_interleaved_layout():
    rf = pytest.importorskip("transformers.models.roformer.modeling_roformer")
    d, n = 32, 40
    table = rf.RoFormerSinusoidalPositionalEmbedding(n, d).create_weight()  # (n, d): [sin | cos]
    q, k = (
        _randn(2, 3, n, d, dtype=torch.float32, seed=7),
        _randn(2, 3, n, d, dtype=torch.float32, seed=8),
    )
    q_hf, k_hf = rf.RoFormerSelfAttention.apply_rotary_position_embeddings(table[None, None], q, k)
    torch.testing.assert_close(apply_rope(q), q_hf, atol=2e-5, rtol=2e-5)
    torch.testing.assert_close(apply_rope(k), k_hf, atol=2e-5, rtol=2e-5)


# ----------------------------------------------------------------------------- identities


finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)


@settings(max_examples=40, deadline=None)
@given(
    m=st.integers(-2000, 2000),
    n=st.integers(-2000, 2000),
    half=st.integers(1, 16),
    base=st.floats(2.0, 1e6),
    seed=st.integers(0, 2**31 - 1),
)
def test_relativity_identity(m, n, half, base, seed):
    d = 2 * half
    q, k = _randn(1, d, seed=seed), _randn(1, d, seed=seed + 1)
    s_mn = (
        apply_rope(q, torch.tensor([m]), base=base) * apply_rope(k, torch.tensor([n]), base=base)
    ).sum()
    rel = q[0] @ rope_matrix(n - m, d, base=base) @ k[0]
    assert abs(s_mn.item() - rel.item()) < 1e-9 * (1 + q.norm().item() * k.norm().item())


@settings(max_examples=40, deadline=None)
@given(a=finite, b=finite, half=st.integers(1, 12), layout=st.sampled_from(["interleaved", "half"]))
def test_rotation_group_laws(a, b, half, layout):
    d = 2 * half
    Ra, Rb = rope_matrix(a, d, layout=layout), rope_matrix(b, d, layout=layout)
    eye = torch.eye(d, dtype=torch.float64)
    torch.testing.assert_close(Ra.T @ Ra, eye, atol=1e-12, rtol=0)  # orthogonal
    torch.testing.assert_close(Ra.T, rope_matrix(-a, d, layout=layout), atol=1e-12, rtol=0)
    torch.testing.assert_close(Ra @ Rb, rope_matrix(a + b, d, layout=layout), atol=1e-9, rtol=0)
    assert abs(torch.linalg.det(Ra).item() - 1) < 1e-9


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 20), off=st.integers(0, 10_000))
def test_norm_preserved_and_offset(seed, n, off):
    x = _randn(2, n, 8, seed=seed)
    y = apply_rope(x, offset=off)
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1), atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(y, apply_rope(x, torch.arange(n) + off), atol=0, rtol=0)


def test_kv_cache_offset_matches_full_sequence():
    x = _randn(2, 4, 10, 16, seed=9)
    full = apply_rope(x)
    last = apply_rope(x[..., -3:, :], offset=7)
    torch.testing.assert_close(last, full[..., -3:, :], atol=1e-12, rtol=0)


def test_batched_positions_broadcast():
    x = _randn(3, 5, 8, seed=10)
    pos = torch.tensor([[0, 1, 2, 3, 4], [10, 11, 12, 13, 14], [3, 1, 4, 1, 5]])
    y = apply_rope(x, pos)
    for b in range(3):
        torch.testing.assert_close(y[b], loop_rope(x[b], pos[b].tolist(), 1e4, "interleaved"))


def test_score_matrix_is_toeplitz():
    from kexue_lib.linalg import toeplitz_fraction

    q, k = _randn(1, 32, seed=11), _randn(1, 32, seed=12)
    n = 40
    S = apply_rope(q.expand(n, 32)) @ apply_rope(k.expand(n, 32)).T
    assert abs(toeplitz_fraction(S).item() - 1) < 1e-12
    # an absolute (additive) encoding is not Toeplitz
    P = _randn(n, 32, seed=13)
    S_abs = (q + P) @ (k + P).T
    assert toeplitz_fraction(S_abs).item() < 0.9


# ----------------------------------------------------------------------------- decay envelope


def test_decay_envelope_matches_loop_and_sheet_values():
    d = 128
    deltas = [0, 1, 2, 5, 10, 20, 50, 100, 128, 200, 256, 1000]
    sheet = [
        32.5,
        31.5382,
        28.9560,
        20.8454,
        17.9541,
        15.2424,
        12.6295,
        10.2273,
        9.2729,
        7.2448,
        6.5431,
        4.4708,
    ]
    F = rope_decay_envelope(torch.tensor(deltas), d)
    assert F.dtype == torch.float64 and F.shape == (12,)
    for D, f, want in zip(deltas, F.tolist(), sheet):
        S, tot = 0j, 0.0
        for i in range(d // 2):
            S += cmath.exp(1j * D * 1e4 ** (-2 * i / d))
            tot += abs(S)
        assert abs(f - tot * 2 / d) < 1e-10
        assert abs(f - want) < 1e-4
    assert abs(rope_decay_envelope(0, 8).item() - (8 / 2 + 1) / 2) < 1e-12
    torch.testing.assert_close(
        rope_decay_envelope(torch.tensor([-7.0, 7.0]), 16).diff(),
        torch.zeros(1, dtype=torch.float64),
    )


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), delta=st.integers(-300, 300))
def test_abel_bound_holds(seed, delta):
    d = 32
    q, k = _randn(d, seed=seed), _randn(d, seed=seed + 7)
    score = q @ rope_matrix(delta, d) @ k
    qc, kc = torch.complex(q[0::2], q[1::2]), torch.complex(k[0::2], k[1::2])
    h = torch.cat([qc * kc.conj(), torch.zeros(1, dtype=torch.complex128)])
    # the exact summation-by-parts identity first (a loose bound would hide a wrong factor)
    theta = 1e4 ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    e = torch.polar(torch.ones_like(theta), -delta * theta)
    lhs = (h[:-1] * e).sum()
    rhs = -(e.cumsum(0) * (h[1:] - h[:-1])).sum()
    assert abs(lhs.real.item() - score.item()) < 1e-10
    assert abs((lhs - rhs).item()) < 1e-10
    assert abs(e.cumsum(0).abs().sum().item() - rope_decay_envelope(delta, d).item() * d / 2) < 1e-9
    bound = (h[1:] - h[:-1]).abs().max() * rope_decay_envelope(delta, d) * (d / 2)
    assert abs(score.item()) <= bound.item() + 1e-9


# ----------------------------------------------------------------------------- precision


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_no_nan_and_angles_in_fp32(dtype):
    x64 = _randn(2, 6, 64, seed=14)
    pos = torch.tensor([0, 1, 257, 1001, 4097, 65537])  # not representable in bf16
    y = apply_rope(x64.to(dtype), pos)
    assert y.dtype == dtype and torch.isfinite(y).all()
    ref = apply_rope(x64, pos)
    # angles formed in bf16 would put position 1001 at 1000 (an error of ~1 rad at θ_0 = 1)
    assert (y.to(torch.float64) - ref).abs().max().item() < 0.1
    # pair norm 5.7e4 < 65504: the rotated pair fits fp16
    assert torch.isfinite(apply_rope(torch.full((3, 8), 4e4, dtype=torch.float16))).all()


def test_float32_large_positions_accuracy():
    x = _randn(1, 3, 32, seed=15)
    pos = torch.tensor([10_000, 50_000, 100_000])
    err = (apply_rope(x.float(), pos).double() - apply_rope(x, pos)).abs().max().item()
    assert err < 2e-2, err


def test_gradients_flow_to_trainable_frequencies():
    rot = Rotary(8, learnable=True)
    assert isinstance(rot.theta, torch.nn.Parameter)
    x = _randn(5, 8, dtype=torch.float32, seed=16)
    rot(x).pow(2).sum().backward()  # norm-preserving: the gradient wrt θ of ||R x||² is 0
    assert rot.theta.grad is not None and rot.theta.grad.abs().max() < 1e-3
    rot.theta.grad = None
    (rot(x) * x).sum().backward()
    assert rot.theta.grad.abs().max() > 1e-3
    torch.testing.assert_close(Rotary(8)(x), apply_rope(x))
    assert "buffer" not in repr(Rotary(8)) and "theta" in dict(Rotary(8).named_buffers())


# ----------------------------------------------------------------------------- bad inputs


def test_bad_inputs():
    x = torch.randn(4, 6)
    with pytest.raises(ValueError, match=r"^x\b"):
        apply_rope(torch.randn(4, 7))
    with pytest.raises(ValueError, match=r"^x\b"):
        apply_rope(torch.randn(6))
    with pytest.raises(TypeError, match=r"^x\b"):
        apply_rope(torch.ones(4, 6, dtype=torch.long))
    with pytest.raises(TypeError, match=r"^x\b"):
        apply_rope([[1.0, 2.0]])
    with pytest.raises(ValueError, match=r"^layout\b"):
        apply_rope(x, layout="pairs")
    with pytest.raises(ValueError, match=r"^positions\b"):
        apply_rope(x, torch.arange(5))
    with pytest.raises(ValueError, match=r"^positions\b"):
        apply_rope(torch.randn(2, 4, 6), torch.zeros(3, 4))
    with pytest.raises(ValueError, match=r"^positions\b"):
        apply_rope(x, torch.tensor([0.0, 1.0, float("nan"), 3.0]))
    with pytest.raises(ValueError, match=r"^base\b"):
        apply_rope(x, base=1.0)
    with pytest.raises(ValueError, match=r"^base\b"):
        apply_rope(x, base=-3.0)
    with pytest.raises(ValueError, match=r"^freqs\b"):
        apply_rope(x, freqs=torch.ones(4))
    with pytest.raises(TypeError, match=r"^offset\b"):
        apply_rope(x, offset="3")
    with pytest.raises(ValueError, match=r"^d\b"):
        rope_cos_sin(torch.arange(3), 5)
    with pytest.raises(TypeError, match=r"^dtype\b"):
        rope_cos_sin(torch.arange(3), 4, dtype=torch.int64)
    with pytest.raises(ValueError, match=r"^d\b"):
        rope_matrix(1, 3)
    with pytest.raises(TypeError, match=r"^m\b"):
        rope_matrix(float("inf"), 4)
    with pytest.raises(ValueError, match=r"^x\b"):
        rotate_pairs(torch.randn(3))
    with pytest.raises(ValueError, match=r"^d\b"):
        rope_decay_envelope(3, 7)
    with pytest.raises(TypeError, match=r"^delta\b"):
        rope_decay_envelope("3", 8)
    with pytest.raises(ValueError, match=r"^d_head\b"):
        Rotary(5)
    with pytest.raises(ValueError, match=r"^x\b"):
        Rotary(8)(torch.randn(3, 6))


# ----------------------------------------------------------------------------- 2-D RoPE


def test_grid_positions():
    p = grid_positions(3, 4)
    assert p.shape == (12, 2) and p.dtype == torch.long
    assert [tuple(r) for r in p.tolist()] == [(i, j) for i in range(3) for j in range(4)]
    with pytest.raises(ValueError, match=r"^H\b"):
        grid_positions(0, 3)


@pytest.mark.parametrize("dtype,tol", DTYPES)
def test_apply_rope_2d_half_matches_block_matrices(dtype, tol):
    d = 16
    pos = grid_positions(3, 3) * torch.tensor([5, 2])
    x = _randn(2, 9, d, dtype=dtype, seed=20)
    y = apply_rope_2d(x, pos)
    assert y.dtype == dtype
    for t, (px, py) in enumerate(pos.tolist()):
        R = torch.block_diag(rope_matrix(px, d // 2), rope_matrix(py, d // 2))
        torch.testing.assert_close(y[:, t].double(), x[:, t].double() @ R.T, atol=tol, rtol=tol)


def test_apply_rope_2d_blocks4_is_permuted_half():
    d = 16
    # blocks4 coordinates [4i, 4i+1] are x-pair i, [4i+2, 4i+3] are y-pair i
    perm = []
    for i in range(d // 4):
        perm += [2 * i, 2 * i + 1, d // 2 + 2 * i, d // 2 + 2 * i + 1]
    perm = torch.tensor(perm)
    x = _randn(10, d, seed=21)
    pos = torch.randint(0, 50, (10, 2), generator=_gen(3))
    torch.testing.assert_close(
        apply_rope_2d(x[..., perm], pos, split="blocks4"), apply_rope_2d(x, pos)[..., perm]
    )


@pytest.mark.parametrize("split", ["half", "blocks4"])
def test_rope_2d_scores_depend_on_offset_only(split):
    d, H = 16, 5
    pos = grid_positions(H, H)
    q, k = _randn(1, d, seed=22).expand(H * H, d), _randn(1, d, seed=23).expand(H * H, d)
    S = apply_rope_2d(q, pos, split=split) @ apply_rope_2d(k, pos, split=split).T
    by_offset: dict[tuple[int, int], float] = {}
    for a in range(H * H):
        for b in range(H * H):
            key = tuple((pos[b] - pos[a]).tolist())
            by_offset.setdefault(key, S[a, b].item())
            assert abs(S[a, b].item() - by_offset[key]) < 1e-10
    assert len(by_offset) == (2 * H - 1) ** 2  # and distinct offsets give distinct scores
    assert len({round(v, 8) for v in by_offset.values()}) == len(by_offset)


def test_apply_rope_2d_bad_inputs():
    with pytest.raises(ValueError, match=r"^x\b"):
        apply_rope_2d(torch.randn(4, 6), grid_positions(2, 2))
    with pytest.raises(ValueError, match=r"^pos_xy\b"):
        apply_rope_2d(torch.randn(4, 8), grid_positions(2, 3))
    with pytest.raises(ValueError, match=r"^split\b"):
        apply_rope_2d(torch.randn(4, 8), grid_positions(2, 2), split="quarters")


def test_rope2d_matrix_closed_form_and_generators():
    B1, B2 = rope2d_generators(0.3)
    assert torch.equal(B1.T, -B1) and torch.equal(B2.T, -B2)
    torch.testing.assert_close(B1 @ B2, B2 @ B1)
    x, y, th = 3.0, -5.0, 0.3
    c1, s1, c2, s2 = math.cos(x * th), math.sin(x * th), math.cos(y * th), math.sin(y * th)
    want = torch.tensor(
        [[c1, -s1, 0, 0], [s1, c1, 0, 0], [0, 0, c2, -s2], [0, 0, s2, c2]], dtype=torch.float64
    )
    torch.testing.assert_close(rope2d_matrix(x, y, th), want, atol=1e-13, rtol=0)
    # agrees with scipy's independent expm
    scipy_linalg = pytest.importorskip("scipy.linalg")
    A = (x * B1 + y * B2).numpy()
    torch.testing.assert_close(rope2d_matrix(x, y, th), torch.from_numpy(scipy_linalg.expm(A)))


@settings(max_examples=30, deadline=None)
@given(
    x1=st.integers(-50, 50),
    y1=st.integers(-50, 50),
    x2=st.integers(-50, 50),
    y2=st.integers(-50, 50),
    th=st.floats(0.01, 2.0),
)
def test_rope2d_relativity(x1, y1, x2, y2, th):
    lhs = rope2d_matrix(x1, y1, th).T @ rope2d_matrix(x2, y2, th)
    torch.testing.assert_close(lhs, rope2d_matrix(x2 - x1, y2 - y1, th), atol=1e-12, rtol=0)


def test_recover_position_2d_round_trip_and_wrap():
    xs, ys = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    R = rope2d_matrix(xs, ys, 0.3)
    assert R.shape == (16, 16, 4, 4)
    rx, ry = recover_position_2d(R, 0.3)
    torch.testing.assert_close(rx, xs.double(), atol=1e-10, rtol=0)
    torch.testing.assert_close(ry, ys.double(), atol=1e-10, rtol=0)
    # beyond 2π/θ the position wraps
    period = 2 * math.pi / 0.3
    rx, _ = recover_position_2d(rope2d_matrix(25.0, 0.0, 0.3), 0.3)
    assert abs(rx.item() - (25.0 - period)) < 1e-10
    with pytest.raises(ValueError, match=r"^R\b"):
        recover_position_2d(torch.eye(3), 0.3)


def _skew3(a, b, c):
    return torch.tensor([[0.0, -a, -b], [a, 0.0, -c], [b, c, 0.0]], dtype=torch.float64)


def test_commutant_dimension_known_cases():
    J = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=torch.float64)
    Z2 = torch.zeros(2, 2, dtype=torch.float64)
    assert commutant_dimension(_skew3(1, 0, 0)) == 1  # so(3): only multiples of itself
    assert commutant_dimension(_skew3(0.3, -1.2, 2.0)) == 1
    assert commutant_dimension(torch.block_diag(J, Z2)) == 2  # J⊕0 and 0⊕J
    assert commutant_dimension(torch.block_diag(J, 2 * J)) == 2  # a maximal torus of so(4)
    assert commutant_dimension(torch.block_diag(J, J)) == 4  # u(2) inside so(4)
    for k in range(2, 7):
        assert commutant_dimension(torch.zeros(k, k, dtype=torch.float64)) == k * (k - 1) // 2
    assert commutant_dimension(torch.eye(5, dtype=torch.float64)) == 10


def test_commutant_dimension_matches_sympy_nullspace():
    sympy = pytest.importorskip("sympy")
    # B1 = B(1, b, c) embedded in so(4); the post finds the commuting family d = cf, e = -bf
    b, c = 2, -3
    B = torch.zeros(4, 4, dtype=torch.float64)
    B[:3, :3] = _skew3(1, b, c)
    syms = sympy.symbols("p0:6")
    C = sympy.zeros(4, 4)
    it = iter(syms)
    for i in range(4):
        for j in range(i + 1, 4):
            s = next(it)
            C[i, j], C[j, i] = -s, s
    Bs = sympy.Matrix(B.tolist()).applyfunc(sympy.nsimplify)
    eqs = list(Bs * C - C * Bs)
    A, _ = sympy.linear_eq_to_matrix(eqs, syms)
    assert commutant_dimension(B) == len(syms) - A.rank() == 2
    # the post's solution with f = 1: last row (d, e, f) = (c f, -b f, f)
    f = 1.0
    C2 = torch.zeros(4, 4, dtype=torch.float64)
    C2[3, :3] = torch.tensor([c * f, -b * f, f])
    C2 = C2 - C2.T
    torch.testing.assert_close(B @ C2, C2 @ B)
    C2[3, 0], C2[0, 3] = c * f + 1, -(c * f + 1)  # off the family: no longer commutes
    assert (B @ C2 - C2 @ B).abs().max() > 0.5


def test_commutant_dimension_bad_inputs():
    with pytest.raises(ValueError, match=r"^B\b"):
        commutant_dimension(torch.zeros(3, 4))
    with pytest.raises(TypeError, match=r"^B\b"):
        commutant_dimension(torch.zeros(3, 3, dtype=torch.long))


# ----------------------------------------------------------------------------- CUDA


@cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_matches_cpu(dtype):
    x = _randn(2, 4, 33, 64, seed=30)
    ref = apply_rope(x, offset=5)
    y = apply_rope(x.to("cuda", dtype), offset=5)
    assert y.device.type == "cuda" and y.dtype == dtype
    tol = 2e-5 if dtype == torch.float32 else 5e-2
    torch.testing.assert_close(y.cpu().double(), ref, atol=tol * 4, rtol=tol)
    pos = grid_positions(4, 4, device="cuda")
    y2 = apply_rope_2d(x[0, 0, :16].to("cuda", torch.float32), pos)
    torch.testing.assert_close(
        y2.cpu().double(), apply_rope_2d(x[0, 0, :16], pos.cpu()), atol=1e-4, rtol=1e-4
    )
    F = rope_decay_envelope(torch.arange(10, device="cuda"), 64)
    assert F.device.type == "cuda"
