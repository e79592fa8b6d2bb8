"""Whitening of embedding vectors: BERT-whitening, its β/γ/k generalisation, streaming moments.

Row vectors ``x: (N, d)``. With the mean ``μ`` and the covariance ``Σ = U Λ Uᵀ`` (``1/N``
convention, eigenvalues descending), ``x ↦ (x − μ) U Λ^{-1/2}`` has identity covariance
(BERT-whitening, kexue.fm/archives/8069); keeping the first ``k`` columns is PCA with scaling.
The generalisation of kexue.fm/archives/9079 centres at ``βμ`` (with ``Σ`` taken around that
centre) and scales by ``Λ^{-γ/2}``: ``β = γ = 0`` is a pure rotation and leaves every cosine
unchanged. ``np.cov`` and ``sklearn``'s PCA use ``1/(N − 1)``; that only rescales ``W`` by a
constant and changes no cosine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from kexue_lib._core import check_choice, check_int, check_tensor, work_dtype

__all__ = [
    "RunningMoments",
    "Whitening",
    "apply_whitening",
    "fit_whitening",
    "mahalanobis_cosine",
    "zca_matrix",
]


@dataclass(frozen=True)
class Whitening:
    """A fitted whitening: ``x ↦ (x − mu) @ W``.

    ``mu: (1, d)`` the centre used (``β`` times the mean), ``W: (d, k)``, ``eigvals: (d,)`` the
    eigenvalues of the covariance around ``mu`` (descending), ``eigvecs: (d, d)`` its
    eigenvectors as columns (each with its largest-magnitude entry positive).
    """

    mu: torch.Tensor
    W: torch.Tensor
    eigvals: torch.Tensor
    eigvecs: torch.Tensor

    @property
    def n_components(self) -> int:
        return self.W.shape[1]


def _check_rows(name: str, x: torch.Tensor) -> torch.Tensor:
    check_tensor(name, x, floating=True)
    if x.dim() != 2:
        raise ValueError(f"{name}: expected shape (N, d), got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name}: expected finite entries, got non-finite values")
    return x


def _check_real(name: str, v: object, *, lo: float = 0.0) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"{name}: expected a number, got {type(v).__name__}")
    if not (math.isfinite(v) and v >= lo):
        raise ValueError(f"{name}: expected a finite number >= {lo}, got {v!r}")
    return float(v)


def _fix_signs(u: torch.Tensor) -> torch.Tensor:
    """Flip each column so that its largest-magnitude entry is positive (a fixed convention)."""
    idx = u.abs().argmax(0)
    s = torch.sign(u[idx, torch.arange(u.shape[1], device=u.device)])
    s[s == 0] = 1
    return u * s


def fit_whitening(
    x: torch.Tensor,
    *,
    n_components: int | None = None,
    beta: float = 1.0,
    gamma: float = 1.0,
    eps: float = 0.0,
    method: str = "eigh",
) -> Whitening:
    """Fit ``W = U_k (Λ_k + eps)^{-γ/2}`` on rows ``x: (N, d)`` centred at ``β · mean(x)``.

    ``n_components``: columns kept (``k``, default ``d``); ``beta, gamma >= 0``; ``eps >= 0``
    is added to every eigenvalue (ridge shrinkage ``Σ + eps I``) before the power;
    ``method``: ``"eigh"`` (eigendecomposition of ``Σ``) or ``"svd"`` (SVD of the centred data,
    ``σ² / N = λ``). Computes in float64 for float64 input, float32 otherwise; the result has
    the dtype and device of ``x``. When ``gamma > 0`` every kept eigenvalue (plus ``eps``) must
    exceed ``d · λ_max`` times the dtype's machine epsilon, else ``ValueError`` (a singular
    covariance: keep fewer components, add ``eps`` or use ``gamma = 0``).
    """
    _check_rows("x", x)
    n, d = x.shape
    if n < 2:
        raise ValueError(f"x: expected at least 2 rows to estimate a covariance, got {n}")
    k = d if n_components is None else check_int("n_components", n_components)
    if k > d:
        raise ValueError(f"n_components: expected an int <= d = {d}, got {k}")
    beta = _check_real("beta", beta)
    gamma = _check_real("gamma", gamma)
    eps = _check_real("eps", eps)
    check_choice("method", method, ("eigh", "svd"))
    wd = work_dtype(x.dtype)
    xw = x.to(wd)
    mu = beta * xw.mean(0, keepdim=True)
    xc = xw - mu
    if method == "eigh":
        sigma = xc.T @ xc / n
        evals, evecs = torch.linalg.eigh((sigma + sigma.T) / 2)
        evals, evecs = evals.flip(0), evecs.flip(1)
    else:
        _, s, vh = torch.linalg.svd(xc / math.sqrt(n), full_matrices=n < d)
        evecs = vh.T
        evals = torch.zeros(d, dtype=wd, device=x.device)
        evals[: s.numel()] = s**2
    evals = evals.clamp_min(0)
    evecs = _fix_signs(evecs)
    kept = evals[:k] + eps
    if gamma > 0:
        tol = d * torch.finfo(wd).eps * max(float(evals[0]), eps, torch.finfo(wd).tiny)
        bad = int((kept <= tol).sum())
        if bad:
            raise ValueError(
                f"x: covariance is singular: {bad} of the {k} kept eigenvalues are <= {tol:.3g} "
                f"(N = {n}, d = {d}); use n_components <= {k - bad}, eps > 0 or gamma = 0"
            )
        scale = kept.pow(-gamma / 2)
    else:
        scale = torch.ones_like(kept)
    W = evecs[:, :k] * scale
    return Whitening(
        mu=mu.to(x.dtype), W=W.to(x.dtype), eigvals=evals.to(x.dtype), eigvecs=evecs.to(x.dtype)
    )


def apply_whitening(x: torch.Tensor, w: Whitening, *, normalize: bool = True) -> torch.Tensor:
    """``(x − mu) @ W`` for rows ``x: (N, d)`` -> ``(N, k)``; L2-normalised rows when ``normalize``.

    Normalise *after* the transform: cosines of whitened vectors are what BERT-whitening scores.
    """
    _check_rows("x", x)
    if not isinstance(w, Whitening):
        raise TypeError(f"w: expected a Whitening, got {type(w).__name__}")
    if x.shape[1] != w.W.shape[0]:
        raise ValueError(f"x: expected {w.W.shape[0]} columns like the fit, got {x.shape[1]}")
    wd = work_dtype(x.dtype)
    y = (x.to(wd) - w.mu.to(wd)) @ w.W.to(wd)
    if normalize:
        y = torch.nn.functional.normalize(y, dim=1)
    return y.to(x.dtype)


def zca_matrix(eigvecs: torch.Tensor, eigvals: torch.Tensor) -> torch.Tensor:
    """The symmetric (ZCA) whitening matrix ``U Λ^{-1/2} Uᵀ``: ``eigvecs: (d, d)``, ``eigvals: (d,)``.

    It equals ``U Λ^{-1/2}`` times the rotation ``Uᵀ``, so with all ``d`` dimensions it gives the
    same cosines as PCA whitening.
    """
    check_tensor("eigvecs", eigvecs, floating=True)
    check_tensor("eigvals", eigvals, floating=True)
    if eigvecs.dim() != 2 or eigvecs.shape[0] != eigvecs.shape[1]:
        raise ValueError(f"eigvecs: expected shape (d, d), got {tuple(eigvecs.shape)}")
    if eigvals.shape != (eigvecs.shape[0],):
        raise ValueError(
            f"eigvals: expected shape ({eigvecs.shape[0]},), got {tuple(eigvals.shape)}"
        )
    if not (eigvals > 0).all():
        raise ValueError(
            f"eigvals: expected positive eigenvalues, got min {float(eigvals.min()):.3g}"
        )
    return (eigvecs * eigvals.rsqrt()) @ eigvecs.T


def mahalanobis_cosine(
    x: torch.Tensor, y: torch.Tensor, mu: torch.Tensor, sigma_inv: torch.Tensor
) -> torch.Tensor:
    """Row-wise cosine in the Mahalanobis inner product ``(a − μ) Σ⁻¹ (b − μ)ᵀ``.

    ``x, y: (N, d)``, ``mu: (d,)`` or ``(1, d)``, ``sigma_inv: (d, d)`` -> ``(N,)``.
    """
    _check_rows("x", x)
    _check_rows("y", y)
    if y.shape != x.shape:
        raise ValueError(f"y: expected shape {tuple(x.shape)} like x, got {tuple(y.shape)}")
    d = x.shape[1]
    check_tensor("mu", mu, floating=True)
    if mu.numel() != d:
        raise ValueError(f"mu: expected {d} entries, got shape {tuple(mu.shape)}")
    check_tensor("sigma_inv", sigma_inv, floating=True)
    if sigma_inv.shape != (d, d):
        raise ValueError(f"sigma_inv: expected shape ({d}, {d}), got {tuple(sigma_inv.shape)}")
    a, b = x - mu.reshape(1, d), y - mu.reshape(1, d)
    ab = ((a @ sigma_inv) * b).sum(1)
    aa = ((a @ sigma_inv) * a).sum(1)
    bb = ((b @ sigma_inv) * b).sum(1)
    return ab / (aa * bb).sqrt()


class RunningMoments:
    """Mean and ``1/N`` covariance of rows seen in batches (Chan et al.'s pairwise merge).

    ``update(batch: (b, d))`` folds a batch in; ``merge(other)`` folds in another accumulator;
    ``.mean: (d,)``, ``.cov: (d, d)``, ``.count``. Keeps the sum of squared deviations, never
    ``E[xxᵀ] − μμᵀ``, so large offsets do not cancel catastrophically.
    """

    def __init__(
        self,
        d: int,
        *,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ) -> None:
        self.d = check_int("d", d)
        if not dtype.is_floating_point:
            raise TypeError(f"dtype: expected a floating dtype, got {dtype}")
        self.count = 0
        self._mean = torch.zeros(d, dtype=dtype, device=device)
        self._m2 = torch.zeros(d, d, dtype=dtype, device=device)

    def _fold(self, nb: int, mb: torch.Tensor, m2b: torch.Tensor) -> None:
        n = self.count + nb
        delta = mb - self._mean
        self._m2 = self._m2 + m2b + torch.outer(delta, delta) * (self.count * nb / n)
        self._mean = self._mean + delta * (nb / n)
        self.count = n

    def update(self, batch: torch.Tensor) -> RunningMoments:
        _check_rows("batch", batch)
        if batch.shape[1] != self.d:
            raise ValueError(f"batch: expected {self.d} columns, got {batch.shape[1]}")
        if batch.shape[0] == 0:
            return self
        b = batch.to(self._mean.dtype, copy=False).to(self._mean.device)
        mb = b.mean(0)
        c = b - mb
        self._fold(b.shape[0], mb, c.T @ c)
        return self

    def merge(self, other: RunningMoments) -> RunningMoments:
        if not isinstance(other, RunningMoments):
            raise TypeError(f"other: expected a RunningMoments, got {type(other).__name__}")
        if other.d != self.d:
            raise ValueError(f"other: expected d = {self.d}, got {other.d}")
        if other.count:
            self._fold(
                other.count,
                other._mean.to(self._mean),
                other._m2.to(self._m2),
            )
        return self

    @property
    def mean(self) -> torch.Tensor:
        return self._mean.clone()

    @property
    def cov(self) -> torch.Tensor:
        if self.count < 1:
            raise ValueError("count: expected at least 1 row before reading cov, got 0")
        return self._m2 / self.count
