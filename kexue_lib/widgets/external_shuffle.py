"""The chunk-merge widget (kexue.fm/archives/8662): how the round-robin merge is biased.

Knobs: the number of chunks ``chunks`` (``m``) and the lines of the last chunk ``last_lines``
(the other chunks hold ``lines_per_chunk`` lines each). Each frame simulates ``draws`` complete
shuffles of line numbers with :func:`kexue_lib.external_shuffle.simulate_shuffles` for three
merges: the post's round-robin, round-robin with the post's rejection patch for a short last
chunk, and the exact (urn) merge. Panels: (A) where the last chunk's lines land in the output
(density of the relative position; 1 = uniform); (B) how often two neighbouring output lines come
from the same chunk, against the uniform-permutation value ``sum_c n_c (n_c - 1) / (L (L - 1))``;
the title gives log10 of the share of the ``L!`` permutations round-robin can reach. The figure
of book/optimization/external-shuffle.ipynb, eqs. (external-shuffle-reachable) and
(external-shuffle-adjacent).
"""

from __future__ import annotations

import math

import numpy as np

from kexue_lib.external_shuffle import round_robin_reachable_count, simulate_shuffles
from kexue_lib.widgets.frontends import Control, Explorer, axes_title

__all__ = ["MERGES", "chunk_merge_explorer"]

MERGES = ("round-robin", "round-robin-rejection", "exact")
_COLORS = {"round-robin": "tab:red", "round-robin-rejection": "tab:orange", "exact": "tab:blue"}
_LABELS = {"round-robin": "round-robin", "round-robin-rejection": "+ rejection", "exact": "exact"}


def chunk_merge_explorer(
    *, lines_per_chunk: int = 12, max_chunks: int = 10, draws: int = 1000, bins: int = 12,
    seed: int = 0,
) -> Explorer:  # fmt: skip
    """Chunk-merge explorer: last-chunk positions and same-chunk neighbours for three merges.

    ``lines_per_chunk``: lines of every chunk but the last; ``max_chunks``: slider maximum;
    ``draws``: simulated shuffles per merge and frame; ``bins``: histogram bins of panel A.
    """
    for name, v, lo in (("lines_per_chunk", lines_per_chunk, 2), ("max_chunks", max_chunks, 2),
                        ("draws", draws, 100), ("bins", bins, 2)):  # fmt: skip
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"{name}: expected an int >= {lo}, got {v!r}")
    n = lines_per_chunk

    def compute(*, chunks: int, last_lines: int) -> dict:
        sizes = [n] * (chunks - 1) + [last_lines]
        L = sum(sizes)
        last = np.arange(L - last_lines, L)
        # bin edges on whole positions, so a uniform law gives density 1 in every bin
        cuts = np.unique(np.round(np.linspace(0, L, min(bins, L) + 1)).astype(np.int64))
        edges = cuts / L
        out = {"sizes": sizes, "L": L, "edges": edges, "density": {}, "mean_pos": {}}
        out["same_chunk"] = {}
        for i, merge in enumerate(MERGES):
            d = simulate_shuffles(sizes, merge, draws, seed=seed + 1000 * i + 17 * chunks)
            pos = np.nonzero(np.isin(d, last))[1]
            hist = np.histogram(pos, bins=cuts)[0]
            out["density"][merge] = hist / (len(pos) * np.diff(edges))
            out["mean_pos"][merge] = float(pos.mean())
            label = np.minimum(d // n, chunks - 1)
            out["same_chunk"][merge] = float((label[:, 1:] == label[:, :-1]).mean())
        s = np.array(sizes, dtype=np.float64)
        out["uniform_same"] = float((s * (s - 1)).sum() / (L * (L - 1)))
        out["rr_same_equal"] = (n - 1) / ((L - 1) * chunks) if last_lines == n else None
        log_reach = math.log10(round_robin_reachable_count(sizes)) - math.lgamma(L + 1) / math.log(
            10
        )
        out["log10_reachable"] = log_reach
        return out

    def draw(fig, data: dict) -> None:
        axA, axB = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.6, 1]})
        for merge in MERGES:
            axA.stairs(data["density"][merge], data["edges"], color=_COLORS[merge], lw=1.8,
                       label=_LABELS[merge])  # fmt: skip
        axA.axhline(1.0, color="k", lw=0.8, ls="--", label="uniform")
        axA.set(xlabel="relative output position of the last chunk's lines", ylabel="density",
                xlim=(0, 1), ylim=(0, max(4.0, 1.1 * max(map(max, data["density"].values())))))  # fmt: skip
        axA.legend(fontsize=7, loc="upper right")
        axes_title(axA, f"last chunk: {data['sizes'][-1]} of {n} lines, L = {data['L']}")
        vals = [data["same_chunk"][m] for m in MERGES]
        axB.bar(range(3), vals, color=[_COLORS[m] for m in MERGES])
        axB.axhline(data["uniform_same"], color="k", lw=0.8, ls="--")
        axB.set_xticks(range(3), [_LABELS[m] for m in MERGES], fontsize=7)
        axB.set(ylabel="P(neighbours from the same chunk)", ylim=(0, 1.25 * max(vals + [0.1])))
        axes_title(axB, f"round-robin reaches 10^{data['log10_reachable']:.1f} of the L! orders")

    return Explorer(
        controls=[
            Control("chunks", (2, max_chunks), default=4, step=1, label="chunks m"),
            Control("last_lines", (1, n), default=3, step=1, label="last chunk lines"),
        ],
        compute=compute,
        draw=draw,
        figsize=(8.5, 3.4),
    )
