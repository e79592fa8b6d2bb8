"""Generate-then-rerank against the nucleus size (RoFormer-Sim's ``gen_synonyms``, kexue.fm/archives/8454).

The chapter samples ``k`` candidates per input at each top-p of a grid and records, per
candidate, whether it is a valid paraphrase, whether it copies the input, its cosine to the
input under the retrieval head, and an id of its surface form. Knobs: ``top_p`` (the grid)
and ``keep`` (how many reranked candidates are kept per input). Panels: (a) the share of valid
paraphrases among all non-copy samples and among the ``keep`` best-ranked, for every top-p;
(b) distinct non-copy outputs per input.
"""

from __future__ import annotations

import numpy as np

from kexue_lib._core import check_int
from kexue_lib.widgets.frontends import Control, Explorer

__all__ = ["rerank_explorer", "rerank_stats"]


def rerank_stats(valid, copy, cos, form, keep: int) -> dict:
    """Statistics of one top-p setting; arrays ``(n_inputs, k)`` (numpy).

    Copies are dropped before ranking (as ``gen_synonyms`` does); ``valid_top`` is the share
    of valid paraphrases among the ``keep`` highest-cosine remaining candidates per input
    (fewer when fewer remain), ``valid_all`` the share among all remaining candidates and
    ``distinct`` the mean number of distinct remaining surface forms per input.
    """
    valid, copy = np.asarray(valid, bool), np.asarray(copy, bool)
    cos, form = np.asarray(cos, float), np.asarray(form)
    if not (valid.shape == copy.shape == cos.shape == form.shape) or valid.ndim != 2:
        raise ValueError(
            f"valid: expected four arrays of one shape (n_inputs, k), got {valid.shape}, "
            f"{copy.shape}, {cos.shape}, {form.shape}"
        )
    check_int("keep", keep, minimum=1)
    kept = ~copy
    ranked = np.where(kept, cos, -np.inf)
    order = np.argsort(-ranked, axis=1, kind="stable")[:, :keep]
    top_ok = np.take_along_axis(valid & kept, order, 1)
    top_n = np.take_along_axis(kept, order, 1)
    distinct = np.mean([len(set(f[m].tolist())) for f, m in zip(form, kept)])
    return {
        "valid_all": float(valid[kept].mean()) if kept.any() else float("nan"),
        "valid_top": float(top_ok.sum() / max(top_n.sum(), 1)),
        "distinct": float(distinct),
    }


def rerank_explorer(table: dict, *, k: int) -> Explorer:
    """Explorer over ``top_p`` (the keys of ``table``) and ``keep`` in 1..k.

    ``table[top_p] = dict(valid=, copy=, cos=, form=)``, each ``(n_inputs, k)``.
    """
    check_int("k", k, minimum=1)
    if not table:
        raise ValueError("table: expected at least one top-p setting, got none")
    grid = sorted(table)

    def compute(*, top_p: float, keep: int) -> dict:
        rows = [rerank_stats(**table[p], keep=keep) for p in grid]
        i = grid.index(top_p)
        return {
            "top_p": top_p,
            "keep": keep,
            "grid": np.array(grid),
            "valid_all": np.array([r["valid_all"] for r in rows]),
            "valid_top": np.array([r["valid_top"] for r in rows]),
            "distinct": np.array([r["distinct"] for r in rows]),
            "index": i,
        }

    def draw(fig, d: dict) -> None:
        fig.set_layout_engine("none")
        ax_a, ax_b = fig.subplots(
            1,
            2,
            gridspec_kw={"left": 0.08, "right": 0.97, "bottom": 0.2, "top": 0.82, "wspace": 0.3},
        )
        x = np.arange(len(d["grid"]))
        ax_a.bar(x - 0.2, d["valid_all"], 0.4, color="0.6", label="all samples")
        ax_a.bar(x + 0.2, d["valid_top"], 0.4, color="tab:blue", label=f"reranked top {d['keep']}")
        ax_a.axvspan(d["index"] - 0.5, d["index"] + 0.5, color="gold", alpha=0.25, lw=0)
        ax_a.set_xticks(x, [f"{p:g}" for p in d["grid"]], fontsize=8)
        ax_a.set(ylim=(0, 1.05), xlabel="top-p")
        ax_a.set_ylabel("share of valid paraphrases", fontsize=9)
        ax_a.set_title("(a) validity, copies removed", fontsize=9)
        ax_a.legend(fontsize=8, loc="lower left")
        ax_b.plot(x, d["distinct"], "o-", color="tab:green")
        ax_b.plot([d["index"]], [d["distinct"][d["index"]]], "o", ms=12, mfc="none", color="k")
        ax_b.set_xticks(x, [f"{p:g}" for p in d["grid"]], fontsize=8)
        ax_b.set(xlabel="top-p", ylim=(0, None))
        ax_b.set_ylabel("distinct outputs per input", fontsize=9)
        ax_b.set_title("(b) diversity", fontsize=9)

    return Explorer(
        controls=[
            Control("top_p", grid, grid[len(grid) // 2]),
            Control("keep", list(range(1, k + 1)), 1),
        ],
        compute=compute,
        draw=draw,
        figsize=(9.0, 3.0),
    )
