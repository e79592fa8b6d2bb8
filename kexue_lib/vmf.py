"""The von Mises-Fisher (vMF) distribution on the unit sphere: normaliser, KL, sampling.

Notation (book/probability/vmf-vae.ipynb and book/positions/univae.ipynb): ``d`` is the **ambient** dimension, the
sphere is ``S^(d-1) = {x in R^d : |x| = 1}``, the last axis of every tensor has size ``d``.
The density with respect to the surface measure is

    p(x | mu, kappa) = exp(kappa mu.x) / Z_d(kappa),
    Z_d(kappa) = (2 pi)^(d/2) I_(d/2-1)(kappa) / kappa^(d/2-1)
               = |S^(d-2)| int_0^pi exp(kappa cos phi) sin^(d-2) phi dphi.

The cosine ``w = mu.x = cos phi`` has the 1-D density ``∝ exp(kappa w) (1 - w^2)^((d-3)/2)``;
given ``w`` the rest of ``x`` is uniform on the sphere orthogonal to ``mu``. Sampling uses the
inverse CDF of the angle ``phi`` on a grid fitted to where the mass lies (so ``kappa = 1e4`` or
``d = 768`` stay exact), and builds ``x = cos(phi) mu + sin(phi) nu``. ``sin(phi)`` is used
instead of ``sqrt(1 - w^2)``, which loses every digit in float32 when ``w`` is near 1.

``kappa`` is a fixed, non-negative Python float (or a one-element tensor): it is **not**
differentiated (a learnable ``kappa`` needs implicit reparameterisation gradients). Constants
(``log Z``, ``A_d``, the KL) are float64 tensors on the requested device.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from kexue_lib._core import check_choice, check_positive, check_tensor
from kexue_lib.geometry import log_sphere_area

__all__ = [
    "VMFCosineSampler",
    "VMFReparam",
    "vmf_cosine_log_density",
    "vmf_kl_to_uniform",
    "vmf_log_normalizer",
    "vmf_log_prob",
    "vmf_mean_length",
    "vmf_rsample",
]

_METHODS = ("quad", "bessel")
_GRIDS = ("adaptive", "uniform")
_LOG_CUTOFF = 60.0  # the angle grid covers where log-density > max - 60 (e^-60 ~ 1e-26)


# --------------------------------------------------------------------------- validation


def _check_d(d) -> int:
    if isinstance(d, bool) or not isinstance(d, int):
        raise TypeError(f"d: expected an int (the ambient dimension), got {type(d).__name__}")
    if d < 2:
        raise ValueError(f"d: expected an ambient dimension >= 2, got {d}")
    return d


def _check_kappa(kappa) -> float:
    if isinstance(kappa, torch.Tensor) and kappa.requires_grad:
        raise ValueError("kappa: expected a fixed concentration, got a tensor that requires grad")
    check_positive("kappa", kappa, strict=False)
    return float(kappa.item() if isinstance(kappa, torch.Tensor) else kappa)


def _check_n_grid(n_grid) -> int:
    if isinstance(n_grid, bool) or not isinstance(n_grid, int):
        raise TypeError(f"n_grid: expected an int, got {type(n_grid).__name__}")
    if n_grid < 16:
        raise ValueError(f"n_grid: expected an int >= 16, got {n_grid}")
    return n_grid


# --------------------------------------------------------------------------- the angle grid


def _log_angle_density(phi: torch.Tensor, d: int, kappa: float) -> torch.Tensor:
    """Unnormalised log density of the angle: ``kappa cos(phi) + (d-2) log sin(phi)``."""
    s = torch.sin(phi).clamp_min(0.0)
    return kappa * torch.cos(phi) + torch.special.xlogy(torch.tensor(float(d - 2)), s)


def _angle_grid(d: int, kappa: float, n_grid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A uniform grid ``phi: (n_grid,)`` (float64, CPU) over the angles carrying the mass, and
    the log density on it. Two passes: a coarse grid on [0, pi] locates the region where the
    log density is within ``_LOG_CUTOFF`` of its maximum, then the fine grid covers it."""
    coarse = torch.linspace(0.0, math.pi, 4097, dtype=torch.float64)
    f = _log_angle_density(coarse, d, kappa)
    keep = (f > f.max() - _LOG_CUTOFF).nonzero().flatten()
    step = coarse[1] - coarse[0]
    lo = max(0.0, float(coarse[keep[0]] - step))
    hi = min(math.pi, float(coarse[keep[-1]] + step))
    phi = torch.linspace(lo, hi, n_grid, dtype=torch.float64)
    return phi, _log_angle_density(phi, d, kappa)


def _simpson_log_weights(n: int, h: float) -> torch.Tensor:
    """log of Simpson's weights ``h/3 * [1, 4, 2, 4, ..., 4, 1]`` for an odd ``n``."""
    w = torch.full((n,), 2.0, dtype=torch.float64)
    w[1::2] = 4.0
    w[0] = w[-1] = 1.0
    return torch.log(w * (h / 3))


# --------------------------------------------------------------------------- constants


def _log_z_quad(d: int, kappa: float, n_grid: int) -> tuple[float, float]:
    """(log Z_d(kappa), A_d(kappa)) by Simpson's rule in the angle (float64)."""
    phi, logf = _angle_grid(d, kappa, n_grid | 1)
    logw = logf + _simpson_log_weights(phi.numel(), float(phi[1] - phi[0]))
    log_int = torch.logsumexp(logw, 0)
    p = torch.exp(logw - log_int)
    # 1 - A = E[1 - cos phi] = E[2 sin^2(phi/2)]: accurate when A is close to 1
    one_minus_a = float((p * 2 * torch.sin(phi / 2) ** 2).sum())
    return float(log_sphere_area(d - 2) + log_int), 1.0 - one_minus_a


def _log_iv(nu: float, kappa: float) -> float:
    """``log I_nu(kappa)`` from ``scipy.special.ive`` (reference path; underflows for nu >> kappa)."""
    from scipy.special import ive

    v = float(ive(nu, kappa))
    return (math.log(v) if v > 0 else -math.inf) + kappa


def vmf_log_normalizer(
    d: int,
    kappa: float,
    *,
    method: str = "quad",
    n_grid: int = 4001,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``log Z_d(kappa)``, the log normaliser of vMF on ``S^(d-1)``: a 0-d float64 tensor.

    ``Z_d(kappa) = int_{S^(d-1)} exp(kappa mu.x) dS = (2 pi)^(d/2) I_(d/2-1)(kappa) / kappa^(d/2-1)``
    (``= |S^(d-1)|`` at ``kappa = 0``). ``method="quad"``: ``log|S^(d-2)|`` plus the log of
    ``int_0^pi exp(kappa cos phi) sin^(d-2) phi dphi`` by Simpson's rule (``n_grid`` points,
    made odd, where the integrand is not negligible), finite for any ``d`` and ``kappa``.
    ``method="bessel"``: the closed form with ``scipy.special.ive``, a CPU reference that
    underflows to ``-inf`` when the order ``d/2 - 1`` is much larger than ``kappa``.
    """
    d = _check_d(d)
    kappa = _check_kappa(kappa)
    if method not in _METHODS:
        raise ValueError(f"method: expected one of {list(_METHODS)}, got {method!r}")
    n_grid = _check_n_grid(n_grid)
    if kappa == 0.0:
        val = float(log_sphere_area(d - 1))
    elif method == "quad":
        val = _log_z_quad(d, kappa, n_grid)[0]
    else:
        nu = d / 2 - 1
        val = 0.5 * d * math.log(2 * math.pi) + _log_iv(nu, kappa) - nu * math.log(kappa)
    return torch.tensor(val, dtype=torch.float64, device=device)


def vmf_mean_length(
    d: int,
    kappa: float,
    *,
    method: str = "quad",
    n_grid: int = 4001,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``A_d(kappa) = E[mu.x] = I_(d/2)(kappa) / I_(d/2-1)(kappa)``, a 0-d float64 tensor in [0, 1).

    ``E[x] = A_d(kappa) mu``: the mean points along ``mu`` with a length that depends on
    ``(d, kappa)`` only. ``"quad"`` averages ``cos phi`` on the angle grid (via ``1 - E[1 - cos
    phi]``, accurate near 1); ``"bessel"`` is the scipy ratio (may give NaN when both underflow).
    """
    d = _check_d(d)
    kappa = _check_kappa(kappa)
    if method not in _METHODS:
        raise ValueError(f"method: expected one of {list(_METHODS)}, got {method!r}")
    n_grid = _check_n_grid(n_grid)
    if kappa == 0.0:
        val = 0.0
    elif method == "quad":
        val = _log_z_quad(d, kappa, n_grid)[1]
    else:
        from scipy.special import ive

        val = float(ive(d / 2, kappa) / ive(d / 2 - 1, kappa))
    return torch.tensor(val, dtype=torch.float64, device=device)


def vmf_kl_to_uniform(
    d: int, kappa: float, *, n_grid: int = 4001, device: torch.device | str | None = None
) -> torch.Tensor:
    """``KL(vMF(mu, kappa) || Uniform(S^(d-1)))`` in nats, a 0-d float64 tensor (>= 0).

    ``KL = kappa A_d(kappa) - log Z_d(kappa) + log|S^(d-1)|``: the same for every ``mu``, so a
    vMF-VAE with fixed ``kappa`` has a constant KL term (quadrature, finite for any d, kappa).
    """
    d = _check_d(d)
    kappa = _check_kappa(kappa)
    n_grid = _check_n_grid(n_grid)
    if kappa == 0.0:
        val = 0.0
    else:
        log_z, a = _log_z_quad(d, kappa, n_grid)
        val = max(kappa * a - log_z + float(log_sphere_area(d - 1)), 0.0)
    return torch.tensor(val, dtype=torch.float64, device=device)


def vmf_cosine_log_density(w: torch.Tensor, d: int, kappa: float) -> torch.Tensor:
    """Log density of the cosine ``w = mu.x`` under vMF: ``(...) -> (...)``, same dtype/device.

    ``log p(w) = kappa w + (d-3)/2 log(1 - w^2) + log|S^(d-2)| - log Z_d(kappa)`` on (-1, 1)
    (``-inf`` outside). Computed in float64.
    """
    check_tensor("w", w, floating=True)
    d = _check_d(d)
    kappa = _check_kappa(kappa)
    log_c = float(log_sphere_area(d - 2) - vmf_log_normalizer(d, kappa))
    x = w.to(torch.float64)
    inside = (x > -1) & (x < 1)
    xc = x.clamp(-1.0, 1.0)
    one_m = ((1 - xc) * (1 + xc)).clamp_min(0.0)
    out = kappa * xc + torch.special.xlogy(torch.tensor((d - 3) / 2, device=w.device), one_m)
    out = torch.where(inside, out + log_c, torch.full_like(out, -math.inf))
    return out.to(w.dtype)


def vmf_log_prob(x: torch.Tensor, mu: torch.Tensor, kappa: float) -> torch.Tensor:
    """Log density of ``vMF(mu, kappa)`` on ``S^(d-1)`` w.r.t. the surface measure.

    ``x: (..., d)`` points on the unit sphere, ``mu: (..., d)`` mean directions (broadcast
    against ``x``; projected to the sphere first, like :func:`vmf_rsample`) -> ``(...)``:
    ``log p(x) = kappa mu.x - log Z_d(kappa)``. Written as ``-kappa |x - mu|^2 / 2 +
    (kappa - log Z)`` (equal on the sphere) so that float32 keeps its digits near ``x = mu``
    for large ``kappa``; ``kappa - log Z`` is float64. Differentiable in ``x`` and ``mu``;
    dtype is the promoted dtype of ``x`` and ``mu`` (float32 arithmetic below float32).
    """
    check_tensor("x", x, floating=True)
    _check_mu(mu)
    kappa = _check_kappa(kappa)
    if x.dim() < 1 or x.shape[-1] != mu.shape[-1]:
        raise ValueError(
            f"x: expected shape (..., {mu.shape[-1]}) to match mu, got {tuple(x.shape)}"
        )
    out_dtype = torch.promote_types(x.dtype, mu.dtype)
    work = torch.float64 if out_dtype == torch.float64 else torch.float32
    xw, mw = x.to(work), mu.to(work)
    norms = torch.linalg.vector_norm(xw.detach(), dim=-1)
    tol = max(1e-4, 10 * torch.finfo(x.dtype).eps)
    if not torch.isfinite(norms).all() or ((norms - 1).abs() > tol).any():
        raise ValueError(f"x: expected points on the unit sphere (|x| = 1 within {tol:g})")
    mw = mw / torch.linalg.vector_norm(mw, dim=-1, keepdim=True).clamp_min(torch.finfo(work).tiny)
    d = mu.shape[-1]
    offset = kappa - float(vmf_log_normalizer(d, kappa))  # kappa - log Z_d(kappa)
    half_chord2 = 0.5 * ((xw - mw) ** 2).sum(-1)  # = 1 - mu.x on the sphere
    return (offset - kappa * half_chord2).to(out_dtype)


# --------------------------------------------------------------------------- sampling


def _angle_table(d: int, kappa: float, n_grid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(phi, cdf)``, both ``(n_grid,)`` float64 on CPU: the CDF of the angle by the
    trapezoidal rule, normalised to end at exactly 1."""
    phi, logf = _angle_grid(d, kappa, n_grid)
    f = torch.exp(logf - logf.max())
    cdf = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum((f[1:] + f[:-1]) / 2, 0)])
    return phi, cdf / cdf[-1]


def _uniform_w_table(d: int, kappa: float, n_grid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The table of kexue.fm 8404: ``n_grid`` equally spaced cosines strictly inside (-1, 1),
    ``log p(w) = kappa w + (d-3)/2 log(1 - w^2)``, max subtracted, exponentiated, cumulatively
    summed and normalised. Returned as ``(phi = arccos w, cdf)`` so it plugs into the same
    inversion; it misses the mass near ``w = 1`` once ``(d-1)/(2 kappa)`` is below the step."""
    w = torch.linspace(-1.0, 1.0, n_grid + 2, dtype=torch.float64)[1:-1]
    logf = kappa * w + (d - 3) / 2 * torch.log((1 - w) * (1 + w))
    cdf = torch.cumsum(torch.exp(logf - logf.max()), 0)
    return torch.arccos(w), cdf / cdf[-1]


def _invert(phi: torch.Tensor, cdf: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """``Phi^{-1}(u)`` by ``searchsorted`` and linear interpolation on the table."""
    idx = torch.searchsorted(cdf, u).clamp(1, cdf.numel() - 1)
    c0, c1 = cdf[idx - 1], cdf[idx]
    t = ((u - c0) / (c1 - c0).clamp_min(torch.finfo(cdf.dtype).tiny)).clamp(0.0, 1.0)
    return torch.lerp(phi[idx - 1], phi[idx], t)


def _shape(sample_shape) -> tuple[int, ...]:
    shape = (sample_shape,) if isinstance(sample_shape, int) else tuple(sample_shape)
    if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in shape):
        raise ValueError(f"sample_shape: expected non-negative ints, got {sample_shape!r}")
    return shape


class VMFCosineSampler:
    """Inverse-CDF sampler of the vMF cosine ``w = mu.x`` (and of the angle ``phi = arccos w``).

    The table ``(phi, CDF(phi))`` of ``n_grid`` points is built once in float64 for the density
    ``∝ exp(kappa cos phi) sin^(d-2) phi`` on the sub-interval of ``[0, pi]`` where it is not
    negligible (a uniform grid in ``w`` would miss the mass within ``(d-1)/(2 kappa)`` of 1 for
    large ``kappa``). Each draw is one ``torch.rand``, a ``searchsorted`` and a ``lerp``: no
    rejection loop, so it runs on any device without host synchronisation.

    ``grid="uniform"`` builds the post's table instead: ``n_grid`` equally spaced cosines in
    (-1, 1) and a cumulative sum of the density (step ``2 / (n_grid + 1)``). It is exact only
    when the step is far below ``(d-1)/(2 kappa)``; it is kept to show that failure.
    """

    def __init__(
        self,
        d: int,
        kappa: float,
        *,
        n_grid: int = 2**16,
        grid: str = "adaptive",
        device: torch.device | str | None = None,
    ):
        self.d = _check_d(d)
        self.kappa = _check_kappa(kappa)
        self.n_grid = _check_n_grid(n_grid)
        self.grid = check_choice("grid", grid, _GRIDS)
        table = _angle_table if grid == "adaptive" else _uniform_w_table
        phi, cdf = table(self.d, self.kappa, self.n_grid)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.phi, self.cdf = phi.to(self.device), cdf.to(self.device)

    def __repr__(self) -> str:
        return (
            f"VMFCosineSampler(d={self.d}, kappa={self.kappa:g}, n_grid={self.n_grid}, "
            f"grid={self.grid!r})"
        )

    def sample_angle(self, sample_shape, *, generator: torch.Generator | None = None):
        """Angles ``phi: sample_shape`` (float64, on the sampler's device) with density
        ``∝ exp(kappa cos phi) sin^(d-2) phi``."""
        u = torch.rand(_shape(sample_shape), dtype=torch.float64, device=self.device,
                       generator=generator)  # fmt: skip
        return _invert(self.phi, self.cdf, u)

    def sample(self, sample_shape, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Cosines ``w: sample_shape`` (float64) with density ``∝ exp(kappa w)(1-w^2)^((d-3)/2)``."""
        return torch.cos(self.sample_angle(sample_shape, generator=generator))


def _rsample_from_angle(mu: torch.Tensor, phi: torch.Tensor, generator) -> torch.Tensor:
    """``z = cos(phi) mu_hat + sin(phi) nu`` with ``nu`` uniform on the sphere orthogonal to mu."""
    work = mu.dtype if mu.dtype in (torch.float32, torch.float64) else torch.float32
    m = mu.to(work)
    tiny = torch.finfo(work).tiny
    m = m / torch.linalg.vector_norm(m, dim=-1, keepdim=True).clamp_min(tiny)
    eps = torch.randn(m.shape, dtype=work, device=m.device, generator=generator)
    nu = eps - (eps * m).sum(-1, keepdim=True) * m
    nu = nu / torch.linalg.vector_norm(nu, dim=-1, keepdim=True).clamp_min(
        math.sqrt(torch.finfo(work).eps)
    )
    phi = phi.to(work).unsqueeze(-1)
    return (torch.cos(phi) * m + torch.sin(phi) * nu).to(mu.dtype)


def _check_mu(mu: torch.Tensor) -> None:
    check_tensor("mu", mu, floating=True)
    if mu.dim() < 1 or mu.shape[-1] < 2:
        raise ValueError(f"mu: expected shape (..., d) with d >= 2, got {tuple(mu.shape)}")
    if not torch.isfinite(mu.detach()).all():
        raise ValueError("mu: expected finite entries, got NaN or inf")


def vmf_rsample(
    mu: torch.Tensor,
    kappa: float,
    *,
    sampler: VMFCosineSampler | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One vMF draw per row: ``mu: (..., d) -> z: (..., d)``, differentiable in ``mu``.

    ``mu`` is projected to the sphere first (``mu / |mu|``). Then ``z = cos(phi) mu + sin(phi)
    nu`` with ``phi`` from the inverse-CDF table and ``nu = (e - (e.mu) mu) / |...|``,
    ``e ~ N(0, I_d)``. Gradients reach ``mu`` through both terms; ``kappa`` is fixed. ``sampler``
    (a :class:`VMFCosineSampler` for the same ``d`` and ``kappa``) avoids rebuilding the
    table; ``generator`` must live on ``mu``'s device. Output keeps ``mu``'s dtype and device.
    """
    _check_mu(mu)
    kappa = _check_kappa(kappa)
    d = mu.shape[-1]
    if sampler is None:
        sampler = VMFCosineSampler(d, kappa, device=mu.device)
    elif not isinstance(sampler, VMFCosineSampler):
        raise TypeError(f"sampler: expected a VMFCosineSampler, got {type(sampler).__name__}")
    elif sampler.d != d or sampler.kappa != kappa:
        raise ValueError(
            f"sampler: expected one built for d={d}, kappa={kappa:g}, got d={sampler.d}, "
            f"kappa={sampler.kappa:g}"
        )
    phi = _invert(
        sampler.phi.to(mu.device),
        sampler.cdf.to(mu.device),
        torch.rand(mu.shape[:-1], dtype=torch.float64, device=mu.device, generator=generator),
    )
    return _rsample_from_angle(mu, phi, generator)


class VMFReparam(nn.Module):
    """Reparameterised vMF layer ``mu: (..., d) -> z: (..., d)`` with a fixed ``kappa``.

    Holds the inverse-CDF table of :class:`VMFCosineSampler` as float64 buffers (``.to(device)``
    moves them, dtype casts of the module leave them float64) and draws ``z = cos(phi) mu_hat + sin(phi) nu`` like :func:`vmf_rsample`.
    ``.kl()`` is the constant ``KL(vMF || uniform)`` of :func:`vmf_kl_to_uniform`.
    """

    def __init__(self, d: int, kappa: float, *, n_grid: int = 2**16):
        super().__init__()
        self.d = _check_d(d)
        self.kappa = _check_kappa(kappa)
        self.n_grid = _check_n_grid(n_grid)
        phi, cdf = _angle_table(self.d, self.kappa, self.n_grid)
        self.register_buffer("phi", phi, persistent=False)
        self.register_buffer("cdf", cdf, persistent=False)

    def extra_repr(self) -> str:
        return f"d={self.d}, kappa={self.kappa:g}, n_grid={self.n_grid}"

    def _apply(self, fn, recurse=True):
        # .to(device) moves the table; .half() / .float() must not round it: keep float64
        phi, cdf = self.phi, self.cdf
        out = super()._apply(fn, recurse)
        self.phi = phi.to(self.phi.device)
        self.cdf = cdf.to(self.cdf.device)
        return out

    def forward(self, mu: torch.Tensor, *, generator: torch.Generator | None = None):
        _check_mu(mu)
        if mu.shape[-1] != self.d:
            raise ValueError(f"mu: expected last dim {self.d}, got shape {tuple(mu.shape)}")
        u = torch.rand(mu.shape[:-1], dtype=torch.float64, device=mu.device, generator=generator)
        f64 = torch.float64
        phi = _invert(self.phi.to(mu.device, f64), self.cdf.to(mu.device, f64), u)
        return _rsample_from_angle(mu, phi, generator)

    def kl(self) -> torch.Tensor:
        """The constant ``KL(vMF(mu, kappa) || Uniform(S^(d-1)))`` (0-d float64, nats)."""
        return vmf_kl_to_uniform(self.d, self.kappa, device=self.phi.device)
