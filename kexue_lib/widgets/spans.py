"""The GlobalPointer decoding-threshold widget (kexue.fm/archives/8373, global-pointer chapter).

Knobs: the decision threshold on span scores, the model (e.g. with / without RoPE), the entity
type and the test sample shown. Panel (a): the sample's span-score matrix of that type (upper
triangle), gold spans boxed, spans above the threshold marked (x for a false positive, a dot for
a hit). Panel (b): entity-level F1 on the whole test set against the threshold for every model,
precomputed at construction, with the current threshold marked. The multi-label loss puts the
natural threshold at 0; the curve shows how far a trained model's best threshold is from it.
"""

from __future__ import annotations

import numpy as np
import torch

from kexue_lib._core import check_int, to_numpy64
from kexue_lib.spans import decode_spans
from kexue_lib.widgets.frontends import Control, Explorer, axes_title

__all__ = ["span_threshold_explorer"]

_COLORS = ("tab:blue", "tab:red", "tab:green", "tab:purple")


def span_threshold_explorer(
    scores: dict[str, torch.Tensor],
    labels: torch.Tensor,
    *,
    type_names: tuple[str, ...] | None = None,
    n_samples: int = 8,
    threshold_range: tuple[float, float] = (-10.0, 10.0),
    n_grid: int = 41,
) -> Explorer:
    """Explorer over the threshold of :func:`kexue_lib.spans.decode_spans`.

    ``scores``: model name -> ``(B, heads, n, n)`` span scores of the same test set (at most
    4 models); ``labels: (B, heads, n, n)`` gold spans. ``data()`` holds ``S`` (the shown score
    matrix, ``nan`` below the diagonal), ``gold`` and ``pred`` (sets of ``(start, end)``),
    ``grid`` and ``f1`` (model -> F1 on the grid of thresholds), ``f1_now`` (F1 of every model
    at the current threshold).
    """
    if not isinstance(scores, dict) or not 1 <= len(scores) <= len(_COLORS):
        raise ValueError(f"scores: expected a dict of 1 to {len(_COLORS)} score tensors")
    shape = tuple(labels.shape)
    for name, s in scores.items():
        if tuple(s.shape) != shape or len(shape) != 4:
            raise ValueError(f"scores: entry {name!r} has shape {tuple(s.shape)}, labels {shape}")
    check_int("n_samples", n_samples)
    check_int("n_grid", n_grid, minimum=2)
    lo, hi = threshold_range
    if not hi > lo:
        raise ValueError(f"threshold_range: expected (lo, hi) with hi > lo, got {threshold_range}")
    B, H, n, _ = shape
    n_samples = min(n_samples, B)
    names = tuple(type_names) if type_names is not None else tuple(f"type {t}" for t in range(H))
    if len(names) != H:
        raise ValueError(f"type_names: expected {H} names, got {len(names)}")
    grid = np.linspace(lo, hi, n_grid)
    # F1 at any threshold from two sorted score lists: O(N log N) once, O(log N) per threshold
    is_gold = labels > 0
    n_gold = int(is_gold.sum())
    ranked = {
        m: (s[torch.isfinite(s)].double().sort().values, s[is_gold].double().sort().values)
        for m, s in scores.items()
    }

    def f1_at(m: str, t) -> np.ndarray:
        every, gold = ranked[m]
        tt = torch.as_tensor(np.atleast_1d(t), dtype=torch.float64)
        pred = len(every) - torch.searchsorted(every, tt, right=True)
        hit = len(gold) - torch.searchsorted(gold, tt, right=True)
        den = (pred + n_gold).double()
        return to_numpy64(torch.where(den > 0, 2 * hit / den.clamp(min=1), torch.ones_like(den)))

    f1 = {m: f1_at(m, grid) for m in scores}
    shown = {m: to_numpy64(s[:n_samples]) for m, s in scores.items()}
    gold_sets = decode_spans(labels[:n_samples].to(torch.float32) - 0.5)
    lower = np.tril_indices(n, -1)

    def compute(threshold: float, model: str, type_name: str, sample: int) -> dict:
        t = names.index(type_name)
        S = shown[model][sample, t].copy()
        finite = np.isfinite(S)
        S[~finite] = np.nan
        S[lower] = np.nan
        pred = {
            (int(i), int(j)) for i, j in zip(*np.nonzero(np.nan_to_num(S, nan=-np.inf) > threshold))
        }
        gold = {(i, j) for (u, i, j) in gold_sets[sample] if u == t}
        f1_now = {m: float(f1_at(m, threshold)[0]) for m in scores}
        return {
            "S": S,
            "gold": gold,
            "pred": pred,
            "grid": grid,
            "f1": f1,
            "f1_now": f1_now,
            "threshold": threshold,
        }

    def draw(fig, d: dict) -> None:
        from matplotlib.patches import Rectangle

        fig.clear()
        ax1 = fig.add_subplot(1, 2, 1)
        ax2 = fig.add_subplot(1, 2, 2)
        ax1.imshow(np.clip(d["S"], -20, 20), cmap="RdBu_r", vmin=-20, vmax=20)
        for i, j in d["gold"]:
            ax1.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="k", lw=1.3))
        hits = sorted(d["pred"] & d["gold"])
        false = sorted(d["pred"] - d["gold"])
        if hits:
            ax1.plot([j for _, j in hits], [i for i, _ in hits], ".", color="k", ms=4)
        if false:
            ax1.plot([j for _, j in false], [i for i, _ in false], "x", color="k", ms=4)
        ax1.set(xlabel="end j", ylabel="start i")
        axes_title(ax1, f"scores (±20); boxes: gold; x: false positive ({len(false)})")
        for k, (m, curve) in enumerate(d["f1"].items()):
            ax2.plot(d["grid"], curve, color=_COLORS[k], label=f"{m}: F1 {d['f1_now'][m]:.3f}")
        ax2.axvline(d["threshold"], color="k", lw=1)
        ax2.axvline(0.0, color="0.6", ls=":", lw=1)
        ax2.set(xlabel="threshold on s(i, j)", ylabel="entity F1, all types", ylim=(0, 1.02))
        ax2.legend(fontsize=7, loc="lower center")
        axes_title(ax2, "F1 on the test set (dotted: the loss's threshold 0)")

    return Explorer(
        controls=[
            Control("threshold", (float(lo), float(hi)), 0.0, step=0.5, label="threshold"),
            Control("model", list(scores), next(iter(scores)), label="model"),
            Control("type_name", list(names), names[0], label="type"),
            Control("sample", (0, n_samples - 1), 0, label="sample"),
        ],
        compute=compute,
        draw=draw,
        figsize=(9.5, 3.6),
        title=lambda v: (
            f"threshold = {v['threshold']:.2f}, {v['model']}, {v['type_name']}, sample {v['sample']}"
        ),
    )
