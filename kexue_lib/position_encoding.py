"""Sinusoidal frequencies, sinusoidal tables, relative indices and T5 buckets (pure functions).

Conventions: the frequency ladder is ``theta_i = base^(-2i/d)``; angles are
formed in float64 and only the cosines/sines are cast; a relative position is
``key - query = j - i``; table layouts are ``"interleaved" | "half"`` with the order of the
pair ``"sin_cos" | "cos_sin"``.

Derived in the book: the sinusoidal form, its inner product and the decay integral in
book/positions/sinusoidal-origins.ipynb; the shift matrix, relative indices and T5 buckets in
book/positions/position-encoding-zoo.ipynb.
"""

from __future__ import annotations

import math

import torch

from kexue_lib._core import check_choice, check_dim_even, check_positive, check_tensor

__all__ = [
    "clip_relative",
    "floater_generator",
    "oscillatory_integral",
    "relative_positions",
    "sinusoidal_frequencies",
    "sinusoidal_inner_product",
    "sinusoidal_position_encoding",
    "sinusoidal_shift_matrix",
    "t5_relative_position_bucket",
]

_LAYOUTS = ("interleaved", "half")
_ORDERS = ("sin_cos", "cos_sin")
_SCHEDULES = ("exp", "linear", "power")
_POWER_SWITCH = 2000.0  # |x| beyond which the power schedule uses its endpoint expansion
_POWER_TERMS = 12


def sinusoidal_frequencies(
    d: int,
    base: float = 1e4,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The frequency ladder ``theta_i = base^(-2i/d)``, ``i = 0 .. d/2 - 1``: ``(d//2,)``.

    Shared by sinusoidal tables and RoPE. Computed in float64, then cast to ``dtype``.
    """
    check_dim_even("d", d)
    check_positive("base", base)
    if isinstance(base, (int, float)) and base <= 1:
        raise ValueError(f"base: expected a number > 1, got {base!r}")
    i = torch.arange(d // 2, dtype=torch.float64, device=device)
    return torch.pow(
        torch.tensor(float(base), dtype=torch.float64, device=device), -2.0 * i / d
    ).to(dtype)


# --------------------------------------------------------------------------- helpers


def _check_base(base) -> float:
    check_positive("base", base)
    b = float(base)
    if b <= 1:
        raise ValueError(f"base: expected a number > 1, got {base!r}")
    return b


def _layout_perm(d: int, layout: str, order: str) -> torch.Tensor:
    """Index map ``perm`` with ``table[..., c] = std[..., perm[c]]``.

    ``std`` is the interleaved (sin, cos) layout: slot ``2i`` = sin, ``2i + 1`` = cos.
    """
    check_choice("layout", layout, _LAYOUTS)
    check_choice("order", order, _ORDERS)
    h = d // 2
    i = torch.arange(h)
    first, second = (2 * i, 2 * i + 1) if order == "sin_cos" else (2 * i + 1, 2 * i)
    if layout == "interleaved":
        return torch.stack([first, second], dim=-1).reshape(d)
    return torch.cat([first, second])


def _float_dtype_of(x: torch.Tensor) -> torch.dtype:
    return x.dtype if x.is_floating_point() else torch.float64


# --------------------------------------------------------------------------- sinusoidal tables


def sinusoidal_position_encoding(
    positions: int | torch.Tensor,
    d: int,
    *,
    base: float = 1e4,
    layout: str = "interleaved",
    order: str = "sin_cos",
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The Vaswani et al. sinusoidal table: ``positions: (...)`` (or an int n) -> ``(..., d)``.

    ``p_{k,2i} = sin(k theta_i)``, ``p_{k,2i+1} = cos(k theta_i)``, ``theta_i = base^(-2i/d)``
    (``layout="interleaved", order="sin_cos"``). ``order="cos_sin"`` swaps the pair (the
    complex-number form ``e^{i k theta}``); ``layout="half"`` puts all first members of the
    pairs in the first ``d/2`` slots (HF RoFormer's table). Angles in float64; only the
    cos/sin are cast to ``dtype``. A tensor of positions keeps its device unless ``device``.
    """
    check_dim_even("d", d)
    base = _check_base(base)
    if isinstance(positions, bool):
        raise TypeError(f"positions: expected an int or a tensor, got {type(positions).__name__}")
    if isinstance(positions, int):
        check_positive("positions", positions, strict=False, integer=True)
        pos = torch.arange(positions, dtype=torch.float64, device=device)
    else:
        check_tensor("positions", positions)
        if positions.is_complex():
            raise TypeError(f"positions: expected a real tensor, got dtype {positions.dtype}")
        pos = positions.to(
            device=device if device is not None else positions.device, dtype=torch.float64
        )
    if not dtype.is_floating_point:
        raise TypeError(f"dtype: expected a floating dtype, got {dtype}")
    theta = sinusoidal_frequencies(d, base, device=pos.device)
    ang = pos[..., None] * theta  # (..., d/2) in float64
    std = torch.stack([torch.sin(ang), torch.cos(ang)], dim=-1).reshape(*ang.shape[:-1], d)
    perm = _layout_perm(d, layout, order).to(pos.device)
    return std[..., perm].to(dtype)


def sinusoidal_inner_product(
    delta: int | float | torch.Tensor, d: int, *, base: float = 1e4
) -> torch.Tensor:
    """``<p_m, p_n> = sum_i cos(delta * theta_i)`` with ``delta = m - n``: ``(...) -> (...)``.

    Independent of the layout (a coordinate permutation). Computed in float64; returned in
    ``delta``'s floating dtype (float64 for integer or Python input).
    """
    check_dim_even("d", d)
    base = _check_base(base)
    if isinstance(delta, bool):
        raise TypeError("delta: expected a number or a tensor, got bool")
    if not isinstance(delta, torch.Tensor):
        if not isinstance(delta, (int, float)):
            raise TypeError(f"delta: expected a number or a tensor, got {type(delta).__name__}")
        delta = torch.tensor(delta, dtype=torch.float64)
    if delta.is_complex():
        raise TypeError(f"delta: expected a real tensor, got dtype {delta.dtype}")
    out_dtype = _float_dtype_of(delta)
    theta = sinusoidal_frequencies(d, base, device=delta.device)
    ang = delta.to(torch.float64)[..., None] * theta
    return torch.cos(ang).sum(-1).to(out_dtype)


def oscillatory_integral(
    x: int | float | torch.Tensor, *, schedule: str = "exp", base: float = 1e4, alpha: float = 1.0
) -> torch.Tensor:
    """``I(x) = int_0^1 exp(i x theta_t) dt``, the continuum limit of the normalised inner product.

    ``x: (...) -> complex (...)``. Schedules: ``"exp"`` ``theta_t = base^(-t)`` (closed form
    ``[Ci(|x|) - Ci(|x|/b) + i sgn(x) (Si(|x|) - Si(|x|/b))] / ln b``, scipy's ``sici``);
    ``"linear"`` ``theta_t = t`` (``(sin x + i (1 - cos x)) / x``); ``"power"``
    ``theta_t = t^alpha`` (Gauss–Jacobi quadrature in ``u = t^alpha``, exact for the weight
    ``u^(1/alpha - 1)``, for ``|x| <= 2000``; beyond, the endpoint expansion of the integral).
    ``I(0) = 1``. Returned as complex128 on ``x``'s device (complex64 when ``x`` is float32
    or lower).
    """
    check_choice("schedule", schedule, _SCHEDULES)
    if isinstance(x, bool):
        raise TypeError("x: expected a number or a tensor, got bool")
    if not isinstance(x, torch.Tensor):
        if not isinstance(x, (int, float)):
            raise TypeError(f"x: expected a number or a tensor, got {type(x).__name__}")
        x = torch.tensor(x, dtype=torch.float64)
    if x.is_complex():
        raise TypeError(f"x: expected a real tensor, got dtype {x.dtype}")
    out_dtype = (
        torch.complex64 if x.is_floating_point() and x.dtype != torch.float64 else torch.complex128
    )
    device = x.device
    x64 = x.detach().to(torch.float64)
    if not torch.isfinite(x64).all():
        raise ValueError("x: expected finite values, got inf or nan")

    if schedule == "linear":
        # sin x / x = sinc(x / pi); (1 - cos x) / x = sin(x/2) * sinc(x / (2 pi)): no 0/0.
        re = torch.sinc(x64 / math.pi)
        im = torch.sin(x64 / 2) * torch.sinc(x64 / (2 * math.pi))
        return torch.complex(re, im).to(out_dtype)

    if schedule == "exp":
        b = _check_base(base)
        import numpy as np
        from scipy.special import sici

        xa = x64.abs().cpu().numpy()
        lb = math.log(b)
        small = xa < 1e-4
        safe = np.where(small, 1.0, xa)
        si1, ci1 = sici(safe)
        si2, ci2 = sici(safe / b)
        re = (ci1 - ci2) / lb
        im = (si1 - si2) / lb
        # Taylor series for tiny |x|: I = sum_k (i x)^k m_k / k!, m_k = (1 - b^-k) / (k ln b).
        m = [(1 - b ** (-k)) / (k * lb) for k in (1, 2, 3)]
        re_s = 1 - xa**2 / 2 * m[1]
        im_s = xa * m[0] - xa**3 / 6 * m[2]
        re = np.where(small, re_s, re)
        im = np.where(small, im_s, im) * np.sign(x64.cpu().numpy())
        im = np.asarray(im, dtype=np.float64)
        out = torch.complex(torch.from_numpy(re), torch.from_numpy(im))
        return out.to(device=device, dtype=out_dtype)

    # power: u = t^alpha, I = (1/alpha) int_0^1 u^beta e^{i x u} du with beta = 1/alpha - 1.
    check_positive("alpha", alpha)
    from scipy.special import gamma as gamma_fn
    from scipy.special import roots_jacobi

    a = float(alpha)
    beta = 1.0 / a - 1.0
    ax = x64.abs()
    near = ax <= _POWER_SWITCH
    xmax = float(ax[near].max()) if bool(near.any()) else 0.0
    # |x| <= switch: Gauss–Jacobi, exact for the weight u^beta; nodes resolve the oscillation.
    s, w = roots_jacobi(64 + math.ceil(xmax), 0.0, beta)  # weight (1 + s)^beta on [-1, 1]
    u = torch.from_numpy((s + 1) / 2).to(device)
    wt = torch.from_numpy(w * 2.0 ** (-beta - 1) / a).to(device)
    ph = torch.where(near, x64, torch.zeros_like(x64))[..., None] * u
    re = (torch.cos(ph) * wt).sum(-1)
    im = (torch.sin(ph) * wt).sum(-1)
    # |x| > switch: endpoint expansion. u = 0 gives Gamma(beta + 1) e^{i pi (beta + 1)/2} x^-(beta + 1);
    # u = 1 gives -e^{ix} sum_k (beta)_k (-1)^k / (i x)^(k + 1) with the falling factorial (beta)_k.
    xs = ax.clamp_min(_POWER_SWITCH)
    lead = gamma_fn(beta + 1) * xs ** (-(beta + 1))
    far_re = lead * math.cos(math.pi * (beta + 1) / 2)
    far_im = lead * math.sin(math.pi * (beta + 1) / 2)
    acc_re = torch.zeros_like(xs)
    acc_im = torch.zeros_like(xs)
    coef = 1.0
    for k in range(_POWER_TERMS):
        # term_k = (-1)^k coef / (i x)^(k+1); 1/(i)^(k+1) = (-i)^(k+1)
        mag = (-1) ** k * coef / xs ** (k + 1)
        ph_k = -(k + 1) * math.pi / 2  # arg of (-i)^(k+1)
        acc_re = acc_re + mag * math.cos(ph_k)
        acc_im = acc_im + mag * math.sin(ph_k)
        coef *= beta - k
        if coef == 0.0:
            break
    c, sn = torch.cos(xs), torch.sin(xs)
    far_re = (far_re + (c * acc_re - sn * acc_im)) / a
    far_im = (far_im + (c * acc_im + sn * acc_re)) / a
    sign = torch.where(x64 < 0, -1.0, 1.0).to(x64)
    re = torch.where(near, re, far_re)
    im = torch.where(near, im, far_im * sign)
    return torch.complex(re, im).to(out_dtype)


def sinusoidal_shift_matrix(
    beta: int | float,
    d: int,
    *,
    base: float = 1e4,
    layout: str = "interleaved",
    order: str = "sin_cos",
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The orthogonal map with ``p_{m + beta} = M(beta) p_m`` for every ``m``: ``(d, d)``.

    Block-diagonal in the (sin, cos) interleaved layout, ``M_i = [[cos b t_i, sin b t_i],
    [-sin b t_i, cos b t_i]]`` with ``t_i = theta_i``; permuted to ``layout``/``order``.
    Applied to a column ``p`` (or a table as ``P @ M.T``).
    """
    check_dim_even("d", d)
    base = _check_base(base)
    if isinstance(beta, bool) or not isinstance(beta, (int, float)):
        raise TypeError(f"beta: expected a number, got {type(beta).__name__}")
    if not math.isfinite(beta):
        raise ValueError(f"beta: expected a finite number, got {beta!r}")
    theta = sinusoidal_frequencies(d, base, device=device)
    c, s = torch.cos(beta * theta), torch.sin(beta * theta)
    blocks = torch.stack([torch.stack([c, s], -1), torch.stack([-s, c], -1)], -2)  # (d/2, 2, 2)
    M = torch.block_diag(*blocks)
    perm = _layout_perm(d, layout, order).to(M.device)
    return M[perm][:, perm].to(dtype)


def floater_generator(
    d: int,
    *,
    base: float = 1e4,
    layout: str = "interleaved",
    order: str = "sin_cos",
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Generator ``Omega`` of the ODE ``dp/dt = Omega p`` solved by the sinusoids: ``(d, d)``.

    ``p_t = exp(t Omega) p_0`` with ``p_0`` the table at position 0; block-diagonal
    ``[[0, theta_i], [-theta_i, 0]]`` in the (sin, cos) interleaved layout (FLOATER's
    special case), so ``exp(beta Omega) = sinusoidal_shift_matrix(beta)``.
    """
    check_dim_even("d", d)
    base = _check_base(base)
    theta = sinusoidal_frequencies(d, base, device=device)
    z = torch.zeros_like(theta)
    blocks = torch.stack([torch.stack([z, theta], -1), torch.stack([-theta, z], -1)], -2)
    G = torch.block_diag(*blocks)
    perm = _layout_perm(d, layout, order).to(G.device)
    return G[perm][:, perm].to(dtype)


# --------------------------------------------------------------------------- relative indices


def relative_positions(
    n_q: int, n_k: int, *, offset: int = 0, device: torch.device | str | None = None
) -> torch.Tensor:
    """Relative position ``key - query``: ``(n_q, n_k)`` long, entry ``j - (i + offset)``.

    Query ``i`` sits at absolute position ``i + offset`` and key ``j`` at ``j`` (use
    ``offset = n_k - n_q`` when the queries are the last tokens of the keys). A chapter
    that follows a post's ``i - j`` negates the result.
    """
    check_positive("n_q", n_q, strict=False, integer=True)
    check_positive("n_k", n_k, strict=False, integer=True)
    if isinstance(offset, bool) or not isinstance(offset, int):
        raise TypeError(f"offset: expected an int, got {type(offset).__name__}")
    i = torch.arange(n_q, device=device)
    j = torch.arange(n_k, device=device)
    return j[None, :] - (i[:, None] + offset)


def clip_relative(rel: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """Clip relative positions to ``[lo, hi]`` and shift to a table row: ``(...) -> (...)`` long.

    Returns ``clamp(rel, lo, hi) - lo`` in ``[0, hi - lo]``: the row of a
    ``(hi - lo + 1)``-row table (Shaw et al.; DeBERTa), so a finite table serves any length.
    """
    check_tensor("rel", rel)
    if rel.is_floating_point() or rel.is_complex() or rel.dtype == torch.bool:
        raise TypeError(f"rel: expected an integer tensor, got dtype {rel.dtype}")
    for name, v in (("lo", lo), ("hi", hi)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{name}: expected an int, got {type(v).__name__}")
    if lo > hi:
        raise ValueError(f"hi: expected hi >= lo = {lo}, got {hi}")
    return rel.long().clamp(lo, hi) - lo


def t5_relative_position_bucket(
    rel: torch.Tensor, *, bidirectional: bool = True, num_buckets: int = 32, max_distance: int = 128
) -> torch.Tensor:
    """T5's bucket of a relative position ``rel = key - query``: ``(...) -> (...)`` long.

    Bidirectional: half the buckets for ``rel > 0`` (offset ``num_buckets/2``), ``n = |rel|``.
    Causal: ``n = max(-rel, 0)``. With ``e`` = half of the (remaining) buckets, ``n < e`` is
    its own bucket; otherwise ``e + floor(ln(n/e) / ln(max_distance/e) * (B - e))``, capped
    at ``B - 1`` (``B`` = buckets on that side). Same argument convention as HF
    (``memory_position - query_position``).
    """
    check_tensor("rel", rel)
    if rel.is_floating_point() or rel.is_complex() or rel.dtype == torch.bool:
        raise TypeError(f"rel: expected an integer tensor, got dtype {rel.dtype}")
    check_positive("num_buckets", num_buckets, integer=True)
    check_positive("max_distance", max_distance, integer=True)
    rel = rel.long()
    n_side = num_buckets // 2 if bidirectional else num_buckets
    exact = n_side // 2
    if exact < 1:
        raise ValueError(
            f"num_buckets: expected at least {4 if bidirectional else 2}, got {num_buckets}"
        )
    if max_distance <= exact:
        raise ValueError(
            f"max_distance: expected more than {exact} (the exact buckets), got {max_distance}"
        )
    if bidirectional:
        side = (rel > 0).long() * n_side
        n = rel.abs()
    else:
        side = torch.zeros_like(rel)
        n = (-rel).clamp_min(0)
    # float32 logs, as in the reference implementation, so boundary cases agree bit for bit.
    nf = n.clamp_min(exact).to(torch.float32)
    large = (
        exact + (torch.log(nf / exact) / math.log(max_distance / exact) * (n_side - exact)).long()
    )
    large = large.clamp_max(n_side - 1)
    return side + torch.where(n < exact, n, large)
