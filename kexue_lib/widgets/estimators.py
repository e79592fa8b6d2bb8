"""Widgets of the estimator chapters: the smoothing widget of the zeroth-order chapter
(kexue.fm/archives/7737, sheet 17) and the importance-sampling widget of the density-estimation
chapter (kexue.fm/archives/8791, :func:`importance_explorer`, described there).

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
from kexue_lib.estimators import (
    effective_sample_size,
    log_mean_exp,
    self_normalized_weights,
    zo_grad,
)
from kexue_lib.widgets.frontends import Control, Explorer, axes_title

__all__ = [
    "ESTIMATORS",
    "PROPOSALS",
    "importance_explorer",
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


# ---------------------------------------------------------------------------------------------
# Importance sampling of log p(x) (kexue.fm/archives/8791)

PROPOSALS = ("prior", "encoder", "posterior")
_LOG_2PI = math.log(2 * math.pi)
_PROPOSAL_COLORS = {"prior": "tab:red", "encoder": "tab:blue", "posterior": "tab:green"}


def _gaussian_kl(m1, L1, m2, L2) -> float:
    """``KL(N(m1, L1 L1^T) || N(m2, L2 L2^T))`` in closed form."""
    A = torch.linalg.solve_triangular(L2, L1, upper=False)
    d = torch.linalg.solve_triangular(L2, (m1 - m2)[:, None], upper=False)
    logdet = 2 * (torch.log(torch.diagonal(L2)).sum() - torch.log(torch.diagonal(L1)).sum())
    return float(0.5 * ((A**2).sum() + (d**2).sum() - len(m1) + logdet))


def importance_explorer(
    *,
    k: int = 4,
    D: int = 8,
    sigma: float = 0.3,
    n_repeats: int = 200,
    m_max: int = 512,
    seed: int = 0,
) -> Explorer:
    """Importance-sampling explorer on a linear-Gaussian model with an exact ``log p(x)``.

    Model (:class:`~kexue_lib.synthetic.distributions.LinearGaussianLVM`): ``z ~ N(0, I_k)``,
    ``x | z ~ N(W z, sigma^2 I_D)`` with ``W`` drawn from ``seed`` (entries ``N(0, 1/k)``); one
    observation ``x`` is drawn from the model. Three proposals for ``z``: the prior
    ``N(0, I)``, an "encoder" (the exact posterior with its mean shifted by half a posterior
    standard deviation in every coordinate and its covariance doubled) and the exact posterior.
    For each, ``n_repeats`` rows of ``m_max`` log-weights ``log p(x, z) - log r(z)`` are drawn
    once (float64, common random numbers across ``M``: the estimate at ``M`` uses the first
    ``M`` of a row).

    Knobs: ``M`` (powers of two up to ``m_max``) and the proposal. Panels: (a) the mean over rows
    of ``log q_M = log mean_{i<=M} w_i`` against ``M`` for the three proposals, with a band of
    one standard deviation, the exact ``log p(x)`` and the current ``M``; (b) the histogram of
    ``log q_M`` over the rows; (c) the self-normalised weights of the first row, sorted, with
    their effective sample size.
    """
    from kexue_lib.synthetic.distributions import LinearGaussianLVM

    check_int("k", k)
    check_int("D", D)
    check_positive("sigma", sigma)
    check_int("n_repeats", n_repeats, minimum=2)
    check_int("m_max", m_max)
    if m_max & (m_max - 1):
        raise ValueError(f"m_max: expected a power of two, got {m_max}")
    g = make_generator(seed)
    f64 = torch.float64
    W = torch.randn(D, k, generator=g, dtype=f64) / math.sqrt(k)
    model = LinearGaussianLVM(W, None, sigma)
    x = model.sample(1, generator=g)[0]
    log_px = float(model.log_marginal(x))
    mean, cov = model.posterior(x)
    std = torch.sqrt(torch.diagonal(cov))
    post_L = torch.linalg.cholesky(cov)
    eye = torch.eye(k, dtype=f64)
    dists = {  # (mean, Cholesky factor of the covariance)
        "prior": (torch.zeros(k, dtype=f64), eye),
        "encoder": (mean + 0.5 * std, math.sqrt(2.0) * post_L),
        "posterior": (mean, post_L),
    }
    Ms = [2**i for i in range(int(math.log2(m_max)) + 1)]
    logw, curves, elbos = {}, {}, {}
    for name, (loc, L) in dists.items():
        eps = torch.randn(n_repeats, m_max, k, generator=g, dtype=f64)
        z = loc + eps @ L.T  # a reparameterised draw, from our generator
        log_r = -0.5 * (eps**2).sum(-1) - torch.log(torch.diagonal(L)).sum() - 0.5 * k * _LOG_2PI
        lw = model.log_joint(x, z) - log_r
        logw[name] = lw
        # log q_M for every prefix length at once: logcumsumexp - log M, then the powers of two
        cums = torch.logcumsumexp(lw, dim=1) - torch.log(torch.arange(1, m_max + 1, dtype=f64))
        est = cums[:, [m - 1 for m in Ms]].T  # (len(Ms), R)
        curves[name] = (to_numpy64(est.mean(1)), to_numpy64(est.std(1)))
        elbos[name] = log_px - _gaussian_kl(loc, L, mean, post_L)
    Ms_np = np.array(Ms, dtype=np.float64)
    lows = [curves[n][0][0] - curves[n][1][0] for n in PROPOSALS]
    y_lo = max(min(lows), log_px - 40.0)
    y_range = (y_lo - 0.05 * (log_px - y_lo + 1), log_px + 0.1 * (log_px - y_lo + 1))

    def compute(*, M: int, proposal: str) -> dict:
        lw = logw[proposal][:, :M]
        est = to_numpy64(log_mean_exp(lw, dim=1))
        w1 = to_numpy64(self_normalized_weights(lw[0], dim=0))
        spread = max(float(est.std()), 1e-3)
        lo_h, hi_h = float(est.min()) - spread, float(est.max()) + spread
        hist, edges = np.histogram(est, bins=30, range=(lo_h, hi_h))
        return {
            "M": M,
            "proposal": proposal,
            "log_px": log_px,
            "estimates": est,
            "mean": float(est.mean()),
            "std": float(est.std()),
            "hist": hist,
            "edges": edges,
            "weights": np.sort(w1)[::-1],
            "ess": float(effective_sample_size(lw[0], dim=0)),
            "Ms": Ms_np,
            "curves": curves,
            "elbo": elbos[proposal],
            "elbos": elbos,
            "y_range": y_range,
        }

    def draw(fig, data: dict) -> None:
        from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullLocator

        fig.set_layout_engine("none")
        axA, axB, axC = fig.subplots(
            1,
            3,
            gridspec_kw={
                "width_ratios": [1.2, 1, 1],
                "left": 0.06,
                "right": 0.99,
                "bottom": 0.16,
                "top": 0.8,
                "wspace": 0.3,
            },
        )
        lp, M, name = data["log_px"], data["M"], data["proposal"]
        col = _PROPOSAL_COLORS[name]
        # (a) the bound ladder for the three proposals
        for p in PROPOSALS:
            mu_, sd_ = data["curves"][p]
            lw_ = 2 if p == name else 1
            axA.plot(Ms_np, mu_, color=_PROPOSAL_COLORS[p], lw=lw_, label=p)
            axA.fill_between(Ms_np, mu_ - sd_, mu_ + sd_, color=_PROPOSAL_COLORS[p], alpha=0.12)
        axA.axhline(lp, color="k", ls="--", lw=1)
        i = int(round(math.log2(M)))
        axA.plot([M], [data["curves"][name][0][i]], "o", color=col, ms=5)
        axA.set_xscale("log", base=2)
        axA.set(xlabel="M (log scale)", ylabel="E log q_M (nats)", ylim=data["y_range"])
        axA.xaxis.set_major_locator(FixedLocator([1, 8, 64, 512][: 1 + int(math.log2(m_max)) // 3]))
        axA.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        axA.xaxis.set_minor_locator(NullLocator())
        axA.yaxis.set_major_locator(MaxNLocator(4))
        for j, p in enumerate(PROPOSALS):  # a text legend: cheaper to draw than a Legend
            axA.text(0.97, 0.05 + 0.09 * j, p, color=_PROPOSAL_COLORS[p], fontsize=8,
                     ha="right", transform=axA.transAxes)  # fmt: skip
        axes_title(
            axA, f"(a) mean ± sd over {n_repeats} repeats;\ndashed: exact log p(x) = {lp:.2f}"
        )
        # (b) the spread of the estimate at this M
        axB.stairs(data["hist"], data["edges"], fill=True, color=col, alpha=0.7)
        axB.axvline(lp, color="k", ls="--", lw=1)
        axB.axvline(data["mean"], color=col, lw=1.5)
        axB.set(xlabel="log q_M (nats)", ylabel="count")
        axB.set_yticks([])
        axB.xaxis.set_major_locator(MaxNLocator(3))
        axes_title(
            axB,
            f"(b) {name}, M = {M}: mean {data['mean'] - lp:+.3f},\n"
            f"sd {data['std']:.3f} nats (relative to log p(x))",
        )
        # (c) the normalised weights of one repeat
        w = data["weights"]
        axC.step(np.arange(len(w) + 1), np.append(w, 0.0), where="post", color=col, lw=1.5)
        axC.set(xlabel="sample, sorted by weight", ylabel="normalised weight",
                xlim=(0, len(w)), ylim=(0, 1.02))  # fmt: skip
        axC.xaxis.set_major_locator(MaxNLocator(3, integer=True))
        axC.set_yticks([0.0, 0.5, 1.0])
        axes_title(axC, f"(c) one repeat: ESS = {data['ess']:.1f} of M = {M}")

    controls = [
        Control("M", Ms, min(16, m_max), label="M"),
        Control("proposal", list(PROPOSALS), "encoder", label="proposal"),
    ]
    return Explorer(controls=controls, compute=compute, draw=draw, figsize=(11.0, 3.6))
