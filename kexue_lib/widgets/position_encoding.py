"""The sinusoidal inner-product widget: how the frequency ladder's base sets the long-range decay.

Knobs: ``log10_base`` (the ladder ``theta_i = base^(-2i/d)``) and the size ``d``. Panels:
(A) the normalised inner product ``<p_m, p_n> / (d/2)`` for ``|m - n| <= 128`` next to its
continuum limit ``Re int_0^1 exp(i Delta base^(-t)) dt``; (B) the same on a log axis out to
``10^7`` with the leading-order envelope ``1 - (gamma + ln Delta)/ln base`` and its zero
``base e^(-gamma)``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from kexue_lib._core import to_numpy64
from kexue_lib.position_encoding import oscillatory_integral, sinusoidal_inner_product
from kexue_lib.widgets.frontends import Control, Explorer

__all__ = ["inner_product_explorer"]

EULER_GAMMA = 0.5772156649015329


def inner_product_explorer(*, n_near: int = 128, far: float = 1e7, n_far: int = 400) -> Explorer:
    """Sinusoidal inner-product explorer: discrete sum, integral and envelope vs ``Delta``.

    ``n_near``: half-width of the linear panel; ``far``: right end of the log panel (``n_far``
    log-spaced points from 1). Nothing random.
    """
    if n_near < 1 or far <= 10 or n_far < 10:
        raise ValueError(
            f"n_near, far, n_far: expected >= 1, > 10, >= 10, got {n_near}, {far}, {n_far}"
        )
    near = torch.arange(-n_near, n_near + 1, dtype=torch.float64)
    far_grid = torch.logspace(0, math.log10(far), n_far, dtype=torch.float64)

    def compute(*, log10_base: float, d: int) -> dict:
        b = 10.0**log10_base
        half = d / 2
        s_near = sinusoidal_inner_product(near, d, base=b) / half
        s_far = sinusoidal_inner_product(far_grid, d, base=b) / half
        i_near = oscillatory_integral(near, base=b).real
        i_far = oscillatory_integral(far_grid, base=b).real
        env = 1 - (EULER_GAMMA + torch.log(far_grid)) / math.log(b)
        neg = torch.nonzero(i_far < 0)
        first_zero = float(far_grid[neg[0, 0]]) if len(neg) else float("nan")
        return {
            "base": b,
            "d": d,
            "near": to_numpy64(near),
            "sum_near": to_numpy64(s_near),
            "integral_near": to_numpy64(i_near),
            "far": to_numpy64(far_grid),
            "sum_far": to_numpy64(s_far),
            "integral_far": to_numpy64(i_far),
            "envelope": to_numpy64(env),
            "zero_predicted": b * math.exp(-EULER_GAMMA),
            "zero_integral": first_zero,
            "gap_at_near_edge": float(s_near[-1] - i_near[-1]),
        }

    def draw(fig, data: dict) -> None:
        axA, axB = fig.subplots(1, 2)
        axA.plot(
            data["near"],
            data["sum_near"],
            lw=1,
            color="tab:blue",
            label=f"discrete sum, d={data['d']}",
        )
        axA.plot(data["near"], data["integral_near"], lw=1.5, ls="--", color="k", label="integral")
        axA.axhline(0, color="0.7", lw=0.8)
        axA.set(
            xlabel="relative position Δ = m − n", ylabel="⟨p_m, p_n⟩ / (d/2)", ylim=(-0.6, 1.05)
        )
        axA.legend(fontsize=8, loc="lower center")
        axA.set_title("short range (linear axis)", fontsize=9)
        lx = np.log10(data["far"])
        axB.plot(lx, data["sum_far"], lw=0.8, color="tab:blue", alpha=0.7, label="discrete sum")
        axB.plot(lx, data["integral_far"], lw=1.5, color="k", ls="--", label="integral")
        axB.plot(lx, data["envelope"], lw=1, color="tab:red", label="1 − (γ + ln Δ)/ln b")
        z = data["zero_predicted"]
        axB.axvline(math.log10(z), color="tab:red", lw=0.8, ls=":", label=f"b·e^(−γ) ≈ {z:.3g}")
        axB.axhline(0, color="0.7", lw=0.8)
        axB.set(xlabel="log10 Δ", ylabel="normalised inner product", ylim=(-0.6, 1.05))
        axB.legend(fontsize=7, loc="lower left")
        axB.set_title("long range", fontsize=9)

    controls = [
        Control("log10_base", (1.0, 6.0), 4.0, step=0.25, label="log10(base)"),
        Control("d", [16, 32, 64, 128, 256, 512], 128, label="d"),
    ]

    def title(v: dict) -> str:
        return f"base = 10^{v['log10_base']:.2f}, d = {v['d']}"

    return Explorer(controls=controls, compute=compute, draw=draw, figsize=(9.0, 3.2), title=title)
