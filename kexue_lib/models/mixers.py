"""Token mixers that replace attention: Synthesizer, MLP-Mixer/ResMLP, External Attention, FNet, gMLP.

Every mixer maps ``x: (B, n, d) -> (B, n, d)`` (the gating unit halves the width, by design).
Seen as ``O = A V`` with a token-mixing matrix ``A: (n, n)``, they differ in whether ``A``
depends on the input, whether it is normalised, and whether its parameters fix ``n``::

    softmax attention     A = softmax(Q K^T / sqrt(d))          input-dependent, any n
    Synthesizer-Random    A = softmax(R), R: (n, n) parameter   fixed, n = max_len
    Synthesizer-Dense     A_i = softmax(F(x_i)), F: d -> n      per-token rows, n = max_len
    linear token mixing   A = W (ResMLP / "MLP-Mixer = A")      fixed, n = max_len
    External Attention    softmax over tokens of X M_k^T, l1 over S memories, then @ M_v
    FNet                  Y = Re(F_n X F_d), F_n the DFT matrix  fixed, any n, no parameters
    gMLP gating unit      O = X_1 * (W LN(X_2) + b)              fixed W, n = max_len
    dilated convolutions  banded A, width 1 + (k-1)(2^L - 1)     fixed, any n

Modules with a length-``n`` parameter take ``max_len`` and raise ValueError when
``n != max_len`` (pad the input yourself). Diagnostics: ``token_mixing_jacobian`` (how much
output token i depends on input token j) and ``permutation_equivariance_error``.

Derived in book/positions/non-transformer-mixers.ipynb.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from kexue_lib._core import check_choice, check_int, check_tensor

__all__ = [
    "DilatedConvMixer",
    "ExternalAttention",
    "FNetMixing",
    "GMLPBlock",
    "LinearTokenMixing",
    "MixerBlock",
    "MixerTokenMLP",
    "SpatialGatingUnit",
    "SynthesizerDense",
    "SynthesizerRandom",
    "TinyAttention",
    "dft_matrix",
    "fnet_as_attention",
    "permutation_equivariance_error",
    "dilated_receptive_field",
    "token_mixing_jacobian",
]

_ACTS = {"gelu": nn.GELU, "relu": nn.ReLU}


def _check_x(x, d: int | None = None, n: int | None = None) -> torch.Tensor:
    """Validate ``x: (B, n, d)``; a fixed ``n`` is the module's ``max_len``."""
    check_tensor("x", x, floating=True)
    if x.dim() != 3:
        raise ValueError(f"x: expected shape (B, n, d), got {tuple(x.shape)}")
    if d is not None and x.shape[-1] != d:
        raise ValueError(f"x: expected d = {d} features, got shape {tuple(x.shape)}")
    if n is not None and x.shape[1] != n:
        raise ValueError(
            f"x: this mixer has an (n, n) parameter and needs n = max_len = {n}, got length "
            f"{x.shape[1]} (pad or truncate to max_len)"
        )
    return x


def _tokens_linear(x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    """Apply ``layer`` along the token axis: ``(B, n, d) -> (B, n_out, d)``, ``W x`` per channel."""
    return layer(x.transpose(-1, -2)).transpose(-1, -2)


# --------------------------------------------------------------------------- Synthesizer


class SynthesizerRandom(nn.Module):
    """Synthesizer-Random: ``O = A (x W_v^T + b_v)`` with ``A = softmax(R)`` (or ``A = R`` when
    ``softmax=False``), ``R: (max_len, max_len)`` a parameter, trained or frozen. ``(B, n, d)``.
    """

    def __init__(self, max_len: int, d: int, *, trainable: bool = True, softmax: bool = True):
        super().__init__()
        self.max_len = check_int("max_len", max_len)
        self.d = check_int("d", d)
        self.softmax = bool(softmax)
        scale = 1.0 if softmax else 1.0 / math.sqrt(max_len)
        self.R = nn.Parameter(torch.randn(max_len, max_len) * scale, requires_grad=trainable)
        self.value = nn.Linear(d, d)

    def mixing_matrix(self) -> torch.Tensor:
        """The input-independent token-mixing matrix ``A: (n, n)``."""
        return torch.softmax(self.R, dim=-1) if self.softmax else self.R

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_x(x, self.d, self.max_len)
        return self.mixing_matrix().to(x.dtype) @ self.value(x)


class SynthesizerDense(nn.Module):
    """Synthesizer-Dense: row i of the logits from token i alone,
    ``B_i = W_2 relu(W_1 x_i + b_1) + b_2 in R^n``, ``O = softmax(B) (x W_v^T + b_v)``. ``(B, n, d)``.
    """

    def __init__(self, d: int, max_len: int, hidden: int = 32):
        super().__init__()
        self.d = check_int("d", d)
        self.max_len = check_int("max_len", max_len)
        check_int("hidden", hidden)
        self.f1 = nn.Linear(d, hidden)
        self.f2 = nn.Linear(hidden, max_len)
        self.value = nn.Linear(d, d)

    def mixing_matrix(self, x: torch.Tensor) -> torch.Tensor:
        """``A(x): (B, n, n)``; row i depends on ``x_i`` only."""
        _check_x(x, self.d, self.max_len)
        return torch.softmax(self.f2(torch.relu(self.f1(x))), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mixing_matrix(x) @ self.value(x)


# --------------------------------------------------------------------------- MLP-Mixer / ResMLP


class LinearTokenMixing(nn.Module):
    """One linear layer along the tokens (ResMLP's token mixing; "MLP-Mixer = Synthesizer-Random
    without softmax"): ``O[:, i, c] = sum_j W[i, j] x[:, j, c] + b_i``, ``W: (max_len, max_len)``.
    """

    def __init__(self, max_len: int):
        super().__init__()
        self.max_len = check_int("max_len", max_len)
        self.mix = nn.Linear(max_len, max_len)

    def mixing_matrix(self) -> torch.Tensor:
        """``A = W: (n, n)``."""
        return self.mix.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_x(x, None, self.max_len)
        return _tokens_linear(x, self.mix)


class MixerTokenMLP(nn.Module):
    """MLP-Mixer's token-mixing MLP, shared over channels:
    ``O = W_2 act(W_1 X + b_1) + b_2`` along the token axis, ``W_1: (D_S, n)``, ``W_2: (n, D_S)``.
    """

    def __init__(self, max_len: int, d_token_hidden: int, *, act: str = "gelu"):
        super().__init__()
        self.max_len = check_int("max_len", max_len)
        check_int("d_token_hidden", d_token_hidden)
        check_choice("act", act, _ACTS)
        self.fc1 = nn.Linear(max_len, d_token_hidden)
        self.act = _ACTS[act]()
        self.fc2 = nn.Linear(d_token_hidden, max_len)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_x(x, None, self.max_len)
        return _tokens_linear(self.act(_tokens_linear(x, self.fc1)), self.fc2)


class MixerBlock(nn.Module):
    """An MLP-Mixer layer (also "a stack of feed-forward layers", ResMLP up to its affine norm):
    ``x + TokenMLP(LN(x))``, then ``+ ChannelMLP(LN(.))``. ``(B, max_len, d) -> (B, max_len, d)``.
    """

    def __init__(self, max_len: int, d: int, d_token_hidden: int, d_channel_hidden: int):
        super().__init__()
        self.d = check_int("d", d)
        check_int("d_channel_hidden", d_channel_hidden)
        self.max_len = max_len
        self.norm1 = nn.LayerNorm(d)
        self.token_mlp = MixerTokenMLP(max_len, d_token_hidden)
        self.norm2 = nn.LayerNorm(d)
        self.channel_mlp = nn.Sequential(
            nn.Linear(d, d_channel_hidden), nn.GELU(), nn.Linear(d_channel_hidden, d)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_x(x, self.d, self.max_len)
        x = x + self.token_mlp(self.norm1(x))
        return x + self.channel_mlp(self.norm2(x))


# --------------------------------------------------------------------------- External Attention


class ExternalAttention(nn.Module):
    """External attention: keys and values are ``S`` learned memory rows, ``(B, n, d) -> (B, n, d)``.

    ``logits = x M_k^T: (B, n, S)``; ``norm="double"`` (the paper's): softmax over the *token*
    axis, then divide by the sum over the memory axis; ``norm="row"``: softmax over the memory
    axis (each token then transformed on its own). ``O = A M_v``, ``M_k, M_v: (S, d)``.
    Cost O(n S d), any n.
    """

    def __init__(self, d: int, *, S: int = 64, norm: str = "double"):
        super().__init__()
        self.d = check_int("d", d)
        self.S = check_int("S", S)
        check_choice("norm", norm, ("double", "row"))
        self.norm = norm
        self.mk = nn.Linear(d, S, bias=False)  # weight = M_k: (S, d)
        self.mv = nn.Linear(S, d, bias=False)  # weight = M_v^T: (d, S)

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """The normalised ``A: (B, n, S)``."""
        _check_x(x, self.d)
        work = torch.promote_types(x.dtype, torch.float32)
        logits = self.mk(x).to(work)
        if self.norm == "row":
            return torch.softmax(logits, dim=-1).to(x.dtype)
        a = torch.softmax(logits, dim=-2)
        a = a / a.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(work).tiny)
        return a.to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mv(self.weights(x))


# --------------------------------------------------------------------------- FNet


def dft_matrix(n: int, *, dtype: torch.dtype = torch.complex128, device=None) -> torch.Tensor:
    """The DFT matrix ``F_n[j, k] = exp(-2 pi i (j k mod n) / n)``: ``(n, n)`` complex.

    The product ``j k`` is reduced mod n in integers before the phase is formed (in float64), so
    a complex64 matrix keeps full accuracy even for n in the thousands.
    """
    check_int("n", n)
    if not dtype.is_complex:
        raise TypeError(f"dtype: expected a complex dtype, got {dtype}")
    j = torch.arange(n, dtype=torch.int64, device=device)
    jk = (j[:, None] * j[None, :]) % n
    phase = -2.0 * math.pi * jk.to(torch.float64) / n
    return torch.polar(torch.ones_like(phase), phase).to(dtype)


def fnet_as_attention(n: int, *, dtype: torch.dtype = torch.complex128, device=None):
    """FNet's sequence transform written as attention: ``A = exp(-i (2 pi / n) Q K^T)``, elementwise,
    with ``Q = K = (0, 1, ..., n-1)^T: (n, 1)`` and no normalisation. Returns ``A: (n, n)`` complex
    (equal to ``dft_matrix(n)``); the logits ``Q K^T`` are reduced mod n first (exactly, in int64).
    """
    check_int("n", n)
    q = torch.arange(n, dtype=torch.int64, device=device)[:, None]
    logits = (q @ q.T) % n  # B = Q K^T, reduced mod n (exp(-2 pi i B / n) has period n)
    phase = -2.0 * math.pi * logits.to(torch.float64) / n
    a = torch.exp(1j * phase.to(torch.complex128))
    return a.to(dtype)


class FNetMixing(nn.Module):
    """FNet's parameter-free token mixer: ``Y = Re(F_n X F_d) = Re(FFT2(X))`` over the sequence and
    hidden axes; ``(B, n, d) -> (B, n, d)``, any n. ``impl="fft"`` uses ``torch.fft.fft2``,
    ``impl="dft"`` the real matmuls ``C_n X C_d - S_n X S_d`` (``F = C - i S``). No 1/sqrt(n)
    normalisation (as in the paper). Half-precision input is transformed in float32.
    """

    def __init__(self, *, impl: str = "fft"):
        super().__init__()
        check_choice("impl", impl, ("fft", "dft"))
        self.impl = impl

    def extra_repr(self) -> str:
        return f"impl={self.impl!r}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_x(x)
        work = torch.promote_types(x.dtype, torch.float32)
        xw = x.to(work)
        if self.impl == "fft":
            return torch.fft.fft2(xw, dim=(-2, -1)).real.to(x.dtype)
        cdt = torch.complex128 if work == torch.float64 else torch.complex64
        fn = dft_matrix(x.shape[-2], dtype=cdt, device=x.device)
        fd = dft_matrix(x.shape[-1], dtype=cdt, device=x.device)
        cn, sn = fn.real, -fn.imag
        cd, sd = fd.real, -fd.imag
        return (cn @ xw @ cd - sn @ xw @ sd).to(x.dtype)


# --------------------------------------------------------------------------- gMLP / aMLP


class TinyAttention(nn.Module):
    """aMLP's single-head attention ``(B, n, d_in) -> (B, n, d_out)`` of size ``d_attn``:
    ``softmax(q k^T / sqrt(d_attn)) v`` then a projection to ``d_out``.
    """

    def __init__(self, d_in: int, d_out: int, d_attn: int = 64, *, causal: bool = False):
        super().__init__()
        check_int("d_in", d_in)
        check_int("d_out", d_out)
        check_int("d_attn", d_attn)
        self.qkv = nn.Linear(d_in, 3 * d_attn)
        self.out = nn.Linear(d_attn, d_out)
        self.causal = causal

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return self.out(F.scaled_dot_product_attention(q, k, v, is_causal=self.causal))


class SpatialGatingUnit(nn.Module):
    """gMLP's spatial gating unit: ``z: (B, n, d_ffn) -> (B, n, d_ffn / 2)``.

    ``[Z_1, Z_2] = z`` (channel halves), ``Y = W LN(Z_2) + b`` along tokens (``W: (n, n)``,
    initialised uniformly in ``±init_eps / n`` and ``b = 1``, so the unit starts as ``O ≈ Z_1``),
    ``O = Z_1 ⊙ (Y + TinyAttn(attn_input))`` (aMLP, when ``tiny_attn`` is given).
    ``causal=True`` keeps only the lower triangle of ``W`` (for language modelling).
    """

    def __init__(
        self,
        d_ffn: int,
        max_len: int,
        *,
        init_eps: float = 1e-3,
        tiny_attn: nn.Module | None = None,
        causal: bool = False,
    ):
        super().__init__()
        check_int("d_ffn", d_ffn, minimum=2)
        if d_ffn % 2:
            raise ValueError(f"d_ffn: expected an even width (it is split in halves), got {d_ffn}")
        self.max_len = check_int("max_len", max_len)
        if not (isinstance(init_eps, (int, float)) and init_eps >= 0):
            raise ValueError(f"init_eps: expected a number >= 0, got {init_eps!r}")
        self.d_ffn = d_ffn
        self.norm = nn.LayerNorm(d_ffn // 2)
        self.spatial = nn.Linear(max_len, max_len)
        eps = init_eps / max_len
        with torch.no_grad():
            self.spatial.weight.uniform_(-eps, eps)
            self.spatial.bias.fill_(1.0)
        self.tiny_attn = tiny_attn
        self.causal = causal

    def mixing_matrix(self) -> torch.Tensor:
        """``W: (n, n)`` (lower-triangular part when causal)."""
        w = self.spatial.weight
        return w.tril() if self.causal else w

    def forward(self, z: torch.Tensor, *, attn_input: torch.Tensor | None = None) -> torch.Tensor:
        _check_x(z, self.d_ffn, self.max_len)
        z1, z2 = z.chunk(2, dim=-1)
        z2 = self.norm(z2)
        y = self.mixing_matrix().to(z.dtype) @ z2 + self.spatial.bias.to(z.dtype)[:, None]
        if self.tiny_attn is not None:
            y = y + self.tiny_attn(z if attn_input is None else attn_input)
        return z1 * y


class GMLPBlock(nn.Module):
    """A gMLP (``tiny_attn=True``: aMLP) block ``(B, max_len, d) -> (B, max_len, d)``:
    ``x + W_out SGU(GELU(W_in LN(x)))``, ``W_in: (d_ffn, d)``, ``W_out: (d, d_ffn / 2)``.
    """

    def __init__(
        self,
        d: int,
        d_ffn: int,
        max_len: int,
        *,
        tiny_attn: bool = False,
        d_attn: int = 64,
        causal: bool = False,
    ):
        super().__init__()
        self.d = check_int("d", d)
        self.max_len = max_len
        self.norm = nn.LayerNorm(d)
        self.proj_in = nn.Linear(d, d_ffn)
        attn = TinyAttention(d, d_ffn // 2, d_attn, causal=causal) if tiny_attn else None
        self.sgu = SpatialGatingUnit(d_ffn, max_len, tiny_attn=attn, causal=causal)
        self.proj_out = nn.Linear(d_ffn // 2, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_x(x, self.d, self.max_len)
        h = self.norm(x)
        return x + self.proj_out(self.sgu(F.gelu(self.proj_in(h)), attn_input=h))


# --------------------------------------------------------------------------- convolutions


def dilated_receptive_field(kernel: int, layers: int, *, dilation_base: int = 2) -> int:
    """Tokens seen by one output of ``layers`` stacked convolutions with dilations
    ``1, b, b^2, ...``: ``1 + (kernel - 1) * (b^L - 1) / (b - 1)`` (``1 + (k-1)(2^L - 1)`` for b=2).
    """
    check_int("kernel", kernel)
    check_int("layers", layers)
    check_int("dilation_base", dilation_base)
    return 1 + (kernel - 1) * sum(dilation_base**i for i in range(layers))


class DilatedConvMixer(nn.Module):
    """A stack of 1-D convolutions along the tokens with dilations ``1, b, b^2, ...``:
    ``(B, n, d) -> (B, n, d)``, any n (zero padding), GELU between layers.

    Layer l: ``y_i = sum_t W_t x_{i + (t - c) b^l} + bias`` with ``W_t: (d, d)``, ``c = (k-1)/2``
    (centred, odd ``kernel``) or ``c = k - 1`` (``causal=True``: only past tokens). One output
    sees ``dilated_receptive_field(kernel, layers)`` tokens: wide but finite.
    """

    def __init__(
        self,
        d: int,
        *,
        kernel: int = 3,
        layers: int = 4,
        dilation_base: int = 2,
        causal: bool = False,
    ):
        super().__init__()
        self.d = check_int("d", d)
        check_int("kernel", kernel)
        check_int("layers", layers)
        check_int("dilation_base", dilation_base)
        if not causal and kernel % 2 == 0:
            raise ValueError(f"kernel: a centred convolution needs an odd kernel, got {kernel}")
        self.kernel, self.causal = kernel, causal
        self.dilations = [dilation_base**i for i in range(layers)]
        self.convs = nn.ModuleList(nn.Conv1d(d, d, kernel, dilation=dil) for dil in self.dilations)

    @property
    def receptive_field(self) -> int:
        return 1 + (self.kernel - 1) * sum(self.dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_x(x, self.d)
        h = x.transpose(-1, -2)  # (B, d, n)
        for i, (conv, dil) in enumerate(zip(self.convs, self.dilations, strict=True)):
            total = dil * (self.kernel - 1)
            left = total if self.causal else total // 2
            h = conv(F.pad(h, (left, total - left)))
            if i < len(self.convs) - 1:
                h = F.gelu(h)
        return h.transpose(-1, -2)


# --------------------------------------------------------------------------- diagnostics


def token_mixing_jacobian(module, x: torch.Tensor) -> torch.Tensor:
    """How much output token i depends on input token j: ``J[i, j] = ||d y_i / d x_j||_F``.

    ``x: (n, d)`` or ``(1, n, d)``; ``module`` maps ``(1, n, d) -> (1, n, d')``. Returns ``(n, n)``
    (the absolute mixing matrix for a linear token mixer applied to every channel alike,
    scaled by ``sqrt(d)``). Uses ``torch.func.jacrev``.
    """
    check_tensor("x", x, floating=True)
    if x.dim() == 3:
        if x.shape[0] != 1:
            raise ValueError(f"x: expected one sequence (n, d) or (1, n, d), got {tuple(x.shape)}")
        x = x[0]
    if x.dim() != 2:
        raise ValueError(f"x: expected shape (n, d) or (1, n, d), got {tuple(x.shape)}")
    if not callable(module):
        raise TypeError(f"module: expected a callable, got {type(module).__name__}")

    def f(t):
        return module(t[None])[0]

    with warnings.catch_warnings():  # vmap over SDPA's backward falls back to a loop: harmless
        warnings.filterwarnings("ignore", message="There is a performance drop")
        jac = torch.func.jacrev(f)(x.detach())  # (n, d', n, d)
    return jac.detach().pow(2).sum(dim=(1, 3)).sqrt()


def permutation_equivariance_error(module, x: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """Relative equivariance error ``max|f(P x) - P f(x)| / max|f(x)|`` (0-dim tensor).

    ``x: (B, n, d)``, ``perm: (n,)`` a permutation of the token axis. Exactly 0 (up to round-off)
    for attention without positions; large for mixers with position-specific parameters.
    """
    check_tensor("x", x, floating=True)
    check_tensor("perm", perm)
    if x.dim() != 3:
        raise ValueError(f"x: expected shape (B, n, d), got {tuple(x.shape)}")
    n = x.shape[1]
    if perm.shape != (n,) or not torch.equal(
        torch.sort(perm.cpu()).values, torch.arange(n, dtype=perm.dtype)
    ):
        raise ValueError(f"perm: expected a permutation of range({n}), got {perm.tolist()}")
    perm = perm.to(x.device)
    with torch.no_grad():
        fx = module(x)
        fpx = module(x[:, perm])
    scale = fx.abs().amax().clamp_min(torch.finfo(fx.dtype).tiny)
    return (fpx - fx[:, perm]).abs().amax() / scale
