"""The RoPE rotation widget: rotated q/k pairs, the Toeplitz score matrix and the decay envelope.

Knobs: the query position ``m``, the key position ``n``, a common ``shift`` added to both
(moving it spins every arrow but changes no score), the frequency pair ``pair`` shown on
the unit circle and the ladder's ``base``. The figure of chapter
``book/positions/rope-2d.ipynb``, which derives eqs. (rope-2d-relative) and (rope-2d-envelope)
drawn in its panels.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from kexue_lib._core import check_dim_even, check_positive, make_generator, to_numpy64
from kexue_lib.linalg import toeplitz_fraction
from kexue_lib.position_encoding import sinusoidal_frequencies
from kexue_lib.rope import apply_rope, rope_decay_envelope, rope_matrix
from kexue_lib.widgets.frontends import Control, Explorer

__all__ = ["rotation_explorer"]


def rotation_explorer(
    *, d: int = 64, n_positions: int = 64, max_offset: int = 16, seed: int = 0
) -> Explorer:
    """RoPE rotation explorer: ``(R_m q)^T (R_n k)`` depends on ``n − m`` only.

    Draws one random pair ``q, k: (d,)`` (float64) from ``seed`` at construction.
    Query position ``m + shift``, key position ``n + shift`` with ``m, n ∈ [0, max_offset)``,
    ``shift ∈ [0, n_positions − max_offset]``. Panels: (A) pair ``pair`` of q and k before
    (faint) and after (solid) rotation by ``position · θ_pair``; (B) the score matrix
    ``s(m', n') = (R_{m'} q)^T (R_{n'} k)`` for ``m', n' < n_positions`` with the current
    cell marked; (C) the decay envelope ``F(Δ)`` and the actual ``s(0, Δ)``.
    """
    check_dim_even("d", d)
    check_positive("n_positions", n_positions, integer=True)
    check_positive("max_offset", max_offset, integer=True)
    if max_offset > n_positions:
        raise ValueError(
            f"max_offset: expected at most n_positions={n_positions}, got {max_offset}"
        )
    g = make_generator(seed)
    q = torch.randn(d, dtype=torch.float64, generator=g)
    k = torch.randn(d, dtype=torch.float64, generator=g)
    pos = torch.arange(n_positions)
    deltas = torch.arange(0, 2 * n_positions + 1)
    deltas_np = to_numpy64(deltas)

    per_base: dict[float, tuple] = {}

    def tables(base: float) -> tuple:
        """Everything that depends on ``base`` only (cached: slider moves then only index)."""
        if base not in per_base:
            if len(per_base) > 64:
                per_base.clear()
            Q = apply_rope(q.expand(n_positions, d), pos, base=base)  # (N, d): rows R_{m'} q
            K = apply_rope(k.expand(n_positions, d), pos, base=base)
            S = Q @ K.T
            kd = apply_rope(k.expand(len(deltas), d), deltas, base=base)
            per_base[base] = (
                sinusoidal_frequencies(d, base, dtype=torch.float64).tolist(),
                to_numpy64(Q),
                to_numpy64(K),
                to_numpy64(S),
                float(toeplitz_fraction(S)),
                to_numpy64(kd @ q),
                to_numpy64(rope_decay_envelope(deltas, d, base=base)),
            )
        return per_base[base]

    q64, k64 = to_numpy64(q), to_numpy64(k)

    def compute(*, m: int, n: int, shift: int, pair: int, base: float) -> dict:
        mq, nk = m + shift, n + shift
        theta, Q, K, S, tf, s_delta, env = tables(float(base))
        th = theta[pair]
        s_rel = float(q @ rope_matrix(nk - mq, d, base=base) @ k)
        sl = slice(2 * pair, 2 * pair + 2)
        qp, kp, qr, kr = q64[sl], k64[sl], Q[mq, sl], K[nk, sl]
        raw = math.atan2(kp[1], kp[0]) - math.atan2(qp[1], qp[0])
        rot = math.atan2(kr[1], kr[0]) - math.atan2(qr[1], qr[0])
        return {
            "pair": pair,
            "m_pos": mq,
            "n_pos": nk,
            "theta": th,
            "angle_q": (mq * th) % (2 * math.pi),
            "angle_k": (nk * th) % (2 * math.pi),
            "raw_angle": raw % (2 * math.pi),
            "rel_angle": rot % (2 * math.pi),
            "q_pair": qp.copy(),
            "k_pair": kp.copy(),
            "q_rot": qr.copy(),
            "k_rot": kr.copy(),
            "dot_pair": float(qr @ kr),
            "scores": S,
            "toeplitz_fraction": tf,
            "s_mn": float(S[mq, nk]),
            "s_rel": s_rel,
            "deltas": deltas_np,
            "s_delta": s_delta,
            "envelope": env,
        }

    def draw(fig, data: dict) -> None:
        axA, axB, axC = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1, 1, 1.4]})
        # (A) the unit circle of one frequency pair: faint = raw, solid = rotated
        t = np.linspace(0, 2 * np.pi, 120)
        axA.plot(np.cos(t), np.sin(t), color="0.85", lw=1)
        scale = max(np.linalg.norm(data["q_pair"]), np.linalg.norm(data["k_pair"]), 1e-12)
        vec = np.stack([data["q_pair"], data["k_pair"], data["q_rot"], data["k_rot"]]) / scale
        cols = ["#a6c8e5", "#f0a9a9", "tab:blue", "tab:red"]
        axA.quiver(
            np.zeros(4),
            np.zeros(4),
            vec[:, 0],
            vec[:, 1],
            color=cols,
            angles="xy",
            scale_units="xy",
            scale=1,
            width=0.02,
        )
        for j, (key, r) in enumerate((("angle_q", 0.25), ("angle_k", 0.4))):
            a0 = math.atan2(vec[j, 1], vec[j, 0])
            arc = np.linspace(a0, a0 + data[key], 40)
            axA.plot(
                r * np.cos(arc),
                r * np.sin(arc),
                color=cols[j + 2],
                lw=1,
                label=f"{'qk'[j]} rotated by {data[key]:.2f} rad",
            )
        axA.set(
            xlim=(-1.1, 1.1),
            ylim=(-1.1, 1.1),
            aspect="equal",
            xlabel="pair coordinate 2i",
            ylabel="pair coordinate 2i+1",
        )
        axA.set_title(
            f"pair i={data['pair']}, θ_i={data['theta']:.3g}\n"
            f"angle q→k {data['rel_angle']:.3f} rad, dot {data['dot_pair']:.3f}",
            fontsize=9,
        )
        axA.legend(loc="lower left", fontsize=7, frameon=False)
        # (B) the score matrix is Toeplitz
        S = data["scores"]
        vmax = np.abs(S).max()
        axB.imshow(S, cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
        N = S.shape[0]
        dlt = data["n_pos"] - data["m_pos"]
        mm = np.arange(max(0, -dlt), min(N, N - dlt))
        axB.plot(mm + dlt, mm, color="k", lw=0.8, ls="--")
        axB.plot([data["n_pos"]], [data["m_pos"]], "o", ms=7, mfc="none", mec="k", mew=1.5)
        ticks = [0, N // 2, N - 1]
        axB.set(xlabel="key position n'", ylabel="query position m'", xticks=ticks, yticks=ticks)
        axB.set_title(
            f"s(m,n) = {data['s_mn']:.4f} = qᵀR(n−m)k\nToeplitz fraction "
            f"{data['toeplitz_fraction']:.6f} (red +, blue −)",
            fontsize=9,
        )
        # (C) decay envelope (rescaled: its shape is the point) and the actual scores
        sd = data["s_delta"]
        env = data["envelope"] * (np.abs(sd).max() / data["envelope"][0])
        axC.plot(data["deltas"], sd, color="0.5", lw=1, label="s(0, Δ) for this q, k")
        axC.plot(data["deltas"], env, color="tab:green", lw=2, label="F(Δ)·max|s|/F(0)")
        axC.axvline(dlt, color="k", ls="--", lw=0.8, label=f"Δ = n − m = {dlt}")
        axC.set(
            xlabel="relative position Δ = n − m",
            ylabel="score",
            xticks=np.linspace(0, deltas_np[-1], 5),
        )
        axC.set_title("decay envelope: a trend of an upper bound,\nnot of every score", fontsize=9)
        axC.legend(fontsize=7, loc="lower right")

    controls = [
        Control("m", (0, max_offset - 1), min(3, max_offset - 1), label="query offset m"),
        Control("n", (0, max_offset - 1), min(10, max_offset - 1), label="key offset n"),
        Control("shift", (0, n_positions - max_offset), 0, label="common shift"),
        Control("pair", (0, d // 2 - 1), 0, label="frequency pair i"),
        Control("base", (10.0, 1e5), 1e4, log=True, label="base"),
    ]
    return Explorer(controls=controls, compute=compute, draw=draw, figsize=(11.0, 3.6))
