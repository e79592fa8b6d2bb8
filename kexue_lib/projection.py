"""Random projections and the Johnson-Lindenstrauss bounds.

Every projection is a ``(d_out, d_in)`` matrix ``A`` applied as ``x @ A.T`` (the convention
of ``nn.Linear.weight`` and sklearn's ``components_``). For the Gaussian map, whose entries
are iid ``N(0, 1/d_out)``, and any fixed non-zero ``x``,

    d_out * |A x|^2 / |x|^2  ~  chi^2_{d_out}        (exactly),

so the per-pair failure probability of the JL lemma is a chi-square tail, independent of
the data; the Chernoff and union bounds are bounds on that tail.

Derived in book/geometry/jl-theory.ipynb (the lemma, eq. (jl-theory-jl), and its bounds);
used again in book/geometry/jl-applications.ipynb.
"""

from __future__ import annotations

import math

import torch

from kexue_lib._core import check_int, check_positive, check_probability, check_tensor, work_dtype
from kexue_lib.geometry import condensed_sq_dists

__all__ = [
    "distortion_ratios",
    "gaussian_projection",
    "inner_product_errors",
    "jl_chernoff_bound",
    "jl_eps_for_union",
    "jl_min_dim",
    "jl_pair_failure_prob",
    "jl_union_bound",
    "orthogonal_gaussian_matrix",
    "project",
    "rademacher_projection",
    "sparse_projection",
]


# --------------------------------------------------------------------------- helpers


def _check_dims(d_out, d_in) -> None:
    check_positive("d_out", d_out, integer=True)
    check_positive("d_in", d_in, integer=True)


def _target(dtype, device) -> tuple[torch.dtype, torch.device]:
    dtype = torch.get_default_dtype() if dtype is None else dtype
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype: expected a floating torch.dtype, got {dtype!r}")
    device = torch.device("cpu") if device is None else torch.device(device)
    return dtype, device


def _draw(kind: str, shape, generator, dtype, device) -> torch.Tensor:
    """``randn``/``rand`` on the generator's device, then moved to ``device``/``dtype``."""
    src = generator.device if generator is not None else device
    fn = torch.randn if kind == "randn" else torch.rand
    x = fn(shape, generator=generator, dtype=work_dtype(dtype), device=src)
    return x.to(device)


def _check_eps(eps) -> float:
    return check_probability("eps", eps)


# --------------------------------------------------------------------------- matrices


def gaussian_projection(
    d_out: int, d_in: int, *, dtype=None, device=None, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Gaussian JL matrix ``A: (d_out, d_in)`` with iid entries ``A_kj ~ N(0, 1/d_out)``.

    Variance ``1/d_out`` (standard deviation ``1/sqrt(d_out)``), so ``E|A x|^2 = |x|^2``.

    Derived in book/geometry/jl-theory.ipynb, eq. (jl-theory-jl).
    """
    _check_dims(d_out, d_in)
    dtype, device = _target(dtype, device)
    a = _draw("randn", (d_out, d_in), generator, dtype, device)
    return (a / math.sqrt(d_out)).to(dtype)


def rademacher_projection(
    d_out: int, d_in: int, *, dtype=None, device=None, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Rademacher JL matrix ``A: (d_out, d_in)`` with iid entries ``±1/sqrt(d_out)``.

    Compared with the Gaussian map in the JL distortion figure of book/geometry/jl-theory.ipynb.
    """
    _check_dims(d_out, d_in)
    dtype, device = _target(dtype, device)
    u = _draw("rand", (d_out, d_in), generator, dtype, device)
    signs = torch.where(u < 0.5, -1.0, 1.0).to(u.dtype)
    return (signs / math.sqrt(d_out)).to(dtype)


def sparse_projection(
    d_out: int,
    d_in: int,
    *,
    density: float | None = None,
    dtype=None,
    device=None,
    generator: torch.Generator | None = None,
    sparse: bool = False,
) -> torch.Tensor:
    """Achlioptas / Li sparse JL matrix ``A: (d_out, d_in)``.

    ``A_kj = ±sqrt(1 / (density * d_out))`` each with probability ``density / 2``, else 0
    (sklearn's ``SparseRandomProjection``). ``density=None`` means ``1/sqrt(d_in)`` (Li's
    "very sparse" choice, sklearn's ``"auto"``); ``density=1/3`` is Achlioptas. Entries have
    mean 0 and variance ``1/d_out``. ``sparse=True`` returns a coalesced sparse COO tensor.

    Compared with the Gaussian map in the JL distortion figure of book/geometry/jl-theory.ipynb.
    """
    _check_dims(d_out, d_in)
    if density is None:
        density = 1.0 / math.sqrt(d_in)
    else:
        density = check_probability("density", density, open_interval=False)
        if density == 0:
            raise ValueError(f"density: expected a number in (0, 1], got {density!r}")
    dtype, device = _target(dtype, device)
    u = _draw("rand", (d_out, d_in), generator, dtype, device)
    scale = math.sqrt(1.0 / (density * d_out))
    half = density / 2.0
    a = torch.zeros_like(u)
    a = torch.where(u < half, -scale, a)
    a = torch.where(u >= 1.0 - half, scale, a)
    a = a.to(dtype)
    return a.to_sparse().coalesce() if sparse else a


def orthogonal_gaussian_matrix(
    d_out: int,
    d_in: int,
    *,
    row_norms: str = "chi",
    dtype=None,
    device=None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Gaussian orthogonal random features ``W: (d_out, d_in)`` (Performer's ORF).

    Rows come in blocks of ``d_in`` mutually orthonormal directions (a Haar-random
    orthogonal matrix per block, from the sign-corrected QR of a Gaussian matrix); when
    ``d_out > d_in`` independent blocks are stacked and the last one truncated. Each row is
    then scaled: ``row_norms="chi"`` by the norm of an independent ``N(0, I_{d_in})`` vector
    (so every row is marginally ``N(0, I)``, as in an iid Gaussian matrix), ``"sqrt_d_in"``
    by ``sqrt(d_in)``. As a JL map use ``W / sqrt(d_out)``: with ``"sqrt_d_in"`` and
    ``d_out <= d_in`` that is ``sqrt(d_in/d_out) Q^T`` with orthonormal rows.

    Its JL use (orthonormal rows) is derived in book/geometry/jl-applications.ipynb, eq.
    (jl-applications-orth-var).
    """
    _check_dims(d_out, d_in)
    if row_norms not in ("chi", "sqrt_d_in"):
        raise ValueError(f"row_norms: expected 'chi' or 'sqrt_d_in', got {row_norms!r}")
    dtype, device = _target(dtype, device)
    qr_dtype = torch.float64
    n_blocks = -(-d_out // d_in)
    g = _draw("randn", (n_blocks, d_in, d_in), generator, qr_dtype, device).to(qr_dtype)
    q, r = torch.linalg.qr(g)
    # Haar measure: fix the sign ambiguity of QR so that diag(R) > 0.
    d = torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))
    d = torch.where(d == 0, torch.ones_like(d), d)
    q = q * d[:, None, :]
    rows = q.transpose(-2, -1).reshape(n_blocks * d_in, d_in)[:d_out]
    if row_norms == "chi":
        norms = _draw("randn", (d_out, d_in), generator, qr_dtype, device).to(qr_dtype)
        norms = torch.linalg.vector_norm(norms, dim=-1)
    else:
        norms = torch.full((d_out,), math.sqrt(d_in), dtype=qr_dtype, device=device)
    return (rows * norms[:, None]).to(dtype)


def project(X: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """Apply a projection: ``X: (..., d_in)``, ``A: (d_out, d_in)`` (dense or sparse) -> ``X @ A.T``.

    Derived in book/geometry/jl-theory.ipynb, eq. (jl-theory-jl).
    """
    check_tensor("X", X, floating=True)
    check_tensor("A", A, floating=True)
    if A.dim() != 2:
        raise ValueError(f"A: expected a (d_out, d_in) matrix, got shape {tuple(A.shape)}")
    if X.dim() < 1 or X.shape[-1] != A.shape[1]:
        raise ValueError(
            f"A: expected d_in = {X.shape[-1] if X.dim() else None} columns "
            f"(the last dim of X), got shape {tuple(A.shape)}"
        )
    if A.dtype != X.dtype:
        raise TypeError(f"A: expected dtype {X.dtype} like X, got {A.dtype}")
    if A.layout == torch.sparse_coo:
        flat = X.reshape(-1, X.shape[-1])
        out = torch.sparse.mm(A, flat.T).T
        return out.reshape(*X.shape[:-1], A.shape[0])
    return X @ A.T


# --------------------------------------------------------------------------- distortions


def _check_pair(X, Y) -> None:
    for name, t in (("X", X), ("Y", Y)):
        check_tensor(name, t, floating=True)
        if t.dim() != 2:
            raise ValueError(
                f"{name}: expected a (N, d) matrix of points, got shape {tuple(t.shape)}"
            )
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"Y: expected {X.shape[0]} rows like X, got {Y.shape[0]}")
    if X.shape[0] < 2:
        raise ValueError(f"X: expected at least 2 points, got {X.shape[0]}")


def _out_dtype(*ts: torch.Tensor) -> torch.dtype:
    return work_dtype(torch.promote_types(ts[0].dtype, ts[1].dtype))


def _sq_dists64(x: torch.Tensor, *, rel_tol: float = 1e-6) -> torch.Tensor:
    """Condensed squared distances in float64: Gram expansion, differences for near pairs.

    The Gram form ``|a|^2 + |b|^2 - 2 a.b`` has absolute error ~1e-16 (|a|^2 + |b|^2) in
    float64; every pair whose distance is below ``rel_tol (|a|^2 + |b|^2)`` is recomputed
    from differences, so the relative error stays below ~1e-9 everywhere while most pairs
    cost one matmul. Small inputs go straight to :func:`kexue_lib.geometry.condensed_sq_dists`
    (differences only).
    """
    x = x.to(torch.float64)
    n, dim = x.shape
    if n * (n - 1) // 2 * dim <= 1 << 22:  # small: differences throughout
        return condensed_sq_dists(x)
    sq = (x * x).sum(-1)
    i, j = torch.triu_indices(n, n, offset=1, device=x.device)
    d = (sq[i] + sq[j] - 2.0 * (x @ x.T)[i, j]).clamp_min(0.0)
    near = d <= rel_tol * (sq[i] + sq[j])
    idx = near.nonzero().squeeze(-1)
    if idx.numel():
        diff = x[i[idx]] - x[j[idx]]
        d[idx] = (diff * diff).sum(-1)
    return d


def distortion_ratios(
    X: torch.Tensor, Y: torch.Tensor, *, squared: bool = True, return_mask: bool = False
):
    """Pairwise distortion ratios ``r_ij = |y_i - y_j|^2 / |x_i - x_j|^2`` for all i < j.

    ``X: (N, d_in)``, ``Y: (N, d_out)`` (typically ``project(X, A)``) -> ``(P,)`` in
    condensed ``torch.pdist`` order, where pairs with ``x_i == x_j`` are dropped (their
    ratio is undefined), so ``P <= N(N-1)/2``; ``return_mask=True`` also returns the
    ``(N(N-1)/2,)`` bool mask of kept pairs. ``squared=False`` gives ``|y_i-y_j|/|x_i-x_j|``
    (the JL band for plain distances is ``[sqrt(1-eps), sqrt(1+eps)]``). Distances are
    formed in float64, from differences for near-duplicate pairs (Gram expansion
    elsewhere), so near-duplicate points keep their ratios.

    The ratios of book/geometry/jl-theory.ipynb, eq. (jl-theory-jl) (section on measuring
    distortion).
    """
    _check_pair(X, Y)
    out = _out_dtype(X, Y)
    dx = _sq_dists64(X)
    dy = _sq_dists64(Y)
    mask = dx > 0
    r = dy[mask] / dx[mask]
    if not squared:
        r = r.sqrt()
    r = r.to(out)
    return (r, mask) if return_mask else r


def inner_product_errors(
    X: torch.Tensor, Y: torch.Tensor, *, relative: bool = False
) -> torch.Tensor:
    """Inner-product errors ``<y_i, y_j> - <x_i, x_j>`` for all pairs i < j (pdist order).

    ``X: (N, d_in)``, ``Y: (N, d_out)`` -> ``(N(N-1)/2,)``. The JL inner-product lemma bounds
    it by ``eps (|x_i|^2 + |x_j|^2) / 2`` (squared norms; the original post's derivation
    drops a square), which is ``eps`` for unit vectors. ``relative=True`` divides by
    ``(|x_i|^2 + |x_j|^2) / 2`` so the result is comparable with ``eps`` for any norms
    (pairs of two zero vectors give 0).

    Derived in book/geometry/jl-theory.ipynb, eq. (jl-theory-inner); the post's version is eq.
    (jl-theory-inner-post).
    """
    _check_pair(X, Y)
    out = _out_dtype(X, Y)
    x = X.to(torch.float64)
    y = Y.to(torch.float64)
    n = x.shape[0]
    i, j = torch.triu_indices(n, n, offset=1, device=x.device)
    err = (y @ y.T - x @ x.T)[i, j]
    if relative:
        sq = (x * x).sum(-1)
        scale = (sq[i] + sq[j]) / 2
        err = torch.where(
            scale > 0, err / scale.clamp_min(torch.finfo(torch.float64).tiny), torch.zeros_like(err)
        )
    return err.to(out)


# --------------------------------------------------------------------------- bounds


_RULES = ("chernoff24", "chernoff16", "dasgupta_gupta")


def jl_min_dim(N: int, eps: float, *, rule: str = "chernoff24") -> int:
    """Target dimension that the JL lemma asks for ``N`` points at distortion ``eps``.

    ``"chernoff24"``: smallest int ``n > 24 ln N / eps^2`` (success prob >= (N-1)/N);
    ``"chernoff16"``: smallest int ``n > 16 ln N / eps^2`` (success prob >= 1/N, existence);
    ``"dasgupta_gupta"``: ``int(4 ln N / (eps^2/2 - eps^3/3))`` exactly as sklearn's
    ``johnson_lindenstrauss_min_dim`` (truncated, a different bound).

    Derived in book/geometry/jl-theory.ipynb, eqs. (jl-theory-n24) and (jl-theory-union).
    """
    check_int("N", N, minimum=2)
    eps = _check_eps(eps)
    if rule == "chernoff24":
        return math.floor(24.0 * math.log(N) / eps**2) + 1
    if rule == "chernoff16":
        return math.floor(16.0 * math.log(N) / eps**2) + 1
    if rule == "dasgupta_gupta":
        return int(4.0 * math.log(N) / (eps**2 / 2.0 - eps**3 / 3.0))
    raise ValueError(f"rule: expected one of {_RULES}, got {rule!r}")


def _log_pair_failure(d_out: int, eps: float) -> float:
    """log P(|chi^2_n / n - 1| >= eps) for eps > 0 (lower tail empty when eps >= 1)."""
    from scipy.stats import chi2

    n = d_out
    log_hi = float(chi2.logsf(n * (1.0 + eps), n))
    if eps >= 1.0:
        return log_hi
    log_lo = float(chi2.logcdf(n * (1.0 - eps), n))
    m = max(log_hi, log_lo)
    if m == -math.inf:
        return -math.inf
    return m + math.log(math.exp(log_hi - m) + math.exp(log_lo - m))


def jl_pair_failure_prob(d_out: int, eps: float) -> float:
    """Exact per-pair failure probability ``P(|n|Ax|^2/|x|^2 / n - 1| >= eps)`` for Gaussian A.

    ``p = F_{chi^2_n}(n (1 - eps)) + 1 - F_{chi^2_n}(n (1 + eps))`` with ``n = d_out``.

    Derived in book/geometry/jl-theory.ipynb, eq. (jl-theory-exact).
    """
    check_positive("d_out", d_out, integer=True)
    eps = _check_eps(eps)
    return math.exp(_log_pair_failure(d_out, eps))


def jl_chernoff_bound(d_out: int, eps: float, *, exact: bool = False) -> float:
    """Chernoff bound on the per-pair failure probability (unit-norm lemma).

    ``exact=False``: ``2 exp(-n eps^2 / 8)``; ``exact=True``: the optimised Chernoff values
    ``exp(n (log(1+eps) - eps) / 2) + exp(n (log(1-eps) + eps) / 2)`` of both tails.

    Derived in book/geometry/jl-theory.ipynb, eqs. (jl-theory-upper) and (jl-theory-norm).
    """
    check_positive("d_out", d_out, integer=True)
    eps = _check_eps(eps)
    n = d_out
    if exact:
        return math.exp(n * (math.log1p(eps) - eps) / 2) + math.exp(
            n * (math.log1p(-eps) + eps) / 2
        )
    return 2.0 * math.exp(-n * eps**2 / 8.0)


def jl_union_bound(N: int, d_out: int, eps: float) -> float:
    """Union bound on the probability that some pair fails: ``N (N-1) exp(-n eps^2 / 8)``.

    ``= C(N, 2) * 2 exp(-n eps^2 / 8)``; may exceed 1 (then it is vacuous).

    Derived in book/geometry/jl-theory.ipynb, eq. (jl-theory-union).
    """
    check_int("N", N, minimum=2)
    check_positive("d_out", d_out, integer=True)
    eps = _check_eps(eps)
    return N * (N - 1) * math.exp(-d_out * eps**2 / 8.0)


def jl_eps_for_union(N: int, d_out: int, target: float = 0.5) -> float:
    """Smallest ``eps`` with ``C(N, 2) * p_{n, eps} <= target`` (exact chi-square tails).

    With ``target = 0.5`` this is where the expected number of pairs outside the band
    ``[1 - eps, 1 + eps]`` drops to one half: roughly the worst distortion seen in practice.
    For ``eps >= 1`` only the upper tail remains, so the answer may exceed 1 for small n.

    Derived in book/geometry/jl-theory.ipynb, eqs. (jl-theory-exact) and (jl-theory-union).
    """
    from scipy.optimize import brentq

    check_int("N", N, minimum=2)
    check_positive("d_out", d_out, integer=True)
    check_positive("target", target)
    pairs = N * (N - 1) / 2
    if pairs <= target:
        return 0.0
    log_c = math.log(pairs) - math.log(target)

    def f(e: float) -> float:
        return log_c + _log_pair_failure(d_out, e)

    lo, hi = 1e-12, 1.0
    while f(hi) > 0:
        lo, hi = hi, 2 * hi
    return float(brentq(f, lo, hi, xtol=1e-12, rtol=1e-10))
