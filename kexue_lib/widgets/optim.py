"""The momentum-accumulation widget (kexue.fm/archives/8634, sheet 31 §4 E3).

Knobs: the momentum ``beta`` and the accumulation length ``k``.
Panels: (a) the weight each scheme puts on the last ``3k`` micro-gradients at an update step,
newest first: exact accumulation (a block of ``(1 - beta) / k`` per window, ``beta`` times less
per earlier window), a plain EMA with ``beta_tilde = 1 - (1 - beta) / k``, and a plain EMA with
``beta`` unchanged; (b) the decay per window, ``beta_tilde ** k``, against ``k``, between
``beta`` (exact accumulation) and its limit ``exp(-(1 - beta))``.
"""

from __future__ import annotations

import numpy as np

from kexue_lib._core import to_numpy64
from kexue_lib.optim import beta_tilde, limit_decay, window_weights
from kexue_lib.widgets.frontends import Control, Explorer, axes_title

__all__ = ["accumulation_weights_explorer"]

_KS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
_COLORS = {"accumulate": "0.2", "beta_tilde": "tab:blue", "ema": "tab:orange"}


def accumulation_weights_explorer() -> Explorer:
    """Explorer of the three momentum schemes' weights on past micro-gradients."""

    def compute(*, beta: float, k: int) -> dict:
        n = 3 * int(k)
        weights = {
            s: to_numpy64(window_weights(beta, int(k), n, scheme=s))
            for s in ("accumulate", "beta_tilde", "ema")
        }
        ks = np.array(_KS, dtype=float)
        decay = np.array([beta_tilde(beta, int(j)) ** j for j in _KS])
        return {
            "beta": beta,
            "k": int(k),
            "beta_tilde": beta_tilde(beta, int(k)),
            "weights": weights,
            "window_mass": {s: float(w[: int(k)].sum()) for s, w in weights.items()},
            "ks": ks,
            "decay": decay,
            "limit": limit_decay(beta),
        }

    labels = {
        "accumulate": "exact accumulation",
        "beta_tilde": "EMA with β̃ = 1 − (1−β)/k",
        "ema": "EMA with β unchanged",
    }

    def draw(fig, d: dict) -> None:
        fig.clear()
        a, b = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.6, 1]})
        k = d["k"]
        x = np.arange(1, 3 * k + 1)
        for s, w in d["weights"].items():
            ls = "--" if s == "beta_tilde" else "-"
            a.step(x, w, where="mid", color=_COLORS[s], lw=1.6, ls=ls, label=labels[s])
        for j in (1, 2):
            a.axvline(j * k + 0.5, color="0.8", lw=0.8, zorder=0)
        a.set_xlabel("micro-gradient age (1 = newest)")
        a.set_ylabel("weight in the update")
        a.set_ylim(0, max(w.max() for w in d["weights"].values()) * 1.15)
        a.legend(fontsize=7, loc="upper right")
        m = d["window_mass"]
        axes_title(
            a,
            f"mass on the last k: accum {m['accumulate']:.3f}, β̃ {m['beta_tilde']:.3f},"
            f" β {m['ema']:.3f}",
        )
        b.semilogx(d["ks"], d["decay"], "o-", color="tab:blue", ms=3, label="β̃ᵏ")
        b.axhline(d["beta"], color="0.2", lw=1, label="β (exact)")
        b.axhline(d["limit"], color="tab:red", lw=1, ls="--", label="exp(−(1−β))")
        b.plot([k], [d["beta_tilde"] ** k], "o", color="tab:blue", ms=8, mfc="none")
        b.set_xlabel("k")
        b.set_ylabel("decay per window")
        lo, hi = d["beta"], d["limit"]
        pad = max(hi - lo, 1e-3) * 0.25
        b.set_ylim(lo - pad, hi + pad)
        b.legend(fontsize=7, loc="lower right")
        axes_title(b, f"β̃ᵏ = {d['beta_tilde'] ** k:.4f} at k = {k}")

    return Explorer(
        controls=[
            Control("beta", (0.5, 0.999), 0.9, step=0.001, label="β"),
            Control("k", list(_KS), 8, label="k"),
        ],
        compute=compute,
        draw=draw,
        figsize=(9.5, 3.2),
        title=lambda v: (
            f"β = {v['beta']:.3f}, k = {v['k']}: β̃ = {1 - (1 - v['beta']) / v['k']:.4f}"
        ),
    )
