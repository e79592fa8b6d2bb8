"""Gradient accumulation for an in-batch contrastive loss: exact vs naive (kexue.fm/archives/8471).

Knobs: the micro-batch size and the similarity ``scale`` (an inverse temperature). A small
float64 MLP encoder embeds a fixed batch of ``B`` inputs arranged as twins (rows 2k, 2k+1);
the loss is :func:`kexue_lib.contrastive.inbatch_softmax_loss` with cosine similarities and
a masked diagonal. Panels: (a) the relative error of the accumulated gradient of each
parameter tensor against the full-batch gradient, naive vs two-pass, at the chosen
micro-batch; (b) the overall relative error and the cosine between the naive and the true
gradient against the micro-batch size.
"""

from __future__ import annotations

import numpy as np
import torch

from kexue_lib._core import check_int
from kexue_lib.contrastive import accumulate_contrastive_grad, inbatch_softmax_loss, twin_labels
from kexue_lib.training import single_thread
from kexue_lib.widgets.frontends import Control, Explorer

__all__ = ["FLOOR", "accumulation_explorer"]

FLOOR = 1e-17  # errors below this (exact zeros included) are drawn at the floor


def accumulation_explorer(
    *,
    batch: int = 32,
    d_in: int = 8,
    d_hidden: int = 32,
    d_out: int = 16,
    scales: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0),
    seed: int = 0,
) -> Explorer:
    """Explorer over ``micro`` (powers of two from 2 to ``batch``) and ``scale`` in ``scales``.

    ``compute`` returns ``micros``, ``names`` (parameter tensors), ``naive_rel`` /
    ``exact_rel`` (overall relative errors per micro-batch size), ``naive_cos`` (cosine of
    the naive and the full gradient), ``naive_tensor`` / ``exact_tensor`` (per-tensor errors at
    the chosen micro-batch) and ``loss``. Everything in float64 from ``seed``.
    """
    check_int("batch", batch, minimum=4)
    if batch & (batch - 1):
        raise ValueError(f"batch: expected a power of two >= 4, got {batch}")
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        enc = torch.nn.Sequential(
            torch.nn.Linear(d_in, d_hidden), torch.nn.Tanh(), torch.nn.Linear(d_hidden, d_out)
        ).double()
    base = torch.randn(batch // 2, d_in, generator=gen, dtype=torch.float64)
    x = base.repeat_interleave(2, 0) + 0.3 * torch.randn(
        batch, d_in, generator=gen, dtype=torch.float64
    )
    t = twin_labels(batch)
    names = [n for n, _ in enc.named_parameters()]
    micros = [2**k for k in range(1, batch.bit_length()) if 2**k <= batch]
    per_scale: dict[float, dict] = {}

    def grads() -> list[torch.Tensor]:
        return [p.grad.clone() for p in enc.parameters()]

    def tables(scale: float) -> dict:
        if scale in per_scale:
            return per_scale[scale]
        kw = dict(scale=scale, mask_diagonal=True, normalize=True)
        enc.zero_grad()
        loss = inbatch_softmax_loss(enc(x), t, **kw)
        loss.backward()
        full = grads()
        out = {"loss": loss.item(), "naive": [], "exact": []}
        for m in micros:
            for method, key in (("naive", "naive"), ("two_pass", "exact")):
                enc.zero_grad()
                accumulate_contrastive_grad(enc, x, t, micro_batch=m, method=method, **kw)
                out[key].append(grads())
        flat = torch.cat([g.flatten() for g in full])

        def rel(gs):
            f = torch.cat([g.flatten() for g in gs])
            cos = float(f @ flat / (f.norm() * flat.norm())) if f.norm() > 0 else 0.0
            return float((f - flat).norm() / flat.norm()), cos

        out["naive_rel"] = np.array([rel(g)[0] for g in out["naive"]])
        out["naive_cos"] = np.array([rel(g)[1] for g in out["naive"]])
        out["exact_rel"] = np.array([rel(g)[0] for g in out["exact"]])
        out["tensor"] = {
            key: np.array(
                [[float((a - b).norm() / b.norm()) for a, b in zip(gs, full)] for gs in out[key]]
            )
            for key in ("naive", "exact")
        }
        per_scale[scale] = out
        return out

    def compute(*, micro: int, scale: float) -> dict:
        with single_thread():  # a few thousand parameters: one thread is fastest
            tb = tables(float(scale))
        i = micros.index(micro)
        return {
            "micro": micro,
            "scale": float(scale),
            "batch": batch,
            "micros": np.array(micros),
            "names": names,
            "naive_rel": tb["naive_rel"],
            "naive_cos": tb["naive_cos"],
            "exact_rel": tb["exact_rel"],
            "naive_tensor": tb["tensor"]["naive"][i],
            "exact_tensor": tb["tensor"]["exact"][i],
            "loss": tb["loss"],
        }

    def draw(fig, data: dict) -> None:
        fig.set_layout_engine("none")
        ax_a, ax_b = fig.subplots(
            1,
            2,
            gridspec_kw={"left": 0.08, "right": 0.9, "bottom": 0.2, "top": 0.82, "wspace": 0.35},
        )
        k = np.arange(len(data["names"]))
        ax_a.bar(
            k - 0.2, np.maximum(data["naive_tensor"], FLOOR), 0.4, color="tab:red", label="naive"
        )
        ax_a.bar(
            k + 0.2,
            np.maximum(data["exact_tensor"], FLOOR),
            0.4,
            color="tab:blue",
            label="two-pass",
        )
        ax_a.set_yscale("log")
        ax_a.set_ylim(FLOOR / 3, 30)
        ax_a.set_xticks(k, data["names"], fontsize=8)
        ax_a.set_ylabel("relative gradient error", fontsize=9)
        ax_a.set_title(
            f"(a) per tensor, micro-batch {data['micro']} of {data['batch']}", fontsize=9
        )
        ax_a.legend(fontsize=8, loc="upper right")
        m = data["micros"]
        ax_b.plot(m, np.maximum(data["naive_rel"], FLOOR), "o-", color="tab:red", label="naive")
        ax_b.plot(m, np.maximum(data["exact_rel"], FLOOR), "s-", color="tab:blue", label="two-pass")
        i = list(m).index(data["micro"])
        ax_b.plot([m[i]], [max(data["naive_rel"][i], FLOOR)], "o", ms=12, mfc="none", color="k")
        ax_b.set_xscale("log", base=2)
        ax_b.set_yscale("log")
        ax_b.set_ylim(FLOOR / 3, 30)
        ax_b.set_xticks(m, [str(v) for v in m], fontsize=8)
        ax_b.set_xlabel("micro-batch size", fontsize=9)
        ax_b.set_title(f"(b) whole gradient, scale = {data['scale']:g}", fontsize=9)
        ax_b.legend(fontsize=8, loc="center left")
        twin = ax_b.twinx()
        twin.plot(m, data["naive_cos"], ":", color="tab:red")
        twin.set_ylim(-1.05, 1.05)
        twin.set_ylabel("cos(naive, true)  (dotted)", fontsize=8)

    return Explorer(
        controls=[
            Control("micro", micros, micros[1], label="micro-batch"),
            Control("scale", list(scales), scales[-2] if len(scales) > 1 else scales[0]),
        ],
        compute=compute,
        draw=draw,
        figsize=(9.0, 3.2),
    )
