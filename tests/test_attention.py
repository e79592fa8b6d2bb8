"""Tests of kexue_lib.attention against torch SDPA, explicit loops and closed forms."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from kexue_lib.attention import (
    attend,
    band_mask,
    causal_mask,
    elu_plus_one,
    exp_features,
    linear_attention,
    linear_attention_weights,
    performer_positive_features,
    performer_trig_features,
    rank_collapse_residual,
    relu_eps,
    softmax_attention,
    uniae_mask,
    unilm_mask,
    with_key_padding,
)

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
DTYPES = [torch.float64, torch.float32]
TOL = {torch.float64: dict(rtol=1e-10, atol=1e-10), torch.float32: dict(rtol=1e-4, atol=1e-5)}


def rand(*shape, seed=0, dtype=torch.float64, device="cpu", scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(*shape, generator=g, dtype=torch.float64)).to(
        dtype=dtype, device=device
    )


# --------------------------------------------------------------------------- references (loops)


def loop_softmax_attention(q, k, v, allowed, scale):
    """Pure-python-index loop over (b, h, i): softmax over the allowed keys, 0 when none."""
    B, H, nq, _ = q.shape
    out = torch.zeros(B, H, nq, v.shape[-1], dtype=torch.float64)
    for b in range(B):
        for h in range(H):
            for i in range(nq):
                js = [j for j in range(k.shape[-2]) if allowed(b, h, i, j)]
                if not js:
                    continue
                s = torch.tensor(
                    [float(q[b, h, i].double() @ k[b, h, j].double()) * scale for j in js],
                    dtype=torch.float64,
                )
                w = torch.exp(s - s.max())
                w = w / w.sum()
                for wj, j in zip(w, js):
                    out[b, h, i] += wj * v[b, h, j].double()
    return out


def loop_linear_attention(fq, fk, v, causal):
    """sum_j (fq_i . fk_j) v_j / sum_j (fq_i . fk_j), by an explicit loop."""
    n = fq.shape[-2]
    out = torch.zeros(*fq.shape[:-1], v.shape[-1], dtype=torch.float64)
    for i in range(n):
        num = torch.zeros(*fq.shape[:-2], v.shape[-1], dtype=torch.float64)
        den = torch.zeros(*fq.shape[:-2], 1, dtype=torch.float64)
        for j in range(fk.shape[-2]):
            if causal and j > i:
                continue
            s = (fq[..., i, :].double() * fk[..., j, :].double()).sum(-1, keepdim=True)
            num += s * v[..., j, :].double()
            den += s
        out[..., i, :] = num / den
    return out


# --------------------------------------------------------------------------- softmax attention


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_attention_matches_sdpa_and_loop(dtype):
    q, k, v = (
        rand(2, 3, 5, 4, seed=1, dtype=dtype),
        rand(2, 3, 6, 4, seed=2, dtype=dtype),
        rand(2, 3, 6, 3, seed=3, dtype=dtype),
    )
    out = softmax_attention(q, k, v)
    out_w, w = softmax_attention(q, k, v, return_weights=True)
    ref = F.scaled_dot_product_attention(q, k, v)
    loop = loop_softmax_attention(q, k, v, lambda b, h, i, j: True, 0.5)
    torch.testing.assert_close(out_w, ref, **TOL[dtype])
    torch.testing.assert_close(out.double(), loop, **TOL[dtype])
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 3, 5, dtype=dtype), **TOL[dtype])
    assert out.dtype == dtype and w.shape == (2, 3, 5, 6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_attention_masks_causal_and_scale(dtype):
    B, H, nq, nk = 2, 2, 4, 7
    q, k, v = (
        rand(B, H, nq, 8, seed=4, dtype=dtype),
        rand(B, H, nk, 8, seed=5, dtype=dtype),
        rand(B, H, nk, 2, seed=6, dtype=dtype),
    )
    g = torch.Generator().manual_seed(7)
    mask = torch.rand(B, nq, nk, generator=g) > 0.4
    mask[0, 1] = False  # one fully masked row -> zeros
    allowed = lambda b, h, i, j: bool(mask[b, i, j]) and j <= i + (nk - nq)  # noqa: E731
    ref = loop_softmax_attention(q, k, v, allowed, 0.3)
    for rw in (False, True):
        res = softmax_attention(q, k, v, attn_mask=mask, causal=True, scale=0.3, return_weights=rw)
        out = res[0] if rw else res
        torch.testing.assert_close(out.double(), ref, **TOL[dtype])
    assert torch.all(ref[0, :, 1] == 0)


def test_softmax_attention_float_bias_matches_sdpa():
    q, k, v = rand(1, 2, 5, 4, seed=8), rand(1, 2, 5, 4, seed=9), rand(1, 2, 5, 4, seed=10)
    bias = rand(5, 5, seed=11)
    out, _ = softmax_attention(q, k, v, attn_mask=bias, return_weights=True)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=bias))
    torch.testing.assert_close(
        softmax_attention(q, k, v, attn_mask=bias, causal=True),
        F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias.masked_fill(~causal_mask(5), -math.inf)
        ),
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_attend_matches_softmax_and_zero_rows(dtype):
    logits, v = rand(3, 4, 5, seed=12, dtype=dtype), rand(3, 5, 2, seed=13, dtype=dtype)
    logits[1, 2] = -math.inf
    logits[0, 0, :2] = -math.inf
    out = attend(logits, v)
    ref = torch.softmax(logits.double(), -1).nan_to_num(0.0) @ v.double()
    torch.testing.assert_close(out.double(), ref, **TOL[dtype])
    assert torch.all(out[1, 2] == 0)


def test_softmax_attention_bf16_half_no_nan():
    q, k, v = (rand(1, 2, 16, 8, seed=s, scale=30.0).to(torch.bfloat16) for s in (14, 15, 16))
    for rw in (False, True):
        res = softmax_attention(q, k, v, causal=True, return_weights=rw)
        out = res[0] if rw else res
        assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    ref = softmax_attention(q.double(), k.double(), v.double(), causal=True)
    torch.testing.assert_close(out.double(), ref, rtol=0.05, atol=0.1)


# --------------------------------------------------------------------------- masks


def test_causal_and_band_masks_vs_loops():
    n = 7
    cm, bm = causal_mask(n), band_mask(n, 2)
    for i in range(n):
        for j in range(n):
            assert cm[i, j] == (j <= i)
            assert bm[i, j] == (abs(i - j) <= 2)
    assert torch.equal(band_mask(n, 0), torch.eye(n, dtype=torch.bool))


def _cumsum(s):
    out, c = [], 0
    for x in s:
        c += x
        out.append(c)
    return out


def test_unilm_uniae_masks_vs_loops_and_hand_example():
    segs = torch.tensor([[0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 1, 1]])
    U, A, I = unilm_mask(segs), uniae_mask(segs), uniae_mask(segs, allow_cls=False)
    for b in range(2):
        s = segs[b].tolist()
        c = _cumsum(s)
        for i in range(6):
            for j in range(6):
                assert U[b, i, j] == (c[j] <= c[i])
                ind = s[i] == s[j] and c[j] <= c[i]
                assert I[b, i, j] == ind
                assert A[b, i, j] == (ind or j == 0)
    # hand-worked: target token 4 (second target) sees CLS, targets 3 and 4 only
    assert A[0, 4].tolist() == [True, False, False, True, True, False]
    assert U[0, 4].tolist() == [True, True, True, True, True, False]
    assert uniae_mask(segs, cls_index=3)[0, 0, 3]


def test_with_key_padding_vs_loop_and_no_empty_rows():
    base = causal_mask(5)
    pad = torch.tensor([[False, True, True, True, True], [True, True, True, False, False]])
    m = with_key_padding(base, pad)
    assert m.shape == (2, 5, 5)
    for b in range(2):
        for i in range(5):
            row = [bool(base[i, j] and pad[b, j]) for j in range(5)]
            if not any(row):
                row = [j == i for j in range(5)]
            assert m[b, i].tolist() == row
    assert m.any(-1).all()
    q = rand(2, 1, 5, 4, seed=17)
    assert torch.isfinite(softmax_attention(q, q, q, attn_mask=m)).all()


# --------------------------------------------------------------------------- feature maps


def test_elu_plus_one_is_exp_then_linear():
    x = torch.linspace(-5, 5, 101, dtype=torch.float64)
    y = elu_plus_one(x)
    torch.testing.assert_close(y[x < 0], torch.exp(x[x < 0]))
    torch.testing.assert_close(y[x >= 0], 1 + x[x >= 0])
    torch.testing.assert_close(relu_eps(x, 1e-3), torch.clamp(x, min=0) + 1e-3)


def test_exp_features_stabilisation_cancels_only_when_allowed():
    q, k, v = (
        rand(2, 9, 4, seed=18, scale=2),
        rand(2, 9, 4, seed=19, scale=2),
        rand(2, 9, 3, seed=20),
    )
    W = rand(6, 4, seed=21)
    raw = (partial(exp_features, W=W, stabilize=None), partial(exp_features, W=W, stabilize=None))
    good = (
        partial(exp_features, W=W, stabilize="row"),
        partial(exp_features, W=W, stabilize="global"),
    )
    bad = (partial(exp_features, W=W, stabilize="row"), partial(exp_features, W=W, stabilize="row"))
    ref = loop_linear_attention(torch.exp(q @ W.T), torch.exp(k @ W.T), v, causal=False)
    for causal in (False, True):
        a = linear_attention(q, k, v, feature_map=raw, eps=0.0, causal=causal)
        b = linear_attention(q, k, v, feature_map=good, eps=0.0, causal=causal)
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(linear_attention(q, k, v, feature_map=raw, eps=0.0), ref)
    c = linear_attention(q, k, v, feature_map=bad, eps=0.0)
    assert (c - ref).abs().max() > 1e-3  # a per-key shift changes the result (the pitfall)
    torch.testing.assert_close(exp_features(q, stabilize=None), torch.exp(q))


def test_performer_positive_features_unbiased_with_formula_variance():
    d, m = 4, 200_000
    q = torch.tensor([0.3, -0.2, 0.4, 0.1], dtype=torch.float64)
    k = torch.tensor([0.1, 0.5, -0.3, 0.2], dtype=torch.float64)
    omega = torch.randn(m, d, generator=torch.Generator().manual_seed(22), dtype=torch.float64)
    fq = performer_positive_features(q[None], omega, is_query=True, stabilize=False)[0]
    fk = performer_positive_features(k[None], omega, is_query=False, stabilize=False)[0]
    samples = m * fq * fk  # each term exp(w.q - |q|^2/2) exp(w.k - |k|^2/2)
    target = math.exp(float(q @ k))
    se = samples.std() / math.sqrt(m)
    assert abs(samples.mean() - target) < 4 * se, (samples.mean(), target, se)
    var_formula = math.exp(2 * float(q @ k)) * (math.exp(float((q + k) @ (q + k))) - 1)
    assert abs(samples.var() / var_formula - 1) < 0.05, (samples.var(), var_formula)
    assert (fq > 0).all()


def test_performer_trig_features_unbiased():
    d, m = 3, 100_000
    q = torch.tensor([0.2, -0.4, 0.1], dtype=torch.float64)
    k = torch.tensor([0.3, 0.1, -0.2], dtype=torch.float64)
    omega = torch.randn(m, d, generator=torch.Generator().manual_seed(23), dtype=torch.float64)
    fq, fk = performer_trig_features(q[None], omega)[0], performer_trig_features(k[None], omega)[0]
    samples = m * (fq[:m] * fk[:m] + fq[m:] * fk[m:])
    se = samples.std() / math.sqrt(m)
    assert abs(samples.mean() - math.exp(float(q @ k))) < 4 * se


def test_performer_attention_converges_to_softmax_and_stabilisation_is_exact():
    d, n = 8, 16
    q, k, v = (
        rand(1, n, d, seed=24, scale=0.3),
        rand(1, n, d, seed=25, scale=0.3),
        rand(1, n, 2, seed=26),
    )
    exact = softmax_attention(q, k, v, scale=1.0)
    errs = []
    for m in (16, 4096):
        omega = torch.randn(m, d, generator=torch.Generator().manual_seed(27), dtype=torch.float64)
        st_ = (
            partial(performer_positive_features, omega=omega, is_query=True),
            partial(performer_positive_features, omega=omega, is_query=False),
        )
        raw = (
            partial(performer_positive_features, omega=omega, is_query=True, stabilize=False),
            partial(performer_positive_features, omega=omega, is_query=False, stabilize=False),
        )
        a = linear_attention(q, k, v, feature_map=st_, eps=0.0)
        torch.testing.assert_close(a, linear_attention(q, k, v, feature_map=raw, eps=0.0))
        errs.append(float((a - exact).norm() / exact.norm()))
    assert errs[1] < 0.1 and errs[1] < errs[0] / 4, errs


# --------------------------------------------------------------------------- linear attention


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True])
def test_linear_attention_vs_loop_and_weights(dtype, causal):
    q, k, v = (
        rand(2, 2, 11, 4, seed=28, dtype=dtype),
        rand(2, 2, 11, 4, seed=29, dtype=dtype),
        rand(2, 2, 11, 3, seed=30, dtype=dtype),
    )
    ref = loop_linear_attention(elu_plus_one(q), elu_plus_one(k), v, causal)
    for chunk in (1, 3, 4, 64):
        out = linear_attention(
            q, k, v, feature_map=elu_plus_one, causal=causal, eps=0.0, chunk_size=chunk
        )
        torch.testing.assert_close(out.double(), ref, **TOL[dtype])
    A = linear_attention_weights(q, k, feature_map=elu_plus_one, causal=causal, eps=0.0)
    torch.testing.assert_close((A.double() @ v.double()), ref, **TOL[dtype])
    torch.testing.assert_close(
        A.sum(-1).double(), torch.ones(2, 2, 11, dtype=torch.float64), **TOL[dtype]
    )
    if causal:
        assert torch.all(A.triu(1) == 0)


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 40), chunk=st.integers(1, 17), m=st.integers(1, 6), seed=st.integers(0, 10_000)
)
def test_causal_chunked_equals_masked_quadratic(n, chunk, m, seed):
    q, k, v = rand(1, n, 3, seed=seed), rand(1, n, 3, seed=seed + 1), rand(1, n, 2, seed=seed + 2)
    W = rand(m, 3, seed=seed + 3)
    fmap = partial(exp_features, W=W, stabilize=None)
    out = linear_attention(q, k, v, feature_map=fmap, causal=True, chunk_size=chunk, eps=0.0)
    S = torch.exp(q[0] @ W.T) @ torch.exp(k[0] @ W.T).T
    S = S * torch.ones(n, n, dtype=torch.float64).tril()
    ref = ((S / S.sum(-1, keepdim=True)) @ v[0])[None]
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_normaliser_invariance_to_query_row_scaling(seed):
    q, k, v = rand(1, 8, 4, seed=seed), rand(1, 8, 4, seed=seed + 1), rand(1, 8, 3, seed=seed + 2)
    lam = torch.exp(rand(1, 8, 1, seed=seed + 3))
    scaled = (lambda x: lam * elu_plus_one(x), elu_plus_one)
    for causal in (False, True):
        a = linear_attention(q, k, v, feature_map=elu_plus_one, causal=causal, eps=0.0)
        b = linear_attention(q, k, v, feature_map=scaled, causal=causal, eps=0.0)
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("variant", ["numerator_only", "rotate_both", "cosine"])
@pytest.mark.parametrize("causal", [False, True])
def test_linear_attention_rope_variants_vs_rotation_matrix_loop(variant, causal):
    rope = pytest.importorskip("kexue_lib.rope")
    n, d = 7, 4
    q, k, v = rand(1, n, d, seed=31), rand(1, n, d, seed=32), rand(1, n, 2, seed=33)
    pos = torch.arange(n)
    out = linear_attention(
        q,
        k,
        v,
        feature_map=elu_plus_one,
        causal=causal,
        eps=0.0,
        chunk_size=3,
        rope_positions=pos,
        rope_variant=variant,
    )
    A = linear_attention_weights(
        q,
        k,
        feature_map=elu_plus_one,
        causal=causal,
        eps=0.0,
        rope_positions=pos,
        rope_variant=variant,
    )
    torch.testing.assert_close(out, A @ v)
    fq, fk = elu_plus_one(q[0]), elu_plus_one(k[0])
    if variant == "cosine":
        fq, fk = fq / fq.norm(dim=-1, keepdim=True), fk / fk.norm(dim=-1, keepdim=True)
    R = [rope.rope_matrix(i, d).double() for i in range(n)]
    ref = torch.zeros(n, 2, dtype=torch.float64)
    for i in range(n):
        num, den = torch.zeros(2, dtype=torch.float64), 0.0
        for j in range(n):
            if causal and j > i:
                continue
            rot = float((R[i] @ fq[i]) @ (R[j] @ fk[j]))
            s_num = {"numerator_only": rot, "rotate_both": rot, "cosine": 1 + rot}[variant]
            s_den = {"numerator_only": float(fq[i] @ fk[j]), "rotate_both": rot, "cosine": 1 + rot}[
                variant
            ]
            if variant == "cosine":
                assert -1e-12 <= s_num <= 2 + 1e-12
            num += s_num * v[0, j]
            den += s_den
        if variant == "numerator_only":
            assert den > 0
        ref[i] = num / den
    torch.testing.assert_close(out[0], ref)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), shift=st.integers(-500, 500))
def test_cosine_rope_variant_is_a_shift_invariant_distribution(seed, shift):
    n, d = 9, 6
    q, k = rand(2, n, d, seed=seed), rand(2, n, d, seed=seed + 1)
    pos = torch.arange(n)
    A = linear_attention_weights(q, k, rope_positions=pos, rope_variant="cosine", eps=0.0)
    assert (A >= 0).all()
    torch.testing.assert_close(A.sum(-1), torch.ones(2, n, dtype=torch.float64))
    B = linear_attention_weights(q, k, rope_positions=pos + shift, rope_variant="cosine", eps=0.0)
    torch.testing.assert_close(A, B, rtol=1e-9, atol=1e-12)  # relative positions only


def test_linear_attention_half_precision_no_nan():
    q, k, v = (rand(1, 2, 300, 16, seed=s, scale=8.0) for s in (34, 35, 36))
    for dt in (torch.bfloat16, torch.float16):
        out = linear_attention(
            q.to(dt),
            k.to(dt),
            v.to(dt),
            feature_map=(
                partial(exp_features, stabilize="row"),
                partial(exp_features, stabilize="global"),
            ),
            causal=True,
        )
        assert out.dtype == dt and torch.isfinite(out).all()
        ref = linear_attention(
            q.float(), k.float(), v.float(), feature_map=elu_plus_one, causal=True
        )
        out2 = linear_attention(q.to(dt), k.to(dt), v.to(dt), feature_map=elu_plus_one, causal=True)
        torch.testing.assert_close(out2.float(), ref, rtol=0.05, atol=0.05)


# --------------------------------------------------------------------------- rank collapse


def test_rank_collapse_residual_closed_forms():
    x = rand(5, seed=37)
    X = x.expand(6, 5)
    assert float(rank_collapse_residual(X)) < 1e-15
    Y = rand(3, 6, 5, seed=38)
    r = rank_collapse_residual(Y)
    for b in range(3):
        M = Y[b]
        ref = math.sqrt(sum(float(((M[i] - M.mean(0)) ** 2).sum()) for i in range(6))) / float(
            M.norm()
        )
        assert abs(float(r[b]) - ref) < 1e-12
    assert float(rank_collapse_residual(torch.zeros(4, 3))) == 0.0
    # the mean row is the optimal x: any other shift gives a larger residual
    other = (Y[0] - (Y[0].mean(0) + 0.1)).norm() / Y[0].norm()
    assert float(r[0]) < float(other)


# --------------------------------------------------------------------------- bad inputs


def test_bad_inputs():
    q = rand(1, 1, 4, 8, seed=39)
    with pytest.raises(ValueError, match=r"^k\b"):
        softmax_attention(q, rand(1, 1, 4, 6), q)
    with pytest.raises(ValueError, match=r"^v\b"):
        softmax_attention(q, q, rand(1, 1, 5, 8))
    with pytest.raises(ValueError, match=r"^attn_mask\b"):
        softmax_attention(q, q, q, attn_mask=torch.ones(3, 3, dtype=torch.bool))
    with pytest.raises(TypeError, match=r"^attn_mask\b"):
        softmax_attention(q, q, q, attn_mask=torch.ones(4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"^scale\b"):
        softmax_attention(q, q, q, scale=-1.0)
    with pytest.raises(TypeError, match=r"^q\b"):
        softmax_attention(q.long(), q, q)
    with pytest.raises(ValueError, match=r"^width\b"):
        band_mask(4, -1)
    with pytest.raises(TypeError, match=r"^n\b"):
        causal_mask(2.5)
    with pytest.raises(ValueError, match=r"^segment_ids\b"):
        unilm_mask(torch.tensor([[0, 2, 1]]))
    with pytest.raises(ValueError, match=r"^cls_index\b"):
        uniae_mask(torch.tensor([[0, 1]]), cls_index=5)
    with pytest.raises(ValueError, match=r"^key_padding\b"):
        with_key_padding(causal_mask(4), torch.ones(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"^omega\b"):
        performer_positive_features(q, rand(5, 3, seed=40), is_query=True)
    with pytest.raises(ValueError, match=r"^stabilize\b"):
        exp_features(q, stabilize="col")
    with pytest.raises(TypeError, match=r"^feature_map\b"):
        linear_attention(q, q, q)
    with pytest.raises(ValueError, match=r"^rope_variant\b"):
        linear_attention(q, q, q, feature_map=elu_plus_one, rope_variant="both")
    with pytest.raises(ValueError, match=r"^k\b"):
        linear_attention(
            q, rand(1, 1, 5, 8), rand(1, 1, 5, 8), feature_map=elu_plus_one, causal=True
        )
    with pytest.raises(ValueError, match=r"^chunk_size\b"):
        linear_attention(q, q, q, feature_map=elu_plus_one, chunk_size=0)
    with pytest.raises(ValueError, match=r"^rope_positions\b"):
        linear_attention(q, q, q, feature_map=elu_plus_one, rope_positions=torch.arange(3))
    with pytest.raises(ValueError, match=r"^X\b"):
        rank_collapse_residual(torch.ones(3))


def test_mismatched_batch_or_head_dims_name_the_tensors():
    """k, v without the head dim (or another batch size) used to fail deep inside torch with
    'The size of tensor a (3) must match ...'; now a ValueError names them and the shapes."""
    q = rand(2, 3, 5, 4, seed=41)
    kv = rand(2, 5, 4, seed=42)  # forgot to split heads
    msg = r"^k, v: expected leading \(batch, head\) dims broadcastable with q's \(2, 3\)"
    with pytest.raises(ValueError, match=msg):
        softmax_attention(q, kv, kv)
    with pytest.raises(ValueError, match=msg):
        linear_attention(q, kv, kv, feature_map=elu_plus_one)
    with pytest.raises(ValueError, match=r"^k: expected leading"):
        linear_attention_weights(q, kv, feature_map=elu_plus_one)
    with pytest.raises(ValueError, match=r"^v: expected leading .* logits's \(2, 3\)"):
        attend(rand(2, 3, 5, 6, seed=43), rand(3, 3, 6, 2, seed=44))
    # broadcastable leading dims stay legal and equal the explicitly expanded computation
    k1, v1 = rand(1, 3, 5, 4, seed=45), rand(1, 3, 5, 2, seed=46)
    for fn in (
        softmax_attention,
        lambda a, b, c: linear_attention(a, b, c, feature_map=elu_plus_one),
    ):
        torch.testing.assert_close(
            fn(q, k1, v1), fn(q, k1.expand(2, -1, -1, -1), v1.expand(2, -1, -1, -1))
        )


# --------------------------------------------------------------------------- CUDA


@requires_cuda
def test_cuda_paths_match_cpu():
    q, k, v = (
        rand(1, 2, 33, 8, seed=40, dtype=torch.float32),
        rand(1, 2, 33, 8, seed=41, dtype=torch.float32),
        rand(1, 2, 33, 4, seed=42, dtype=torch.float32),
    )
    cu = [t.cuda() for t in (q, k, v)]
    torch.testing.assert_close(
        softmax_attention(*cu, causal=True).cpu(),
        softmax_attention(q, k, v, causal=True),
        rtol=1e-4,
        atol=1e-4,
    )
    out = linear_attention(*cu, feature_map=elu_plus_one, causal=True, chunk_size=8)
    assert out.device.type == "cuda"
    torch.testing.assert_close(
        out.cpu(),
        linear_attention(q, k, v, feature_map=elu_plus_one, causal=True),
        rtol=1e-4,
        atol=1e-4,
    )
    bf = linear_attention(*(t.bfloat16() for t in cu), feature_map=elu_plus_one, causal=True)
    assert torch.isfinite(bf).all()


def test_performer_features_half_precision_large_inputs_stay_finite():
    x = rand(2, 50, 8, seed=43, scale=20.0)
    omega = rand(32, 8, seed=44)
    for dt in (torch.bfloat16, torch.float16):
        fq = performer_positive_features(x.to(dt), omega.to(dt), is_query=True)
        fk = performer_positive_features(x.to(dt), omega.to(dt), is_query=False)
        tq = performer_trig_features(x[..., :1, :].to(dt) * 0.05, omega.to(dt))
        assert fq.dtype == dt and torch.isfinite(fq).all() and (fq >= 0).all()
        assert torch.isfinite(fk).all() and torch.isfinite(tq).all()
        assert (fq.float().amax(-1) > 0).all()  # each query keeps its largest feature (= 1/sqrt(m))
        out = linear_attention(
            x.to(dt),
            x.to(dt),
            x.to(dt),
            feature_map=(
                partial(performer_positive_features, omega=omega.to(dt), is_query=True),
                partial(performer_positive_features, omega=omega.to(dt), is_query=False),
            ),
            causal=True,
        )
        assert torch.isfinite(out).all()
