"""The closed-form softmax's shrinkage knob against maximum likelihood (kexue.fm/archives/8578).

Knobs: the training-set size ``N`` and the covariance shrinkage ``s`` of
:func:`kexue_lib.linear_models.analytic_softmax` (``Sigma -> (1 - s) Sigma + s (tr Sigma / n) I``).
Panels: held-out accuracy (a) and log-loss (b) of the closed form against ``s``, with the two
maximum-likelihood references as horizontal lines (L2-penalised as sklearn's default ``C = 1``,
and nearly unpenalised), averaged over random splits. Everything is precomputed at
construction; a redraw only reads arrays.
"""

from __future__ import annotations

import numpy as np
import torch

from kexue_lib._core import check_int, check_tensor, make_generator
from kexue_lib.linear_models import analytic_softmax, fit_softmax_mle, predict_logits
from kexue_lib.training import single_thread
from kexue_lib.widgets.frontends import Control, Explorer, axes_title

__all__ = ["SHRINKAGES", "evaluate_split", "shrinkage_explorer", "standardize_split"]

SHRINKAGES = (0.01, 0.03, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0)


def standardize_split(
    X: torch.Tensor, train: torch.Tensor, test: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Standardise with the training rows' mean and SD (constant features keep SD 1)."""
    m = X[train].mean(0)
    s = X[train].std(0)
    s = torch.where(s > 0, s, torch.ones_like(s))
    return (X[train] - m) / s, (X[test] - m) / s


def evaluate_split(W, b, X, y) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of logits ``X W + b`` against labels ``y``."""
    logits = predict_logits(X, W, b)
    acc = (logits.argmax(-1) == y).double().mean().item()
    return acc, torch.nn.functional.cross_entropy(logits, y).item()


def shrinkage_explorer(
    X: torch.Tensor,
    y: torch.Tensor,
    *,
    sizes=(50, 200, 800),
    splits: int = 2,
    seed: int = 0,
    near_mle_l2: float = 1e-4,
    near_mle_iter: int = 100,
) -> Explorer:
    """Held-out accuracy and log-loss of the closed form against shrinkage, for each size in ``sizes``.

    X: (M, n) float, y: (M,) class ids. For each size ``N`` and each of ``splits`` random splits
    (generator from ``seed``), ``N`` rows train and the rest test, features standardised with the
    training statistics. References: ``fit_softmax_mle(l2=1/N)`` (sklearn's ``C = 1``) and
    ``fit_softmax_mle(l2=near_mle_l2/N, max_iter=near_mle_iter)`` (a nearly unpenalised fit: on
    separable data its weights grow with the iterations, like unregularised gradient descent).
    The arrays are available as ``data(...)["acc"]`` etc. (shape (len(SHRINKAGES),)).
    """
    check_tensor("X", X, floating=True)
    check_tensor("y", y)
    check_int("splits", splits)
    sizes = tuple(int(s) for s in sizes)
    M = X.shape[0]
    K = int(y.max()) + 1
    if not sizes or min(sizes) < K or max(sizes) >= M:
        raise ValueError(f"sizes: expected training sizes in [{K}, {M - 1}], got {sizes}")
    table: dict[int, dict] = {}
    with single_thread():
        for N in sizes:
            acc = np.zeros((splits, len(SHRINKAGES)))
            ll = np.zeros_like(acc)
            ref = np.zeros((splits, 2, 2))
            for r in range(splits):
                perm = torch.randperm(M, generator=make_generator(seed + 1000 * r + N))
                tr, te = perm[:N].to(X.device), perm[N:].to(X.device)
                Xtr, Xte = standardize_split(X, tr, te)
                for j, s in enumerate(SHRINKAGES):
                    try:
                        W, b = analytic_softmax(Xtr, y[tr], K, whiten=False, shrinkage=s)
                        acc[r, j], ll[r, j] = evaluate_split(W, b, Xte, y[te])
                    except ValueError:  # a class missing from this split, or singular
                        acc[r, j] = ll[r, j] = np.nan
                W, b = fit_softmax_mle(Xtr, y[tr], K, l2=1.0 / N)
                ref[r, 0] = evaluate_split(W, b, Xte, y[te])
                W, b = fit_softmax_mle(Xtr, y[tr], K, l2=near_mle_l2 / N, max_iter=near_mle_iter)
                ref[r, 1] = evaluate_split(W, b, Xte, y[te])
            table[N] = {
                "acc": np.nanmean(acc, 0),
                "logloss": np.nanmean(ll, 0),
                "mle_acc": ref[:, 0, 0].mean(),
                "mle_logloss": ref[:, 0, 1].mean(),
                "near_acc": ref[:, 1, 0].mean(),
                "near_logloss": ref[:, 1, 1].mean(),
                "acc_splits": acc,
            }
    shrink = np.array(SHRINKAGES)

    def compute(*, n_train: int, shrinkage: float) -> dict:
        t = table[n_train]
        j = SHRINKAGES.index(shrinkage)
        return {**t, "shrinkages": shrink, "shrinkage": shrinkage, "n_train": n_train, "j": j}

    def draw(fig, d: dict) -> None:
        axA, axB = fig.subplots(1, 2)
        for ax, key, ref_mle, ref_near, label in (
            (axA, "acc", d["mle_acc"], d["near_acc"], "held-out accuracy"),
            (axB, "logloss", d["mle_logloss"], d["near_logloss"], "held-out log-loss"),
        ):
            ax.plot(d["shrinkages"], d[key], "o-", color="C0", ms=3, label="closed form")
            ax.axhline(ref_mle, color="C1", lw=1.2, label="MLE, L2 (C = 1)")
            ax.axhline(ref_near, color="C2", lw=1.2, ls="--", label="MLE, ~no penalty")
            ax.plot([d["shrinkage"]], [d[key][d["j"]]], "s", color="k", ms=7)
            ax.set_xscale("log")
            ax.set_xlabel("shrinkage s")
            axes_title(ax, label)
        axB.set_yscale("log")
        axA.legend(fontsize=7, loc="lower right")

    return Explorer(
        controls=[
            Control("n_train", list(sizes), sizes[0], label="N train"),
            Control("shrinkage", list(SHRINKAGES), 0.3, label="shrinkage"),
        ],
        compute=compute,
        draw=draw,
        figsize=(8.0, 3.0),
        title=lambda v: f"N = {v['n_train']} training samples, shrinkage s = {v['shrinkage']}",
    )
