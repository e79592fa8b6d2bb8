"""The BERT-whitening widget: how β, γ and the kept dimension k change rank agreement.

Knobs: ``beta`` (centre at β·mean), ``gamma`` (scale by λ^{-γ/2}) and ``k`` (columns kept).
The caller passes the statistics pool ``train: (N, d)`` and one or more evaluation sets of
word (or sentence) pairs with human scores. Panels: (A) the covariance spectrum around βμ
(log scale), with the kept k eigenvalues highlighted and the variances left after scaling,
λ^{1−γ}; (B) Spearman correlation of the transformed cosines with the human scores against
k for every evaluation set, the current k marked, the untransformed cosine dashed. Used by
book/embeddings/bert-whitening.ipynb.
"""

from __future__ import annotations

import numpy as np
import torch

from kexue_lib._core import to_numpy64
from kexue_lib.whitening import fit_whitening
from kexue_lib.widgets.frontends import Control, Explorer, axes_title

__all__ = ["spearman_per_prefix", "whitening_spearman_explorer"]

BETAS = (0.0, 0.25, 0.5, 0.75, 1.0)
GAMMAS = (0.0, 0.25, 0.5, 0.75, 1.0)
COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red")


def _ranks(a: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(a, axis=0)


def spearman_per_prefix(ya: torch.Tensor, yb: torch.Tensor, scores: torch.Tensor) -> np.ndarray:
    """Spearman ρ between ``scores: (n,)`` and the cosine of the first k coordinates of paired
    rows ``ya, yb: (n, d)``, for every k = 1..d -> ``(d,)`` (ties get average ranks)."""
    a, b = to_numpy64(ya), to_numpy64(yb)
    dot = np.cumsum(a * b, axis=1)
    na, nb = np.cumsum(a * a, axis=1), np.cumsum(b * b, axis=1)
    cos = dot / np.sqrt(np.maximum(na * nb, 1e-300))
    rc = _ranks(cos)
    rs = _ranks(to_numpy64(scores))
    rc = rc - rc.mean(0)
    rs = rs - rs.mean()
    with np.errstate(invalid="ignore", divide="ignore"):  # constant cosines: nan, as scipy
        return (rc * rs[:, None]).sum(0) / np.sqrt((rc**2).sum(0) * (rs**2).sum())


def whitening_spearman_explorer(
    train: torch.Tensor,
    evals: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    *,
    k_default: int | None = None,
) -> Explorer:
    """Explorer over (β, γ, k) for whitening fitted on ``train: (N, d)`` and scored on
    ``evals = {name: (a: (n, d), b: (n, d), human_scores: (n,))}`` (at most four sets)."""
    if not isinstance(evals, dict) or not 1 <= len(evals) <= len(COLORS):
        raise ValueError(f"evals: expected a dict of 1 to {len(COLORS)} evaluation sets")
    train = train.double()
    d = train.shape[1]
    raw = {}
    for name, (a, b, s) in evals.items():
        if a.shape != b.shape or a.shape[1] != d or s.shape != (a.shape[0],):
            raise ValueError(f"evals: set {name!r} expected (n, {d}), (n, {d}), (n,) shapes")
        raw[name] = float(spearman_per_prefix(a.double(), b.double(), s)[-1])
    fits: dict[float, object] = {}

    def compute(*, beta: float, gamma: float, k: int) -> dict:
        if beta not in fits:
            fits[beta] = fit_whitening(train, beta=beta, gamma=0.0)
        rot = fits[beta]
        lam = rot.eigvals
        w = rot.W * lam.clamp_min(1e-300).pow(-gamma / 2)
        curves = {}
        for name, (a, b, s) in evals.items():
            ya = (a.double() - rot.mu) @ w
            yb = (b.double() - rot.mu) @ w
            curves[name] = spearman_per_prefix(ya, yb, s)
        lam_np = to_numpy64(lam)
        return {
            "beta": beta,
            "gamma": gamma,
            "k": k,
            "eigvals": lam_np,
            "scaled": lam_np ** (1 - gamma),
            "curves": curves,
            "raw": raw,
            "at_k": {n: float(c[k - 1]) for n, c in curves.items()},
        }

    def draw(fig, data: dict) -> None:
        axA, axB = fig.subplots(1, 2)
        idx = np.arange(1, d + 1)
        k = data["k"]
        axA.semilogy(idx, data["eigvals"], color="0.6", lw=1, label="λ (around βμ)")
        axA.semilogy(idx[:k], data["eigvals"][:k], "o", ms=3, color="tab:blue", label="kept")
        sc = data["scaled"] / data["scaled"][0] * data["eigvals"][0]
        axA.semilogy(idx[:k], sc[:k], color="tab:red", lw=1.5, label="λ^(1−γ), rescaled")
        axA.set(xlabel="eigen-direction", ylabel="variance")
        axA.legend(fontsize=7, loc="lower left")
        axes_title(axA, f"spectrum, β = {data['beta']:g}, γ = {data['gamma']:g}")
        for (name, c), col in zip(data["curves"].items(), COLORS):
            axB.plot(idx, c, color=col, lw=1.5, label=f"{name}: {data['at_k'][name]:.3f} at k")
            axB.axhline(data["raw"][name], color=col, ls="--", lw=1)
        axB.axvline(k, color="k", lw=0.8)
        axB.set(xlabel="kept dimension k", ylabel="Spearman ρ", xlim=(1, d))
        axB.legend(fontsize=7, loc="lower right")
        axes_title(axB, "Spearman vs k (dashed: raw cosine)")

    kd = d if k_default is None else k_default
    return Explorer(
        controls=[
            Control("beta", list(BETAS), default=1.0, label="β"),
            Control("gamma", list(GAMMAS), default=1.0, label="γ"),
            Control("k", (1, d), default=kd, label="k"),
        ],
        compute=compute,
        draw=draw,
        figsize=(9.0, 3.6),
    )
