"""Synthetic vectors: point clouds of different geometry for projections and embeddings."""

from __future__ import annotations

import math

import torch

from kexue_lib._core import check_positive

__all__ = ["point_cloud"]

KINDS = ("gaussian", "sparse_bow", "low_rank", "clusters")


def point_cloud(
    kind: str = "gaussian",
    N: int = 200,
    d: int = 1024,
    *,
    generator: torch.Generator | None = None,
    dtype=None,
    device=None,
    nnz: int = 5,
    rank: int = 5,
    noise: float = 0.01,
    n_clusters: int = 20,
    spread: float = 1e-3,
) -> torch.Tensor:
    """``N`` points in ``R^d`` -> ``(N, d)``; ``kind`` picks the geometry.

    - ``"gaussian"``: iid ``N(0, 1)`` entries (isotropic; all distances alike).
    - ``"sparse_bow"``: bag-of-words counts, ``nnz`` distinct random coordinates per row
      holding counts ``1 + Geometric(1/2)`` (very sparse, non-negative).
    - ``"low_rank"``: ``Z B + noise * E`` with ``Z: (N, rank)``, ``B: (rank, d)`` Gaussian,
      ``B`` scaled so signal entries have unit variance, ``E`` iid ``N(0, 1)``.
    - ``"clusters"``: ``n_clusters`` centres ``N(0, I)`` and points ``centre + spread * E``:
      tight clusters of near-duplicates (tiny within-cluster distances).
    Randomness comes only from ``generator`` (drawn on its device, moved to ``device``).
    """
    check_positive("N", N, integer=True)
    check_positive("d", d, integer=True)
    dtype = torch.get_default_dtype() if dtype is None else dtype
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype: expected a floating torch.dtype, got {dtype!r}")
    device = torch.device("cpu") if device is None else torch.device(device)
    src = generator.device if generator is not None else device
    work = torch.float64 if dtype == torch.float64 else torch.float32

    def randn(*shape):
        return torch.randn(shape, generator=generator, dtype=work, device=src)

    def rand(*shape):
        return torch.rand(shape, generator=generator, dtype=work, device=src)

    if kind == "gaussian":
        x = randn(N, d)
    elif kind == "sparse_bow":
        check_positive("nnz", nnz, integer=True)
        if nnz > d:
            raise ValueError(f"nnz: expected at most d = {d} non-zeros per row, got {nnz}")
        cols = rand(N, d).argsort(dim=1)[:, :nnz]
        counts = 1.0 + torch.floor(-torch.log1p(-rand(N, nnz)) / math.log(2.0))
        x = torch.zeros(N, d, dtype=work, device=src).scatter_(1, cols, counts.to(work))
    elif kind == "low_rank":
        check_positive("rank", rank, integer=True)
        check_positive("noise", noise, strict=False)
        z = randn(N, rank)
        b = randn(rank, d) / rank**0.5
        x = z @ b + noise * randn(N, d)
    elif kind == "clusters":
        check_positive("n_clusters", n_clusters, integer=True)
        check_positive("spread", spread, strict=False)
        centres = randn(n_clusters, d)
        label = torch.randint(0, n_clusters, (N,), generator=generator, device=src)
        x = centres[label] + spread * randn(N, d)
    else:
        raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
    return x.to(device=device, dtype=dtype)
