"""The power-mean weighting widget: ``L(γ)`` between min and max, and the weights ``α_i ∝ L_i^{γ−1}``.

Knobs: the exponent ``gamma`` and three task losses ``L1, L2, L3`` (log sliders). The figure of
chapter ``book/optimization/multitask-weighting.ipynb``, eq. (multitask-weighting-power-grad).
"""

from __future__ import annotations

import numpy as np
import torch

from kexue_lib._core import check_int, to_numpy64
from kexue_lib.multitask import power_mean, power_mean_weights
from kexue_lib.widgets.frontends import Control, Explorer, axes_title

__all__ = ["power_mean_explorer"]


def power_mean_explorer(*, n_grid: int = 161, gamma_max: float = 8.0) -> Explorer:
    """Power-mean explorer. Panel (a): ``L(γ)`` on ``[−gamma_max, gamma_max]`` with the min and
    max asymptotes and the arithmetic and geometric means marked; panel (b): the normalised
    gradient weights ``α_i ∝ L_i^{γ−1}`` at the current ``γ``."""
    check_int("n_grid", n_grid, minimum=3)
    if not (isinstance(gamma_max, (int, float)) and 0 < gamma_max <= 100):
        raise ValueError(f"gamma_max: expected a number in (0, 100], got {gamma_max!r}")
    grid = np.linspace(-gamma_max, gamma_max, n_grid)

    def compute(*, gamma: float, L1: float, L2: float, L3: float) -> dict:
        L = torch.tensor([L1, L2, L3], dtype=torch.float64)
        curve = np.array([power_mean(L, float(g)).item() for g in grid])
        return {
            "losses": to_numpy64(L),
            "grid": grid,
            "curve": curve,
            "gamma": float(gamma),
            "value": power_mean(L, float(gamma)).item(),
            "weights": to_numpy64(power_mean_weights(L, float(gamma))),
            "arith": power_mean(L, 1.0).item(),
            "geo": power_mean(L, 0.0).item(),
        }

    def draw(fig, d: dict) -> None:
        fig.set_layout_engine("none")
        axA, axB = fig.subplots(
            1, 2, gridspec_kw={"width_ratios": [1.5, 1], "left": 0.07, "right": 0.98,
                               "bottom": 0.16, "top": 0.8, "wspace": 0.28}
        )  # fmt: skip
        L = d["losses"]
        axA.plot(d["grid"], d["curve"], color="tab:purple")
        axA.axhline(L.min(), color="0.5", ls=":", lw=1)
        axA.axhline(L.max(), color="0.5", ls=":", lw=1)
        axA.plot([1, 0], [d["arith"], d["geo"]], "s", color="0.3", ms=4)
        axA.plot([d["gamma"]], [d["value"]], "o", color="tab:red", ms=6)
        axA.set(xlabel="γ", ylabel="L(γ)")
        axes_title(axA, f"(a) L(γ={d['gamma']:.2f}) = {d['value']:.3f}; dotted: min, max\n"
                   f"squares: arithmetic {d['arith']:.3f} (γ=1), geometric {d['geo']:.3f} (γ=0)")  # fmt: skip
        axB.bar(
            ["task 1", "task 2", "task 3"],
            d["weights"],
            color=["tab:blue", "tab:orange", "tab:green"],
        )
        axB.set(ylim=(0, 1.05), ylabel="α_i ∝ L_i^(γ−1)")
        axes_title(axB, "(b) weights on ∇L_i\nL = " + ", ".join(f"{v:.2g}" for v in L))

    controls = [
        Control("gamma", (-gamma_max, gamma_max), 1.0, step=0.25, label="γ"),
        Control("L1", (0.01, 100.0), 0.5, log=True),
        Control("L2", (0.01, 100.0), 2.0, log=True),
        Control("L3", (0.01, 100.0), 8.0, log=True),
    ]
    return Explorer(controls=controls, compute=compute, draw=draw, figsize=(9.0, 3.2))
