"""Tests of kexue_lib.entropy against scipy.stats.entropy, scipy.optimize.brentq, numpy brute
force, the derivative identity dH/dgamma = -gamma Var[log p] and the raw Newton step's failures."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from kexue_lib._core import make_generator
from kexue_lib.entropy import (
    entropy,
    entropy_curve,
    entropy_from_logits,
    entropy_newton_step,
    entropy_normalize,
    power_transform,
)
from tests.conftest import requires_cuda

FLOATS = [torch.float64, torch.float32]
TOL = {torch.float64: 1e-10, torch.float32: 2e-5}


def _dirichlet(shape, alpha, *, seed, dtype=torch.float64):
    g = make_generator(seed)
    x = torch._standard_gamma(torch.full(shape, float(alpha), dtype=torch.float64), generator=g)
    return (x / x.sum(-1, keepdim=True)).to(dtype)


def _np_power(p, gamma):
    """T_gamma(p) = p^gamma / sum p^gamma on the support, in float64 numpy (scaled by max p^gamma)."""
    p = np.asarray(p, dtype=np.float64)
    out = np.where(p > 0, np.power(np.where(p > 0, p / p.max(), 1.0), gamma), 0.0)
    return out / out.sum()


def _np_entropy_of_power(p, gamma):
    from scipy import stats

    return stats.entropy(_np_power(p, gamma))


def _np_brentq_gamma(p, target):
    from scipy import optimize

    return optimize.brentq(
        lambda b: _np_entropy_of_power(p, math.exp(b)) - target, -12, 12, xtol=1e-14, rtol=1e-14
    )


# --------------------------------------------------------------------------- entropy


@pytest.mark.parametrize("dtype", FLOATS)
def test_entropy_matches_scipy_with_zeros(dtype):
    from scipy import stats

    p = _dirichlet((5, 7), 0.5, seed=0, dtype=dtype)
    p[1, 3] = 0
    p[1] = p[1] / p[1].sum()
    p[2] = torch.tensor([0, 0, 1, 0, 0, 0, 0], dtype=dtype)
    ours = entropy(p)
    ref = torch.tensor(stats.entropy(p.double().numpy(), axis=-1))
    assert ours.dtype == dtype and ours.shape == (5,)
    torch.testing.assert_close(ours.double(), ref, atol=TOL[dtype], rtol=TOL[dtype])
    assert ours[2] == 0  # 0 log 0 = 0: a one-hot has entropy exactly 0
    torch.testing.assert_close(entropy(p.T, dim=0), ours)


@pytest.mark.parametrize("dtype", FLOATS)
def test_entropy_from_logits_matches_scipy_and_masks(dtype):
    from scipy import special, stats

    g = make_generator(1)
    logits = (torch.randn(4, 9, generator=g) * 3).to(dtype)
    logits[0, :4] = -math.inf
    ours = entropy_from_logits(logits)
    ref = stats.entropy(special.softmax(logits.double().numpy(), axis=-1), axis=-1)
    torch.testing.assert_close(ours.double(), torch.tensor(ref), atol=TOL[dtype], rtol=TOL[dtype])
    torch.testing.assert_close(entropy(torch.softmax(logits, -1)), ours, atol=1e-5, rtol=1e-5)
    assert torch.isfinite(ours).all()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0, 10), min_size=1, max_size=12).filter(lambda v: sum(v) > 1e-3))
def test_entropy_bounds(vals):
    p = torch.tensor(vals, dtype=torch.float64)
    p = p / p.sum()
    h = entropy(p).item()
    support = int((p > 0).sum())
    assert -1e-12 <= h <= math.log(support) + 1e-12
    assert (
        abs(
            entropy(torch.full((support,), 1 / support, dtype=torch.float64)).item()
            - math.log(support)
        )
        < 1e-12
    )


# --------------------------------------------------------------------------- power family


@pytest.mark.parametrize("dtype", FLOATS)
def test_power_transform_matches_brute_force(dtype):
    p = _dirichlet((3, 8), 0.7, seed=2, dtype=torch.float64)
    p[0, 5] = 0
    p[0] = p[0] / p[0].sum()
    logits = torch.log(p).to(dtype)
    for gamma in (0.0, 0.3, 1.0, 2.5, 40.0):
        ours = power_transform(logits, gamma)
        ref = torch.tensor(np.stack([_np_power(row, gamma) for row in p.numpy()]))
        torch.testing.assert_close(ours.double(), ref, atol=TOL[dtype] * 10, rtol=TOL[dtype] * 10)
        assert ours[0, 5] == 0  # masked entries stay 0, even at gamma = 0
    uni = power_transform(logits, 0.0)
    torch.testing.assert_close(uni[1].double(), torch.full((8,), 1 / 8, dtype=torch.float64))
    per_row = power_transform(logits, torch.tensor([0.5, 1.0, 3.0], dtype=dtype))
    for i, gm in enumerate((0.5, 1.0, 3.0)):
        torch.testing.assert_close(per_row[i], power_transform(logits[i], gm))


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(-8, 8), min_size=2, max_size=10, unique=True),
    st.floats(0.05, 8),
    st.floats(0.05, 8),
)
def test_power_transform_order_and_composition(vals, a, b):
    o = torch.tensor(vals, dtype=torch.float64)
    ta = power_transform(o, a)
    # order-preserving for gamma > 0 (strict wherever the outputs are distinguishable)
    order = torch.argsort(o)
    assert (ta[order].diff() >= 0).all()
    # T_b(T_a(p)) = T_{ab}(p)
    tab = power_transform(torch.log(ta), b)
    torch.testing.assert_close(tab, power_transform(o, a * b), atol=1e-10, rtol=1e-8)


def test_entropy_curve_matches_scipy_and_is_decreasing():
    p = _dirichlet((2, 20), 1.0, seed=3)
    gammas = torch.logspace(-2, 2, 41, dtype=torch.float64)
    curve = entropy_curve(torch.log(p), gammas)
    assert curve.shape == (41, 2)
    for j, gm in enumerate(gammas.tolist()):
        for i in range(2):
            assert abs(curve[j, i].item() - _np_entropy_of_power(p[i].numpy(), gm)) < 1e-10
    assert (curve.diff(dim=0) < 0).all()
    assert abs(curve[0, 0].item() - math.log(20)) < 1e-3  # gamma -> 0: uniform
    zero = entropy_curve(torch.log(p), torch.tensor([0.0], dtype=torch.float64))
    torch.testing.assert_close(zero, torch.full((1, 2), math.log(20), dtype=torch.float64))
    cols = entropy_curve(torch.log(p).T, gammas, dim=0)
    torch.testing.assert_close(cols, curve)


@pytest.mark.parametrize("dtype", FLOATS)
def test_entropy_derivative_identity_vs_autograd(dtype):
    # dH/dgamma = -gamma Var_gamma[log p], Var under T_gamma(p)
    p = _dirichlet((12,), 0.8, seed=4)
    logp = np.log(p.numpy())
    for gm in (0.2, 1.0, 3.0):
        g = torch.tensor([gm], dtype=dtype, requires_grad=True)
        h = entropy_curve(torch.log(p).to(dtype), g)
        (dh,) = torch.autograd.grad(h.sum(), g)
        q = _np_power(p.numpy(), gm)
        var = (q * (logp - (q * logp).sum()) ** 2).sum()
        assert abs(dh.item() - (-gm * var)) < 50 * TOL[dtype] * max(1, gm * var), (gm, dh, var)
    # the post's linearisation at gamma = 1: slope H^2 - E[(log p)^2] = -Var_p[log p]
    h1 = -(p.numpy() * logp).sum()
    slope = h1**2 - (p.numpy() * logp**2).sum()
    fd = (
        _np_entropy_of_power(p.numpy(), 1 + 1e-6) - _np_entropy_of_power(p.numpy(), 1 - 1e-6)
    ) / 2e-6
    assert abs(slope - fd) < 1e-6 * abs(fd)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-6, 6), min_size=2, max_size=15, unique=True))
def test_entropy_is_monotone_in_gamma_with_both_limits(vals):
    o = torch.tensor(vals, dtype=torch.float64)
    n = len(vals)
    srt = torch.sort(o, descending=True).values
    gap = (srt[0] - srt[1]).item()
    assume(gap > 1e-3)
    gammas = torch.cat([torch.zeros(1, dtype=torch.float64), torch.logspace(-3, 3, 61)])
    curve = entropy_curve(o, gammas)
    assert (curve.diff() <= 1e-12).all()  # dH/dgamma = -gamma Var <= 0
    assert abs(curve[0].item() - math.log(n)) < 1e-12  # gamma = 0: uniform
    # gamma -> 0: T_gamma(p) -> uniform, |q_i - 1/n| = O(gamma * spread of log p)
    q0 = power_transform(o, 1e-9)
    assert (q0 - 1 / n).abs().max() < 1e-7
    # gamma -> inf: one-hot on the argmax, 1 - q_max <= (n - 1) exp(-gamma * gap)
    big = 40.0 / gap
    qi = power_transform(o, big)
    assert qi[o.argmax()].item() > 1 - (n - 1) * math.exp(-40) - 1e-15
    assert entropy_curve(o, torch.tensor([big], dtype=torch.float64)).item() < 1e-12


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.floats(-6, 6), min_size=2, max_size=12, unique=True),
    st.floats(0.0, 1.0),
)
def test_safeguarded_hits_any_legal_target_and_keeps_order(vals, ratio):
    o = torch.tensor(vals, dtype=torch.float64)
    q, gm = entropy_normalize(logits=o, target_ratio=ratio, return_gamma=True)
    assert torch.isfinite(q).all() and gm.item() > 0
    target = ratio * math.log(len(vals))
    # reachable targets are hit; the two ends are only approached inside gamma in [1e-6, 1e6]
    h_lo = entropy_curve(o, torch.tensor([1e6], dtype=torch.float64)).item()
    h_hi = entropy_curve(o, torch.tensor([1e-6], dtype=torch.float64)).item()
    err = abs(entropy(q).item() - min(max(target, h_lo), h_hi))
    assert err < 1e-9, (err, target, h_lo, h_hi)
    # order kept: the largest logit still carries the most mass, ranks never swap
    order = torch.argsort(o)
    assert (q[order].diff() >= 0).all()


def test_first_newton_step_error_is_quadratic_with_the_predicted_constant():
    """The post's one-step gamma_1 = 1 + (H* - H) / (H^2 - sum p (log p)^2) is a Newton step:
    gamma_1 - gamma* = H''(1) / (2 H'(1)^3) * delta^2 + O(delta^3), delta = H* - H(1), with
    H' = -Var[log p], H'' = -Var[log p] - kappa_3[log p] (third central moment), all under p."""
    p = _dirichlet((20,), 1.0, seed=21)
    lp = np.log(p.numpy())
    w = p.numpy()
    h1 = -(w * lp).sum()
    c = lp - (w * lp).sum()
    var, k3 = (w * c**2).sum(), (w * c**3).sum()
    const = (-var - k3) / (2 * (-var) ** 3)
    for delta in (-2e-3, 1e-3, 2e-3):
        _, g1 = entropy_newton_step(p, h1 + delta)
        g_star = math.exp(_np_brentq_gamma(p.numpy(), h1 + delta))
        ratio = (g1.item() - g_star) / delta**2
        assert abs(ratio / const - 1) < 0.02, (delta, ratio, const)


# --------------------------------------------------------------------------- normalisation


@pytest.mark.parametrize("dtype", FLOATS)
def test_safeguarded_matches_brentq(dtype):
    p = _dirichlet((6, 30), 0.5, seed=5)
    ratios = torch.tensor([0.05, 0.2, 0.4, 0.6, 0.8, 0.97], dtype=torch.float64)
    targets = ratios * math.log(30)
    q, gamma = entropy_normalize(p.to(dtype), target=targets.to(dtype), return_gamma=True)
    assert q.dtype == dtype and gamma.shape == (6,)
    for i in range(6):
        ref = math.exp(_np_brentq_gamma(p[i].numpy(), targets[i].item()))
        rel = 1e-8 if dtype == torch.float64 else 2e-4
        assert abs(gamma[i].item() / ref - 1) < rel, (i, gamma[i].item(), ref)
    torch.testing.assert_close(entropy(q).double(), targets, atol=TOL[dtype] * 10, rtol=0)
    # the output is softmax(gamma log p) and keeps the order of p
    torch.testing.assert_close(
        q, power_transform(torch.log(p).to(dtype), gamma), atol=1e-6, rtol=1e-5
    )
    assert torch.equal(torch.argsort(q, stable=True), torch.argsort(p.to(dtype), stable=True))


def test_logits_and_probabilities_agree_and_target_ratio():
    g = make_generator(6)
    logits = torch.randn(3, 15, dtype=torch.float64, generator=g) * 2
    a = entropy_normalize(logits=logits + 7.0, target_ratio=0.3)
    b = entropy_normalize(torch.softmax(logits, -1), target=0.3 * math.log(15))
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(
        entropy(a), torch.full((3,), 0.3 * math.log(15), dtype=torch.float64)
    )


def test_masked_entries_stay_zero_and_ratio_uses_the_support():
    p = _dirichlet((10,), 1.0, seed=7)
    p[[2, 5, 6]] = 0
    p = p / p.sum()
    q = entropy_normalize(p, target_ratio=0.5)
    assert (q[[2, 5, 6]] == 0).all()
    assert abs(entropy(q).item() - 0.5 * math.log(7)) < 1e-10
    logits = torch.log(p)  # -inf where p = 0
    q2, gm = entropy_normalize(logits=logits, target_ratio=0.999, return_gamma=True)
    assert (q2[[2, 5, 6]] == 0).all() and torch.isfinite(q2).all()
    with pytest.raises(ValueError, match=r"^target\b"):
        entropy_normalize(p, target=math.log(9))  # above log |support| = log 7


@pytest.mark.parametrize("dtype", FLOATS)
def test_extreme_targets_give_no_nan(dtype):
    p = _dirichlet((4, 50), 1.0, seed=8, dtype=dtype)
    h_max = math.log(50)
    for target in (0.0, 1e-9, 1e-4, h_max - 1e-4, h_max - 1e-9, h_max):
        q, gm = entropy_normalize(p, target=target, return_gamma=True)
        assert torch.isfinite(q).all() and torch.isfinite(gm).all(), target
        assert (gm > 0).all()
        torch.testing.assert_close(q.sum(-1).double(), torch.ones(4, dtype=torch.float64))
        err = (entropy(q).double() - target).abs().max().item()
        assert err < (1e-6 if dtype == torch.float64 else 1e-4), (target, err)


def test_unreachable_targets_ties_and_uniform_are_clipped_not_nan():
    # ties at the max: H -> log 2 as gamma -> inf, so target 0 stops at the uniform on the ties
    p = torch.tensor([0.4, 0.4, 0.15, 0.05], dtype=torch.float64)
    q, gm = entropy_normalize(p, target=0.0, return_gamma=True)
    torch.testing.assert_close(
        q, torch.tensor([0.5, 0.5, 0, 0], dtype=torch.float64), atol=1e-9, rtol=0
    )
    # uniform input: H(gamma) = log n for every gamma; any lower target is unreachable
    u = torch.full((5,), 0.2, dtype=torch.float64)
    qu = entropy_normalize(u, target=0.5)
    torch.testing.assert_close(qu, u)


def test_newton_method_is_the_posts_iteration_and_converges_fast():
    # the post's reference experiment: 100 random probabilities, target log 30
    g = make_generator(9)
    p = torch.rand(100, dtype=torch.float64, generator=g)
    p = p / p.sum()
    target = math.log(30)
    cur = p
    total = 1.0
    errs = []
    for _ in range(10):
        cur, step = entropy_newton_step(cur, target)
        total *= step.item()
        errs.append(abs(entropy(cur).item() - target))
    assert errs[3] < 1e-7 and errs[4] < 1e-12  # 3-4 iterations converge well (claim C5)
    assert errs[1] < 0.05 * abs(entropy(p).item() - target)  # two steps: rough control
    assert errs[2] < errs[1] ** 2  # quadratic convergence
    # the stable form (cumulative gamma on the original logits) matches the verbatim update
    q, gm = entropy_normalize(p, target=target, method="newton", n_iter=10, return_gamma=True)
    torch.testing.assert_close(q, cur, atol=1e-12, rtol=1e-9)
    assert abs(gm.item() / total - 1) < 1e-9
    ref = math.exp(_np_brentq_gamma(p.numpy(), target))
    assert abs(gm.item() / ref - 1) < 1e-9


def test_raw_newton_step_formula():
    p = _dirichlet((8,), 1.0, seed=10)
    logp = np.log(p.numpy())
    h = -(p.numpy() * logp).sum()
    var = (p.numpy() * logp**2).sum() - h**2
    new, gm = entropy_newton_step(p, 1.0)
    assert abs(gm.item() - (1 + (1.0 - h) / (-var))) < 1e-12
    torch.testing.assert_close(new, torch.tensor(_np_power(p.numpy(), gm.item())))


def test_raw_newton_failure_cases_and_the_safeguarded_fix():
    # (1) far-above target: the first step has a negative exponent and reverses the order
    p = torch.tensor([0.97, 0.01, 0.01, 0.01], dtype=torch.float64)
    target = 0.99 * math.log(4)
    new, gm = entropy_newton_step(p, target)
    assert abs(gm.item() - (-0.978)) < 1e-3
    assert new.argmax().item() != 0  # the mode is now the least likely entry
    q_raw = entropy_normalize(p, target=target, method="newton")
    assert not torch.isfinite(q_raw).all()  # the post's iteration then blows up
    q, g_safe = entropy_normalize(p, target=target, return_gamma=True)
    assert q.argmax().item() == 0 and 0 < g_safe.item() < 1
    assert abs(entropy(q).item() - target) < 1e-10
    # (2) near-uniform start, low target: a huge exponent, every p^gamma underflows -> NaN
    pu = torch.tensor([0.2501, 0.2499, 0.25, 0.25], dtype=torch.float64)
    new, gm = entropy_newton_step(pu, 0.1)
    assert gm.item() > 1e7 and torch.isnan(new).all()
    q = entropy_normalize(pu, target=0.1)
    assert torch.isfinite(q).all() and abs(entropy(q).item() - 0.1) < 1e-8
    # (3) uniform input: Var[log p] = 0, the Newton denominator is zero
    new, gm = entropy_newton_step(torch.full((4,), 0.25, dtype=torch.float64), 0.1)
    assert not torch.isfinite(gm) and torch.isnan(new).all()
    # (4) a zero entry with a negative exponent: 0^(-0.98) = inf -> NaN
    pz = torch.tensor([0.97, 0.01, 0.01, 0.01, 0.0], dtype=torch.float64)
    new, gm = entropy_newton_step(pz, 0.99 * math.log(4))
    assert gm.item() < 0 and not torch.isfinite(new).all()
    assert torch.isfinite(entropy_normalize(pz, target=0.99 * math.log(4))).all()


def test_gradcheck_implicit_gradient():
    g = make_generator(11)
    logits = torch.randn(2, 5, dtype=torch.float64, generator=g, requires_grad=True)
    t = torch.tensor([0.5, 1.2], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda o, tt: entropy_normalize(logits=o, target=tt, return_gamma=True),
        (logits, t),
        fast_mode=True,
    )


def test_batched_equals_per_row_loop():
    p = _dirichlet((2, 3, 4, 16), 0.6, seed=12)
    targets = torch.rand(2, 3, 4, dtype=torch.float64, generator=make_generator(13)) * math.log(16)
    q = entropy_normalize(p, target=targets)
    for idx in np.ndindex(2, 3, 4):
        torch.testing.assert_close(q[idx], entropy_normalize(p[idx], target=targets[idx]))
    qd = entropy_normalize(p.transpose(1, 3), target=targets.transpose(1, 2), dim=1)
    torch.testing.assert_close(qd.transpose(1, 3), q)


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_half_precision(half):
    p = _dirichlet((8, 40), 0.5, seed=14).to(half)
    for r in (0.0, 0.02, 0.5, 0.98, 1.0):
        q = entropy_normalize(p, target_ratio=r)
        assert q.dtype == half and torch.isfinite(q).all()
    assert entropy(p).dtype == half
    torch.testing.assert_close(
        entropy(entropy_normalize(p, target_ratio=0.5)).float(),
        torch.full((8,), 0.5 * math.log(40)),
        atol=0.05,
        rtol=0,
    )


def test_bad_inputs():
    p = torch.full((4,), 0.25)
    with pytest.raises(ValueError, match=r"^p\b"):
        entropy_normalize(p, logits=p, target=0.5)
    with pytest.raises(ValueError, match=r"^p\b"):
        entropy_normalize(target=0.5)
    with pytest.raises(ValueError, match=r"^target\b"):
        entropy_normalize(p, target=0.5, target_ratio=0.5)
    with pytest.raises(ValueError, match=r"^target\b"):
        entropy_normalize(p)
    with pytest.raises(ValueError, match=r"^target\b"):
        entropy_normalize(p, target=-0.1)
    with pytest.raises(ValueError, match=r"^target\b"):
        entropy_normalize(p, target=math.log(4) + 0.01)
    with pytest.raises(ValueError, match=r"^target_ratio\b"):
        entropy_normalize(p, target_ratio=1.5)
    with pytest.raises(ValueError, match=r"^target\b"):
        entropy_normalize(torch.full((2, 4), 0.25), target=torch.tensor([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match=r"^method\b"):
        entropy_normalize(p, target=0.5, method="bisect")
    with pytest.raises(ValueError, match=r"^n_iter\b"):
        entropy_normalize(p, target=0.5, n_iter=-1)
    with pytest.raises(ValueError, match=r"^p\b"):
        entropy_normalize(torch.tensor([0.5, -0.1, 0.6]), target=0.5)
    with pytest.raises(ValueError, match=r"^p\b"):
        entropy_normalize(torch.zeros(3), target=0.0)
    with pytest.raises(ValueError, match=r"^logits\b"):
        entropy_normalize(logits=torch.tensor([0.0, math.nan]), target=0.1)
    with pytest.raises(ValueError, match=r"^gamma\b"):
        power_transform(torch.zeros(3), -1.0)
    with pytest.raises(ValueError, match=r"^gamma\b"):
        power_transform(torch.zeros(2, 3), torch.ones(3))
    with pytest.raises(ValueError, match=r"^gammas\b"):
        entropy_curve(torch.zeros(3), torch.ones(2, 2))
    with pytest.raises(TypeError, match=r"^p\b"):
        entropy(torch.ones(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"^logits\b"):
        entropy_from_logits(torch.tensor(1.0))
    with pytest.raises(ValueError, match=r"^logits\b"):
        entropy_normalize(logits=torch.full((3,), -math.inf), target=0.0)


def test_entropy_rejects_non_distributions():
    """Logits or unnormalised weights passed as p give a clear error, not a silent number/NaN."""
    g = make_generator(61)
    logits = torch.randn(3, 5, generator=g)
    for fn in (entropy, lambda x: entropy_newton_step(x, 0.5)):
        with pytest.raises(ValueError, match=r"^p: expected non-negative"):
            fn(logits)  # logits instead of probabilities
        with pytest.raises(ValueError, match=r"^p: expected probabilities summing to 1"):
            fn(torch.tensor([0.5, 0.7]))
        with pytest.raises(ValueError, match=r"^p: expected finite"):
            fn(torch.tensor([math.nan, 1.0]))
    # the sum is checked along dim, not along the last axis
    cols = torch.softmax(logits, dim=0)
    with pytest.raises(ValueError, match=r"^p: expected probabilities summing to 1"):
        entropy(cols)
    torch.testing.assert_close(
        entropy(cols, dim=0),
        torch.tensor([float(-(c * c.log()).sum()) for c in cols.T]),
    )
    # half-precision softmax output passes (its sum is only ~1 to a few ulps), and matches float32
    for half in (torch.float16, torch.bfloat16):
        p = torch.softmax(torch.randn(4, 300, generator=g), -1)
        ph = p.to(half)
        h = entropy(ph)
        assert h.dtype == half and torch.isfinite(h).all()
        torch.testing.assert_close(
            h.float(), entropy(ph.float() / ph.float().sum(-1, keepdim=True)), atol=0.05, rtol=0
        )


@requires_cuda
def test_cuda():
    dev = torch.device("cuda")
    p = _dirichlet((64, 128), 0.5, seed=15).to(dev)
    for dtype in (torch.float64, torch.float32, torch.float16, torch.bfloat16):
        q, gm = entropy_normalize(p.to(dtype), target_ratio=0.4, return_gamma=True)
        assert q.device.type == "cuda" and q.dtype == dtype and torch.isfinite(q).all()
    q64 = entropy_normalize(p, target_ratio=0.4)
    torch.testing.assert_close(q64.cpu(), entropy_normalize(p.cpu(), target_ratio=0.4))
    assert entropy(p).device.type == "cuda"
    assert entropy_curve(torch.log(p), torch.tensor([1.0, 2.0], device=dev)).shape == (2, 64)
