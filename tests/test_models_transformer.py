"""Tests of kexue_lib.models.transformer against torch.nn references and brute-force loops."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from kexue_lib._core import make_generator
from kexue_lib.models.transformer import (
    FeedForward,
    MultiHeadAttention,
    TinyTransformer,
    TransformerBlock,
    causal_bool_mask,
    elu_plus_one,
    sinusoidal_table,
)
from tests.conftest import requires_cuda

DTYPES = [torch.float64, torch.float32]
TOL = {torch.float64: dict(rtol=1e-10, atol=1e-10), torch.float32: dict(rtol=1e-4, atol=1e-5)}


def _randn(*shape, seed=0, dtype=torch.float64, device="cpu"):
    return torch.randn(*shape, generator=make_generator(seed), dtype=torch.float64).to(
        device, dtype
    )


def _init(module: nn.Module, seed: int = 0) -> nn.Module:
    """Deterministic non-trivial weights (biases included) from a generator."""
    g = make_generator(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.3)
    return module


def _mha_pair(d, heads, dtype, seed=0):
    ours = _init(MultiHeadAttention(d, heads), seed).to(dtype)
    ref = nn.MultiheadAttention(d, heads, batch_first=True).to(dtype)
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([ours.q.weight, ours.k.weight, ours.v.weight]))
        ref.in_proj_bias.copy_(torch.cat([ours.q.bias, ours.k.bias, ours.v.bias]))
        ref.out_proj.weight.copy_(ours.o.weight)
        ref.out_proj.bias.copy_(ours.o.bias)
    return ours, ref


# ----------------------------------------------------------------------------- attention


@pytest.mark.parametrize("dtype", DTYPES)
def test_mha_matches_torch_multihead_attention(dtype):
    ours, ref = _mha_pair(16, 4, dtype)
    x = _randn(3, 7, 16, dtype=dtype)
    want, _ = ref(x, x, x, need_weights=False)
    torch.testing.assert_close(ours(x), want, **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("impl", ["sdpa", "explicit"])
def test_mha_mask_matches_torch_with_inverted_mask(dtype, impl):
    ours, ref = _mha_pair(12, 3, dtype, seed=1)
    ours.impl = impl
    g = make_generator(5)
    allowed = torch.rand(2, 6, 6, generator=g) < 0.6
    allowed |= torch.eye(6, dtype=torch.bool)  # every row keeps one key
    x = _randn(2, 6, 12, seed=2, dtype=dtype)
    # nn.MultiheadAttention: bool True = NOT allowed, 3-D masks are (B * heads, n, n)
    ref_mask = (~allowed).repeat_interleave(3, dim=0)
    want, w_ref = ref(x, x, x, attn_mask=ref_mask, need_weights=True, average_attn_weights=False)
    got = ours(x, attn_mask=allowed)
    torch.testing.assert_close(got, want, **TOL[dtype])
    _, w = ours(x, attn_mask=allowed, return_weights=True)
    torch.testing.assert_close(w, w_ref, **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("key_mult", [1, 2])
def test_explicit_equals_sdpa(dtype, key_mult):
    m = _init(MultiHeadAttention(16, 2, key_mult=key_mult), 3).to(dtype)
    x = _randn(2, 9, 16, seed=4, dtype=dtype)
    a = m(x, causal=True)
    m.impl = "explicit"
    torch.testing.assert_close(m(x, causal=True), a, **TOL[dtype])


def test_attention_brute_force_loop():
    """Per-head, per-query loop of softmax(q.k / sqrt(d_qk)) v, with key_mult=2."""
    m = _init(MultiHeadAttention(8, 2, key_mult=2), 6).double()
    x = _randn(1, 5, 8, seed=7)[0]
    with torch.no_grad():
        q, k, v = m.q(x), m.k(x), m.v(x)
    d_qk, d_v = 8, 4
    heads_out = []
    for h in range(2):
        qh, kh, vh = (
            q[:, h * d_qk : (h + 1) * d_qk],
            k[:, h * d_qk : (h + 1) * d_qk],
            v[:, h * d_v : (h + 1) * d_v],
        )
        rows = []
        for i in range(5):
            s = torch.tensor(
                [float(qh[i] @ kh[j]) / math.sqrt(d_qk) for j in range(i + 1)], dtype=torch.float64
            )
            p = torch.exp(s - s.max())
            p = p / p.sum()
            rows.append(sum(p[j] * vh[j] for j in range(i + 1)))
        heads_out.append(torch.stack(rows))
    want = m.o(torch.cat(heads_out, dim=-1))
    torch.testing.assert_close(m(x[None], causal=True)[0], want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("attention", ["softmax", "linear"])
@pytest.mark.parametrize("impl", ["sdpa", "explicit"])
def test_causal_perturbation(attention, impl):
    """Changing a future token leaves every earlier output unchanged; later ones change."""
    m = _init(MultiHeadAttention(8, 2, attention=attention, impl=impl), 8).double()
    x = _randn(1, 10, 8, seed=9)
    t = 6
    y = x.clone()
    y[:, t] += 1.0
    a, b = m(x, causal=True), m(y, causal=True)
    torch.testing.assert_close(a[:, :t], b[:, :t], rtol=0, atol=1e-12)
    assert (a[:, t:] - b[:, t:]).abs().amax(-1).min() > 1e-6
    # without the mask, earlier outputs do change
    assert (m(x)[:, :t] - m(y)[:, :t]).abs().max() > 1e-6


def test_fully_masked_row_outputs_bias_only():
    m = _init(MultiHeadAttention(8, 2), 10).double()
    x = _randn(1, 4, 8, seed=11)
    mask = torch.ones(4, 4, dtype=torch.bool)
    mask[2] = False
    for impl in ("sdpa", "explicit"):
        m.impl = impl
        out = m(x, attn_mask=mask)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out[0, 2], m.o.bias)  # zero attention output, then W_o, b_o


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_attention_matches_loop(dtype):
    m = _init(MultiHeadAttention(8, 2, attention="linear"), 12).to(dtype)
    x = _randn(2, 6, 8, seed=13, dtype=dtype)
    q = elu_plus_one(m.q(x)).view(2, 6, 2, 4).transpose(1, 2)
    k = elu_plus_one(m.k(x)).view(2, 6, 2, 4).transpose(1, 2)
    v = m.v(x).view(2, 6, 2, 4).transpose(1, 2)
    for causal in (False, True):
        out = torch.zeros_like(v)
        for i in range(6):
            js = range(i + 1) if causal else range(6)
            w = torch.stack([(q[:, :, i] * k[:, :, j]).sum(-1) for j in js], -1)
            w = w / w.sum(-1, keepdim=True)
            out[:, :, i] = sum(w[..., jj, None] * v[:, :, j] for jj, j in enumerate(js))
        want = m.o(out.transpose(1, 2).reshape(2, 6, 8))
        tol = dict(rtol=1e-6, atol=1e-6) if dtype == torch.float64 else TOL[dtype]
        torch.testing.assert_close(m(x, causal=causal), want, **tol)
        m.impl = "explicit"
        torch.testing.assert_close(m(x, causal=causal), want, **tol)
        m.impl = "sdpa"


def test_linear_attention_custom_feature_map_and_mask():
    m = _init(
        MultiHeadAttention(8, 2, attention="linear", feature_map=torch.exp, impl="explicit"), 14
    ).double()
    x = _randn(1, 5, 8, seed=15)
    mask = causal_bool_mask(5)
    _, w = m(x, attn_mask=mask, return_weights=True)
    # rows sum to 1 up to the eps=1e-6 in the denominator
    torch.testing.assert_close(
        w.sum(-1), torch.ones(1, 2, 5, dtype=torch.float64), atol=1e-5, rtol=0
    )
    assert (w[..., ~mask] == 0).all()
    m.impl = "sdpa"
    with pytest.raises(ValueError, match=r"^attn_mask\b"):
        m(x, attn_mask=mask)


def _rope_reference(x: torch.Tensor, base=1e4) -> torch.Tensor:
    """Interleaved RoPE through complex multiplication: (..., n, d)."""
    n, d = x.shape[-2:]
    theta = base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    ang = torch.arange(n, dtype=torch.float64)[:, None] * theta
    z = torch.view_as_complex(x.double().reshape(*x.shape[:-1], d // 2, 2).contiguous())
    return torch.view_as_real(z * torch.polar(torch.ones_like(ang), ang)).reshape(x.shape)


def test_rotary_callable_and_relative_property():
    calls = []

    def rot(t, positions):
        calls.append(positions)
        return _rope_reference(t).to(t.dtype)

    m = _init(MultiHeadAttention(8, 2, rotary=rot, impl="explicit"), 16).double()
    x = _randn(1, 6, 8, seed=17)
    _, w = m(x, return_weights=True)
    assert len(calls) == 2
    # weights from rotated q, k computed by hand
    q = _rope_reference(m.q(x).view(1, 6, 2, 4).transpose(1, 2))
    k = _rope_reference(m.k(x).view(1, 6, 2, 4).transpose(1, 2))
    torch.testing.assert_close(w, torch.softmax(q @ k.transpose(-1, -2) / 2.0, -1))


def test_rotary_true_uses_kexue_rope():
    pytest.importorskip("kexue_lib.rope")
    m = _init(MultiHeadAttention(8, 2, rotary=True, impl="explicit"), 18).double()
    x = _randn(1, 6, 8, seed=19)
    _, w = m(x, return_weights=True)
    q = _rope_reference(m.q(x).view(1, 6, 2, 4).transpose(1, 2))
    k = _rope_reference(m.k(x).view(1, 6, 2, 4).transpose(1, 2))
    torch.testing.assert_close(w, torch.softmax(q @ k.transpose(-1, -2) / 2.0, -1))


def test_mha_bad_inputs():
    with pytest.raises(ValueError, match=r"^heads\b"):
        MultiHeadAttention(10, 3)
    with pytest.raises(ValueError, match=r"^attention\b"):
        MultiHeadAttention(8, 2, attention="cosine")
    with pytest.raises(ValueError, match=r"^impl\b"):
        MultiHeadAttention(8, 2, impl="flash")
    with pytest.raises(ValueError, match=r"^feature_map\b"):
        MultiHeadAttention(8, 2, feature_map=torch.exp)
    with pytest.raises(TypeError, match=r"^key_mult\b"):
        MultiHeadAttention(8, 2, key_mult=1.5)
    with pytest.raises(TypeError, match=r"^rotary\b"):
        MultiHeadAttention(8, 2, rotary="yes")
    m = MultiHeadAttention(8, 2)
    with pytest.raises(ValueError, match=r"^x\b"):
        m(torch.zeros(2, 5, 6))
    with pytest.raises(TypeError, match=r"^x\b"):
        m(torch.zeros(2, 5, 8, dtype=torch.long))
    with pytest.raises(TypeError, match=r"^attn_mask\b"):
        m(torch.zeros(1, 5, 8), attn_mask=torch.zeros(5, 5))
    with pytest.raises(ValueError, match=r"^attn_mask\b"):
        m(torch.zeros(1, 5, 8), attn_mask=torch.ones(4, 4, dtype=torch.bool))


def test_half_precision_no_nan():
    m = _init(MultiHeadAttention(8, 2, impl="explicit"), 20).to(torch.bfloat16)
    x = _randn(1, 6, 8, seed=21, dtype=torch.bfloat16) * 50
    assert torch.isfinite(m(x, causal=True)).all()
    m32 = _init(MultiHeadAttention(8, 2, attention="linear"), 20).to(torch.bfloat16)
    assert torch.isfinite(m32(x, causal=True)).all()


# ----------------------------------------------------------------------------- blocks


@pytest.mark.parametrize("dtype", DTYPES)
def test_feedforward_formula(dtype):
    f = _init(FeedForward(6, mult=2, act="relu"), 22).to(dtype)
    x = _randn(4, 6, seed=23, dtype=dtype)
    want = torch.relu(x @ f.fc1.weight.T + f.fc1.bias) @ f.fc2.weight.T + f.fc2.bias
    torch.testing.assert_close(f(x), want, **TOL[dtype])
    assert f.fc1.weight.shape == (12, 6)
    with pytest.raises(ValueError, match=r"^act\b"):
        FeedForward(6, act="swish")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("norm_first", [True, False])
def test_block_matches_torch_encoder_layer(dtype, norm_first):
    d, h = 16, 4
    ours = _init(TransformerBlock(d, h, norm_first=norm_first, ln_eps=1e-6), 24).to(dtype)
    ref = nn.TransformerEncoderLayer(
        d,
        h,
        dim_feedforward=4 * d,
        dropout=0.0,
        activation="gelu",
        batch_first=True,
        norm_first=norm_first,
        layer_norm_eps=1e-6,
    ).to(dtype)
    a = ours.mixer
    with torch.no_grad():
        ref.self_attn.in_proj_weight.copy_(torch.cat([a.q.weight, a.k.weight, a.v.weight]))
        ref.self_attn.in_proj_bias.copy_(torch.cat([a.q.bias, a.k.bias, a.v.bias]))
        ref.self_attn.out_proj.weight.copy_(a.o.weight)
        ref.self_attn.out_proj.bias.copy_(a.o.bias)
        ref.linear1.load_state_dict(ours.ffn.fc1.state_dict())
        ref.linear2.load_state_dict(ours.ffn.fc2.state_dict())
        ref.norm1.load_state_dict(ours.ln1.state_dict())
        ref.norm2.load_state_dict(ours.ln2.state_dict())
    ref.eval()
    x = _randn(2, 7, d, seed=25, dtype=dtype)
    allowed = causal_bool_mask(7)
    want = ref(x, src_mask=~allowed)
    torch.testing.assert_close(ours(x, causal=True), want, **TOL[dtype])


class _Reverse(nn.Module):
    """A toy token mixer: reverse the sequence."""

    def forward(self, x):
        return x.flip(-2)


def test_block_with_custom_mixer():
    blk = _init(TransformerBlock(8, 2, token_mixer=_Reverse()), 26).double()
    x = _randn(1, 5, 8, seed=27)
    h = x + blk.ln1(x).flip(-2)
    want = h + blk.ffn(blk.ln2(h))
    torch.testing.assert_close(blk(x), want)
    with pytest.raises(ValueError, match=r"^causal\b"):
        blk(x, causal=True)
    with pytest.raises(TypeError, match=r"^token_mixer\b"):
        TransformerBlock(8, 2, token_mixer=lambda x: x)


# ----------------------------------------------------------------------------- model


def test_sinusoidal_table_formula():
    t = sinusoidal_table(5, 6, dtype=torch.float64)
    for p in range(5):
        for i in range(3):
            w = 1e4 ** (-2 * i / 6)
            assert abs(t[p, 2 * i] - math.sin(p * w)) < 1e-12
            assert abs(t[p, 2 * i + 1] - math.cos(p * w)) < 1e-12


@pytest.mark.parametrize("pos", ["learned", "sinusoidal", "rope", "none"])
def test_tiny_transformer_shapes_and_causality(pos):
    if pos == "rope":
        pytest.importorskip("kexue_lib.rope")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = TinyTransformer(11, 16, 2, 2, max_len=12, pos=pos).double()
    g = make_generator(28)
    tok = torch.randint(0, 11, (3, 10), generator=g)
    logits, hidden = model(tok, causal=True, return_hidden=True)
    assert logits.shape == (3, 10, 11) and len(hidden) == 3 and hidden[0].shape == (3, 10, 16)
    tok2 = tok.clone()
    tok2[:, 7] = (tok2[:, 7] + 1) % 11
    torch.testing.assert_close(model(tok2, causal=True)[:, :7], logits[:, :7], rtol=0, atol=1e-12)
    assert (model(tok2, causal=True)[:, 7:] - logits[:, 7:]).abs().max() > 1e-6


def test_tiny_transformer_embeddings_and_heads():
    with torch.random.fork_rng():
        torch.manual_seed(1)
        m = TinyTransformer(9, 8, 2, 1, max_len=6, pos="learned", segments=2, head="mlm").double()
    tok = torch.tensor([[1, 2, 3, 4]])
    seg = torch.tensor([[0, 0, 1, 1]])
    h0 = m.embed(tok, segment_ids=seg)
    want = m.tok_emb.weight[tok] + m.pos_emb.weight[:4] + m.seg_emb.weight[seg]
    torch.testing.assert_close(h0, want)
    assert m.lm_head.weight is m.tok_emb.weight and m.lm_head.bias is not None
    # per-layer mask list equals the same single mask
    mask = causal_bool_mask(4)
    torch.testing.assert_close(
        m(tok, segment_ids=seg, attn_mask=[mask]), m(tok, segment_ids=seg, attn_mask=mask)
    )
    # explicit positions shift the learned table
    torch.testing.assert_close(
        m.embed(tok, segment_ids=seg, positions=torch.arange(1, 5)),
        want - m.pos_emb.weight[:4] + m.pos_emb.weight[1:5],
    )
    untied = TinyTransformer(9, 8, 2, 1, max_len=6, tie_embeddings=False)
    assert untied.lm_head.weight is not untied.tok_emb.weight
    bare = TinyTransformer(9, 8, 2, 1, max_len=6, head="none")
    assert bare(tok).shape == (1, 4, 8)


def test_tiny_transformer_token_mixer_factory_and_blocks_hooks():
    m = TinyTransformer(7, 8, 2, 3, max_len=5, pos="none", token_mixer=lambda i: _Reverse())
    assert all(isinstance(b.mixer, _Reverse) for b in m.blocks)
    seen = []
    handles = [
        b.register_forward_hook(lambda mod, inp, out: seen.append(out.shape)) for b in m.blocks
    ]
    m(torch.tensor([[1, 2, 3]]))
    assert seen == [(1, 3, 8)] * 3
    for hd in handles:
        hd.remove()


def test_tiny_transformer_pos_none_is_permutation_equivariant():
    with torch.random.fork_rng():
        torch.manual_seed(2)
        m = TinyTransformer(7, 8, 2, 2, max_len=6, pos="none", head="none").double()
    tok = torch.tensor([[1, 2, 3, 4, 5]])
    perm = torch.tensor([3, 0, 4, 1, 2])
    torch.testing.assert_close(m(tok[:, perm]), m(tok)[:, perm])


def test_tiny_transformer_bad_inputs():
    m = TinyTransformer(7, 8, 2, 1, max_len=4)
    with pytest.raises(ValueError, match=r"^tokens\b"):
        m(torch.tensor([[1, 2, 3, 4, 5]]))
    with pytest.raises(ValueError, match=r"^tokens\b"):
        m(torch.tensor([[1, 7]]))
    with pytest.raises(ValueError, match=r"^tokens\b"):
        m(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"^segment_ids\b"):
        m(torch.tensor([[1, 2]]), segment_ids=torch.tensor([[0, 0]]))
    with pytest.raises(ValueError, match=r"^attn_mask\b"):
        m(torch.tensor([[1, 2]]), attn_mask=[None, None])
    with pytest.raises(ValueError, match=r"^pos\b"):
        TinyTransformer(7, 8, 2, 1, max_len=4, pos="alibi")
    with pytest.raises(ValueError, match=r"^head\b"):
        TinyTransformer(7, 8, 2, 1, max_len=4, head="cls")
    with pytest.raises(ValueError, match=r"^max_len\b"):
        TinyTransformer(7, 8, 2, 1, max_len=0)


@pytest.mark.parametrize(
    "vocab,d,kw",
    [
        (8, 32, {}),
        (8, 16, {"head": "mlm"}),
        (8, 32, {"tie_embeddings": False}),
        (16, 32, {"norm_first": False, "segments": 2}),
        (32, 8, {"pos": "sinusoidal"}),
    ],
)
def test_tiny_transformer_step0_loss_is_near_chance(vocab, d, kw):
    """A fresh model on random tokens and random targets scores about ln V, the loss of a
    uniform guess; PyTorch's N(0, 1) embedding tables (the rejected default) score far
    above it with the tied head."""
    g = make_generator(7)
    tok = torch.randint(0, vocab, (64, 12), generator=g)
    target = torch.randint(0, vocab, (64, 12), generator=g)
    losses, default_init = [], []
    for seed in range(8):
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            m = TinyTransformer(vocab, d, 2, 2, max_len=12, **kw)
        with torch.no_grad():
            ce = nn.functional.cross_entropy(m(tok).flatten(0, 1), target.flatten())
            losses.append(ce.item())
            for table in (m.tok_emb, m.pos_emb, m.seg_emb):
                if table is not None:
                    table.weight.normal_(0.0, 1.0, generator=g)
            ce = nn.functional.cross_entropy(m(tok).flatten(0, 1), target.flatten())
            default_init.append(ce.item())
    excess = torch.tensor(losses) - math.log(vocab)
    assert excess.min() > 0.0 and excess.max() < 0.4, excess
    if kw.get("tie_embeddings", True) and kw.get("head", "lm") == "lm":
        assert min(default_init) > math.log(vocab) + 3.0, default_init


def test_tiny_transformer_embedding_std():
    """Embedding tables are N(0, (0.5 / sqrt(d))^2): sample moments of 32 x 64 entries."""
    with torch.random.fork_rng():
        torch.manual_seed(3)
        m = TinyTransformer(64, 32, 2, 1, max_len=64, segments=64)
    want = 0.5 / math.sqrt(32)
    for table in (m.tok_emb, m.pos_emb, m.seg_emb):
        w = table.weight.detach().double()
        # 2048 entries: the sample std is within 4 standard errors (about 6%) of the target
        assert abs(w.std().item() / want - 1) < 4 / math.sqrt(2 * w.numel())
        assert abs(w.mean().item()) < 4 * want / math.sqrt(w.numel())


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 9), heads=st.sampled_from([1, 2, 4]), seed=st.integers(0, 10_000))
def test_property_attention_rows_are_convex_combinations(n, heads, seed):
    """Softmax weights are a probability vector per row and vanish above the diagonal."""
    m = _init(MultiHeadAttention(8, heads, impl="explicit"), seed).double()
    x = _randn(1, n, 8, seed=seed)
    _, w = m(x, causal=True, return_weights=True)
    torch.testing.assert_close(w.sum(-1), torch.ones(1, heads, n, dtype=torch.float64))
    assert (w.triu(1) == 0).all() and (w >= 0).all()


@requires_cuda
def test_cuda_mha_and_model():
    dev = torch.device("cuda")
    ours, ref = _mha_pair(16, 4, torch.float32)
    ours, ref = ours.to(dev), ref.to(dev)
    x = _randn(2, 7, 16, dtype=torch.float32, device=dev)
    torch.testing.assert_close(ours(x), ref(x, x, x, need_weights=False)[0], rtol=1e-3, atol=1e-4)
    m = TinyTransformer(11, 16, 2, 2, max_len=12, pos="sinusoidal").to(dev)
    out = m(torch.randint(0, 11, (2, 9), device=dev), causal=True)
    assert out.device.type == "cuda" and torch.isfinite(out).all()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        assert torch.isfinite(ours(x.half().float(), causal=True)).all()
