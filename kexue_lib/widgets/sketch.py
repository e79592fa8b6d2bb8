"""The SimHash widget: how many bits a sign code needs, and why its cosine must be decoded.

Knob: ``n_bits``. Pairs of unit vectors with angles spread uniformly over [0, pi] are hashed
once (at construction) with ``max_bits`` Gaussian hyperplanes; a frame keeps the first
``n_bits`` of them. Panels: (A) the sign-code cosine ``s = 1 - 2h/n`` against the true
cosine, with its mean curve ``(2/pi) arcsin(cos theta)`` and the identity; (B) the decoded
``sin(pi s / 2)`` against the true cosine; both titles give the RMSE against ``cos theta``.
The figure of book/geometry/jl-applications.ipynb, eqs. (jl-applications-arcsine) and
(jl-applications-decode).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from kexue_lib._core import make_generator, to_numpy64
from kexue_lib.sketch import decode_cosine, hamming, sign_cosine, simhash
from kexue_lib.widgets.frontends import Control, Explorer

__all__ = ["simhash_cosine_explorer"]

BITS = (8, 16, 32, 64, 128, 256, 512, 1024)


def simhash_cosine_explorer(
    *, n_pairs: int = 1500, dim: int = 32, max_bits: int = 1024, seed: int = 0
) -> Explorer:
    """SimHash explorer: sign-code cosine and decoded cosine vs the true cosine of ``n_pairs``.

    ``dim``: ambient dimension of the pairs; ``max_bits``: bits drawn once (a power of two
    in ``BITS``); ``seed``: the pairs and the hyperplanes.
    """
    if max_bits not in BITS:
        raise ValueError(f"max_bits: expected one of {BITS}, got {max_bits}")
    if n_pairs < 10 or dim < 2:
        raise ValueError(f"n_pairs, dim: expected >= 10 and >= 2, got {n_pairs}, {dim}")
    g = make_generator(seed)
    theta = torch.rand(n_pairs, dtype=torch.float64, generator=g) * math.pi
    x = torch.randn(n_pairs, dim, dtype=torch.float64, generator=g)
    x = x / x.norm(dim=1, keepdim=True)
    u = torch.randn(n_pairs, dim, dtype=torch.float64, generator=g)
    u = u - (u * x).sum(1, keepdim=True) * x
    u = u / u.norm(dim=1, keepdim=True)
    y = torch.cos(theta)[:, None] * x + torch.sin(theta)[:, None] * u
    codes = simhash(torch.cat([x, y]), max_bits, generator=g)
    cx, cy = codes[:n_pairs], codes[n_pairs:]
    cos = torch.cos(theta)
    grid = np.linspace(-1, 1, 201)
    bits = [b for b in BITS if b <= max_bits]

    def compute(*, n_bits: int) -> dict:
        h = hamming(cx[:, :n_bits], cy[:, :n_bits], pairwise=False)
        s = sign_cosine(h, n_bits, dtype=torch.float64)
        dec = decode_cosine(s)
        return {
            "n_bits": n_bits,
            "cos": to_numpy64(cos),
            "hamming": h.numpy(),
            "sign_cos": to_numpy64(s),
            "decoded": to_numpy64(dec),
            "grid": grid,
            "arcsine": 2 / np.pi * np.arcsin(grid),
            "rmse_sign": float(((s - cos) ** 2).mean().sqrt()),
            "rmse_decoded": float(((dec - cos) ** 2).mean().sqrt()),
        }

    def draw(fig, data: dict) -> None:
        axA, axB = fig.subplots(1, 2, sharey=True)
        for ax, key, name, rmse in (
            (axA, "sign_cos", "sign-code cosine s = 1 − 2h/n", data["rmse_sign"]),
            (axB, "decoded", "decoded sin(πs/2)", data["rmse_decoded"]),
        ):
            ax.plot(data["cos"], data[key], ".", ms=2, alpha=0.4, color="tab:blue")
            ax.plot(data["grid"], data["grid"], color="k", lw=1, label="identity")
            ax.plot(
                data["grid"],
                data["arcsine"],
                color="tab:red",
                lw=1.5,
                ls="--",
                label="(2/π) arcsin(cos θ)",
            )
            ax.set(xlabel="true cosine cos θ", xlim=(-1.02, 1.02), ylim=(-1.05, 1.05))
            ax.set_title(f"{name}: RMSE {rmse:.3f}", fontsize=9)
        axA.set_ylabel("estimate from the codes")
        axA.legend(fontsize=8, loc="upper left")

    return Explorer(
        controls=[Control("n_bits", bits, default=min(64, max_bits), label="bits")],
        compute=compute,
        draw=draw,
        figsize=(8.0, 4.0),
    )
