"""Tests of kexue_lib.models.mixers against torch.fft, scipy, HF FNet, autograd and loops."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from kexue_lib._core import make_generator
from kexue_lib.models.mixers import (
    DilatedConvMixer,
    ExternalAttention,
    FNetMixing,
    GMLPBlock,
    LinearTokenMixing,
    MixerBlock,
    MixerTokenMLP,
    SpatialGatingUnit,
    SynthesizerDense,
    SynthesizerRandom,
    TinyAttention,
    dft_matrix,
    dilated_receptive_field,
    fnet_as_attention,
    permutation_equivariance_error,
    token_mixing_jacobian,
)
from kexue_lib.models.transformer import MultiHeadAttention
from tests.conftest import requires_cuda

DTYPES = [torch.float64, torch.float32]
TOL = {torch.float64: dict(rtol=1e-10, atol=1e-10), torch.float32: dict(rtol=1e-4, atol=1e-4)}


def _randn(*shape, seed=0, dtype=torch.float64, device="cpu"):
    g = make_generator(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(device, dtype)


def _init(module: nn.Module, seed: int = 0, scale: float = 0.3) -> nn.Module:
    g = make_generator(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * scale)
    return module


# ----------------------------------------------------------------------------- FNet


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("impl", ["fft", "dft"])
def test_fnet_matches_fft2_real_part(dtype, impl):
    x = _randn(2, 7, 5, seed=1, dtype=dtype)
    want = torch.fft.fft2(x.double().to(torch.complex128)).real.to(dtype)
    tol = TOL[dtype] if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(FNetMixing(impl=impl)(x), want, **tol)


def test_fnet_dft_equals_fft_and_loop():
    x = _randn(1, 6, 4, seed=2)
    y = FNetMixing(impl="dft")(x)
    torch.testing.assert_close(y, FNetMixing(impl="fft")(x), rtol=1e-12, atol=1e-12)
    # brute-force double sum over positions and channels
    j, c = 3, 2
    s = sum(
        float(x[0, a, b]) * math.cos(2 * math.pi * (j * a / 6 + c * b / 4))
        for a in range(6)
        for b in range(4)
    )
    assert abs(float(y[0, j, c]) - s) < 1e-12


def test_fnet_matches_huggingface():
    fnet = pytest.importorskip("transformers.models.fnet.modeling_fnet")
    from transformers import FNetConfig

    cfg = FNetConfig(hidden_size=8, use_tpu_fourier_optimizations=False)
    ref = fnet.FNetBasicFourierTransform(cfg)
    x = _randn(2, 5, 8, seed=3, dtype=torch.float32)
    torch.testing.assert_close(FNetMixing()(x), ref(x)[0], rtol=1e-5, atol=1e-5)


def test_dft_matrix_vs_scipy_and_fft():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    for n in (1, 2, 7, 16):
        f = dft_matrix(n)
        torch.testing.assert_close(f, torch.from_numpy(scipy_linalg.dft(n)), rtol=0, atol=1e-12)
        torch.testing.assert_close(f, torch.fft.fft(torch.eye(n, dtype=torch.complex128), dim=0))


def test_dft_matrix_float32_phase_reduction():
    """complex64 with jk reduced mod n stays accurate for n = 1024 (raw j k in float32 would not)."""
    n = 1024
    f32 = dft_matrix(n, dtype=torch.complex64)
    rows = torch.arange(n - 16, n)
    jk = (rows[:, None] * torch.arange(n)[None, :]) % n  # exact integers
    ang = -2 * math.pi * jk.double() / n
    ref = torch.polar(torch.ones_like(ang), ang)
    assert (f32[-16:].to(torch.complex128) - ref).abs().max() < 1e-6
    j = torch.arange(n, dtype=torch.float32)
    naive = torch.polar(torch.ones(16, n), -2 * math.pi * (j[-16:, None] * j[None, :]) / n)
    assert (naive.to(torch.complex128) - ref).abs().max() > 1e-4


def test_fnet_as_attention_is_dft_and_real_part_identity():
    for n in (5, 8):
        a = fnet_as_attention(n)
        torch.testing.assert_close(a, torch.fft.fft(torch.eye(n, dtype=torch.complex128), dim=0))
        x = _randn(n, 3, seed=n)
        y = (a @ x.to(torch.complex128) @ dft_matrix(3)).real
        torch.testing.assert_close(y, torch.fft.fft2(x).real, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- mixers


@pytest.mark.parametrize("dtype", DTYPES)
def test_synthesizer_random_formula(dtype):
    m = _init(SynthesizerRandom(5, 4), 4).to(dtype)
    x = _randn(2, 5, 4, seed=5, dtype=dtype)
    a = torch.exp(m.R) / torch.exp(m.R).sum(-1, keepdim=True)
    torch.testing.assert_close(m(x), a @ (x @ m.value.weight.T + m.value.bias), **TOL[dtype])
    frozen = SynthesizerRandom(5, 4, trainable=False, softmax=False)
    assert not frozen.R.requires_grad
    torch.testing.assert_close(frozen.mixing_matrix(), frozen.R)


def test_mixer_equals_synthesizer_random_without_softmax():
    """A linear token mix W equals Synthesizer-Random with A = R = W and identity values."""
    lin = _init(LinearTokenMixing(6), 6).double()
    syn = SynthesizerRandom(6, 3, softmax=False)
    with torch.no_grad():
        syn.R.copy_(lin.mix.weight)
        syn.value.weight.copy_(torch.eye(3))
        syn.value.bias.zero_()
        lin.mix.bias.zero_()
    syn.double()
    x = _randn(2, 6, 3, seed=7)
    torch.testing.assert_close(lin(x), syn(x))


def test_synthesizer_dense_rows_depend_on_own_token():
    m = _init(SynthesizerDense(4, 6, hidden=8), 8).double()
    x = _randn(1, 6, 4, seed=9)
    a = m.mixing_matrix(x)
    y = x.clone()
    y[0, 2] += 1.0
    b = m.mixing_matrix(y)
    changed = (a - b).abs().amax(-1)[0] > 1e-9
    assert changed.tolist() == [False, False, True, False, False, False]
    row2 = torch.softmax(m.f2(torch.relu(m.f1(x[0, 2]))), -1)
    torch.testing.assert_close(a[0, 2], row2)


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_and_token_mlp_loops(dtype):
    lin = _init(LinearTokenMixing(4), 10).to(dtype)
    mlp = _init(MixerTokenMLP(4, 3, act="relu"), 11).to(dtype)
    x = _randn(1, 4, 2, seed=12, dtype=dtype)
    w, b = lin.mix.weight, lin.mix.bias
    for i in range(4):
        for c in range(2):
            want = sum(w[i, j] * x[0, j, c] for j in range(4)) + b[i]
            torch.testing.assert_close(lin(x)[0, i, c], want, **TOL[dtype])
    for c in range(2):  # the MLP acts on each channel's column of n values, shared weights
        col = x[0, :, c]
        want = mlp.fc2.weight @ torch.relu(mlp.fc1.weight @ col + mlp.fc1.bias) + mlp.fc2.bias
        torch.testing.assert_close(mlp(x)[0, :, c], want, **TOL[dtype])


def test_mixer_block_formula():
    blk = _init(MixerBlock(5, 4, 6, 8), 13).double()
    x = _randn(2, 5, 4, seed=14)
    tm = blk.token_mlp
    u = blk.norm1(x).transpose(1, 2)  # (B, d, n): rows are channels
    h = x + (tm.fc2(torch.nn.functional.gelu(tm.fc1(u)))).transpose(1, 2)
    want = h + blk.channel_mlp(blk.norm2(h))
    torch.testing.assert_close(blk(x), want)


@pytest.mark.parametrize("dtype", DTYPES)
def test_external_attention_double_normalisation_loop(dtype):
    m = _init(ExternalAttention(4, S=3), 15).to(dtype)
    x = _randn(2, 5, 4, seed=16, dtype=dtype)
    mk, mv = m.mk.weight.detach(), m.mv.weight.T.detach()  # (S, d) each
    for b in range(2):
        logits = [[float(x[b, i] @ mk[s]) for s in range(3)] for i in range(5)]
        col = [
            [
                math.exp(logits[i][s]) / sum(math.exp(logits[t][s]) for t in range(5))
                for s in range(3)
            ]
            for i in range(5)
        ]
        for i in range(5):
            tot = sum(col[i])
            want = sum(col[i][s] / tot * mv[s] for s in range(3))
            torch.testing.assert_close(m(x)[b, i], want.to(dtype), **TOL[dtype])
    rowm = _init(ExternalAttention(4, S=3, norm="row"), 15).to(dtype)
    a = rowm.weights(x)
    torch.testing.assert_close(a, torch.softmax(x @ mk.T, -1), **TOL[dtype])


def test_sgu_init_and_formula():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        sgu = SpatialGatingUnit(8, 5).double()
    assert sgu.spatial.weight.abs().max() <= 1e-3 / 5
    assert torch.equal(sgu.spatial.bias, torch.ones(5, dtype=torch.float64))
    z = _randn(1, 5, 8, seed=17)
    # at initialisation the unit is close to the identity on the first half
    assert (sgu(z) - z[..., :4]).abs().max() < 1e-2
    _init(sgu, 18)
    z1, z2 = z[..., :4], z[..., 4:]
    want = z1 * (sgu.spatial.weight @ sgu.norm(z2) + sgu.spatial.bias[:, None])
    torch.testing.assert_close(sgu(z), want)
    causal = _init(SpatialGatingUnit(8, 5, causal=True), 18).double()
    jac = token_mixing_jacobian(causal, z)
    assert (jac.triu(1) == 0).all()


def test_gmlp_and_amlp_blocks():
    blk = _init(GMLPBlock(6, 8, 5), 19).double()
    x = _randn(2, 5, 6, seed=20)
    h = blk.norm(x)
    want = x + blk.proj_out(blk.sgu(torch.nn.functional.gelu(blk.proj_in(h))))
    torch.testing.assert_close(blk(x), want)
    amlp = _init(GMLPBlock(6, 8, 5, tiny_attn=True, d_attn=4), 21).double()
    assert isinstance(amlp.sgu.tiny_attn, TinyAttention)
    y = amlp(x)
    h = amlp.norm(x)
    z = torch.nn.functional.gelu(amlp.proj_in(h))
    z1, z2 = z.chunk(2, -1)
    sgu = amlp.sgu
    gate = sgu.spatial.weight @ sgu.norm(z2) + sgu.spatial.bias[:, None] + sgu.tiny_attn(h)
    torch.testing.assert_close(y, x + amlp.proj_out(z1 * gate))


def test_tiny_attention_matches_loop():
    t = _init(TinyAttention(4, 3, 2), 22).double()
    x = _randn(1, 3, 4, seed=23)[0]
    with torch.no_grad():
        q, k, v = t.qkv(x).chunk(3, -1)
    rows = []
    for i in range(3):
        s = torch.tensor([float(q[i] @ k[j]) / math.sqrt(2) for j in range(3)], dtype=torch.float64)
        p = torch.softmax(s, 0)
        rows.append(sum(p[j] * v[j] for j in range(3)))
    torch.testing.assert_close(t(x[None])[0], t.out(torch.stack(rows)))


# ----------------------------------------------------------------------------- convolutions


def test_dilated_receptive_field_formula():
    for k, L in [(3, 1), (3, 4), (5, 3), (2, 5)]:
        assert dilated_receptive_field(k, L) == 1 + (k - 1) * (2**L - 1)
    assert dilated_receptive_field(3, 3, dilation_base=3) == 1 + 2 * (1 + 3 + 9)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dilated_conv_single_layer_loop(dtype):
    m = _init(DilatedConvMixer(3, kernel=3, layers=1), 40).to(dtype)
    x = _randn(1, 6, 3, seed=41, dtype=dtype)
    w, b = m.convs[0].weight, m.convs[0].bias  # (d_out, d_in, k)
    xp = torch.cat([torch.zeros(1, 3, dtype=dtype), x[0], torch.zeros(1, 3, dtype=dtype)])
    for i in range(6):
        want = b + sum(w[:, :, t] @ xp[i + t] for t in range(3))  # taps at i-1, i, i+1
        torch.testing.assert_close(m(x)[0, i], want, **TOL[dtype])


@pytest.mark.parametrize("causal", [False, True])
def test_dilated_conv_jacobian_support_is_receptive_field(causal):
    n = 40
    m = _init(DilatedConvMixer(2, kernel=3, layers=3, causal=causal), 42).double()
    x = _randn(n, 2, seed=43)
    J = token_mixing_jacobian(m, x)
    i = 30 if causal else 20
    support = torch.nonzero(J[i] > 0).flatten()
    width = int(support.max() - support.min()) + 1
    assert width == dilated_receptive_field(3, 3) == m.receptive_field == 15
    if causal:
        assert int(support.max()) == i and (J.triu(1) == 0).all()
    else:
        assert int(support.min()) == i - 7 and int(support.max()) == i + 7
    assert m(_randn(1, 9, 2, seed=44)).shape == (1, 9, 2)  # any length
    with pytest.raises(ValueError, match=r"^kernel\b"):
        DilatedConvMixer(2, kernel=4)


# ----------------------------------------------------------------------------- diagnostics


def _all_mixers(n, d, seed=30):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        mods = {
            "attention": MultiHeadAttention(d, 2),
            "synth_random": SynthesizerRandom(n, d),
            "synth_dense": SynthesizerDense(d, n, 8),
            "linear": LinearTokenMixing(n),
            "token_mlp": MixerTokenMLP(n, 8),
            "external_double": ExternalAttention(d, S=6),
            "external_row": ExternalAttention(d, S=6, norm="row"),
            "fnet": FNetMixing(),
            "gmlp": GMLPBlock(d, 2 * d, n),
            "conv": DilatedConvMixer(d, kernel=3, layers=2),
        }
    for m in mods.values():
        _init(m, seed, scale=0.5)
    return {k: m.double() for k, m in mods.items()}


def test_jacobian_vs_autograd():
    n, d = 6, 4
    x = _randn(n, d, seed=31)
    for name, m in _all_mixers(n, d).items():
        full = torch.autograd.functional.jacobian(lambda t, m=m: m(t[None])[0], x)
        want = full.pow(2).sum(dim=(1, 3)).sqrt()
        torch.testing.assert_close(token_mixing_jacobian(m, x), want, msg=name)


def test_jacobian_structure_claims():
    n, d = 6, 4
    mods = _all_mixers(n, d)
    x, y = _randn(n, d, seed=32), _randn(n, d, seed=33)
    # fixed linear mixers: J = |W| sqrt(d), independent of the input
    lin = mods["linear"]
    torch.testing.assert_close(token_mixing_jacobian(lin, x), lin.mix.weight.abs() * math.sqrt(d))
    torch.testing.assert_close(token_mixing_jacobian(lin, x), token_mixing_jacobian(lin, y))
    # FNet: |d y_i / d x_j| = |cos| pattern, norm sqrt(sum_c,c' cos^2(...)) = d/sqrt(2) off the
    # Nyquist cases; in any case input-independent
    fn = mods["fnet"]
    torch.testing.assert_close(token_mixing_jacobian(fn, x), token_mixing_jacobian(fn, y))
    # row-normalised external attention is token-wise: diagonal Jacobian
    jr = token_mixing_jacobian(mods["external_row"], x)
    assert (jr - torch.diag(torch.diag(jr))).abs().max() == 0
    # the paper's double normalisation couples tokens (through per-memory sums)
    jd = token_mixing_jacobian(mods["external_double"], x)
    assert (jd - torch.diag(torch.diag(jd))).abs().max() > 1e-4
    # attention's Jacobian depends on the input
    ja, jb = (token_mixing_jacobian(mods["attention"], t) for t in (x, y))
    assert (ja - jb).abs().max() > 1e-3


def test_permutation_equivariance():
    n, d = 6, 4
    mods = _all_mixers(n, d)
    x = _randn(2, n, d, seed=34)
    perm = torch.tensor([2, 0, 5, 1, 4, 3])
    errs = {k: float(permutation_equivariance_error(m, x, perm)) for k, m in mods.items()}
    for k in ("attention", "external_double", "external_row"):
        assert errs[k] < 1e-12, (k, errs[k])
    for k in ("synth_random", "synth_dense", "linear", "token_mlp", "fnet", "gmlp", "conv"):
        assert errs[k] > 1e-3, (k, errs[k])


def test_fixed_length_mixers_reject_other_lengths_and_fnet_does_not():
    n, d = 6, 4
    mods = _all_mixers(n, d)
    x = _randn(1, n + 1, d, seed=35)
    for k in ("synth_random", "synth_dense", "linear", "token_mlp", "gmlp"):
        with pytest.raises(ValueError, match="max_len"):
            mods[k](x)
    for k in ("attention", "external_double", "fnet", "conv"):
        assert mods[k](x).shape == (1, n + 1, d)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 12), d=st.integers(1, 6), seed=st.integers(0, 1000))
def test_property_fnet_linear_and_dft_parseval(n, d, seed):
    """FNet is linear and Re(F_n X F_d) = fft2 real part for any shape."""
    x, y = _randn(1, n, d, seed=seed), _randn(1, n, d, seed=seed + 1)
    f = FNetMixing(impl="dft")
    torch.testing.assert_close(f(2 * x - y), 2 * f(x) - f(y), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(f(x), torch.fft.fft2(x).real, rtol=1e-9, atol=1e-9)


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"^norm\b"):
        ExternalAttention(4, norm="col")
    with pytest.raises(TypeError, match=r"^S\b"):
        ExternalAttention(4, S=2.5)
    with pytest.raises(ValueError, match=r"^impl\b"):
        FNetMixing(impl="fast")
    with pytest.raises(ValueError, match=r"^d_ffn\b"):
        SpatialGatingUnit(7, 4)
    with pytest.raises(ValueError, match=r"^act\b"):
        MixerTokenMLP(4, 3, act="tanh")
    with pytest.raises(TypeError, match=r"^dtype\b"):
        dft_matrix(4, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"^n\b"):
        dft_matrix(0)
    with pytest.raises(ValueError, match=r"^x\b"):
        FNetMixing()(torch.zeros(3, 4))
    with pytest.raises(ValueError, match=r"^x\b"):
        ExternalAttention(4)(torch.zeros(1, 3, 5))
    with pytest.raises(ValueError, match=r"^perm\b"):
        permutation_equivariance_error(FNetMixing(), torch.zeros(1, 3, 2), torch.tensor([0, 0, 1]))
    with pytest.raises(ValueError, match=r"^x\b"):
        token_mixing_jacobian(FNetMixing(), torch.zeros(2, 3, 2))


def test_half_precision_no_nan():
    x = _randn(1, 8, 4, seed=36, dtype=torch.bfloat16) * 30
    assert torch.isfinite(ExternalAttention(4, S=5).to(torch.bfloat16)(x)).all()
    y = FNetMixing()(x)
    assert y.dtype == torch.bfloat16 and torch.isfinite(y).all()


@requires_cuda
def test_cuda_mixers():
    dev = torch.device("cuda")
    x = _randn(2, 8, 4, seed=37, dtype=torch.float32, device=dev)
    torch.testing.assert_close(FNetMixing(impl="dft")(x), FNetMixing()(x), rtol=1e-4, atol=1e-4)
    for m in _all_mixers(8, 4).values():
        m = m.float().to(dev)
        assert m(x).device.type == "cuda"
    j = token_mixing_jacobian(ExternalAttention(4, S=3).to(dev), x[0])
    assert j.shape == (8, 8) and j.device.type == "cuda"
