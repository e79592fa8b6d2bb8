"""CoSENT's scale widget (kexue.fm/archives/8847): where the gradient of one batch goes.

Knob: the scale ``lambda`` (log slider). Panel (a): for a fixed batch of pair cosines with
graded labels, the gradient ``dL/dc_a`` of every pair against its cosine, coloured by label
(pairs pushed up have negative gradients). Panel (b): the share of the total gradient
magnitude carried by the pairs of the batch's single most violated ordered pair, against
``lambda`` (small lambda: every pair is pushed; large lambda: hinge-like, only the worst).
"""

from __future__ import annotations

import numpy as np
import torch

from kexue_lib._core import check_int, make_generator
from kexue_lib.ranking_losses import pairwise_ranking_loss
from kexue_lib.widgets.frontends import Control, Explorer

__all__ = ["cosent_gradients", "cosent_scale_explorer"]


def cosent_gradients(cos: torch.Tensor, labels: torch.Tensor, scale: float) -> torch.Tensor:
    """``dL/dc: (B,)`` of ``pairwise_ranking_loss(cos, labels, scale=scale)`` by autograd."""
    c = cos.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(pairwise_ranking_loss(c, labels, scale=scale), c)
    return g


def _worst_share(c: torch.Tensor, y: torch.Tensor, g: torch.Tensor) -> float:
    ordered = y[:, None] > y[None, :]
    gap = (c[None, :] - c[:, None]).masked_fill(~ordered, -torch.inf)  # c_b - c_a
    a, b = divmod(int(torch.argmax(gap)), len(c))
    mag = g.abs()
    return float((mag[a] + mag[b]) / mag.sum())


def cosent_scale_explorer(
    *, n_pairs: int = 24, scale_range: tuple[float, float] = (1.0, 50.0), seed: int = 0
) -> Explorer:
    """Explorer of CoSENT's per-pair gradients against the scale ``lambda``.

    The batch (float64, from ``seed``): labels uniform in 0..5, cosines ``0.1 y + 0.25 noise``
    clipped to [-1, 1] (so some ordered pairs are violated). Panel (b) is tabulated on 25
    log-spaced scales.
    """
    check_int("n_pairs", n_pairs, minimum=2)
    lo, hi = scale_range
    if not 0 < lo < hi:
        raise ValueError(f"scale_range: expected (lo, hi) with 0 < lo < hi, got {scale_range}")
    g = make_generator(seed)
    y = torch.randint(0, 6, (n_pairs,), generator=g).to(torch.float64)
    c = (0.1 * y + 0.25 * torch.randn(n_pairs, generator=g, dtype=torch.float64)).clamp(-1, 1)
    grid = np.geomspace(lo, hi, 25)
    shares = np.array([_worst_share(c, y, cosent_gradients(c, y, float(s))) for s in grid])

    def compute(scale: float) -> dict:
        grad = cosent_gradients(c, y, float(scale))
        return {
            "scale": float(scale),
            "cos": c.numpy(),
            "labels": y.numpy(),
            "grad": grad.numpy(),
            "worst_share": _worst_share(c, y, grad),
            "grid": grid,
            "grid_share": shares,
        }

    def draw(fig, data: dict) -> None:
        fig.set_layout_engine("none")
        axA, axB = fig.subplots(
            1,
            2,
            gridspec_kw={"left": 0.08, "right": 0.98, "bottom": 0.17, "top": 0.86, "wspace": 0.3},
        )
        axA.scatter(
            data["cos"], data["grad"], c=data["labels"], cmap="viridis", vmin=0, vmax=5, s=22
        )
        axA.axhline(0, color="0.6", lw=0.8)
        axA.set_xlabel("cosine $c_a$ of pair a")
        axA.set_ylabel(r"$\partial L / \partial c_a$ (colour: label 0-5)")
        axA.set_title(f"(a) per-pair gradient, λ = {data['scale']:.3g}", fontsize=9)
        axB.plot(data["grid"], data["grid_share"], color="tab:blue")
        axB.plot([data["scale"]], [data["worst_share"]], "o", color="tab:red")
        axB.set_xscale("log")
        axB.set_ylim(0, 1.02)
        axB.set_xlabel("scale λ")
        axB.set_ylabel("share of |gradient|")
        axB.set_title("(b) share on the most violated ordered pair", fontsize=9)

    controls = [
        Control(
            "scale",
            (float(lo), float(hi)),
            20.0 if lo <= 20 <= hi else float(lo),
            log=True,
            label="λ",
        )
    ]
    return Explorer(controls=controls, compute=compute, draw=draw, figsize=(10.0, 3.4))
