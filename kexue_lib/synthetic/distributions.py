"""Distributions with an exact density, for checking estimators against the truth.

:class:`LinearGaussianLVM` is the one latent-variable model whose marginal likelihood is a
closed form (kexue.fm/archives/8791): ``z ~ N(0, I_k)``, ``x | z ~ N(W z + b, sigma^2 I_D)``, so

    p(x)     = N(x; b, W W^T + sigma^2 I_D)
    p(z | x) = N(z; S W^T (x - b) / sigma^2, S),   S = (I_k + W^T W / sigma^2)^(-1).

Every importance-sampling estimate of ``log p(x)`` (prior proposal, an encoder, the exact
posterior) can therefore be compared with the true value.
"""

from __future__ import annotations

import math

import torch

from kexue_lib._core import check_int, check_positive, check_tensor

__all__ = ["LinearGaussianLVM"]

_LOG_2PI = math.log(2 * math.pi)


class LinearGaussianLVM:
    """``z ~ N(0, I_k)``, ``x | z ~ N(W z + b, sigma^2 I_D)``: a latent-variable model with exact
    ``log p(x)``, ``p(z | x)`` and prior-sampling effective sample size.

    ``W: (D, k)`` floating, ``b: (D,)`` (default zeros), ``sigma > 0``. Methods take ``x: (..., D)``
    and ``z: (..., k)`` (broadcast against each other) and compute in ``x``'s dtype and device.
    """

    def __init__(self, W: torch.Tensor, b: torch.Tensor | None = None, sigma: float = 1.0):
        check_tensor("W", W, floating=True)
        if W.dim() != 2:
            raise ValueError(f"W: expected shape (D, k), got {tuple(W.shape)}")
        if not torch.isfinite(W).all():
            raise ValueError("W: expected finite entries, got inf or nan")
        if b is None:
            b = torch.zeros(W.shape[0], dtype=W.dtype, device=W.device)
        check_tensor("b", b, floating=True)
        if tuple(b.shape) != (W.shape[0],):
            raise ValueError(f"b: expected shape ({W.shape[0]},), got {tuple(b.shape)}")
        check_positive("sigma", sigma)
        self.W, self.b, self.sigma = W, b, float(sigma)

    @property
    def D(self) -> int:
        """Dimension of ``x``."""
        return self.W.shape[0]

    @property
    def k(self) -> int:
        """Dimension of ``z``."""
        return self.W.shape[1]

    def __repr__(self) -> str:
        return f"LinearGaussianLVM(D={self.D}, k={self.k}, sigma={self.sigma:g})"

    # ------------------------------------------------------------------ checks and parameters

    def _params(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.W.to(like), self.b.to(like)

    def _check_x(self, x) -> torch.Tensor:
        check_tensor("x", x, floating=True)
        if x.dim() < 1 or x.shape[-1] != self.D:
            raise ValueError(f"x: expected shape (..., {self.D}), got {tuple(x.shape)}")
        return x

    def _check_z(self, z) -> torch.Tensor:
        check_tensor("z", z, floating=True)
        if z.dim() < 1 or z.shape[-1] != self.k:
            raise ValueError(f"z: expected shape (..., {self.k}), got {tuple(z.shape)}")
        return z

    # ------------------------------------------------------------------ densities

    def marginal_cov(self, *, dtype=None, device=None) -> torch.Tensor:
        """``W W^T + sigma^2 I_D``, ``(D, D)``: the covariance of ``x``."""
        W = self.W.to(dtype=dtype or self.W.dtype, device=device or self.W.device)
        eye = torch.eye(self.D, dtype=W.dtype, device=W.device)
        return W @ W.T + self.sigma**2 * eye

    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        """Exact ``log p(x) = log N(x; b, W W^T + sigma^2 I)``: ``(..., D) -> (...)``."""
        x = self._check_x(x)
        _, b = self._params(x)
        L = torch.linalg.cholesky(self.marginal_cov(dtype=x.dtype, device=x.device))
        r = x - b
        sol = torch.linalg.solve_triangular(L, r.reshape(-1, self.D).T, upper=False).T
        maha = (sol**2).sum(-1).reshape(r.shape[:-1])
        logdet = 2 * torch.log(torch.diagonal(L)).sum()
        return -0.5 * (maha + logdet + self.D * _LOG_2PI)

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """``log N(z; 0, I_k)``: ``(..., k) -> (...)``."""
        z = self._check_z(z)
        return -0.5 * (z**2).sum(-1) - 0.5 * self.k * _LOG_2PI

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``log p(x | z) = log N(x; W z + b, sigma^2 I)``; ``x: (..., D)``, ``z: (..., k)``."""
        x, z = self._check_x(x), self._check_z(z)
        W, b = self._params(x)
        r = x - (z.to(x) @ W.T + b)
        s = self.sigma
        return -0.5 * (r**2).sum(-1) / s**2 - self.D * (math.log(s) + 0.5 * _LOG_2PI)

    def log_joint(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``log p(x, z) = log p(x | z) + log p(z)``."""
        return self.log_likelihood(x, z) + self.log_prior(z.to(x))

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The exact posterior ``p(z | x)``: ``(mean (..., k), cov (k, k))``; the covariance
        ``(I + W^T W / sigma^2)^(-1)`` does not depend on ``x``."""
        x = self._check_x(x)
        W, b = self._params(x)
        prec = torch.eye(self.k, dtype=x.dtype, device=x.device) + W.T @ W / self.sigma**2
        cov = torch.cholesky_inverse(torch.linalg.cholesky(prec))
        cov = 0.5 * (cov + cov.T)
        mean = ((x - b) @ W) @ cov / self.sigma**2
        return mean, cov

    def log_posterior(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``log p(z | x)``: ``z: (..., k)``, ``x: (..., D)`` -> ``(...)``."""
        z = self._check_z(z)
        mean, cov = self.posterior(x)
        L = torch.linalg.cholesky(cov)
        r = z.to(mean) - mean
        sol = torch.linalg.solve_triangular(L, r.reshape(-1, self.k).T, upper=False).T
        maha = (sol**2).sum(-1).reshape(r.shape[:-1])
        return -0.5 * (maha + 2 * torch.log(torch.diagonal(L)).sum() + self.k * _LOG_2PI)

    def prior_ess_fraction(self, x: torch.Tensor) -> torch.Tensor:
        """``E[w]^2 / E[w^2]`` for ``w = p(x | z)``, ``z ~ p(z)`` (prior as the proposal), exactly.

        ``E[w] = p(x)`` and ``E[w^2] = (4 pi sigma^2)^(-D/2) N(x; b, W W^T + sigma^2/2 I)``, since
        ``N(x; m, s^2 I)^2 = (4 pi s^2)^(-D/2) N(x; m, s^2/2 I)``. ``M`` prior draws are worth
        about ``M`` times this many exact draws. ``(..., D) -> (...)``.
        """
        x = self._check_x(x)
        half = LinearGaussianLVM(self.W, self.b, self.sigma / math.sqrt(2))
        log_ew2 = -0.5 * self.D * math.log(4 * math.pi * self.sigma**2) + half.log_marginal(x)
        return torch.exp(2 * self.log_marginal(x) - log_ew2)

    # ------------------------------------------------------------------ sampling

    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        return_latent: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``n`` draws ``x: (n, D)`` (and ``z: (n, k)`` with ``return_latent``), in ``W``'s
        dtype and device."""
        check_int("n", n)
        opts = dict(dtype=self.W.dtype, device=self.W.device, generator=generator)
        z = torch.randn(n, self.k, **opts)
        x = z @ self.W.T + self.b + self.sigma * torch.randn(n, self.D, **opts)
        return (x, z) if return_latent else x
