"""GlobalPointer: every span ``(start, end)`` of every entity type scored at once.

kexue.fm/archives/8373 (chapter book/embeddings/global-pointer.ipynb). A length-``n`` text
has ``n(n+1)/2`` spans; GlobalPointer gives span ``(i, j)`` of type ``a`` the score
``s_a(i, j) = (R_i q_{i,a})^T (R_j k_{j,a}) / sqrt(head_size)`` (RoPE from
:mod:`kexue_lib.rope`, interleaved pairs) and trains each ``(sample, type)`` as one
multi-label problem with :func:`kexue_lib.ranking_losses.multilabel_categorical_crossentropy`.
Decoding is a single comparison ``s > 0`` (any nesting allowed). For contrast the module also
holds the sequential Viterbi decoder of a linear-chain CRF and BIO conversions, which cannot
represent nested spans.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from kexue_lib._core import check_int, check_positive, check_tensor
from kexue_lib.ranking_losses import multilabel_categorical_crossentropy
from kexue_lib.rope import apply_rope

__all__ = [
    "GlobalPointer",
    "bio_to_spans",
    "decode_spans",
    "global_pointer_f1",
    "global_pointer_loss",
    "span_f1",
    "span_mask",
    "spans_to_bio",
    "viterbi_decode",
]


def span_mask(mask: torch.Tensor) -> torch.Tensor:
    """Valid spans ``(B, n) -> (B, 1, n, n)``: both ends unpadded and ``start <= end``.

    ``mask: (B, n)`` bool, True = real token.
    """
    check_tensor("mask", mask)
    if mask.dtype != torch.bool or mask.dim() != 2:
        raise ValueError(
            f"mask: expected a bool (B, n) tensor, got {mask.dtype} {tuple(mask.shape)}"
        )
    n = mask.shape[1]
    upper = torch.ones(n, n, dtype=torch.bool, device=mask.device).triu()
    return (mask[:, :, None] & mask[:, None, :] & upper)[:, None]


class GlobalPointer(nn.Module):
    """Span scores ``(B, n, d_in) -> (B, heads, n, n)``, eq. (global-pointer-score).

    One ``nn.Linear(d_in, 2 * heads * head_size)``; per head the first ``head_size`` outputs
    are ``q``, the next ``head_size`` are ``k`` (bert4keras layout). With ``rope=True`` both are
    rotated by :func:`kexue_lib.rope.apply_rope` at positions ``0..n-1`` (interleaved,
    ``base``); ``scale=True`` divides by ``sqrt(head_size)`` (in the code, not in the post's
    formula). Entries with ``i > j`` or a padded end are ``-inf`` (``finfo.min`` for float16 /
    bfloat16) so that the loss ignores them.
    """

    def __init__(
        self,
        d_in: int,
        heads: int,
        head_size: int,
        *,
        rope: bool = True,
        scale: bool = True,
        base: float = 1e4,
    ) -> None:
        super().__init__()
        check_int("d_in", d_in)
        check_int("heads", heads)
        check_int("head_size", head_size)
        if rope and head_size % 2:
            raise ValueError(f"head_size: expected an even size with rope=True, got {head_size}")
        check_positive("base", base)
        self.heads, self.head_size = heads, head_size
        self.rope, self.scale, self.base = bool(rope), bool(scale), float(base)
        self.dense = nn.Linear(d_in, 2 * heads * head_size)

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        check_tensor("h", h, floating=True)
        if h.dim() != 3 or h.shape[-1] != self.dense.in_features:
            raise ValueError(
                f"h: expected shape (B, n, {self.dense.in_features}), got {tuple(h.shape)}"
            )
        B, n, _ = h.shape
        if mask is None:
            mask = torch.ones(B, n, dtype=torch.bool, device=h.device)
        elif tuple(mask.shape) != (B, n):
            raise ValueError(f"mask: expected shape ({B}, {n}), got {tuple(mask.shape)}")
        qk = self.dense(h).view(B, n, self.heads, 2, self.head_size).permute(3, 0, 2, 1, 4)
        q, k = qk[0], qk[1]  # (B, heads, n, head_size)
        if self.rope:
            q = apply_rope(q, base=self.base)
            k = apply_rope(k, base=self.base)
        s = q @ k.transpose(-1, -2)
        if self.scale:
            s = s / math.sqrt(self.head_size)
        fill = (
            float("-inf") if s.dtype in (torch.float32, torch.float64) else torch.finfo(s.dtype).min
        )
        return s.masked_fill(~span_mask(mask), fill)


def _check_scores_labels(scores: torch.Tensor, labels: torch.Tensor) -> None:
    check_tensor("scores", scores, floating=True)
    check_tensor("labels", labels)
    if scores.dim() != 4 or scores.shape[-1] != scores.shape[-2]:
        raise ValueError(f"scores: expected shape (B, heads, n, n), got {tuple(scores.shape)}")
    if labels.shape != scores.shape:
        raise ValueError(
            f"labels: expected shape {tuple(scores.shape)} like scores, got {tuple(labels.shape)}"
        )


def global_pointer_loss(
    scores: torch.Tensor, labels: torch.Tensor, *, reduction: str = "mean"
) -> torch.Tensor:
    """Multi-label CE per ``(sample, type)`` over its ``n^2`` spans, eq. (global-pointer-loss).

    ``scores, labels: (B, heads, n, n)`` (labels 0/1 or soft in [0, 1]); flattened to
    ``(B * heads, n * n)`` — one problem per type, not one per sample. ``-inf`` scores (lower
    triangle, padding) are absent; a gold label there raises. ``reduction``: ``"mean"`` over
    ``B * heads`` (default), ``"sum"`` or ``"none"`` (``(B, heads)``).
    """
    _check_scores_labels(scores, labels)
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction: expected one of ['mean', 'sum', 'none'], got {reduction!r}")
    absent = scores <= torch.finfo(scores.dtype).min
    if bool(((labels != 0) & absent).any()):
        raise ValueError("labels: gold spans found at masked entries (start > end or padding)")
    B, H, n, _ = scores.shape
    s = scores.masked_fill(absent, float("-inf"))
    loss = multilabel_categorical_crossentropy(
        s.reshape(B * H, n * n), labels.reshape(B * H, n * n)
    )
    loss = loss.view(B, H)
    return loss.mean() if reduction == "mean" else loss.sum() if reduction == "sum" else loss


def decode_spans(
    scores: torch.Tensor, *, threshold: float = 0.0
) -> list[set[tuple[int, int, int]]]:
    """Entities ``{(type, start, end)}`` per sample: every span scoring above ``threshold``.

    ``scores: (B, heads, n, n)``. One comparison and one ``nonzero`` for the whole batch — no
    left-to-right pass, so nested and overlapping spans come out as they are scored.
    """
    check_tensor("scores", scores, floating=True)
    if scores.dim() != 4:
        raise ValueError(f"scores: expected shape (B, heads, n, n), got {tuple(scores.shape)}")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise TypeError(f"threshold: expected a number, got {type(threshold).__name__}")
    idx = torch.nonzero(scores > threshold).tolist()
    out: list[set[tuple[int, int, int]]] = [set() for _ in range(scores.shape[0])]
    for b, t, i, j in idx:
        out[b].add((t, i, j))
    return out


def span_f1(pred, gold) -> float:
    """Entity-level micro F1 ``2|P ∩ G| / (|P| + |G|)`` over lists of span sets (1 if both empty)."""
    if len(pred) != len(gold):
        raise ValueError(f"gold: expected {len(pred)} samples like pred, got {len(gold)}")
    hit = sum(len(set(p) & set(g)) for p, g in zip(pred, gold, strict=True))
    total = sum(len(set(p)) + len(set(g)) for p, g in zip(pred, gold, strict=True))
    return 1.0 if total == 0 else 2 * hit / total


def global_pointer_f1(
    scores: torch.Tensor, labels: torch.Tensor, *, threshold: float = 0.0
) -> torch.Tensor:
    """``2 sum(y * yhat) / sum(y + yhat)`` with ``yhat = [scores > threshold]`` (0-dim tensor)."""
    _check_scores_labels(scores, labels)
    y = labels.to(torch.float32)
    yhat = (scores > threshold).to(torch.float32)
    den = (y + yhat).sum()
    return torch.where(den > 0, 2 * (y * yhat).sum() / den.clamp(min=1), torch.ones_like(den))


def viterbi_decode(emissions: torch.Tensor, transitions: torch.Tensor) -> torch.Tensor:
    """Best tag path of a linear-chain CRF: ``(B, n, T), (T, T) -> (B, n)`` long.

    Maximises ``sum_t emissions[t, y_t] + sum_t transitions[y_{t-1}, y_t]`` by dynamic
    programming: ``n - 1`` dependent max-plus steps and a backward trace — inherently
    sequential in ``n``, the contrast to :func:`decode_spans`.
    """
    check_tensor("emissions", emissions, floating=True)
    check_tensor("transitions", transitions, floating=True)
    if emissions.dim() != 3 or emissions.shape[1] < 1:
        raise ValueError(
            f"emissions: expected shape (B, n, T) with n >= 1, got {tuple(emissions.shape)}"
        )
    T = emissions.shape[-1]
    if transitions.shape != (T, T):
        raise ValueError(f"transitions: expected shape ({T}, {T}), got {tuple(transitions.shape)}")
    n = emissions.shape[1]
    score = emissions[:, 0]
    back = []
    for t in range(1, n):
        cand = score[:, :, None] + transitions  # (B, from, to)
        score, arg = cand.max(1)
        score = score + emissions[:, t]
        back.append(arg)
    best = score.argmax(-1)
    path = [best]
    for arg in reversed(back):
        best = arg.gather(1, best[:, None]).squeeze(1)
        path.append(best)
    return torch.stack(path[::-1], 1)


def spans_to_bio(spans, n: int, n_types: int, *, order: str = "outer") -> tuple[torch.Tensor, int]:
    """Flat BIO tags ``(n,)`` for a set of ``(type, start, end)`` spans, and how many were lost.

    Tag ids: 0 = O, ``1 + 2 t`` = B-type t, ``2 + 2 t`` = I-type t. Spans are written longest
    first (``order="outer"``) or shortest first (``"inner"``); a span that overlaps one
    already written is dropped — a flat tagging holds no nesting.
    """
    check_int("n", n)
    check_int("n_types", n_types)
    if order not in ("outer", "inner"):
        raise ValueError(f"order: expected one of ['outer', 'inner'], got {order!r}")
    tags = torch.zeros(n, dtype=torch.long)
    sign = -1 if order == "outer" else 1
    lost = 0
    for t, i, j in sorted(spans, key=lambda s: (sign * (s[2] - s[1]), s[1], s[0])):
        if not (0 <= t < n_types and 0 <= i <= j < n):
            raise ValueError(
                f"spans: expected (type, start, end) inside the sequence, got {(t, i, j)}"
            )
        if bool((tags[i : j + 1] != 0).any()):
            lost += 1
            continue
        tags[i] = 1 + 2 * t
        tags[i + 1 : j + 1] = 2 + 2 * t
    return tags, lost


def bio_to_spans(tags) -> set[tuple[int, int, int]]:
    """Spans ``{(type, start, end)}`` read off a BIO tag sequence (ids as in :func:`spans_to_bio`).

    A span starts at a B tag and runs over the following I tags of the same type; a stray I
    tag starts nothing.
    """
    tags = [int(x) for x in tags]
    out = set()
    i = 0
    while i < len(tags):
        tag = tags[i]
        if tag > 0 and tag % 2 == 1:
            t, j = (tag - 1) // 2, i
            while j + 1 < len(tags) and tags[j + 1] == 2 + 2 * t:
                j += 1
            out.add((t, i, j))
            i = j + 1
        else:
            i += 1
    return out
