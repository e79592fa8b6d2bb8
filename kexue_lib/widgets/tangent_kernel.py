"""The path-kernel reconstruction widget (kexue.fm/archives/8009).

A small tanh MLP is trained by full-batch gradient descent on a 1-D regression problem for a
fixed horizon ``lr * steps``; :func:`kexue_lib.tangent_kernel.train_with_kernel_trace` rebuilds
its outputs from the accumulated kernel sums. Knobs: the learning rate and the rule that
advances the reconstruction (Euler: the tangent kernel before each step; midpoint: the
Jacobian in the middle of each step). Panels: (a) the initial model ``f_0 = beta(x)``, the
trained model ``f_T`` and its reconstruction on a grid; (b) the largest reconstruction error
against the learning rate for both rules (slopes 1 and 2). Everything is precomputed.
"""

from __future__ import annotations

import numpy as np
import torch

from kexue_lib._core import check_int, check_positive, make_generator, seeded, to_numpy64
from kexue_lib.tangent_kernel import train_with_kernel_trace
from kexue_lib.training import single_thread
from kexue_lib.widgets.frontends import Control, Explorer, axes_title

__all__ = ["LRS", "RULES", "reconstruction_explorer", "sine_regression_data", "small_tanh_mlp"]

LRS = (0.4, 0.2, 0.1)
RULES = ("euler", "midpoint")


def small_tanh_mlp(
    width: int = 32,
    *,
    d_in: int = 1,
    d_out: int = 1,
    head_scale: float = 0.1,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> torch.nn.Sequential:
    """``d_in -> width -> width -> d_out`` with tanh, PyTorch's default init, and the output layer's
    weights scaled by ``head_scale`` (bias 0), so the initial function is nearly constant."""
    check_int("width", width)
    check_positive("head_scale", head_scale, strict=False)
    with seeded(seed):
        m = torch.nn.Sequential(
            torch.nn.Linear(d_in, width),
            torch.nn.Tanh(),
            torch.nn.Linear(width, width),
            torch.nn.Tanh(),
            torch.nn.Linear(width, d_out),
        ).to(dtype)
    with torch.no_grad():
        m[-1].weight.mul_(head_scale)
        m[-1].bias.zero_()
    return m


def sine_regression_data(
    n_train: int = 20, n_query: int = 150, *, noise: float = 0.1, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``y = sin(3x) + noise * eps`` on ``n_train`` evenly spaced ``x`` in [-1, 1], and a query grid
    on [-1.5, 1.5]. Returns ``X_train (n_train, 1)``, ``y_train (n_train,)``, ``X_query (n_query, 1)``
    in float64."""
    check_int("n_train", n_train, minimum=2)
    check_int("n_query", n_query)
    check_positive("noise", noise, strict=False)
    g = make_generator(seed)
    X = torch.linspace(-1, 1, n_train, dtype=torch.float64)[:, None]
    y = torch.sin(3 * X[:, 0]) + noise * torch.randn(n_train, dtype=torch.float64, generator=g)
    Xq = torch.linspace(-1.5, 1.5, n_query, dtype=torch.float64)[:, None]
    return X, y, Xq


def _mean_sq(f, y):
    return 0.5 * ((f[:, 0] - y) ** 2).mean()


def reconstruction_explorer(
    *, width: int = 32, horizon: float = 40.0, lrs=LRS, seed: int = 0
) -> Explorer:
    """Reconstruction error of the kernel-machine form against the learning rate at a fixed horizon.

    Trains :func:`small_tanh_mlp` (``seed``) on :func:`sine_regression_data` with the mean squared
    loss ``0.5 mean (f - y)^2`` for ``round(horizon / lr)`` full-batch steps per ``lr``, with both
    reconstruction rules. ``data(lr=..., rule=...)`` holds the curves and the error table
    ``errors`` (len(RULES), len(lrs)).
    """
    check_positive("horizon", horizon)
    lrs = tuple(float(v) for v in lrs)
    X, y, Xq = sine_regression_data(seed=seed)
    runs: dict = {}
    with single_thread():
        for rule_i, rule in enumerate(RULES):
            for lr in lrs:
                steps = max(1, int(round(horizon / lr)))
                r = train_with_kernel_trace(
                    small_tanh_mlp(width, seed=seed), X, y, Xq, _mean_sq,
                    lr=lr, steps=steps, segment_average=rule_i,
                )  # fmt: skip
                runs[rule, lr] = {
                    "f0": to_numpy64(r["f0"][:, 0]),
                    "fT": to_numpy64(r["fT"][:, 0]),
                    "recon": to_numpy64(r["recon"][:, 0]),
                    "error": float((r["recon"] - r["fT"]).abs().max()),
                    "loss": float(r["losses"][-1]),
                    "steps": steps,
                }
    errors = np.array([[runs[rule, lr]["error"] for lr in lrs] for rule in RULES])
    xq, xt, yt = to_numpy64(Xq[:, 0]), to_numpy64(X[:, 0]), to_numpy64(y)

    def compute(*, lr: float, rule: str) -> dict:
        return {
            **runs[rule, lr],
            "x": xq,
            "x_train": xt,
            "y_train": yt,
            "lrs": np.array(lrs),
            "errors": errors,
            "lr": lr,
            "rule": rule,
        }

    def draw(fig, d: dict) -> None:
        axA, axB = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.5, 1]})
        axA.plot(d["x_train"], d["y_train"], "k.", ms=5, label="training data")
        axA.plot(d["x"], d["f0"], color="0.6", lw=1, label=r"$f_0=\beta(x)$")
        axA.plot(d["x"], d["fT"], color="C0", lw=2, label=r"trained $f_T$")
        axA.plot(d["x"], d["recon"], color="C3", lw=1, ls="--", label="kernel-machine form")
        axA.set_xlabel("x")
        axA.legend(fontsize=7, loc="lower right")
        axes_title(axA, f"{d['steps']} steps, max error {d['error']:.1e}")
        for i, rule in enumerate(RULES):
            axB.loglog(d["lrs"], d["errors"][i], "o-", ms=3, color=f"C{i + 1}", label=rule)
        j = list(d["lrs"]).index(d["lr"])
        axB.loglog([d["lr"]], [d["errors"][RULES.index(d["rule"])][j]], "ks", ms=7)
        axB.set_xticks(d["lrs"], [f"{v:g}" for v in d["lrs"]])
        axB.set_xlabel("learning rate (horizon fixed)")
        axB.set_ylabel(r"max $|f_T - $recon$|$")
        axB.legend(fontsize=7)
        axes_title(axB, "slopes 1 (Euler), 2 (midpoint)")

    return Explorer(
        controls=[
            Control("lr", list(lrs), lrs[min(2, len(lrs) - 1)], label="learning rate"),
            Control("rule", list(RULES), "euler", label="rule"),
        ],
        compute=compute,
        draw=draw,
        figsize=(8.5, 3.0),
        title=lambda v: f"lr = {v['lr']}, horizon lr x steps = {horizon:g}, rule: {v['rule']}",
    )
