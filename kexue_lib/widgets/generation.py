"""The beam-size widget of retrieval by constrained generation (kexue.fm/archives/8802).

Built from a table the chapter measures (no model inside): for each beam size and each decoding
mode (free decoding, trie-constrained decoding) the share of test questions whose top output is
correct, wrong but in the database, or not in the database at all. Knob: the beam size.
Panels: (a) exact match against beam size for both modes, the current size marked; (b) the three
outcome shares of both modes at the current size as stacked bars.
"""

from __future__ import annotations

import numpy as np

from kexue_lib.widgets.frontends import Control, Explorer, axes_title

__all__ = ["beam_trie_explorer"]

_MODES = ("free", "trie")
_OUTCOMES = ("correct", "valid but wrong", "not in database")
_COLORS = ("tab:green", "tab:orange", "tab:red")


def beam_trie_explorer(beam_sizes, correct, invalid) -> Explorer:
    """``beam_sizes``: increasing ints ``(K,)``; ``correct`` and ``invalid``: ``(K, 2)`` shares in
    [0, 1] per beam size and mode (column 0 free decoding, column 1 the trie) with
    ``correct + invalid <= 1``. The compute step returns the three outcome shares per mode."""
    sizes = [int(b) for b in beam_sizes]
    if not sizes or sorted(set(sizes)) != sizes or sizes[0] < 1:
        raise ValueError(f"beam_sizes: expected increasing ints >= 1, got {beam_sizes!r}")
    correct = np.asarray(correct, dtype=np.float64)
    invalid = np.asarray(invalid, dtype=np.float64)
    for name, a in (("correct", correct), ("invalid", invalid)):
        if a.shape != (len(sizes), 2):
            raise ValueError(f"{name}: expected shape ({len(sizes)}, 2), got {a.shape}")
        if not ((a >= 0) & (a <= 1)).all():
            raise ValueError(f"{name}: expected shares in [0, 1]")
    if (correct + invalid > 1 + 1e-12).any():
        raise ValueError("invalid: expected correct + invalid <= 1 for every entry")

    def compute(*, beam: int) -> dict:
        k = sizes.index(int(beam))
        shares = np.stack([correct[k], 1 - correct[k] - invalid[k], invalid[k]], axis=1)
        return {
            "beam_sizes": np.array(sizes),
            "correct": correct,
            "invalid": invalid,
            "index": k,
            "shares": shares,  # (2 modes, 3 outcomes)
        }

    def draw(fig, d) -> None:
        ax1, ax2 = fig.subplots(1, 2)
        b = d["beam_sizes"]
        for m, (mode, style) in enumerate(zip(_MODES, ("--", "-"))):
            ax1.plot(b, d["correct"][:, m], style, marker="o", label=f"{mode}: exact match")
            ax1.plot(b, d["invalid"][:, m], style, marker="x", label=f"{mode}: not in database")
        ax1.axvline(b[d["index"]], color="0.6", lw=1)
        ax1.set_xlabel("beam size")
        ax1.set_ylabel("share of test questions")
        ax1.set_ylim(-0.02, 1.02)
        ax1.set_xticks(b)
        ax1.legend(fontsize=7, loc="center right")
        axes_title(ax1, "(a) top output against beam size")
        bottom = np.zeros(2)
        for j, (name, color) in enumerate(zip(_OUTCOMES, _COLORS)):
            ax2.bar([0, 1], d["shares"][:, j], bottom=bottom, color=color, label=name)
            bottom += d["shares"][:, j]
        ax2.set_xticks([0, 1], list(_MODES))
        ax2.set_ylim(0, 1.02)
        ax2.legend(fontsize=7, loc="lower center")
        axes_title(ax2, f"(b) outcomes at beam {b[d['index']]}")

    return Explorer(
        controls=[Control("beam", sizes, sizes[0], label="beam size")],
        compute=compute,
        draw=draw,
    )
