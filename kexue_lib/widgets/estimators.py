"""The smoothing widget of the zeroth-order chapter (kexue.fm/archives/7737, sheet 17).

A "hard" 1-D objective, the quantised quadratic ``f(x) = step * floor(x^2 / (2 step))`` (a
staircase under ``x^2 / 2`` whose derivative is zero almost everywhere, like an accuracy), is
smoothed by Gaussian noise of scale ``eps``: ``f_eps(x) = E f(x + eps u)``. Knobs: ``eps`` (log
slider) and the estimator (no baseline, baseline ``f(x)``, antithetic pairs).

Panels: (a) ``f`` and ``f_eps`` with the tangent of ``f_eps`` at ``x0``; (b) the histogram of
single-direction zeroth-order estimates at ``x0`` (:func:`kexue_lib.estimators.zo_grad`, one noise
draw shared by every ``eps``), with their mean and the exact ``f_eps'(x0)``; (c) the standard
deviation of one direction's estimate against ``eps`` for the three estimators, next to the
smoothed slope ``f_eps'(x0)`` it estimates.

``f_eps`` and ``f_eps'`` have closed forms: ``f = step * sum_k 1[|x| >= a_k]`` with
``a_k = sqrt(2 k step)``, so ``f_eps(x) = step * sum_k (Phi((x - a_k)/eps) + Phi((-x - a_k)/eps))``.
The variances come from quadrature over ``u`` on a fine grid.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from kexue_lib._core import check_int, check_positive, make_generator, to_numpy64
from kexue_lib.estimators import zo_grad
from kexue_lib.widgets.frontends import Control, Explorer

__all__ = [
    "ESTIMATORS",
    "quantised_quadratic",
    "smoothed_quantised_quadratic",
    "smoothing_explorer",
]

ESTIMATORS = ("no baseline", "baseline f(x)", "antithetic")
_COLORS = {"no baseline": "tab:red", "baseline f(x)": "tab:blue", "antithetic": "tab:green"}


def quantised_quadratic(x, step: float = 0.25):
    """``step * floor(x^2 / (2 step))``: a staircase under ``x^2 / 2`` (numpy or torch input)."""
    if isinstance(x, torch.Tensor):
        return step * torch.floor(x * x / (2 * step))
    x = np.asarray(x, dtype=np.float64)
    return step * np.floor(x * x / (2 * step))


def _thresholds(step: float, x_max: float) -> np.ndarray:
    k_max = int(math.ceil(x_max**2 / (2 * step))) + 1
    return np.sqrt(2 * step * np.arange(1, k_max + 1))


def smoothed_quantised_quadratic(
    x, eps: float, step: float = 0.25
) -> tuple[np.ndarray, np.ndarray]:
    """Exact ``(f_eps(x), f_eps'(x))`` of the Gaussian-smoothed quantised quadratic (numpy)."""
    from scipy.special import ndtr

    x = np.asarray(x, dtype=np.float64)
    a = _thresholds(step, float(np.abs(x).max(initial=0.0)) + 12 * eps)
    lo = (x[..., None] - a) / eps
    hi = (-x[..., None] - a) / eps
    value = step * (ndtr(lo) + ndtr(hi)).sum(-1)
    c = 1 / math.sqrt(2 * math.pi)
    slope = step * (c * np.exp(-0.5 * lo**2) - c * np.exp(-0.5 * hi**2)).sum(-1) / eps
    return value, slope


def smoothing_explorer(
    *,
    x0: float = 0.8,
    step: float = 0.25,
    n_hist: int = 4000,
    eps_range: tuple[float, float] = (0.01, 2.0),
    n_grid: int = 41,
    n_quad: int = 8001,
    seed: int = 0,
) -> Explorer:
    """Smoothing-scale explorer: how ``eps`` trades the bias of ``f_eps`` for estimator noise.

    ``x0`` is where the gradient is estimated; ``n_hist`` single-direction estimates are drawn
    per frame from one Gaussian noise (seed ``seed``, shared by every ``eps`` and estimator);
    panel (c) is tabulated on ``n_grid`` log-spaced ``eps`` by quadrature with ``n_quad`` nodes.
    """
    check_positive("step", step)
    check_int("n_hist", n_hist, minimum=2)
    check_int("n_grid", n_grid, minimum=2)
    check_int("n_quad", n_quad, minimum=101)
    lo, hi = eps_range
    check_positive("eps_range", lo)
    if not hi > lo:
        raise ValueError(f"eps_range: expected (lo, hi) with hi > lo > 0, got {eps_range}")
    if not isinstance(x0, (int, float)) or isinstance(x0, bool) or not abs(x0) <= 2.5:
        raise ValueError(f"x0: expected a number in [-2.5, 2.5], got {x0!r}")
    x0 = float(x0)
    xt = torch.tensor([x0], dtype=torch.float64)
    fx0 = float(quantised_quadratic(x0, step))

    def f_torch(z: torch.Tensor) -> torch.Tensor:
        return quantised_quadratic(z[:, 0], step)

    # quadrature nodes for E over u ~ N(0, 1): a fine grid, weights = normalised density
    u_q = np.linspace(-8.0, 8.0, n_quad)
    w_q = np.exp(-0.5 * u_q**2)
    w_q /= w_q.sum()

    def exact_std(eps: float) -> dict:
        _, slope = smoothed_quantised_quadratic(np.array(x0), eps, step)
        fp = quantised_quadratic(x0 + eps * u_q, step)
        fm = quantised_quadratic(x0 - eps * u_q, step)
        second = {
            "no baseline": (w_q * (fp * u_q / eps) ** 2).sum(),
            "baseline f(x)": (w_q * ((fp - fx0) * u_q / eps) ** 2).sum(),
            "antithetic": (w_q * ((fp - fm) * u_q / (2 * eps)) ** 2).sum(),
        }
        return {k: math.sqrt(max(v - float(slope) ** 2, 0.0)) for k, v in second.items()}

    eps_grid = np.geomspace(lo, hi, n_grid)
    table = [exact_std(float(e)) for e in eps_grid]
    std_grid = {k: np.array([t[k] for t in table]) for k in ESTIMATORS}
    slope_grid = np.array(
        [float(smoothed_quantised_quadratic(np.array(x0), float(e), step)[1]) for e in eps_grid]
    )
    xs = np.linspace(-2.0, 2.0, 241)
    f_xs = quantised_quadratic(xs, step)

    def compute(*, eps: float, estimator: str) -> dict:
        eps = float(eps)
        value, _ = smoothed_quantised_quadratic(xs, eps, step)
        v0, s0 = smoothed_quantised_quadratic(np.array(x0), eps, step)
        kwargs = {
            "no baseline": {"baseline": None},
            "baseline f(x)": {"baseline": "fx"},
            "antithetic": {"antithetic": True},
        }[estimator]
        _, info = zo_grad(f_torch, xt, eps, n_hist, generator=make_generator(seed), **kwargs)
        rows = to_numpy64(info["rows"][:, 0])
        return {
            "eps": eps,
            "estimator": estimator,
            "x0": x0,
            "fx0": fx0,
            "xs": xs,
            "f": f_xs,
            "f_eps": value,
            "f_eps_x0": float(v0),
            "slope": float(s0),
            "rows": rows,
            "dirs": to_numpy64(info["dirs"][:, 0]),
            "mean": float(rows.mean()),
            "se": float(rows.std(ddof=1) / math.sqrt(n_hist)),
            "zero_frac": float((rows == 0).mean()),
            "std": exact_std(eps),
            "eps_grid": eps_grid,
            "std_grid": std_grid,
            "slope_grid": slope_grid,
            "n_hist": n_hist,
            "step": step,
        }

    def draw(fig, data: dict) -> None:
        from matplotlib.ticker import FuncFormatter, MaxNLocator, NullLocator

        fig.set_layout_engine("none")
        axA, axB, axC = fig.subplots(
            1,
            3,
            gridspec_kw={
                "width_ratios": [1.1, 1, 1.1],
                "left": 0.06,
                "right": 0.99,
                "bottom": 0.15,
                "top": 0.8,
                "wspace": 0.3,
            },
        )
        col = _COLORS[data["estimator"]]
        # (a) the staircase and its Gaussian smoothing, tangent at x0
        axA.plot(data["xs"], data["f"], color="0.55", lw=1, label="f (staircase)")
        axA.plot(data["xs"], data["f_eps"], color="tab:purple", lw=1.6, label="f_ε = E f(x+εu)")
        t = np.linspace(data["x0"] - 0.6, data["x0"] + 0.6, 2)
        axA.plot(t, data["f_eps_x0"] + data["slope"] * (t - data["x0"]), color="k", lw=1, ls="--")
        axA.plot([data["x0"]], [data["f_eps_x0"]], "ko", ms=3)
        axA.set(
            xlabel="x", ylabel="value", ylim=(-0.3, 2.6), xticks=[-2, -1, 0, 1, 2], yticks=[0, 1, 2]
        )
        axA.set_title(
            f"(a) grey f, purple f_ε at ε = {data['eps']:.3g};\n"
            f"dashed: slope f_ε'(x₀) = {data['slope']:.3f}",
            fontsize=9,
        )
        # (b) single-direction estimates at x0
        rows = data["rows"]
        lo_, hi_ = np.quantile(rows, [0.01, 0.99])
        if hi_ - lo_ < 1e-9:
            lo_, hi_ = lo_ - 1, hi_ + 1
        counts, edges = np.histogram(np.clip(rows, lo_, hi_), bins=41, range=(lo_, hi_))
        axB.stairs(counts, edges, fill=True, color=col, alpha=0.8)
        axB.axvline(data["slope"], color="k", ls="--", lw=1)
        axB.axvline(data["mean"], color=col, lw=1.5)
        axB.set(xlabel="one direction's estimate (clipped to 1–99%)", ylabel="count")
        axB.set_yticks([])
        axB.xaxis.set_major_locator(MaxNLocator(4))
        axB.set_title(
            f"(b) {data['estimator']}: {data['n_hist']} draws, {data['zero_frac']:.0%} exactly 0;\n"
            f"mean {data['mean']:.2f} ± {data['se']:.2f} (solid), exact f_ε'(x₀) dashed",
            fontsize=9,
        )
        # (c) standard deviation of one direction vs eps, with the smoothed slope for scale
        for name in ESTIMATORS:
            lw = 2 if name == data["estimator"] else 1
            axC.loglog(
                data["eps_grid"], data["std_grid"][name], color=_COLORS[name], lw=lw, label=name
            )
        axC.loglog(
            data["eps_grid"],
            np.maximum(np.abs(data["slope_grid"]), 1e-6),
            color="tab:purple",
            ls="--",
            lw=1,
            label="|f_ε'(x₀)| (signal)",
        )
        axC.axvline(data["eps"], color="0.3", lw=0.8)
        axC.plot([data["eps"]], [data["std"][data["estimator"]]], "o", color=col, ms=4)
        axC.set(xlabel="ε (log scale)", ylabel="std of one direction (log)", ylim=(1e-3, 1e4))
        plain = FuncFormatter(lambda v, _: f"{v:g}")
        axC.set_xticks([t for t in (0.01, 0.1, 1.0, 10.0) if lo <= t <= hi])
        axC.set_yticks([1e-3, 1e-1, 10, 1e3])
        for axis in (axC.xaxis, axC.yaxis):
            axis.set_major_formatter(plain)
            axis.set_minor_locator(NullLocator())
        axC.legend(fontsize=6.5, frameon=False, loc="upper right")
        axC.set_title("(c) noise of one direction vs ε", fontsize=9)

    controls = [
        Control(
            "eps",
            (float(lo), float(hi)),
            0.3 if lo <= 0.3 <= hi else float(lo),
            log=True,
            label="ε",
        ),
        Control("estimator", list(ESTIMATORS), "baseline f(x)", label="estimator"),
    ]
    return Explorer(controls=controls, compute=compute, draw=draw, figsize=(12.0, 3.8))
