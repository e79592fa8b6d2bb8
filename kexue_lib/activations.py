"""SquarePlus, ``(x + sqrt(x² + b)) / 2``: a smooth ReLU built from add, multiply and sqrt.

Chapter ``book/optimization/squareplus.ipynb`` (post 8833). The naive formula cancels for
large negative ``x`` (``x + sqrt(x² + b)`` is a difference of two nearly equal numbers); for
``x < 0`` we use the algebraically equal ``b / (2(sqrt(x² + b) − x))``. Half-precision inputs
are computed in float32 and cast back.
"""

from __future__ import annotations

import math

import torch

from kexue_lib._core import check_int, check_positive, check_tensor, work_dtype

__all__ = [
    "SQUAREPLUS_DOMINANCE_B",
    "squareplus",
    "squareplus_naive",
    "squareplus_grad",
    "SquarePlus",
    "softplus_exact",
    "squareplus_minimax_b",
]

#: The smallest ``b`` with SquarePlus ≥ SoftPlus everywhere: ``4 log² 2``.
SQUAREPLUS_DOMINANCE_B = 4 * math.log(2) ** 2


def _check_b(b) -> float:
    check_positive("b", b, strict=False)
    return float(b)


def squareplus(x: torch.Tensor, b: float = SQUAREPLUS_DOMINANCE_B) -> torch.Tensor:
    """``(x + sqrt(x² + b)) / 2``, cancellation-free; keeps dtype and device; differentiable."""
    check_tensor("x", x, floating=True)
    b = _check_b(b)
    if b == 0:  # the limit is ReLU (hypot's gradient at (0, 0) would be NaN)
        return torch.relu(x)
    xw = x.to(work_dtype(x.dtype))
    # p = SquarePlus(|x|) has no cancellation; for x < 0 use f(x) f(−x) = b/4, i.e.
    # f(x) = b / (4 f(|x|)) = b / (2 (sqrt(x² + b) − x)). hypot keeps x² from overflowing.
    r = torch.hypot(xw, torch.tensor(math.sqrt(b), dtype=xw.dtype, device=xw.device))
    p = (xw.abs() + r) * 0.5
    return torch.where(xw < 0, (b / 4) / p.clamp_min(1e-30), p).to(x.dtype)  # clamp: b = 0, x = 0


def squareplus_naive(x: torch.Tensor, b: float = SQUAREPLUS_DOMINANCE_B) -> torch.Tensor:
    """The textbook formula ``(x + sqrt(x² + b)) / 2`` in the input's own dtype (for comparison)."""
    check_tensor("x", x, floating=True)
    b = _check_b(b)
    return (x + torch.sqrt(x * x + b)) / 2


def squareplus_grad(x: torch.Tensor, b: float = SQUAREPLUS_DOMINANCE_B) -> torch.Tensor:
    """Closed-form derivative ``(1 + x / sqrt(x² + b)) / 2``."""
    check_tensor("x", x, floating=True)
    b = _check_b(b)
    return (1 + x / torch.sqrt(x * x + b)) / 2


class SquarePlus(torch.nn.Module):
    """Module wrapper of :func:`squareplus` with a fixed ``b``."""

    def __init__(self, b: float = SQUAREPLUS_DOMINANCE_B):
        super().__init__()
        self.b = _check_b(b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return squareplus(x, self.b)

    def extra_repr(self) -> str:
        return f"b={self.b:.6g}"


def softplus_exact(x: torch.Tensor) -> torch.Tensor:
    """``log(1 + eˣ)`` without overflow and without ``F.softplus``'s linear cut-off at 20."""
    check_tensor("x", x, floating=True)
    return torch.logaddexp(x, torch.zeros_like(x))


def _max_abs_err(b: float, x: torch.Tensor, sp: torch.Tensor) -> float:
    return float((squareplus(x, b) - sp).abs().max())


def squareplus_minimax_b(*, x_max: float = 30.0, num: int = 600_001) -> tuple[float, float, float]:
    """``b*`` minimising ``max_x |SquarePlus_b(x) − SoftPlus(x)|`` on a symmetric grid.

    Bounded scalar minimisation over ``b ∈ [1, 2]`` (float64). Returns ``(b*, max error,
    x ≥ 0 where the positive error peaks)``.
    """
    check_positive("x_max", x_max)
    check_int("num", num, minimum=3)
    from scipy.optimize import minimize_scalar

    x = torch.linspace(-x_max, x_max, num, dtype=torch.float64)
    sp = softplus_exact(x)
    res = minimize_scalar(
        lambda b: _max_abs_err(b, x, sp),
        bounds=(1.0, 2.0),
        method="bounded",
        options={"xatol": 1e-12},
    )
    b = float(res.x)
    e = squareplus(x, b) - sp
    half = x >= 0
    x_peak = float(x[half][torch.argmax(e[half])])
    return b, float(e.abs().max()), x_peak
