"""A small, readable Transformer: multi-head attention, feed-forward, blocks and a tiny model.

Conventions: activations ``(B, n, d)``, per-head tensors ``(B, h, n, d_head)``;
masks are bool with True = may attend, shape ``(n_q, n_k)``, ``(B, n_q, n_k)`` (broadcast over
heads) or ``(B, h, n_q, n_k)``; weights are ``nn.Linear`` layers, i.e. ``(d_out, d_in)`` maps
applied as ``x @ W.T + b``. Every module follows the device and dtype of its parameters.

Attention implemented here (scale ``1/sqrt(d_head)``)::

    softmax:  O = softmax(Q K^T / sqrt(d_head) + log M) V                    (M the bool mask)
    linear:   O_i = sum_j M_ij phi(q_i).phi(k_j) v_j / sum_j M_ij phi(q_i).phi(k_j)

Derived in the book: attention as a token-mixing matrix in
book/positions/non-transformer-mixers.ipynb, linear attention and its rank in
book/positions/performer-linear-attention.ipynb, the cost of a layer in
book/positions/linear-transformer-cost.ipynb, widening ``TinyTransformer`` without changing its
function in book/positions/lossless-expansion.ipynb.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from kexue_lib._core import check_choice, check_int, check_positive, check_tensor
from kexue_lib.attention import elu_plus_one, softmax_attention

__all__ = [
    "FeedForward",
    "MultiHeadAttention",
    "TinyTransformer",
    "TransformerBlock",
    "causal_bool_mask",
    "elu_plus_one",
    "sinusoidal_table",
]

_ATTENTIONS = ("softmax", "linear")
_IMPLS = ("sdpa", "explicit")
_ACTS = {"gelu": nn.GELU, "relu": nn.ReLU}
_POS = ("learned", "sinusoidal", "rope", "none")
_HEADS = ("lm", "mlm", "none")
EMBED_STD_SCALE = 0.5  # embedding tables are N(0, (EMBED_STD_SCALE / sqrt(d))^2)


def causal_bool_mask(n_q: int, n_k: int | None = None, *, device=None) -> torch.Tensor:
    """Lower-triangular bool mask ``(n_q, n_k)``: query i may attend key j iff
    ``j <= i + n_k - n_q``.

    With ``n_k == n_q`` this is ``j <= i``. (kexue_lib.attention.causal_mask is the square case.)
    """
    check_int("n_q", n_q)
    n_k = n_q if n_k is None else check_int("n_k", n_k)
    return torch.ones(n_q, n_k, dtype=torch.bool, device=device).tril(n_k - n_q)


def sinusoidal_table(
    n: int, d: int, *, base: float = 1e4, dtype=torch.float32, device=None
) -> torch.Tensor:
    """Sinusoidal position table ``(n, d)``, interleaved: ``P[p, 2i] = sin(p theta_i)``,
    ``P[p, 2i+1] = cos(p theta_i)`` with ``theta_i = base^(-2i/d)`` (Vaswani et al. 2017).

    Angles are formed in float64 from ``position_encoding.sinusoidal_frequencies``; only sin/cos
    are cast to ``dtype``.
    """
    from kexue_lib.position_encoding import sinusoidal_frequencies

    check_int("n", n)
    theta = sinusoidal_frequencies(d, base, dtype=torch.float64, device=device)
    ang = torch.arange(n, dtype=torch.float64, device=device)[:, None] * theta[None, :]
    table = torch.stack([ang.sin(), ang.cos()], dim=-1).reshape(n, d)
    return table.to(dtype)


def _normalize_mask(attn_mask, n_q: int, n_k: int, causal: bool, device) -> torch.Tensor | None:
    """A bool mask broadcastable to ``(B, h, n_q, n_k)``, or None when nothing is masked."""
    mask = None
    if attn_mask is not None:
        check_tensor("attn_mask", attn_mask)
        if attn_mask.dtype != torch.bool:
            raise TypeError(
                f"attn_mask: expected a bool tensor (True = may attend), got dtype "
                f"{attn_mask.dtype}"
            )
        if attn_mask.dim() not in (2, 3, 4) or tuple(attn_mask.shape[-2:]) != (n_q, n_k):
            raise ValueError(
                f"attn_mask: expected shape (n_q, n_k), (B, n_q, n_k) or "
                f"(B, h, n_q, n_k) with (n_q, n_k) = ({n_q}, {n_k}), got "
                f"{tuple(attn_mask.shape)}"
            )
        mask = attn_mask.unsqueeze(1) if attn_mask.dim() == 3 else attn_mask
        mask = mask.to(device)
    if causal:
        tri = causal_bool_mask(n_q, n_k, device=device)
        mask = tri if mask is None else mask & tri
    return mask


class _RopeRotary(nn.Module):
    """Standard RoPE on per-head tensors through ``kexue_lib.rope.apply_rope`` (imported lazily)."""

    def __init__(self, *, base: float = 1e4, layout: str = "interleaved"):
        super().__init__()
        self.base = base
        self.layout = layout

    def forward(self, x: torch.Tensor, positions: torch.Tensor | None) -> torch.Tensor:
        from kexue_lib.rope import apply_rope

        return apply_rope(x, positions, base=self.base, layout=self.layout)

    def extra_repr(self) -> str:
        return f"base={self.base:g}, layout={self.layout!r}"


class MultiHeadAttention(nn.Module):
    """Multi-head self-attention with separate q/k/v/o projections: ``x: (B, n, d) -> (B, n, d)``.

    ``q, k = x W_q^T, x W_k^T`` have ``key_mult * d`` features (``key_mult * d / heads`` per head),
    ``v = x W_v^T`` has ``d``; per head ``O_h = softmax(q_h k_h^T / sqrt(d_qk) + log M) v_h``
    (``attention="softmax"``) or the normalised linear form with a positive ``feature_map``
    (``attention="linear"``, default ``elu(x) + 1``, denominator ``+ 1e-6``, fp32 accumulation);
    output ``concat_h(O_h) W_o^T``.

    ``impl="sdpa"`` calls ``F.scaled_dot_product_attention`` (softmax) or the O(n) prefix-sum form
    (linear); ``impl="explicit"`` builds the ``(B, h, n, n)`` weights (for teaching and masks).
    ``rotary``: None, True (RoPE via ``kexue_lib.rope.apply_rope``) or a callable
    ``rotary(x: (B, h, n, d_qk), positions) -> (B, h, n, d_qk)`` applied to q and k.
    A query row whose mask allows no key outputs zeros (the behaviour of SDPA).
    """

    def __init__(
        self,
        d: int,
        heads: int,
        *,
        bias: bool = True,
        rotary=None,
        attention: str = "softmax",
        feature_map: Callable | None = None,
        key_mult: int = 1,
        impl: str = "sdpa",
    ):
        super().__init__()
        check_int("d", d)
        check_int("heads", heads)
        check_int("key_mult", key_mult)
        check_choice("attention", attention, _ATTENTIONS)
        check_choice("impl", impl, _IMPLS)
        if d % heads:
            raise ValueError(f"heads: expected a divisor of d={d}, got {heads}")
        if feature_map is not None and attention != "linear":
            raise ValueError(
                f"feature_map: only used with attention='linear', got attention={attention!r}"
            )
        if rotary is not None and attention == "linear":
            raise ValueError(
                "rotary: not supported with attention='linear' here (use "
                "kexue_lib.attention.linear_attention's rope options)"
            )
        if rotary is True:
            rotary = _RopeRotary()
        elif rotary is not None and not callable(rotary):
            raise TypeError(
                f"rotary: expected None, True or a callable, got {type(rotary).__name__}"
            )
        self.d, self.heads, self.key_mult = d, heads, key_mult
        self.d_qk = key_mult * d // heads
        self.d_v = d // heads
        if rotary is not None and self.d_qk % 2:
            raise ValueError(f"rotary: needs an even per-head size, got d_qk={self.d_qk}")
        self.attention, self.impl = attention, impl
        self.feature_map = feature_map if feature_map is not None else elu_plus_one
        self.rotary = rotary
        self.q = nn.Linear(d, key_mult * d, bias=bias)
        self.k = nn.Linear(d, key_mult * d, bias=bias)
        self.v = nn.Linear(d, d, bias=bias)
        self.o = nn.Linear(d, d, bias=bias)

    def extra_repr(self) -> str:
        return (
            f"d={self.d}, heads={self.heads}, key_mult={self.key_mult}, "
            f"attention={self.attention!r}, impl={self.impl!r}"
        )

    def _split(self, t: torch.Tensor, dh: int) -> torch.Tensor:
        B, n, _ = t.shape
        return t.view(B, n, self.heads, dh).transpose(1, 2)

    def forward(
        self,
        x: torch.Tensor,
        *,
        attn_mask: torch.Tensor | None = None,
        causal: bool = False,
        positions: torch.Tensor | None = None,
        return_weights: bool = False,
    ):
        """``x: (B, n, d)`` -> ``(B, n, d)``; with ``return_weights`` also ``(B, h, n, n)``.

        ``positions``: ``(n,)`` or ``(B, n)`` integer positions for ``rotary`` (default 0..n-1).
        """
        check_tensor("x", x, floating=True)
        if x.dim() != 3 or x.shape[-1] != self.d:
            raise ValueError(f"x: expected shape (B, n, {self.d}), got {tuple(x.shape)}")
        B, n, _ = x.shape
        mask = _normalize_mask(attn_mask, n, n, causal, x.device)
        q = self._split(self.q(x), self.d_qk)
        k = self._split(self.k(x), self.d_qk)
        v = self._split(self.v(x), self.d_v)
        if self.rotary is not None:
            pos = positions
            if pos is not None:
                check_tensor("positions", pos)
                if pos.shape[-1] != n or pos.dim() not in (1, 2):
                    raise ValueError(
                        f"positions: expected shape ({n},) or (B, {n}), got {tuple(pos.shape)}"
                    )
                if pos.dim() == 2:
                    pos = pos[:, None, :]
            q, k = self.rotary(q, pos), self.rotary(k, pos)
        if self.attention == "softmax":
            out, w = self._softmax(q, k, v, mask, return_weights)
        else:
            out, w = self._linear(q, k, v, mask, causal, return_weights, attn_mask is not None)
        out = self.o(out.transpose(1, 2).reshape(B, n, self.d))
        return (out, w) if return_weights else out

    def _softmax(self, q, k, v, mask, return_weights):
        scale = 1.0 / math.sqrt(self.d_qk)
        if self.impl == "sdpa" and not return_weights:
            return softmax_attention(q, k, v, attn_mask=mask, scale=scale), None
        # explicit (B, h, n, n) weights, float32 accumulation; fully masked rows give zeros
        return softmax_attention(q, k, v, attn_mask=mask, scale=scale, return_weights=True)

    def _linear(self, q, k, v, mask, causal, return_weights, user_mask):
        work = torch.promote_types(q.dtype, torch.float32)
        fq, fk, vv = (self.feature_map(q).to(work), self.feature_map(k).to(work), v.to(work))
        eps = 1e-6
        if self.impl == "explicit" or return_weights:
            s = fq @ fk.transpose(-1, -2)
            if mask is not None:
                s = s.masked_fill(~mask, 0.0)
            w = s / (s.sum(-1, keepdim=True) + eps)
            return (w @ vv).to(q.dtype), w.to(q.dtype)
        if user_mask:
            raise ValueError(
                "attn_mask: the O(n) linear attention (impl='sdpa') takes only "
                "causal=True; use impl='explicit' for an arbitrary mask"
            )
        if causal:
            kv = torch.cumsum(fk.unsqueeze(-1) * vv.unsqueeze(-2), dim=-3)  # (B, h, n, m, dv)
            num = torch.einsum("bhnm,bhnmv->bhnv", fq, kv)
            den = (fq * torch.cumsum(fk, dim=-2)).sum(-1, keepdim=True)
        else:
            num = fq @ (fk.transpose(-1, -2) @ vv)
            den = fq @ fk.sum(-2).unsqueeze(-1)
        return (num / (den + eps)).to(q.dtype), None


class FeedForward(nn.Module):
    """Position-wise feed-forward ``(..., d) -> (..., d)``: ``act(x W_1^T + b_1) W_2^T + b_2``,
    hidden width ``mult * d``."""

    def __init__(self, d: int, *, mult: int = 4, act: str = "gelu"):
        super().__init__()
        check_int("d", d)
        check_int("mult", mult)
        check_choice("act", act, _ACTS)
        self.fc1 = nn.Linear(d, mult * d)
        self.act = _ACTS[act]()
        self.fc2 = nn.Linear(mult * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def _accepts(module: nn.Module, name: str) -> bool:
    try:
        params = inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


class TransformerBlock(nn.Module):
    """One Transformer layer ``(B, n, d) -> (B, n, d)`` with a pluggable token mixer.

    Pre-LN (``norm_first=True``): ``x + M(LN(x))``, then ``x + FFN(LN(x))``.
    Post-LN: ``LN(x + M(x))``, then ``LN(x + FFN(x))``. ``M`` is ``MultiHeadAttention(d, heads)``
    unless ``token_mixer`` gives any module mapping ``(B, n, d) -> (B, n, d)`` (mask, causal and
    positions are passed on only when its ``forward`` accepts them).
    Matches ``nn.TransformerEncoderLayer(batch_first=True)`` with the same weights.
    """

    def __init__(
        self,
        d: int,
        heads: int,
        *,
        token_mixer: nn.Module | None = None,
        norm_first: bool = True,
        ln_eps: float = 1e-5,
        ffn_mult: int = 4,
        act: str = "gelu",
        dropout: float = 0.0,
    ):
        super().__init__()
        check_int("d", d)
        check_int("heads", heads)
        check_positive("ln_eps", ln_eps)
        check_positive("dropout", dropout, strict=False)
        if dropout >= 1:
            raise ValueError(f"dropout: expected a number in [0, 1), got {dropout!r}")
        if token_mixer is not None and not isinstance(token_mixer, nn.Module):
            raise TypeError(f"token_mixer: expected an nn.Module, got {type(token_mixer).__name__}")
        self.mixer = token_mixer if token_mixer is not None else MultiHeadAttention(d, heads)
        self.ln1 = nn.LayerNorm(d, eps=ln_eps)
        self.ln2 = nn.LayerNorm(d, eps=ln_eps)
        self.ffn = FeedForward(d, mult=ffn_mult, act=act)
        self.drop1 = nn.Dropout(dropout)
        self.drop2 = nn.Dropout(dropout)
        self.norm_first = norm_first
        self.d = d

    def _mix(self, x, attn_mask, causal, positions):
        kw = {}
        for name, value, default in (
            ("attn_mask", attn_mask, None),
            ("causal", causal, False),
            ("positions", positions, None),
        ):
            if value is default:
                continue
            if not _accepts(self.mixer, name):
                raise ValueError(
                    f"{name}: the token mixer {type(self.mixer).__name__} does not take {name!r}"
                )
            kw[name] = value
        return self.mixer(x, **kw)

    def forward(
        self,
        x: torch.Tensor,
        *,
        attn_mask: torch.Tensor | None = None,
        causal: bool = False,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        check_tensor("x", x, floating=True)
        if x.dim() != 3 or x.shape[-1] != self.d:
            raise ValueError(f"x: expected shape (B, n, {self.d}), got {tuple(x.shape)}")
        if self.norm_first:
            x = x + self.drop1(self._mix(self.ln1(x), attn_mask, causal, positions))
            return x + self.drop2(self.ffn(self.ln2(x)))
        x = self.ln1(x + self.drop1(self._mix(x, attn_mask, causal, positions)))
        return self.ln2(x + self.drop2(self.ffn(x)))


class TinyTransformer(nn.Module):
    """A small Transformer over token ids: ``tokens: (B, n) -> logits (B, n, vocab)``.

    ``h_0 = E[tokens] + P[positions] + S[segment_ids]``, ``h_l = block_l(h_{l-1})``;
    pre-LN models apply a final LayerNorm. Positions: ``"learned"`` (a table of ``max_len``
    rows), ``"sinusoidal"`` (fixed interleaved sin/cos table), ``"rope"`` (rotary on q and k in
    every block, no additive table), ``"none"``. Heads: ``"lm"`` (``h W^T``, W tied to E when
    ``tie_embeddings``), ``"mlm"`` (BERT's dense-GELU-LayerNorm transform, then the tied
    decoder with a bias), ``"none"`` (returns hidden states ``(B, n, d)``).
    ``token_mixer``: optional factory ``layer_index -> nn.Module`` replacing attention.
    ``.blocks`` (an ``nn.ModuleList``) is public for per-layer hooks.
    """

    def __init__(
        self,
        vocab: int,
        d: int,
        heads: int,
        layers: int,
        *,
        max_len: int,
        pos: str = "learned",
        segments: int = 0,
        head: str = "lm",
        tie_embeddings: bool = True,
        norm_first: bool = True,
        ffn_mult: int = 4,
        act: str = "gelu",
        dropout: float = 0.0,
        token_mixer: Callable[[int], nn.Module] | None = None,
        rope_base: float = 1e4,
    ):
        super().__init__()
        check_int("vocab", vocab)
        check_int("d", d)
        check_int("layers", layers)
        check_int("max_len", max_len)
        check_int("segments", segments, minimum=0)
        check_choice("pos", pos, _POS)
        check_choice("head", head, _HEADS)
        if pos == "sinusoidal" and d % 2:
            raise ValueError(f"d: pos='sinusoidal' needs an even d, got {d}")
        if token_mixer is not None and not callable(token_mixer):
            raise TypeError(
                "token_mixer: expected a callable layer_index -> nn.Module, got "
                f"{type(token_mixer).__name__}"
            )
        if pos == "rope" and token_mixer is not None:
            raise ValueError(
                "pos: 'rope' acts inside attention and cannot be combined with token_mixer"
            )
        self.vocab, self.d, self.max_len, self.pos, self.head_kind = vocab, d, max_len, pos, head
        self.tok_emb = nn.Embedding(vocab, d)
        self.pos_emb = nn.Embedding(max_len, d) if pos == "learned" else None
        if pos == "sinusoidal":
            self.register_buffer("pos_table", sinusoidal_table(max_len, d), persistent=False)
        else:
            self.pos_table = None
        self.seg_emb = nn.Embedding(segments, d) if segments else None
        blocks = []
        for i in range(layers):
            mixer = None
            if token_mixer is not None:
                mixer = token_mixer(i)
            elif pos == "rope":
                mixer = MultiHeadAttention(d, heads, rotary=_RopeRotary(base=rope_base))
            blocks.append(
                TransformerBlock(
                    d,
                    heads,
                    token_mixer=mixer,
                    norm_first=norm_first,
                    ffn_mult=ffn_mult,
                    act=act,
                    dropout=dropout,
                )
            )
        self.blocks = nn.ModuleList(blocks)
        self.ln_f = nn.LayerNorm(d) if norm_first else nn.Identity()
        self.reset_embeddings()
        self.mlm_transform = None
        self.lm_head = None
        if head == "mlm":
            self.mlm_transform = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.LayerNorm(d))
        if head != "none":
            self.lm_head = nn.Linear(d, vocab, bias=(head == "mlm"))
            if tie_embeddings:
                self.lm_head.weight = self.tok_emb.weight

    def reset_embeddings(self) -> None:
        """Draw every embedding table (tokens, learned positions, segments) from
        ``N(0, EMBED_STD_SCALE**2 / d)``.

        PyTorch's ``nn.Embedding`` default is ``N(0, 1)``: rows of norm ``sqrt(d)``. With the
        output layer tied to the token table, the step-0 logits ``LN(h) . e_v`` then have
        standard deviation about ``d`` and a fresh model over a vocabulary of 8 starts near 20
        nats instead of ``ln 8``. At standard deviation ``0.5 / sqrt(d)`` (what GPT-2's and
        BERT's 0.02 is at ``d = 768``) the tied logits have standard deviation 0.5 and the
        step-0 cross-entropy on random tokens is within about 0.15 nats of ``ln V``.
        """
        std = EMBED_STD_SCALE / math.sqrt(self.d)
        with torch.no_grad():
            for table in (self.tok_emb, self.pos_emb, self.seg_emb):
                if table is not None:
                    nn.init.normal_(table.weight, 0.0, std)

    def embed(
        self,
        tokens: torch.Tensor,
        *,
        segment_ids: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The input representation ``h_0: (B, n, d)``."""
        check_tensor("tokens", tokens)
        if tokens.dim() != 2 or tokens.dtype not in (torch.int64, torch.int32):
            raise ValueError(
                f"tokens: expected an integer tensor of shape (B, n), got shape "
                f"{tuple(tokens.shape)} and dtype {tokens.dtype}"
            )
        B, n = tokens.shape
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.vocab):
            raise ValueError(
                f"tokens: expected ids in [0, {self.vocab}), got range "
                f"[{int(tokens.min())}, {int(tokens.max())}]"
            )
        h = self.tok_emb(tokens)
        if self.pos in ("learned", "sinusoidal"):
            if positions is None:
                if n > self.max_len:
                    raise ValueError(
                        f"tokens: expected at most max_len={self.max_len} positions, got length {n}"
                    )
                positions = torch.arange(n, device=tokens.device)
            elif positions.numel() and (
                int(positions.min()) < 0 or int(positions.max()) >= self.max_len
            ):
                raise ValueError(
                    f"positions: expected values in [0, {self.max_len}), got "
                    f"[{int(positions.min())}, {int(positions.max())}]"
                )
            table = self.pos_emb.weight if self.pos == "learned" else self.pos_table
            h = h + table.to(h.dtype)[positions]
        if self.seg_emb is not None:
            if segment_ids is None:
                segment_ids = torch.zeros_like(tokens)
            if segment_ids.shape != tokens.shape:
                raise ValueError(
                    f"segment_ids: expected shape {tuple(tokens.shape)}, got "
                    f"{tuple(segment_ids.shape)}"
                )
            if segment_ids.numel() and (
                int(segment_ids.min()) < 0 or int(segment_ids.max()) >= self.seg_emb.num_embeddings
            ):
                raise ValueError(
                    f"segment_ids: expected ids in [0, "
                    f"{self.seg_emb.num_embeddings}), got a value outside"
                )
            h = h + self.seg_emb(segment_ids)
        elif segment_ids is not None:
            raise ValueError("segment_ids: the model was built with segments=0")
        return h

    def forward(
        self,
        tokens: torch.Tensor,
        *,
        segment_ids: torch.Tensor | None = None,
        attn_mask: torch.Tensor | Sequence[torch.Tensor | None] | None = None,
        causal: bool = False,
        positions: torch.Tensor | None = None,
        return_hidden: bool = False,
    ):
        """``tokens: (B, n)`` -> logits ``(B, n, vocab)`` (or hidden ``(B, n, d)`` if head="none").

        ``attn_mask``: one bool mask for all layers, or a list with one per layer (None = no mask);
        ``causal=True`` adds the lower-triangular mask. ``positions``: ``(n,)`` or ``(B, n)``.
        With ``return_hidden`` also returns the list ``[h_0, h_1, ..., h_L]`` (before ``ln_f``).
        """
        h = self.embed(tokens, segment_ids=segment_ids, positions=positions)
        L = len(self.blocks)
        if isinstance(attn_mask, (list, tuple)):
            if len(attn_mask) != L:
                raise ValueError(
                    f"attn_mask: expected one mask per layer ({L}), got {len(attn_mask)}"
                )
            masks = list(attn_mask)
        else:
            masks = [attn_mask] * L
        rope_pos = positions if self.pos == "rope" else None
        hidden = [h]
        for block, m in zip(self.blocks, masks, strict=True):
            h = block(h, attn_mask=m, causal=causal, positions=rope_pos)
            hidden.append(h)
        out = self.ln_f(h)
        if self.mlm_transform is not None:
            out = self.mlm_transform(out)
        if self.lm_head is not None:
            out = self.lm_head(out)
        return (out, hidden) if return_hidden else out
