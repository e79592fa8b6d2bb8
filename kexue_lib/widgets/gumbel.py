"""The Gumbel-softmax temperature widget (kexue.fm/archives/6705, sheet 11 §4 E2).

Knobs: the temperature ``tau`` (log slider) and the class probabilities ``preset`` (k = 3).
Panels: (a) relaxed samples ``y_tau = softmax((log p + G)/tau)`` on the 2-simplex, coloured by
their argmax; (b) per class: ``p``, the argmax frequency (the same for every tau: the noise is
drawn once, so the argmax is the Gumbel-max sample) and the relaxed mean ``E[y_tau]`` (which
drifts toward 1/3 as tau grows); (c) bias² and variance of the pathwise (Gumbel-softmax)
gradient of ``E[f(y)]`` for a linear ``f(e_y) = c_y`` against tau, with the exact REINFORCE
variances (no baseline, and the baseline ``b = p . c``) as horizontal lines.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from kexue_lib._core import check_positive, make_generator, to_numpy64
from kexue_lib.estimators import pathwise_grad_samples, softmax_expectation_grad
from kexue_lib.gumbel import gumbel_max_sample, gumbel_softmax, sample_gumbel
from kexue_lib.widgets.frontends import Control, Explorer

__all__ = ["PRESETS", "temperature_explorer", "ternary_xy"]

PRESETS: dict[str, tuple[float, float, float]] = {
    "(0.6, 0.3, 0.1)": (0.6, 0.3, 0.1),
    "(1/3, 1/3, 1/3)": (1 / 3, 1 / 3, 1 / 3),
    "(0.9, 0.05, 0.05)": (0.9, 0.05, 0.05),
}
_COLORS = ("tab:blue", "tab:orange", "tab:green")
_SQ3 = math.sqrt(3.0) / 2


def ternary_xy(y: np.ndarray) -> np.ndarray:
    """Plane coordinates of simplex points ``y: (N, 3)`` -> ``(N, 2)``.

    Vertices: ``e_1 -> (0, 0)``, ``e_2 -> (1, 0)``, ``e_3 -> (1/2, sqrt(3)/2)``.
    """
    y = np.asarray(y, dtype=np.float64)
    return np.stack([y[:, 1] + 0.5 * y[:, 2], _SQ3 * y[:, 2]], axis=1)


def _reinforce_variance(p: np.ndarray, c: np.ndarray, b: float) -> float:
    """Exact trace of the covariance of ``(c_y - b)(e_y - p)``, ``y ~ p``, by enumeration."""
    eye = np.eye(len(p))
    g = p * (c - p @ c)
    second = sum(p[y] * (c[y] - b) ** 2 * ((eye[y] - p) ** 2).sum() for y in range(len(p)))
    return float(second - g @ g)


def temperature_explorer(
    *,
    n_samples: int = 1500,
    n_grad: int = 4000,
    values: tuple[float, float, float] = (1.0, -1.0, 2.0),
    tau_range: tuple[float, float] = (0.05, 10.0),
    n_grid: int = 33,
    seed: int = 0,
) -> Explorer:
    """Gumbel-softmax temperature explorer: ``tau`` moves the samples, never their argmax.

    Draws at construction (float64, from ``seed``) the Gumbel noise ``G: (n_samples, 3)`` of
    panels (a)-(b) and a second noise ``(n_grad, 3)`` for the gradient statistics of panel (c),
    both shared by every ``tau`` and preset (common random numbers), and tabulates panel (c) on
    ``n_grid`` log-spaced temperatures in ``tau_range``. ``values`` is ``c`` of the linear
    objective ``f(e_y) = c_y``; the exact gradient is ``p * (c - p . c)``.
    """
    check_positive("n_samples", n_samples, integer=True)
    check_positive("n_grad", n_grad, integer=True)
    check_positive("n_grid", n_grid, integer=True)
    lo, hi = tau_range
    check_positive("tau_range", lo)
    if not hi > lo:
        raise ValueError(f"tau_range: expected (lo, hi) with hi > lo > 0, got {tau_range}")
    c = torch.tensor(values, dtype=torch.float64)
    if c.shape != (3,):
        raise ValueError(f"values: expected 3 numbers, got {values!r}")
    g = make_generator(seed)
    noise = sample_gumbel((n_samples, 3), dtype=torch.float64, generator=g)
    grad_noise = sample_gumbel((n_grad, 3), dtype=torch.float64, generator=g)
    taus = np.geomspace(lo, hi, n_grid)
    log_taus = np.log(taus)
    c_np = to_numpy64(c)

    # every grid temperature in one autograd call: rows (tau_j, sample i), tau a column tensor
    tau_col = torch.from_numpy(taus).repeat_interleave(n_grad)[:, None]
    noise_rep = grad_noise.repeat(n_grid, 1)

    def grid_stats(logits: torch.Tensor, exact: torch.Tensor) -> np.ndarray:
        s = pathwise_grad_samples(c, logits, tau_col, n_grid * n_grad, noise=noise_rep)
        s = s.reshape(n_grid, n_grad, 3)
        bias2 = ((s.mean(1) - exact) ** 2).sum(-1)
        var = s.var(1).sum(-1)
        return to_numpy64(torch.stack([bias2, var], 1))

    tables = {}
    for name, probs in PRESETS.items():
        p = torch.tensor(probs, dtype=torch.float64)
        logits = p.log()
        exact = softmax_expectation_grad(logits, c)
        stats = grid_stats(logits, exact)
        argmax = to_numpy64(gumbel_max_sample(logits.expand(n_samples, 3), noise=noise))
        p_np = to_numpy64(p)
        tables[name] = {
            "p": p_np,
            "logits": logits,
            "exact_grad": to_numpy64(exact),
            "grid_bias2": stats[:, 0],
            "grid_var": stats[:, 1],
            "argmax": argmax.astype(np.int64),
            "argmax_freq": np.bincount(argmax.astype(np.int64), minlength=3) / n_samples,
            "reinforce_var": _reinforce_variance(p_np, c_np, 0.0),
            "reinforce_var_baseline": _reinforce_variance(p_np, c_np, float(p_np @ c_np)),
        }
    noise_np = to_numpy64(noise)

    def compute(*, tau: float, preset: str) -> dict:
        t = tables[preset]
        y = gumbel_softmax(t["logits"].expand(n_samples, 3), float(tau), noise=noise)
        # panel (c) marker: log-log interpolation of the tabulated curves at the current tau
        lt = math.log(float(tau))
        var = math.exp(np.interp(lt, log_taus, np.log(t["grid_var"])))
        bias2 = math.exp(np.interp(lt, log_taus, np.log(np.maximum(t["grid_bias2"], 1e-300))))
        y_np = to_numpy64(y)
        return {
            "tau": float(tau),
            "preset": preset,
            "p": t["p"],
            "noise": noise_np,
            "samples": y_np,
            "xy": ternary_xy(y_np),
            "argmax": t["argmax"],
            "relaxed_argmax": y_np.argmax(1),
            "argmax_freq": t["argmax_freq"],
            "relaxed_mean": y_np.mean(0),
            "values": c_np,
            "exact_grad": t["exact_grad"],
            "taus": taus,
            "grid_bias2": t["grid_bias2"],
            "grid_var": t["grid_var"],
            "mc_floor": t["grid_var"] / n_grad,
            "bias2": bias2,  # interpolated from the grid (log-log)
            "var": var,
            "reinforce_var": t["reinforce_var"],
            "reinforce_var_baseline": t["reinforce_var_baseline"],
            "n_samples": n_samples,
            "n_grad": n_grad,
        }

    tri = ternary_xy(np.eye(3))
    tri_closed = np.vstack([tri, tri[:1]])

    def draw(fig, data: dict) -> None:
        from matplotlib.ticker import FuncFormatter, NullLocator

        # fixed margins instead of the constrained layout: it would take most of the redraw time
        fig.set_layout_engine("none")
        axA, axB, axC = fig.subplots(
            1,
            3,
            gridspec_kw={
                "width_ratios": [1, 1, 1.25],
                "left": 0.02,
                "right": 0.99,
                "bottom": 0.14,
                "top": 0.8,
                "wspace": 0.28,
            },
        )
        # (a) the relaxed samples on the simplex, coloured by argmax (fixed by the shared noise)
        axA.plot(tri_closed[:, 0], tri_closed[:, 1], color="0.4", lw=1)
        cols = np.array(_COLORS)[data["argmax"]]
        axA.scatter(data["xy"][:, 0], data["xy"][:, 1], s=3, c=cols, alpha=0.5, linewidths=0)
        for i, (x, yv) in enumerate(tri):
            axA.annotate(
                f"e{'₁₂₃'[i]}",
                (x, yv),
                textcoords="offset points",
                xytext=(-4 if i == 0 else 4, -10 if i < 2 else 4),
                fontsize=9,
                ha="center",
                color=_COLORS[i],
            )
        axA.set(xlim=(-0.08, 1.08), ylim=(-0.1, 0.96), aspect="equal", xticks=[], yticks=[])
        axA.set_title(
            f"(a) {data['n_samples']} samples ỹ_τ, τ = {data['tau']:.3g}\n"
            "colour = argmax (Gumbel-max class)",
            fontsize=9,
        )
        for s in axA.spines.values():
            s.set_visible(False)
        # (b) p, argmax frequency (flat in tau) and relaxed mean (drifts toward 1/3)
        k = np.arange(3)
        w = 0.26
        axB.bar(k - w, data["p"], w, color="0.6", label="pᵢ")
        axB.bar(k, data["argmax_freq"], w, color="tab:blue", label="freq. argmax = i")
        axB.bar(k + w, data["relaxed_mean"], w, color="tab:red", alpha=0.8, label="mean of ỹ_τ,ᵢ")
        axB.axhline(1 / 3, color="0.5", ls=":", lw=1)
        axB.set(
            xticks=k,
            xticklabels=["class 1", "class 2", "class 3"],
            ylim=(0, 1),
            ylabel="probability",
        )
        axB.set_title("(b) argmax frequency stays at p;\nthe relaxed mean does not", fontsize=9)
        axB.legend(fontsize=7, frameon=False, loc="upper right")
        # (c) gradient bias^2 and variance of the pathwise estimator vs tau
        taus_ = data["taus"]
        axC.loglog(taus_, data["grid_var"], color="tab:purple", label="pathwise variance")
        axC.loglog(
            taus_, np.maximum(data["grid_bias2"], 1e-12), color="tab:red", label="pathwise bias²"
        )
        axC.loglog(
            taus_, data["mc_floor"], color="tab:red", ls=":", lw=0.8, label="MC resolution of bias²"
        )
        axC.axhline(
            data["reinforce_var"], color="tab:green", ls="--", lw=1, label="REINFORCE variance"
        )
        axC.axhline(
            data["reinforce_var_baseline"],
            color="tab:olive",
            ls="-.",
            lw=1,
            label="REINFORCE, baseline p·c",
        )
        axC.axvline(data["tau"], color="0.3", lw=0.8)
        axC.plot(
            [data["tau"]] * 2, [data["var"], max(data["bias2"], 1e-12)], "o", color="0.2", ms=3
        )
        axC.set(xlabel="temperature τ (log scale)", ylabel="per-sample gradient statistic (log)")
        plain = FuncFormatter(lambda v, _: f"{v:g}")  # plain text: mathtext is slow to lay out
        for axis in (axC.xaxis, axC.yaxis):
            axis.set_major_formatter(plain)
            axis.set_minor_locator(NullLocator())  # minor log ticks cost most of a redraw
        axC.set_title(
            f"(c) gradient of E[c·y], c = {tuple(float(v) for v in data['values'])}", fontsize=9
        )
        axC.legend(fontsize=6.5, frameon=False, loc="best")

    controls = [
        Control(
            "tau",
            (float(lo), float(hi)),
            1.0 if lo <= 1.0 <= hi else float(lo),
            log=True,
            label="τ",
        ),
        Control("preset", list(PRESETS), "(0.6, 0.3, 0.1)", label="p"),
    ]
    return Explorer(controls=controls, compute=compute, draw=draw, figsize=(12.0, 3.8))
