"""Evaluation metrics shared by chapters: how well an approximate ranking matches an exact one."""

from __future__ import annotations

import torch

from kexue_lib._core import check_positive, check_tensor

__all__ = ["topk_overlap"]


def topk_overlap(
    approx_scores: torch.Tensor,
    exact_scores: torch.Tensor,
    k: int,
    *,
    reduction: str = "mean",
) -> torch.Tensor:
    """Recall@k of an approximate ranking against the exact one (higher score = better).

    ``approx_scores, exact_scores: (Q, N)`` -> ``()`` (``reduction="mean"``) or ``(Q,)``
    (``"none"``): ``|topk(approx_q) & topk(exact_q)| / k`` per query ``q``. Ties are broken
    by ``torch.topk``; callers with many ties (Hamming scores) should break them at random.
    """
    check_tensor("approx_scores", approx_scores)
    check_tensor("exact_scores", exact_scores)
    if approx_scores.dim() != 2:
        raise ValueError(f"approx_scores: expected shape (Q, N), got {tuple(approx_scores.shape)}")
    if exact_scores.shape != approx_scores.shape:
        raise ValueError(
            f"exact_scores: expected shape {tuple(approx_scores.shape)} like "
            f"approx_scores, got {tuple(exact_scores.shape)}"
        )
    if exact_scores.device != approx_scores.device:
        raise ValueError(
            f"exact_scores: expected device {approx_scores.device}, got {exact_scores.device}"
        )
    for name, s in (("approx_scores", approx_scores), ("exact_scores", exact_scores)):
        if s.dtype == torch.bool or s.is_complex():
            raise TypeError(f"{name}: expected real scores, got dtype {s.dtype}")
        if s.is_floating_point() and s.numel() and bool(torch.isnan(s).any()):
            raise ValueError(f"{name}: expected scores without NaN")
    check_positive("k", k, integer=True)
    n = approx_scores.shape[1]
    if k > n:
        raise ValueError(f"k: expected at most N = {n}, got {k}")
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction: expected 'mean' or 'none', got {reduction!r}")
    top_exact = exact_scores.topk(k, dim=1).indices
    top_approx = approx_scores.topk(k, dim=1).indices
    in_exact = torch.zeros(approx_scores.shape, dtype=torch.bool, device=approx_scores.device)
    in_exact.scatter_(1, top_exact, True)
    hits = in_exact.gather(1, top_approx).sum(1)
    dtype = approx_scores.dtype if approx_scores.is_floating_point() else torch.get_default_dtype()
    per_query = hits.to(dtype) / k
    return per_query.mean() if reduction == "mean" else per_query


# --- margin-softmax ---


def class_retrieval_scores(
    embeddings: torch.Tensor, labels: torch.Tensor, *, k: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Leave-one-out retrieval by cosine: ``(recall@k, mean average precision)``.

    ``embeddings: (N, d)``, ``labels: (N,)``. Each sample queries the other ``N - 1``, ranked
    by cosine similarity (ties by index); a hit is a sample of the query's class. recall@k =
    share of queries with a hit among the top ``k``; AP of a query = mean over its hits of
    the precision at the hit's rank (sklearn's ``average_precision_score`` without ties).
    Queries whose class has no other member are skipped. Both are 0-dim tensors.
    """
    check_tensor("embeddings", embeddings, floating=True)
    check_tensor("labels", labels)
    if embeddings.dim() != 2 or embeddings.shape[0] < 2:
        raise ValueError(
            f"embeddings: expected shape (N, d) with N >= 2, got {tuple(embeddings.shape)}"
        )
    n = embeddings.shape[0]
    if labels.shape != (n,) or labels.is_floating_point():
        raise ValueError(
            f"labels: expected an integer tensor of shape ({n},), got {labels.dtype} "
            f"{tuple(labels.shape)}"
        )
    check_positive("k", k, integer=True)
    if k > n - 1:
        raise ValueError(f"k: expected at most N - 1 = {n - 1}, got {k}")
    u = torch.nn.functional.normalize(embeddings, dim=-1)
    sim = u @ u.T
    eye = torch.eye(n, dtype=torch.bool, device=u.device)
    sim = sim.masked_fill(eye, float("-inf"))
    order = torch.sort(sim, dim=1, descending=True, stable=True).indices[:, : n - 1]
    rel = (labels[order] == labels[:, None]).to(u.dtype)  # (N, N-1), rank order
    n_rel = rel.sum(1)
    keep = n_rel > 0
    recall = (rel[:, :k].sum(1) > 0).to(u.dtype)[keep].mean()
    ranks = torch.arange(1, n, device=u.device, dtype=u.dtype)
    precision = rel.cumsum(1) / ranks
    ap = (precision * rel).sum(1)[keep] / n_rel[keep]
    return recall, ap.mean()


__all__ += ["class_retrieval_scores"]
