"""Attention logits under six position encodings: absolute, Shaw, Transformer-XL, T5, DeBERTa, RoPE.

Every module maps ``x: (B, n, D)`` (and optional ``positions: (n,)`` or ``(B, n)``, default
``0 .. n-1``) to pre-softmax logits ``(B, h, n, n)``, row ``i`` = query, column ``j`` = key.
Relative positions are ``key - query = pos_j - pos_i``; a post written with
``i - j`` reads the same tables mirrored. The modules differ only in which of the four terms
of ``(x_i + p_i) W_Q W_K^T (x_j + p_j)^T`` they keep and what replaces them.

Derived and compared in book/positions/position-encoding-zoo.ipynb.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from kexue_lib._core import check_positive, check_tensor
from kexue_lib.position_encoding import (
    clip_relative,
    sinusoidal_position_encoding,
    t5_relative_position_bucket,
)

__all__ = [
    "AbsoluteScore",
    "DeBERTaScore",
    "RoPEScore",
    "ShawScore",
    "T5BiasScore",
    "TransformerXLScore",
    "shift_equivariance_error",
]


class _Score(nn.Module):
    """Shared parts: query/key projections ``(D, D)``, head split, positions, relative indices."""

    def __init__(self, D: int, heads: int):
        super().__init__()
        check_positive("D", D, integer=True)
        check_positive("heads", heads, integer=True)
        if D % heads:
            raise ValueError(f"heads: expected a divisor of D={D}, got {heads}")
        self.D, self.heads, self.d_head = D, heads, D // heads
        self.scale = 1.0 / math.sqrt(self.d_head)
        self.W_Q = nn.Linear(D, D, bias=False)
        self.W_K = nn.Linear(D, D, bias=False)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        """``(B, n, D) -> (B, h, n, d_head)``."""
        B, n, _ = t.shape
        return t.reshape(B, n, self.heads, self.d_head).transpose(1, 2)

    def _check_x(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor("x", x, floating=True)
        if x.dim() != 3 or x.shape[-1] != self.D:
            raise ValueError(f"x: expected shape (B, n, {self.D}), got {tuple(x.shape)}")
        return x

    def _positions(self, x: torch.Tensor, positions, *, integer: bool) -> torch.Tensor:
        """``(B or 1, n)`` positions on ``x``'s device."""
        n = x.shape[1]
        if positions is None:
            return torch.arange(n, device=x.device)[None]
        check_tensor("positions", positions)
        if positions.dim() not in (1, 2) or positions.shape[-1] != n:
            raise ValueError(
                f"positions: expected shape (n,) or (B, n) with n={n}, got {tuple(positions.shape)}"
            )
        if positions.dim() == 2 and positions.shape[0] not in (1, x.shape[0]):
            raise ValueError(
                f"positions: expected a batch of 1 or {x.shape[0]}, got {positions.shape[0]}"
            )
        if integer and (positions.is_floating_point() or positions.is_complex()):
            raise TypeError(
                f"positions: expected an integer tensor for this scheme, "
                f"got dtype {positions.dtype}"
            )
        pos = positions.to(x.device)
        return pos[None] if pos.dim() == 1 else pos

    @staticmethod
    def _rel(pos: torch.Tensor) -> torch.Tensor:
        """``(B, n) -> (B, n, n)``, entry ``[b, i, j] = pos[b, j] - pos[b, i]`` (key − query)."""
        return pos[:, None, :] - pos[:, :, None]

    @staticmethod
    def _gather(table_scores: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """``table_scores: (B, h, n, R)``, ``idx: (B' , n, n)`` rows -> ``(B, h, n, n)``."""
        B, h, n, _ = table_scores.shape
        idx = idx[:, None].expand(B, h, n, idx.shape[-1])
        return torch.gather(table_scores, -1, idx)

    def content(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-head queries and keys ``(B, h, n, d_head)`` of the content ``x``."""
        return self._split(self.W_Q(x)), self._split(self.W_K(x))


class AbsoluteScore(_Score):
    """``(x_i + p_i) W_Q W_K^T (x_j + p_j)^T / sqrt(d_head)``: ``(B, n, D) -> (B, h, n, n)``.

    ``table="sinusoidal"`` (Vaswani, any position) or ``"learned"`` (a ``(max_len, D)``
    parameter, BERT-style; positions must lie in ``[0, max_len)``). ``combine="mul"`` uses
    ``x ⊙ p`` instead of ``x + p`` (the multiplicative variant).
    """

    def __init__(
        self,
        D: int,
        heads: int,
        *,
        table: str = "sinusoidal",
        max_len: int = 512,
        base: float = 1e4,
        combine: str = "add",
    ):
        super().__init__(D, heads)
        if table not in ("sinusoidal", "learned"):
            raise ValueError(f"table: expected 'sinusoidal' or 'learned', got {table!r}")
        if combine not in ("add", "mul"):
            raise ValueError(f"combine: expected 'add' or 'mul', got {combine!r}")
        check_positive("max_len", max_len, integer=True)
        self.table, self.max_len, self.base, self.combine = table, max_len, float(base), combine
        if table == "learned":
            self.P = nn.Parameter(torch.randn(max_len, D) * 0.5)
        if table == "sinusoidal" and D % 2:
            raise ValueError(f"D: expected an even size for a sinusoidal table, got {D}")

    def encodings(self, pos: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """``p`` at ``pos: (B, n)`` -> ``(B, n, D)``."""
        if self.table == "sinusoidal":
            return sinusoidal_position_encoding(pos, self.D, base=self.base, dtype=dtype)
        if pos.min() < 0 or pos.max() >= self.max_len:
            raise ValueError(
                f"positions: expected values in [0, {self.max_len}) for a learned "
                f"table, got [{int(pos.min())}, {int(pos.max())}]"
            )
        return self.P[pos].to(dtype)

    def forward(self, x: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        self._check_x(x)
        pos = self._positions(x, positions, integer=self.table == "learned")
        p = self.encodings(pos, x.dtype)
        h = x + p if self.combine == "add" else x * p
        q, k = self.content(h)
        return q @ k.transpose(-1, -2) * self.scale


class ShawScore(_Score):
    """Shaw et al.: ``x_i W_Q (x_j W_K + a^K_{clip(j-i)})^T / sqrt(d_head)``: ``-> (B, h, n, n)``.

    ``a^K, a^V``: ``(2 max_rel + 1, d_head)`` tables shared by the heads; relative positions
    are clipped to ``[-max_rel, max_rel]``, so a finite table serves any length.
    :meth:`attend` adds the value-side term ``sum_j a_ij (x_j W_V + a^V_{clip(j-i)})``.
    Computed as ``Q (a^K)^T`` then a gather: ``O(n (2k+1) d)``, never ``(n, n, d)``.
    """

    def __init__(self, D: int, heads: int, *, max_rel: int = 16):
        super().__init__(D, heads)
        check_positive("max_rel", max_rel, strict=False, integer=True)
        self.max_rel = max_rel
        self.rel_k = nn.Parameter(torch.randn(2 * max_rel + 1, self.d_head))
        self.rel_v = nn.Parameter(torch.randn(2 * max_rel + 1, self.d_head))
        self.W_V = nn.Linear(D, D, bias=False)

    def rel_index(self, pos: torch.Tensor) -> torch.Tensor:
        return clip_relative(self._rel(pos), -self.max_rel, self.max_rel)

    def forward(self, x: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        self._check_x(x)
        idx = self.rel_index(self._positions(x, positions, integer=True))
        q, k = self.content(x)
        pos_term = self._gather(q @ self.rel_k.to(q.dtype).T, idx)
        return (q @ k.transpose(-1, -2) + pos_term) * self.scale

    def attend(
        self, x: torch.Tensor, weights: torch.Tensor, positions: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``o_i = sum_j w_ij (x_j W_V + a^V_{clip(j-i)})``: weights ``(B, h, n, n)`` -> ``(B, h, n, d_head)``."""
        self._check_x(x)
        B, n = x.shape[:2]
        if weights.shape != (B, self.heads, n, n):
            raise ValueError(
                f"weights: expected shape {(B, self.heads, n, n)}, got {tuple(weights.shape)}"
            )
        idx = self.rel_index(self._positions(x, positions, integer=True))
        v = self._split(self.W_V(x))
        per_bucket = torch.zeros(
            B, self.heads, n, 2 * self.max_rel + 1, dtype=weights.dtype, device=weights.device
        )
        per_bucket.scatter_add_(-1, idx[:, None].expand(B, self.heads, n, n), weights)
        return weights @ v + per_bucket @ self.rel_v.to(weights.dtype)


class TransformerXLScore(_Score):
    """Transformer-XL: ``[(q_i + u) k_j + (q_i + v) W_{K,R} R_{j-i}] / sqrt(d_head)``: ``-> (B, h, n, n)``.

    ``R_r`` is the sinusoidal encoding of the (unclipped) relative position ``r = j - i``
    with its own key projection ``W_{K,R}``; ``u, v: (h, d_head)`` replace the query-side
    absolute encodings. (XL indexes ``R_{i-j}``; flipping the sign only negates the sine
    slots, a fixed map that ``W_{K,R}`` absorbs.) Computed on the distinct ``r`` then gathered.
    """

    def __init__(self, D: int, heads: int, *, base: float = 1e4):
        super().__init__(D, heads)
        if D % 2:
            raise ValueError(f"D: expected an even size for sinusoidal R, got {D}")
        self.base = float(base)
        self.W_KR = nn.Linear(D, D, bias=False)
        self.u = nn.Parameter(torch.randn(heads, self.d_head))
        self.v = nn.Parameter(torch.randn(heads, self.d_head))

    def forward(self, x: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        self._check_x(x)
        pos = self._positions(x, positions, integer=False)
        rel = self._rel(pos)
        if rel.is_floating_point():  # real positions: one R per (i, j)
            R = sinusoidal_position_encoding(rel, self.D, base=self.base, dtype=x.dtype)
            Rk = self.W_KR(R).reshape(*rel.shape, self.heads, self.d_head)  # (B', n, n, h, dh)
            q, k = self.content(x)
            bd = torch.einsum("bhid,bijhd->bhij", q + self.v[:, None].to(q.dtype), Rk)
        else:
            lo, hi = int(rel.min()), int(rel.max())
            r = torch.arange(lo, hi + 1, device=x.device)
            R = sinusoidal_position_encoding(r, self.D, base=self.base, dtype=x.dtype)
            Rk = self.W_KR(R).reshape(-1, self.heads, self.d_head).transpose(0, 1)  # (h, L, dh)
            q, k = self.content(x)
            bd = self._gather((q + self.v[:, None].to(q.dtype)) @ Rk.transpose(-1, -2), rel - lo)
        ac = (q + self.u[:, None].to(q.dtype)) @ k.transpose(-1, -2)
        return (ac + bd) * self.scale


class T5BiasScore(_Score):
    """T5: ``x_i W_Q W_K^T x_j^T / sqrt(d_head) + beta_h[bucket(j - i)]``: ``-> (B, h, n, n)``.

    One learned scalar per head and bucket (``num_buckets``); buckets are exact near 0,
    logarithmic further out and saturate (at 91 with the defaults, not at ``max_distance``).
    """

    def __init__(
        self,
        D: int,
        heads: int,
        *,
        num_buckets: int = 32,
        max_distance: int = 128,
        bidirectional: bool = True,
    ):
        super().__init__(D, heads)
        t5_relative_position_bucket(
            torch.zeros(1, dtype=torch.long),
            bidirectional=bidirectional,
            num_buckets=num_buckets,
            max_distance=max_distance,
        )
        self.num_buckets, self.max_distance = num_buckets, max_distance
        self.bidirectional = bidirectional
        self.bias = nn.Parameter(torch.randn(num_buckets, heads))

    def position_bias(self, pos: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """``(B, n) -> (B, h, n, n)`` bias table."""
        b = t5_relative_position_bucket(
            self._rel(pos),
            bidirectional=self.bidirectional,
            num_buckets=self.num_buckets,
            max_distance=self.max_distance,
        )
        return self.bias.to(dtype)[b].permute(0, 3, 1, 2)

    def forward(self, x: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        self._check_x(x)
        pos = self._positions(x, positions, integer=True)
        q, k = self.content(x)
        return q @ k.transpose(-1, -2) * self.scale + self.position_bias(pos, q.dtype)


class DeBERTaScore(_Score):
    """DeBERTa: content–content + content→position + position→content, ``/ sqrt(3 d_head)``.

    ``[q_i k_j + q_i K^r_{clip(j-i)} + k_j Q^r_{clip(i-j)}] / sqrt(3 d_head)``: ``-> (B, h, n, n)``;
    ``Q^r = P W_{Q,r}``, ``K^r = P W_{K,r}`` project one ``(2 max_rel + 1, D)`` relative table.
    Note the index swap of the last term (the paper's ``delta(j, i)``): the key looks at the
    query's position relative to itself.
    """

    def __init__(self, D: int, heads: int, *, max_rel: int = 16):
        super().__init__(D, heads)
        check_positive("max_rel", max_rel, strict=False, integer=True)
        self.max_rel = max_rel
        self.rel_emb = nn.Parameter(torch.randn(2 * max_rel + 1, D))
        self.W_QR = nn.Linear(D, D, bias=False)
        self.W_KR = nn.Linear(D, D, bias=False)
        self.scale = 1.0 / math.sqrt(3 * self.d_head)

    def forward(self, x: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        self._check_x(x)
        pos = self._positions(x, positions, integer=True)
        idx = clip_relative(self._rel(pos), -self.max_rel, self.max_rel)  # [i, j] -> clip(j - i)
        q, k = self.content(x)
        P = self.rel_emb.to(x.dtype)
        Qr = self.W_QR(P).reshape(-1, self.heads, self.d_head).transpose(0, 1)  # (h, 2k+1, dh)
        Kr = self.W_KR(P).reshape(-1, self.heads, self.d_head).transpose(0, 1)
        c2p = self._gather(q @ Kr.transpose(-1, -2), idx)
        # p2c[i, j] = k_j . Qr[clip(i - j)]: gather row j at clip(pos_i - pos_j) = idx[j, i]
        p2c = self._gather(k @ Qr.transpose(-1, -2), idx).transpose(-1, -2)
        return (q @ k.transpose(-1, -2) + c2p + p2c) * self.scale


class RoPEScore(_Score):
    """RoPE: ``(R_{pos_i} q_i)^T (R_{pos_j} k_j) / sqrt(d_head) = q_i^T R_{j-i} k_j / sqrt(d_head)``.

    Absolute rotations, relative result (:func:`kexue_lib.rope.apply_rope`): ``-> (B, h, n, n)``.
    """

    def __init__(self, D: int, heads: int, *, base: float = 1e4, layout: str = "interleaved"):
        super().__init__(D, heads)
        if self.d_head % 2:
            raise ValueError(f"heads: expected an even head size D/heads, got {self.d_head}")
        self.base, self.layout = float(base), layout

    def forward(self, x: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        from kexue_lib.rope import apply_rope

        self._check_x(x)
        pos = self._positions(x, positions, integer=False)[:, None]  # (B', 1, n)
        q, k = self.content(x)
        q = apply_rope(q, pos, base=self.base, layout=self.layout)
        k = apply_rope(k, pos, base=self.base, layout=self.layout)
        return q @ k.transpose(-1, -2) * self.scale


def shift_equivariance_error(module: nn.Module, x: torch.Tensor, shift: int | float) -> float:
    """``max |module(x, pos) - module(x, pos + shift)|`` with ``pos = 0 .. n-1``.

    0 (to rounding) for every scheme whose logits see ``j - i`` only; grows with ``shift``
    for absolute encodings. ``x: (B, n, D)``.
    """
    check_tensor("x", x, floating=True)
    if x.dim() != 3:
        raise ValueError(f"x: expected shape (B, n, D), got {tuple(x.shape)}")
    if isinstance(shift, bool) or not isinstance(shift, (int, float)):
        raise TypeError(f"shift: expected a number, got {type(shift).__name__}")
    pos = torch.arange(x.shape[1], device=x.device)
    if isinstance(shift, float):
        pos = pos.to(torch.float64)
    with torch.no_grad():
        a = module(x, positions=pos)
        b = module(x, positions=pos + shift)
    return float((a - b).abs().max())
