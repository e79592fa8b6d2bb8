"""The UniVAE mask widget: per-layer attention masks of a small UniVAE-style stack.

A sentence of ``length`` tokens (``[CLS] x_1 .. [SEP]``) is written twice, each copy padded to
``max_len``: ``[src | tgt]`` of ``2 max_len`` positions with segment ids ``[0 .. 0 | 1 .. 1]``.
Knobs: the block index ``layer``, the number of ``latent`` blocks (UniVAE: the first
``layers - latent`` blocks use the independent mask, the rest the UniAE mask), the sentence
``length`` (the rest of each half is padding) and the mask ``kind`` ("UniVAE" schedule, or one
of "UniAE", "independent", "UniLM" in every block). Panels: (A) the bool mask (query x key) of
the chosen block, with the segment boundary and the padding marked and target-to-source
entries in red; (B) for every block, which source tokens the target reads directly in that
block and which have reached the target by then through the stack (boolean reachability
``R_l = M_l R_{l-1}``, ``R_{-1} = I``): the only path in UniVAE runs through position 0.
All masks come from :mod:`kexue_lib.attention` (``unilm_mask``, ``uniae_mask``,
``with_key_padding``), scheduled as in :meth:`kexue_lib.models.vae.UniVAE.masks`.
"""

from __future__ import annotations

import numpy as np
import torch

from kexue_lib._core import check_int
from kexue_lib.attention import uniae_mask, unilm_mask, with_key_padding
from kexue_lib.widgets.frontends import Control, Explorer

__all__ = ["KINDS", "mask_explorer", "token_labels"]

#: "UniVAE": independent in the first ``layers - latent`` blocks, UniAE (+ code) in the rest;
#: the others use one mask in every block
KINDS = ("UniVAE", "UniAE", "independent", "UniLM")

_BLOCKED, _PAD, _SAME, _CROSS = (
    (1.0, 1.0, 1.0),
    (0.9, 0.92, 0.96),
    (0.2, 0.2, 0.2),
    (0.84, 0.1, 0.1),
)


def token_labels(length: int, max_len: int) -> list[str]:
    """Tick labels of one half: ``C x1 .. S`` for the ``length`` real tokens, ``·`` for pads."""
    words = [f"x{i}" for i in range(1, length - 1)]
    return ["C", *words, "S"] + ["·"] * (max_len - length)


def _block_masks(kind: str, layers: int, latent: int, length: int, max_len: int) -> torch.Tensor:
    """``(layers, 2 max_len, 2 max_len)`` bool masks of the stack (True = may attend)."""
    T = 2 * max_len
    seg = torch.zeros(1, T, dtype=torch.long)
    seg[:, max_len:] = 1
    real = torch.zeros(1, T, dtype=torch.bool)
    real[:, :length] = True
    real[:, max_len : max_len + length] = True
    ind = with_key_padding(uniae_mask(seg, allow_cls=False), real)[0]
    ae = with_key_padding(uniae_mask(seg, allow_cls=True), real)[0]
    if kind == "UniVAE":
        per_block = [ind] * (layers - latent) + [ae] * latent
    elif kind == "UniAE":
        per_block = [ae] * layers
    elif kind == "independent":
        per_block = [ind] * layers
    else:
        per_block = [with_key_padding(unilm_mask(seg), real)[0]] * layers
    return torch.stack(per_block)


def mask_explorer(*, layers: int = 4, max_len: int = 6) -> Explorer:
    """Explorer of the per-block masks of a ``layers``-block UniVAE-style stack.

    ``compute(layer, latent, length, kind)`` returns ``masks: (layers, T, T)`` bool (``T = 2
    max_len``; query x key, True = may attend) and ``mask = masks[layer]``; ``kinds`` the name
    of each block's mask; ``code_blocks`` the blocks whose input gets the code (UniVAE's last
    ``latent``; none otherwise); ``direct: (layers, max_len)`` bool, True where some real target
    query attends source key ``j`` in that block; ``reach: (layers, max_len)`` bool, True where
    source input ``j`` influences some real target output after that block
    (``R_l = M_l R_{l-1}`` over booleans); ``first_reach``, the first block with any reach
    (-1 if none); ``density``, the allowed fraction of ``mask``.
    """
    check_int("layers", layers, minimum=2)
    check_int("max_len", max_len, minimum=2)
    if max_len > 16:
        raise ValueError(f"max_len: expected at most 16 (a readable grid), got {max_len}")
    n, T = max_len, 2 * max_len

    def compute(*, layer: int, latent: int, length: int, kind: str) -> dict:
        check_int("layer", layer, minimum=0)
        check_int("latent", latent, minimum=0)
        check_int("length", length, minimum=2)
        masks = _block_masks(kind, layers, latent, length, n).numpy()
        k = layers - latent if kind == "UniVAE" else layers
        if kind == "UniVAE":
            kinds = ["independent"] * k + ["UniAE"] * latent
        else:
            kinds = [kind] * layers
        tgt = slice(n, n + length)  # real target queries
        direct = masks[:, tgt, :n].any(axis=1)
        reach = np.zeros((layers, n), dtype=bool)
        R = np.eye(T, dtype=np.int64)
        for b in range(layers):
            R = (masks[b].astype(np.int64) @ R > 0).astype(np.int64)
            reach[b] = R[tgt, :n].any(axis=0)
        any_reach = np.flatnonzero(reach.any(axis=1))
        return {
            "layer": layer,
            "latent": latent,
            "length": length,
            "kind": kind,
            "max_len": n,
            "masks": masks,
            "mask": masks[layer],
            "kinds": kinds,
            "code_blocks": list(range(k, layers)),
            "direct": direct,
            "reach": reach,
            "first_reach": int(any_reach[0]) if any_reach.size else -1,
            "density": float(masks[layer].mean()),
        }

    def draw(fig, data: dict) -> None:
        from matplotlib.patches import Patch, Rectangle

        axA, axB = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.6, 1]})
        m, length, b = data["mask"], data["length"], data["layer"]
        src = np.arange(T) < n
        pad = np.zeros(T, dtype=bool)
        pad[length:n] = True
        pad[n + length :] = True
        rgb = np.empty((T, T, 3))
        rgb[:] = _BLOCKED
        rgb[pad[:, None] | pad[None, :]] = _PAD
        rgb[m] = _SAME
        rgb[m & ~src[:, None] & src[None, :]] = _CROSS
        axA.imshow(rgb, interpolation="nearest")
        for v in (n - 0.5,):
            axA.axhline(v, color="tab:blue", lw=1.2)
            axA.axvline(v, color="tab:blue", lw=1.2)
        if length < n:
            for v in (length - 0.5, n + length - 0.5):
                axA.axhline(v, color="tab:blue", lw=0.8, ls=":")
                axA.axvline(v, color="tab:blue", lw=0.8, ls=":")
        labels = token_labels(length, n)
        ticks = list(range(T))
        axA.set_xticks(ticks, labels + labels, fontsize=7)
        axA.set_yticks(ticks, labels + labels, fontsize=7)
        axA.set_xlabel("key j  (source | target)")
        axA.set_ylabel("query i  (source | target)")
        code = " + code" if b in data["code_blocks"] else ""
        axA.set_title(
            f"block {b}: {data['kinds'][b]}{code}, density {data['density']:.3f}", fontsize=9
        )
        axA.legend(
            handles=[
                Patch(color=_SAME, label="may attend"),
                Patch(color=_CROSS, label="target reads source"),
                Patch(facecolor=_PAD, edgecolor="0.6", label="padding"),
            ],
            loc="upper center",
            bbox_to_anchor=(0.5, -0.13),
            fontsize=7,
            ncol=3,
        )

        level = data["reach"].astype(float) + data["direct"]  # 0 none, 1 reached, 2 read here
        axB.imshow(level, cmap="Reds", vmin=0, vmax=2.4, interpolation="nearest", aspect="auto")
        axB.add_patch(Rectangle((-0.5, b - 0.5), n, 1, fill=False, ec="tab:blue", lw=2))
        axB.set_xticks(range(n), labels, fontsize=7)
        axB.set_yticks(
            range(layers),
            [f"{i}{' (code)' if i in data['code_blocks'] else ''}" for i in range(layers)],
            fontsize=7,
        )
        axB.set_xlabel("source token j (input)")
        axB.set_ylabel("block")
        fr = data["first_reach"]
        axB.set_title(
            "source reaches target: " + (f"from block {fr}" if fr >= 0 else "never"), fontsize=9
        )
        cmap = axB.images[0].cmap
        axB.legend(
            handles=[
                Patch(color=cmap(2 / 2.4), label="target reads it in this block"),
                Patch(color=cmap(1 / 2.4), label="reached the target by now"),
            ],
            loc="upper center",
            bbox_to_anchor=(0.5, -0.13),
            fontsize=7,
            ncol=1,
        )

    return Explorer(
        controls=[
            Control("layer", (0, layers - 1), min(layers - 1, 2), label="block"),
            Control("latent", (0, layers - 1), min(layers - 1, 2), label="latent blocks"),
            Control("length", (2, n), min(n, 4), label="sentence length"),
            Control("kind", list(KINDS), "UniVAE", label="mask"),
        ],
        compute=compute,
        draw=draw,
        figsize=(9.0, 4.3),
    )
