"""Per-sample Jacobians, tangent kernels and the path-kernel form of (S)GD (kexue.fm/archives/8009).

Under gradient flow on ``L(theta) = loss(f_theta(x_1..N), y)`` the output at any input moves as

    d f(x)/dt = sum_i alpha_i K_theta(x, x_i),  K_theta(x, x') = J(x) J(x')^T,  alpha_i = -dL/df_i,

so after training ``f_T(x) = f_0(x) + sum_i int alpha_i K dt``: a kernel machine whose kernel is
the tangent kernel integrated along the path. :func:`train_with_kernel_trace` runs plain
(S)GD and accumulates that sum step by step, so the reconstruction can be compared with the
trained model. Models must be stateless (no BatchNorm, no dropout): ``f`` must be a function of
the parameters and the input only. Everything uses ``torch.func`` on a parameter dict.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from kexue_lib._core import check_int, check_positive, check_tensor

__all__ = [
    "model_params",
    "output_loss_grad",
    "per_sample_jacobian",
    "tangent_kernel",
    "train_with_kernel_trace",
]

# Gauss-Legendre nodes and weights on [0, 1] for the segment-averaged (exact discrete) update
_GAUSS = {
    1: ((0.5,), (1.0,)),
    2: ((0.5 - 0.5 / math.sqrt(3), 0.5 + 0.5 / math.sqrt(3)), (0.5, 0.5)),
    3: (
        (0.5 - 0.5 * math.sqrt(0.6), 0.5, 0.5 + 0.5 * math.sqrt(0.6)),
        (5 / 18, 8 / 18, 5 / 18),
    ),
}


def _check_model(model) -> None:
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")


def model_params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Detached copies of the model's parameters, by name (the dict ``torch.func`` calls take)."""
    _check_model(model)
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    if not params:
        raise ValueError("model: expected a module with parameters, got none")
    return params


def _check_params(model, params) -> None:
    if not isinstance(params, dict) or not params:
        raise TypeError(
            f"params: expected a non-empty dict of tensors, got {type(params).__name__}"
        )
    names = {k for k, _ in model.named_parameters()}
    unknown = set(params) - names
    if unknown:
        raise ValueError(f"params: expected names of the model's parameters, got {sorted(unknown)}")


def _outputs(model, params, X: torch.Tensor) -> torch.Tensor:
    """Model outputs flattened per sample: (B, D)."""
    out = torch.func.functional_call(model, params, (X,))
    return out.reshape(X.shape[0], -1)


def per_sample_jacobian(
    model: torch.nn.Module, params: dict[str, torch.Tensor], X: torch.Tensor
) -> torch.Tensor:
    """``J[b] = d f(x_b) / d theta``: X: (B, ...) -> (B, D_out, P), parameters flattened in dict order.

    Computed with ``torch.func.vmap(jacrev(...))`` over single samples, so it is a true
    per-sample Jacobian (no cross-sample mixing, the model must be stateless).
    """
    _check_model(model)
    _check_params(model, params)
    check_tensor("X", X, floating=True)
    if X.dim() < 1 or X.shape[0] < 1:
        raise ValueError(f"X: expected a batch (B, ...) with B >= 1, got shape {tuple(X.shape)}")

    def f_single(p, x):
        return torch.func.functional_call(model, p, (x.unsqueeze(0),)).reshape(-1)

    jac = torch.func.vmap(torch.func.jacrev(f_single), in_dims=(None, 0))(params, X)
    B = X.shape[0]
    D = next(iter(jac.values())).shape[1]
    return torch.cat([jac[k].reshape(B, D, -1) for k in params], dim=-1)


def tangent_kernel(
    model: torch.nn.Module,
    params: dict[str, torch.Tensor],
    X1: torch.Tensor,
    X2: torch.Tensor | None = None,
) -> torch.Tensor:
    """``K(x, x') = J(x) J(x')^T`` (eq. sgd-dfdt): (B1, B2, D, D), squeezed to (B1, B2) when D = 1.

    ``X2=None`` means ``X2 = X1`` (the Gram matrix on one set, symmetric PSD).
    """
    J1 = per_sample_jacobian(model, params, X1)
    J2 = J1 if X2 is None else per_sample_jacobian(model, params, X2)
    K = torch.einsum("adp,bep->abde", J1, J2)
    return K[..., 0, 0] if K.shape[-1] == 1 else K


def output_loss_grad(
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    y: torch.Tensor,
    f: torch.Tensor,
) -> torch.Tensor:
    """``dL/df`` for ``L = loss_fn(f, y)`` (a scalar), same shape as ``f``.

    The kernel-machine coefficients are ``alpha = -output_loss_grad(loss_fn, y, f)`` (for
    ``L = sum_i (f_i - y_i)^2 / 2`` they are the residuals ``y - f``; a mean loss divides them
    by the batch size).
    """
    if not callable(loss_fn):
        raise TypeError(f"loss_fn: expected a callable, got {type(loss_fn).__name__}")
    check_tensor("f", f, floating=True)
    f = f.detach().requires_grad_(True)
    with torch.enable_grad():
        L = loss_fn(f, y)
        if not isinstance(L, torch.Tensor) or L.numel() != 1:
            raise ValueError(f"loss_fn: expected a scalar tensor, got {type(L).__name__}")
        (g,) = torch.autograd.grad(L, f)
    return g


def train_with_kernel_trace(
    model: torch.nn.Module,
    X_train: torch.Tensor,
    y_train: torch.Tensor,
    X_query: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    lr: float,
    steps: int,
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
    segment_average: int = 0,
    X_kernel: torch.Tensor | None = None,
) -> dict:
    """Plain (S)GD from the model's current parameters, tracing the kernel-machine form of the result.

    Each step draws a batch (all ``N`` samples, or ``batch_size`` without replacement from
    ``generator``), computes ``alpha = -dL/df`` on it (``L = loss_fn(f_batch, y_batch)``) and moves
    ``theta <- theta + lr J_B^T alpha``. The query outputs are advanced by the same step's
    first-order change ``J_Q(theta_t) (Delta theta)`` (one ``torch.func.jvp``), i.e.
    ``lr sum_i alpha_i K_t(x, x_i)`` with the kernel at the parameters *before* the step
    (eq. sgd-discrete); ``segment_average = m in {1, 2, 3}`` instead averages ``J_Q`` over the
    segment with m Gauss-Legendre points, which makes the sum exact up to quadrature error.

    This is an explicit loop rather than :func:`kexue_lib.training.fit` because the trace needs
    each step's parameters and batch coefficients; it is plain SGD (no momentum, eq. sgd-flow).

    ``X_kernel`` (a few inputs) additionally records, per training sample ``i``, the path kernel
    ``sum_t lr K_t(x, x_i)`` and the contributions ``sum_t lr alpha_{i,t} K_t(x, x_i)`` (explicit
    Jacobians every step; costly, keep it small).

    Returns a dict of detached tensors: ``f0, fT, recon`` (Q, D) for ``X_query`` (``recon = f0 +
    accumulated sum``), ``losses`` (steps,), ``alpha_sum`` (N, D) ``= sum_t lr alpha_{i,t}`` (what a
    kernel machine with a frozen kernel would use: ``f0 + K_0(x, X) alpha_sum``), ``params`` (the final parameters; the model itself is
    not modified) and, with ``X_kernel``: ``kernel_f0, kernel_fT, kernel_recon`` (Qk, D),
    ``path_kernel`` (Qk, N[, D, D]), ``contributions`` (Qk, N, D), ``alpha_abs_max`` (N, D)
    ``= max_t |alpha_{i,t}|`` and, for D = 1, ``alpha_x``
    (Qk, N) = contributions / path kernel (NaN where the path kernel is 0).
    """
    _check_model(model)
    check_tensor("X_train", X_train, floating=True)
    check_tensor("y_train", y_train)
    check_tensor("X_query", X_query, floating=True)
    if not callable(loss_fn):
        raise TypeError(f"loss_fn: expected a callable, got {type(loss_fn).__name__}")
    N = X_train.shape[0] if X_train.dim() else 0
    if N < 1:
        raise ValueError(
            f"X_train: expected a batch (N, ...) with N >= 1, got shape {tuple(X_train.shape)}"
        )
    if y_train.shape[:1] != (N,):
        raise ValueError(
            f"y_train: expected {N} rows like X_train, got shape {tuple(y_train.shape)}"
        )
    check_positive("lr", lr)
    check_int("steps", steps)
    if batch_size is None:
        batch_size = N
    check_int("batch_size", batch_size)
    if batch_size > N:
        raise ValueError(f"batch_size: expected at most N = {N}, got {batch_size}")
    if batch_size < N and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator: expected a torch.Generator for mini-batches, got {type(generator).__name__}"
        )
    check_int("segment_average", segment_average, minimum=0)
    if segment_average > 3:
        raise ValueError(f"segment_average: expected 0, 1, 2 or 3, got {segment_average}")
    params = model_params(model)
    dtype = next(iter(params.values())).dtype
    for name, t in (("X_train", X_train), ("X_query", X_query)):
        if t.dtype != dtype:
            raise ValueError(f"{name}: expected dtype {dtype} like the model, got {t.dtype}")
    if X_kernel is not None:
        check_tensor("X_kernel", X_kernel, floating=True)
        if X_kernel.dtype != dtype:
            raise ValueError(
                f"X_kernel: expected dtype {dtype} like the model, got {X_kernel.dtype}"
            )

    def fQ(p):
        return _outputs(model, p, X_query)

    f0 = fQ(params).detach()
    recon = f0.clone()
    traced = X_kernel is not None
    if traced:
        kernel_f0 = _outputs(model, params, X_kernel).detach()
        D = kernel_f0.shape[1]
        path = torch.zeros(X_kernel.shape[0], N, D, D, dtype=dtype, device=X_kernel.device)
        contrib = torch.zeros(X_kernel.shape[0], N, D, dtype=dtype, device=X_kernel.device)
        alpha_abs_max = torch.zeros(N, D, dtype=dtype, device=X_train.device)
    losses = torch.empty(steps, dtype=dtype)
    alpha_sum = torch.zeros(N, f0.shape[1], dtype=dtype, device=X_train.device)
    nodes = _GAUSS.get(segment_average, ((0.0,), (1.0,)))
    for t in range(steps):
        if batch_size == N:
            idx = None
            XB, yB = X_train, y_train
        else:
            idx = torch.randperm(N, generator=generator, device=generator.device)[:batch_size]
            idx = idx.to(X_train.device)
            XB, yB = X_train[idx], y_train[idx]
        out, vjp_fn = torch.func.vjp(
            lambda p, XB=XB: torch.func.functional_call(model, p, (XB,)), params
        )
        with torch.enable_grad():
            fo = out.detach().requires_grad_(True)
            L = loss_fn(fo, yB)
            if not isinstance(L, torch.Tensor) or L.numel() != 1:
                raise ValueError(f"loss_fn: expected a scalar tensor, got {type(L).__name__}")
            (g_f,) = torch.autograd.grad(L, fo)
        losses[t] = L.detach()
        (grads,) = vjp_fn(g_f)
        a_batch = -g_f.reshape(g_f.shape[0], -1)
        if idx is None:
            alpha_sum += lr * a_batch
        else:
            alpha_sum.index_add_(0, idx, lr * a_batch)
        delta = {k: -lr * grads[k] for k in params}
        inc = torch.zeros_like(recon)
        for s, w in zip(*nodes):
            at = params if s == 0.0 else {k: params[k] + s * delta[k] for k in params}
            inc = inc + w * torch.func.jvp(fQ, (at,), (delta,))[1]
        recon = recon + inc.detach()
        if traced:
            JK = per_sample_jacobian(model, params, X_kernel)
            JN = per_sample_jacobian(model, params, X_train)
            Kt = torch.einsum("qdp,nep->qnde", JK, JN)
            alpha = torch.zeros(N, D, dtype=dtype, device=X_train.device)
            if idx is None:
                alpha = a_batch
            else:
                alpha[idx] = a_batch
            alpha_abs_max = torch.maximum(alpha_abs_max, alpha.abs())
            path += lr * Kt
            contrib += lr * torch.einsum("qnde,ne->qnd", Kt, alpha)
        params = {k: (params[k] + delta[k]).detach() for k in params}
    result = {
        "f0": f0,
        "fT": fQ(params).detach(),
        "recon": recon,
        "losses": losses,
        "params": params,
        "alpha_sum": alpha_sum,
    }
    if traced:
        result["kernel_f0"] = kernel_f0
        result["kernel_fT"] = _outputs(model, params, X_kernel).detach()
        result["kernel_recon"] = kernel_f0 + contrib.sum(1)
        result["contributions"] = contrib
        result["alpha_abs_max"] = alpha_abs_max
        if D == 1:
            pk = path[..., 0, 0]
            result["path_kernel"] = pk
            c = contrib[..., 0]
            result["alpha_x"] = torch.where(pk != 0, c / torch.where(pk != 0, pk, 1), math.nan)
        else:
            result["path_kernel"] = path
    return result
