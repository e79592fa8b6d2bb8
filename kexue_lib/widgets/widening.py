"""The widening widget: how far a k-times wider Transformer drifts from the small one.

Knobs: the expansion factor ``k`` and the ``recipe`` (the exact widening, head duplication, or
one of the mistakes of kexue.fm 8444's table and its pitfalls). Panels: (A) the largest logit
deviation of every recipe at this ``k`` on a log scale (round-off floor marked), (B) that
deviation against ``k`` for the chosen recipe, (C) wide-model logits against small-model logits.
"""

from __future__ import annotations

import numpy as np
import torch

from kexue_lib._core import make_generator, seeded, to_numpy64
from kexue_lib.models.transformer import TinyTransformer
from kexue_lib.models.widening import duplicate_heads, widen_model
from kexue_lib.widgets.frontends import Control, Explorer

__all__ = ["RECIPES", "widening_explorer"]

#: label -> keyword arguments of ``widen_model`` (``None``: ``duplicate_heads``)
RECIPES: dict[str, dict | None] = {
    "exact widening": {},
    "head duplication": None,
    "no k^(1/4) on q, k": {"qk_temperature": False},
    "FFN-out bias b/k": {"ffn_out_bias": "k"},
    "dense rule before GELU": {"activation_aware": False},
    "tiled [x, x] layout": {"layout": "block"},
    "LayerNorm eps kept": {"adjust_eps": False},
    "standard RoPE ladder": {"rope_ladder": "standard"},
}

FLOOR = 1e-17  # where an exactly-zero deviation is drawn on the log axis
LOG_FLOOR = -17.5


def widening_explorer(
    *,
    k_max: int = 4,
    vocab: int = 32,
    d: int = 8,
    heads: int = 2,
    layers: int = 2,
    n: int = 12,
    batch: int = 2,
    seed: int = 0,
) -> Explorer:
    """Explorer over ``k in 1..k_max`` and the recipes in :data:`RECIPES`.

    A random float64 ``TinyTransformer(vocab, d, heads, layers, pos="rope", head="lm")`` and
    a batch of tokens ``(batch, n)`` are drawn once from ``seed``; every (k, recipe) pair is
    widened and evaluated once at construction, so a slider move only indexes and draws.
    ``compute`` returns ``errs: (R,)`` = ``max |logits_wide - logits_small|`` per recipe,
    ``err_vs_k: (k_max,)`` for the chosen recipe, and the flattened logits of both models.
    """
    if isinstance(k_max, bool) or not isinstance(k_max, int) or k_max < 1:
        raise ValueError(f"k_max: expected an int >= 1, got {k_max!r}")
    with seeded(seed):
        small = TinyTransformer(vocab, d, heads, layers, max_len=n, pos="rope", head="lm")
    small = small.double().eval()
    g = make_generator(seed)
    tokens = torch.randint(0, vocab, (batch, n), generator=g)
    names = list(RECIPES)
    ks = list(range(1, k_max + 1))
    with torch.no_grad():
        ref = small(tokens)
        logits = {}
        for k in ks:
            for name, kw in RECIPES.items():
                big = duplicate_heads(small, k) if kw is None else widen_model(small, k, **kw)
                logits[k, name] = big(tokens)
    ref_np = to_numpy64(ref).ravel()
    errs = np.array(
        [[float((logits[k, nm] - ref).abs().max()) for nm in names] for k in ks]
    )  # (K, R)
    wide_np = {key: to_numpy64(v).ravel() for key, v in logits.items()}

    def compute(*, k: int, recipe: str) -> dict:
        r = names.index(recipe)
        return {
            "k": k,
            "recipe": recipe,
            "recipes": names,
            "sel": r,
            "errs": errs[k - 1].copy(),
            "ks": np.array(ks),
            "err_vs_k": errs[:, r].copy(),
            "small": ref_np,
            "wide": wide_np[k, recipe],
        }

    def draw(fig, data: dict) -> None:
        # log10 values on linear axes: same picture as a log axis, much cheaper to lay out
        axA, axB, axC = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1.5, 1, 1]})
        e = np.log10(np.maximum(data["errs"], FLOOR))
        colors = ["tab:red" if i == data["sel"] else "0.6" for i in range(len(e))]
        y = np.arange(len(e))
        axA.barh(y, e - LOG_FLOOR, left=LOG_FLOOR, color=colors)
        axA.axvline(-12, color="k", ls=":", lw=1, label="1e-12 (float64 round-off)")
        axA.set_yticks(y, data["recipes"], fontsize=8)
        axA.invert_yaxis()
        axA.set_xlim(LOG_FLOOR, 2)
        axA.set_xlabel(f"log10 max |Δ logit| at k = {data['k']}")
        axA.legend(fontsize=7, loc="lower right")
        axA.set_title("(A) every recipe", fontsize=9)

        ev = np.log10(np.maximum(data["err_vs_k"], FLOOR))
        axB.plot(data["ks"], ev, "o-", color="tab:red")
        axB.plot([data["k"]], [ev[data["k"] - 1]], "ks", ms=9, mfc="none")
        axB.axhline(-12, color="k", ls=":", lw=1)
        axB.set_ylim(LOG_FLOOR, 2)
        axB.set_xticks(data["ks"])
        axB.set(xlabel="expansion factor k", ylabel="log10 max |Δ logit|")
        axB.set_title(f"(B) {data['recipe']}", fontsize=9)

        s, w = data["small"], data["wide"]
        lo, hi = float(min(s.min(), w.min())), float(max(s.max(), w.max()))
        axC.plot([lo, hi], [lo, hi], color="0.7", lw=1, label="identity")
        axC.plot(s, w, ".", ms=2, color="tab:red", label="logits")
        axC.set(xlabel="small-model logit", ylabel=f"wide-model logit (k = {data['k']})")
        axC.legend(fontsize=7, loc="upper left")
        axC.set_title("(C) wide vs small", fontsize=9)

    return Explorer(
        controls=[
            Control("k", ks, 2 if k_max >= 2 else 1, label="expansion k"),
            Control("recipe", names, names[0], label="recipe"),
        ],
        compute=compute,
        draw=draw,
        figsize=(11.0, 3.4),
    )
