"""The Performer widget: how many random features does softmax attention need?

Knobs: the number of random features ``m``, the logit ``scale`` (inverse temperature of the
softmax being approximated) and the kind of projection (``"iid"`` Gaussian rows or
block-``"orthogonal"`` rows with chi-distributed norms).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from kexue_lib._core import check_positive, make_generator, to_numpy64
from kexue_lib.attention import (
    elu_plus_one,
    linear_attention_weights,
    performer_positive_features,
    softmax_attention,
)
from kexue_lib.widgets.frontends import Control, Explorer

__all__ = ["performer_explorer"]

M_CHOICES = (4, 8, 16, 32, 64, 128, 256, 512)
SCALE_CHOICES = (0.0625, 0.125, 0.25, 0.5, 1.0)


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(a - b) / torch.linalg.matrix_norm(b))


def performer_explorer(*, n: int = 48, d: int = 16, n_repeats: int = 4, seed: int = 0) -> Explorer:
    """Performer approximation of ``P = softmax(scale q k^T / sqrt(d))`` with ``m`` random features.

    Draws ``q, k: (n, d)`` (noisy copies of one random walk, so nearby tokens attend to each
    other; rows rescaled to norm ``sqrt(d)``) and ``n_repeats`` pairs of ``(512, d)`` projections
    (iid ``N(0, I)`` rows; block-orthogonal rows from ``projection.orthogonal_gaussian_matrix``)
    once from ``seed``; a given ``m`` uses the first ``m`` rows. Queries and keys enter as
    ``x sqrt(scale) d^(-1/4)`` so that ``phi(q') . phi(k')`` estimates ``exp(scale q.k / sqrt(d))``.
    Panels: (A) exact ``P``; (B) the Performer weights ``A = phi(Q') phi(K')^T / row sums`` of the
    first draw; (C) the relative error ``|A - P|_F / |P|_F`` against ``m``, averaged over the
    draws, for both projections, with an ``m^(-1/2)`` guide and the error of ``elu + 1`` linear
    attention (no random features) for comparison. The estimator's variance grows like
    ``exp(|q' + k'|^2)``, so large scales need many more features.
    """
    for name, val in (("n", n), ("d", d), ("n_repeats", n_repeats)):
        check_positive(name, val, integer=True)
    from kexue_lib.projection import orthogonal_gaussian_matrix

    g = make_generator(seed)
    walk = torch.randn(n, d, generator=g, dtype=torch.float64).cumsum(0) / math.sqrt(6.0)
    q = walk + torch.randn(n, d, generator=g, dtype=torch.float64)  # nearby tokens are similar
    k = walk + torch.randn(n, d, generator=g, dtype=torch.float64)
    q = q / q.norm(dim=-1, keepdim=True) * math.sqrt(d)
    k = k / k.norm(dim=-1, keepdim=True) * math.sqrt(d)
    m_max = max(M_CHOICES)
    omegas = {
        "iid": torch.randn(n_repeats, m_max, d, generator=g, dtype=torch.float64),
        "orthogonal": torch.stack(
            [
                orthogonal_gaussian_matrix(
                    m_max, d, row_norms="chi", dtype=torch.float64, generator=g
                )
                for _ in range(n_repeats)
            ]
        ),
    }
    per_scale: dict[float, dict] = {}

    def tables(scale: float) -> dict:
        """Exact weights, the first draw's approximations and the error curves (cached)."""
        if scale not in per_scale:
            c = math.sqrt(scale) * d**-0.25
            qs, ks = q * c, k * c
            _, P = softmax_attention(
                qs[None, None], ks[None, None], ks[None, None], scale=1.0, return_weights=True
            )
            P = P[0, 0]
            approx, curves = {}, {}
            for kind, om in omegas.items():
                # all draws at once: features for m_max rows, reshaped to (R, n, m_max). Using
                # the first m columns differs from features built with omega[:m] only by a
                # per-row (query) or global (key) constant, which cancels in A's row sums.
                flat = om.reshape(-1, d)
                fq = performer_positive_features(qs, flat, is_query=True)
                fk = performer_positive_features(ks, flat, is_query=False)
                fq = fq.reshape(n, n_repeats, m_max).transpose(0, 1)
                fk = fk.reshape(n, n_repeats, m_max).transpose(0, 1)
                errs = np.zeros((n_repeats, len(M_CHOICES)))
                for i, m in enumerate(M_CHOICES):
                    S = fq[..., :m] @ fk[..., :m].transpose(-1, -2)
                    A = S / S.sum(-1, keepdim=True)  # linear attention weights with eps = 0
                    approx[(kind, m)] = A[0]
                    errs[:, i] = to_numpy64(
                        torch.linalg.matrix_norm(A - P) / torch.linalg.matrix_norm(P)
                    )
                curves[kind] = errs
            A_elu = linear_attention_weights(qs, ks, feature_map=elu_plus_one, eps=0.0)
            per_scale[scale] = {
                "P": P,
                "approx": approx,
                "curves": curves,
                "elu_err": _rel_err(A_elu, P),
                "q_in": qs,
                "k_in": ks,
            }
        return per_scale[scale]

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread avoids pool overhead on a busy CPU
    try:
        for s in SCALE_CHOICES:  # a few ms each: slider moves then only index
            tables(float(s))
    finally:
        torch.set_num_threads(threads)

    def compute(*, m: int, scale: float, features: str) -> dict:
        t = tables(float(scale))
        A = t["approx"][(features, m)]
        i = M_CHOICES.index(m)
        return {
            "m": m,
            "scale": float(scale),
            "features": features,
            "exact": to_numpy64(t["P"]),
            "approx": to_numpy64(A),
            "ms": np.array(M_CHOICES, dtype=float),
            "errors_iid": t["curves"]["iid"],
            "errors_orthogonal": t["curves"]["orthogonal"],
            "err_iid": t["curves"]["iid"].mean(0),
            "err_orthogonal": t["curves"]["orthogonal"].mean(0),
            "err": float(t["curves"][features][0, i]),
            "mean_err": float(t["curves"][features][:, i].mean()),
            "elu_err": t["elu_err"],
            "omega": to_numpy64(omegas[features][0, :m]),
            "q_in": to_numpy64(t["q_in"]),
            "k_in": to_numpy64(t["k_in"]),
        }

    def draw(fig, data: dict) -> None:
        from matplotlib.ticker import NullFormatter

        axA, axB, axC = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1, 1, 1.3]})
        vmax = float(data["exact"].max()) * 1.5
        for ax, mat, title in (
            (axA, data["exact"], "softmax weights P"),
            (axB, data["approx"], f"Performer, m = {data['m']}"),
        ):
            ax.imshow(mat, cmap="viridis", vmin=0, vmax=vmax, interpolation="nearest")
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("key j")
            ax.set_ylabel("query i")
        ms = data["ms"]
        axC.loglog(ms, data["err_iid"], "o-", ms=3, label="iid (mean)")
        axC.loglog(ms, data["err_orthogonal"], "s-", ms=3, label="orthogonal (mean)")
        ref = data["err_iid"][0] * np.sqrt(ms[0] / ms)
        axC.loglog(ms, ref, ":", color="gray", label="slope -1/2")
        axC.axhline(data["elu_err"], color="k", lw=0.8, ls="--", label="elu+1")
        axC.plot([data["m"]], [data["err"]], "o", ms=9, mfc="none", mec="red")
        axC.set_xlabel("random features m")
        axC.set_ylabel("relative error ‖A − P‖F / ‖P‖F")
        axC.set_title(f"scale = {data['scale']:g}, error = {data['err']:.3f}", fontsize=9)
        axC.legend(fontsize=7, loc="lower left")
        # major labels only: minor log labels come and go with the range and crowd the label
        axC.yaxis.set_minor_formatter(NullFormatter())

    return Explorer(
        controls=[
            Control("m", list(M_CHOICES), 32, label="random features m"),
            Control("scale", list(SCALE_CHOICES), 0.25, label="logit scale"),
            Control("features", ["iid", "orthogonal"], "iid", label="projection"),
        ],
        compute=compute,
        draw=draw,
        figsize=(10.0, 3.3),
    )
