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


# --- cosent, cosent-interaction ---


def _check_pair_vectors(xname: str, x: torch.Tensor, yname: str, y: torch.Tensor) -> None:
    check_tensor(xname, x)
    check_tensor(yname, y)
    if x.dim() != 1:
        raise ValueError(f"{xname}: expected shape (N,), got {tuple(x.shape)}")
    if y.shape != x.shape:
        raise ValueError(
            f"{yname}: expected shape {tuple(x.shape)} like {xname}, got {tuple(y.shape)}"
        )
    for name, t in ((xname, x), (yname, y)):
        if t.is_complex():
            raise TypeError(f"{name}: expected real values, got dtype {t.dtype}")
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name}: expected finite values, got non-finite entries")


def spearman(x: torch.Tensor, y: torch.Tensor) -> float:
    """Spearman's rank correlation of ``x, y: (N,)`` (average ranks for ties; scipy's spearmanr).

    The evaluation metric of book/embeddings/cosent.ipynb: it only sees the order of the
    scores, like the CoSENT loss. NaN when either input is constant.
    """
    _check_pair_vectors("x", x, "y", y)
    if x.numel() < 2:
        raise ValueError(f"x: expected at least 2 values, got {x.numel()}")
    from scipy.stats import spearmanr

    xs = x.detach().to("cpu", torch.float64).numpy()
    ys = y.detach().to("cpu", torch.float64).numpy()
    if xs.min() == xs.max() or ys.min() == ys.max():
        return float("nan")
    return float(spearmanr(xs, ys).statistic)


def discordant_pairs(scores: torch.Tensor, labels: torch.Tensor) -> int:
    """Number of pairs ``(a, b)`` with ``labels[a] > labels[b]`` but ``scores[a] <= scores[b]``.

    ``scores, labels: (N,)``. Every such pair adds a term ``>= 1`` inside CoSENT's log, so the
    loss is at least ``log(1 + discordant_pairs)``. O(N^2) memory.
    """
    _check_pair_vectors("scores", scores, "labels", labels)
    ordered = labels[:, None] > labels[None, :]
    wrong = scores[:, None] <= scores[None, :]
    return int((ordered & wrong).sum())


def best_binary_threshold(y_true: torch.Tensor, scores: torch.Tensor) -> tuple[float, float]:
    """Exact accuracy-maximising threshold for the rule "predict 1 iff score > threshold".

    ``y_true: (N,)`` in {0, 1} (bool or integer), ``scores: (N,)`` -> ``(threshold,
    accuracy)``. Accuracy is piecewise constant in the threshold and only changes at the
    distinct scores, so one sorted sweep over the candidates (below all scores, the midpoints
    between consecutive distinct scores, and the largest score) finds the optimum; ties in the
    scores move together. The smallest optimal candidate is returned; the candidate below
    all scores is ``-inf`` (everything predicted 1). O(N log N).
    """
    _check_pair_vectors("y_true", y_true, "scores", scores)
    if y_true.is_floating_point():
        raise TypeError(f"y_true: expected a bool or integer tensor, got dtype {y_true.dtype}")
    if not scores.is_floating_point():
        raise TypeError(f"scores: expected a floating-point tensor, got dtype {scores.dtype}")
    if y_true.numel() == 0:
        raise ValueError("y_true: expected at least one example, got 0")
    y = y_true.long()
    if bool(((y != 0) & (y != 1)).any()):
        raise ValueError("y_true: expected labels in {0, 1}, got other values")
    s = scores.detach()
    order = torch.argsort(s)
    s, y = s[order], y[order]
    uniq, counts = torch.unique_consecutive(s, return_counts=True)
    pos_per = torch.zeros(len(uniq), dtype=torch.long, device=s.device)
    group = torch.repeat_interleave(torch.arange(len(uniq), device=s.device), counts)
    pos_per.index_add_(0, group, y)
    neg_per = counts - pos_per
    n_pos = int(y.sum())
    # candidate k = 0..m: predict 0 for the k smallest distinct scores, 1 for the rest
    zero = torch.zeros(1, dtype=torch.long, device=s.device)
    neg_below = torch.cat([zero, neg_per.cumsum(0)])
    pos_below = torch.cat([zero, pos_per.cumsum(0)])
    correct = neg_below + (n_pos - pos_below)
    k = int(torch.argmax(correct))  # first maximum
    if k == 0:
        thr = float("-inf")
    elif k == len(uniq):
        thr = float(uniq[-1])
    else:
        mid = (uniq[k - 1] + uniq[k]) / 2  # in the scores' dtype, so "score > thr" is exact
        thr = float(mid if mid < uniq[k] else uniq[k - 1])
    return thr, int(correct[k]) / y.numel()


__all__ += ["best_binary_threshold", "discordant_pairs", "spearman"]


def predict_with_weights(probs: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Weighted argmax ``argmax_i p_i t_i``: ``probs: (N, C)``, ``t: (C,)`` positive -> ``(N,)`` long.

    ``t`` and ``alpha t`` (alpha > 0) predict the same; for C = 2 it is the threshold rule
    ``p_1 > t_0 / (t_0 + t_1)`` (book/embeddings/cosent-interaction.ipynb).
    """
    check_tensor("probs", probs, floating=True)
    check_tensor("t", t, floating=True)
    if probs.dim() != 2:
        raise ValueError(f"probs: expected shape (N, C), got {tuple(probs.shape)}")
    if t.shape != (probs.shape[1],):
        raise ValueError(f"t: expected shape ({probs.shape[1]},), got {tuple(t.shape)}")
    if not bool((t > 0).all()):
        raise ValueError("t: expected positive weights, got an entry <= 0")
    return (probs * t.to(probs.dtype)).argmax(-1)


def class_weight_thresholds(
    y_true: torch.Tensor,
    probs: torch.Tensor,
    *,
    x0: torch.Tensor | None = None,
    options: dict | None = None,
) -> tuple[torch.Tensor, float]:
    """Class weights ``t = (tanh(theta) + 1) / 2`` maximising the accuracy of ``argmax_i p_i t_i``.

    ``y_true: (N,)`` long in ``[0, C)``, ``probs: (N, C)`` -> ``(t: (C,), accuracy)``. The
    accuracy is piecewise constant in ``theta``, so a derivative-free search is used
    (``scipy.optimize.minimize(method="Powell")``, started at ``x0``, default ``theta = 0``:
    the plain argmax). Powell can stop where it started on a flat piece; the result is never
    worse than the start, which is returned when nothing better is found.
    """
    check_tensor("y_true", y_true)
    check_tensor("probs", probs, floating=True)
    if probs.dim() != 2:
        raise ValueError(f"probs: expected shape (N, C), got {tuple(probs.shape)}")
    if y_true.shape != probs.shape[:1] or y_true.is_floating_point():
        raise ValueError(
            f"y_true: expected integer labels of shape ({probs.shape[0]},), got {y_true.dtype} "
            f"{tuple(y_true.shape)}"
        )
    C = probs.shape[1]
    if y_true.numel() and (int(y_true.min()) < 0 or int(y_true.max()) >= C):
        raise ValueError(f"y_true: expected labels in [0, {C}), got other values")
    import numpy as np
    from scipy.optimize import minimize

    P = probs.detach().to("cpu", torch.float64).numpy()
    Y = y_true.detach().cpu().numpy()
    theta0 = np.zeros(C) if x0 is None else np.asarray(x0, dtype=np.float64).reshape(C)

    def weights(theta):
        return (np.tanh(theta) + 1) / 2

    def neg_acc(theta):
        return -float(np.mean((P * weights(theta)).argmax(-1) == Y))

    opts = {"xtol": 1e-10, "ftol": 1e-10, "maxiter": 100_000}
    opts.update(options or {})
    res = minimize(neg_acc, theta0, method="Powell", options=opts)
    best = res.x if neg_acc(res.x) <= neg_acc(theta0) else theta0
    t = torch.as_tensor(weights(best), dtype=probs.dtype, device=probs.device)
    return t, -neg_acc(best)


__all__ += ["class_weight_thresholds", "predict_with_weights"]
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
