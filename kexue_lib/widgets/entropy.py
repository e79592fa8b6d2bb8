"""The entropy-normalisation widget (kexue.fm/archives/8829, sheet 16 §4 E3).

Knobs: the target as a fraction of the maximum entropy, ``target_ratio = H*/log n``; the base
distribution ``base`` (Zipf, Dirichlet, softmax of Gaussian logits); its size ``n``; the number
of solver ``iterations`` (0 shows the original); ``safeguarded`` (the library's Newton in
``log gamma`` with bisection) or the post's raw Newton iteration.
Panels: (a) the original ``p`` (grey) and the normalised ``softmax(gamma log p)`` (colour),
sorted by ``p``, with ``H(p)``, ``H*``, ``H(p̃)``, ``gamma`` and the temperature ``1/gamma``;
(b) the entropy curve ``H(gamma)`` on a log-gamma axis with the target, the solved gamma and
the numbered solver iterates joined by their tangent steps.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from kexue_lib._core import check_positive, make_generator, to_numpy64
from kexue_lib.entropy import entropy, entropy_curve, entropy_normalize, power_transform
from kexue_lib.widgets.frontends import Control, Explorer

__all__ = ["BASES", "base_distribution", "normalisation_explorer"]

BASES = ("Zipf(1)", "Zipf(0.5)", "Zipf(2)", "Dirichlet(0.5)", "Dirichlet(2)", "softmax N(0, 2²)")


def base_distribution(base: str, n: int, *, noise: dict[str, torch.Tensor]) -> torch.Tensor:
    """Log-probabilities ``(n,)`` (float64) of one of :data:`BASES`.

    Zipf(s): ``p_i ∝ i^(-s)``; Dirichlet(a): the first ``n`` of the Gamma(a) draws in
    ``noise["gamma_<a>"]``, normalised; softmax N(0, 2²): ``2 * noise["normal"][:n]``.
    """
    if base.startswith("Zipf("):
        s = float(base[5:-1])
        ell = -s * torch.log(torch.arange(1, n + 1, dtype=torch.float64))
    elif base.startswith("Dirichlet("):
        ell = torch.log(noise[f"gamma_{base[10:-1]}"][:n])
    elif base == "softmax N(0, 2²)":
        ell = 2.0 * noise["normal"][:n]
    else:
        raise ValueError(f"base: expected one of {BASES}, got {base!r}")
    return torch.log_softmax(ell, -1)


def _var_log_p(ell: torch.Tensor, gamma: float) -> float:
    """``Var_gamma[log p]`` under ``softmax(gamma log p)``."""
    q = power_transform(ell, gamma)
    m = (q * ell).sum()
    return float((q * (ell - m) ** 2).sum())


def normalisation_explorer(*, n_max: int = 200, n_iter_max: int = 10, seed: int = 0) -> Explorer:
    """Entropy-normalised-distribution explorer: the gamma with ``H(softmax(gamma log p)) = H*``.

    Draws once at construction (float64, from ``seed``) the Gamma(0.5), Gamma(2) and normal
    variates of the random bases, ``n_max`` each; the first ``n`` are used. Iterates are
    ``entropy_normalize(..., n_iter=t, return_gamma=True)`` for ``t = 0..iterations``.
    """
    check_positive("n_max", n_max, integer=True)
    check_positive("n_iter_max", n_iter_max, integer=True)
    if n_max < 5:
        raise ValueError(f"n_max: expected at least 5, got {n_max}")
    g = make_generator(seed)
    noise = {
        "gamma_0.5": torch._standard_gamma(
            torch.full((n_max,), 0.5, dtype=torch.float64), generator=g
        ).clamp_min(1e-300),
        "gamma_2": torch._standard_gamma(
            torch.full((n_max,), 2.0, dtype=torch.float64), generator=g
        ),
        "normal": torch.randn(n_max, dtype=torch.float64, generator=g),
    }

    def compute(
        *, target_ratio: float, base: str, n: int, iterations: int, safeguarded: bool
    ) -> dict:
        ell = base_distribution(base, int(n), noise=noise)
        p = ell.exp()
        h_max = math.log(n)
        target = float(target_ratio) * h_max
        method = "safeguarded" if safeguarded else "newton"
        gammas, hs, slopes = [], [], []
        for t in range(int(iterations) + 1):
            q, gm = entropy_normalize(
                logits=ell, target=target, n_iter=t, method=method, return_gamma=True
            )
            gm = float(gm)
            gammas.append(gm)
            finite = math.isfinite(gm) and bool(torch.isfinite(q).all())
            hs.append(float(entropy(q)) if finite else math.nan)
            ok = finite and gm > 0
            slopes.append(-gm * _var_log_p(ell, gm) if ok else math.nan)  # dH/dgamma
        gamma = gammas[-1]
        finite = math.isfinite(gamma) and bool(torch.isfinite(q).all())
        failed = not (finite and gamma > 0)
        order = torch.argsort(p, descending=True, stable=True)
        # the curve over a log-gamma window that contains every valid iterate
        good = [x for x in gammas if math.isfinite(x) and x > 0]
        lo = min([1e-2, *good]) / 2
        hi = max([1e2, *good]) * 2
        grid = torch.logspace(math.log10(lo), math.log10(hi), 160, dtype=torch.float64)
        curve = entropy_curve(ell, grid)
        # tangent step t -> t+1: straight in log gamma (safeguarded) or in gamma (post's Newton)
        tangents = []
        for t in range(len(gammas) - 1):
            a, b = gammas[t], gammas[t + 1]
            if not (math.isfinite(a) and a > 0 and math.isfinite(b) and b > 0):
                break
            xs = np.geomspace(a, b, 24) if a != b else np.array([a, b])
            if safeguarded:
                ys = hs[t] + a * slopes[t] * (np.log(xs) - math.log(a))  # dH/dlog gamma
            else:
                ys = hs[t] + slopes[t] * (xs - a)
            tangents.append((xs, ys))
        q_np = to_numpy64(q)
        return {
            "base": base,
            "n": int(n),
            "p": to_numpy64(p),
            "p_sorted": to_numpy64(p[order]),
            "q": q_np,
            "q_sorted": q_np[to_numpy64(order).astype(np.int64)],
            "H_p": float(entropy(p)),
            "H_max": h_max,
            "target": target,
            "H_q": hs[-1],
            "gamma": gamma,
            "temperature": 1 / gamma if gamma else math.inf,
            "failed": failed,  # gamma <= 0 (order reversed) or NaN: only the raw Newton
            "reversed": finite and gamma < 0,
            "method": method,
            "iterates": np.array(gammas),
            "iterate_H": np.array(hs),
            "iterate_slope": np.array(slopes),
            "grid": to_numpy64(grid),
            "curve": to_numpy64(curve),
            "tangents": tangents,
        }

    def draw(fig, data: dict) -> None:
        fig.set_layout_engine("none")  # fixed margins: the constrained layout is slow
        axA, axB = fig.subplots(
            1,
            2,
            gridspec_kw={"left": 0.07, "right": 0.98, "bottom": 0.15, "top": 0.78, "wspace": 0.22},
        )
        # (a) sorted bars as two filled step outlines (one artist each: fast for n = 200)
        n = data["n"]
        edges = np.arange(n + 1) + 0.5
        from matplotlib.patches import StepPatch

        # StepPatch through add_artist: Axes.stairs would scan every vertex for the data limits,
        # which are set explicitly below anyway
        axA.add_artist(
            StepPatch(data["p_sorted"], edges, fill=True, color="0.75", label="original p")
        )
        if not data["failed"]:
            axA.add_artist(
                StepPatch(
                    data["q_sorted"],
                    edges,
                    color="tab:blue",
                    lw=1.5,
                    label="normalised p̃ = softmax(γ log p)",
                )
            )
        elif data["reversed"]:
            axA.add_artist(
                StepPatch(
                    data["q_sorted"],
                    edges,
                    color="tab:red",
                    lw=1.5,
                    label="raw Newton: γ < 0, order reversed",
                )
            )
        else:
            axA.text(
                0.5,
                0.5,
                "raw Newton failed: p̃ is NaN",
                transform=axA.transAxes,
                ha="center",
                color="tab:red",
                fontsize=10,
            )
        shown = data["q_sorted"] if data["failed"] is False or data["reversed"] else [0.0]
        top = max(data["p_sorted"].max(), np.max(shown))
        axA.set(
            xlim=(0.5, n + 0.5),
            ylim=(0, 1.05 * top),
            xlabel="rank i (sorted by p)",
            ylabel="probability",
        )
        axA.legend(fontsize=8, frameon=False, loc="upper right")
        axA.set_title(
            f"(a) {data['base']}, n = {n}: H(p) = {data['H_p']:.3f}, H* = {data['target']:.3f}, "
            f"H(p̃) = {data['H_q']:.3f} nats\nγ = {data['gamma']:.4g}, temperature 1/γ = "
            f"{data['temperature']:.4g}, log n = {data['H_max']:.3f}",
            fontsize=9,
        )
        # (b) the entropy curve, the target and the iterates
        axB.semilogx(data["grid"], data["curve"], color="k", lw=1.5, label="H(γ)")
        axB.axhline(data["target"], color="tab:green", ls="--", lw=1, label="target H*")
        axB.axhline(data["H_max"], color="0.6", ls=":", lw=1, label="log n")
        for xs, ys in data["tangents"]:
            axB.plot(xs, ys, color="tab:orange", ls="--", lw=1)
        its, ihs = data["iterates"], data["iterate_H"]
        ok = np.isfinite(its) & (its > 0) & np.isfinite(ihs)
        axB.plot(its[ok], ihs[ok], "o", color="tab:orange", ms=4, label="iterates γ_t")
        for t in np.flatnonzero(ok):
            axB.annotate(
                str(t),
                (its[t], ihs[t]),
                textcoords="offset points",
                xytext=(3, 3),
                fontsize=8,
                color="tab:orange",
            )
        if not data["failed"]:
            axB.axvline(data["gamma"], color="tab:blue", lw=0.8)
        from matplotlib.ticker import FuncFormatter, NullLocator

        axB.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # no slow mathtext
        axB.xaxis.set_minor_locator(NullLocator())  # minor log ticks cost most of a redraw
        axB.set(
            xlabel="exponent γ (log scale)",
            ylabel="entropy (nats)",
            ylim=(-0.05 * data["H_max"], 1.08 * data["H_max"]),
            xlim=(data["grid"][0], data["grid"][-1]),
        )
        hidden = int((~ok).sum())
        note = f"\n{hidden} iterate(s) with γ ≤ 0 or NaN not shown" if hidden else ""
        axB.set_title(
            f"(b) H(γ) is decreasing; {data['method']} solver, {len(its) - 1} iteration(s){note}",
            fontsize=9,
        )
        axB.legend(fontsize=7, frameon=False, loc="lower left")

    controls = [
        Control("target_ratio", (0.02, 0.98), 0.5, step=0.02, label="H*/log n"),
        Control("base", list(BASES), "Zipf(1)"),
        Control("n", (5, n_max), min(50, n_max)),
        Control("iterations", (0, n_iter_max), min(6, n_iter_max)),
        Control("safeguarded", [True, False], True),
    ]
    return Explorer(controls=controls, compute=compute, draw=draw, figsize=(12.0, 3.8))
