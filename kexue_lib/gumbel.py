"""Gumbel noise, the Gumbel-max trick, the Gumbel-softmax (Concrete) relaxation and its density.

Used by the reparameterisation chapter (kexue.fm/archives/6705) and its temperature widget.
Everything works on ``dim`` (default the last) and is batched over the other dimensions.
Randomness comes only from ``generator=`` or from explicit ``noise=`` (which lets callers
couple samples across temperatures). Half-precision inputs are computed in float32 inside
and cast back.
"""

from __future__ import annotations

import math

import torch

from kexue_lib._core import check_simplex, check_tensor, work_dtype

__all__ = [
    "concrete_log_prob",
    "gumbel_max_sample",
    "gumbel_softmax",
    "sample_gumbel",
]


def _check_tau(tau, like: torch.Tensor) -> torch.Tensor:
    """``tau`` as a tensor on ``like``'s device/dtype; ValueError unless every entry is > 0 and finite."""
    if isinstance(tau, torch.Tensor):
        t = tau.detach()
        if t.numel() == 0 or not bool(((t > 0) & torch.isfinite(t)).all()):
            raise ValueError(f"tau: expected a finite temperature > 0, got {tau}")
        return tau.to(device=like.device, dtype=like.dtype)
    if isinstance(tau, bool) or not isinstance(tau, (int, float)):
        raise TypeError(f"tau: expected a number or a tensor, got {type(tau).__name__}")
    if not (tau > 0 and math.isfinite(tau)):
        raise ValueError(f"tau: expected a finite temperature > 0, got {tau!r}")
    return torch.tensor(float(tau), device=like.device, dtype=like.dtype)


def _broadcast(a: tuple, b: tuple) -> tuple | None:
    """The broadcast of two shapes, or None when they do not broadcast.

    Plain Python on purpose: the first call of ``torch.broadcast_shapes`` imports sympy,
    which costs seconds (a notebook pays it on its first Gumbel-softmax sample).
    """
    a, b = tuple(a), tuple(b)
    n = max(len(a), len(b))
    a, b = (1,) * (n - len(a)) + a, (1,) * (n - len(b)) + b
    out = []
    for x, y in zip(a, b):
        if x != y and 1 not in (x, y):
            return None
        out.append(y if x == 1 else x)
    return tuple(out)


def _check_tau_shape(t: torch.Tensor, shape: tuple, what: str) -> None:
    """ValueError unless a tensor ``tau`` broadcasts to ``shape`` without enlarging it."""
    shape = tuple(shape)
    if _broadcast(tuple(t.shape), shape) != shape:
        raise ValueError(
            f"tau: expected a number or a tensor broadcastable to {what} shape {shape}, "
            f"got shape {tuple(t.shape)}"
        )


def _check_logits(logits) -> torch.Tensor:
    check_tensor("logits", logits, floating=True)
    if logits.dim() == 0:
        raise ValueError("logits: expected at least one dimension (the categories), got a scalar")
    return logits


def _noise_for(logits: torch.Tensor, noise, generator, cdt: torch.dtype) -> torch.Tensor:
    if noise is None:
        return sample_gumbel(logits.shape, dtype=cdt, device=logits.device, generator=generator)
    check_tensor("noise", noise, floating=True)
    if noise.shape != logits.shape:
        raise ValueError(
            f"noise: expected the shape of logits {tuple(logits.shape)}, got {tuple(noise.shape)}"
        )
    return noise.to(device=logits.device, dtype=cdt)


def sample_gumbel(
    shape,
    *,
    dtype: torch.dtype = torch.float32,
    device=None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Standard Gumbel noise ``G = -log(-log U)``, ``U ~ U(0, 1)``, of the given ``shape``; always finite.

    ``torch.rand`` can return exactly 0 (and, after rounding, values that make ``-log U`` zero),
    which would give ``G = ∓inf``; ``U`` is clamped into ``[tiny, 1 - eps/2]`` so every draw is
    finite (``G`` lies in about ``[-6.6, 37]`` in float64, ``[-4.5, 16.6]`` in float32).
    Half dtypes are drawn in float32 and cast. ``device`` defaults to the generator's device.
    CDF: ``P(G <= g) = exp(-exp(-g))``.
    """
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype: expected a floating torch.dtype, got {dtype!r}")
    if isinstance(shape, int):
        shape = (shape,)
    shape = tuple(shape)
    if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in shape):
        raise ValueError(f"shape: expected non-negative ints, got {shape!r}")
    if device is None and generator is not None:
        device = generator.device
    cdt = work_dtype(dtype)
    fi = torch.finfo(cdt)
    u = torch.rand(shape, dtype=cdt, device=device, generator=generator)
    u = u.clamp_(min=fi.tiny, max=1.0 - fi.eps / 2)
    return (-torch.log(-torch.log(u))).to(dtype)


def gumbel_max_sample(
    logits: torch.Tensor,
    *,
    dim: int = -1,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Exact categorical samples by the Gumbel-max trick: ``argmax_i (o_i + G_i)``.

    ``logits: (..., k, ...)`` with the categories on ``dim`` -> ``(...)`` long (``dim`` removed).
    ``P(sample = i) = softmax(o)_i``. ``noise`` (same shape as ``logits``) replaces fresh noise;
    ``-inf`` logits are never chosen.
    """
    _check_logits(logits)
    cdt = work_dtype(logits.dtype)
    g = _noise_for(logits, noise, generator, cdt)
    return (logits.detach().to(cdt) + g).argmax(dim=dim)


def gumbel_softmax(
    logits: torch.Tensor,
    tau,
    *,
    hard: bool = False,
    dim: int = -1,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Gumbel-softmax (Concrete) sample ``y = softmax((o + G) / tau)`` along ``dim``.

    ``logits: (..., k)`` -> ``(..., k)`` in ``logits``' dtype; ``tau`` a number or a tensor
    broadcastable to ``logits`` (ValueError unless > 0). The noise divides together with the
    logits, ``(o + G) / tau``. The shift by the row maximum is done before dividing by ``tau``,
    so ``tau -> 0`` gives the one-hot ``onehot(argmax(o + G))`` and no NaN. With shared
    ``noise``, ``argmax y`` equals :func:`gumbel_max_sample` for every ``tau``.

    ``hard=True`` is the straight-through estimator (an extension, not in the post): the forward
    value is the exact one-hot Gumbel-max sample, the gradient is that of the soft sample
    (biased). Half inputs are computed in float32 and cast back.
    """
    _check_logits(logits)
    cdt = work_dtype(logits.dtype)
    t = _check_tau(tau, logits.new_empty((), dtype=cdt))
    _check_tau_shape(t, tuple(logits.shape), "logits")
    g = _noise_for(logits, noise, generator, cdt)
    x = logits.to(cdt) + g
    z = (x - x.detach().amax(dim=dim, keepdim=True)) / t
    y = torch.softmax(z, dim=dim)
    if hard:
        index = x.detach().argmax(dim=dim, keepdim=True)
        y_hard = torch.zeros_like(y).scatter_(dim, index, 1.0)
        y = y_hard - y.detach() + y
    return y.to(logits.dtype)


def concrete_log_prob(y: torch.Tensor, logits: torch.Tensor, tau) -> torch.Tensor:
    """Log density of the Concrete / Gumbel-softmax distribution at simplex points ``y``.

    ``y: (..., k)`` (positive, summing to 1 on the last dim, else ValueError), ``logits: (..., k)`` broadcastable, ``tau > 0``
    a number or a tensor broadcastable to the batch shape ``(...)`` -> ``(...)``. Density w.r.t. Lebesgue measure on the first ``k - 1`` coordinates
    (Maddison et al. 2017; Jang et al. 2017):

    ``log p(y) = log((k-1)!) + (k-1) log tau + sum_i [log pi_i - (tau+1) log y_i]
    - k logsumexp_i(log pi_i - tau log y_i)``, with ``log pi = log_softmax(logits)``.
    """
    check_tensor("y", y, floating=True)
    _check_logits(logits)
    if y.dim() == 0 or y.shape[-1] != logits.shape[-1]:
        raise ValueError(
            f"y: expected {logits.shape[-1]} categories on the last dim like logits, "
            f"got shape {tuple(y.shape)}"
        )
    if y.numel():
        check_simplex("y", y, atol=max(1e-5, 2 * torch.finfo(y.dtype).eps))
        if not bool((y > 0).all()):
            raise ValueError(
                "y: expected points inside the open simplex (every y_i > 0), got a zero entry "
                "(an underflowed sample at small tau?): the density is not defined there"
            )
    out_dtype = torch.promote_types(y.dtype, logits.dtype)
    cdt = work_dtype(out_dtype)
    t = _check_tau(tau, logits.new_empty((), dtype=cdt))
    batch = _broadcast(y.shape[:-1], logits.shape[:-1])
    if batch is None:
        raise ValueError(
            f"logits: expected a shape broadcastable with y's {tuple(y.shape)}, "
            f"got {tuple(logits.shape)}"
        )
    _check_tau_shape(t, batch, "the batch")
    k = logits.shape[-1]
    log_pi = torch.log_softmax(logits.to(cdt), dim=-1)
    log_y = torch.log(y.to(cdt))
    log_pi, log_y = torch.broadcast_tensors(log_pi, log_y)
    tk = t[..., None]
    score = log_pi - tk * log_y
    out = (
        math.lgamma(k)
        + (k - 1) * torch.log(t)
        + (log_pi - (tk + 1) * log_y).sum(-1)
        - k * torch.logsumexp(score, dim=-1)
    )
    return out.to(out_dtype)
