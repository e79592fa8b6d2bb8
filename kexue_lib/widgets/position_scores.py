"""The position-encoding zoo widget: which schemes' logits see only ``j - i``.

Knobs: the ``scheme`` (one of the six modules of :mod:`kexue_lib.models.position_scores`), a
``shift`` ``s`` of all positions (``s .. s+n-1`` instead of ``0 .. n-1``) and the ``clip``
distance ``k`` of Shaw and DeBERTa (their tables keep ``2k + 1`` rows). Panels: (A) the
position part of the logits of one head — the logits minus the content–content term
``q_i k_j^T / sqrt(d)`` — for a sequence of ``n`` identical content vectors at the shifted
positions, with its Toeplitz fraction (:func:`kexue_lib.linalg.toeplitz_fraction`, 1 exactly
when it depends on ``j - i`` only); (B) logits(shift ``s``) − logits(shift 0) for a random
sequence: zero for every relative scheme, of the order of the logits for the absolute one.
"""

from __future__ import annotations

import numpy as np
import torch

from kexue_lib._core import check_positive, make_generator, seeded, to_numpy64
from kexue_lib.linalg import toeplitz_fraction
from kexue_lib.models.position_scores import (
    AbsoluteScore,
    DeBERTaScore,
    RoPEScore,
    ShawScore,
    T5BiasScore,
    TransformerXLScore,
)
from kexue_lib.widgets.frontends import Control, Explorer

__all__ = ["CLIPPED", "SCHEMES", "scheme_explorer"]

#: the six schemes, in the chapter's order
SCHEMES = ("absolute", "Shaw", "Transformer-XL", "T5", "DeBERTa", "RoPE")
#: schemes whose relative table is clipped at distance ``clip``
CLIPPED = ("Shaw", "DeBERTa")


def _colorbar(fig, im, ax, label: str) -> None:
    """A colour bar with three ticks, -v, 0, v (fewer ticks: a cheaper redraw)."""
    v = im.norm.vmax
    cb = fig.colorbar(im, ax=ax, shrink=0.85, label=label)
    cb.set_ticks([-v, 0.0, v], labels=[f"{-v:.2g}", "0", f"{v:.2g}"])


def scheme_explorer(
    *,
    n: int = 32,
    D: int = 32,
    heads: int = 2,
    head: int = 0,
    max_shift: int = 100,
    max_clip: int = 16,
    rope_base: float = 100.0,
    seed: int = 0,
) -> Explorer:
    """Explorer of the six position-score modules on ``n`` tokens of width ``D`` (float64, CPU).

    At construction, from ``seed``: one module per scheme (``heads`` heads; T5 with 16 buckets
    and ``max_distance=32``; RoPE with base ``rope_base``), a content vector repeated at all
    ``n`` positions ``x_const: (1, n, D)`` and a random sequence ``x_rand: (1, n, D)``. Shaw and
    DeBERTa at clip ``k`` use the central ``2k + 1`` rows of one ``(2 max_clip + 1)``-row table,
    so moving ``clip`` changes the clipping, not the weights.

    ``compute(scheme, shift, clip)`` returns, for head ``head``: ``positions: (n,)`` = ``shift ..
    shift+n-1``; ``logits_const: (n, n)`` the logits of ``x_const`` there and ``pos_part: (n, n)``
    = those minus ``q_i k_j^T * module.scale`` (the content–content term); ``toeplitz`` its
    Toeplitz fraction; ``logits0, logits_shift: (n, n)`` the logits of ``x_rand`` at positions
    ``0 .. n-1`` and at ``positions``, ``diff = logits_shift - logits0``, ``max_diff = max|diff|``
    and ``scale = max|logits0|``. The module is ``explorer.score_module(scheme, clip)``; the
    contents are ``explorer.x_const`` and ``explorer.x_rand``.
    """
    for name, v in (("n", n), ("D", D), ("heads", heads), ("max_clip", max_clip)):
        check_positive(name, v, integer=True)
    check_positive("max_shift", max_shift, strict=False, integer=True)
    check_positive("rope_base", rope_base)
    if n < 2:
        raise ValueError(f"n: expected at least 2 positions, got {n}")
    if D % heads or (D // heads) % 2:
        raise ValueError(f"heads: expected a divisor of D={D} with an even quotient, got {heads}")
    if isinstance(head, bool) or not isinstance(head, int) or not 0 <= head < heads:
        raise ValueError(f"head: expected an int in [0, {heads}), got {head!r}")

    makers = {
        "absolute": lambda: AbsoluteScore(D, heads),
        "Shaw": lambda: ShawScore(D, heads, max_rel=max_clip),
        "Transformer-XL": lambda: TransformerXLScore(D, heads),
        "T5": lambda: T5BiasScore(D, heads, num_buckets=16, max_distance=32),
        "DeBERTa": lambda: DeBERTaScore(D, heads, max_rel=max_clip),
        "RoPE": lambda: RoPEScore(D, heads, base=float(rope_base)),
    }
    base: dict[str, torch.nn.Module] = {}
    for k, (name, make) in enumerate(makers.items()):
        with seeded(seed + k):
            base[name] = make().to(torch.float64).eval()
    g = make_generator(seed)
    x_const = torch.randn(1, 1, D, generator=g, dtype=torch.float64).expand(1, n, D).contiguous()
    x_rand = torch.randn(1, n, D, generator=g, dtype=torch.float64)
    clipped: dict[tuple[str, int], torch.nn.Module] = {}

    def score_module(scheme: str, clip: int) -> torch.nn.Module:
        """The module drawn for ``scheme`` (Shaw, DeBERTa: its table cut to clip ``clip``)."""
        if scheme not in SCHEMES:
            raise ValueError(f"scheme: expected one of {list(SCHEMES)}, got {scheme!r}")
        if scheme not in CLIPPED:
            return base[scheme]
        check_positive("clip", clip, integer=True)
        if clip > max_clip:
            raise ValueError(f"clip: expected at most max_clip={max_clip}, got {clip}")
        if (scheme, clip) not in clipped:
            state = dict(base[scheme].state_dict())
            for key in ("rel_k", "rel_v", "rel_emb"):
                if key in state:
                    state[key] = state[key][max_clip - clip : max_clip + clip + 1]
            with seeded(seed):  # the initialiser's draws are overwritten at once
                m = (ShawScore if scheme == "Shaw" else DeBERTaScore)(D, heads, max_rel=clip)
            m.load_state_dict(state)
            clipped[(scheme, clip)] = m.to(torch.float64).eval()
        return clipped[(scheme, clip)]

    pos0 = torch.arange(n)

    def compute(*, scheme: str, shift: int, clip: int) -> dict:
        for name, v in (("shift", shift), ("clip", clip)):
            if v != int(v):
                raise ValueError(f"{name}: expected an integer, got {v!r}")
        m = score_module(scheme, int(clip))
        pos = pos0 + int(shift)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # (n, n) logits: a busy thread pool stalls for 0.1-0.3 s
        try:
            with torch.no_grad():
                logits_const = m(x_const, positions=pos)[0, head]
                q, k = m.content(x_const)
                cc = (q @ k.transpose(-1, -2))[0, head] * m.scale
                pos_part = logits_const - cc
                logits0 = m(x_rand, positions=pos0)[0, head]
                logits_shift = m(x_rand, positions=pos)[0, head]
        finally:
            torch.set_num_threads(threads)
        diff = logits_shift - logits0
        return {
            "scheme": scheme,
            "shift": int(shift),
            "clip": int(clip),
            "positions": to_numpy64(pos),
            "logits_const": to_numpy64(logits_const),
            "pos_part": to_numpy64(pos_part),
            "toeplitz": float(toeplitz_fraction(pos_part)),
            "logits0": to_numpy64(logits0),
            "logits_shift": to_numpy64(logits_shift),
            "diff": to_numpy64(diff),
            "max_diff": float(diff.abs().max()),
            "scale": float(logits0.abs().max()),
        }

    def draw(fig, data: dict) -> None:
        axA, axB = fig.subplots(1, 2)
        s, nn_ = data["shift"], len(data["positions"])
        P = data["pos_part"]
        vA = float(np.abs(P).max()) or 1.0
        im = axA.imshow(
            P,
            cmap="RdBu_r",
            vmin=-vA,
            vmax=vA,
            extent=(s - 0.5, s + nn_ - 0.5, s + nn_ - 0.5, s - 0.5),
            interpolation="nearest",
        )
        _colorbar(fig, im, axA, "position part of logit")
        name = data["scheme"]
        if name in CLIPPED:
            name += f" (clip {data['clip']})"
        axA.set_xlabel("key position j")
        axA.set_ylabel("query position i")
        axA.set_title(
            f"{name}: same content at every position\nToeplitz fraction {data['toeplitz']:.4f}",
            fontsize=9,
        )
        vB = data["scale"] or 1.0  # the logits' own scale: rounding errors stay white
        im = axB.imshow(data["diff"], cmap="RdBu_r", vmin=-vB, vmax=vB, interpolation="nearest")
        _colorbar(fig, im, axB, "Δ logit")
        axB.set_xlabel("key index j")
        axB.set_ylabel("query index i")
        axB.set_title(
            f"random content: logits at shift {s} − at shift 0\n"
            f"max |Δ| = {data['max_diff']:.1e} (logits up to {data['scale']:.2g})",
            fontsize=9,
        )

    ex = Explorer(
        controls=[
            Control("scheme", list(SCHEMES), "absolute", label="scheme"),
            Control("shift", (0, int(max_shift)), min(20, int(max_shift)), label="shift s"),
            Control("clip", (1, int(max_clip)), min(8, int(max_clip)), label="clip k"),
        ],
        compute=compute,
        draw=draw,
        figsize=(9.0, 3.8),
    )
    ex.score_module = score_module
    ex.x_const, ex.x_rand = x_const, x_rand
    return ex
