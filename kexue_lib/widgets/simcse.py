"""The SimCSE temperature widget: where the softmax of each row puts its mass.

Knob: ``tau`` (the temperature; the post's scale 20 is τ = 0.05). Input: ``2N`` twin rows (two
dropout views of N sentences, interleaved as in the post's code). Panels: (A) the row-wise
softmax of cos/τ over the other 2N − 1 rows, the twin (target) of every row outlined; (B) per
row, the probability given to the twin and to the hardest negative, with the effective number
of negatives exp(H) of the negatives' share in the title. Used by book/embeddings/simcse.ipynb.
"""

from __future__ import annotations

import numpy as np
import torch

from kexue_lib._core import check_tensor, to_numpy64
from kexue_lib.contrastive import simcse_twin_labels, simcse_unsup_loss
from kexue_lib.widgets.frontends import Control, Explorer, axes_title

__all__ = ["simcse_temperature_explorer"]

TAUS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def simcse_temperature_explorer(h: torch.Tensor) -> Explorer:
    """Explorer over τ for fixed twin rows ``h: (2N, d)`` (2 <= N <= 64)."""
    check_tensor("h", h, floating=True)
    if h.dim() != 2 or h.shape[0] % 2 or not 4 <= h.shape[0] <= 128:
        raise ValueError(f"h: expected shape (2N, d) with 2 <= N <= 64, got {tuple(h.shape)}")
    h = h.detach().double()
    n2 = h.shape[0]
    x = torch.nn.functional.normalize(h, dim=1)
    cos = x @ x.T
    twin = simcse_twin_labels(n2)
    eye = torch.eye(n2, dtype=torch.bool)
    rows = torch.arange(n2)

    def compute(*, tau: float) -> dict:
        logits = (cos / tau).masked_fill(eye, float("-inf"))
        p = torch.softmax(logits, dim=1)
        p_pos = p[rows, twin]
        neg = p.clone()
        neg[rows, twin] = 0
        neg = neg.masked_fill(eye, 0)
        q = neg / neg.sum(1, keepdim=True)
        ent = -(q * q.clamp_min(1e-300).log()).sum(1)
        return {
            "tau": tau,
            "probs": to_numpy64(p),
            "twin": twin.numpy(),
            "p_pos": to_numpy64(p_pos),
            "p_hard": to_numpy64(neg.max(1).values),
            "eff_negatives": float(ent.exp().mean()),
            "loss": float(-p_pos.log().mean()),
            "loss_lib": float(simcse_unsup_loss(h, scale=1 / tau)),
            "collapse": float(np.log(n2 - 1)),
        }

    def draw(fig, data: dict) -> None:
        axA, axB = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.4]})
        axA.imshow(data["probs"], cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
        r = np.arange(len(data["twin"]))
        axA.plot(data["twin"], r, "s", ms=4, mfc="none", mec="tab:red", mew=0.8)
        axA.set(xlabel="candidate row", ylabel="row")
        axes_title(axA, "softmax over the other 2N − 1 rows (red: twin)")
        axB.plot(r, data["p_pos"], "o", ms=3, color="tab:blue", label="twin (positive)")
        axB.plot(r, data["p_hard"], "x", ms=4, color="tab:red", label="hardest negative")
        axB.set(xlabel="row", ylabel="probability", ylim=(-0.02, 1.02))
        axB.legend(fontsize=7, loc="center right")
        axes_title(
            axB,
            f"loss {data['loss']:.3f} (collapse {data['collapse']:.2f}), "
            f"effective negatives {data['eff_negatives']:.1f}",
        )

    return Explorer(
        controls=[Control("tau", list(TAUS), default=0.05, label="τ")],
        compute=compute,
        draw=draw,
        figsize=(9.0, 3.6),
    )
