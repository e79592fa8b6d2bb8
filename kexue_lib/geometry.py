"""Distances, cosines and other facts of Euclidean geometry shared by many chapters."""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from kexue_lib._core import check_positive, check_tensor, work_dtype

__all__ = [
    "LAPLACE_COEF",
    "LAPLACE_CONST",
    "LAPLACE_CONST_POST",
    "angle_log_density",
    "condensed_sq_dists",
    "cosine_matrix",
    "entropy_min_dim",
    "log_sphere_area",
    "pairwise_sq_dists",
    "project_to_sphere",
    "sample_sphere",
    "skipgram_entropy_offset",
    "skipgram_entropy_offset_laplace",
]


def _check_points(name: str, x: torch.Tensor) -> torch.Tensor:
    check_tensor(name, x, floating=True)
    if x.dim() != 2:
        raise ValueError(f"{name}: expected a (N, d) matrix of points, got shape {tuple(x.shape)}")
    return x


def pairwise_sq_dists(x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """Squared Euclidean distances ``D[i, j] = |x_i - y_j|^2``, clamped at 0.

    ``x: (N, d)``, ``y: (M, d)`` (default ``x``) -> ``(N, M)``. Uses the Gram expansion
    (fast, one matmul); for near-duplicate points where cancellation matters use
    :func:`condensed_sq_dists`.
    """
    _check_points("x", x)
    y = x if y is None else _check_points("y", y)
    if y.shape[1] != x.shape[1]:
        raise ValueError(f"y: expected {x.shape[1]} columns like x, got {y.shape[1]}")
    xx = (x * x).sum(-1)[:, None]
    yy = (y * y).sum(-1)[None, :]
    d = (xx + yy - 2.0 * (x @ y.T)).clamp_min(0.0)
    if y is x:
        d.fill_diagonal_(0.0)
    return d


def condensed_sq_dists(x: torch.Tensor, *, max_elements: int = 1 << 24) -> torch.Tensor:
    """Squared distances of all pairs i < j in ``torch.pdist`` order, from differences.

    ``x: (N, d)`` -> ``(N(N-1)/2,)``. Differences rather than the Gram expansion, so
    near-duplicate points keep their tiny distances (this is what distortion ratios need).
    Pairs are processed in chunks of at most ``max_elements`` difference entries.
    """
    _check_points("x", x)
    n, d = x.shape
    i, j = torch.triu_indices(n, n, offset=1, device=x.device)
    step = max(1, max_elements // max(d, 1))
    out = [
        ((x[i[s : s + step]] - x[j[s : s + step]]) ** 2).sum(-1) for s in range(0, i.numel(), step)
    ]
    return torch.cat(out) if out else x.new_zeros(0)


def cosine_matrix(
    x: torch.Tensor, y: torch.Tensor | None = None, *, eps: float = 1e-12
) -> torch.Tensor:
    """Cosines ``C[i, j] = <x_i, y_j> / (|x_i| |y_j|)``: ``(N, d), (M, d) -> (N, M)``."""
    _check_points("x", x)
    y = x if y is None else _check_points("y", y)
    if y.shape[1] != x.shape[1]:
        raise ValueError(f"y: expected {x.shape[1]} columns like x, got {y.shape[1]}")
    xn = x / x.norm(dim=-1, keepdim=True).clamp_min(eps)
    yn = y / y.norm(dim=-1, keepdim=True).clamp_min(eps)
    return xn @ yn.T


# --------------------------------------------------------------------------- spheres


def _check_real(name: str, x: Any, *, minimum: float, strict: bool = False) -> float:
    """A finite real number >= ``minimum`` (> when ``strict``) as float, else a named error."""
    if isinstance(x, torch.Tensor):
        if x.numel() != 1:
            raise ValueError(f"{name}: expected a scalar, got a tensor of shape {tuple(x.shape)}")
        x = x.item()
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise TypeError(f"{name}: expected a real number, got {type(x).__name__}")
    v = float(x)
    ok = math.isfinite(v) and (v > minimum if strict else v >= minimum)
    if not ok:
        rel = ">" if strict else ">="
        raise ValueError(f"{name}: expected a finite number {rel} {minimum:g}, got {x!r}")
    return v


def log_sphere_area(n: Any) -> Any:
    """Log area of the unit sphere ``S^n`` in ``R^(n+1)``: ``log(2 pi^((n+1)/2) / Gamma((n+1)/2))``.

    ``n`` is the sphere's own dimension (``S^1`` is the circle, area ``2 pi``; ``S^2`` has
    ``4 pi``). A number gives a float; a floating tensor ``(...)`` gives a tensor ``(...)`` of
    the same dtype and device. Computed with ``lgamma``, so huge ``n`` does not overflow.

    Used in book/geometry/dimension-formula.ipynb, eq. (dimension-formula-angle).
    """
    if isinstance(n, torch.Tensor):
        check_tensor("n", n, floating=True)
        if not torch.isfinite(n).all() or (n < 0).any():
            raise ValueError(
                "n: expected finite sphere dimensions >= 0, got a negative or non-finite entry"
            )
        w = n.to(work_dtype(n.dtype))
        h = (w + 1) / 2
        out = math.log(2.0) + h * math.log(math.pi) - torch.lgamma(h)
        return out.to(n.dtype)
    v = _check_real("n", n, minimum=0.0)
    h = (v + 1) / 2
    return math.log(2.0) + h * math.log(math.pi) - math.lgamma(h)


def sample_sphere(
    sample_shape: int | Sequence[int],
    d: int,
    *,
    radius: float = 1.0,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Uniform points on the sphere of ``radius`` in ``R^d``: ``(*sample_shape, d)``.

    A standard Gaussian vector divided by its norm is uniform on the sphere (rotation
    invariance), ``x = radius * g / |g|``. ``dtype`` defaults to torch's default dtype, ``device``
    to the generator's device (CPU without one). Half types are drawn in float32 and cast.

    Used in book/geometry/dimension-formula.ipynb (the sphere the argument assumes).
    """
    if isinstance(d, bool) or not isinstance(d, int):
        raise TypeError(f"d: expected an int, got {type(d).__name__}")
    if d < 1:
        raise ValueError(f"d: expected an ambient dimension >= 1, got {d}")
    check_positive("radius", radius)
    shape = (sample_shape,) if isinstance(sample_shape, int) else tuple(sample_shape)
    if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in shape):
        raise ValueError(f"sample_shape: expected non-negative ints, got {sample_shape!r}")
    dtype = torch.get_default_dtype() if dtype is None else dtype
    if not dtype.is_floating_point:
        raise TypeError(f"dtype: expected a floating dtype, got {dtype}")
    if device is None:
        device = generator.device if generator is not None else torch.device("cpu")
    work = work_dtype(dtype)
    g = torch.randn(*shape, d, dtype=work, device=device, generator=generator)
    # a Gaussian vector is exactly 0 with probability 0; clamp anyway so nothing divides by 0
    x = g * (float(radius) / g.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(work).tiny))
    return x.to(dtype)


def project_to_sphere(x: torch.Tensor, radius: float | torch.Tensor = 1.0) -> torch.Tensor:
    """Radial projection ``radius * x / |x|`` of each row onto the sphere: ``(..., d) -> (..., d)``.

    Norms are taken in at least float32 (fp16/bf16 inputs keep their dtype on output).
    ``radius`` is a positive number or a tensor broadcasting against ``(..., 1)``. Zero rows
    stay zero (there is no direction to keep), never NaN. Differentiable.
    """
    check_tensor("x", x, floating=True)
    if x.dim() < 1:
        raise ValueError(f"x: expected at least one dimension (..., d), got shape {tuple(x.shape)}")
    if isinstance(radius, torch.Tensor):
        if not torch.isfinite(radius).all() or (radius <= 0).any():
            raise ValueError(
                "radius: expected finite positive radii, got a non-positive or non-finite entry"
            )
    else:
        check_positive("radius", radius)
    work = work_dtype(x.dtype)
    w = x.to(work)
    nrm = torch.linalg.vector_norm(w, dim=-1, keepdim=True)
    out = w * (radius / nrm.clamp_min(torch.finfo(work).tiny))
    return out.to(x.dtype)


def angle_log_density(theta: Any, d: float) -> Any:
    """Log density of the angle between two independent uniform directions in ``R^d``.

    ``p_d(theta) = Gamma(d/2) / (Gamma((d-1)/2) sqrt(pi)) * sin(theta)^(d-2)`` on ``[0, pi]``
    (``-inf`` outside). ``theta``: tensor ``(...)`` (same dtype/device back, computed in at
    least float32), array-like (numpy float64 back) or a float (float back). ``d > 1`` may be real. The constant
    uses ``lgamma`` (``scipy.special.gammaln``), so ``d`` in the thousands is fine.

    Derived in book/geometry/dimension-formula.ipynb, eq. (dimension-formula-angle).
    """
    dd = _check_real("d", d, minimum=1.0, strict=True)
    log_c = math.lgamma(dd / 2) - math.lgamma((dd - 1) / 2) - 0.5 * math.log(math.pi)
    if isinstance(theta, torch.Tensor):
        check_tensor("theta", theta, floating=True)
        t = theta.to(work_dtype(theta.dtype))
        inside = (t >= 0) & (t <= math.pi)
        s = torch.sin(t.clamp(0.0, math.pi)).clamp_min(0.0)
        out = log_c + torch.special.xlogy(
            torch.as_tensor(dd - 2, dtype=t.dtype, device=t.device), s
        )
        out = torch.where(inside, out, torch.full_like(out, -math.inf))
        return out.to(theta.dtype)
    import numpy as np
    from scipy.special import xlogy

    t = np.asarray(theta, dtype=np.float64)
    inside = (t >= 0) & (t <= np.pi)
    s = np.clip(np.sin(np.clip(t, 0.0, np.pi)), 0.0, None)
    out = np.where(inside, log_c + xlogy(dd - 2, s), -np.inf)
    return float(out) if out.ndim == 0 and not isinstance(theta, np.ndarray) else out


# ------------------------------------------------------------------- the entropy dimension rule

#: ``h_n / n -> -log(golden ratio) / 2``: the leading Laplace coefficient of ``h_n``.
LAPLACE_COEF = -0.5 * math.log((1 + math.sqrt(5)) / 2)
#: The post's constant ``log(sqrt(pi / (1.11803 n)) / sqrt(2 pi / n)) = -log(5) / 4``.
LAPLACE_CONST_POST = -0.25 * math.log(5.0)
_C_STAR = (math.sqrt(5) - 1) / 2  # cos(theta*)
#: The correct O(1) term: sin^-2 weight, Gaussian width and the O(1/n) shift of E[cos theta].
LAPLACE_CONST = (
    -math.log(_C_STAR) - 0.25 * math.log(5.0) - 1.5 * _C_STAR / math.sqrt(5.0) + (2 + _C_STAR) / 10
)


def _check_n(n: Any) -> float:
    return _check_real("n", n, minimum=2.0)


def _log_norm_sin_power(n: float) -> float:
    """``log int_0^pi sin^(n-2) = log(sqrt(pi) Gamma((n-1)/2) / Gamma(n/2))``."""
    return 0.5 * math.log(math.pi) + math.lgamma((n - 1) / 2) - math.lgamma(n / 2)


def _tilted_mode(n: float) -> float:
    """Maximiser of ``(n-2) log sin t + n cos t``: ``n c^2 + (n-2) c - n = 0``, ``c = cos t``."""
    c = (-(n - 2) + math.sqrt((n - 2) ** 2 + 4 * n * n)) / (2 * n)
    return math.acos(min(1.0, c))


@functools.lru_cache(maxsize=4096)
def _h_quad(n: float) -> float:
    from scipy import integrate
    from scipy.special import xlogy

    t0 = _tilted_mode(n)

    def w(t: float) -> float:
        return float(xlogy(n - 2, math.sin(t))) + n * math.cos(t)

    w0 = w(t0)
    # the shifted integrand exp(w - w0) ~ exp(-n sqrt5 (t-t0)^2 / 2): beyond 40 widths, < e^-800
    half = 40.0 / math.sqrt(max(n, 1.0) * math.sqrt(5.0))
    lo, hi = max(0.0, t0 - half), min(math.pi, t0 + half)
    pts = [t0] if lo < t0 < hi else None
    c0 = math.cos(t0)
    opts = dict(epsabs=0.0, epsrel=1e-11, limit=500, points=pts)
    with warnings.catch_warnings():
        # roundoff warnings at the 1e-11 level for huge n; the tests hold it to mpmath
        warnings.simplefilter("ignore", integrate.IntegrationWarning)
        i1 = integrate.quad(lambda t: math.exp(w(t) - w0), lo, hi, **opts)[0]
        # E[cos t] - cos t0 is O(1/n): integrate the difference so n * (...) keeps its digits
        i2 = integrate.quad(lambda t: (math.cos(t) - c0) * math.exp(w(t) - w0), lo, hi, **opts)[0]
    return w0 + math.log(i1) - _log_norm_sin_power(n) - n * c0 - n * i2 / i1


@functools.lru_cache(maxsize=256)
def _h_mpmath(n: float) -> float:
    import mpmath

    with mpmath.workdps(40):
        nn = mpmath.mpf(n)
        t0 = mpmath.mpf(_tilted_mode(n))

        def f(t):
            return mpmath.sin(t) ** (nn - 2) * mpmath.exp(nn * mpmath.cos(t))

        i1 = mpmath.quad(f, [0, t0, mpmath.pi])
        i2 = mpmath.quad(lambda t: f(t) * mpmath.cos(t), [0, t0, mpmath.pi])
        z = mpmath.sqrt(mpmath.pi) * mpmath.gamma((nn - 1) / 2) / mpmath.gamma(nn / 2)
        return float(mpmath.log(i1 / z) - nn * i2 / i1)


def skipgram_entropy_offset(n: float, *, method: str = "quad") -> float:
    """The post's ``h_n``: ``H ~ 2 log N + h_n`` for ``N`` words on the ``sqrt(n)``-sphere in R^n.

    ``h_n = log E[e^{n cos t}] - E[n cos t e^{n cos t}] / E[e^{n cos t}]``, ``t ~ p_n`` (the angle
    density of :func:`angle_log_density`); it is ``-KL`` of the tilted angle law from ``p_n``,
    so ``h_n <= 0``. ``n >= 2`` may be real. ``method="quad"``: scipy quadrature of the
    integrand shifted by its maximum (no overflow for any ``n``); ``"mpmath"``: 40-digit
    tanh-sinh quadrature of the raw integrand (slower, the reference). Returns a float.

    Derived in book/geometry/dimension-formula.ipynb, eqs. (dimension-formula-hn) and
    (dimension-formula-hn-integrals).
    """
    v = _check_n(n)
    if method == "quad":
        return _h_quad(v)
    if method == "mpmath":
        return _h_mpmath(v)
    raise ValueError(f"method: expected 'quad' or 'mpmath', got {method!r}")


def skipgram_entropy_offset_laplace(n: Any, *, constant: str = "exact") -> Any:
    """Laplace approximation ``h_n ~ LAPLACE_COEF * n + b`` (number, array or tensor ``(...)``).

    ``LAPLACE_COEF = -log(golden)/2 = -0.2406059``. ``constant="exact"``: the correct O(1) term
    ``b = LAPLACE_CONST = -0.07394`` (error O(1/n)); ``"post"``: the post's ``b = -log(5)/4``
    (it drops the ``sin^-2`` weight and the O(1/n) shift of the tilted mean, which ``n``
    multiplies into O(1)), off by a constant 0.33; ``"none"``: the leading term only.

    Derived in book/geometry/dimension-formula.ipynb, eqs. (dimension-formula-laplace) and
    (dimension-formula-laplace-post).
    """
    try:
        b = {"exact": LAPLACE_CONST, "post": LAPLACE_CONST_POST, "none": 0.0}[constant]
    except KeyError:
        msg = f"constant: expected 'exact', 'post' or 'none', got {constant!r}"
        raise ValueError(msg) from None
    if isinstance(n, torch.Tensor):
        check_tensor("n", n, floating=True)
        return LAPLACE_COEF * n + b
    if isinstance(n, (list, tuple)) or type(n).__module__ == "numpy":
        import numpy as np

        arr = np.asarray(n, dtype=np.float64)
        if not np.isfinite(arr).all() or (arr < 0).any():
            raise ValueError(
                "n: expected finite dimensions >= 0, got a negative or non-finite entry"
            )
        return LAPLACE_COEF * arr + b
    return LAPLACE_COEF * _check_real("n", n, minimum=0.0) + b


def entropy_min_dim(N: float, *, rule: str = "exact") -> float:
    """Smallest embedding dimension with ``2 log N + h_n <= 0`` for a vocabulary of ``N >= 2``.

    ``rule="8.33"``: the post's ``8.33 ln N`` (``2 / 0.24``); ``"exact"``: the real root of
    ``2 ln N + h_n = 0`` (``scipy.optimize.brentq``, ``h_n`` by quadrature); ``"laplace"``:
    the root with the Laplace form, ``(2 ln N + LAPLACE_CONST) / 0.2406059``. Natural log.

    Derived in book/geometry/dimension-formula.ipynb, eq. (dimension-formula-rule).
    """
    v = _check_real("N", N, minimum=2.0)
    two_log_n = 2.0 * math.log(v)
    if rule == "8.33":
        return 8.33 * math.log(v)
    if rule == "laplace":
        return (two_log_n + LAPLACE_CONST) / -LAPLACE_COEF
    if rule != "exact":
        raise ValueError(f"rule: expected '8.33', 'exact' or 'laplace', got {rule!r}")
    from scipy.optimize import brentq

    def f(x: float) -> float:
        return two_log_n + _h_quad(float(x))

    lo = 2.0
    hi = max(4.0, 1.5 * (two_log_n + LAPLACE_CONST) / -LAPLACE_COEF + 8.0)
    while f(hi) > 0:  # h_n is decreasing; the Laplace guess with margin nearly always brackets
        lo, hi = hi, 2 * hi
    return float(brentq(f, lo, hi, xtol=1e-10, rtol=1e-12))


# --- margin-softmax ---
# Metric axioms for cosine-based "distances" (book/embeddings/margin-softmax.ipynb).


def _cosine_pair(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    check_tensor("x", x, floating=True)
    check_tensor("y", y, floating=True)
    if x.dim() == 0 or y.dim() == 0 or x.shape[-1] != y.shape[-1]:
        raise ValueError(
            f"y: expected the same last dimension as x, got x {tuple(x.shape)} and y {tuple(y.shape)}"
        )
    return torch.nn.functional.normalize(x, dim=-1), torch.nn.functional.normalize(y, dim=-1)


def cosine_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``1 - cos(x, y)`` along the last dim (broadcasting): ``(..., d), (..., d) -> (...)``.

    Non-negative and symmetric, but *not* a metric: for unit vectors at 0°, 60° and 120°
    the outer pair is at ``3/2`` while the two legs sum to ``1/2 + 1/2 = 1``.
    """
    u, v = _cosine_pair(x, y)
    return 1 - (u * v).sum(-1)


def chord_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``||x/|x| - y/|y|||`` = ``sqrt(2 - 2 cos(x, y))``: a metric (Euclidean on the sphere).

    ``(..., d), (..., d) -> (...)``; computed from the difference of the normalised vectors,
    so it is exact near 0 where ``sqrt(2 - 2cos)`` loses every digit.
    """
    u, v = _cosine_pair(x, y)
    return torch.linalg.vector_norm(u - v, dim=-1)


def sqrt_cosine_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``sqrt(1 - cos(x, y))`` = chord distance / sqrt(2): a metric, unlike ``1 - cos``."""
    return chord_distance(x, y) / math.sqrt(2.0)


def triangle_violations(dist_fn, points: torch.Tensor, *, tol: float = 0.0) -> torch.Tensor:
    """All ordered triples ``(i, j, k)`` with ``d(p_i, p_k) > d(p_i, p_j) + d(p_j, p_k) + tol``.

    ``dist_fn(x, y)`` broadcasts over leading dims (e.g. :func:`cosine_distance`);
    ``points: (N, d)``. Brute force over the ``N^3`` triples of the ``(N, N)`` distance
    matrix (keep ``N`` to a few hundred). Returns ``(V, 3)`` long indices, pairwise distinct.
    """
    if not callable(dist_fn):
        raise TypeError(f"dist_fn: expected a callable, got {type(dist_fn).__name__}")
    _check_points("points", points)
    check_positive("tol", tol, strict=False)
    D = dist_fn(points[:, None, :], points[None, :, :])
    n = points.shape[0]
    if D.shape != (n, n):
        raise ValueError(f"dist_fn: expected an ({n}, {n}) distance matrix, got {tuple(D.shape)}")
    bad = D[:, None, :] > D[:, :, None] + D[None, :, :] + tol  # [i, j, k]
    idx = torch.arange(n, device=points.device)
    distinct = (idx[:, None, None] != idx[None, :, None]) & (
        idx[None, :, None] != idx[None, None, :]
    )
    distinct &= idx[:, None, None] != idx[None, None, :]
    return torch.nonzero(bad & distinct)


__all__ += [
    "chord_distance",
    "cosine_distance",
    "sqrt_cosine_distance",
    "triangle_violations",
]
