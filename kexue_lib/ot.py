"""Optimal transport between minibatches: exact matching, c-transform duals, Sinkhorn, penalties.

Everything takes point clouds as ``(B, D)`` tensors with uniform weights and returns tensors on
the input device and dtype. The ground cost is ``|x - y|^p`` (Euclidean norm, ``p`` in {1, 2}),
so ``exact_ot(..., p=1)`` is the batch ``W_1`` and ``exact_ot(..., p=2)`` the batch ``W_2^2``.

The exact solvers (``linear_sum_assignment``) run on the CPU on a detached copy of the cost; the
value is then recomputed in torch from the chosen pairs, so it is differentiable in ``x`` and
``y`` (by the envelope theorem the optimal pairing may be held fixed when differentiating).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from kexue_lib._core import (
    check_choice,
    check_int,
    check_positive,
    check_shape,
    check_tensor,
    to_numpy64,
)
from kexue_lib.geometry import pairwise_sq_dists

__all__ = [
    "c_transform",
    "c_transform_dual",
    "cost_matrix",
    "exact_ot",
    "gaussian_batch_ratio",
    "gradient_penalty",
    "kmeans",
    "sinkhorn",
    "w1_to_point",
    "wasserstein_1d",
]

# floor under squared distances before the square root: |x - y| has no gradient at x = y
_SQRT_FLOOR = 1e-12
# per-iteration shrink factor of the Sinkhorn temperature schedule (eps-scaling)
_EPS_DECAY = 0.8


def _check_cloud(name: str, x) -> torch.Tensor:
    check_tensor(name, x, floating=True)
    check_shape(name, x, (None, None))
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name}: expected a non-empty (B, D) matrix, got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name}: expected finite entries, got non-finite values")
    return x


def _check_pair(x, y, *, same_size: bool) -> None:
    _check_cloud("x", x)
    _check_cloud("y", y)
    if y.shape[1] != x.shape[1]:
        raise ValueError(f"y: expected {x.shape[1]} columns like x, got {y.shape[1]}")
    if same_size and y.shape[0] != x.shape[0]:
        raise ValueError(f"y: expected {x.shape[0]} points like x, got {y.shape[0]}")
    if y.dtype != x.dtype or y.device != x.device:
        raise ValueError(f"y: expected dtype {x.dtype} on {x.device}, got {y.dtype} on {y.device}")


def _check_p(p) -> int:
    return check_choice("p", p, (1, 2))


def cost_matrix(x: torch.Tensor, y: torch.Tensor, *, p: int = 1) -> torch.Tensor:
    """``C[i, j] = |x_i - y_j|^p`` for ``x: (B, D)``, ``y: (B2, D)``; ``p`` in {1, 2}.

    ``p = 1`` takes ``sqrt(max(d2, 1e-12))``: the norm has no gradient where two points
    coincide, and the floor turns that into a zero gradient instead of a NaN.
    """
    _check_pair(x, y, same_size=False)
    _check_p(p)
    d2 = pairwise_sq_dists(x, y)
    return d2 if p == 2 else d2.clamp_min(_SQRT_FLOOR).sqrt()


def exact_ot(x: torch.Tensor, y: torch.Tensor, *, p: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact OT between two equal-size uniform batches: ``(mean_i C[i, perm[i]], perm)``.

    Returns the batch ``W_p^p`` (``W_1`` for ``p=1``, ``W_2^2`` for ``p=2``) as a 0-d tensor that
    is differentiable in ``x`` and ``y``, and the optimal matching ``perm`` (``x_i`` goes to
    ``y[perm[i]]``, a long tensor on the input device). For uniform weights and equal sizes an
    optimal plan is a permutation (Birkhoff), found by the Hungarian method on the CPU.
    """
    from scipy.optimize import linear_sum_assignment

    _check_pair(x, y, same_size=True)
    C = cost_matrix(x, y, p=p)
    rows, cols = linear_sum_assignment(to_numpy64(C.detach()))
    perm = torch.as_tensor(cols, dtype=torch.long, device=x.device)
    idx = torch.as_tensor(rows, dtype=torch.long, device=x.device)
    return C[idx, perm].mean(), perm


def w1_to_point(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """``W_1`` between the batch ``x: (B, D)`` and the single atom ``delta_m`` (``m: (D,)``).

    Every point must go to ``m``, so the value is ``mean_i |x_i - m|``.
    """
    _check_cloud("x", x)
    check_tensor("m", m, floating=True)
    check_shape("m", m, (x.shape[1],))
    return cost_matrix(x, m[None, :].to(x), p=1)[:, 0].mean()


def wasserstein_1d(u: torch.Tensor, v: torch.Tensor, *, p: int = 1) -> torch.Tensor:
    """``W_p^p`` between two equal-size samples on the line: ``mean |sort(u) - sort(v)|^p``.

    In one dimension the monotone (sorted) matching is optimal for every convex cost.
    """
    for name, t in (("u", u), ("v", v)):
        check_tensor(name, t, floating=True)
        check_shape(name, t, (None,))
        if t.numel() == 0:
            raise ValueError(f"{name}: expected a non-empty vector, got shape {tuple(t.shape)}")
    if v.shape[0] != u.shape[0]:
        raise ValueError(f"v: expected {u.shape[0]} values like u, got {v.shape[0]}")
    _check_p(p)
    diff = (torch.sort(u).values - torch.sort(v).values).abs()
    return (diff**p).mean()


def c_transform(phi_x: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """The batch c-transform ``phi^c(y_j) = min_i (C[i, j] - phi(x_i))``: ``(B,), (B, B2) -> (B2,)``.

    ``phi(x_i) + phi^c(y_j) <= C[i, j]`` for all pairs, so the averages of ``phi`` and
    ``phi^c`` bound the batch OT value from below (weak LP duality).
    """
    check_tensor("phi_x", phi_x, floating=True)
    check_shape("phi_x", phi_x, (None,))
    check_tensor("C", C, floating=True)
    check_shape("C", C, (phi_x.shape[0], None))
    return (C - phi_x[:, None]).min(dim=0).values


def c_transform_dual(
    critic: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    p: int = 1,
) -> torch.Tensor:
    """``mean_i phi(x_i) + mean_j phi^c(y_j)`` with ``phi = critic``: a lower bound on ``exact_ot``.

    ``critic(x)`` must return ``(B,)`` or ``(B, 1)`` values. Maximising this over the critic is
    the c-transform WGAN of Mallasto et al.; at the optimal potential it equals the batch OT value.
    """
    if not callable(critic):
        raise TypeError(f"critic: expected a callable, got {type(critic).__name__}")
    _check_pair(x, y, same_size=False)
    phi = critic(x).reshape(-1)
    if phi.shape[0] != x.shape[0]:
        raise ValueError(
            f"critic: expected one value per point ({x.shape[0]}), got shape {tuple(phi.shape)}"
        )
    C = cost_matrix(x, y, p=p)
    return phi.mean() + c_transform(phi, C).mean()


def sinkhorn(
    x: torch.Tensor, y: torch.Tensor, eps: float, *, n_iter: int = 200, p: int = 2
) -> torch.Tensor:
    """Entropic OT cost ``<P, C>`` between uniform batches, by log-domain Sinkhorn.

    ``P`` is the plan after ``n_iter`` updates of the dual potentials ``f, g`` with
    ``f_i = -eps logsumexp_j((g_j - C_ij) / eps) + eps log B2`` (and symmetrically for ``g``),
    ``P_ij = exp((f_i + g_j - C_ij) / eps) / (B B2)``. Working with logs keeps it finite for
    tiny ``eps`` (where it tends to the exact OT cost) and for huge ``eps`` (where ``P`` tends
    to the independent coupling and the value to ``mean C``). The temperature starts at
    ``max C`` and shrinks by 0.8 per iteration down to ``eps`` (eps-scaling): plain iterations
    at a tiny ``eps`` would need of order ``max C / eps`` steps. In float32 the exponent is
    resolved only to about ``1e-7 max C / eps``, so for ``eps`` far below ``1e-5 max C`` the plan
    stays finite but its marginals are off by several percent; use float64 there.
    """
    _check_pair(x, y, same_size=False)
    check_positive("eps", eps)
    check_int("n_iter", n_iter, minimum=1)
    C = cost_matrix(x, y, p=p)
    n, m = C.shape
    log_a = -math.log(n)
    log_b = -math.log(m)
    f = torch.zeros(n, dtype=C.dtype, device=C.device)
    g = torch.zeros(m, dtype=C.dtype, device=C.device)
    # eps-scaling: start at the cost scale and shrink geometrically to eps, warm-starting the
    # potentials; the fixed point at eps is unchanged, it is only reached in far fewer steps
    level = max(float(C.detach().max()), eps)
    for _ in range(n_iter):
        level = max(eps, level * _EPS_DECAY)
        f = -level * torch.logsumexp((g[None, :] - C) / level + log_b, dim=1)
        g = -level * torch.logsumexp((f[:, None] - C) / level + log_a, dim=0)
    log_P = (f[:, None] + g[None, :] - C) / eps + log_a + log_b
    return (log_P.exp() * C).sum()


def gradient_penalty(
    critic: Callable[[torch.Tensor], torch.Tensor],
    real: torch.Tensor,
    fake: torch.Tensor,
    *,
    center: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``mean_i (|grad critic(x_hat_i)| - center)^2`` on random interpolates (WGAN-GP).

    ``x_hat_i = a_i real_i + (1 - a_i) fake_i`` with one ``a_i ~ U(0, 1)`` per sample (shape
    ``(B, 1, ...)``), drawn from ``generator``. ``center=1`` is the two-sided WGAN-GP penalty;
    ``center=0`` is the zero-centred ``mean |grad|^2`` (WGAN-div style), computed without a
    square root so it stays differentiable where the gradient vanishes. The gradient graph is
    kept (``create_graph=True``) so the penalty can be back-propagated into the critic.
    """
    if not callable(critic):
        raise TypeError(f"critic: expected a callable, got {type(critic).__name__}")
    check_tensor("real", real, floating=True)
    check_tensor("fake", fake, floating=True)
    if fake.shape != real.shape:
        raise ValueError(
            f"fake: expected shape {tuple(real.shape)} like real, got {tuple(fake.shape)}"
        )
    if real.dim() < 2 or real.shape[0] == 0:
        raise ValueError(f"real: expected a non-empty batch (B, ...), got {tuple(real.shape)}")
    check_positive("center", center, strict=False)
    shape = (real.shape[0],) + (1,) * (real.dim() - 1)
    alpha = torch.rand(shape, generator=generator, dtype=real.dtype, device=real.device)
    x_hat = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    out = critic(x_hat).reshape(-1)
    if out.shape[0] != real.shape[0]:
        raise ValueError(
            f"critic: expected one value per sample ({real.shape[0]}), got shape {tuple(out.shape)}"
        )
    (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
    sq = grad.reshape(grad.shape[0], -1).pow(2).sum(-1)
    if center == 0:
        return sq.mean()
    return ((sq + _SQRT_FLOOR).sqrt() - center).pow(2).mean()


def kmeans(
    x: torch.Tensor,
    k: int,
    *,
    iters: int = 50,
    generator: torch.Generator | None = None,
    init: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means: ``(centers (k, D), labels (N,))`` minimising ``sum_i |x_i - c_{l_i}|^2``.

    Starts from ``init`` when given, else from k-means++ seeding drawn with ``generator``. Stops
    after ``iters`` rounds or when the labels stop changing; an emptied cluster keeps its center.
    """
    _check_cloud("x", x)
    check_int("k", k)
    if k > x.shape[0]:
        raise ValueError(f"k: expected at most N = {x.shape[0]} clusters, got {k}")
    check_int("iters", iters)
    if init is not None:
        check_tensor("init", init, floating=True)
        check_shape("init", init, (k, x.shape[1]))
        centers = init.to(x).clone()
    else:
        idx = [int(torch.randint(x.shape[0], (1,), generator=generator, device=x.device))]
        d2 = pairwise_sq_dists(x, x[idx]).min(dim=1).values
        for _ in range(1, k):
            w = d2 if d2.sum() > 0 else torch.ones_like(d2)
            j = int(torch.multinomial(w, 1, generator=generator))
            idx.append(j)
            d2 = torch.minimum(d2, pairwise_sq_dists(x, x[j : j + 1])[:, 0])
        centers = x[idx].clone()
    labels = None
    for _ in range(iters):
        new = pairwise_sq_dists(x, centers).argmin(dim=1)
        if labels is not None and torch.equal(new, labels):
            break
        labels = new
        counts = torch.bincount(labels, minlength=k).to(x.dtype)
        sums = torch.zeros_like(centers).index_add_(0, labels, x)
        filled = counts > 0
        centers[filled] = sums[filled] / counts[filled, None]
    labels = pairwise_sq_dists(x, centers).argmin(dim=1)
    return centers, labels


def gaussian_batch_ratio(
    dim: int,
    batch: int,
    *,
    reps: int,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
) -> dict:
    """Batch-to-batch ``W_1`` against batch-to-mean ``W_1`` for ``N(0, I_dim)`` data.

    Draws ``reps`` independent pairs of batches ``x, y`` of size ``batch`` and returns a dict of
    float64 numpy arrays: ``"bb"`` (``exact_ot(x, y)``), ``"bm"`` (``w1_to_point(x, 0)``, the
    single atom at the true mean) and ``"ratio"`` (their quotient), one entry per pair.
    """
    check_int("dim", dim)
    check_int("batch", batch)
    check_int("reps", reps)
    device = generator.device if generator is not None else None
    bb, bm = [], []
    zero = torch.zeros(dim, dtype=dtype, device=device)
    for _ in range(reps):
        xy = torch.randn(2 * batch, dim, generator=generator, dtype=dtype, device=device)
        x, y = xy[:batch], xy[batch:]
        bb.append(float(exact_ot(x, y)[0]))
        bm.append(float(w1_to_point(x, zero)))
    bb_a, bm_a = np.asarray(bb), np.asarray(bm)
    return {"bb": bb_a, "bm": bm_a, "ratio": bb_a / bm_a}
