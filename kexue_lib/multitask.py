"""Weighting the losses of several tasks that share parameters, and the min-norm (MGDA) direction.

Loss side (chapter ``book/optimization/multitask-weighting.ipynb``, post 8870): divide every
loss by a reference (its initial or prior value, or its current value with stop-gradient),
combine with a power mean of exponent ``gamma``, or with Kendall et al.'s uncertainty weights.
Gradient side (chapter ``book/optimization/multitask-gradients.ipynb``, post 8896): per-task
gradients of the *shared* parameters, their normalised sum, and the minimum-norm point of their
convex hull (exact, Frank–Wolfe, averaging, softmax-parametrised gradient descent).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch

from kexue_lib._core import (
    check_choice,
    check_int,
    check_positive,
    check_shape,
    check_tensor,
)
from kexue_lib.entropy import entropy

__all__ = [
    "prior_loss_classification",
    "prior_loss_regression",
    "init_loss_classification",
    "init_loss_regression",
    "normalized_sum",
    "realtime_weighted",
    "power_mean",
    "power_mean_weights",
    "uncertainty_weighted",
    "task_gradients",
    "gradnorm_combine",
    "gradnorm_weighted_loss",
    "assign_flat_grad",
    "gram",
    "min_norm_2",
    "min_norm_exact",
    "min_norm_frank_wolfe",
    "min_norm_softmax_gd",
    "mgda_direction",
    "pcgrad",
]


def _check_losses(losses) -> list[torch.Tensor]:
    if isinstance(losses, torch.Tensor):
        if losses.dim() != 1:
            raise ValueError(
                f"losses: expected a 1-D tensor or a sequence of scalars, got shape {tuple(losses.shape)}"
            )
        losses = list(losses.unbind(0))
    if not isinstance(losses, Sequence) or len(losses) == 0:
        raise ValueError(f"losses: expected a non-empty sequence of scalar tensors, got {losses!r}")
    out = []
    for i, L in enumerate(losses):
        check_tensor(f"losses[{i}]", L, floating=True)
        if L.numel() != 1:
            raise ValueError(f"losses: expected scalar losses, got shape {tuple(L.shape)} at {i}")
        out.append(L.reshape(()))
    return out


def _stack_positive(losses) -> torch.Tensor:
    L = torch.stack(_check_losses(losses))
    if not torch.isfinite(L).all() or (L <= 0).any():
        raise ValueError(f"losses: expected finite losses > 0, got {L.detach().tolist()}")
    return L


# --------------------------------------------------------------------------- loss side


def prior_loss_classification(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Cross-entropy (natural log) of the best constant prediction: the label entropy ``H(p)``."""
    check_tensor("labels", labels)
    check_int("num_classes", num_classes, minimum=1)
    if labels.is_floating_point() or labels.dim() != 1 or labels.numel() == 0:
        raise ValueError(
            f"labels: expected a non-empty 1-D integer tensor, got {labels.dtype} {tuple(labels.shape)}"
        )
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(
            f"labels: expected values in [0, {num_classes}), got range [{labels.min().item()}, {labels.max().item()}]"
        )
    p = torch.bincount(labels, minlength=num_classes).double() / labels.numel()
    return entropy(p)


def prior_loss_regression(y: torch.Tensor) -> torch.Tensor:
    """Squared error of predicting the mean: ``mean_n ||y_n − ȳ||²`` (total variance, 1/N)."""
    check_tensor("y", y, floating=True)
    if y.dim() == 0 or y.shape[0] == 0:
        raise ValueError(f"y: expected shape (N, ...) with N >= 1, got {tuple(y.shape)}")
    y2 = y.reshape(y.shape[0], -1)
    return (y2 - y2.mean(0)).pow(2).sum(1).mean()


def init_loss_classification(num_classes: int) -> float:
    """Cross-entropy of the uniform prediction (zero logits): ``log K``."""
    check_int("num_classes", num_classes, minimum=1)
    return math.log(num_classes)


def init_loss_regression(y: torch.Tensor) -> torch.Tensor:
    """Squared error of the zero prediction: ``mean_n ||y_n||²``."""
    check_tensor("y", y, floating=True)
    if y.dim() == 0 or y.shape[0] == 0:
        raise ValueError(f"y: expected shape (N, ...) with N >= 1, got {tuple(y.shape)}")
    return y.reshape(y.shape[0], -1).pow(2).sum(1).mean()


def normalized_sum(losses, refs) -> torch.Tensor:
    """``Σ_i L_i / ref_i`` with fixed references (initial or prior losses)."""
    Ls = _check_losses(losses)
    if isinstance(refs, torch.Tensor):
        refs = refs.reshape(-1).tolist()
    if len(refs) != len(Ls):
        raise ValueError(f"refs: expected {len(Ls)} references, got {len(refs)}")
    for r in refs:
        check_positive("refs", r)
    return sum(L / float(r) for L, r in zip(Ls, refs))


def realtime_weighted(losses, *, eps: float = 0.0) -> torch.Tensor:
    """``Σ_i L_i / sg(L_i + eps)``: value ≈ n, gradient ``Σ_i ∇L_i / L_i = ∇ Σ_i log L_i``."""
    check_positive("eps", eps, strict=False)
    Ls = _check_losses(losses)
    return sum(L / (L.detach() + eps) for L in Ls)


def power_mean(losses, gamma: float) -> torch.Tensor:
    """Generalised mean ``((1/n) Σ L_i^γ)^{1/γ}``, computed in log space.

    ``gamma = 0`` gives the geometric mean, ``±inf`` the max / min. Losses must be > 0.
    """
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or math.isnan(gamma):
        raise ValueError(f"gamma: expected a real number (±inf allowed), got {gamma!r}")
    L = _stack_positive(losses)
    logL = L.log()
    if gamma == math.inf:
        return L.max()
    if gamma == -math.inf:
        return L.min()
    if abs(gamma) < 1e-6:  # log M_γ = mean(log L) + γ/2 Var(log L) + O(γ²): no cancellation
        m = logL.mean()
        return (m + gamma / 2 * (logL - m).pow(2).mean()).exp()
    n = L.numel()
    return ((torch.logsumexp(gamma * logL, 0) - math.log(n)) / gamma).exp()


def power_mean_weights(losses, gamma: float) -> torch.Tensor:
    """Normalised weights ``α_i ∝ L_i^{γ−1}`` that the power mean puts on each ``∇L_i``."""
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not math.isfinite(gamma):
        raise ValueError(f"gamma: expected a finite real number, got {gamma!r}")
    L = _stack_positive(losses).detach()
    return torch.softmax((gamma - 1) * L.log(), 0)


def uncertainty_weighted(losses, log_sigma: torch.Tensor) -> torch.Tensor:
    """Kendall et al.: ``Σ_i L_i / (2σ_i²) + log σ_i`` with learnable ``log σ``."""
    Ls = _check_losses(losses)
    check_tensor("log_sigma", log_sigma, floating=True)
    check_shape("log_sigma", log_sigma, (len(Ls),))
    return sum(L * torch.exp(-2 * s) / 2 + s for L, s in zip(Ls, log_sigma.unbind(0)))


# --------------------------------------------------------------------------- gradient side


def _check_params(params) -> list[torch.Tensor]:
    params = list(params)
    if not params:
        raise ValueError("params: expected at least one parameter, got none")
    for p in params:
        check_tensor("params", p, floating=True)
        if not p.requires_grad:
            raise ValueError("params: expected tensors with requires_grad=True, got one without")
    return params


def task_gradients(losses, params, *, retain_graph: bool = True) -> torch.Tensor:
    """Flattened gradients of every loss w.r.t. ``params`` (zeros where unused): ``(n, P)``."""
    Ls = _check_losses(losses)
    params = _check_params(params)
    rows = []
    for L in Ls:
        gs = torch.autograd.grad(L, params, retain_graph=retain_graph, allow_unused=True)
        rows.append(
            torch.cat(
                [(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(gs, params)]
            )
        )
    return torch.stack(rows)


def _check_G(G) -> torch.Tensor:
    check_tensor("G", G, floating=True)
    check_shape("G", G, (None, None))
    if G.shape[0] == 0 or G.shape[1] == 0:
        raise ValueError(f"G: expected shape (n, P) with n, P >= 1, got {tuple(G.shape)}")
    return G


def gradnorm_combine(G: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``Σ_i g_i / ||g_i||``: each task's gradient rescaled to unit length, then summed."""
    _check_G(G)
    check_positive("eps", eps, strict=False)
    return (G / (G.norm(dim=1, keepdim=True) + eps)).sum(0)


def gradnorm_weighted_loss(losses, params, eps: float = 1e-12) -> torch.Tensor:
    """``Σ_i L_i / sg(||∇_θ L_i||)``: a loss whose gradient is :func:`gradnorm_combine`."""
    Ls = _check_losses(losses)
    G = task_gradients(Ls, params, retain_graph=True)
    norms = G.norm(dim=1).detach() + eps
    return sum(L / n for L, n in zip(Ls, norms))


def assign_flat_grad(params, flat: torch.Tensor) -> None:
    """Write a flat ``(P,)`` vector into ``p.grad`` of every parameter (for any optimiser)."""
    params = list(params)
    check_tensor("flat", flat, floating=True)
    total = sum(p.numel() for p in params)
    check_shape("flat", flat, (total,))
    i = 0
    for p in params:
        p.grad = flat[i : i + p.numel()].reshape(p.shape).to(p.dtype).clone()
        i += p.numel()


def gram(G: torch.Tensor) -> torch.Tensor:
    """Gram matrix ``M = G Gᵀ`` of the task gradients, ``(n, n)``."""
    _check_G(G)
    return G @ G.T


def _check_M(M) -> torch.Tensor:
    check_tensor("M", M, floating=True)
    check_shape("M", M, (None, None))
    n = M.shape[0]
    if n == 0 or M.shape[1] != n:
        raise ValueError(f"M: expected a square (n, n) Gram matrix, got {tuple(M.shape)}")
    if not torch.isfinite(M).all():
        raise ValueError("M: expected finite entries, got non-finite ones")
    if (M - M.T).abs().max() > 1e-8 * (1 + M.abs().max()):
        raise ValueError("M: expected a symmetric matrix, got an asymmetric one")
    return M


def min_norm_2(g1: torch.Tensor, g2: torch.Tensor) -> tuple[float, torch.Tensor]:
    """Min over ``γ ∈ [0,1]`` of ``||(1−γ) g1 + γ g2||``: returns ``(γ*, point)``.

    ``γ* = clip(⟨g1 − g2, g1⟩ / ||g1 − g2||², 0, 1)`` (0 when ``g1 = g2``).
    """
    check_tensor("g1", g1, floating=True)
    check_tensor("g2", g2, floating=True)
    if g1.shape != g2.shape:
        raise ValueError(f"g2: expected shape {tuple(g1.shape)} like g1, got {tuple(g2.shape)}")
    d = g1 - g2
    dd = float((d * d).sum())
    gamma = 0.0 if dd == 0 else min(1.0, max(0.0, float((d * g1).sum()) / dd))
    return gamma, (1 - gamma) * g1 + gamma * g2


def _line_gamma(aa: float, ab: float, bb: float) -> float:
    """argmin over γ∈[0,1] of ||(1−γ)a + γ b||² from the three inner products."""
    dd = aa - 2 * ab + bb
    if dd <= 0:
        return 0.0
    return min(1.0, max(0.0, (aa - ab) / dd))


def min_norm_exact(M: torch.Tensor) -> torch.Tensor:
    """Exact min-norm weights by enumerating supports (``n <= 12``).

    For each support ``S`` solve ``[M_SS 1; 1ᵀ 0][a; μ] = [0; 1]`` (least squares when singular),
    keep the feasible ones (``a >= 0``) and return the one of least ``αᵀMα``.
    """
    _check_M(M)
    n = M.shape[0]
    if n > 12:
        raise ValueError(f"M: expected n <= 12 tasks for the exact solver, got {n}")
    M64 = M.detach().to(torch.float64).cpu()
    best, best_val = None, math.inf
    for k in range(1, n + 1):
        for S in itertools.combinations(range(n), k):
            idx = list(S)
            A = torch.zeros(k + 1, k + 1, dtype=torch.float64)
            A[:k, :k] = M64[idx][:, idx]
            A[:k, k] = 1
            A[k, :k] = 1
            rhs = torch.zeros(k + 1, dtype=torch.float64)
            rhs[k] = 1
            sol = torch.linalg.lstsq(A, rhs.unsqueeze(1), driver="gelsd").solution.squeeze(1)
            a = sol[:k]
            if (a < -1e-12).any() or abs(float(a.sum()) - 1) > 1e-9:
                continue
            alpha = torch.zeros(n, dtype=torch.float64)
            alpha[idx] = a.clamp_min(0)
            alpha = alpha / alpha.sum()
            val = float(alpha @ M64 @ alpha)
            if val < best_val - 1e-15:
                best, best_val = alpha, val
    return best.to(M.dtype).to(M.device)


def min_norm_frank_wolfe(
    M: torch.Tensor,
    *,
    iters: int = 1000,
    step: str = "line",
    tol: float = 0.0,
    return_path: bool = False,
):
    """Frank–Wolfe on ``min_{α ∈ simplex} αᵀMα`` starting at vertex ``e_1``.

    ``step="line"``: exact line search (the two-vector formula); ``step="1/(k+1)"``: the
    averaging iteration ``α ← (k α + e_τ)/(k+1)``. Returns α (and the path of α if asked).
    """
    _check_M(M)
    check_int("iters", iters, minimum=1)
    check_choice("step", step, ("line", "1/(k+1)"))
    check_positive("tol", tol, strict=False)
    M64 = M.detach().to(torch.float64).cpu()
    n = M.shape[0]
    alpha = torch.zeros(n, dtype=torch.float64)
    alpha[0] = 1
    path = [alpha.clone()]
    for k in range(1, iters + 1):
        Ma = M64 @ alpha
        tau = int(torch.argmin(Ma))
        if step == "line":
            aa, ab, bb = float(alpha @ Ma), float(Ma[tau]), float(M64[tau, tau])
            gam = _line_gamma(aa, ab, bb)
        else:
            gam = 1.0 / (k + 1)
        e = torch.zeros(n, dtype=torch.float64)
        e[tau] = 1
        new = (1 - gam) * alpha + gam * e
        moved = float((new - alpha).abs().max())
        alpha = new
        path.append(alpha.clone())
        if step == "line" and moved <= tol:
            break
    out = alpha.to(M.dtype).to(M.device)
    return (out, torch.stack(path)) if return_path else out


def min_norm_softmax_gd(M: torch.Tensor, *, iters: int = 2000, lr: float = 0.1) -> torch.Tensor:
    """``α = softmax(β)``, plain gradient descent on ``½ αᵀMα / tr(M)·n`` from ``β = 0``."""
    _check_M(M)
    check_int("iters", iters, minimum=1)
    check_positive("lr", lr)
    M64 = M.detach().to(torch.float64).cpu()
    scale = float(M64.diagonal().mean()) or 1.0
    beta = torch.zeros(M.shape[0], dtype=torch.float64, requires_grad=True)
    for _ in range(iters):
        a = torch.softmax(beta, 0)
        obj = 0.5 * a @ (M64 / scale) @ a
        (g,) = torch.autograd.grad(obj, beta)
        with torch.no_grad():
            beta -= lr * g * M.shape[0]
    return torch.softmax(beta.detach(), 0).to(M.dtype).to(M.device)


def mgda_direction(
    G: torch.Tensor, *, normalize: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Min-norm point ``u* = Σ α_i g_i`` of the convex hull of the rows of ``G``: ``(u*, α)``.

    ``normalize=True`` first rescales every ``g_i`` to unit length (MGDA on normalised gradients).
    Uses the exact solver for ``n <= 12``, Frank–Wolfe with line search otherwise.
    """
    _check_G(G)
    Gn = G / G.norm(dim=1, keepdim=True).clamp_min(1e-30) if normalize else G
    M = gram(Gn.to(torch.float64))
    alpha = min_norm_exact(M) if G.shape[0] <= 12 else min_norm_frank_wolfe(M, iters=5000)
    alpha = alpha.to(G.dtype).to(G.device)
    return alpha @ Gn, alpha


def pcgrad(G: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """PCGrad (Yu et al. 2020), a baseline: project each ``g_i`` off every conflicting ``g_j``
    (in a random order), then sum."""
    _check_G(G)
    n = G.shape[0]
    out = []
    for i in range(n):
        gi = G[i].clone()
        order = torch.randperm(n, generator=generator).tolist()
        for j in order:
            if j == i:
                continue
            d = gi @ G[j]
            if d < 0:
                gi = gi - d / (G[j] @ G[j]).clamp_min(1e-30) * G[j]
        out.append(gi)
    return torch.stack(out).sum(0)
