"""Gradient estimators for ``d/d logits E_{y ~ softmax(logits)}[f(y)]``: exact, score-function, pathwise.

The objective of the reparameterisation chapter (kexue.fm/archives/6705) for a categorical
variable with ``k`` classes and logits ``o``:

``L(o) = sum_y softmax(o)_y f(e_y)``,  ``dL/do = p * (f - p . f)``.

Per-sample estimators return ``(n, k)``: row ``i`` is one sample's gradient, so the mean of
the rows estimates the gradient and their covariance is the estimator's variance.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from kexue_lib._core import check_positive, check_tensor
from kexue_lib.gumbel import gumbel_max_sample, gumbel_softmax, sample_gumbel

__all__ = [
    "pathwise_grad_samples",
    "reinforce_grad_samples",
    "softmax_expectation_grad",
]


def _check_logits_1d(logits) -> torch.Tensor:
    check_tensor("logits", logits, floating=True)
    if logits.dim() != 1 or logits.numel() < 2:
        raise ValueError(
            f"logits: expected a (k,) vector with k >= 2, got shape {tuple(logits.shape)}"
        )
    return logits


def _check_n(n) -> int:
    check_positive("n", n, integer=True)
    return n


def softmax_expectation_grad(logits: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Exact gradient of ``E_{y ~ softmax(o)}[f_y] = p . f`` with respect to the logits ``o``.

    ``logits: (..., k)``, ``values: (..., k)`` (``f_y = f(e_y)``, broadcastable) -> ``(..., k)``:
    ``dL/do = p * (f - p . f)`` with ``p = softmax(o)``.
    """
    check_tensor("logits", logits, floating=True)
    check_tensor("values", values, floating=True)
    if logits.dim() == 0 or values.dim() == 0 or values.shape[-1] != logits.shape[-1]:
        raise ValueError(
            f"values: expected {logits.shape[-1] if logits.dim() else '?'} entries on "
            f"the last dim like logits, got shape {tuple(values.shape)}"
        )
    p = torch.softmax(logits, dim=-1)
    f = values.to(p.dtype)
    return p * (f - (p * f).sum(-1, keepdim=True))


def reinforce_grad_samples(
    logits: torch.Tensor,
    reward: torch.Tensor | Callable,
    n: int,
    *,
    baseline: str | float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Per-sample score-function (REINFORCE) gradients ``(f(y) - b) * (e_y - p)``, ``y ~ softmax(o)``.

    ``logits: (k,)``; ``reward`` a ``(k,)`` table ``f_y`` or a callable mapping ``(n, k)``
    one-hot rows to ``(n,)`` rewards (it need not be differentiable); ``n`` samples -> ``(n, k)``.
    ``d log p_y / d o = e_y - p``. Baselines: ``None`` (b = 0); ``"mean"`` (b = the batch mean of
    f, including the sample itself, so the mean of the rows is biased by the factor
    ``(n - 1) / n``); ``"loo"`` (leave-one-out mean of the other ``n - 1`` rewards; unbiased,
    needs ``n >= 2``); or a number (a constant baseline; unbiased).
    """
    _check_logits_1d(logits)
    _check_n(n)
    if baseline == "loo" and n < 2:
        raise ValueError(f"n: the 'loo' baseline needs n >= 2, got {n}")
    if not (
        baseline is None
        or baseline in ("mean", "loo")
        or (isinstance(baseline, (int, float)) and not isinstance(baseline, bool))
    ):
        raise ValueError(f"baseline: expected None, 'mean', 'loo' or a number, got {baseline!r}")
    o = logits.detach()
    k = o.numel()
    y = gumbel_max_sample(o.expand(n, k), generator=generator)
    onehot = torch.nn.functional.one_hot(y, k).to(o.dtype)
    if callable(reward):
        f = torch.as_tensor(reward(onehot)).detach().to(device=o.device, dtype=o.dtype)
        if f.shape != (n,):
            raise ValueError(
                f"reward: expected the callable to return shape ({n},), got {tuple(f.shape)}"
            )
    else:
        check_tensor("reward", reward, floating=True)
        if reward.shape != (k,):
            raise ValueError(
                f"reward: expected a ({k},) table or a callable, got shape {tuple(reward.shape)}"
            )
        f = reward.detach().to(o.dtype)[y]
    if baseline == "mean":
        f = f - f.mean()
    elif baseline == "loo":
        f = f - (f.sum() - f) / (n - 1)
    elif baseline is not None:
        f = f - baseline
    return f[:, None] * (onehot - torch.softmax(o, -1))


def pathwise_grad_samples(
    f: Callable | torch.Tensor,
    logits: torch.Tensor,
    tau,
    n: int,
    *,
    hard: bool = False,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Per-sample pathwise (Gumbel-softmax) gradients ``d f(y_tau) / d o`` by autograd.

    ``f`` a callable mapping ``(n, k)`` relaxed samples to ``(n,)`` (row-wise, differentiable)
    or a ``(k,)`` tensor ``c`` for the linear objective ``f(y) = y . c``; ``logits: (k,)``;
    ``tau > 0`` a number or a tensor broadcastable to ``(n, k)`` (e.g. ``(n, 1)``: one
    temperature per sample, to tabulate many temperatures in one call); ``n`` samples -> ``(n, k)``. ``y_tau = softmax((o + G) / tau)``; row ``i`` is
    ``J_i^T grad f(y_i)`` with ``J = (diag(y) - y y^T) / tau``. The mean estimates
    ``d/do E[f(y_tau)]``, which is biased for ``d/do sum_y p_y f(e_y)`` when ``tau > 0``.
    ``hard=True`` gives the straight-through estimator (forward one-hot, soft gradient).
    ``noise: (n, k)`` fixes the Gumbel noise (coupling across ``tau``).
    """
    _check_logits_1d(logits)
    _check_n(n)
    k = logits.numel()
    if noise is None:
        noise = sample_gumbel((n, k), dtype=logits.dtype, device=logits.device, generator=generator)
    elif tuple(noise.shape) != (n, k):
        raise ValueError(f"noise: expected shape ({n}, {k}), got {tuple(noise.shape)}")
    if isinstance(f, torch.Tensor):
        check_tensor("f", f, floating=True)
        if f.shape != (k,):
            raise ValueError(
                f"f: expected a ({k},) vector or a callable, got shape {tuple(f.shape)}"
            )
        c = f.detach().to(logits.dtype)

        def fn(y):
            return y @ c
    elif callable(f):
        fn = f
    else:
        raise TypeError(f"f: expected a callable or a tensor, got {type(f).__name__}")
    with torch.enable_grad():
        o = logits.detach().expand(n, k).clone().requires_grad_(True)
        y = gumbel_softmax(o, tau, hard=hard, noise=noise)
        out = fn(y)
        if not isinstance(out, torch.Tensor) or out.shape != (n,):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"f: expected the callable to return shape ({n},), got {shape}")
        (grad,) = torch.autograd.grad(out.sum(), o)
    return grad
