"""The token-mixer widget: does a mixer's mixing matrix depend on the input?

Knobs: ``t`` moves the input along the segment ``x_t = (1 - t) x_a + t x_b`` between two random
sequences, and ``n`` the sequence length. Each panel is one mixer's token-mixing Jacobian
``J_ij = ||d y_i / d x_j||_F`` at ``x_t``; its title gives the relative change from ``t = 0``.
"""

from __future__ import annotations

import numpy as np
import torch

from kexue_lib._core import check_positive, make_generator, seeded, to_numpy64
from kexue_lib.models.mixers import (
    ExternalAttention,
    FNetMixing,
    LinearTokenMixing,
    SynthesizerDense,
    token_mixing_jacobian,
)
from kexue_lib.models.transformer import MultiHeadAttention
from kexue_lib.widgets.frontends import Control, Explorer

__all__ = ["MIXER_NAMES", "mixing_jacobian_explorer"]

MIXER_NAMES = ("attention", "Synthesizer-Dense", "linear mixing", "FNet", "external attention")
N_CHOICES = (8, 12, 16)


def _build(n: int, d: int, seed: int) -> dict:
    with seeded(seed):
        mixers = {
            "attention": MultiHeadAttention(d, 2),
            "Synthesizer-Dense": SynthesizerDense(d, n, 16),
            "linear mixing": LinearTokenMixing(n),
            "FNet": FNetMixing(),
            "external attention": ExternalAttention(d, S=16, norm="double"),
        }
    return {k: m.double().eval() for k, m in mixers.items()}


def mixing_jacobian_explorer(*, d: int = 8, seed: int = 0) -> Explorer:
    """Token-mixing Jacobians of five mixers along a path between two random inputs.

    For every ``n`` in ``N_CHOICES`` the mixers (random weights from ``seed``, float64) and the two
    inputs ``x_a, x_b: (n, d)`` are built once, when that ``n`` is first drawn; the Jacobians of
    the input-independent mixers (linear mixing, FNet) are computed once too. ``data(t, n)`` returns ``J: (5, n, n)`` at
    ``x_t = (1 - t) x_a + t x_b``, ``J0`` at ``t = 0``, the relative changes
    ``||J - J0||_F / ||J0||_F`` and ``x_t``. Fixed mixers show a change of exactly 0. The panels are
    drawn side by side in one image, each scaled to its own maximum.
    """
    check_positive("d", d, integer=True)
    if d % 2:
        raise ValueError(f"d: expected an even width (two attention heads), got {d}")
    state: dict = {}

    def _state(n: int):
        """Mixers, inputs and the t = 0 Jacobians for length n: drawn once, on first use."""
        if n not in state:
            g = make_generator(seed + n)
            xa = torch.randn(n, d, generator=g, dtype=torch.float64)
            xb = torch.randn(n, d, generator=g, dtype=torch.float64)
            mixers = _build(n, d, seed)
            j0 = {k: token_mixing_jacobian(m, xa) for k, m in mixers.items()}
            state[n] = (xa, xb, mixers, j0)
        return state[n]

    def compute(t: float, n: int) -> dict:
        xa, xb, mixers, j0 = _state(n)
        xt = (1 - t) * xa + t * xb
        fixed = ("linear mixing", "FNet")
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # (n, n) Jacobians of tiny modules: threads only add overhead
        try:
            J = torch.stack(
                [j0[k] if k in fixed else token_mixing_jacobian(mixers[k], xt) for k in MIXER_NAMES]
            )
        finally:
            torch.set_num_threads(threads)
        J0 = torch.stack([j0[k] for k in MIXER_NAMES])
        change = torch.linalg.matrix_norm(J - J0) / torch.linalg.matrix_norm(J0)
        return {
            "names": MIXER_NAMES,
            "J": to_numpy64(J),
            "J0": to_numpy64(J0),
            "change": to_numpy64(change),
            "x": to_numpy64(xt),
            "t": float(t),
            "n": int(n),
        }

    def draw(fig, data: dict) -> None:
        # one image of side-by-side panels (each scaled to its own maximum): a single Axes
        # keeps the redraw fast
        J = data["J"]
        k, n = J.shape[0], J.shape[1]
        gap = max(1, n // 4)
        canvas = np.full((n, k * n + (k - 1) * gap), np.nan)
        centres = []
        for i in range(k):
            c0 = i * (n + gap)
            canvas[:, c0 : c0 + n] = J[i] / max(float(J[i].max()), 1e-300)
            centres.append(c0 + (n - 1) / 2)
        ax = fig.subplots()
        ax.imshow(canvas, cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
        labels = [
            f"{name}\nchange from t=0: {ch:.2f}"
            for name, ch in zip(data["names"], data["change"], strict=True)
        ]
        ax.set_xticks(centres, labels, fontsize=8)
        ax.set_yticks([0, n - 1], ["1", str(n)], fontsize=8)
        ax.set_ylabel("output token i", fontsize=8)
        ax.tick_params(length=0)
        for side in ax.spines.values():
            side.set_visible(False)
        ax.set_xlabel("input token j (columns of each panel); colour: J / max J", fontsize=8)

    return Explorer(
        controls=[
            Control("t", (0.0, 1.0), 0.0, step=0.05, label="input t"),
            Control("n", list(N_CHOICES), 16, label="length n"),
        ],
        compute=compute,
        draw=draw,
        figsize=(11.0, 2.8),
        title=lambda v: (
            f"token-mixing Jacobians at x = (1 - t) x_a + t x_b:  t = {v['t']:.2f}, n = {v['n']}"
        ),
    )
