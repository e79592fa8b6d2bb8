"""The dimension-formula widget: minimum embedding dimension against vocabulary size.

Knob: ``N`` (log scale), a vocabulary size or a sequence length. One panel: the post's rule
``8.33 ln N``, the rounder ``8 ln N`` and the exact root of ``2 ln N + h_n = 0``
(:func:`kexue_lib.geometry.entropy_min_dim`) over the whole range of ``N``, reference lines at
common embedding sizes (word2vec 100/300, ALBERT's 128) and markers at head size 64 for
sequence lengths 512, 2048 and 8192; a vertical line and a readout at the current ``N``.
The figure of book/geometry/dimension-formula.ipynb.
"""

from __future__ import annotations

import math

import numpy as np

from kexue_lib.geometry import entropy_min_dim, skipgram_entropy_offset
from kexue_lib.widgets.frontends import Control, Explorer

__all__ = ["threshold_explorer"]

#: (dimension, label) of familiar embedding sizes drawn as horizontal reference lines.
REFERENCE_DIMS = ((100, "word2vec 100"), (128, "ALBERT 128"), (300, "word2vec / FastText 300"))
#: Sequence lengths at which a head size of 64 is marked.
HEAD_LENGTHS = (512.0, 2048.0, 8192.0)


def _power_of_ten(k: int) -> str:
    """``10`` with ``k`` as Unicode superscript digits (no mathtext)."""
    sup = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")
    return "10" + str(k).translate(sup)


def _format_N(N: float) -> str:
    """``2,000`` below a million, ``5.0 × 10⁶`` above (no mathtext)."""
    if N < 1e6:
        return f"{N:,.0f}"
    k = math.floor(math.log10(N))
    return f"{N / 10**k:.1f} × {_power_of_ten(k)}"


def threshold_explorer(
    *, N_range: tuple[float, float] = (1e2, 1e8), default_N: float = 1e5, n_grid: int = 121
) -> Explorer:
    """Explorer of the dimension rules ``8.33 ln N``, ``8 ln N`` and the exact entropy root.

    ``N_range``: the slider's range (``2 <= lo < hi``); ``default_N``: its start value;
    ``n_grid``: points of the curves (log-spaced ``N``). The exact curve solves
    ``2 ln N + h_n = 0`` (eq. (dimension-formula-rule) of
    book/geometry/dimension-formula.ipynb) by interpolating ``h_n`` on a fine grid of ``n``
    computed once here; the value at the slider's ``N`` is the Brent root
    :func:`~kexue_lib.geometry.entropy_min_dim` itself.
    """
    lo, hi = (float(v) for v in N_range)
    if not (2.0 <= lo < hi and math.isfinite(hi)):
        raise ValueError(f"N_range: expected 2 <= lo < hi < inf, got {N_range!r}")
    if not lo <= default_N <= hi:
        raise ValueError(f"default_N: expected a value in [{lo:g}, {hi:g}], got {default_N!r}")
    if not 10 <= int(n_grid) <= 1000:
        raise ValueError(f"n_grid: expected 10 to 1000 points, got {n_grid!r}")
    N_grid = np.geomspace(lo, hi, int(n_grid))
    # h_n on a grid of n covering the roots for the whole range (h_n is decreasing, nearly linear)
    n_lo = max(2.0, math.floor(entropy_min_dim(lo, rule="laplace")) - 6.0)
    n_hi = math.ceil(entropy_min_dim(hi, rule="laplace")) + 6.0
    # step 1 below n = 40, then 4: beyond, h_n is so nearly linear that interpolation errs ~1e-4
    ns = np.unique(
        np.concatenate(
            [np.arange(n_lo, min(n_hi, 40.0) + 1.0), np.arange(max(n_lo, 40.0), n_hi + 4.0, 4.0)]
        )
    )
    minus_h = -np.array([skipgram_entropy_offset(float(n)) for n in ns])
    curves = {
        "N_grid": N_grid,
        "rule_833": 8.33 * np.log(N_grid),
        "rule_8": 8.0 * np.log(N_grid),
        "exact": np.interp(2.0 * np.log(N_grid), minus_h, ns),
    }
    heads = np.array(HEAD_LENGTHS)
    heads = heads[(heads >= lo) & (heads <= hi)]

    def compute(*, N: float) -> dict:
        N = float(N)
        return {
            **curves,
            "N": N,
            "at_8": 8.0 * math.log(N),
            "at_833": 8.33 * math.log(N),
            "at_exact": entropy_min_dim(N, rule="exact"),
            "heads_L": heads,
            "heads_d": np.full(heads.shape, 64.0),
        }

    # plain-text tick labels: mathtext ones cost most of a redraw
    decades = 10.0 ** np.arange(math.ceil(math.log10(lo)), math.floor(math.log10(hi)) + 1)
    y_top = max(330.0, 1.1 * float(curves["rule_833"][-1]))

    def draw(fig, d: dict) -> None:
        ax = fig.subplots()
        ax.semilogx(d["N_grid"], d["rule_833"], color="C3", lw=3, alpha=0.6, label="8.33 ln N")
        ax.semilogx(d["N_grid"], d["rule_8"], color="C1", ls="--", label="8 ln N")
        ax.semilogx(d["N_grid"], d["exact"], color="k", lw=1, label="exact root of 2 ln N + hₙ = 0")
        for dim, name in REFERENCE_DIMS:
            ax.axhline(dim, color="gray", lw=0.6, ls=":")
            right = dim == REFERENCE_DIMS[-1][0]
            ax.text(
                hi if right else lo * 1.15,
                dim + 4,
                name,
                fontsize=8,
                color="dimgray",
                ha="right" if right else "left",
            )
        if len(d["heads_L"]):
            ax.plot(
                d["heads_L"], d["heads_d"], "s", color="C2", label="head size 64 at L = 512, 2k, 8k"
            )
        ax.axvline(d["N"], color="C0", lw=1)
        ax.text(
            0.98,
            0.04,
            f"N = {_format_N(d['N'])}\n8 ln N: {d['at_8']:.1f}\n8.33 ln N: {d['at_833']:.1f}\n"
            f"exact: {d['at_exact']:.1f}",
            transform=ax.transAxes,
            ha="right",
            va="bottom",
            fontsize=8,
            bbox=dict(fc="white", ec="0.8"),
        )
        ax.set_xlim(lo / 1.25, hi * 1.25)
        ax.set_ylim(0, y_top)
        ax.set_xticks(decades, [_power_of_ten(k) for k in np.log10(decades).round().astype(int)])
        ax.set_xlabel("vocabulary size (or sequence length) N")
        ax.set_ylabel("minimum dimension n")
        ax.legend(fontsize=8, loc="upper left")

    return Explorer(
        controls=[Control("N", (lo, hi), float(default_N), log=True, label="N")],
        compute=compute,
        draw=draw,
        figsize=(7.0, 3.8),
        # a title on every frame (live and animated) keeps the layout the same for both
        title=lambda v: f"N = {_format_N(v['N'])}",
    )
