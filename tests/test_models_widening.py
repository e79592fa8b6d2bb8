"""Width expansion (kexue.fm 8444): exact function preservation, and each mistake breaking it
by exactly the amount the algebra predicts (checked against a modified *small* model)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from kexue_lib.models.transformer import TinyTransformer
from kexue_lib.models.widening import (
    WIDENING_RULES,
    RepeatedLadderRotary,
    duplicate_heads,
    repeat_features,
    unrepeat_features,
    widen_embedding,
    widen_layernorm,
    widen_linear,
    widen_model,
    widen_torch_encoder_layer,
    widening_factors,
    widening_scales,
)
from tests.conftest import requires_cuda

V, D, H, L, N = 19, 8, 2, 2, 7


def _gen(seed):
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def _model(pos="learned", head="lm", norm_first=True, act="gelu", heads=H, seed=0, **kw):
    """A float64 TinyTransformer with O(1) random weights (so every term matters)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        m = TinyTransformer(
            V, D, heads, L, max_len=12, pos=pos, head=head, norm_first=norm_first, act=act, **kw
        )
    m = m.double().eval()
    g = _gen(seed + 100)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return m


def _tokens(seed=1, B=3, n=N):
    return torch.randint(0, V, (B, n), generator=_gen(seed))


def _readout(y, k, head):
    return math.sqrt(k) * unrepeat_features(y, k) if head == "none" else y


def _brute_repeat(x, k, group):
    d = x.shape[-1]
    cols = []
    for blk in range(d // group):
        for _ in range(k):
            for w in range(group):
                cols.append(x[..., blk * group + w])
    return torch.stack(cols, dim=-1)


# ------------------------------------------------------------------ repeat / unrepeat


@pytest.mark.parametrize("k,group", [(1, 1), (2, 1), (3, 1), (2, 2), (3, 2), (2, 6)])
def test_repeat_features_matches_loop(k, group):
    x = torch.randn(4, 6, dtype=torch.float64, generator=_gen(0))
    torch.testing.assert_close(repeat_features(x, k, group=group), _brute_repeat(x, k, group))


def test_repeat_features_layouts_spelled_out():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert repeat_features(x, 2).tolist() == [1, 1, 2, 2, 3, 3, 4, 4]
    assert repeat_features(x, 2, group=2).tolist() == [1, 2, 1, 2, 3, 4, 3, 4]
    assert repeat_features(x, 2, group=4).tolist() == [1, 2, 3, 4, 1, 2, 3, 4]


@settings(max_examples=30, deadline=None)
@given(
    k=st.integers(1, 4),
    d2=st.integers(1, 5),
    group=st.sampled_from([1, 2]),
    seed=st.integers(0, 99),
)
def test_isometry_and_left_inverse(k, d2, group, seed):
    x = torch.randn(3, 2 * d2, dtype=torch.float64, generator=_gen(seed))
    y = repeat_features(x, k, group=group) / math.sqrt(k)
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))  # C1: norm preserving
    torch.testing.assert_close(math.sqrt(k) * unrepeat_features(y, k, group=group), x)


# ------------------------------------------------------------------ rules


def test_rule_table_matches_sheet_for_k2():
    r2 = math.sqrt(2)
    q = 2**0.25
    expected = {
        "dense": (0.5, 1 / r2),
        "qk": (q / 2, q / r2),
        "ffn_in": (1 / r2, 1.0),
        "ffn_out": (1 / (2 * r2), 1 / r2),
        "mlm_dense": (1 / r2, 1.0),
        "head_copy_in": (1 / r2, 1.0),
        "head_copy_out": (1 / (2 * r2), 1 / r2),
        "logits": (1 / r2, 1.0),
    }
    assert set(expected) == set(WIDENING_RULES)
    for role, (wf, bf) in expected.items():
        got = widening_factors(role, 2)
        assert got == pytest.approx((wf, bf), rel=1e-15), role


@settings(max_examples=40, deadline=None)
@given(
    k=st.integers(1, 4),
    a=st.floats(0.1, 3.0),
    c=st.floats(0.1, 3.0),
    gi=st.sampled_from([1, 2, 6]),
    go=st.sampled_from([1, 2, 4]),
    seed=st.integers(0, 99),
)
def test_widen_linear_maps_scaled_repetition(k, a, c, gi, go, seed):
    """C3: input a R x  ->  output c R (x W^T + b), for any scales and block sizes."""
    g = _gen(seed)
    W = torch.randn(4, 6, dtype=torch.float64, generator=g)
    b = torch.randn(4, dtype=torch.float64, generator=g)
    x = torch.randn(5, 6, dtype=torch.float64, generator=g)
    Wt, bt = widen_linear(W, b, k, in_scale=a, out_scale=c, group_in=gi, group_out=go)
    y = (a * repeat_features(x, k, group=gi)) @ Wt.T + bt
    torch.testing.assert_close(y, c * repeat_features(x @ W.T + b, k, group=go))


def test_widen_linear_entries_brute_force_and_sides():
    g = _gen(3)
    W = torch.randn(3, 4, dtype=torch.float64, generator=g)
    k = 2
    Wt, bt = widen_linear(W, None, k, in_scale=0.5, out_scale=2.0)
    assert bt is None
    for i in range(6):
        for j in range(8):
            assert Wt[i, j].item() == pytest.approx(W[i // k, j // k].item() * 2.0 / (k * 0.5))
    Wi, _ = widen_linear(W, None, 3, in_scale=1 / math.sqrt(3), out_scale=1.0, sides="in")
    x = torch.randn(2, 4, dtype=torch.float64, generator=g)
    assert Wi.shape == (3, 12)
    torch.testing.assert_close(repeat_features(x, 3) / math.sqrt(3) @ Wi.T, x @ W.T)
    Wo, _ = widen_linear(W, None, 3, in_scale=1.0, out_scale=1.0, sides="out")
    torch.testing.assert_close(x @ Wo.T, repeat_features(x @ W.T, 3))


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("eps", [1e-5, 0.3])
def test_widen_layernorm_against_functional(k, eps):
    g = _gen(5)
    ln = nn.LayerNorm(6, eps=eps).double()
    with torch.no_grad():
        ln.weight.copy_(torch.randn(6, generator=g, dtype=torch.float64))
        ln.bias.copy_(torch.randn(6, generator=g, dtype=torch.float64))
    x = 3 * torch.randn(4, 6, dtype=torch.float64, generator=g)
    ref = torch.nn.functional.layer_norm(x, (6,), ln.weight, ln.bias, eps)
    big = widen_layernorm(ln, k)
    assert big.eps == pytest.approx(eps / k)
    out = big(repeat_features(x, k) / math.sqrt(k))
    torch.testing.assert_close(out, repeat_features(ref, k) / math.sqrt(k), rtol=0, atol=1e-13)
    # pure-repetition input: keep eps
    big2 = widen_layernorm(ln, k, adjust_eps=False)
    out2 = big2(repeat_features(x, k))
    torch.testing.assert_close(out2, repeat_features(ref, k) / math.sqrt(k), rtol=0, atol=1e-13)
    # and with the unadjusted eps on an isometric input: LN with eps * k (the pitfall)
    ref_k = torch.nn.functional.layer_norm(x, (6,), ln.weight, ln.bias, eps * k)
    torch.testing.assert_close(
        big2(repeat_features(x, k) / math.sqrt(k)), repeat_features(ref_k, k) / math.sqrt(k)
    )


def test_widen_layernorm_without_affine():
    ln = nn.LayerNorm(4, elementwise_affine=False)
    x = torch.randn(2, 4, generator=_gen(1))
    big = widen_layernorm(ln, 2)
    torch.testing.assert_close(
        big(repeat_features(x, 2) / math.sqrt(2)), repeat_features(ln(x), 2) / math.sqrt(2)
    )


def test_widen_embedding_rows_and_norms():
    emb = nn.Embedding(5, 4, padding_idx=0)
    big = widen_embedding(emb, 3)
    assert big.weight.shape == (5, 12) and big.padding_idx == 0
    torch.testing.assert_close(big.weight.norm(dim=1), emb.weight.norm(dim=1))
    torch.testing.assert_close(big.weight[:, ::3] * math.sqrt(3), emb.weight)


# ------------------------------------------------------------------ whole-model exactness


_POSITIONS = ("learned", "sinusoidal", "rope")
_GRID = (
    [(p, h, True, 2) for p in _POSITIONS for h in ("lm", "mlm", "none")]
    + [(p, "mlm", False, 2) for p in _POSITIONS]
    + [(p, h, nf, 3) for p, h, nf in zip(_POSITIONS, ("none", "lm", "mlm"), (True, False, True))]
)


@pytest.mark.parametrize("pos,head,norm_first,k", _GRID)
def test_widen_model_exact_float64(pos, head, norm_first, k):
    m = _model(pos, head, norm_first, segments=2 if pos == "learned" else 0)
    toks = _tokens()
    kw = (
        {"segment_ids": torch.randint(0, 2, toks.shape, generator=_gen(9))}
        if pos == "learned"
        else {}
    )
    y = m(toks, **kw)
    big = widen_model(m, k)
    assert big.d == k * D and big.blocks[0].mixer.heads == H
    err = (_readout(big(toks, **kw), k, head) - y).abs().max().item()
    assert err < 1e-12, err


@pytest.mark.parametrize("pos", ["learned", "rope"])
def test_widen_model_untied_and_relu_and_causal(pos):
    m = _model(pos, "lm", act="relu", tie_embeddings=False)
    toks = _tokens()
    big = widen_model(m, 2)
    torch.testing.assert_close(big(toks, causal=True), m(toks, causal=True), rtol=0, atol=1e-12)


def test_attention_probabilities_identical():
    """C5: with k^(1/4) on q and k the attention weights of every head are unchanged."""
    m = _model("learned", "none")
    big = widen_model(m, 2)
    x = torch.randn(2, N, D, dtype=torch.float64, generator=_gen(4))
    _, w = m.blocks[0].mixer(x, return_weights=True)
    _, wb = big.blocks[0].mixer(repeat_features(x, 2) / math.sqrt(2), return_weights=True)
    torch.testing.assert_close(wb, w, rtol=0, atol=1e-14)


@pytest.mark.parametrize("pos", ["learned", "rope"])
@pytest.mark.parametrize("k", [2, 3])
def test_duplicate_heads_exact_with_standard_rope(pos, k):
    m = _model(pos, "lm")
    big = duplicate_heads(m, k)
    mix = big.blocks[0].mixer
    assert mix.heads == k * H and mix.d_qk == D // H
    assert not isinstance(mix.rotary, RepeatedLadderRotary)
    toks = _tokens()
    torch.testing.assert_close(big(toks), m(toks), rtol=0, atol=1e-12)


def test_k1_is_a_copy_and_float32():
    m = _model("learned", "mlm")
    toks = _tokens()
    torch.testing.assert_close(widen_model(m, 1)(toks), m(toks), rtol=0, atol=1e-13)
    m32 = copy.deepcopy(m).float()
    big32 = widen_model(m32, 2)
    assert big32.tok_emb.weight.dtype == torch.float32
    torch.testing.assert_close(big32(toks), m32(toks), rtol=0, atol=5e-5)


def test_caller_rng_untouched():
    m = _model()
    state = torch.random.get_rng_state()
    widen_model(m, 2)
    duplicate_heads(m, 2)
    assert torch.equal(state, torch.random.get_rng_state())


# ------------------------------------------------------------------ the mistakes, predicted


def _err(a, b):
    return (a - b).abs().max().item()


def test_missing_temperature_equals_scores_over_sqrt_k():
    k = 2
    m = _model("learned", "lm")
    toks = _tokens()
    bad = widen_model(m, k, qk_temperature=False)
    pred = copy.deepcopy(m)  # scores / sqrt(k)  <=>  W_q, b_q scaled by 1/sqrt(k)
    with torch.no_grad():
        for blk in pred.blocks:
            blk.mixer.q.weight.mul_(k**-0.5)
            blk.mixer.q.bias.mul_(k**-0.5)
    assert _err(bad(toks), m(toks)) > 1e-3
    assert _err(bad(toks), pred(toks)) < 1e-12


def test_post_table_ffn_bias_equals_bias_over_sqrt_k():
    k = 2
    m = _model("learned", "lm")
    toks = _tokens()
    bad = widen_model(m, k, ffn_out_bias="k")
    pred = copy.deepcopy(m)
    with torch.no_grad():
        for blk in pred.blocks:
            blk.ffn.fc2.bias.mul_(k**-0.5)
    assert _err(bad(toks), m(toks)) > 1e-3
    assert _err(bad(toks), pred(toks)) < 1e-12


class _ScaledGelu(nn.Module):
    def __init__(self, k):
        super().__init__()
        self.k = k

    def forward(self, z):
        return math.sqrt(self.k) * torch.nn.functional.gelu(z / math.sqrt(self.k))


@pytest.mark.parametrize("k", [2, 3])
def test_dense_rule_before_gelu_equals_rescaled_gelu(k):
    m = _model("learned", "lm")
    toks = _tokens()
    bad = widen_model(m, k, activation_aware=False)
    pred = copy.deepcopy(m)
    for blk in pred.blocks:
        blk.ffn.act = _ScaledGelu(k)
    assert _err(bad(toks), m(toks)) > 1e-3
    assert _err(bad(toks), pred(toks)) < 1e-12
    # ReLU is positively homogeneous: the plain dense rule is already exact (C4)
    r = _model("learned", "lm", act="relu")
    assert _err(widen_model(r, k, activation_aware=False)(toks), r(toks)) < 1e-12


def test_unadjusted_eps_equals_eps_times_k():
    k = 2
    m = _model("learned", "lm")
    toks = _tokens()
    bad = widen_model(m, k, adjust_eps=False)
    pred = copy.deepcopy(m)
    for blk in pred.blocks:
        blk.ln1.eps *= k
        blk.ln2.eps *= k
    pred.ln_f.eps *= k
    e = _err(bad(toks), m(toks))
    assert 1e-9 < e < 1e-3, e  # visible at PyTorch's default eps = 1e-5, but small
    assert _err(bad(toks), pred(toks)) < 1e-12


def test_block_layout_merges_heads():
    """Tiled [x, x] with k = h = 2: each wide head sees *all* small heads at once, i.e. the
    small model with one head (scores q.k over all d features, times 1/sqrt(k))."""
    k = 2
    m = _model("learned", "lm", heads=2)
    toks = _tokens()
    bad = widen_model(m, k, layout="block")
    pred = copy.deepcopy(m)
    with torch.no_grad():
        for blk in pred.blocks:
            mix = blk.mixer
            mix.heads, mix.d_qk, mix.d_v = 1, D, D
            mix.q.weight.mul_(k**-0.5)
            mix.q.bias.mul_(k**-0.5)
    assert _err(bad(toks), m(toks)) > 1e-3
    assert _err(bad(toks), pred(toks)) < 1e-12
    one = _model("learned", "lm", heads=1)  # with a single head the tiled layout is fine
    assert _err(widen_model(one, 3, layout="block")(toks), one(toks)) < 1e-12


def test_standard_rope_ladder_only_approximate():
    m = _model("rope", "lm")
    toks = _tokens()
    approx = widen_model(m, 2, rope_ladder="standard")
    assert _err(approx(toks), m(toks)) > 1e-6
    # a single position rotates by angle 0 for every ladder: then it is exact
    assert _err(approx(toks[:, :1]), m(toks[:, :1])) < 1e-12
    # pair j = k i of the wide head keeps theta_i; the repeated ladder is theta_{j // k}
    rot = RepeatedLadderRotary(4, 2)
    from kexue_lib.position_encoding import sinusoidal_frequencies

    small = sinusoidal_frequencies(4, 1e4, dtype=torch.float64)
    wide = sinusoidal_frequencies(8, 1e4, dtype=torch.float64)
    torch.testing.assert_close(rot.freqs[::2], small)
    torch.testing.assert_close(wide[::2], small)
    assert (wide[1::2] < small).all()


# ------------------------------------------------------------------ nn.TransformerEncoderLayer


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("act", ["gelu", "relu"])
@pytest.mark.parametrize("k", [2, 3])
def test_widen_torch_encoder_layer(norm_first, act, k):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        layer = nn.TransformerEncoderLayer(
            D,
            2,
            dim_feedforward=32,
            dropout=0.0,
            activation=act,
            batch_first=True,
            norm_first=norm_first,
        )
    layer = layer.double().eval()
    g = _gen(2)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    x = torch.randn(3, N, D, dtype=torch.float64, generator=g)
    big = widen_torch_encoder_layer(layer, k)
    assert big.self_attn.embed_dim == k * D and big.linear1.out_features == k * 32
    assert big.norm1.eps == pytest.approx(layer.norm1.eps / k)
    with torch.no_grad():
        y = layer(x)
        yb = big(repeat_features(x, k) / math.sqrt(k))
    torch.testing.assert_close(yb, repeat_features(y, k) / math.sqrt(k), rtol=0, atol=1e-12)


def test_torch_encoder_layer_stacked_in_proj_mistake():
    """Widening in_proj_weight as one (3E, E) block misplaces q/k/v rows (sheet pitfall)."""
    k = 2
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(D, 2, 32, dropout=0.0, batch_first=True).double().eval()
    big = widen_torch_encoder_layer(layer, k)
    W, b = widen_linear(
        layer.self_attn.in_proj_weight,
        layer.self_attn.in_proj_bias,
        k,
        in_scale=k**-0.5,
        out_scale=k**-0.5,
    )
    with torch.no_grad():
        big.self_attn.in_proj_weight.copy_(W)
        big.self_attn.in_proj_bias.copy_(b)
        x = torch.randn(2, N, D, dtype=torch.float64, generator=_gen(0))
        y = repeat_features(layer(x), k) / math.sqrt(k)
        assert _err(big(repeat_features(x, k) / math.sqrt(k)), y) > 1e-3


# ------------------------------------------------------------------ bad inputs


def test_bad_inputs():
    m = _model()
    x = torch.randn(4)
    with pytest.raises(ValueError, match=r"^k\b"):
        repeat_features(x, 0)
    with pytest.raises(TypeError, match=r"^k\b"):
        repeat_features(x, 1.5)
    with pytest.raises(TypeError, match=r"^k\b"):
        widen_model(m, 2.0)
    with pytest.raises(TypeError, match=r"^k\b"):
        widen_model(m, True)
    with pytest.raises(ValueError, match=r"^k\b"):
        duplicate_heads(m, 0)
    with pytest.raises(ValueError, match=r"^group\b"):
        repeat_features(x, 2, group=3)
    with pytest.raises(ValueError, match=r"^y\b"):
        unrepeat_features(torch.randn(5), 2)
    with pytest.raises(ValueError, match=r"^W\b"):
        widen_linear(x, None, 2, in_scale=1.0, out_scale=1.0)
    with pytest.raises(ValueError, match=r"^b\b"):
        widen_linear(torch.randn(3, 4), torch.randn(4), 2, in_scale=1.0, out_scale=1.0)
    with pytest.raises(ValueError, match=r"^in_scale\b"):
        widen_linear(torch.randn(3, 4), None, 2, in_scale=0.0, out_scale=1.0)
    with pytest.raises(ValueError, match=r"^layout\b"):
        widen_model(m, 2, layout="tile")
    with pytest.raises(ValueError, match=r"^ffn_out_bias\b"):
        widen_model(m, 2, ffn_out_bias="half")
    with pytest.raises(TypeError, match=r"^model\b"):
        widen_model(nn.Linear(2, 2), 2)
    with pytest.raises(TypeError, match=r"^ln\b"):
        widen_layernorm(nn.Linear(2, 2), 2)
    with pytest.raises(ValueError, match=r"^role\b"):
        widening_scales("attention", 2)
    lin = TinyTransformer(V, D, H, 1, max_len=8, token_mixer=lambda i: nn.Identity())
    with pytest.raises(ValueError, match=r"^model\b"):
        widen_model(lin, 2)


@requires_cuda
def test_cuda():
    m = _model("rope", "mlm").cuda()
    toks = _tokens().cuda()
    for big in (widen_model(m, 2), duplicate_heads(m, 2)):
        assert big.tok_emb.weight.device.type == "cuda"
        torch.testing.assert_close(big(toks), m(toks), rtol=0, atol=1e-11)
    layer = nn.TransformerEncoderLayer(D, 2, 32, dropout=0.0, batch_first=True).cuda().eval()
    x = torch.randn(2, N, D, device="cuda")
    with torch.no_grad():
        yb = widen_torch_encoder_layer(layer, 2)(repeat_features(x, 2) / math.sqrt(2))
        torch.testing.assert_close(
            yb, repeat_features(layer(x), 2) / math.sqrt(2), rtol=1e-4, atol=1e-5
        )


def test_low_precision_and_bias_free_layers():
    m = _model("learned", "mlm")
    toks = _tokens()
    ref = m(toks)
    for dt in (torch.bfloat16, torch.float16):
        small = copy.deepcopy(m).to(dt)
        big = widen_model(small, 2)
        assert big.tok_emb.weight.dtype == dt
        out = big(toks)
        assert torch.isfinite(out).all()
        # widening adds no more error than running the small model in that precision
        own = _err(small(toks).double(), ref)
        assert _err(out.double(), ref) < 3 * own + 1e-3, (dt, own)
    with torch.random.fork_rng():
        torch.manual_seed(1)
        layer = nn.TransformerEncoderLayer(D, 2, 16, dropout=0.0, batch_first=True, bias=False)
    layer = layer.double().eval()
    big = widen_torch_encoder_layer(layer, 2)
    assert big.linear1.bias is None and big.norm1.bias is None
    x = torch.randn(2, N, D, dtype=torch.float64, generator=_gen(6))
    with torch.no_grad():
        torch.testing.assert_close(
            big(repeat_features(x, 2) / math.sqrt(2)),
            repeat_features(layer(x), 2) / math.sqrt(2),
            rtol=0,
            atol=1e-12,
        )


def test_gradients_keep_the_copies_identical():
    """The symmetry trap: after an SGD step on the widened model its copies are still copies,
    so the model is still a widened small model."""
    m = _model("learned", "lm")
    big = widen_model(m, 2).train()
    toks = _tokens()
    loss = nn.functional.cross_entropy(big(toks).reshape(-1, V), toks.reshape(-1))
    loss.backward()
    with torch.no_grad():
        for p in big.parameters():
            p.sub_(0.1 * p.grad)
    W = big.tok_emb.weight
    assert _err(W[:, 0::2], W[:, 1::2]) < 1e-13
    W1 = big.blocks[0].ffn.fc1.weight  # (2F, 2D): rows and columns come in identical pairs
    assert _err(W1[0::2], W1[1::2]) < 1e-13 and _err(W1[:, 0::2], W1[:, 1::2]) < 1e-13
    assert big.blocks[0].ffn.fc1.weight.grad.abs().max() > 1e-6  # it did move
