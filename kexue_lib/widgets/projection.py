"""The JL distortion explorer: pairwise distance ratios after a random projection.

Left panel: histogram of ``r_ij = |A(x_i - x_j)|^2 / |x_i - x_j|^2`` over all pairs, with the
exact law ``chi^2_n / n`` of the Gaussian projection overlaid, the band ``[1 - eps, 1 + eps]``
and the observed out-of-band mass against the exact tail ``p_{n, eps}``. Right panel: the
worst pair ``max |r_ij - 1|`` for every target dimension of the slider, against what the
Chernoff bounds, sklearn's Dasgupta-Gupta rule and the exact union computation promise.
The figure of book/geometry/jl-theory.ipynb; its curves are eqs. (jl-theory-exact) and
(jl-theory-union).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from kexue_lib import projection as P
from kexue_lib.synthetic.vectors import point_cloud
from kexue_lib.widgets.frontends import Control, Explorer

__all__ = ["jl_distortion_explorer"]

D_OUT_CHOICES = (4, 8, 16, 32, 64, 128, 256, 512, 1024)
N_CHOICES = (50, 100, 200, 500)
DATA_KINDS = ("gaussian", "sparse_bow", "low_rank", "clusters")
PROJECTIONS = ("gaussian", "rademacher", "achlioptas", "very_sparse", "orthogonal")
PROJECTION_LABELS = {
    "gaussian": "Gaussian N(0, 1/n)",
    "rademacher": "Rademacher ±1/√n",
    "achlioptas": "Achlioptas sparse (density 1/3)",
    "very_sparse": "very sparse (density 1/√m)",
    "orthogonal": "scaled orthonormal rows",
}
N_BINS = 60


def _full_matrix(kind: str, n_max: int, m: int, g: torch.Generator) -> torch.Tensor:
    """A ``(n_max, m)`` map whose first ``n`` rows times ``sqrt(n_max / n)`` are a JL map to n dims."""
    f64 = torch.float64
    if kind == "gaussian":
        return P.gaussian_projection(n_max, m, generator=g, dtype=f64)
    if kind == "rademacher":
        return P.rademacher_projection(n_max, m, generator=g, dtype=f64)
    if kind == "achlioptas":
        return P.sparse_projection(n_max, m, density=1 / 3, generator=g, dtype=f64)
    if kind == "very_sparse":
        return P.sparse_projection(n_max, m, generator=g, dtype=f64)
    if kind == "orthogonal":
        W = P.orthogonal_gaussian_matrix(n_max, m, row_norms="sqrt_d_in", generator=g, dtype=f64)
        return W / math.sqrt(n_max)
    raise ValueError(f"projection: expected one of {PROJECTIONS}, got {kind!r}")


class _JLState:
    """Source points (drawn once) and, lazily, one ratio ladder per (data, projection)."""

    def __init__(self, m: int, n_max_points: int, d_outs: tuple, seed: int):
        self.m, self.N_max, self.d_outs, self.seed = m, n_max_points, d_outs, seed
        g = torch.Generator().manual_seed(seed)
        self.points = {
            k: point_cloud(k, n_max_points, m, generator=g, dtype=torch.float64) for k in DATA_KINDS
        }
        self.i, self.j = torch.triu_indices(n_max_points, n_max_points, offset=1)
        self._src: dict = {}
        self._ladder: dict = {}
        self._pairs: dict = {}
        self._union: dict = {}
        self._full: dict = {}

    def full_matrix(self, projection: str) -> torch.Tensor:
        """The ``(max(d_outs), m)`` draw for ``projection`` (cached; seeded per projection)."""
        if projection not in self._full:
            k = PROJECTIONS.index(projection)
            g = torch.Generator().manual_seed(self.seed * 1000 + 17 + k)
            self._full[projection] = _full_matrix(projection, max(self.d_outs), self.m, g)
        return self._full[projection]

    def matrix(self, projection: str, d_out: int) -> torch.Tensor:
        """The ``(d_out, m)`` JL map used for ``projection`` at ``d_out`` (prefix of one draw)."""
        A = self.full_matrix(projection)
        return A[:d_out] * math.sqrt(A.shape[0] / d_out)

    def source_sq(self, data: str) -> torch.Tensor:
        if data not in self._src:
            self._src[data] = P._sq_dists64(self.points[data])
        return self._src[data]

    def ladder(self, data: str, projection: str) -> np.ndarray:
        """``(len(d_outs), P_max)`` float64 ratios for every target dimension of the slider."""
        key = (data, projection)
        if key not in self._ladder:
            n_max = max(self.d_outs)
            A = self.full_matrix(projection)
            Y = self.points[data] @ A.T  # (N_max, n_max); prefixes of columns = smaller maps
            dx = self.source_sq(data)
            rows, acc, lo = [], torch.zeros_like(dx), 0
            for n in self.d_outs:
                block = Y[:, lo:n].contiguous()
                sq = (block * block).sum(-1)
                # float64 Gram per column block: relative error ~1e-16 |y|^2 / |y_i - y_j|^2,
                # harmless for the widget's tightest clusters (spread 1e-3)
                acc = acc + (sq[self.i] + sq[self.j] - 2.0 * (block @ block.T)[self.i, self.j])
                lo = n
                rows.append((acc.clamp_min(0.0) * (n_max / n)) / dx)
            self._ladder[key] = torch.stack(rows).numpy()
        return self._ladder[key]

    def pairs(self, N: int, data: str) -> np.ndarray:
        """Bool mask over the ``N_max`` condensed pairs: both points among the first N, x_i != x_j."""
        key = (N, data)
        if key not in self._pairs:
            self._pairs[key] = ((self.j < N) & (self.source_sq(data) > 0)).numpy()
        return self._pairs[key]

    def union_curve(self, N: int) -> np.ndarray:
        if N not in self._union:
            self._union[N] = np.array([P.jl_eps_for_union(N, n, 0.5) for n in self.d_outs])
        return self._union[N]


def _dg_eps(N: int, n: int) -> float:
    """Invert sklearn's rule n = 4 ln N / (eps^2/2 - eps^3/3) on (0, 1); NaN when it has no root."""
    c = 4 * math.log(N) / n
    if c >= 1 / 6:
        return math.nan
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if mid**2 / 2 - mid**3 / 3 < c else (lo, mid)
    return (lo + hi) / 2


def jl_distortion_explorer(
    *, m: int = 1024, seed: int = 0, d_outs: tuple = D_OUT_CHOICES, Ns: tuple = N_CHOICES
) -> Explorer:
    """Explorer of JL distortions: knobs ``d_out``, ``eps``, ``N``, ``data``, ``projection``, ``quantity``.

    Source points (``max(Ns)`` per data kind, in ``R^m``) and the projection matrices are drawn
    once from ``seed``; the ratios for all ``d_outs`` of one (data, projection) setting come from
    one draw of the largest map (its first ``n`` rows, rescaled, are the map to n dims) and are
    cached, so moving ``d_out``, ``eps``, ``N`` or ``quantity`` only slices arrays.
    ``data`` dict: ``ratios`` (the drawn pairs), ``hist``/``edges`` (density), ``pdf_x``/``pdf_y``
    (exact Gaussian-projection law), ``frac_out`` vs ``p_exact``, bounds, and the right panel's
    ``ns``/``max_dist``/``eps24``/``eps16``/``eps_dg``/``eps_union``.
    """
    d_outs = tuple(sorted(d_outs))
    state = _JLState(m, max(Ns), d_outs, seed)

    def compute(d_out, eps, N, data, projection, quantity):
        from scipy import stats

        k = d_outs.index(d_out)
        mask = state.pairs(N, data)
        r = state.ladder(data, projection)[k][mask]
        n_pairs = int(r.size)
        out = np.abs(r - 1.0) >= eps
        frac_out = float(out.mean())
        p = P.jl_pair_failure_prob(d_out, eps)
        sd = math.sqrt(2.0 / d_out)
        lo = max(0.0, min(1 - 1.25 * eps, 1 - 4.5 * sd))
        hi = max(1 + 1.25 * eps, 1 + 4.5 * sd)
        if quantity == "squared":
            vals, band = r, (1 - eps, 1 + eps)
            pdf_x = np.linspace(lo, hi, 400)
            pdf_y = stats.chi2.pdf(pdf_x * d_out, d_out) * d_out
        else:
            vals, band = np.sqrt(r), (math.sqrt(1 - eps), math.sqrt(1 + eps))
            lo, hi = math.sqrt(lo), math.sqrt(hi)
            pdf_x = np.linspace(lo, hi, 400)
            pdf_y = stats.chi.pdf(pdf_x * math.sqrt(d_out), d_out) * math.sqrt(d_out)
        counts, edges = np.histogram(vals, bins=N_BINS, range=(lo, hi))
        width = edges[1] - edges[0]
        hist = counts / max(n_pairs, 1) / width
        ladder = state.ladder(data, projection)[:, mask]
        max_dist = np.abs(ladder - 1.0).max(axis=1)
        ns = np.array(d_outs, dtype=float)
        logN = math.log(N)
        union = P.jl_union_bound(N, d_out, eps)
        return {
            "d_out": d_out,
            "eps": eps,
            "N": N,
            "data": data,
            "projection": projection,
            "quantity": quantity,
            "ratios": r,
            "n_pairs": n_pairs,
            "frac_out": frac_out,
            "p_exact": p,
            "expected_out": p * N * (N - 1) / 2,
            "chernoff": P.jl_chernoff_bound(d_out, eps),
            "chernoff_exact": P.jl_chernoff_bound(d_out, eps, exact=True),
            "union_bound": union,
            "vacuous": union >= 1,
            "n24": P.jl_min_dim(N, eps),
            "n16": P.jl_min_dim(N, eps, rule="chernoff16"),
            "n_dg": P.jl_min_dim(N, eps, rule="dasgupta_gupta"),
            "hist": hist,
            "edges": edges,
            "band": band,
            "pdf_x": pdf_x,
            "pdf_y": pdf_y,
            "below": float((vals < lo).mean()),
            "above": float((vals > hi).mean()),
            "ns": ns,
            "max_dist": max_dist,
            "eps24": np.sqrt(24 * logN / ns),
            "eps16": np.sqrt(16 * logN / ns),
            "eps_dg": np.array([_dg_eps(N, int(n)) for n in ns]),
            "eps_union": state.union_curve(N),
        }

    def draw(fig, d):
        # a fixed layout: constrained layout re-measures every label and costs most of a redraw
        fig.set_layout_engine("none")
        grid = {
            "width_ratios": [1.25, 1],
            "left": 0.06,
            "right": 0.99,
            "bottom": 0.13,
            "top": 0.88,
            "wspace": 0.2,
        }
        ax, bx = fig.subplots(1, 2, gridspec_kw=grid)
        e = d["edges"]
        lo_b, hi_b = d["band"]
        ax.axvspan(e[0], lo_b, color="tab:red", alpha=0.08, lw=0)
        ax.axvspan(hi_b, e[-1], color="tab:red", alpha=0.08, lw=0)
        ax.stairs(d["hist"], e, fill=True, color="tab:blue", alpha=0.55)
        sq = d["quantity"] == "squared"
        ax.plot(
            d["pdf_x"],
            d["pdf_y"],
            color="k",
            lw=1.3,
            label="exact χ²ₙ/n law" if sq else "exact χₙ/√n law",
        )
        ax.axvline(lo_b, color="tab:red", ls="--", lw=1)
        ax.axvline(hi_b, color="tab:red", ls="--", lw=1, label="1 ± ε")
        ax.set_xlim(e[0], e[-1])
        ax.set_xlabel(
            "pair ratio ‖A(x − y)‖² / ‖x − y‖²" if sq else "pair ratio ‖A(x − y)‖ / ‖x − y‖",
            fontsize=8,
        )
        ax.set_ylabel("density", fontsize=8)
        for axis in (ax, bx):
            axis.tick_params(labelsize=7)
        ax.legend(fontsize=7, loc="upper right")
        vac = " (vacuous)" if d["vacuous"] else ""
        txt = (
            f"{d['n_pairs']} pairs; outside: {d['frac_out']:.4f}\n"
            f"exact p(n, ε): {d['p_exact']:.4f}\n"
            f"Chernoff: {d['chernoff_exact']:.3g}, {d['chernoff']:.3g}\n"
            f"union bound: {d['union_bound']:.3g}{vac}\n"
            f"n for 24/16/DG: {d['n24']}/{d['n16']}/{d['n_dg']}"
        )
        ax.text(
            0.02,
            0.97,
            txt,
            transform=ax.transAxes,
            va="top",
            fontsize=7,
            bbox=dict(fc="white", ec="0.8", alpha=0.85),
        )
        ax.set_title(
            f"{PROJECTION_LABELS[d['projection']]}, {d['data']} data, n = {d['d_out']}", fontsize=9
        )
        # log2(n) on a linear axis: same picture as a log axis, cheaper to transform and tick
        ns = d["ns"]
        x = np.log2(ns)
        bx.plot(x, np.minimum(d["eps24"], 3), color="tab:orange", lw=1, label="√(24 ln N/n)")
        bx.plot(
            x, np.minimum(d["eps16"], 3), color="tab:orange", lw=1, ls=":", label="√(16 ln N/n)"
        )
        bx.plot(x, d["eps_dg"], color="tab:green", lw=1, ls="--", label="sklearn (DG)")
        bx.plot(x, np.minimum(d["eps_union"], 3), color="k", lw=1, label="exact union")
        bx.plot(x, np.minimum(d["max_dist"], 3), "o-", color="tab:blue", ms=3, label="observed")
        k = list(ns).index(d["d_out"])
        bx.plot([x[k]], [min(d["max_dist"][k], 3)], "o", color="tab:red", ms=7)
        bx.axhline(d["eps"], color="tab:red", ls="--", lw=0.8)
        bx.set_xticks(x, [str(int(n)) for n in ns])
        bx.set_yticks([0, 0.5, 1, 1.5, 2, 2.5, 3])
        bx.set_ylim(0, 3)
        bx.set_xlabel("target dimension n (log scale)", fontsize=8)
        bx.set_ylabel("worst pair |r − 1| (clipped at 3)", fontsize=8)
        bx.set_title(f"N = {d['N']} points", fontsize=9)
        bx.legend(fontsize=7)

    controls = [
        Control("d_out", list(d_outs), 64 if 64 in d_outs else d_outs[0], label="n (d_out)"),
        Control("eps", (0.05, 0.9), 0.2, step=0.05, label="ε"),
        Control("N", list(Ns), 200 if 200 in Ns else Ns[0]),
        Control("data", list(DATA_KINDS), "gaussian"),
        Control("projection", list(PROJECTIONS), "gaussian"),
        Control("quantity", ["squared", "plain"], "squared"),
    ]
    ex = Explorer(controls, compute, draw, figsize=(10.0, 3.8))
    ex.state = state
    return ex
