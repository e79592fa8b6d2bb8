"""The minibatch-paradox widget of the WGAN chapter (kexue.fm/archives/8244, sheet 14).

Two batches of the same Gaussian ``N(0, I_D)`` are matched by exact optimal transport, and the
first batch is also sent to the single atom at the mean. Knobs: the dimension ``D`` and the
batch size ``B``.

Panels: (a) the histogram of the ``B`` matched distances ``|x_i - y_perm(i)|`` and of the
distances to the mean ``|x_i|``, both divided by ``sqrt(D)`` (the batch-to-batch ``W_1`` and the
batch-to-mean ``W_1`` are their averages); (b) the ratio of the two ``W_1`` against ``D`` for
each batch size, tabulated once, with the bound ``sqrt 2`` and the current setting marked.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from kexue_lib._core import check_int, make_generator, to_numpy64
from kexue_lib.ot import exact_ot, gaussian_batch_ratio
from kexue_lib.training import single_thread
from kexue_lib.widgets.frontends import Control, Explorer

__all__ = ["DIMS", "BATCHES", "batch_ratio_explorer"]

DIMS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]
BATCHES = [8, 32, 128]
_COLORS = {8: "tab:orange", 32: "tab:blue", 128: "tab:green"}


def batch_ratio_explorer(*, reps: int = 1, seed: int = 0) -> Explorer:
    """Explorer over ``D`` (choices :data:`DIMS`) and ``B`` (:data:`BATCHES`).

    Panel (b) averages ``max(reps, reps * 256 // B)`` pairs of batches per ``(D, B)``, drawn once
    at construction with seed ``seed``; panel (a) shows one pair, drawn per frame from a seed fixed by ``(D, B)``.
    """
    check_int("reps", reps)
    table = {}
    gen = make_generator(seed)
    with single_thread():  # 8..128-point problems: a second thread only adds hand-off cost
        for b in BATCHES:
            n = max(reps, reps * 256 // b)  # small batches are noisier and cheaper: more pairs
            table[b] = np.array(
                [gaussian_batch_ratio(d, b, reps=n, generator=gen)["ratio"].mean() for d in DIMS]
            )

    def compute(*, D: int, B: int) -> dict:
        g = make_generator(seed + 1000 * D + B)
        xy = torch.randn(2 * B, D, generator=g, dtype=torch.float64)
        x, y = xy[:B], xy[B:]
        with single_thread():
            value, perm = exact_ot(x, y)
        matched = to_numpy64(torch.linalg.vector_norm(x - y[perm], dim=1)) / math.sqrt(D)
        to_mean = to_numpy64(torch.linalg.vector_norm(x, dim=1)) / math.sqrt(D)
        return {
            "D": D,
            "B": B,
            "matched": matched,
            "to_mean": to_mean,
            "w_bb": float(value),
            "w_bm": float(to_mean.mean() * math.sqrt(D)),
            "ratio": float(value) / float(to_mean.mean() * math.sqrt(D)),
            "dims": np.array(DIMS, dtype=float),
            "table": table,
        }

    def draw(fig, data: dict) -> None:
        fig.set_layout_engine("none")
        axA, axB = fig.subplots(
            1,
            2,
            gridspec_kw={"left": 0.07, "right": 0.98, "bottom": 0.17, "top": 0.8, "wspace": 0.25},
        )
        edges = np.linspace(0.0, 3.0, 31)
        for key, col, lab in (
            ("to_mean", "tab:red", "to the mean"),
            ("matched", "tab:blue", "matched batch-to-batch"),
        ):
            counts, _ = np.histogram(np.clip(data[key], 0, 3), edges)
            axA.stairs(counts, edges, fill=True, color=col, alpha=0.6, label=lab)
        axA.axvline(data["to_mean"].mean(), color="tab:red", lw=1.5)
        axA.axvline(data["matched"].mean(), color="tab:blue", lw=1.5)
        axA.set(xlabel="distance / √D", ylabel="count", xlim=(0, 3))
        axA.legend(fontsize=8, loc="upper right", frameon=False)
        axA.set_title(
            f"(a) D = {data['D']}, B = {data['B']}: W₁(batch, batch') = {data['w_bb']:.2f},\n"
            f"W₁(batch, mean) = {data['w_bm']:.2f}, ratio {data['ratio']:.2f}",
            fontsize=9,
        )
        for b, r in data["table"].items():
            axB.semilogx(
                data["dims"],
                r,
                "o-",
                ms=3,
                color=_COLORS[b],
                lw=2 if b == data["B"] else 1,
                label=f"B = {b}",
            )
        axB.axhline(math.sqrt(2), color="k", ls="--", lw=1)
        axB.axhline(1.0, color="0.6", lw=0.8)
        axB.plot([data["D"]], [data["ratio"]], "k*", ms=9)
        axB.set(
            xlabel="dimension D (log)", ylabel="W₁(batch, batch') / W₁(batch, mean)", ylim=(0, 1.55)
        )
        axB.legend(fontsize=8, loc="lower right", frameon=False)
        axB.set_title(
            "(b) ratio against D (dashed: √2);\nabove 1 the mean beats a real batch", fontsize=9
        )

    return Explorer(
        controls=[
            Control("D", DIMS, 128, label="dimension D"),
            Control("B", BATCHES, 32, label="batch size B"),
        ],
        compute=compute,
        draw=draw,
        figsize=(9.0, 3.3),
    )
