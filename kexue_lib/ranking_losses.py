"""Ranking losses on similarity scores: CoSENT and the factorised positive/negative form.

Both are the "log(1 + sum exp(scale * (wrong-order gap)))" recipe: every pair of items that
should be ordered ``s_a > s_b`` adds ``exp(scale * (s_b - s_a))`` inside ``log(1 + .)``.
Derived in book/embeddings/cosent.ipynb.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kexue_lib._core import check_positive, check_tensor

__all__ = ["cosent_loss", "pairwise_ranking_loss", "pos_neg_ranking_loss"]


# --- cosent, cosent-interaction ---


def _check_scale(scale: float) -> float:
    check_positive("scale", scale)
    return float(scale)


def _check_scores(name: str, x: torch.Tensor) -> torch.Tensor:
    check_tensor(name, x, floating=True)
    if x.numel() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name}: expected finite scores, got non-finite entries")
    return x


def pairwise_ranking_loss(
    scores: torch.Tensor, labels: torch.Tensor, *, scale: float = 20.0
) -> torch.Tensor:
    """CoSENT's general ordering loss ``log(1 + sum_{y_a > y_b} exp(scale (s_b - s_a)))``.

    ``scores: (B,)`` (e.g. cosines of B sentence pairs), ``labels: (B,)`` (any ordered values:
    binary, NLI classes 2 > 1 > 0, graded 0-5; ties add no term) -> ``()``. Computed as a masked
    logsumexp over the ``B x B`` ordered pairs with a leading 0 (the "1 +"), so a batch without
    any ordered pair gives exactly 0, still connected to ``scores``. Half-precision scores are
    computed in float32 and the result is cast back. Eq. (cosent-general).
    """
    _check_scores("scores", scores)
    check_tensor("labels", labels)
    if scores.dim() != 1:
        raise ValueError(f"scores: expected shape (B,), got {tuple(scores.shape)}")
    if labels.shape != scores.shape:
        raise ValueError(
            f"labels: expected shape {tuple(scores.shape)} like scores, got {tuple(labels.shape)}"
        )
    if labels.is_complex() or (
        labels.is_floating_point() and not bool(torch.isfinite(labels).all())
    ):
        raise ValueError("labels: expected finite real labels, got non-finite or complex entries")
    scale = _check_scale(scale)
    s = scores.float() if scores.dtype in (torch.float16, torch.bfloat16) else scores
    s = s * scale
    diff = s[None, :] - s[:, None]  # diff[a, b] = s_b - s_a
    ordered = labels[:, None] > labels[None, :]  # y_a > y_b
    terms = diff.masked_fill(~ordered, float("-inf")).flatten()
    out = torch.logsumexp(torch.cat([s.new_zeros(1), terms]), dim=0)
    return out.to(scores.dtype)


def cosent_loss(
    u: torch.Tensor,
    v: torch.Tensor,
    labels: torch.Tensor,
    *,
    scale: float = 20.0,
    eps: float = 1e-8,
) -> torch.Tensor:
    """CoSENT on embeddings: ``pairwise_ranking_loss(cos(u_i, v_i), labels, scale=scale)``.

    ``u, v: (B, d)`` the two sentences of each pair (row i of ``u`` pairs with row i of ``v``),
    ``labels: (B,)``. Eq. (cosent-general) of book/embeddings/cosent.ipynb.
    """
    check_tensor("u", u, floating=True)
    check_tensor("v", v, floating=True)
    if u.dim() != 2:
        raise ValueError(f"u: expected shape (B, d), got {tuple(u.shape)}")
    if v.shape != u.shape:
        raise ValueError(f"v: expected shape {tuple(u.shape)} like u, got {tuple(v.shape)}")
    check_positive("eps", eps)
    return pairwise_ranking_loss(F.cosine_similarity(u, v, dim=-1, eps=eps), labels, scale=scale)


def pos_neg_ranking_loss(
    pos: torch.Tensor, neg: torch.Tensor, *, scale: float = 1.0, margin: float = 0.0
) -> torch.Tensor:
    """``log(1 + sum_neg sum_pos exp(scale (s_neg - s_pos + margin)))`` in O(P + Q).

    ``pos: (..., P)`` scores that should be high, ``neg: (..., Q)`` scores that should be low,
    same leading dims -> ``(...)``. The double sum factorises:
    ``softplus(scale margin + logsumexp(scale neg) + logsumexp(-scale pos))``. With binary
    labels CoSENT is this loss with ``pos``/``neg`` the cosines of positive/negative pairs
    (eq. (cosent-binary)); it is also Circle loss's unified form. Empty ``pos`` or ``neg``
    gives 0.
    """
    _check_scores("pos", pos)
    _check_scores("neg", neg)
    if pos.dim() < 1 or neg.dim() < 1:
        raise ValueError(
            f"pos: expected at least one dim (..., P) and neg (..., Q), got shapes "
            f"{tuple(pos.shape)} and {tuple(neg.shape)}"
        )
    if pos.shape[:-1] != neg.shape[:-1]:
        raise ValueError(
            f"neg: expected leading dims {tuple(pos.shape[:-1])} like pos, got {tuple(neg.shape[:-1])}"
        )
    if pos.dtype != neg.dtype:
        raise TypeError(f"neg: expected dtype {pos.dtype} like pos, got {neg.dtype}")
    scale = _check_scale(scale)
    if isinstance(margin, bool) or not isinstance(margin, (int, float)):
        raise TypeError(f"margin: expected a number, got {type(margin).__name__}")
    work = torch.float32 if pos.dtype in (torch.float16, torch.bfloat16) else pos.dtype
    p, n = pos.to(work), neg.to(work)
    z = scale * float(margin) + torch.logsumexp(scale * n, -1) + torch.logsumexp(-scale * p, -1)
    return F.softplus(z).to(pos.dtype)
