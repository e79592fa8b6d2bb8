"""The SquarePlus widget: curves against ReLU and SoftPlus, and the error ``e_b(x)`` for a chosen ``b``.

Knob: ``b``. The figure of chapter ``book/optimization/squareplus.ipynb``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from kexue_lib._core import check_int, to_numpy64
from kexue_lib.activations import SQUAREPLUS_DOMINANCE_B, softplus_exact, squareplus
from kexue_lib.widgets.frontends import Control, Explorer, axes_title

__all__ = ["squareplus_explorer"]


def squareplus_explorer(*, n_grid: int = 401, x_max: float = 6.0) -> Explorer:
    """SquarePlus explorer. Panel (a): ReLU, SoftPlus and SquarePlus_b on ``[−x_max, x_max]``;
    panel (b): ``e_b(x) = SquarePlus_b(x) − SoftPlus(x)`` with its max |e| and min (negative min
    means SquarePlus dips below SoftPlus)."""
    check_int("n_grid", n_grid, minimum=3)
    if not (isinstance(x_max, (int, float)) and 0 < x_max <= 100):
        raise ValueError(f"x_max: expected a number in (0, 100], got {x_max!r}")
    x = torch.linspace(-x_max, x_max, n_grid, dtype=torch.float64)
    sp = softplus_exact(x)
    xs, sps, relu = to_numpy64(x), to_numpy64(sp), np.maximum(to_numpy64(x), 0)

    def compute(*, b: float) -> dict:
        y = squareplus(x, float(b))
        e = y - sp
        return {
            "b": float(b),
            "x": xs,
            "relu": relu,
            "softplus": sps,
            "squareplus": to_numpy64(y),
            "err": to_numpy64(e),
            "max_abs_err": e.abs().max().item(),
            "min_err": e.min().item(),
            "at_zero": math.sqrt(b) / 2,
        }

    def draw(fig, d: dict) -> None:
        fig.set_layout_engine("none")
        axA, axB = fig.subplots(
            1,
            2,
            gridspec_kw={"left": 0.07, "right": 0.98, "bottom": 0.16, "top": 0.8, "wspace": 0.28},
        )
        axA.plot(d["x"], d["relu"], color="0.5", lw=1, label="ReLU")
        axA.plot(d["x"], d["softplus"], color="tab:blue", label="SoftPlus")
        axA.plot(d["x"], d["squareplus"], color="tab:red", label="SquarePlus")
        axA.set(xlabel="x", ylim=(-0.3, d["x"].max() + 0.3))
        axA.legend(loc="upper left", fontsize=8, frameon=False)
        axes_title(axA, f"(a) b = {d['b']:.4f}; SquarePlus(0) = √b/2 = {d['at_zero']:.3f}\n"
                   f"SoftPlus(0) = log 2 = {math.log(2):.3f}")  # fmt: skip
        axB.plot(d["x"], d["err"], color="tab:red")
        axB.axhline(0, color="0.5", lw=0.8)
        axB.set(xlabel="x", ylabel="e_b(x)", ylim=(-0.7, 0.45))
        dom = "≥ SoftPlus everywhere" if d["min_err"] >= -1e-12 else "dips below SoftPlus"
        axes_title(axB, f"(b) max |e_b| = {d['max_abs_err']:.4f}, min e_b = {d['min_err']:.4f}\n"
                   f"{dom} (threshold b = {SQUAREPLUS_DOMINANCE_B:.4f})")  # fmt: skip

    controls = [Control("b", (0.0, 4.0), 1.0, step=0.01)]
    return Explorer(controls=controls, compute=compute, draw=draw, figsize=(9.0, 3.2))
