"""Distances, cosines and other facts of Euclidean geometry shared by many chapters."""

from __future__ import annotations

import torch

from kexue_lib._core import check_tensor

__all__ = [
    "condensed_sq_dists",
    "cosine_matrix",
    "pairwise_sq_dists",
]


def _check_points(name: str, x: torch.Tensor) -> torch.Tensor:
    check_tensor(name, x, floating=True)
    if x.dim() != 2:
        raise ValueError(f"{name}: expected a (N, d) matrix of points, got shape {tuple(x.shape)}")
    return x


def pairwise_sq_dists(x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """Squared Euclidean distances ``D[i, j] = |x_i - y_j|^2``, clamped at 0.

    ``x: (N, d)``, ``y: (M, d)`` (default ``x``) -> ``(N, M)``. Uses the Gram expansion
    (fast, one matmul); for near-duplicate points where cancellation matters use
    :func:`condensed_sq_dists`.
    """
    _check_points("x", x)
    y = x if y is None else _check_points("y", y)
    if y.shape[1] != x.shape[1]:
        raise ValueError(f"y: expected {x.shape[1]} columns like x, got {y.shape[1]}")
    xx = (x * x).sum(-1)[:, None]
    yy = (y * y).sum(-1)[None, :]
    d = (xx + yy - 2.0 * (x @ y.T)).clamp_min(0.0)
    if y is x:
        d.fill_diagonal_(0.0)
    return d


def condensed_sq_dists(x: torch.Tensor, *, max_elements: int = 1 << 24) -> torch.Tensor:
    """Squared distances of all pairs i < j in ``torch.pdist`` order, from differences.

    ``x: (N, d)`` -> ``(N(N-1)/2,)``. Differences rather than the Gram expansion, so
    near-duplicate points keep their tiny distances (this is what distortion ratios need).
    Pairs are processed in chunks of at most ``max_elements`` difference entries.
    """
    _check_points("x", x)
    n, d = x.shape
    i, j = torch.triu_indices(n, n, offset=1, device=x.device)
    step = max(1, max_elements // max(d, 1))
    out = [((x[i[s : s + step]] - x[j[s : s + step]]) ** 2).sum(-1) for s in range(0, i.numel(), step)]
    return torch.cat(out) if out else x.new_zeros(0)


def cosine_matrix(x: torch.Tensor, y: torch.Tensor | None = None, *, eps: float = 1e-12) -> torch.Tensor:
    """Cosine similarities ``C[i, j] = <x_i, y_j> / (|x_i| |y_j|)``: ``(N, d), (M, d) -> (N, M)``."""
    _check_points("x", x)
    y = x if y is None else _check_points("y", y)
    if y.shape[1] != x.shape[1]:
        raise ValueError(f"y: expected {x.shape[1]} columns like x, got {y.shape[1]}")
    xn = x / x.norm(dim=-1, keepdim=True).clamp_min(eps)
    yn = y / y.norm(dim=-1, keepdim=True).clamp_min(eps)
    return xn @ yn.T
