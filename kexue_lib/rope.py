"""Rotary position embedding (RoPE), 1-D and 2-D, as elementwise operations (no matrices).

Convention (book/positions/rope-2d.ipynb, the whole book): ``theta_i = base^(-2i/d)`` from
:func:`kexue_lib.position_encoding.sinusoidal_frequencies`; the score of a query at
position ``m`` with a key at position ``n`` is ``(R_m q)^T (R_n k) = q^T R_{n-m} k``
(relative position = key − query). Angles ``m * theta_i`` are formed in float32 at least
(float64 for float64 outputs) and only their cos/sin are cast to the caller's dtype.

Layouts of the ``d/2`` rotation pairs:

* ``"interleaved"`` — pairs ``(x_0, x_1), (x_2, x_3), ...`` (Su / RoFormer / GPT-J);
* ``"half"`` — pairs ``(x_i, x_{i + d/2})`` (GPT-NeoX / LLaMA ``rotate_half``).

They are the same map up to a fixed permutation applied to both q and k.

Derivations: chapter ``book/positions/rope-2d.ipynb`` ("Rotary position embedding in one and
two dimensions"), equations (rope-2d-relative), (rope-2d-elementwise), (rope-2d-abel) and
(rope-2d-envelope) for 1-D RoPE, (rope-2d-exp2d) and (rope-2d-R2d) for 2-D RoPE.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from kexue_lib._core import check_dim_even, check_positive, check_tensor, work_dtype
from kexue_lib.position_encoding import sinusoidal_frequencies

__all__ = [
    "Rotary",
    "apply_rope",
    "apply_rope_2d",
    "commutant_dimension",
    "grid_positions",
    "recover_position_2d",
    "rope2d_generators",
    "rope2d_matrix",
    "rope_cos_sin",
    "rope_decay_envelope",
    "rope_matrix",
    "rotate_pairs",
]

_LAYOUTS = ("interleaved", "half")


def _check_layout(layout: str) -> str:
    if layout not in _LAYOUTS:
        raise ValueError(f"layout: expected one of {list(_LAYOUTS)}, got {layout!r}")
    return layout


def _check_base(base) -> float:
    check_positive("base", base)
    if float(base) <= 1:
        raise ValueError(f"base: expected a number > 1, got {base!r}")
    return float(base)


def _expand_pairs(t: torch.Tensor, layout: str) -> torch.Tensor:
    """``(..., d/2) -> (..., d)``: repeat each entry for both members of its pair."""
    if layout == "interleaved":
        return t.repeat_interleave(2, dim=-1)
    return torch.cat([t, t], dim=-1)


def rope_cos_sin(
    positions: torch.Tensor,
    d: int,
    *,
    base: float = 1e4,
    layout: str = "interleaved",
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    freqs: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables of the angles ``positions * theta_i``: ``(...,) -> ((..., d), (..., d))``.

    ``theta_i = base^(-2i/d)`` unless ``freqs: (d//2,)`` is given (e.g. a trainable ladder;
    gradients flow through it). Interleaved layout repeats each angle twice adjacently,
    half layout is ``cat([a, a])``. Angles are formed in float32 (float64 when ``dtype`` is
    float64); only cos/sin are cast to ``dtype`` (the rope-2d chapter shows what bf16 angles
    do). ``device`` defaults to ``positions``'s.
    """
    check_tensor("positions", positions)
    if positions.is_complex() or positions.dtype == torch.bool:
        raise TypeError(
            f"positions: expected an integer or real tensor, got dtype {positions.dtype}"
        )
    check_dim_even("d", d)
    _check_layout(layout)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype: expected a floating torch.dtype, got {dtype!r}")
    device = torch.device(device) if device is not None else positions.device
    adt = work_dtype(dtype)
    if freqs is None:
        theta = sinusoidal_frequencies(d, _check_base(base), dtype=adt, device=device)
    else:
        check_tensor("freqs", freqs, floating=True)
        if freqs.shape != (d // 2,):
            raise ValueError(f"freqs: expected shape ({d // 2},), got {tuple(freqs.shape)}")
        theta = freqs.to(device=device, dtype=torch.promote_types(freqs.dtype, adt))
    if positions.is_floating_point() and not torch.isfinite(positions).all():
        raise ValueError("positions: expected finite positions, got non-finite entries")
    ang = positions.to(device=device, dtype=theta.dtype).unsqueeze(-1) * theta
    cos = _expand_pairs(torch.cos(ang), layout).to(dtype)
    sin = _expand_pairs(torch.sin(ang), layout).to(dtype)
    return cos, sin


def rotate_pairs(x: torch.Tensor, *, layout: str = "interleaved") -> torch.Tensor:
    """Rotate every pair by +90°: ``(..., d) -> (..., d)``.

    Interleaved: ``(-x_1, x_0, -x_3, x_2, ...)``; half: ``cat([-x[d/2:], x[:d/2]])``.
    So ``R_m x = x * cos + rotate_pairs(x) * sin``, eq. (rope-2d-elementwise) of the
    rope-2d chapter.
    """
    check_tensor("x", x)
    _check_layout(layout)
    if x.dim() < 1 or x.shape[-1] % 2:
        raise ValueError(f"x: expected an even last dimension, got shape {tuple(x.shape)}")
    if layout == "interleaved":
        pairs = x.unflatten(-1, (x.shape[-1] // 2, 2))
        return torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(
    x: torch.Tensor,
    positions: torch.Tensor | None = None,
    *,
    base: float = 1e4,
    layout: str = "interleaved",
    offset: int = 0,
    freqs: torch.Tensor | None = None,
) -> torch.Tensor:
    """Rotate each pair of ``x`` by ``position * theta_i``: ``x: (..., n, d) -> (..., n, d)``.

    ``R_m x = x ⊙ cos(m θ) + rotate_pairs(x) ⊙ sin(m θ)`` — the block-diagonal rotation
    ``R_m`` without building it. ``positions: (n,)`` or any shape broadcastable to
    ``x.shape[:-1]`` (integers or reals); default ``arange(n)``. ``offset`` is added to the
    positions (KV-cache decoding: new queries sit at ``offset + t``). ``freqs: (d//2,)``
    replaces the ladder ``base^(-2i/d)``. Output keeps ``x``'s dtype and device.
    Derived in the rope-2d chapter, eqs. (rope-2d-relative) and (rope-2d-elementwise).
    """
    check_tensor("x", x, floating=True)
    if x.dim() < 2:
        raise ValueError(f"x: expected shape (..., n, d), got {tuple(x.shape)}")
    d = x.shape[-1]
    if d == 0 or d % 2:
        raise ValueError(f"x: expected an even head size d (last dimension), got d={d}")
    if isinstance(offset, bool) or not isinstance(offset, (int, float)):
        raise TypeError(f"offset: expected an int, got {type(offset).__name__}")
    n = x.shape[-2]
    if positions is None:
        positions = torch.arange(n, device=x.device)
    else:
        check_tensor("positions", positions)
        if positions.dim() == 0 or positions.shape[-1] != n:
            raise ValueError(
                f"positions: expected shape (..., {n}) matching x's n, got {tuple(positions.shape)}"
            )
        try:
            torch.broadcast_shapes(positions.shape, x.shape[:-1])
        except RuntimeError:
            raise ValueError(
                f"positions: shape {tuple(positions.shape)} does not broadcast to "
                f"x.shape[:-1] = {tuple(x.shape[:-1])}"
            ) from None
    if offset:
        positions = positions + offset
    cos, sin = rope_cos_sin(
        positions, d, base=base, layout=layout, dtype=x.dtype, device=x.device, freqs=freqs
    )
    return x * cos + rotate_pairs(x, layout=layout) * sin


def rope_matrix(
    m: float,
    d: int,
    *,
    base: float = 1e4,
    layout: str = "interleaved",
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The explicit rotation ``R_m``: ``(d, d)``, for teaching and tests (never needed in models).

    Interleaved: block-diagonal with 2×2 blocks ``[[cos mθ_i, −sin mθ_i], [sin mθ_i, cos mθ_i]]``;
    half: the same blocks on coordinates ``(i, i + d/2)``. ``R_m x`` (as ``R @ x``) equals
    :func:`apply_rope` at position ``m``. Eq. (rope-2d-relative) of the rope-2d chapter.
    """
    if isinstance(m, torch.Tensor):
        if m.numel() != 1:
            raise ValueError(f"m: expected a scalar position, got shape {tuple(m.shape)}")
        m = m.item()
    if isinstance(m, bool) or not isinstance(m, (int, float)) or not math.isfinite(m):
        raise TypeError(f"m: expected a finite number, got {m!r}")
    check_dim_even("d", d)
    _check_layout(layout)
    theta = sinusoidal_frequencies(d, _check_base(base), dtype=torch.float64, device=device)
    ang = m * theta
    c, s = torch.cos(ang), torch.sin(ang)
    i = torch.arange(d // 2, device=device)
    a, b = (2 * i, 2 * i + 1) if layout == "interleaved" else (i, i + d // 2)
    R = torch.zeros(d, d, dtype=torch.float64, device=device)
    R[a, a] = c
    R[a, b] = -s
    R[b, a] = s
    R[b, b] = c
    return R.to(dtype)


def rope_decay_envelope(delta, d: int, *, base: float = 1e4) -> torch.Tensor:
    """The post's long-range decay factor ``F(Δ) = (2/d) Σ_{j=1}^{d/2} |Σ_{i<j} e^{iΔθ_i}|``.

    ``delta``: number or tensor ``(...)`` of relative positions ``n − m`` -> float64 ``(...)``
    on ``delta``'s device. It multiplies ``max_i |h_{i+1} − h_i|`` in the Abel-summation
    bound ``|(R_m q)^T (R_n k)| <= max_i |h_{i+1} − h_i| · Σ_j |S_j|``: an envelope, not a score
    (rope-2d chapter, eqs. (rope-2d-abel) and (rope-2d-envelope)).
    """
    check_dim_even("d", d)
    if isinstance(delta, torch.Tensor):
        if delta.is_complex() or delta.dtype == torch.bool:
            raise TypeError(f"delta: expected a real tensor, got dtype {delta.dtype}")
        dl = delta.to(torch.float64)
    elif isinstance(delta, (int, float)) and not isinstance(delta, bool):
        dl = torch.tensor(float(delta), dtype=torch.float64)
    else:
        raise TypeError(f"delta: expected a number or a tensor, got {type(delta).__name__}")
    if not torch.isfinite(dl).all():
        raise ValueError("delta: expected finite relative positions, got non-finite entries")
    theta = sinusoidal_frequencies(d, _check_base(base), dtype=torch.float64, device=dl.device)
    ang = dl.unsqueeze(-1) * theta  # (..., d/2)
    S = torch.polar(torch.ones_like(ang), ang).cumsum(-1)  # S_1 .. S_{d/2}
    return S.abs().sum(-1) * (2.0 / d)


# --------------------------------------------------------------------------- trainable module


class Rotary(nn.Module):
    """RoPE as a module: ``forward(x: (..., n, d), positions=None, *, offset=0) -> (..., n, d)``.

    Holds the ladder ``theta: (d_head//2,)`` (float32, initialised at ``base^(-2i/d)``) as a
    buffer, or as a trainable ``nn.Parameter`` when ``learnable=True`` (the post's question
    whether the ladder moves during training; the rope-2d chapter trains both).
    """

    def __init__(
        self,
        d_head: int,
        *,
        base: float = 1e4,
        layout: str = "interleaved",
        learnable: bool = False,
    ):
        super().__init__()
        check_dim_even("d_head", d_head)
        self.d_head, self.layout, self.base = d_head, _check_layout(layout), _check_base(base)
        theta = sinusoidal_frequencies(d_head, self.base, dtype=torch.float32)
        if learnable:
            self.theta = nn.Parameter(theta)
        else:
            self.register_buffer("theta", theta)

    def forward(
        self, x: torch.Tensor, positions: torch.Tensor | None = None, *, offset: int = 0
    ) -> torch.Tensor:
        if x.shape[-1] != self.d_head:
            raise ValueError(f"x: expected last dimension {self.d_head}, got {x.shape[-1]}")
        return apply_rope(x, positions, layout=self.layout, offset=offset, freqs=self.theta)

    def extra_repr(self) -> str:
        return f"d_head={self.d_head}, base={self.base:g}, layout={self.layout!r}"


# --------------------------------------------------------------------------- 2-D RoPE


def grid_positions(H: int, W: int, *, device: torch.device | str | None = None) -> torch.Tensor:
    """Row-major ``(x, y)`` coordinates of an ``H × W`` grid: ``(H·W, 2)`` long, ``k -> (k // W, k % W)``."""
    check_positive("H", H, integer=True)
    check_positive("W", W, integer=True)
    xs, ys = torch.meshgrid(
        torch.arange(H, device=device), torch.arange(W, device=device), indexing="ij"
    )
    return torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=-1)


def apply_rope_2d(
    x: torch.Tensor,
    pos_xy: torch.Tensor,
    *,
    base: float = 1e4,
    split: str = "half",
) -> torch.Tensor:
    """2-D RoPE ``R_{x,y}``: ``x: (..., n, d)``, ``pos_xy: (..., n, 2)`` -> ``(..., n, d)``; ``4 | d``.

    ``split="half"``: the first ``d/2`` coordinates get 1-D RoPE (interleaved) with the
    ``x`` coordinate, the last ``d/2`` with ``y``; both use the ``d/2``-dim ladder
    ``θ_i = base^(−4i/d)``, ``i < d/4``. ``split="blocks4"``: the same rotations arranged
    as 4-dim blocks ``[x-pair_i, y-pair_i]`` per frequency (the post's 4×4 block
    ``exp(θ_i (x J ⊕ y J))`` repeated). Then ``(R_{p} q)^T (R_{p'} k) = q^T R_{p'−p} k``
    (rope-2d chapter, eq. (rope-2d-R2d)).
    """
    check_tensor("x", x, floating=True)
    if x.dim() < 2:
        raise ValueError(f"x: expected shape (..., n, d), got {tuple(x.shape)}")
    d, n = x.shape[-1], x.shape[-2]
    if d == 0 or d % 4:
        raise ValueError(f"x: expected a head size d divisible by 4 for 2-D RoPE, got d={d}")
    check_tensor("pos_xy", pos_xy)
    if pos_xy.dim() < 2 or pos_xy.shape[-1] != 2 or pos_xy.shape[-2] != n:
        raise ValueError(f"pos_xy: expected shape (..., {n}, 2), got {tuple(pos_xy.shape)}")
    if split not in ("half", "blocks4"):
        raise ValueError(f"split: expected 'half' or 'blocks4', got {split!r}")
    px, py = pos_xy[..., 0], pos_xy[..., 1]
    if split == "half":
        xa, xb = x[..., : d // 2], x[..., d // 2 :]
        return torch.cat([apply_rope(xa, px, base=base), apply_rope(xb, py, base=base)], dim=-1)
    blocks = x.unflatten(-1, (d // 4, 4))  # (..., n, d/4, 4): [x-pair, y-pair] per frequency
    xa = blocks[..., :2].flatten(-2)
    xb = blocks[..., 2:].flatten(-2)
    ra, rb = apply_rope(xa, px, base=base), apply_rope(xb, py, base=base)
    return torch.cat(
        [ra.unflatten(-1, (d // 4, 2)), rb.unflatten(-1, (d // 4, 2))], dim=-1
    ).flatten(-2)


def rope2d_generators(theta: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The commuting skew generators ``B1 = θ (J ⊕ 0)``, ``B2 = θ (0 ⊕ J)``: two ``(4, 4)`` float64.

    ``J = [[0, −1], [1, 0]]``; ``R_{x,y} = exp(x B1 + y B2)`` is the 2-D RoPE block of the
    rope-2d chapter, eqs. (rope-2d-exp2d) and (rope-2d-R2d).
    """
    check_positive("theta", theta)
    J = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=torch.float64) * float(theta)
    Z = torch.zeros(2, 2, dtype=torch.float64)
    return torch.block_diag(J, Z), torch.block_diag(Z, J)


def rope2d_matrix(x, y, theta: float = 1.0) -> torch.Tensor:
    """``R_{x,y} = exp(x B1 + y B2)`` via ``torch.linalg.matrix_exp`` in float64: ``(4, 4)``.

    ``x, y``: numbers or tensors of one shape ``(...)`` -> ``(..., 4, 4)``. Eq. (rope-2d-R2d)
    of the rope-2d chapter.
    """
    B1, B2 = rope2d_generators(theta)
    xt = torch.as_tensor(x, dtype=torch.float64)
    yt = torch.as_tensor(y, dtype=torch.float64)
    if xt.shape != yt.shape:
        raise ValueError(f"y: expected the shape of x {tuple(xt.shape)}, got {tuple(yt.shape)}")
    if not (torch.isfinite(xt).all() and torch.isfinite(yt).all()):
        raise ValueError("x: expected finite positions (x and y), got non-finite entries")
    B1, B2 = B1.to(xt.device), B2.to(xt.device)
    A = xt[..., None, None] * B1 + yt[..., None, None] * B2
    return torch.linalg.matrix_exp(A)


def recover_position_2d(R: torch.Tensor, theta: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Invert ``R_{x,y}``: ``(..., 4, 4) -> (x, y)`` each ``(...)``, float64.

    ``xθ = atan2(R[1,0], R[0,0])`` and ``yθ = atan2(R[3,2], R[2,2])`` taken in ``[0, 2π)``, so
    positions are recovered modulo ``2π/θ`` (unique on grids smaller than that): the
    invertibility requirement (rope-2d-requirements) of the rope-2d chapter.
    """
    check_tensor("R", R, floating=True)
    if R.dim() < 2 or R.shape[-2:] != (4, 4):
        raise ValueError(f"R: expected shape (..., 4, 4), got {tuple(R.shape)}")
    check_positive("theta", theta)
    R = R.to(torch.float64)
    two_pi = 2 * math.pi
    ax = torch.remainder(torch.atan2(R[..., 1, 0], R[..., 0, 0]), two_pi)
    ay = torch.remainder(torch.atan2(R[..., 3, 2], R[..., 2, 2]), two_pi)
    return ax / theta, ay / theta


def commutant_dimension(B: torch.Tensor, *, rtol: float = 1e-9) -> int:
    """Dimension of ``{C ∈ so(k) : BC = CB}`` for ``B: (k, k)``.

    The null space of the linear map ``C ↦ BC − CB`` restricted to the ``k(k−1)/2`` basis
    ``E_ab − E_ba`` of skew matrices, computed from singular values (float64, relative
    tolerance ``rtol``). For a 2-D RoPE it counts the generators that commute with ``B``
    (the so(3) / so(4) argument of the rope-2d chapter).
    """
    check_tensor("B", B, floating=True)
    if B.dim() != 2 or B.shape[0] != B.shape[1] or B.shape[0] < 2:
        raise ValueError(f"B: expected a square (k, k) matrix with k >= 2, got {tuple(B.shape)}")
    check_positive("rtol", rtol)
    k = B.shape[0]
    Bd = B.detach().to("cpu", torch.float64)
    cols = []
    for a in range(k):
        for b in range(a + 1, k):
            C = torch.zeros(k, k, dtype=torch.float64)
            C[a, b], C[b, a] = -1.0, 1.0
            cols.append((Bd @ C - C @ Bd).reshape(-1))
    M = torch.stack(cols, dim=1)  # (k², k(k−1)/2)
    s = torch.linalg.svdvals(M)
    scale = max(float(s.max()) if s.numel() else 0.0, float(Bd.abs().max()), 1.0)
    return int(M.shape[1] - int((s > rtol * scale).sum()))
