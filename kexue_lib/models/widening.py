"""Function-preserving width expansion of a Transformer (kexue.fm 8444; Net2Net-style widening).

Every residual-stream vector ``x: (..., d)`` of the small model is represented in the wide
model by ``R_k x / sqrt(k)``, where ``R_k`` repeats features *interleaved*
(``[x1, x1, x2, x2, ...]`` for ``k = 2``; with ``group = g`` whole blocks of ``g`` features are
repeated, ``g = 2`` keeps RoPE pairs together, ``g = d`` is the tiled ``[x, x]`` layout).
A dense map ``y = x W^T + b`` whose input arrives as ``a R x`` and whose output must leave as
``c R y`` gets ``W~ = c / (k a) * W[i // k, j // k]`` and ``b~ = c R b`` (the ``k`` copies of
each input feature are summed). :data:`WIDENING_RULES` lists ``(a, c)`` as powers of ``k`` for
every role; the scalar factors reproduce the table of the post (corrected FFN-out bias).

Linear maps are ``(d_out, d_in)`` like ``nn.Linear.weight``; everything keeps the caller's
device and dtype.

Derived rule by rule in book/positions/lossless-expansion.ipynb.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from kexue_lib._core import check_choice, check_positive, check_tensor, seeded
from kexue_lib.models.transformer import (
    FeedForward,
    MultiHeadAttention,
    TinyTransformer,
    TransformerBlock,
)

__all__ = [
    "WIDENING_RULES",
    "RepeatedLadderRotary",
    "duplicate_heads",
    "repeat_features",
    "unrepeat_features",
    "widen_embedding",
    "widen_layernorm",
    "widen_linear",
    "widen_model",
    "widen_torch_encoder_layer",
    "widening_factors",
    "widening_scales",
]

#: role -> (exponent of k of the input representation scale ``a``, exponent for the output
#: scale ``c``). Weight factor ``c / (k a)``, bias factor ``c`` (see :func:`widening_factors`).
WIDENING_RULES: dict[str, tuple[float, float]] = {
    # residual stream -> residual stream (attention v and o, any dense between LayerNorms)
    "dense": (-0.5, -0.5),
    # q and k when scores are divided by sqrt(head size): one extra k^(1/4) on each side
    "qk": (-0.5, -0.25),
    # dense followed by a non-homogeneous activation: output must be *pure* repetition
    "ffn_in": (-0.5, 0.0),
    # dense after the activation: input is pure repetition, output goes back to R y / sqrt(k)
    "ffn_out": (0.0, -0.5),
    # BERT's MLM transform dense (followed by GELU and a LayerNorm): same as ffn_in
    "mlm_dense": (-0.5, 0.0),
    # head duplication: q, k, v copies are exact (no temperature factor), o sums k copies
    "head_copy_in": (-0.5, 0.0),
    "head_copy_out": (0.0, -0.5),
    # an untied output matrix (vocab rows are not widened): logits unchanged
    "logits": (-0.5, 0.0),
}

_LAYOUTS = ("interleave", "block")
_FFN_OUT_BIAS = ("sqrt_k", "k")
_ROPE_LADDERS = ("standard", "repeat")


def _check_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"k: expected an int >= 1, got {type(k).__name__} {k!r}")
    if k < 1:
        raise ValueError(f"k: expected an int >= 1, got {k}")
    return k


def _check_group(name: str, group, width: int) -> int:
    if isinstance(group, bool) or not isinstance(group, int) or group < 1:
        raise ValueError(f"{name}: expected an int >= 1, got {group!r}")
    if width % group:
        raise ValueError(f"{name}: expected a divisor of the feature size {width}, got {group}")
    return group


def repeat_features(x: torch.Tensor, k: int, *, group: int = 1) -> torch.Tensor:
    """Interleaved repetition ``R_k``: ``x: (..., d) -> (..., k d)``.

    The last axis is cut into blocks of ``group`` features and each block is repeated ``k``
    times in place: ``group=1`` gives ``[x1, x1, x2, x2, ...]``, ``group=2`` gives
    ``[x1, x2, x1, x2, x3, x4, x3, x4, ...]`` (RoPE pairs stay pairs), ``group=d`` is the tiled
    ``[x, x]``. No scaling is applied (divide by ``sqrt(k)`` for the isometric version).
    """
    check_tensor("x", x)
    k = _check_k(k)
    if x.dim() < 1:
        raise ValueError(f"x: expected at least one dimension (..., d), got shape {tuple(x.shape)}")
    d = x.shape[-1]
    group = _check_group("group", group, d)
    blocks = x.unflatten(-1, (d // group, 1, group))
    return blocks.expand(*blocks.shape[:-2], k, group).flatten(-3)


def unrepeat_features(y: torch.Tensor, k: int, *, group: int = 1) -> torch.Tensor:
    """Mean of the ``k`` copies, the left inverse of :func:`repeat_features`:
    ``y: (..., k d) -> (..., d)``.

    The de-duplication read-out of a wide model: a hidden state ``R_k h / sqrt(k)`` is read
    back as ``sqrt(k) * unrepeat_features(y, k)``.
    """
    check_tensor("y", y)
    k = _check_k(k)
    if y.dim() < 1 or y.shape[-1] % k:
        raise ValueError(
            f"y: expected a last dimension divisible by k={k}, got shape {tuple(y.shape)}"
        )
    D = y.shape[-1]
    group = _check_group("group", group, D // k)
    return y.unflatten(-1, (D // (k * group), k, group)).mean(-2).flatten(-2)


def widening_scales(role: str, k: int) -> tuple[float, float]:
    """``(in_scale, out_scale)`` of a role in :data:`WIDENING_RULES` for factor ``k``."""
    check_choice("role", role, WIDENING_RULES)
    k = _check_k(k)
    a, c = WIDENING_RULES[role]
    return float(k) ** a, float(k) ** c


def widening_factors(role: str, k: int) -> tuple[float, float]:
    """``(weight factor, bias factor)`` multiplying the repeated ``W`` and ``b`` of a role.

    ``weight = out_scale / (k * in_scale)``, ``bias = out_scale``; for ``k = 2`` the ``"qk"``
    role gives ``(2^(1/4) / 2, 2^(1/4) / sqrt(2))``, ``"ffn_out"`` gives
    ``(1 / (2 sqrt(2)), 1 / sqrt(2))``.
    """
    a, c = widening_scales(role, k)
    return c / (k * a), c


def widen_linear(
    W: torch.Tensor,
    b: torch.Tensor | None,
    k: int,
    *,
    in_scale: float,
    out_scale: float,
    group_in: int = 1,
    group_out: int = 1,
    sides: str = "both",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Widen a dense map ``W: (out, in)``, ``b: (out,) | None`` -> ``((k out, k in), (k out,))``.

    If the input arrives as ``in_scale * R_k x`` and the output must be ``out_scale * R_k y``
    with ``y = x W^T + b``: ``W~[i, j] = out_scale / (k in_scale) * W[i // k, j // k]`` and
    ``b~ = out_scale * R_k b`` (indices through ``group_out`` / ``group_in`` blocks).
    ``sides="in"`` widens only the input axis (output rows kept: an untied vocabulary matrix),
    ``"out"`` only the output axis (then the ``k`` in the weight factor is 1).
    """
    check_tensor("W", W, floating=True)
    if W.dim() != 2:
        raise ValueError(f"W: expected a (out, in) matrix, got shape {tuple(W.shape)}")
    k = _check_k(k)
    check_positive("in_scale", in_scale)
    check_positive("out_scale", out_scale)
    check_choice("sides", sides, ("both", "in", "out"))
    if b is not None:
        check_tensor("b", b, floating=True)
        if b.shape != (W.shape[0],):
            raise ValueError(f"b: expected shape ({W.shape[0]},), got {tuple(b.shape)}")
    k_in = k if sides in ("both", "in") else 1
    k_out = k if sides in ("both", "out") else 1
    Wt = repeat_features(W.T, k_out, group=group_out).T  # (k_out out, in)
    Wt = repeat_features(Wt, k_in, group=group_in)  # (k_out out, k_in in)
    Wt = Wt * (float(out_scale) / (k_in * float(in_scale)))
    bt = None
    if b is not None:
        bt = repeat_features(b, k_out, group=group_out) * float(out_scale)
    return Wt.contiguous(), bt


def widen_layernorm(
    ln: nn.LayerNorm, k: int, *, group: int = 1, adjust_eps: bool = True
) -> nn.LayerNorm:
    """Widen ``nn.LayerNorm(d)`` to ``nn.LayerNorm(k d)``: ``gamma~ = R gamma / sqrt(k)``,
    ``beta~ = R beta / sqrt(k)``, ``eps~ = eps / k``.

    With input ``R x / sqrt(k)`` the mean and standard deviation both shrink by ``sqrt(k)``, so
    ``(x~ - mu~) / sqrt(var~ + eps / k) = R (x - mu) / sqrt(var + eps)`` exactly and the output is
    ``R LN(x) / sqrt(k)``. ``adjust_eps=False`` keeps ``eps`` (right when the input is pure
    repetition ``R x``, e.g. BERT's MLM-head LayerNorm; a mistake otherwise). A LayerNorm
    without affine parameters becomes one with ``gamma = 1 / sqrt(k)``.
    """
    if not isinstance(ln, nn.LayerNorm):
        raise TypeError(f"ln: expected an nn.LayerNorm, got {type(ln).__name__}")
    k = _check_k(k)
    if len(ln.normalized_shape) != 1:
        raise ValueError(
            f"ln: expected a LayerNorm over the last axis only, got normalized_shape "
            f"{tuple(ln.normalized_shape)}"
        )
    d = ln.normalized_shape[0]
    group = _check_group("group", group, d)
    ref = next(iter(ln.parameters()), None)
    kw = {"device": ref.device, "dtype": ref.dtype} if ref is not None else {}
    has_bias = getattr(ln, "bias", None) is not None
    out = nn.LayerNorm(k * d, eps=ln.eps / k if adjust_eps else ln.eps, bias=has_bias, **kw)
    s = 1.0 / math.sqrt(k)
    with torch.no_grad():
        if ln.weight is not None:
            out.weight.copy_(repeat_features(ln.weight, k, group=group) * s)
        else:
            out.weight.fill_(s)
        if has_bias:
            out.bias.copy_(repeat_features(ln.bias, k, group=group) * s)
    return out


def widen_embedding(emb: nn.Embedding, k: int, *, group: int = 1) -> nn.Embedding:
    """Widen ``nn.Embedding(N, d)`` to ``(N, k d)``: every row ``e -> R_k e / sqrt(k)``
    (norm preserving: ``|R_k e| / sqrt(k) = |e|``)."""
    if not isinstance(emb, nn.Embedding):
        raise TypeError(f"emb: expected an nn.Embedding, got {type(emb).__name__}")
    k = _check_k(k)
    W = emb.weight
    out = nn.Embedding(
        emb.num_embeddings,
        k * emb.embedding_dim,
        padding_idx=emb.padding_idx,
        device=W.device,
        dtype=W.dtype,
    )
    with torch.no_grad():
        out.weight.copy_(repeat_features(W, k, group=group) / math.sqrt(k))
    return out


class RepeatedLadderRotary(nn.Module):
    """RoPE for a head widened with pair repetition: pair ``j`` of the wide head rotates with
    the small head's frequency ``theta_{j // k}`` (``theta_i = base^(-2i/d_head)``), so the wide
    head is an exact copy of the small one. ``x: (B, h, n, k d_head) -> same``."""

    def __init__(self, d_head: int, k: int, *, base: float = 1e4):
        super().__init__()
        from kexue_lib.position_encoding import sinusoidal_frequencies

        k = _check_k(k)
        self.d_head, self.k, self.base = d_head, k, base
        freqs = sinusoidal_frequencies(d_head, base, dtype=torch.float64)
        self.register_buffer("freqs", freqs.repeat_interleave(k), persistent=False)

    def forward(self, x: torch.Tensor, positions: torch.Tensor | None) -> torch.Tensor:
        from kexue_lib.rope import apply_rope

        return apply_rope(x, positions, freqs=self.freqs.to(device=x.device, dtype=torch.float64))

    def extra_repr(self) -> str:
        return f"d_head={self.d_head}, k={self.k}, base={self.base:g}"


def _model_config(model: TinyTransformer) -> dict:
    """Constructor arguments of a TinyTransformer, read back from its modules."""
    if not isinstance(model, TinyTransformer):
        raise TypeError(f"model: expected a TinyTransformer, got {type(model).__name__}")
    blocks = list(model.blocks)
    for i, blk in enumerate(blocks):
        mix = blk.mixer
        if not isinstance(blk, TransformerBlock) or type(mix) is not MultiHeadAttention:
            raise ValueError(
                f"model: block {i} has token mixer {type(mix).__name__}; only the built-in "
                "MultiHeadAttention can be widened"
            )
        if mix.attention != "softmax" or mix.key_mult != 1:
            raise ValueError(
                f"model: block {i} uses attention={mix.attention!r}, key_mult={mix.key_mult}; "
                "expected softmax attention with key_mult=1"
            )
        if not isinstance(blk.ffn, FeedForward):
            raise ValueError(f"model: block {i} has an unsupported feed-forward module")
    b0 = blocks[0]
    act = "gelu" if isinstance(b0.ffn.act, nn.GELU) else "relu"
    tied = model.lm_head is not None and model.lm_head.weight is model.tok_emb.weight
    rope_base = 1e4
    if model.pos == "rope":
        rope_base = float(getattr(b0.mixer.rotary, "base", 1e4))
    return dict(
        vocab=model.vocab,
        d=model.d,
        heads=b0.mixer.heads,
        layers=len(blocks),
        max_len=model.max_len,
        pos=model.pos,
        segments=model.seg_emb.num_embeddings if model.seg_emb is not None else 0,
        head=model.head_kind,
        tie_embeddings=tied,
        norm_first=b0.norm_first,
        ffn_mult=b0.ffn.fc1.out_features // model.d,
        act=act,
        dropout=b0.drop1.p,
        rope_base=rope_base,
    )


def _copy_linear(dst: nn.Linear, W, b) -> None:
    with torch.no_grad():
        dst.weight.copy_(W)
        if dst.bias is not None:
            dst.bias.copy_(b)


def _widen_lin(src: nn.Linear, dst: nn.Linear, k, role, *, group_in=1, group_out=1, sides="both"):
    a, c = widening_scales(role, k)
    W, b = widen_linear(
        src.weight,
        src.bias,
        k,
        in_scale=a,
        out_scale=c,
        group_in=group_in,
        group_out=group_out,
        sides=sides,
    )
    _copy_linear(dst, W, b)


def _copy_ln(dst: nn.LayerNorm, src: nn.LayerNorm) -> None:
    with torch.no_grad():
        dst.weight.copy_(src.weight)
        if dst.bias is not None:
            dst.bias.copy_(src.bias)
    dst.eps = src.eps


def _widen(
    model: TinyTransformer,
    k: int,
    *,
    attention_mode: str,
    activation_aware: bool = True,
    ffn_out_bias: str = "sqrt_k",
    qk_temperature: bool = True,
    layout: str = "interleave",
    adjust_eps: bool = True,
    rope_ladder: str = "repeat",
) -> TinyTransformer:
    cfg = _model_config(model)
    k = _check_k(k)
    check_choice("layout", layout, _LAYOUTS)
    check_choice("ffn_out_bias", ffn_out_bias, _FFN_OUT_BIAS)
    check_choice("rope_ladder", rope_ladder, _ROPE_LADDERS)
    for name, v in (
        ("activation_aware", activation_aware),
        ("qk_temperature", qk_temperature),
        ("adjust_eps", adjust_eps),
    ):
        if not isinstance(v, bool):
            raise TypeError(f"{name}: expected a bool, got {type(v).__name__}")
    d, h = cfg["d"], cfg["heads"]
    dh = d // h
    F_ = cfg["ffn_mult"] * d
    heads_big = h * k if attention_mode == "duplicate" else h
    ref = next(model.parameters())
    with seeded(0):  # the random init is overwritten; keep the caller's RNG stream untouched
        big = TinyTransformer(
            cfg["vocab"],
            k * d,
            heads_big,
            cfg["layers"],
            max_len=cfg["max_len"],
            pos=cfg["pos"],
            segments=cfg["segments"],
            head=cfg["head"],
            tie_embeddings=cfg["tie_embeddings"],
            norm_first=cfg["norm_first"],
            ffn_mult=cfg["ffn_mult"],
            act=cfg["act"],
            dropout=cfg["dropout"],
            rope_base=cfg["rope_base"],
        )
    big = big.to(device=ref.device, dtype=ref.dtype)
    block = layout == "block"
    gh = d if block else 1  # hidden-stream group
    gf = F_ if block else 1  # FFN hidden group
    rope = cfg["pos"] == "rope"
    gqk = d if block else (2 if rope else 1)
    s = 1.0 / math.sqrt(k)

    def emb(src, dst):
        with torch.no_grad():
            dst.weight.copy_(repeat_features(src.weight, k, group=gh) * s)

    def ln(src, dst, adjust=adjust_eps):
        _copy_ln(dst, widen_layernorm(src, k, group=gh, adjust_eps=adjust))

    emb(model.tok_emb, big.tok_emb)
    if model.pos_emb is not None:
        emb(model.pos_emb, big.pos_emb)
    if model.pos_table is not None:
        big.pos_table = repeat_features(model.pos_table, k, group=gh) * s
    if model.seg_emb is not None:
        emb(model.seg_emb, big.seg_emb)

    for sb, bb in zip(model.blocks, big.blocks, strict=True):
        ln(sb.ln1, bb.ln1)
        ln(sb.ln2, bb.ln2)
        sm, bm = sb.mixer, bb.mixer
        if attention_mode == "duplicate":
            for name in ("q", "k", "v"):
                _widen_lin(getattr(sm, name), getattr(bm, name), k, "head_copy_in", group_out=dh)
            _widen_lin(sm.o, bm.o, k, "head_copy_out", group_in=dh)
        else:
            qk_role = "qk" if qk_temperature else "dense"
            _widen_lin(sm.q, bm.q, k, qk_role, group_in=gh, group_out=gqk)
            _widen_lin(sm.k, bm.k, k, qk_role, group_in=gh, group_out=gqk)
            _widen_lin(sm.v, bm.v, k, "dense", group_in=gh, group_out=gh)
            _widen_lin(sm.o, bm.o, k, "dense", group_in=gh, group_out=gh)
            if rope and rope_ladder == "repeat":
                bm.rotary = RepeatedLadderRotary(dh, k, base=cfg["rope_base"]).to(ref.device)
        r_in, r_out = ("ffn_in", "ffn_out") if activation_aware else ("dense", "dense")
        _widen_lin(sb.ffn.fc1, bb.ffn.fc1, k, r_in, group_in=gh, group_out=gf)
        _widen_lin(sb.ffn.fc2, bb.ffn.fc2, k, r_out, group_in=gf, group_out=gh)
        if ffn_out_bias == "k":  # the post's table: b/k instead of b/sqrt(k)
            with torch.no_grad():
                bb.ffn.fc2.bias.mul_(s)

    if isinstance(model.ln_f, nn.LayerNorm):
        ln(model.ln_f, big.ln_f)
    if model.mlm_transform is not None:
        r = "mlm_dense" if activation_aware else "dense"
        _widen_lin(model.mlm_transform[0], big.mlm_transform[0], k, r, group_in=gh, group_out=gh)
        ln(model.mlm_transform[2], big.mlm_transform[2], adjust=False)
    if model.lm_head is not None:
        if cfg["tie_embeddings"]:
            if model.lm_head.bias is not None:
                with torch.no_grad():
                    big.lm_head.bias.copy_(model.lm_head.bias)
        else:
            _widen_lin(model.lm_head, big.lm_head, k, "logits", group_in=gh, sides="in")
    big.train(model.training)
    return big


def widen_model(
    model: TinyTransformer,
    k: int,
    *,
    activation_aware: bool = True,
    ffn_out_bias: str = "sqrt_k",
    qk_temperature: bool = True,
    layout: str = "interleave",
    adjust_eps: bool = True,
    rope_ladder: str = "repeat",
) -> TinyTransformer:
    """A ``k`` times wider copy of a TinyTransformer computing the same function.

    Same layers and heads, hidden size ``k d`` (head size ``k d / h``). Every residual vector
    becomes ``R_k h / sqrt(k)``; tied (or widened untied) logits are *identical*; with
    ``head="none"`` the hidden output is read back by ``sqrt(k) * unrepeat_features(y, k)``.
    The defaults are exact (float64 round-off). Each flag reproduces one mistake:

    - ``activation_aware=False``: the plain dense rule in front of GELU (FFN, MLM head), i.e.
      the wide model computes ``sqrt(k) GELU(z / sqrt(k))`` where the small one had ``GELU(z)``
      (harmless for ReLU).
    - ``ffn_out_bias="k"``: ``b2 / k`` (the post's summary table for ``k = 2``) instead of
      ``b2 / sqrt(k)``: acts like the small model with ``b2 / sqrt(k)``.
    - ``qk_temperature=False``: no ``k^(1/4)`` on q and k: every score is divided by
      ``sqrt(k)`` (softmax temperature ``sqrt(k)``).
    - ``layout="block"``: tiled ``[x, x]`` repetition; the head reshape mixes heads (exact only
      for one head).
    - ``adjust_eps=False``: LayerNorm keeps ``eps``; acts like the small model with ``k eps``.
    - ``rope_ladder="standard"`` (RoPE models): the wide head uses the frequency ladder of its
      own size, ``theta'_j = base^(-2j / (k d_head))``; only pairs ``j = k i`` keep
      ``theta_i``, the other copies turn slower, so the widening is only approximate. The
      default ``"repeat"`` installs :class:`RepeatedLadderRotary` (exact, but the wide model's
      RoPE is then no longer the standard one); :func:`duplicate_heads` is exact *and* standard.
    """
    return _widen(
        model,
        k,
        attention_mode="widen",
        activation_aware=activation_aware,
        ffn_out_bias=ffn_out_bias,
        qk_temperature=qk_temperature,
        layout=layout,
        adjust_eps=adjust_eps,
        rope_ladder=rope_ladder,
    )


def duplicate_heads(model: TinyTransformer, k: int) -> TinyTransformer:
    """Widen by ``k`` keeping the head size: ``h -> k h`` heads, each small head copied ``k``
    times. ``W_q, W_k, W_v``: input side ``1/sqrt(k)`` of the dense rule, output copies exact
    (weight factor ``1/sqrt(k)``, bias unchanged, no temperature factor); ``W_o`` sums ``k``
    identical heads (weight factor ``1/(k sqrt(k))``, bias ``/ sqrt(k)``). The rest as in
    :func:`widen_model`. Exact with standard RoPE, since each head keeps its size and ladder.
    """
    return _widen(model, k, attention_mode="duplicate")


def _torch_activation(act):
    import torch.nn.functional as F

    if act is F.relu or isinstance(act, nn.ReLU):
        return "relu"
    if act is F.gelu or (isinstance(act, nn.GELU) and act.approximate == "none"):
        return "gelu"
    return copy.deepcopy(act)


def widen_torch_encoder_layer(
    layer: nn.TransformerEncoderLayer, k: int
) -> nn.TransformerEncoderLayer:
    """Widen PyTorch's ``nn.TransformerEncoderLayer(E, h, F)`` to ``(k E, h, k F)``, exactly.

    The stacked ``in_proj_weight: (3E, E)`` is widened as three ``(E, E)`` blocks (q and k
    with the ``k^(1/4)`` temperature rule, v with the dense rule); ``out_proj`` dense;
    ``linear1``/``linear2`` the activation-aware FFN pair; ``norm1``/``norm2`` with
    ``eps / k``. Output on ``R_k x / sqrt(k)`` is ``R_k y / sqrt(k)`` for ``norm_first`` True
    or False and any activation.
    """
    if not isinstance(layer, nn.TransformerEncoderLayer):
        raise TypeError(
            f"layer: expected an nn.TransformerEncoderLayer, got {type(layer).__name__}"
        )
    k = _check_k(k)
    mha = layer.self_attn
    if not mha._qkv_same_embed_dim or mha.in_proj_weight is None:
        raise ValueError(
            "layer: expected self_attn with a stacked in_proj_weight (kdim = vdim = E)"
        )
    E, h = mha.embed_dim, mha.num_heads
    Fdim = layer.linear1.out_features
    W = mha.in_proj_weight
    bias = layer.linear1.bias is not None
    with seeded(0):
        big = nn.TransformerEncoderLayer(
            k * E,
            h,
            dim_feedforward=k * Fdim,
            dropout=layer.dropout.p,
            activation=_torch_activation(layer.activation),
            layer_norm_eps=layer.norm1.eps / k,
            batch_first=mha.batch_first,
            norm_first=layer.norm_first,
            bias=bias,
            device=W.device,
            dtype=W.dtype,
        )
    bm = big.self_attn
    Ws = W.chunk(3, dim=0)
    bs = mha.in_proj_bias.chunk(3) if mha.in_proj_bias is not None else (None,) * 3
    parts = []
    for Wi, bi, role in zip(Ws, bs, ("qk", "qk", "dense"), strict=True):
        a, c = widening_scales(role, k)
        parts.append(widen_linear(Wi, bi, k, in_scale=a, out_scale=c))
    with torch.no_grad():
        bm.in_proj_weight.copy_(torch.cat([p[0] for p in parts]))
        if bm.in_proj_bias is not None:
            bm.in_proj_bias.copy_(torch.cat([p[1] for p in parts]))
    _widen_lin(mha.out_proj, bm.out_proj, k, "dense")
    _widen_lin(layer.linear1, big.linear1, k, "ffn_in")
    _widen_lin(layer.linear2, big.linear2, k, "ffn_out")
    _copy_ln(big.norm1, widen_layernorm(layer.norm1, k))
    _copy_ln(big.norm2, widen_layernorm(layer.norm2, k))
    big.train(layer.training)
    return big
