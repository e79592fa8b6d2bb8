"""Entropy of discrete distributions, the power (temperature) family and entropy normalisation.

Entropy normalisation (kexue.fm/archives/8829) maps ``p`` to ``T_gamma(p) = softmax(gamma log p)``
with the ``gamma > 0`` that gives a prescribed entropy. Along the family

``H(gamma) = log sum_i p_i^gamma - gamma E_gamma[log p]``,  ``dH/dgamma = -gamma Var_gamma[log p] <= 0``,

so every target in ``(0, log |support|)`` has one ``gamma``. Everything works on ``dim``
(default the last) and is batched over the other dimensions. Masked entries (``-inf`` logits
or zero probabilities) are outside the support and stay 0. Half inputs are computed in
float32 and cast back. Entropies are in nats.
"""

from __future__ import annotations

import math

import torch

from kexue_lib._core import check_positive, check_simplex, check_tensor, work_dtype

__all__ = [
    "entropy",
    "entropy_curve",
    "entropy_from_logits",
    "entropy_newton_step",
    "entropy_normalize",
    "power_transform",
]

# bounds of the solved exponent: gamma in [1e-6, 1e6]
_BETA_MIN = math.log(1e-6)
_BETA_MAX = math.log(1e6)
_MAX_STEP = 2.0  # largest Newton step in beta = log gamma (a factor e^2 in gamma)


def _check_floating(name: str, x) -> torch.Tensor:
    check_tensor(name, x, floating=True)
    if x.dim() == 0:
        raise ValueError(f"{name}: expected at least one dimension (the outcomes), got a scalar")
    return x


def _check_distribution(name: str, p: torch.Tensor, dim: int) -> torch.Tensor:
    """Raise unless ``p`` is a floating tensor of finite, non-negative entries summing to 1 on
    ``dim`` (to a few ulps of its dtype: a bf16 softmax passes, logits or counts do not)."""
    _check_floating(name, p)
    if p.numel():
        check_simplex(name, p, dim=dim, atol=max(1e-5, 2 * torch.finfo(p.dtype).eps))
    return p


def _log_probs(logits: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log_softmax(logits), support mask)`` in the compute dtype; masked entries are ``-inf``."""
    ell = torch.log_softmax(logits.to(work_dtype(logits.dtype)), dim=dim)
    return ell, torch.isfinite(ell)


def _entropy_of_log(q_log: torch.Tensor, mask: torch.Tensor, dim: int) -> torch.Tensor:
    """``-sum q log q`` from log-probabilities, with masked entries contributing 0."""
    safe = torch.where(mask, q_log, torch.zeros_like(q_log))
    return (
        -(safe.exp() * safe)
        .sum(dim)
        .where(mask.any(dim), torch.zeros((), dtype=q_log.dtype, device=q_log.device))
    )


def _family(ell: torch.Tensor, mask: torch.Tensor, gamma: torch.Tensor, dim: int):
    """Log of ``softmax(gamma ell)`` over the support (``-inf`` outside); ``gamma`` keeps ``dim``."""
    z = torch.where(
        mask, gamma * torch.where(mask, ell, torch.zeros_like(ell)), torch.full_like(ell, -math.inf)
    )
    return torch.log_softmax(z, dim=dim)


def _stats(ell, mask, gamma, dim):
    """``(log q, H, Var_q[ell])`` for ``q = softmax(gamma ell)``; ``gamma`` keeps ``dim``.

    The solvers' inner loop: few passes, scalar fills (no ``zeros_like``), masked entries
    held at a finite 0 so that ``q = 0`` there never meets an infinity.
    """
    e0 = torch.where(mask, ell, 0.0)
    q_log = torch.log_softmax((gamma * e0).masked_fill(~mask, -math.inf), dim=dim)
    q = q_log.exp()
    h = -(q * torch.where(mask, q_log, 0.0)).sum(dim)
    mean = (q * e0).sum(dim, keepdim=True)
    var = (q * (e0 - mean) ** 2).sum(dim)
    return q_log, h, var


def _gamma_keepdim(gamma, like: torch.Tensor, dim: int, name: str = "gamma") -> torch.Tensor:
    """``gamma`` (a number or a tensor broadcastable to the batch shape) with ``dim`` re-inserted."""
    g = torch.as_tensor(gamma, dtype=like.dtype, device=like.device)
    if g.dim() == 0:
        return g
    d = dim % like.dim()
    batch = like.shape[:d] + like.shape[d + 1 :]
    try:
        g = g.expand(batch)
    except RuntimeError:
        raise ValueError(
            f"{name}: expected a number or a tensor broadcastable to the batch shape "
            f"{tuple(batch)}, got shape {tuple(g.shape)}"
        ) from None
    return g.unsqueeze(d)


def entropy(p: torch.Tensor, *, dim: int = -1) -> torch.Tensor:
    """Shannon entropy ``H(p) = -sum_i p_i log p_i`` (nats) along ``dim``, with ``0 log 0 = 0``.

    ``p: (..., n, ...)`` -> ``(...)`` in ``p``'s dtype. Uses ``torch.special.xlogy``.
    ValueError unless ``p`` is non-negative and sums to 1 on ``dim`` (for logits use
    :func:`entropy_from_logits`).
    """
    _check_distribution("p", p, dim)
    x = p.to(work_dtype(p.dtype))
    return (-torch.special.xlogy(x, x).sum(dim)).to(p.dtype)


def entropy_from_logits(logits: torch.Tensor, *, dim: int = -1) -> torch.Tensor:
    """Entropy of ``softmax(logits)`` along ``dim``: ``logsumexp(o) - sum_i p_i o_i``.

    ``logits: (..., n, ...)`` -> ``(...)``. Computed from ``log_softmax``; ``-inf`` logits
    (masked entries) contribute 0.
    """
    _check_floating("logits", logits)
    ell, mask = _log_probs(logits, dim)
    return _entropy_of_log(ell, mask, dim).to(logits.dtype)


def power_transform(logits: torch.Tensor, gamma, *, dim: int = -1) -> torch.Tensor:
    """The power family ``T_gamma(p)_i = p_i^gamma / sum_j p_j^gamma = softmax(gamma log p)_i``.

    ``logits: (..., n, ...)`` (``p = softmax(logits)``), ``gamma >= 0`` a number or a tensor
    broadcastable to the batch shape ``(...)`` -> ``(..., n, ...)``. ``gamma = 0`` gives the
    uniform distribution on the support; masked entries stay 0. Order-preserving for
    ``gamma > 0``; ``T_a(T_b(p)) = T_{ab}(p)``.
    """
    _check_floating("logits", logits)
    ell, mask = _log_probs(logits, dim)
    g = _gamma_keepdim(gamma, ell, dim)
    if not bool(((g >= 0) & torch.isfinite(g)).all()):
        raise ValueError(f"gamma: expected finite values >= 0, got {gamma}")
    return _family(ell, mask, g, dim).exp().to(logits.dtype)


def entropy_curve(logits: torch.Tensor, gammas, *, dim: int = -1) -> torch.Tensor:
    """Entropy along the power family, ``H(gamma) = H(softmax(gamma log p))``, for each gamma.

    ``logits: (..., n, ...)``, ``gammas: (G,)`` (>= 0) -> ``(G, ...)``. Decreasing in gamma,
    from ``log |support|`` at 0 toward ``log(#ties at the max)`` as gamma -> inf.
    """
    _check_floating("logits", logits)
    ell, mask = _log_probs(logits, dim)
    g = torch.as_tensor(gammas, dtype=ell.dtype, device=ell.device)
    if g.dim() != 1:
        raise ValueError(f"gammas: expected a (G,) vector, got shape {tuple(g.shape)}")
    if not bool(((g >= 0) & torch.isfinite(g)).all()):
        raise ValueError("gammas: expected finite values >= 0")
    d = dim % ell.dim()
    gk = g.reshape((-1,) + (1,) * ell.dim())
    out = _entropy_of_log(
        _family(ell.unsqueeze(0), mask.unsqueeze(0), gk, d + 1), mask.unsqueeze(0), d + 1
    )
    return out.to(logits.dtype)


def entropy_newton_step(p: torch.Tensor, target, *, dim: int = -1):
    """One step of the post's raw update, verbatim: ``p <- p^gamma / sum p^gamma`` with

    ``gamma = 1 + (H* - H(p)) / (H(p)^2 - sum_i p_i (log p_i)^2)``.

    ``p: (..., n, ...)``, ``target`` (nats; number or tensor broadcastable to ``(...)``) ->
    ``(p_new: (..., n, ...), gamma: (...))``. The denominator is ``-Var_p[log p]``, so this is
    a Newton step on ``H(gamma)`` at ``gamma = 1``. No safeguard, on purpose (for teaching):
    ``gamma`` can be negative (order reversed), infinite for a uniform ``p`` (zero variance),
    or so large that every ``p_i^gamma`` underflows and ``p_new`` is NaN. Use
    :func:`entropy_normalize` for a safe solver.
    """
    _check_distribution("p", p, dim)
    x = p.to(work_dtype(p.dtype))
    t = torch.as_tensor(target, dtype=x.dtype, device=x.device)
    logp = torch.where(x > 0, torch.log(x), torch.zeros_like(x))  # 0 * log 0 -> 0 in the sums
    h = -(x * logp).sum(dim)
    e2 = (x * logp**2).sum(dim)
    gamma = 1 + (t - h) / (h**2 - e2)
    powered = x.pow(gamma.unsqueeze(dim))
    p_new = powered / powered.sum(dim, keepdim=True)
    return p_new.to(p.dtype), gamma.to(p.dtype)


def entropy_normalize(
    p: torch.Tensor | None = None,
    *,
    logits: torch.Tensor | None = None,
    target=None,
    target_ratio=None,
    dim: int = -1,
    n_iter: int | None = None,
    method: str = "safeguarded",
    return_gamma: bool = False,
):
    """The power transform ``softmax(gamma log p)`` whose entropy equals a target.

    Give exactly one of ``p: (..., n, ...)`` (probabilities) or ``logits`` and exactly one of
    ``target`` (nats, in ``[0, log |support|]``) or ``target_ratio`` (in ``[0, 1]``; target =
    ratio * log |support|); both a number or a tensor broadcastable to the batch shape ``(...)``.
    Returns ``p_tilde`` like the input (and ``gamma: (...)`` when ``return_gamma``).

    Methods (both start from the original log-probabilities with the cumulative exponent):

    - ``"safeguarded"`` (default; ``n_iter`` default 30): Newton on ``beta = log gamma`` for
      ``H(softmax(e^beta log p)) = H*``, slope ``dH/dbeta = -gamma^2 Var_gamma[log p]``, steps
      clipped to ``|d beta| <= 2``, and bisection on a bracket ``[beta_lo, beta_hi]`` (initially
      ``gamma in [1e-6, 1e6]``) whenever the Newton point leaves it or is not at least half the
      step before last (rtsafe's rule against oscillating across the inflection). It always converges (to the
      bracket bound for targets the clamp cannot reach: ties at the maximum, or a target within
      ~1e-12 of the ends). The result is differentiable w.r.t. the logits and the target with the
      implicit-function gradient ``d beta*/d x = -(dH/dx) / (dH/dbeta)``.
    - ``"newton"`` (``n_iter`` default 4, the post's advice): the post's iteration
      ``gamma <- gamma + (H* - H) / H'(gamma)`` (Newton in gamma), with no safeguard; it can give
      a negative gamma (order reversed) or NaN. For teaching.

    A fixed number of iterations, no ``.item()`` inside the loop (only the input validation syncs).
    """
    if (p is None) == (logits is None):
        raise ValueError("p: expected exactly one of p (probabilities) or logits")
    if (target is None) == (target_ratio is None):
        raise ValueError("target: expected exactly one of target or target_ratio")
    if method not in ("safeguarded", "newton"):
        raise ValueError(f"method: expected 'safeguarded' or 'newton', got {method!r}")
    if n_iter is None:
        n_iter = 30 if method == "safeguarded" else 4
    check_positive("n_iter", n_iter, strict=False, integer=True)
    if p is not None:
        _check_floating("p", p)
        if bool((p < 0).any()) or not bool(torch.isfinite(p).all()):
            raise ValueError("p: expected finite non-negative probabilities")
        x = p.to(work_dtype(p.dtype))
        pos = x > 0
        src = torch.where(
            pos, torch.log(torch.where(pos, x, torch.ones_like(x))), torch.full_like(x, -math.inf)
        )
        out_dtype = p.dtype
    else:
        _check_floating("logits", logits)
        if bool(torch.isnan(logits).any()) or bool((logits == math.inf).any()):
            raise ValueError("logits: expected no NaN or +inf entries")
        src, out_dtype = logits.to(work_dtype(logits.dtype)), logits.dtype
    ell, mask = _log_probs(src, dim)
    d = dim % ell.dim()
    h_max = torch.log(mask.sum(d).to(ell.dtype))
    if bool((h_max == -math.inf).any()):
        which = "p" if p is not None else "logits"
        raise ValueError(
            f"{which}: expected at least one positive probability per distribution, got none"
        )
    if target is not None:
        t = torch.as_tensor(target, dtype=ell.dtype, device=ell.device)
        name = "target"
    else:
        r = torch.as_tensor(target_ratio, dtype=ell.dtype, device=ell.device)
        if not bool(((r >= 0) & (r <= 1)).all()):
            raise ValueError(f"target_ratio: expected values in [0, 1], got {target_ratio}")
        t = r * h_max
        name = "target_ratio"
    try:
        t = t.expand(h_max.shape)
    except RuntimeError:
        raise ValueError(
            f"{name}: expected a number or a tensor broadcastable to the batch shape "
            f"{tuple(h_max.shape)}, got shape {tuple(t.shape)}"
        ) from None
    tol = 8 * torch.finfo(ell.dtype).eps * h_max.clamp_min(1.0)
    if not bool(torch.isfinite(t).all()) or bool((t < 0).any()) or bool((t > h_max + tol).any()):
        raise ValueError(
            f"{name}: expected target entropies in [0, log |support|] (at most "
            f"{h_max.max().item():.6g} nats here), got {target if target is not None else target_ratio}"
        )
    t = torch.minimum(t, h_max)

    if method == "newton":
        gamma = torch.ones_like(h_max)
        for _ in range(n_iter):
            _, h, var = _stats(ell, mask, gamma.unsqueeze(d), d)
            gamma = gamma + (t - h) / (-gamma * var)
        q_log = _family(ell, mask, gamma.unsqueeze(d), d)
    else:
        ell_c = ell.detach()
        t_c = t.detach()
        lo = torch.full_like(h_max, _BETA_MIN)
        hi = torch.full_like(h_max, _BETA_MAX)
        beta = torch.zeros_like(h_max)
        # sizes of the last two steps (as in Numerical Recipes' rtsafe): a Newton step must at
        # least halve the step before last, or Newton is oscillating across the inflection of
        # the sigmoid-like H(beta) and bisection takes over
        dx_last = hi - lo
        dx_before = hi - lo
        for _ in range(n_iter):
            _, h, var = _stats(ell_c, mask, beta.exp().unsqueeze(d), d)
            f = h - t_c
            lo = torch.where(f > 0, beta, lo)  # H decreases in beta: too much entropy -> go right
            hi = torch.where(f > 0, hi, beta)
            slope = -(2 * beta).exp() * var
            raw = -f / slope
            step = raw.clamp(-_MAX_STEP, _MAX_STEP)
            cand = beta + step
            # a full Newton step may land on the bracket (converged: cand == beta); a clipped one
            # must stay strictly inside, or it could bounce between the two ends forever
            inside = torch.where(
                step == raw, (cand >= lo) & (cand <= hi), (cand > lo) & (cand < hi)
            )
            # (steps at rounding level are always fine: they are how Newton stops)
            tiny = 1e-6 * (1 + beta.abs())
            fast = step.abs() <= torch.maximum(0.5 * dx_before, tiny)
            ok = torch.isfinite(cand) & (slope < 0) & inside & fast
            new = torch.where(f == 0, beta, torch.where(ok, cand, (lo + hi) / 2))
            dx_before, dx_last = dx_last, (new - beta).abs()
            beta = new
        # implicit-function gradient: the value stays beta*, the graph gives d beta*/d(ell, target)
        gamma_c = beta.exp().unsqueeze(d)
        _, h, var = _stats(ell, mask, gamma_c, d)
        slope = (-(2 * beta).exp() * var).detach()
        f = h - t
        usable = slope < -1e-30
        inv = torch.where(
            usable, 1 / torch.where(usable, slope, -torch.ones_like(slope)), torch.zeros_like(slope)
        )
        beta = beta - (f - f.detach()) * inv
        gamma = beta.exp()
        q_log = _family(ell, mask, gamma.unsqueeze(d), d)
    q = torch.where(mask, q_log.exp(), torch.zeros_like(q_log)).to(out_dtype)
    if return_gamma:
        return q, gamma.to(out_dtype)
    return q
