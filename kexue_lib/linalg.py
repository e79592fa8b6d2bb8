"""Matrix structure: how Toeplitz a matrix is, numerical rank."""

from __future__ import annotations

import torch

from kexue_lib._core import check_tensor

__all__ = ["toeplitz_fraction"]


def toeplitz_fraction(S: torch.Tensor) -> torch.Tensor:
    """Share of the variation of ``S`` explained by its diagonal means: ``(..., n, n) -> (...)``.

    Replace every entry by the mean of its diagonal ``j - i``; the fraction is
    ``1 - |S - T(S)|^2 / |S - mean(S)|^2``. It is 1 exactly when ``S[i, j]`` depends on
    ``j - i`` only (a Toeplitz matrix: scores that see relative positions only).
    A constant matrix counts as Toeplitz (fraction 1).
    """
    check_tensor("S", S, floating=True)
    if S.dim() < 2 or S.shape[-1] != S.shape[-2]:
        raise ValueError(f"S: expected square matrices (..., n, n), got shape {tuple(S.shape)}")
    n = S.shape[-1]
    x = S.to(torch.promote_types(S.dtype, torch.float32))
    idx = torch.arange(n, device=S.device)
    diag = (idx[None, :] - idx[:, None]) + (n - 1)  # 0 .. 2n-2, one id per diagonal
    flat = x.reshape(-1, n * n)
    sums = torch.zeros(flat.shape[0], 2 * n - 1, dtype=x.dtype, device=S.device)
    sums.index_add_(1, diag.reshape(-1), flat)
    counts = torch.bincount(diag.reshape(-1), minlength=2 * n - 1).to(x.dtype)
    t = (sums / counts)[:, diag.reshape(-1)]
    resid = ((flat - t) ** 2).sum(-1)
    total = ((flat - flat.mean(-1, keepdim=True)) ** 2).sum(-1)
    frac = torch.where(
        total > 0, 1 - resid / total.clamp_min(torch.finfo(x.dtype).tiny), torch.ones_like(total)
    )
    return frac.reshape(S.shape[:-2])
