"""The HSIC bandwidth widget (kexue.fm/archives/6910).

Knobs: the Gaussian kernel bandwidth, as a multiple ``c`` of the median heuristic (the same
multiple for ``x`` and ``y``, each with its own median), and the kind of dependence (linear,
``y = x^2 + noise``, a noisy circle). Panels: (a) the fixed sample; (b) the biased HSIC
``tr(KHLH)/n^2`` against ``c`` (log axis) with the current value marked, and the unbiased estimate; (c) the p-value of
Gretton's gamma test against ``c``. Too small a bandwidth makes ``K -> I``, too large makes
``K -> 11^T``; either way the kernel stops seeing the pairing: the unbiased HSIC goes to 0,
the biased one to its floor ``(n - 1)/n^2`` (``K = L = I``) or to 0.

Everything is precomputed at construction; a redraw only reads arrays.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from kexue_lib._core import check_int, check_positive, make_generator, to_numpy64
from kexue_lib.hsic import hsic, hsic_gamma_test, median_bandwidth
from kexue_lib.training import single_thread
from kexue_lib.widgets.frontends import Control, Explorer, axes_title

__all__ = ["KINDS", "SCALES", "bandwidth_explorer", "dependence_sample"]

KINDS = ("linear", "square", "circle")
SCALES = (0.01, 0.04, 0.2, 1.0, 5.0, 25.0, 100.0)


def dependence_sample(
    kind: str, n: int, *, noise: float = 0.1, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """A paired sample ``(x, y)`` of shape ``(n,)`` each, float64 on the CPU.

    ``linear``: ``y = x/2 + noise eps``, ``x ~ N(0, 1)``; ``square``: ``y = x^2 + noise eps``,
    ``x ~ U(-1, 1)`` (Pearson correlation 0); ``circle``: a point at a uniform angle on the
    unit circle plus isotropic noise (uncorrelated, dependent).
    """
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {list(KINDS)}, got {kind!r}")
    check_int("n", n)
    if n < 6:
        raise ValueError(f"n: expected at least 6 points, got {n}")
    check_positive("noise", noise)
    f64 = torch.float64
    if kind == "linear":
        x = torch.randn(n, dtype=f64, generator=generator)
        y = 0.5 * x + noise * torch.randn(n, dtype=f64, generator=generator)
    elif kind == "square":
        x = 2 * torch.rand(n, dtype=f64, generator=generator) - 1
        y = x**2 + noise * torch.randn(n, dtype=f64, generator=generator)
    else:
        t = 2 * math.pi * torch.rand(n, dtype=f64, generator=generator)
        e = noise * torch.randn(2, n, dtype=f64, generator=generator)
        x, y = torch.cos(t) + e[0], torch.sin(t) + e[1]
    return x, y


def bandwidth_explorer(*, n: int = 200, noise: float = 0.1, seed: int = 0) -> Explorer:
    """HSIC and the gamma-test p-value against the bandwidth multiple ``c`` in :data:`SCALES`.

    Draws one sample per kind in :data:`KINDS` from ``seed`` (:func:`dependence_sample`) and
    tabulates, for every ``c``, ``hsic(x, y, bandwidth_x=c s_x, bandwidth_y=c s_y)`` (biased
    and unbiased) and :func:`kexue_lib.hsic.hsic_gamma_test`'s p-value (NaN where the sample is degenerate
    at that bandwidth), with ``s_x, s_y`` the median-heuristic bandwidths.
    """
    check_int("n", n)
    if n < 6:
        raise ValueError(f"n: expected at least 6 points, got {n}")
    check_positive("noise", noise)
    g = make_generator(seed)
    table: dict[str, dict] = {}
    with single_thread():
        for kind in KINDS:
            x, y = dependence_sample(kind, n, noise=noise, generator=g)
            sx, sy = float(median_bandwidth(x)), float(median_bandwidth(y))
            h, hu, p = [], [], []
            for c in SCALES:
                kw = dict(bandwidth_x=c * sx, bandwidth_y=c * sy)
                h.append(float(hsic(x, y, **kw)))
                hu.append(float(hsic(x, y, estimator="unbiased", **kw)))
                try:
                    p.append(hsic_gamma_test(x, y, **kw).p_value)
                except ValueError:
                    p.append(float("nan"))
            pearson = float(torch.corrcoef(torch.stack([x, y]))[0, 1])
            table[kind] = {
                "x": to_numpy64(x),
                "y": to_numpy64(y),
                "sx": sx,
                "sy": sy,
                "hsic_curve": np.array(h),
                "hsic_u_curve": np.array(hu),
                "p_curve": np.array(p),
                "pearson": pearson,
            }
    scales = np.array(SCALES)

    def compute(*, scale: float, kind: str) -> dict:
        t = table[kind]
        i = SCALES.index(scale)
        return {
            **t,
            "kind": kind,
            "scale": scale,
            "scales": scales,
            "hsic": float(t["hsic_curve"][i]),
            "p_value": float(t["p_curve"][i]),
            "n": n,
        }

    def draw(fig, data: dict) -> None:
        from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

        # fixed margins instead of the constrained layout, which took half of a redraw
        fig.set_layout_engine("none")
        axA, axB, axC = fig.subplots(
            1,
            3,
            gridspec_kw={
                "width_ratios": [0.9, 1.1, 1.1],
                "left": 0.05,
                "right": 0.99,
                "bottom": 0.15,
                "top": 0.8,
                "wspace": 0.32,
            },
        )
        axA.scatter(data["x"], data["y"], s=4, color="tab:blue", alpha=0.6, linewidths=0)
        axA.set(xlabel="x", ylabel="y")
        axes_title(axA, f"(a) {data['kind']}, n = {data['n']}\nPearson r = {data['pearson']:.3f}")
        c = data["scale"]
        axB.semilogx(data["scales"], data["hsic_curve"], "o-", color="tab:purple", ms=3)
        axB.semilogx(data["scales"], data["hsic_u_curve"], "s--", color="tab:orange", ms=3)
        axB.axhline(1 / data["n"], color="0.5", ls=":", lw=1)
        axB.plot([c], [data["hsic"]], "o", color="tab:red", ms=6)
        axB.set(xlabel="bandwidth / median heuristic (log)", ylabel="HSIC")
        axes_title(axB, f"(b) HSIC_b = {data['hsic']:.2e} at c = {c:g}\n"
                   "purple: biased, orange: unbiased, dotted: 1/n")  # fmt: skip
        pc = np.clip(data["p_curve"], 1e-16, 1.0)
        axC.loglog(data["scales"], pc, "o-", color="tab:green", ms=3)
        axC.axhline(0.05, color="0.5", ls=":", lw=1)
        if np.isfinite(data["p_value"]):
            axC.plot([c], [max(data["p_value"], 1e-16)], "o", color="tab:red", ms=6)
        axC.set(xlabel="bandwidth / median heuristic (log)", ylabel="p-value (log)",
                ylim=(1e-16, 2.0))  # fmt: skip
        axes_title(axC, f"(c) gamma-test p = {data['p_value']:.2g}\ndotted: α = 0.05")
        # plain-text tick labels at fixed places: log axes' default 10^k labels go through
        # mathtext, the most expensive part of a redraw
        plain = FuncFormatter(lambda v, _: f"{v:g}")
        for ax in (axB, axC):
            ax.xaxis.set_major_locator(FixedLocator([0.01, 0.1, 1, 10, 100]))
            ax.xaxis.set_major_formatter(plain)
            ax.xaxis.set_minor_locator(NullLocator())
        axC.yaxis.set_major_locator(FixedLocator([1e-15, 1e-10, 1e-5, 1.0]))
        axC.yaxis.set_major_formatter(plain)
        axC.yaxis.set_minor_locator(NullLocator())

    controls = [
        Control("scale", list(SCALES), 1.0, label="c"),
        Control("kind", list(KINDS), "square", label="dependence"),
    ]
    return Explorer(controls=controls, compute=compute, draw=draw, figsize=(11.0, 3.5))
