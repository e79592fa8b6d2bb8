"""Monte Carlo gradient estimators and importance-sampling helpers.

Four ways to differentiate an expectation (kexue.fm/archives/6705, /7737):

* exact: for a categorical variable with logits ``o``, ``L(o) = sum_y softmax(o)_y f(e_y)`` and
  ``dL/do = p * (f - p . f)`` (:func:`softmax_expectation_grad`);
* score function (REINFORCE): ``grad E_p[f] = E_p[(f - b) grad log p]`` for any baseline ``b``
  that does not depend on the sample (:func:`reinforce_grad_samples`, :func:`reinforce_grad`);
* pathwise (Gumbel-softmax relaxation, :func:`pathwise_grad_samples`; :func:`normal_rsample`);
* zeroth order: ``grad E_u f(x + eps u) = E_u[(f(x + eps u) - b) w(u)] / eps`` with the score
  ``w = -grad log phi(u)`` of the noise density (``u`` itself for Gaussian noise). It is the score
  function estimator of the "policy" ``x' ~ x + eps u`` (:func:`zo_grad`, :func:`smoothed_value`,
  :func:`implicit_policy`).

Per-sample estimators return ``(n, k)``: row ``i`` is one sample's gradient, so the mean of
the rows estimates the gradient and their covariance is the estimator's variance.

Importance sampling in log space, samples on ``dim`` (default 0): :func:`log_mean_exp`,
:func:`iwae_bound`, :func:`effective_sample_size`, :func:`self_normalized_weights`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from kexue_lib._core import check_choice, check_int, check_positive, check_tensor, work_dtype
from kexue_lib.gumbel import gumbel_max_sample, gumbel_softmax, sample_gumbel

__all__ = [
    "effective_sample_size",
    "implicit_policy",
    "iwae_bound",
    "log_mean_exp",
    "normal_rsample",
    "pathwise_grad_samples",
    "reinforce_grad",
    "reinforce_grad_samples",
    "self_normalized_weights",
    "smoothed_value",
    "softmax_expectation_grad",
    "zo_grad",
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


def _check_baseline(baseline, names: tuple, n: int, n_name: str) -> None:
    """``baseline`` is None, one of ``names`` or a number; the leave-one-out kinds need n >= 2."""
    is_number = isinstance(baseline, (int, float)) and not isinstance(baseline, bool)
    if is_number:
        if not math.isfinite(baseline):
            raise ValueError(f"baseline: expected a finite number, got {baseline!r}")
        return
    if baseline is not None and baseline not in names:
        allowed = ", ".join(repr(b) for b in names)
        raise ValueError(f"baseline: expected None, {allowed} or a number, got {baseline!r}")
    if baseline in ("loo", "optimal") and n < 2:
        raise ValueError(f"{n_name}: the {baseline!r} baseline needs {n_name} >= 2, got {n}")


def _baseline_values(f: torch.Tensor, baseline, sq_norms: torch.Tensor | None = None):
    """The baseline subtracted from the sampled values ``f: (n, ...)`` (samples on dim 0).

    ``"mean"``: the batch mean, the sample itself included (the estimate shrinks by
    ``(n - 1) / n``); ``"loo"``: the mean of the other ``n - 1`` values (unbiased);
    ``"optimal"``: leave-one-out plug-in of ``b* = E[f |w|^2] / E[|w|^2]`` with ``sq_norms = |w|^2``
    (unbiased: ``b_i`` does not depend on sample ``i``); a number: that constant; None: 0.
    """
    n = f.shape[0]
    if baseline is None:
        return torch.zeros((), dtype=f.dtype, device=f.device)
    if baseline == "mean":
        return f.mean(0)
    if baseline == "loo":
        return (f.sum(0) - f) / (n - 1)
    if baseline == "optimal":
        fs = f * sq_norms
        return (fs.sum(0) - fs) / (sq_norms.sum(0) - sq_norms)
    return torch.as_tensor(float(baseline), dtype=f.dtype, device=f.device)


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
    _check_baseline(baseline, ("mean", "loo"), n, "n")
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
    f = f - _baseline_values(f, baseline)
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


def reinforce_grad(
    logits: torch.Tensor,
    reward: torch.Tensor | Callable,
    n_samples: int,
    *,
    baseline: str | float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Score-function estimate of ``d/do sum_y softmax(o)_y r_y`` for a batch of logit rows.

    ``logits: (..., k)``; ``reward`` a table ``(..., k)`` (broadcastable to ``logits``: the
    reward of every class for every row, e.g. ``one_hot(target)`` for accuracy) or a callable
    mapping one-hot samples ``(n_samples, ..., k)`` to rewards ``(n_samples, ...)``. Each row
    draws ``n_samples`` classes and averages ``(r - b)(e_y - p)`` -> ``(..., k)``, the Monte
    Carlo version of :func:`softmax_expectation_grad`. ``baseline`` as in
    :func:`reinforce_grad_samples`, taken per row over its own samples. For a model with
    parameters ``theta``, ``-(logits * g.detach()).sum()`` is a surrogate loss whose gradient is
    minus the estimate (gradient ascent on the expected reward).
    """
    check_tensor("logits", logits, floating=True)
    if logits.dim() == 0 or logits.shape[-1] < 2:
        raise ValueError(
            f"logits: expected (..., k) with k >= 2 classes, got shape {tuple(logits.shape)}"
        )
    check_int("n_samples", n_samples)
    _check_baseline(baseline, ("mean", "loo"), n_samples, "n_samples")
    cdt = work_dtype(logits.dtype)
    o = logits.detach().to(cdt)
    k = o.shape[-1]
    y = gumbel_max_sample(o.expand(n_samples, *o.shape), generator=generator)
    onehot = torch.nn.functional.one_hot(y, k).to(cdt)
    if callable(reward):
        f = torch.as_tensor(reward(onehot)).detach().to(device=o.device, dtype=cdt)
        if f.shape != onehot.shape[:-1]:
            raise ValueError(
                f"reward: expected the callable to return shape {tuple(onehot.shape[:-1])}, "
                f"got {tuple(f.shape)}"
            )
    else:
        check_tensor("reward", reward, floating=True)
        try:
            table = torch.broadcast_to(reward.detach().to(cdt), o.shape)
        except RuntimeError:
            raise ValueError(
                f"reward: expected a table broadcastable to {tuple(o.shape)} or a callable, "
                f"got shape {tuple(reward.shape)}"
            ) from None
        f = (onehot * table).sum(-1)
    f = f - _baseline_values(f, baseline)
    grad = (f[..., None] * (onehot - torch.softmax(o, -1))).mean(0)
    return grad.to(logits.dtype)


# --------------------------------------------------------------------------- zeroth order

_ZO_DISTS = ("gauss", "sphere", "gumbel")
_ZO_BASELINES = ("fx", "mean", "optimal", "loo")


def _check_black_box(f) -> None:
    if not callable(f):
        raise TypeError(f"f: expected a callable (N, d) -> (N,), got {type(f).__name__}")


def _check_point(x) -> torch.Tensor:
    check_tensor("x", x, floating=True)
    if x.dim() != 1 or x.numel() == 0:
        raise ValueError(f"x: expected a (d,) vector with d >= 1, got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError("x: expected finite entries, got inf or nan")
    return x


def _eval_batch(f, points: torch.Tensor) -> torch.Tensor:
    """``f(points)`` checked to be ``(N,)`` finite-or-inf values, cast to the points' dtype."""
    out = f(points)
    if not isinstance(out, torch.Tensor) or out.shape != points.shape[:1]:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"f: expected the callable to return shape ({len(points)},), got {shape}")
    out = out.detach().to(device=points.device, dtype=points.dtype)
    if torch.isnan(out).any():
        raise ValueError("f: the callable returned nan")
    return out


def _zo_noise(n: int, d: int, dist: str, dtype, device, generator):
    """Perturbations ``u: (n, d)`` and their scores ``w = -grad log phi(u)``.

    gauss: ``u ~ N(0, I)``, ``w = u``. sphere: ``u = sqrt(d) g / |g|`` (so ``E[u u^T] = I``),
    ``w = u``. gumbel: i.i.d. standard Gumbel ``u``, ``w = 1 - exp(-u)`` (``E[w] = 0``,
    ``E[w w^T] = I``).
    """
    if dist == "gumbel":
        u = sample_gumbel((n, d), dtype=dtype, device=device, generator=generator)
        return u, -torch.expm1(-u)
    u = torch.randn((n, d), dtype=dtype, device=device, generator=generator)
    if dist == "sphere":
        u = u * (math.sqrt(d) / torch.linalg.vector_norm(u, dim=1, keepdim=True))
    return u, u


def zo_grad(
    f: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    eps: float,
    n_dirs: int,
    *,
    dist: str = "gauss",
    baseline: str | float | None = "fx",
    antithetic: bool = False,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict]:
    """Zeroth-order (black-box) gradient estimate from ``n_dirs`` random perturbations.

    ``f`` maps a batch of points ``(N, d)`` to values ``(N,)`` (never differentiated);
    ``x: (d,)``. Row ``i`` of the estimate is ``(f(x + eps u_i) - b_i) w_i / eps`` where ``w`` is
    the score of the noise density (``w = u`` for ``dist="gauss"`` and ``"sphere"``,
    ``w = 1 - exp(-u)`` for ``"gumbel"``). The mean of the rows is an unbiased estimate of the
    gradient of a *smoothed* ``f`` at every ``eps`` (not only as ``eps -> 0``):

    * ``"gauss"``: ``grad E f(x + eps u)``, ``u ~ N(0, I)`` (Stein's lemma);
    * ``"sphere"``: ``u = sqrt(d) g/|g|`` on the sphere of radius ``sqrt(d)`` (``E[u u^T] = I``):
      the gradient of ``f`` averaged over the ball of radius ``eps sqrt(d)``;
    * ``"gumbel"``: ``grad E f(x + eps G)``, ``G`` i.i.d. standard Gumbel.

    For differentiable ``f`` all three tend to ``grad f(x)`` as ``eps -> 0``.

    ``baseline`` (any ``b_i`` independent of ``u_i`` keeps the estimate unbiased, since
    ``E[w] = 0``): ``"fx"`` (``f(x)``, one extra evaluation; the classic forward difference),
    ``"mean"`` (the batch mean, sample included: the estimate shrinks by ``(n-1)/n``), ``"loo"``
    (leave-one-out mean), ``"optimal"`` (leave-one-out plug-in of
    ``b* = E[f(x + eps u) |w|^2] / E[|w|^2]``, which minimises the variance over constants), a
    number, or None (``b = 0``). ``antithetic=True`` pairs ``u`` with ``-u`` (``2 n_dirs``
    evaluations): rows ``(f(x + eps u) - f(x - eps u)) u / (2 eps)``, in which every constant
    baseline cancels, so only ``baseline`` None or ``"fx"`` (the same thing here) is accepted;
    not for ``"gumbel"`` (its density is not symmetric).

    Returns ``(grad: (d,), info)`` with ``info["rows"]: (n_dirs, d)`` the per-direction
    estimates, ``info["dirs"]: (n_dirs, d)`` the perturbations ``u``, ``info["n_evals"]`` the
    number of calls' worth of points evaluated and ``info["var"]`` the estimated total variance
    (trace of the covariance) of ``grad`` (``inf`` when ``n_dirs = 1``). Computes in
    ``work_dtype(x.dtype)`` on ``x``'s device (``f`` receives that dtype); ``grad`` is cast back.
    """
    _check_black_box(f)
    _check_point(x)
    check_positive("eps", eps)
    check_int("n_dirs", n_dirs)
    check_choice("dist", dist, _ZO_DISTS)
    if not isinstance(antithetic, bool):
        raise TypeError(f"antithetic: expected a bool, got {type(antithetic).__name__}")
    if antithetic:
        if dist == "gumbel":
            raise ValueError("antithetic: expected False for dist='gumbel' (asymmetric noise)")
        if baseline not in (None, "fx"):
            raise ValueError(
                f"baseline: every constant baseline cancels in antithetic pairs; expected None "
                f"or 'fx', got {baseline!r}"
            )
    else:
        _check_baseline(baseline, _ZO_BASELINES, n_dirs, "n_dirs")
    cdt = work_dtype(x.dtype)
    x0 = x.detach().to(cdt)
    d = x0.numel()
    eps = float(eps)
    u, w = _zo_noise(n_dirs, d, dist, cdt, x0.device, generator)
    if antithetic:
        both = _eval_batch(f, torch.cat([x0 + eps * u, x0 - eps * u]))
        rows = ((both[:n_dirs] - both[n_dirs:]) / (2 * eps))[:, None] * u
        n_evals = 2 * n_dirs
    else:
        fu = _eval_batch(f, x0 + eps * u)
        n_evals = n_dirs
        if baseline == "fx":
            b = _eval_batch(f, x0[None])[0]
            n_evals += 1
        else:
            b = _baseline_values(fu, baseline, (w * w).sum(1))
        rows = ((fu - b) / eps)[:, None] * w
    grad = rows.mean(0)
    if n_dirs > 1:
        var = rows.var(0).sum() / n_dirs
    else:
        var = torch.full((), math.inf, dtype=cdt, device=x0.device)
    info = {
        "rows": rows.to(x.dtype),
        "dirs": u.to(x.dtype),
        "n_evals": n_evals,
        "var": var.to(x.dtype),
    }
    return grad.to(x.dtype), info


def smoothed_value(
    f: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    eps: float,
    n: int,
    *,
    dist: str = "gauss",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Monte Carlo estimate of the smoothed objective ``f_eps(x) = E_u f(x + eps u)``.

    ``f: (N, d) -> (N,)``, ``x: (d,)``, ``u`` drawn as in :func:`zo_grad` (``"gauss"``,
    ``"sphere"`` or ``"gumbel"``) -> a scalar in ``x``'s dtype. The function whose gradient
    :func:`zo_grad` estimates with the same ``dist`` and ``eps``.
    """
    _check_black_box(f)
    _check_point(x)
    check_positive("eps", eps)
    check_int("n", n)
    check_choice("dist", dist, _ZO_DISTS)
    cdt = work_dtype(x.dtype)
    x0 = x.detach().to(cdt)
    u, _ = _zo_noise(n, x0.numel(), dist, cdt, x0.device, generator)
    return _eval_batch(f, x0 + float(eps) * u).mean().to(x.dtype)


def implicit_policy(
    score_fn: Callable[[torch.Tensor], torch.Tensor],
    theta: torch.Tensor,
    eps: float,
    n: int,
    *,
    noise: str = "gauss",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The label distribution that perturbing ``theta`` induces on a hard decision.

    ``score_fn`` maps perturbed parameters ``(n, p)`` to class scores ``(n, k)``; ``theta: (p,)``.
    Returns the Monte Carlo estimate ``(k,)`` of ``p~(y) = P_u[argmax_y' score(theta + eps u) = y]``
    with ``u`` standard Gaussian (``noise="gauss"``) or standard Gumbel (``"gumbel"``) noise.
    Smoothing a hard metric ``r(argmax)`` by this noise gives ``sum_y r_y p~(y)``: an expected
    reward under an implicit policy. Ties in the argmax are broken uniformly at random.
    With ``score_fn`` the identity, Gumbel noise of scale 1 gives ``softmax(theta)`` (Gumbel-max)
    and Gaussian noise a multinomial probit.
    """
    if not callable(score_fn):
        raise TypeError(f"score_fn: expected a callable (n, p) -> (n, k), got {type(score_fn)}")
    check_tensor("theta", theta, floating=True)
    if theta.dim() != 1 or theta.numel() == 0:
        raise ValueError(f"theta: expected a (p,) vector, got shape {tuple(theta.shape)}")
    check_positive("eps", eps)
    check_int("n", n)
    check_choice("noise", noise, ("gauss", "gumbel"))
    cdt = work_dtype(theta.dtype)
    t0 = theta.detach().to(cdt)
    u, _ = _zo_noise(n, t0.numel(), noise, cdt, t0.device, generator)
    scores = score_fn(t0 + float(eps) * u)
    if not isinstance(scores, torch.Tensor) or scores.dim() != 2 or scores.shape[0] != n:
        shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise ValueError(f"score_fn: expected the callable to return shape ({n}, k), got {shape}")
    k = scores.shape[1]
    if k < 2:
        raise ValueError(f"score_fn: expected k >= 2 classes, got {k}")
    scores = scores.detach()
    if torch.isnan(scores).any():
        raise ValueError("score_fn: the callable returned nan")
    ties = scores == scores.amax(1, keepdim=True)
    jitter = torch.rand(scores.shape, dtype=cdt, device=scores.device, generator=generator)
    y = jitter.masked_fill(~ties, -1.0).argmax(1)
    return (torch.bincount(y, minlength=k).to(cdt) / n).to(theta.dtype)


def normal_rsample(
    mu: torch.Tensor,
    sigma: torch.Tensor | float,
    sample_shape=(),
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Reparameterised Gaussian samples ``mu + sigma * z``, ``z ~ N(0, 1)``: differentiable in both.

    ``mu: (...)``; ``sigma > 0`` a number or a tensor broadcastable with ``mu`` -> ``sample_shape +
    broadcast(mu, sigma).shape`` in the promoted dtype (``z`` is drawn in at least float32).
    """
    check_tensor("mu", mu, floating=True)
    if isinstance(sigma, torch.Tensor):
        check_tensor("sigma", sigma, floating=True)
        if not (torch.isfinite(sigma).all() and (sigma > 0).all()):
            raise ValueError("sigma: expected finite entries > 0, got some <= 0, inf or nan")
        dtype = torch.promote_types(mu.dtype, sigma.dtype)
        try:
            shape = torch.broadcast_shapes(mu.shape, sigma.shape)
        except RuntimeError:
            raise ValueError(
                f"sigma: expected a shape broadcastable with mu {tuple(mu.shape)}, "
                f"got {tuple(sigma.shape)}"
            ) from None
    else:
        check_positive("sigma", sigma)
        dtype, shape = mu.dtype, mu.shape
    if isinstance(sample_shape, int):
        sample_shape = (sample_shape,)
    sample_shape = tuple(sample_shape)
    if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in sample_shape):
        raise ValueError(f"sample_shape: expected non-negative ints, got {sample_shape!r}")
    z = torch.randn(
        sample_shape + tuple(shape), dtype=work_dtype(dtype), device=mu.device, generator=generator
    ).to(dtype)
    return mu + sigma * z


# --------------------------------------------------------------------------- importance sampling


def _check_logw(logw, dim: int, name: str = "logw") -> int:
    check_tensor(name, logw, floating=True)
    if logw.dim() == 0:
        raise ValueError(f"{name}: expected at least one dimension of samples, got a scalar")
    if isinstance(dim, bool) or not isinstance(dim, int) or not -logw.dim() <= dim < logw.dim():
        raise ValueError(f"dim: expected an int in [{-logw.dim()}, {logw.dim() - 1}], got {dim!r}")
    if logw.shape[dim] == 0:
        raise ValueError(f"{name}: expected at least one sample along dim {dim}, got none")
    if torch.isnan(logw).any():
        raise ValueError(f"{name}: expected no nan log-weights")
    return dim


def _check_normalisable(logw: torch.Tensor, dim: int, name: str = "logw") -> None:
    m = logw.detach().amax(dim)
    if not torch.isfinite(m).all():
        raise ValueError(
            f"{name}: expected finite log-weights with at least one > -inf along dim {dim}, "
            "got +inf or a slice of all -inf (zero total weight)"
        )


def log_mean_exp(logw: torch.Tensor, dim: int = 0, *, keepdim: bool = False) -> torch.Tensor:
    """``log((1/n) sum_i exp(logw_i))`` along ``dim``, stably (``logsumexp - log n``).

    ``logw: (..., n, ...)`` -> the same without ``dim`` (kept with ``keepdim``). Differentiable;
    a slice of all ``-inf`` gives ``-inf``. Half inputs are computed in float32.
    """
    dim = _check_logw(logw, dim)
    n = logw.shape[dim]
    lw = logw.to(work_dtype(logw.dtype))
    return (torch.logsumexp(lw, dim, keepdim=keepdim) - math.log(n)).to(logw.dtype)


def iwae_bound(log_w: torch.Tensor) -> torch.Tensor:
    """Importance-weighted ELBO ``L_M = log (1/M) sum_m w_m`` from ``log_w: (M, B)`` -> ``(B,)``.

    ``log_w[m, b] = log p(x_b, z_m) - log q(z_m | x_b)`` for ``M`` draws ``z_m ~ q(. | x_b)``.
    ``E[L_M] <= log p(x_b)``, increasing in ``M`` (``M = 1`` is the ELBO) and tending to
    ``log p(x_b)`` as ``M -> inf``. Any trailing shape is allowed: ``(M, ...)`` -> ``(...)``.
    """
    _check_logw(log_w, 0, "log_w")
    return log_mean_exp(log_w, 0)


def effective_sample_size(logw: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Kish's effective sample size ``(sum w)^2 / sum w^2`` of importance weights, from logs.

    ``logw`` on ``dim`` -> the same without ``dim``; between 1 (one weight dominates) and ``n``
    (equal weights). Invariant to adding a constant to ``logw``.
    """
    dim = _check_logw(logw, dim)
    _check_normalisable(logw, dim)
    lw = logw.to(work_dtype(logw.dtype))
    out = torch.exp(2 * torch.logsumexp(lw, dim) - torch.logsumexp(2 * lw, dim))
    return out.to(logw.dtype)


def self_normalized_weights(logw: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Normalised importance weights ``w_i / sum_j w_j`` from log-weights (a softmax along ``dim``).

    ``sum_i weights_i g(z_i)`` is the self-normalised importance-sampling estimate of ``E_p[g]``
    (consistent; biased by ``O(1/n)``).
    """
    dim = _check_logw(logw, dim)
    _check_normalisable(logw, dim)
    lw = logw.to(work_dtype(logw.dtype))
    return torch.softmax(lw, dim).to(logw.dtype)
