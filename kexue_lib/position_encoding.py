"""Sinusoidal frequencies and other position-encoding tables (pure functions)."""

from __future__ import annotations

import torch

from kexue_lib._core import check_dim_even, check_positive

__all__ = ["sinusoidal_frequencies"]


def sinusoidal_frequencies(d: int, base: float = 1e4, *, dtype: torch.dtype = torch.float64,
                           device: torch.device | str | None = None) -> torch.Tensor:
    """The frequency ladder ``theta_i = base^(-2i/d)``, ``i = 0 .. d/2 - 1``: ``(d//2,)``.

    Shared by sinusoidal tables and RoPE. Computed in float64, then cast to ``dtype``.
    """
    check_dim_even("d", d)
    check_positive("base", base)
    if isinstance(base, (int, float)) and base <= 1:
        raise ValueError(f"base: expected a number > 1, got {base!r}")
    i = torch.arange(d // 2, dtype=torch.float64, device=device)
    return torch.pow(torch.tensor(float(base), dtype=torch.float64, device=device), -2.0 * i / d).to(dtype)
