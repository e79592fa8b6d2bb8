"""The AM-Softmax margin widget (kexue.fm/archives/8656, book/embeddings/margin-softmax.ipynb).

Knobs: the margin ``m`` and the scale ``s``. A 2-D feature ``z`` at angle ``phi`` on the unit
circle, ``C`` class centres at fixed angles. Panel (a): the circle with the centres; the arc
where class ``y`` wins the plain argmax (the Voronoi arc of its centre) and the narrower arc
where it wins *with margin*, ``cos(z, c_y) - m > max_{i != y} cos(z, c_i)``. Panel (b): the
AM-Softmax loss of a sample of class 0 and its probability ``p_0`` against ``phi``, with the
margin-free normalised softmax (``m = 0``) at the same scale for comparison.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from kexue_lib._core import check_int, to_numpy64
from kexue_lib.ranking_losses import am_softmax_loss
from kexue_lib.widgets.frontends import Control, Explorer, axes_title

__all__ = ["margin_circle_explorer"]

_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")


def margin_circle_explorer(
    *, centre_degrees: tuple[float, ...] = (0.0, 100.0, 220.0), n_grid: int = 721
) -> Explorer:
    """Explorer over ``m`` in [0, 0.8] and ``s`` in [1, 64] (log) for centres at ``centre_degrees``.

    ``data()`` holds ``phi`` (grid of angles, radians), ``cos: (n_grid, C)``, ``loss`` and
    ``p0`` (class 0 as target, AM-Softmax at ``(s, m)``), ``loss_m0``/``p0_m0`` (``m = 0``),
    ``argmax_class`` and ``margin_class`` (the class that wins with margin, -1 where none does),
    ``accept_width`` (radians of the circle on which class 0 wins with margin).
    """
    check_int("n_grid", n_grid, minimum=8)
    C = len(centre_degrees)
    if not 2 <= C <= len(_COLORS):
        raise ValueError(f"centre_degrees: expected 2 to {len(_COLORS)} angles, got {C}")
    ang = torch.tensor(centre_degrees, dtype=torch.float64) * math.pi / 180
    centres = torch.stack([ang.cos(), ang.sin()], 1)
    phi = torch.linspace(-math.pi, math.pi, n_grid, dtype=torch.float64)
    z = torch.stack([phi.cos(), phi.sin()], 1)
    cos = z @ centres.T
    target = torch.zeros(n_grid, dtype=torch.long)
    top2 = cos.topk(2, dim=1)
    argmax_class = top2.indices[:, 0]
    gap = top2.values[:, 0] - top2.values[:, 1]
    dphi = float(phi[1] - phi[0])

    def compute(m: float, s: float) -> dict:
        loss = am_softmax_loss(z, centres, target, scale=s, margin=m, reduction="none")
        loss0 = am_softmax_loss(z, centres, target, scale=s, margin=0.0, reduction="none")
        margin_class = torch.where(gap > m, argmax_class, torch.full_like(argmax_class, -1))
        return {
            "phi": to_numpy64(phi),
            "centres": to_numpy64(centres),
            "cos": to_numpy64(cos),
            "loss": to_numpy64(loss),
            "p0": np.exp(-to_numpy64(loss)),
            "loss_m0": to_numpy64(loss0),
            "p0_m0": np.exp(-to_numpy64(loss0)),
            "argmax_class": argmax_class.numpy(),
            "margin_class": margin_class.numpy(),
            "accept_width": float((margin_class == 0).sum()) * dphi,
            "m": m,
            "s": s,
        }

    def draw(fig, d: dict) -> None:
        fig.clear()
        ax1 = fig.add_subplot(1, 2, 1)
        ax2 = fig.add_subplot(1, 2, 2)
        phi_, c = d["phi"], d["centres"]
        x, y = np.cos(phi_), np.sin(phi_)
        ax1.plot(x, y, color="0.85", lw=6, zorder=0)
        for k in range(C):
            own = d["argmax_class"] == k
            ax1.plot(
                np.where(own, 1.1 * x, np.nan),
                np.where(own, 1.1 * y, np.nan),
                color=_COLORS[k],
                lw=2,
                alpha=0.4,
            )
            win = d["margin_class"] == k
            ax1.plot(np.where(win, x, np.nan), np.where(win, y, np.nan), color=_COLORS[k], lw=6)
            ax1.plot([0, c[k, 0]], [0, c[k, 1]], color=_COLORS[k], lw=1.5)
            ax1.text(
                1.28 * c[k, 0],
                1.28 * c[k, 1],
                f"c{k}",
                ha="center",
                va="center",
                color=_COLORS[k],
                fontsize=9,
            )
        ax1.set(xlim=(-1.45, 1.45), ylim=(-1.45, 1.45), xticks=[], yticks=[], aspect="equal")
        axes_title(ax1, "thick: wins with margin; thin: plain argmax")
        deg = phi_ * 180 / math.pi
        ax2.plot(deg, d["loss"], color="tab:blue", label="AM-Softmax loss")
        ax2.plot(deg, d["loss_m0"], color="tab:blue", ls="--", lw=1, label="loss, m = 0")
        ax2b = ax2.twinx()
        ax2b.plot(deg, d["p0"], color="tab:red", label="p(class 0)")
        ax2b.plot(deg, d["p0_m0"], color="tab:red", ls="--", lw=1)
        ax2b.set_ylim(0, 1.02)
        ax2b.set_ylabel("p(class 0)", color="tab:red")
        ax2.set(
            xlabel="angle of z (degrees)",
            ylabel="loss of a class-0 sample",
            xlim=(-180, 180),
            ylim=(0, max(1.0, float(np.max(d["loss"])) * 1.35)),
        )
        ax2.set_xticks([-180, -90, 0, 90, 180])
        ax2.legend(loc="upper center", fontsize=7, frameon=False)
        axes_title(ax2, f"class-0 arc with margin: {d['accept_width'] * 180 / math.pi:.0f}°")

    return Explorer(
        controls=[
            Control("m", (0.0, 0.8), 0.35, step=0.05, label="margin m"),
            Control("s", (1.0, 64.0), 30.0, log=True, label="scale s"),
        ],
        compute=compute,
        draw=draw,
        figsize=(9.0, 3.4),
        title=lambda v: f"margin m = {v['m']:.2f}, scale s = {v['s']:.3g}",
    )
