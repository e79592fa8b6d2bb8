"""The von Mises-Fisher concentration widget (kexue.fm/archives/8404).

Knobs: the concentration ``kappa`` (log slider) and the ambient dimension ``d``. Panels:
(a) vMF samples seen in the plane of the mean direction ``mu`` and one fixed direction ``e``
orthogonal to it, ``(mu.x, e.x) = (cos phi, sin phi * nu.e)``: on the circle for ``d = 2``,
inside the disc for ``d >= 3``, with the mean ``E[x] = A_d(kappa) mu`` as an arrow;
(b) a histogram of the cosine ``w = mu.x`` against its density
``∝ exp(kappa w)(1 - w^2)^((d-3)/2)``; (c) ``KL(vMF || uniform)`` against ``kappa`` for this
``d``: one number per ``(d, kappa)``, the same for every ``mu``, with the small-``kappa`` law
``kappa^2 / (2d)``.

Common random numbers: the uniforms of the inverse CDF and the directions ``nu.e`` are drawn
once, so moving ``kappa`` slides the same points toward ``mu``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from kexue_lib._core import check_positive, make_generator, to_numpy64
from kexue_lib.geometry import sample_sphere
from kexue_lib.training import single_thread
from kexue_lib.vmf import (
    VMFCosineSampler,
    vmf_cosine_log_density,
    vmf_kl_to_uniform,
    vmf_mean_length,
)
from kexue_lib.widgets.frontends import Control, Explorer, axes_title

__all__ = ["DIMS", "concentration_explorer"]

DIMS = (2, 3, 8, 32, 128)


def concentration_explorer(
    *,
    n_samples: int = 600,
    kappa_range: tuple[float, float] = (0.1, 3000.0),
    n_curve: int = 41,
    seed: int = 0,
) -> Explorer:
    """vMF explorer: ``kappa`` concentrates the samples; the KL to the uniform prior is a
    single number per ``(d, kappa)``.

    Draws at construction (float64, from ``seed``), per ``d`` in :data:`DIMS`, the component
    ``nu.e`` of a uniform direction on the sphere orthogonal to ``mu`` (``±1`` for ``d = 2``);
    the uniforms fed to the inverse CDF of the angle come from seed ``seed + 1`` on every
    call, so all settings share them. Tabulates
    panel (c) on ``n_curve`` log-spaced ``kappa`` values.
    """
    check_positive("n_samples", n_samples, integer=True)
    check_positive("n_curve", n_curve, integer=True)
    lo, hi = kappa_range
    check_positive("kappa_range", lo)
    if not hi > lo:
        raise ValueError(f"kappa_range: expected (lo, hi) with hi > lo > 0, got {kappa_range}")
    g = make_generator(seed)
    nu_e = {
        d: sample_sphere(n_samples, d - 1, dtype=torch.float64, generator=g)[:, 0] for d in DIMS
    }
    kappas = np.geomspace(lo, hi, n_curve)
    with single_thread():  # small tensors: threads only add hand-off cost
        kl_curves = {
            d: np.array([float(vmf_kl_to_uniform(d, float(k))) for k in kappas]) for d in DIMS
        }

    def compute(*, kappa: float, d: int) -> dict:
        with single_thread():
            return _compute(float(kappa), d)

    def _compute(kappa: float, d: int) -> dict:
        sampler = VMFCosineSampler(d, kappa, n_grid=2**12)
        # the same uniforms for every (kappa, d): a fresh generator with a fixed seed
        phi = sampler.sample_angle(n_samples, generator=make_generator(seed + 1))
        w = torch.cos(phi)
        plane = torch.stack([w, torch.sin(phi) * nu_e[d]], 1)
        a = float(vmf_mean_length(d, kappa))
        kl = float(vmf_kl_to_uniform(d, kappa))
        w_np = to_numpy64(w)
        left = max(-1.0, float(np.quantile(w_np, 0.002)) - 0.05 * (1 - float(w_np.min())))
        grid = np.linspace(left, 1.0, 240)[:-1]
        hist, edges = np.histogram(w_np, bins=40, range=(left, 1.0), density=True)
        dens = np.exp(to_numpy64(vmf_cosine_log_density(torch.from_numpy(grid), d, kappa)))
        return {
            "kappa": kappa,
            "d": d,
            "plane": to_numpy64(plane),
            "w": w_np,
            "mean_length": a,
            "sample_mean": to_numpy64(plane.mean(0)),
            "grid": grid,
            "density": dens,
            "hist": hist,
            "edges": edges,
            "kl": kl,
            "kappas": kappas,
            "kl_curve": kl_curves[d],
            "small_kappa": kappas**2 / (2 * d),
            "n_samples": n_samples,
        }

    t = np.linspace(0, 2 * math.pi, 181)

    kl_top = {d: 5 * float(kl_curves[d].max()) for d in DIMS}
    x_ticks = [v for v in (0.1, 1.0, 10.0, 100.0, 1000.0) if lo <= v <= hi]

    def draw(fig, data: dict) -> None:
        from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

        fig.set_layout_engine("none")
        axA, axB, axC = fig.subplots(
            1,
            3,
            gridspec_kw={
                "width_ratios": [0.8, 1.1, 1.1],
                "left": 0.03,
                "right": 0.99,
                "bottom": 0.15,
                "top": 0.8,
                "wspace": 0.3,
            },
        )
        d, kappa = data["d"], data["kappa"]
        # (a) the samples in the (mu, e) plane
        axA.plot(np.cos(t), np.sin(t), color="0.6", lw=0.8)
        p = data["plane"]
        axA.scatter(p[:, 0], p[:, 1], s=3, color="tab:blue", alpha=0.5, linewidths=0)
        axA.plot([0, data["mean_length"]], [0, 0], color="tab:red", lw=2)
        axA.plot([1], [0], "k+", ms=8)
        axA.set(xlim=(-1.1, 1.1), ylim=(-1.1, 1.1), aspect="equal", xticks=[], yticks=[])
        axA.axis("off")
        axes_title(axA, f"(a) {data['n_samples']} draws, axes μ·x and e·x\n"
                   f"red: E[x] = A_d(κ) μ, A = {data['mean_length']:.3f}")  # fmt: skip
        # (b) cosine histogram and its density (red)
        g = data["grid"]
        axB.stairs(data["hist"], data["edges"], fill=True, color="tab:blue", alpha=0.45)
        axB.plot(g, data["density"], color="tab:red", lw=1.2)
        top = 1.1 * max(float(data["density"].max()), float(data["hist"].max()))
        axB.set(xlabel="w = μ·x", ylabel="density (linear)", xlim=(g[0], 1.0), ylim=(0, top))
        axB.xaxis.set_major_locator(FixedLocator(np.round(np.linspace(g[0], 1.0, 4), 3)))
        axB.set_yticks([])  # the shape is the point; its scale changes by orders with kappa
        axes_title(axB, f"(b) the cosine w, d = {d}, κ = {kappa:.3g}\n"
                   "red: ∝ exp(κw)(1−w²)^((d−3)/2)")  # fmt: skip
        # (c) the constant KL
        axC.loglog(data["kappas"], data["kl_curve"], color="tab:purple")
        axC.loglog(data["kappas"], data["small_kappa"], color="0.5", ls=":", lw=1)
        axC.plot([kappa], [data["kl"]], "o", color="tab:red", ms=4)
        axC.set(xlabel="κ (log)", ylabel="nats (log)", ylim=(1e-5, kl_top[d]))
        plain = FuncFormatter(lambda v, _: f"{v:g}")
        axC.xaxis.set_major_locator(FixedLocator(x_ticks))
        axC.yaxis.set_major_locator(FixedLocator([1e-4, 1e-2, 1.0, 100.0]))
        for axis in (axC.xaxis, axC.yaxis):
            axis.set_major_formatter(plain)
            axis.set_minor_locator(NullLocator())
        axes_title(axC, f"(c) KL(vMF ‖ uniform) = {data['kl']:.3f} nats, every μ\n"
                   "dotted: κ²/(2d), the small-κ law")  # fmt: skip

    controls = [
        Control(
            "kappa",
            (float(lo), float(hi)),
            10.0 if lo <= 10 <= hi else float(lo),
            log=True,
            label="κ",
        ),  # fmt: skip
        Control("d", list(DIMS), 3, label="d"),
    ]
    return Explorer(controls=controls, compute=compute, draw=draw, figsize=(11.0, 3.7))
