"""Kernel dependence measures: Gram matrices, HSIC, CKA and independence tests.

Conventions (kexue.fm/archives/6910, chapter ``probability/hsic``):

- ``x: (n, dx)``, ``y: (n, dy)``; 1-D inputs are promoted to ``(n, 1)``.
- Gaussian kernel ``k(x, x') = exp(-|x - x'|^2 / (2 s^2))``; the median heuristic is
  ``s = sqrt(median_{i<j} |x_i - x_j|^2 / 2)`` (Gretton's reference code).
- ``estimator="biased"`` is the V-statistic ``tr(K H L H) / n^2`` with ``H = I - 11^T/n``;
  ``"unbiased"`` is the U-statistic of Song et al. (2012). Test statistics of
  :func:`hsic_gamma_test` are ``n * HSIC_b``.
- Centring is ``O(n^2)``: ``H`` is never formed and no ``n x n`` matrix product is taken.
- Reductions run in ``acc_dtype`` (float64 by default); results come back as 0-d tensors in
  the inputs' dtype, on their device.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from kexue_lib._core import (
    check_choice,
    check_int,
    check_positive,
    check_probability,
    check_tensor,
    work_dtype,
)
from kexue_lib.geometry import condensed_sq_dists, pairwise_sq_dists

__all__ = [
    "ESTIMATORS",
    "KERNELS",
    "GammaTest",
    "PermutationTest",
    "center_gram",
    "cka",
    "distance_gram",
    "gaussian_gram",
    "gram",
    "hsic",
    "hsic_from_grams",
    "hsic_gamma_test",
    "hsic_gaussian_population",
    "hsic_permutation_test",
    "linear_gram",
    "median_bandwidth",
]

KERNELS = ("gaussian", "linear", "distance")
ESTIMATORS = ("biased", "unbiased")


class PermutationTest(NamedTuple):
    """Result of :func:`hsic_permutation_test`."""

    statistic: torch.Tensor  # 0-d, the HSIC estimate of the observed pairing
    p_value: float  # (1 + #{null >= statistic}) / (1 + n_perm)
    null: torch.Tensor  # (n_perm,), the estimates under shuffled pairings


class GammaTest(NamedTuple):
    """Result of :func:`hsic_gamma_test` (Gretton et al. 2007)."""

    statistic: float  # n * HSIC_b
    threshold: float  # the (1 - alpha) quantile of the fitted gamma law
    p_value: float  # its upper tail at the statistic


# --------------------------------------------------------------------------- inputs


def _points(name: str, x: Any) -> torch.Tensor:
    """Validate a sample ``(n,)`` or ``(n, d)`` of floats; return it as ``(n, d)``."""
    check_tensor(name, x, floating=True)
    if x.dim() == 1:
        x = x[:, None]
    if x.dim() != 2:
        raise ValueError(f"{name}: expected a (n,) or (n, d) sample, got shape {tuple(x.shape)}")
    if x.shape[0] < 2 or x.shape[1] < 1:
        raise ValueError(
            f"{name}: expected at least 2 points of dimension >= 1, got {tuple(x.shape)}"
        )
    if not torch.isfinite(x).all():
        raise ValueError(f"{name}: expected finite values, got non-finite entries")
    return x


def _pair(x: Any, y: Any) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = _points("x", x), _points("y", y)
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"y: expected {x.shape[0]} rows like x, got {y.shape[0]}")
    if y.device != x.device:
        raise ValueError(f"y: expected a tensor on {x.device} like x, got {y.device}")
    return x, y


def _square(name: str, K: Any) -> torch.Tensor:
    check_tensor(name, K, floating=True)
    if K.dim() != 2 or K.shape[0] != K.shape[1]:
        raise ValueError(
            f"{name}: expected a square (n, n) Gram matrix, got shape {tuple(K.shape)}"
        )
    if K.shape[0] < 2:
        raise ValueError(f"{name}: expected n >= 2, got a {K.shape[0]} x {K.shape[0]} matrix")
    return K


def _bandwidth(name: str, s: Any, like: torch.Tensor) -> torch.Tensor:
    if isinstance(s, torch.Tensor):
        check_positive(name, s)  # scalar, finite, > 0
        return s.to(like.device, like.dtype).reshape(())
    check_positive(name, s)
    return torch.tensor(float(s), dtype=like.dtype, device=like.device)


# --------------------------------------------------------------------------- Gram matrices


def median_bandwidth(x: torch.Tensor) -> torch.Tensor:
    """Median heuristic ``s = sqrt(median_{i<j, d>0} |x_i - x_j|^2 / 2)`` -> 0-d tensor.

    ``x: (n,)`` or ``(n, d)``. Pairs of coincident points (``d = 0``) are skipped, as in
    Gretton's reference code; the median of an even count averages the two middle values
    (numpy's convention). Differentiable in ``x`` almost everywhere.
    """
    x = _points("x", x)
    wd = work_dtype(x.dtype)
    xw = x.to(wd)
    d2 = condensed_sq_dists(xw)  # differences: tied points give exact zeros
    d2 = d2[d2 > 0]
    if d2.numel() == 0:
        raise ValueError("x: expected at least two distinct points, got all points equal")
    v = torch.sort(d2).values
    k = v.numel()
    med = 0.5 * (v[(k - 1) // 2] + v[k // 2])
    return torch.sqrt(0.5 * med).to(x.dtype)


def gaussian_gram(x: torch.Tensor, bandwidth: float | torch.Tensor) -> torch.Tensor:
    """Gaussian Gram matrix ``K_ij = exp(-|x_i - x_j|^2 / (2 s^2))``: ``(n, d) -> (n, n)``."""
    x = _points("x", x)
    s = _bandwidth("bandwidth", bandwidth, x)
    return torch.exp(-pairwise_sq_dists(x) / (2 * s * s))


def linear_gram(x: torch.Tensor) -> torch.Tensor:
    """Linear Gram matrix ``K_ij = <x_i, x_j>``: ``(n, d) -> (n, n)``."""
    x = _points("x", x)
    return x @ x.T


def distance_gram(x: torch.Tensor) -> torch.Tensor:
    """Distance-induced Gram ``K_ij = (|x_i| + |x_j| - |x_i - x_j|) / 2``: ``(n, d) -> (n, n)``.

    With this kernel HSIC_b equals a quarter of the squared distance covariance (V-statistic),
    Sejdinovic et al. (2013). The square root has a zero-safe gradient on the diagonal.
    """
    x = _points("x", x)
    d2 = pairwise_sq_dists(x)
    pos = d2 > 0
    d = torch.where(
        pos, torch.sqrt(torch.where(pos, d2, torch.ones_like(d2))), torch.zeros_like(d2)
    )
    r = x.norm(dim=1)
    return 0.5 * (r[:, None] + r[None, :] - d)


def gram(
    x: torch.Tensor, kernel: str = "gaussian", bandwidth: float | torch.Tensor | None = None
) -> torch.Tensor:
    """The Gram matrix of ``kernel`` in :data:`KERNELS`; a Gaussian without ``bandwidth`` uses
    the median heuristic (detached: it is a data-chosen constant, not a parameter)."""
    return _gram(x, kernel, bandwidth)


def _gram(
    x: torch.Tensor,
    kernel: str,
    bandwidth: Any,
    *,
    names: tuple[str, str, str] = ("x", "kernel", "bandwidth"),
) -> torch.Tensor:
    xname, kname, bname = names
    check_choice(kname, kernel, KERNELS)
    x = _points(xname, x)
    if kernel == "gaussian":
        if bandwidth is None:
            return gaussian_gram(x, median_bandwidth(x.detach()))
        s = _bandwidth(bname, bandwidth, x)
        return torch.exp(-pairwise_sq_dists(x) / (2 * s * s))
    if bandwidth is not None:
        raise ValueError(f"{bname}: expected None for the {kernel!r} kernel, got {bandwidth!r}")
    return linear_gram(x) if kernel == "linear" else distance_gram(x)


def _grams(x, y, kernel_x, kernel_y, bandwidth_x, bandwidth_y) -> tuple[torch.Tensor, torch.Tensor]:
    K = _gram(x, kernel_x, bandwidth_x, names=("x", "kernel_x", "bandwidth_x"))
    L = _gram(y, kernel_y, bandwidth_y, names=("y", "kernel_y", "bandwidth_y"))
    return K, L


def center_gram(K: torch.Tensor) -> torch.Tensor:
    """``H K H`` with ``H = I - 11^T/n`` in ``O(n^2)``: ``K - rowmean - colmean + grandmean``."""
    K = _square("K", K)
    return K - K.mean(0, keepdim=True) - K.mean(1, keepdim=True) + K.mean()


# --------------------------------------------------------------------------- HSIC


def _hsic_grams(K: torch.Tensor, L: torch.Tensor, estimator: str) -> torch.Tensor:
    """HSIC of Gram matrices already cast to the accumulation dtype (no validation)."""
    n = K.shape[0]
    if estimator == "biased":
        return (center_gram(K) * L).sum() / (n * n)
    Kt = K - torch.diag_embed(torch.diagonal(K))
    Lt = L - torch.diag_embed(torch.diagonal(L))
    t1 = (Kt * Lt.T).sum()  # tr(Kt Lt)
    t2 = Kt.sum() * Lt.sum() / ((n - 1) * (n - 2))
    t3 = 2.0 / (n - 2) * (Kt.sum(0) @ Lt.sum(1))  # 1^T Kt Lt 1
    return (t1 + t2 - t3) / (n * (n - 3))


def hsic_from_grams(
    K: torch.Tensor,
    L: torch.Tensor,
    *,
    estimator: str = "biased",
    acc_dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """HSIC from Gram matrices ``K, L: (n, n)`` -> 0-d tensor (``K``'s dtype and device).

    ``biased``: ``sum((HKH) * L) / n^2 = tr(KHLH)/n^2`` (eq. ``hsic-biased``).
    ``unbiased``: with zero-diagonal ``Kt, Lt`` (needs ``n >= 4``),
    ``[tr(Kt Lt) + 1'Kt1 1'Lt1/((n-1)(n-2)) - 2/(n-2) 1'Kt Lt 1] / (n(n-3))``.
    """
    K, L = _square("K", K), _square("L", L)
    if L.shape != K.shape:
        raise ValueError(f"L: expected shape {tuple(K.shape)} like K, got {tuple(L.shape)}")
    check_choice("estimator", estimator, ESTIMATORS)
    if estimator == "unbiased" and K.shape[0] < 4:
        raise ValueError(f"K: the unbiased estimator needs n >= 4, got n = {K.shape[0]}")
    out = _hsic_grams(K.to(acc_dtype), L.to(acc_dtype), estimator)
    return out.to(K.dtype)


def hsic(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    kernel_x: str = "gaussian",
    kernel_y: str = "gaussian",
    bandwidth_x: float | torch.Tensor | None = None,
    bandwidth_y: float | torch.Tensor | None = None,
    estimator: str = "biased",
    acc_dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """HSIC of a paired sample ``x: (n, dx)``, ``y: (n, dy)`` -> 0-d tensor.

    Gaussian kernels default to the median-heuristic bandwidth of each variable separately.
    Differentiable in ``x``, ``y`` and tensor bandwidths.
    """
    x, y = _pair(x, y)
    check_choice("estimator", estimator, ESTIMATORS)
    K, L = _grams(x, y, kernel_x, kernel_y, bandwidth_x, bandwidth_y)
    return hsic_from_grams(K, L, estimator=estimator, acc_dtype=acc_dtype).to(x.dtype)


def cka(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    kernel: str = "linear",
    bandwidth_x: float | torch.Tensor | None = None,
    bandwidth_y: float | torch.Tensor | None = None,
    acc_dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Centred kernel alignment ``HSIC_b(K, L) / sqrt(HSIC_b(K, K) HSIC_b(L, L))`` in [0, 1]."""
    x, y = _pair(x, y)
    check_choice("kernel", kernel, KERNELS)
    K, L = _grams(x, y, kernel, kernel, bandwidth_x, bandwidth_y)
    K, L = K.to(acc_dtype), L.to(acc_dtype)
    Kc, Lc = center_gram(K), center_gram(L)
    kk, ll = (Kc * Kc).sum(), (Lc * Lc).sum()
    if kk <= 0 or ll <= 0:
        name = "x" if kk <= 0 else "y"
        raise ValueError(f"{name}: expected a non-constant sample (its centred Gram matrix is 0)")
    return ((Kc * Lc).sum() / torch.sqrt(kk * ll)).to(x.dtype)


# --------------------------------------------------------------------------- tests


def hsic_permutation_test(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    n_perm: int = 200,
    generator: torch.Generator | None = None,
    kernel_x: str = "gaussian",
    kernel_y: str = "gaussian",
    bandwidth_x: float | torch.Tensor | None = None,
    bandwidth_y: float | torch.Tensor | None = None,
    estimator: str = "biased",
    max_elements: int = 1 << 24,
) -> PermutationTest:
    """Permutation test of independence: shuffle the pairing of ``y``, recompute HSIC.

    ``K`` is centred once; each permutation gathers ``L[pi][:, pi]`` (batched, at most
    ``max_elements`` entries per batch), so ``B`` permutations cost ``O(B n^2)``. Permutations
    are drawn on the generator's device from ``generator``. Returns ``(statistic, p_value,
    null)`` with ``p = (1 + #{null >= statistic}) / (1 + n_perm)``, a valid p-value.
    """
    x, y = _pair(x, y)
    check_int("n_perm", n_perm)
    check_choice("estimator", estimator, ESTIMATORS)
    check_int("max_elements", max_elements)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator: expected a torch.Generator, got {type(generator).__name__}")
    n = x.shape[0]
    if estimator == "unbiased" and n < 4:
        raise ValueError(f"x: the unbiased estimator needs n >= 4, got n = {n}")
    with torch.no_grad():
        K, L = _grams(x, y, kernel_x, kernel_y, bandwidth_x, bandwidth_y)
        K, L = K.to(torch.float64), L.to(torch.float64)
        stat = _hsic_grams(K, L, estimator)
        if estimator == "biased":
            A = center_gram(K)
        else:
            A = K - torch.diag_embed(torch.diagonal(K))
            L = L - torch.diag_embed(torch.diagonal(L))
            a_col, const = A.sum(0), A.sum() * L.sum() / ((n - 1) * (n - 2))
        gdev = generator.device if generator is not None else torch.device("cpu")
        perms = torch.rand(n_perm, n, generator=generator, device=gdev).argsort(1).to(x.device)
        chunk = max(1, max_elements // (n * n))
        null = []
        for s in range(0, n_perm, chunk):
            p = perms[s : s + chunk]
            Lp = L[p[:, :, None], p[:, None, :]]  # (b, n, n)
            if estimator == "biased":
                null.append((A * Lp).sum((-1, -2)) / (n * n))
            else:
                t1 = (A * Lp.transpose(-1, -2)).sum((-1, -2))
                t3 = 2.0 / (n - 2) * (Lp.sum(-1) @ a_col)
                null.append((t1 + const - t3) / (n * (n - 3)))
        null = torch.cat(null)
        p_value = (1 + int((null >= stat).sum())) / (1 + n_perm)
    return PermutationTest(stat.to(x.dtype), p_value, null.to(x.dtype))


def hsic_gamma_test(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    alpha: float = 0.05,
    kernel_x: str = "gaussian",
    kernel_y: str = "gaussian",
    bandwidth_x: float | torch.Tensor | None = None,
    bandwidth_y: float | torch.Tensor | None = None,
) -> GammaTest:
    """Gamma approximation to the null law of ``n * HSIC_b`` (Gretton et al. 2007).

    Mean ``(mean diag K - mu_x)(mean diag L - mu_y) / n`` with ``mu`` the off-diagonal means
    (``(1 + mu_x mu_y - mu_x - mu_y)/n`` for a Gaussian kernel); variance
    ``72 (n-4)(n-5) / (n(n-1)(n-2)(n-3)) * mean_{i != j} ((HKH)_ij (HLH)_ij / 6)^2``.
    The fitted law is gamma with shape ``mean^2/var`` and scale ``n var/mean``. Needs n >= 6.
    """
    from scipy.stats import gamma

    x, y = _pair(x, y)
    alpha = check_probability("alpha", alpha)
    n = x.shape[0]
    if n < 6:
        raise ValueError(f"x: the gamma approximation needs n >= 6 samples, got {n}")
    with torch.no_grad():
        K, L = _grams(x, y, kernel_x, kernel_y, bandwidth_x, bandwidth_y)
        K, L = K.to(torch.float64), L.to(torch.float64)
        Kc, Lc = center_gram(K), center_gram(L)
        stat = float((Kc * Lc).sum()) / n
        B = (Kc * Lc / 6) ** 2
        var = float(B.sum() - torch.diagonal(B).sum()) / n / (n - 1)
        var *= 72 * (n - 4) * (n - 5) / n / (n - 1) / (n - 2) / (n - 3)
        off = n * (n - 1)
        mu_x = float(K.sum() - torch.diagonal(K).sum()) / off
        mu_y = float(L.sum() - torch.diagonal(L).sum()) / off
        mean = (
            (float(torch.diagonal(K).mean()) - mu_x) * (float(torch.diagonal(L).mean()) - mu_y) / n
        )
    if not (mean > 0 and var > 0):
        raise ValueError("x: degenerate sample (null mean or variance of the statistic is 0)")
    shape, scale = mean * mean / var, var * n / mean
    return GammaTest(
        stat,
        float(gamma.ppf(1 - alpha, shape, scale=scale)),
        float(gamma.sf(stat, shape, scale=scale)),
    )


# --------------------------------------------------------------------------- population oracle


def hsic_gaussian_population(
    rho: float, bandwidth: float = 1.0, *, bandwidth_y: float | None = None
) -> float:
    """Population HSIC of a standard bivariate normal with correlation ``rho``.

    Gaussian kernels of bandwidths ``s_x = bandwidth``, ``s_y = bandwidth_y`` (default the
    same); with ``D = diag(1/s_x^2, 1/s_y^2)`` and ``E exp(-z'Dz/2) = det(I + D S)^{-1/2}``
    for ``z ~ N(0, S)``::

        HSIC = det(I + 2 D S_rho)^{-1/2} + [(1 + 2/s_x^2)(1 + 2/s_y^2)]^{-1/2}
               - 2 det(I + D [[2, rho], [rho, 2]])^{-1/2}.
    """
    if isinstance(rho, bool) or not isinstance(rho, (int, float)):
        raise TypeError(f"rho: expected a number, got {type(rho).__name__}")
    if not -1.0 <= rho <= 1.0:
        raise ValueError(f"rho: expected a correlation in [-1, 1], got {rho!r}")
    r = float(rho)
    check_positive("bandwidth", bandwidth)
    sy = bandwidth if bandwidth_y is None else check_positive("bandwidth_y", bandwidth_y)
    a, b = 1.0 / float(bandwidth) ** 2, 1.0 / float(sy) ** 2

    def inv_sqrt_det(p: float, q: float, pq_minus_c2: float) -> float:
        # det(I + D [[p, c], [c, q]]) = 1 + a p + b q + a b (pq - c^2), every term >= 0
        return (1 + a * p + b * q + a * b * pq_minus_c2) ** -0.5

    joint = inv_sqrt_det(2.0, 2.0, 4.0 * (1 - r) * (1 + r))  # 2 S_rho: c = 2 rho
    product = ((1 + 2 * a) * (1 + 2 * b)) ** -0.5
    cross = inv_sqrt_det(2.0, 2.0, 4.0 - r * r)
    return joint + product - 2 * cross
