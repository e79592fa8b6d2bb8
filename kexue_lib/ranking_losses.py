"""Ranking losses on similarity scores: CoSENT and the factorised positive/negative form.

Both are the "log(1 + sum exp(scale * (wrong-order gap)))" recipe: every pair of items that
should be ordered ``s_a > s_b`` adds ``exp(scale * (s_b - s_a))`` inside ``log(1 + .)``.
Derived in book/embeddings/cosent.ipynb.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kexue_lib._core import check_positive, check_tensor, work_dtype

__all__ = [
    "am_softmax_loss",
    "cosent_loss",
    "margin_condition_fraction",
    "margin_condition_holds",
    "margin_distance_loss",
    "multilabel_categorical_crossentropy",
    "pairwise_ranking_loss",
    "pos_neg_ranking_loss",
]


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


# --- margin-softmax, global-pointer ---

_REDUCTIONS = ("mean", "sum", "none")


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def _check_reduction(reduction: str) -> str:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction: expected one of {list(_REDUCTIONS)}, got {reduction!r}")
    return reduction


def _check_targets(targets: torch.Tensor, batch: int, n_classes: int) -> torch.Tensor:
    check_tensor("targets", targets)
    if targets.is_floating_point() or targets.dtype == torch.bool:
        raise TypeError(f"targets: expected an integer tensor, got dtype {targets.dtype}")
    if targets.shape != (batch,):
        raise ValueError(f"targets: expected shape ({batch},), got {tuple(targets.shape)}")
    if batch and (int(targets.min()) < 0 or int(targets.max()) >= n_classes):
        raise ValueError(
            f"targets: expected class ids in [0, {n_classes}), got range "
            f"[{int(targets.min())}, {int(targets.max())}]"
        )
    return targets


def margin_distance_loss(
    dists: torch.Tensor,
    targets: torch.Tensor,
    *,
    scale: float = 30.0,
    margin: float = 0.35,
    reduction: str = "mean",
) -> torch.Tensor:
    """Margin cross-entropy on distances to class centres (eq. margin-softmax-metric-ce).

    ``dists: (B, C)`` distances ``d(z_b, c_i)``; ``targets: (B,)`` class ids. Per row
    ``log(1 + sum_{i != y} exp(scale * (d_y + margin - d_i)))``, i.e. cross-entropy on the
    logits ``-scale * d`` with the target logit lowered by ``scale * margin``. ``reduction``:
    ``"mean"`` (default), ``"sum"`` or ``"none"`` (``(B,)``).
    """
    check_tensor("dists", dists, floating=True)
    if dists.dim() != 2 or dists.shape[1] < 2:
        raise ValueError(f"dists: expected shape (B, C) with C >= 2, got {tuple(dists.shape)}")
    _check_targets(targets, dists.shape[0], dists.shape[1])
    check_positive("scale", scale)
    check_positive("margin", margin, strict=False)
    _check_reduction(reduction)
    wd = work_dtype(dists.dtype)
    logits = -scale * dists.to(wd)
    shift = torch.zeros_like(logits).scatter_(1, targets[:, None], scale * margin)
    loss = torch.nn.functional.cross_entropy(logits - shift, targets, reduction="none")
    return _reduce(loss, reduction).to(dists.dtype)


def am_softmax_loss(
    features: torch.Tensor,
    centers: torch.Tensor,
    targets: torch.Tensor,
    *,
    scale: float = 30.0,
    margin: float = 0.35,
    reduction: str = "mean",
) -> torch.Tensor:
    """Additive-margin softmax (AM-Softmax / CosFace), eq. (margin-softmax-am).

    ``features: (B, d)``, ``centers: (C, d)`` (both normalised here, so the logits are
    cosines), ``targets: (B,)``. Per row ``-log(e^{s(cos_y - m)} / (e^{s(cos_y - m)} +
    sum_{i != y} e^{s cos_i}))`` — ordinary cross-entropy on ``s * (cos - m * onehot(y))``.
    The margin is subtracted from the target logit only; ``margin=0`` is the normalised
    softmax. ``reduction``: ``"mean"``, ``"sum"`` or ``"none"``.
    """
    check_tensor("features", features, floating=True)
    check_tensor("centers", centers, floating=True)
    if features.dim() != 2:
        raise ValueError(f"features: expected shape (B, d), got {tuple(features.shape)}")
    if centers.dim() != 2 or centers.shape[1] != features.shape[1] or centers.shape[0] < 2:
        raise ValueError(
            f"centers: expected shape (C, {features.shape[1]}) with C >= 2, "
            f"got {tuple(centers.shape)}"
        )
    _check_targets(targets, features.shape[0], centers.shape[0])
    check_positive("scale", scale)
    check_positive("margin", margin, strict=False)
    _check_reduction(reduction)
    wd = work_dtype(features.dtype)
    f = torch.nn.functional.normalize(features.to(wd), dim=-1)
    c = torch.nn.functional.normalize(centers.to(wd), dim=-1)
    cos = f @ c.T
    shift = torch.zeros_like(cos).scatter_(1, targets[:, None], margin)
    loss = torch.nn.functional.cross_entropy(scale * (cos - shift), targets, reduction="none")
    return _reduce(loss, reduction).to(features.dtype)


def _center_distances(z, labels, centers, dist_fn):
    """Checked inputs of the margin conditions: ``D[a, i] = d(z_a, c_i)`` and ``d(z_a, c_{y_a})``."""
    check_tensor("z", z, floating=True)
    check_tensor("centers", centers, floating=True)
    if z.dim() != 2 or centers.dim() != 2 or centers.shape[1] != z.shape[1]:
        raise ValueError(
            f"centers: expected shape (C, {z.shape[-1]}) beside z: (N, d), got "
            f"z {tuple(z.shape)} and centers {tuple(centers.shape)}"
        )
    _check_targets(labels, z.shape[0], centers.shape[0])
    if not callable(dist_fn):
        raise TypeError(f"dist_fn: expected a callable, got {type(dist_fn).__name__}")
    D = dist_fn(z[:, None, :], centers[None, :, :])
    return D, D.gather(1, labels[:, None]).squeeze(1)


def margin_condition_holds(
    z: torch.Tensor, labels: torch.Tensor, centers: torch.Tensor, dist_fn
) -> torch.Tensor:
    """Per query, whether the two-triangle sufficient condition (margin-softmax-sufficient) holds.

    ``z: (N, d)`` samples, ``labels: (N,)``, ``centers: (C, d)``, ``dist_fn(x, y)`` a metric
    broadcasting over leading dims. Query ``a`` passes when for every other sample ``b`` of
    its class and every sample ``k`` of another class
    ``d(z_a, c_{y_a}) + d(z_b, c_{y_a}) + d(z_k, c_{y_k}) < d(z_a, c_{y_k})``. For a true
    metric this implies ``d(z_a, z_b) < d(z_a, z_k)`` for all such pairs: every same-class
    sample is retrieved before every other one (average precision 1). Returns ``(N,)`` bool
    (False for a query whose class has no other member or no other class is present).
    """
    D, own = _center_distances(z, labels, centers, dist_fn)  # (N, C): d(z_a, c_i); d(z_b, c_{y_b})
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=z.device)
    inf = torch.tensor(float("inf"), dtype=D.dtype, device=D.device)
    # largest distance of another own-class sample to the query's centre
    own_spread = torch.where(same & ~eye, own[None, :], -inf).amax(1)
    # smallest d(z_a, c_{y_k}) - d(z_k, c_{y_k}) over samples k of other classes
    room = torch.where(~same, D[:, labels] - own[None, :], inf).amin(1)
    return (own + own_spread < room) & torch.isfinite(own_spread) & torch.isfinite(room)


def margin_condition_fraction(
    z: torch.Tensor, labels: torch.Tensor, centers: torch.Tensor, dist_fn
) -> torch.Tensor:
    """Per query, the share of (same-class ``b``, other-class ``k``) pairs meeting the condition.

    The pairwise form of :func:`margin_condition_holds`: for query ``a`` the share of pairs
    ``(b, k)`` with ``d(z_a, c_{y_a}) + d(z_b, c_{y_a}) + d(z_k, c_{y_k}) < d(z_a, c_{y_k})``
    (eq. margin-softmax-sufficient); each such pair is ranked correctly, ``d(z_a, z_b) <
    d(z_a, z_k)``, when ``dist_fn`` is a metric. ``(N,)``; NaN for a query without pairs.
    Counted per class with ``searchsorted`` (``O(N^2 log N)``, no ``N^3`` tensor).
    """
    D, own = _center_distances(z, labels, centers, dist_fn)
    out = torch.full_like(own, float("nan"))
    for c in labels.unique().tolist():
        qa = (labels == c).nonzero().squeeze(1)
        other = (labels != c).nonzero().squeeze(1)
        if len(qa) < 2 or len(other) == 0:
            continue
        sorted_own = own[qa].sort().values  # d(z_b, c_c) over the class, query included
        thr = D[qa][:, labels[other]] - own[other][None, :] - own[qa][:, None]  # (|A|, |K|)
        count = torch.searchsorted(sorted_own, thr.contiguous()).sum(1)
        count = count - (own[qa][:, None] < thr).sum(1)  # the query itself is no partner
        out[qa] = count.to(own.dtype) / ((len(qa) - 1) * len(other))
    return out


def multilabel_categorical_crossentropy(
    logits: torch.Tensor, targets: torch.Tensor, *, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Multi-label softmax cross-entropy with threshold 0 (7359; eq. global-pointer-zlpr).

    ``logits: (..., C)`` unconstrained real scores (no sigmoid before it); ``targets: (...,
    C)`` in [0, 1] (1 = target class; soft labels per kexue.fm/archives/9064). Returns the
    per-example loss ``(...)``::

        log(1 + sum_i (1 - y_i) e^{s_i}) + log(1 + sum_i y_i e^{-s_i})

    (for hard labels: negatives' scores pushed below 0, positives' above 0). Entries with
    ``mask == False`` or logit ``-inf`` are absent from both sums. Computed with two
    ``logsumexp`` and masked fills (no ``1e12`` constants), in float32 at least.
    """
    check_tensor("logits", logits, floating=True)
    check_tensor("targets", targets)
    if targets.shape != logits.shape:
        raise ValueError(
            f"targets: expected shape {tuple(logits.shape)} like logits, got {tuple(targets.shape)}"
        )
    if logits.dim() == 0:
        raise ValueError("logits: expected shape (..., C), got a scalar")
    wd = work_dtype(logits.dtype)
    y = targets.to(wd)
    if y.numel() and (not torch.isfinite(y).all() or y.min() < 0 or y.max() > 1):
        raise ValueError("targets: expected values in [0, 1], got values outside it")
    s = logits.to(wd)
    if torch.isnan(s).any():
        raise ValueError("logits: expected no NaN, got NaN entries")
    absent = torch.isneginf(s)
    if mask is not None:
        check_tensor("mask", mask)
        if mask.dtype != torch.bool:
            raise TypeError(f"mask: expected a bool tensor, got dtype {mask.dtype}")
        try:
            mask = mask.expand(s.shape)
        except RuntimeError:
            raise ValueError(
                f"mask: shape {tuple(mask.shape)} does not broadcast to {tuple(s.shape)}"
            ) from None
        absent = absent | ~mask
    ninf = torch.tensor(float("-inf"), dtype=wd, device=s.device)
    s_safe = torch.where(absent, torch.zeros_like(s), s)
    neg = torch.where(absent | (y >= 1), ninf, s_safe + torch.log1p(-y.clamp(max=1 - 1e-30)))
    pos = torch.where(absent | (y <= 0), ninf, -s_safe + torch.log(y.clamp(min=1e-30)))
    zero = torch.zeros_like(s[..., :1])
    loss = torch.logsumexp(torch.cat([neg, zero], -1), -1) + torch.logsumexp(
        torch.cat([pos, zero], -1), -1
    )
    return loss.to(logits.dtype)
