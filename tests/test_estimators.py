"""Tests of kexue_lib.estimators: autograd on the exact expectation, Monte Carlo unbiasedness,
closed-form variances, a 1-D quadrature reference for the pathwise (Gumbel-softmax) mean, the
zeroth-order estimator against Gaussian moment formulas, and the importance-sampling helpers
against torch.logsumexp, numpy and a Gaussian model with a known evidence."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kexue_lib._core import make_generator
from kexue_lib.estimators import (
    effective_sample_size,
    implicit_policy,
    iwae_bound,
    log_mean_exp,
    normal_rsample,
    pathwise_grad_samples,
    reinforce_grad,
    reinforce_grad_samples,
    self_normalized_weights,
    smoothed_value,
    softmax_expectation_grad,
    zo_grad,
)
from kexue_lib.gumbel import sample_gumbel
from tests.conftest import requires_cuda

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
FLOATS = [torch.float64, torch.float32]
LOGITS = (0.3, -0.5, 1.1, 0.0)
REWARD = (1.0, -1.0, 2.0, 0.5)


def _autograd_grad(logits, values):
    o = logits.detach().clone().requires_grad_(True)
    (torch.softmax(o, -1) * values).sum().backward()
    return o.grad


def _assert_mc_close(samples, target, n_se=4.5):
    """Mean of rows within n_se standard errors of ``target`` (per coordinate)."""
    mean = samples.double().mean(0)
    se = samples.double().std(0) / math.sqrt(samples.shape[0])
    z = (mean - target.double()).abs() / se.clamp_min(1e-12)
    assert (z < n_se).all(), (mean, target, z)


# --------------------------------------------------------------------------- exact gradient


@pytest.mark.parametrize("dtype", FLOATS)
def test_softmax_expectation_grad_matches_autograd(dtype):
    g = make_generator(0)
    logits = torch.randn(6, 5, dtype=dtype, generator=g) * 2
    values = torch.randn(6, 5, dtype=dtype, generator=g)
    ours = softmax_expectation_grad(logits, values)
    ref = torch.autograd.functional.jacobian(
        lambda o: (torch.softmax(o, -1) * values).sum(-1), logits
    )
    ref = torch.einsum("iik->ik", ref)
    torch.testing.assert_close(ours, ref)
    assert ours.dtype == dtype


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-6, 6), min_size=2, max_size=7), st.floats(-10, 10))
def test_softmax_expectation_grad_sums_to_zero_and_ignores_shift_of_f(vals, c):
    # shifting all logits leaves p unchanged, so the gradient sums to 0; adding c to f changes nothing
    o = torch.tensor(vals, dtype=torch.float64)
    f = torch.linspace(-1, 2, o.numel(), dtype=torch.float64)
    g = softmax_expectation_grad(o, f)
    assert abs(g.sum().item()) < 1e-12
    torch.testing.assert_close(softmax_expectation_grad(o, f + c), g, atol=1e-10, rtol=1e-9)
    torch.testing.assert_close(g, _autograd_grad(o, f))


# --------------------------------------------------------------------------- REINFORCE


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("baseline", [None, "loo", 0.7])
def test_reinforce_unbiased(dtype, baseline):
    logits = torch.tensor(LOGITS, dtype=dtype)
    reward = torch.tensor(REWARD, dtype=dtype)
    s = reinforce_grad_samples(
        logits, reward, 100_000, baseline=baseline, generator=make_generator(1)
    )
    assert s.shape == (100_000, 4) and s.dtype == dtype
    _assert_mc_close(s, _autograd_grad(logits.double(), reward.double()))


def test_reinforce_variance_closed_form():
    # per-sample covariance trace: sum_y p_y (f_y - b)^2 |e_y - p|^2 - |g|^2
    logits = torch.tensor(LOGITS, dtype=torch.float64)
    f = torch.tensor(REWARD, dtype=torch.float64)
    p = torch.softmax(logits, -1)
    g = _autograd_grad(logits, f)
    eye = torch.eye(4, dtype=torch.float64)
    for b in (0.0, (p * f).sum().item()):
        exact = (p * (f - b) ** 2 * ((eye - p) ** 2).sum(-1)).sum() - (g**2).sum()
        s = reinforce_grad_samples(
            logits, f, 200_000, baseline=b or None, generator=make_generator(2)
        )
        mc = s.var(0).sum()
        assert abs(mc / exact - 1) < 0.02, (b, mc, exact)


def test_reinforce_mean_baseline_bias_factor():
    # batch-mean baseline (including the sample itself) shrinks the expected gradient by (n-1)/n
    logits = torch.tensor(LOGITS, dtype=torch.float64)
    f = torch.tensor(REWARD, dtype=torch.float64)
    g = make_generator(3)
    rows = torch.cat(
        [reinforce_grad_samples(logits, f, 2, baseline="mean", generator=g) for _ in range(4000)]
    )
    exact = _autograd_grad(logits, f)
    _assert_mc_close(rows, exact / 2)
    loo = torch.cat(
        [reinforce_grad_samples(logits, f, 2, baseline="loo", generator=g) for _ in range(4000)]
    )
    _assert_mc_close(loo, exact)


def test_reinforce_callable_reward_equals_table():
    logits = torch.tensor(LOGITS, dtype=torch.float64)
    f = torch.tensor(REWARD, dtype=torch.float64)
    a = reinforce_grad_samples(logits, f, 1000, generator=make_generator(4))
    b = reinforce_grad_samples(logits, lambda y: y @ f, 1000, generator=make_generator(4))
    torch.testing.assert_close(a, b)
    # a non-differentiable reward is fine for the score-function estimator
    step = reinforce_grad_samples(
        logits, lambda y: (y.argmax(-1) >= 2).double(), 100_000, generator=make_generator(5)
    )
    _assert_mc_close(
        step, _autograd_grad(logits, torch.tensor([0.0, 0, 1, 1], dtype=torch.float64))
    )


# --------------------------------------------------------------------------- pathwise


def _two_class_pathwise_mean(delta, tau, c1, c2):
    """d/d o_1 E[c . y_tau] for k = 2 by quadrature: y_1 = sigmoid((delta + L)/tau), L ~ Logistic."""
    from scipy import integrate, special, stats

    def integrand(l):
        s = special.expit((delta + l) / tau)
        return s * (1 - s) / tau * stats.logistic.pdf(l)

    val, _ = integrate.quad(integrand, -60, 60, points=[-delta], limit=200)
    return (c1 - c2) * val


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("tau", [0.3, 1.0, 3.0])
def test_pathwise_mean_matches_quadrature(dtype, tau):
    logits = torch.tensor([0.8, -0.4], dtype=dtype)
    c = torch.tensor([1.5, -0.5], dtype=dtype)
    s = pathwise_grad_samples(c, logits, tau, 100_000, generator=make_generator(6))
    assert s.shape == (100_000, 2) and s.dtype == dtype
    d1 = _two_class_pathwise_mean(1.2, tau, 1.5, -0.5)
    _assert_mc_close(s, torch.tensor([d1, -d1]))
    exact = _autograd_grad(logits.double(), c.double())
    if tau >= 1.0:  # the relaxation is biased for the discrete objective
        assert abs(d1 - exact[0].item()) > 0.05, (d1, exact)


def test_pathwise_closed_form_rows_and_callable():
    logits = torch.tensor(LOGITS, dtype=torch.float64)
    c = torch.tensor(REWARD, dtype=torch.float64)
    noise = sample_gumbel((500, 4), dtype=torch.float64, generator=make_generator(7))
    tau = 0.6
    s = pathwise_grad_samples(c, logits, tau, 500, noise=noise)
    y = torch.softmax((logits + noise) / tau, -1)
    torch.testing.assert_close(
        s, y * (c - (y @ c)[:, None]) / tau
    )  # J^T c, J = (diag y - y y^T)/tau
    # a nonlinear callable: f(y) = sum y^2, grad_y = 2y, row = J^T (2 y)
    q = pathwise_grad_samples(lambda yy: (yy**2).sum(-1), logits, tau, 500, noise=noise)
    gy = 2 * y
    torch.testing.assert_close(q, y * (gy - (y * gy).sum(-1, keepdim=True)) / tau)
    st_rows = pathwise_grad_samples(c, logits, tau, 500, hard=True, noise=noise)
    torch.testing.assert_close(st_rows, s)  # straight-through: the soft gradient


def test_pathwise_bias_vanishes_and_variance_grows_as_tau_shrinks():
    logits = torch.tensor(LOGITS[:3], dtype=torch.float64)
    c = torch.tensor(REWARD[:3], dtype=torch.float64)
    exact = _autograd_grad(logits, c)
    noise = sample_gumbel((100_000, 3), dtype=torch.float64, generator=make_generator(8))
    stats = {}
    for tau in (0.1, 1.0, 10.0):
        s = pathwise_grad_samples(c, logits, tau, 100_000, noise=noise)
        stats[tau] = (((s.mean(0) - exact) ** 2).sum().item(), s.var(0).sum().item())
    assert stats[0.1][0] < stats[1.0][0] < stats[10.0][0]  # bias^2 grows with tau
    assert stats[0.1][1] > stats[1.0][1] > stats[10.0][1]  # variance grows as tau shrinks


# --------------------------------------------------------------------------- bad inputs


def test_bad_inputs():
    o = torch.zeros(3)
    c = torch.ones(3)
    with pytest.raises(ValueError, match=r"^logits\b"):
        reinforce_grad_samples(torch.zeros(2, 3), c, 5)
    with pytest.raises(ValueError, match=r"^logits\b"):
        pathwise_grad_samples(c, torch.zeros(1), 1.0, 5)
    with pytest.raises(ValueError, match=r"^n\b"):
        reinforce_grad_samples(o, c, 0)
    with pytest.raises(TypeError, match=r"^n\b"):
        pathwise_grad_samples(c, o, 1.0, 2.5)
    with pytest.raises(ValueError, match=r"^baseline\b"):
        reinforce_grad_samples(o, c, 5, baseline="median")
    with pytest.raises(ValueError, match=r"^n\b"):
        reinforce_grad_samples(o, c, 1, baseline="loo")
    with pytest.raises(ValueError, match=r"^reward\b"):
        reinforce_grad_samples(o, torch.ones(4), 5)
    with pytest.raises(ValueError, match=r"^reward\b"):
        reinforce_grad_samples(o, lambda y: y, 5)
    with pytest.raises(ValueError, match=r"^tau\b"):
        pathwise_grad_samples(c, o, 0.0, 5)
    with pytest.raises(ValueError, match=r"^f\b"):
        pathwise_grad_samples(torch.ones(4), o, 1.0, 5)
    with pytest.raises(ValueError, match=r"^f\b"):
        pathwise_grad_samples(lambda y: y, o, 1.0, 5)
    with pytest.raises(ValueError, match=r"^noise\b"):
        pathwise_grad_samples(c, o, 1.0, 5, noise=torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"^values\b"):
        softmax_expectation_grad(o, torch.ones(4))
    with pytest.raises(TypeError, match=r"^values\b"):
        softmax_expectation_grad(o, [1.0, 2.0, 3.0])


@needs_cuda
def test_cuda():
    dev = torch.device("cuda")
    g = make_generator(9, device=dev)
    logits = torch.tensor(LOGITS, device=dev)
    f = torch.tensor(REWARD, device=dev)
    r = reinforce_grad_samples(logits, f, 100_000, baseline="loo", generator=g)
    p = pathwise_grad_samples(f, logits, 0.5, 1000, generator=g)
    assert r.device.type == "cuda" and p.device.type == "cuda"
    _assert_mc_close(r.cpu(), _autograd_grad(logits.double().cpu(), f.double().cpu()))
    assert softmax_expectation_grad(logits, f).device.type == "cuda"


def test_pathwise_tau_column_tabulates_many_temperatures():
    logits = torch.tensor(LOGITS, dtype=torch.float64)
    c = torch.tensor(REWARD, dtype=torch.float64)
    noise = sample_gumbel((50, 4), dtype=torch.float64, generator=make_generator(10))
    taus = torch.tensor([0.1, 1.0, 7.0], dtype=torch.float64)
    col = taus.repeat_interleave(50)[:, None]
    s = pathwise_grad_samples(c, logits, col, 150, noise=noise.repeat(3, 1)).reshape(3, 50, 4)
    for j, tau in enumerate(taus.tolist()):
        y = torch.softmax((logits + noise) / tau, -1)
        torch.testing.assert_close(s[j], y * (c - (y @ c)[:, None]) / tau)


# --------------------------------------------------------------------------- batched REINFORCE


def _enumerated_grad(logits, table):
    """sum_y p_y r_y (e_y - p) by an explicit loop over classes (float64)."""
    p = torch.softmax(logits.double(), -1)
    k = p.shape[-1]
    out = torch.zeros_like(p)
    for y in range(k):
        e = torch.zeros(k, dtype=torch.float64)
        e[y] = 1
        out += p[..., y : y + 1] * table.double()[..., y : y + 1] * (e - p)
    return out


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("baseline", [None, "loo", -0.4])
def test_reinforce_grad_batched_matches_enumeration(dtype, baseline):
    g = make_generator(20)
    logits = torch.randn(3, 4, generator=g, dtype=torch.float64).to(dtype)
    target = torch.tensor([0, 2, 3])
    table = torch.nn.functional.one_hot(target, 4).to(dtype)  # accuracy reward
    est = reinforce_grad(logits, table, 60_000, baseline=baseline, generator=make_generator(21))
    assert est.shape == (3, 4) and est.dtype == dtype
    exact = _enumerated_grad(logits, table)
    # variance of one row's estimate <= E[(r - b)^2 |e_y - p|^2] <= (1 + |b|)^2 * 2
    b_abs = abs(baseline) if isinstance(baseline, float) else 1.0  # loo: |b| <= 1
    se = (1 + b_abs) * math.sqrt(2 / 60_000)
    assert (est.double() - exact).abs().max() < 5 * se


def test_reinforce_grad_callable_and_mean_baseline():
    logits = torch.tensor([LOGITS, LOGITS[::-1]], dtype=torch.float64)
    table = torch.tensor(REWARD, dtype=torch.float64)  # broadcast over rows
    a = reinforce_grad(logits, table, 500, baseline="mean", generator=make_generator(22))
    b = reinforce_grad(
        logits, lambda y: y @ table, 500, baseline="mean", generator=make_generator(22)
    )
    torch.testing.assert_close(a, b)
    # with n_samples = 2 the batch-mean baseline halves the expected gradient
    g = make_generator(23)
    rows = torch.stack(
        [reinforce_grad(logits, table, 2, baseline="mean", generator=g) for _ in range(3000)]
    )
    exact = _enumerated_grad(logits, table.expand(2, 4))
    _assert_mc_close(rows.reshape(3000, -1), exact.reshape(-1) / 2)


# --------------------------------------------------------------------------- zeroth order

D = 5


def _quadratic(d=D, seed=30):
    """f(x) = x^T A x / 2 + b^T x + c with an indefinite symmetric A; its gradient and trace."""
    g = make_generator(seed)
    m = torch.randn(d, d, generator=g, dtype=torch.float64)
    a = m @ m.T / d - 0.3 * torch.eye(d, dtype=torch.float64)
    b = torch.randn(d, generator=g, dtype=torch.float64)
    x = torch.randn(d, generator=g, dtype=torch.float64)

    def f(z):
        z64 = z.double()
        return (0.5 * ((z64 @ a) * z64).sum(1) + z64 @ b + 1.7).to(z.dtype)

    return f, a, b, x


def _quad_variances(a, grad, fx, d, eps):
    """Closed-form total variance (trace of covariance) of one Gaussian ZO row on a quadratic.

    With baseline f(x): (d+1)|g|^2 + eps^2 (d+4) ((tr A)^2 + 2 tr A^2) / 4; a constant b adds
    d (f(x) - b)^2 / eps^2 + (d+2)(f(x) - b) tr A; antithetic pairs: (d+1)|g|^2.
    """
    tr, tr2 = torch.trace(a).item(), torch.trace(a @ a).item()
    g2 = (grad @ grad).item()
    v_fx = (d + 1) * g2 + eps**2 * (d + 4) * (tr**2 + 2 * tr2) / 4

    def v_const(b):
        return v_fx + d * (fx - b) ** 2 / eps**2 + (d + 2) * (fx - b) * tr

    b_star = fx + (d + 2) * eps**2 * tr / (2 * d)
    return v_fx, v_const, b_star, (d + 1) * g2


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize(
    "baseline,antithetic",
    [("fx", False), (None, False), ("optimal", False), ("loo", False), (0.3, False), ("fx", True)],
)
def test_zo_quadratic_unbiased_at_any_eps_with_closed_form_variance(dtype, baseline, antithetic):
    f, a, b, x = _quadratic()
    eps = 0.7
    grad = a @ x + b
    fx = f(x[None]).item()
    v_fx, v_const, b_star, v_anti = _quad_variances(a, grad, fx, D, eps)
    n = 200_000
    est, info = zo_grad(
        f,
        x.to(dtype),
        eps,
        n,
        baseline=baseline,
        antithetic=antithetic,
        generator=make_generator(31),
    )
    assert est.dtype == dtype and info["rows"].shape == (n, D)
    assert info["n_evals"] == (2 * n if antithetic else n + (baseline == "fx"))
    _assert_mc_close(info["rows"], grad)
    if antithetic:
        exact = v_anti
    elif baseline == "fx":
        exact = v_fx
    elif baseline == "optimal":
        exact = v_const(b_star)
    elif baseline == "loo":
        exact = v_const(fx + eps**2 * torch.trace(a).item() / 2)  # b -> E f(x + eps u)
    else:
        exact = v_const(baseline or 0.0)
    rel = 0.03 if dtype == torch.float64 else 0.05
    assert abs(info["rows"].double().var(0).sum().item() / exact - 1) < rel
    assert abs(info["var"].item() * n / exact - 1) < rel


def test_zo_optimal_baseline_minimises_variance_over_constants():
    f, a, b, x = _quadratic(d=3, seed=32)
    eps = 1.5
    fx = f(x[None]).item()
    _, v_const, b_star, _ = _quad_variances(a, a @ x + b, fx, 3, eps)
    _, info = zo_grad(f, x, eps, 100_000, baseline=None, generator=make_generator(33))
    u, f_u = info["dirs"], info["rows"][:, 0] * eps / info["dirs"][:, 0]
    grid = torch.linspace(b_star - 2, b_star + 2, 81, dtype=torch.float64)
    emp = torch.stack([(((f_u - c) / eps)[:, None] * u).var(0).sum() for c in grid])
    exact = torch.tensor([v_const(c.item()) for c in grid])
    assert abs(grid[emp.argmin()].item() - b_star) <= 0.1  # grid step 0.05
    assert (emp / exact - 1).abs().max() < 0.03
    # the sheet's b* = E[f(x + eps u) |u|^2] / E|u|^2 estimated from the same draws
    plug_in = (f_u * (u * u).sum(1)).sum() / (u * u).sum()
    assert abs(plug_in.item() - b_star) < 0.05


def test_zo_mean_baseline_shrinks_by_n_minus_one_over_n():
    f, a, b, x = _quadratic(d=2, seed=34)
    grad = a @ x + b
    g = make_generator(35)
    rows = torch.stack(
        [zo_grad(f, x, 0.5, 2, baseline="mean", generator=g)[0] for _ in range(4000)]
    )
    _assert_mc_close(rows, grad / 2)
    loo = torch.stack([zo_grad(f, x, 0.5, 2, baseline="loo", generator=g)[0] for _ in range(4000)])
    _assert_mc_close(loo, grad)


def _cubic(z):
    return (z**3).sum(1)


@pytest.mark.parametrize("dtype", FLOATS)
def test_zo_smoothing_bias_on_cubic_for_each_noise(dtype):
    x = torch.tensor([0.5, -1.0, 0.2], dtype=torch.float64)
    eps, d = 0.6, 3
    gamma = 0.5772156649015329
    exact = {
        # E 3 (x + eps u)^2 for u ~ N(0, 1)
        "gauss": 3 * x**2 + 3 * eps**2,
        # ball of radius eps sqrt(d): E w_i^2 = 1 / (d + 2) on the unit ball
        "sphere": 3 * x**2 + 3 * eps**2 * d / (d + 2),
        # Gumbel: E G = gamma, E G^2 = gamma^2 + pi^2 / 6
        "gumbel": 3 * (x**2 + 2 * x * eps * gamma + eps**2 * (gamma**2 + math.pi**2 / 6)),
    }
    for dist, target in exact.items():
        anti = dist != "gumbel"
        est, info = zo_grad(
            _cubic,
            x.to(dtype),
            eps,
            300_000,
            dist=dist,
            antithetic=anti,
            generator=make_generator(35),
        )
        _assert_mc_close(info["rows"], target)
        assert (est.double() - 3 * x**2).abs().max() > 0.5  # the smoothing bias is real


def test_zo_is_score_function_of_gaussian_policy():
    # ZO rows with b = 0 equal f(x') * d/dx log N(x'; x, eps^2 I) computed by autograd
    f, a, b, x = _quadratic(seed=36)
    eps = 0.3
    _, info = zo_grad(f, x, eps, 64, baseline=None, generator=make_generator(37))
    xp = x + eps * info["dirs"]
    xr = x.clone().requires_grad_(True)
    logp = torch.distributions.Normal(xr, eps).log_prob(xp).sum(1)
    rows = (
        torch.stack([torch.autograd.grad(logp[i], xr, retain_graph=True)[0] for i in range(64)])
        * f(xp)[:, None]
    )
    torch.testing.assert_close(info["rows"], rows, rtol=1e-12, atol=1e-12)


def test_zo_noise_scores_have_identity_second_moment():
    x = torch.zeros(4, dtype=torch.float64)
    # a linear f = c . x' with f(x) = 0: the row is (c . u) w, mean E[w u^T] c = c
    c = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    for dist in ("gauss", "sphere", "gumbel"):
        _, info = zo_grad(
            lambda z: z @ c, x, 1.0, 200_000, dist=dist, baseline=None, generator=make_generator(38)
        )
        u = info["dirs"]
        w = -torch.expm1(-u) if dist == "gumbel" else u
        m = w.T @ w / len(w)
        assert (m - torch.eye(4, dtype=torch.float64)).abs().max() < 0.03, dist
        assert w.mean(0).abs().max() < 0.02
        if dist != "gumbel":
            _assert_mc_close(info["rows"], c)
        if dist == "sphere":
            torch.testing.assert_close(
                u.norm(dim=1), torch.full((200_000,), 2.0, dtype=torch.float64)
            )


def test_zo_sphere_has_smaller_variance_than_gauss_on_linear():
    # exact: Gauss (d+1)|c|^2, sphere (d-1)|c|^2 per row, for f linear with baseline f(x)
    d = 10
    c = torch.linspace(-1, 1, d, dtype=torch.float64)
    x = torch.ones(d, dtype=torch.float64)
    for dist, k in (("gauss", d + 1), ("sphere", d - 1)):
        _, info = zo_grad(lambda z: z @ c, x, 0.1, 100_000, dist=dist, generator=make_generator(39))
        assert abs(info["rows"].var(0).sum().item() / (k * (c @ c).item()) - 1) < 0.03, dist


def test_zo_gumbel_on_hard_argmax_is_the_softmax_policy_gradient():
    # d/do E_G r(argmax(o + G)) = p * (r - p.r): a pure zeroth-order estimate of the exact PG
    o = torch.tensor(LOGITS, dtype=torch.float64)
    r = torch.tensor(REWARD, dtype=torch.float64)
    _, info = zo_grad(
        lambda z: r[z.argmax(1)],
        o,
        1.0,
        300_000,
        dist="gumbel",
        baseline="loo",
        generator=make_generator(40),
    )
    _assert_mc_close(info["rows"], _enumerated_grad(o, r))


def test_zo_piecewise_constant_gives_zero_as_eps_vanishes():
    step = lambda z: (z.sum(1) > 0.3).double()  # noqa: E731
    x = torch.zeros(3, dtype=torch.float64)
    est, _ = zo_grad(step, x, 1e-9, 1000, generator=make_generator(41))
    assert (est == 0).all()
    est, info = zo_grad(step, x, 0.5, 100_000, generator=make_generator(41))
    # smoothed step: P(eps u.1 > 0.3) with u.1 ~ N(0, 3): gradient phi(0.3 / (eps sqrt 3)) / (eps sqrt 3)
    s = 0.5 * math.sqrt(3)
    dens = math.exp(-0.5 * (0.3 / s) ** 2) / math.sqrt(2 * math.pi) / s
    _assert_mc_close(info["rows"], torch.full((3,), dens, dtype=torch.float64))


def test_smoothed_value_closed_forms():
    f, a, b, x = _quadratic(seed=42)
    eps = 0.8
    target = f(x[None]).item() + eps**2 * torch.trace(a).item() / 2
    for dist in ("gauss", "sphere"):
        g = make_generator(43)
        vals = torch.stack(
            [smoothed_value(f, x, eps, 5000, dist=dist, generator=g) for _ in range(30)]
        )
        _assert_mc_close(vals[:, None], torch.tensor([target]))
    v = smoothed_value(_cubic, x[:1].float(), 0.5, 10, generator=make_generator(0))
    assert v.dtype == torch.float32 and v.shape == ()


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.floats(-3, 3), min_size=1, max_size=6),
    st.floats(0.01, 3.0),
    st.sampled_from(["gauss", "sphere"]),
)
def test_zo_antithetic_is_exact_on_linear_functions(xs, eps, dist):
    # (f(x + eps u) - f(x - eps u)) u / (2 eps) = (c . u) u exactly; E[u u^T] = I
    x = torch.tensor(xs, dtype=torch.float64)
    c = torch.arange(1, len(xs) + 1, dtype=torch.float64)
    _, info = zo_grad(
        lambda z: z @ c + 4.0, x, eps, 8, dist=dist, antithetic=True, generator=make_generator(43)
    )
    u = info["dirs"]
    torch.testing.assert_close(info["rows"], (u @ c)[:, None] * u, rtol=1e-9, atol=1e-9)


@settings(max_examples=25, deadline=None)
@given(st.floats(-50, 50), st.sampled_from(["fx", "loo", "optimal", "mean"]))
def test_zo_baselines_ignore_a_constant_shift_of_f(shift, baseline):
    f, a, b, x = _quadratic(d=3, seed=44)
    g0, _ = zo_grad(f, x, 0.4, 16, baseline=baseline, generator=make_generator(45))
    g1, _ = zo_grad(
        lambda z: f(z) + shift, x, 0.4, 16, baseline=baseline, generator=make_generator(45)
    )
    torch.testing.assert_close(g0, g1, rtol=1e-8, atol=1e-8)


# --------------------------------------------------------------------------- implicit policy


def test_implicit_policy_gumbel_is_softmax():
    from scipy import stats

    o = torch.tensor(LOGITS, dtype=torch.float64)
    n = 200_000
    p_hat = implicit_policy(lambda z: z, o, 1.0, n, noise="gumbel", generator=make_generator(50))
    p = torch.softmax(o, -1)
    chi2 = stats.chisquare((p_hat * n).numpy(), (p * n).numpy())
    assert chi2.pvalue > 1e-3, chi2


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("eps", [0.2, 1.0, 3.0])
def test_implicit_policy_gauss_two_classes_is_probit(dtype, eps):
    o = torch.tensor([0.4, -0.1], dtype=dtype)
    n = 200_000
    p_hat = implicit_policy(lambda z: z, o, eps, n, generator=make_generator(51))
    assert p_hat.dtype == dtype and abs(p_hat.sum().item() - 1) < 1e-6
    p1 = 0.5 * math.erfc(-(0.5 / (math.sqrt(2) * eps)) / math.sqrt(2))
    assert abs(p_hat[0].item() - p1) < 4.5 * math.sqrt(p1 * (1 - p1) / n)


def test_implicit_policy_parameter_noise_and_ties():
    # a linear classifier's scores W theta: perturbing the parameters, not the logits
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]], dtype=torch.float64)
    theta = torch.tensor([0.3, 0.1], dtype=torch.float64)
    p_hat = implicit_policy(lambda t: t @ w.T, theta, 0.5, 4000, generator=make_generator(52))
    assert p_hat.shape == (3,) and abs(p_hat.sum().item() - 1) < 1e-12
    # brute force: the same noise, argmax by a Python loop
    g = make_generator(52)
    u = torch.randn(4000, 2, generator=g, dtype=torch.float64)
    counts = torch.zeros(3, dtype=torch.float64)
    for row in (theta + 0.5 * u) @ w.T:
        counts[max(range(3), key=lambda i: row[i].item())] += 1
    torch.testing.assert_close(p_hat, counts / 4000)
    # a constant score: every class ties, broken uniformly at random
    flat = implicit_policy(
        lambda t: torch.zeros(len(t), 4), theta, 1.0, 40_000, generator=make_generator(53)
    )
    assert (flat - 0.25).abs().max() < 4.5 * math.sqrt(0.25 * 0.75 / 40_000)


# --------------------------------------------------------------------------- normal_rsample


@pytest.mark.parametrize("dtype", FLOATS)
def test_normal_rsample_law_and_gradients(dtype):
    from scipy import stats

    mu = torch.tensor([0.5, -2.0], dtype=dtype, requires_grad=True)
    sigma = torch.tensor([1.5, 0.2], dtype=dtype, requires_grad=True)
    z = normal_rsample(mu, sigma, (50_000,), generator=make_generator(60))
    assert z.shape == (50_000, 2) and z.dtype == dtype
    for j in range(2):
        ks = stats.kstest(
            z[:, j].detach().double().numpy(), "norm", args=(mu[j].item(), sigma[j].item())
        )
        assert ks.pvalue > 1e-3
    z.sum().backward()
    assert torch.allclose(mu.grad, torch.full_like(mu, 50_000.0))
    eps = (z.detach() - mu.detach()) / sigma.detach()
    torch.testing.assert_close(sigma.grad, eps.sum(0), rtol=1e-4, atol=1e-2)
    s = normal_rsample(torch.zeros(3, dtype=dtype), 2.0, generator=make_generator(61))
    assert s.shape == (3,) and s.dtype == dtype


# --------------------------------------------------------------------------- importance sampling


@pytest.mark.parametrize("dtype", FLOATS)
def test_log_mean_exp_against_logsumexp_and_numpy(dtype):
    import numpy as np

    lw = (torch.randn(7, 5, 3, generator=make_generator(70), dtype=torch.float64) * 4).to(dtype)
    for dim in (0, 1, -1):
        ref = torch.logsumexp(lw, dim) - math.log(lw.shape[dim])
        torch.testing.assert_close(log_mean_exp(lw, dim), ref)
        np.testing.assert_allclose(
            log_mean_exp(lw, dim).double().numpy(),
            np.log(np.exp(lw.double().numpy()).mean(axis=dim)),
            rtol=1e-5 if dtype == torch.float32 else 1e-12,
        )
    assert log_mean_exp(lw, 1, keepdim=True).shape == (7, 1, 3)
    big = torch.tensor([1000.0, 1000.0, -math.inf], dtype=dtype)
    torch.testing.assert_close(log_mean_exp(big), torch.tensor(1000 + math.log(2 / 3), dtype=dtype))
    assert log_mean_exp(torch.full((4,), -math.inf, dtype=dtype)).item() == -math.inf
    half = log_mean_exp(torch.tensor([80.0, 81.0], dtype=torch.bfloat16))
    assert half.dtype == torch.bfloat16 and torch.isfinite(half)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-300, 300), min_size=1, max_size=20), st.floats(-1e3, 1e3))
def test_log_mean_exp_properties(xs, c):
    lw = torch.tensor(xs, dtype=torch.float64)
    v = log_mean_exp(lw).item()
    assert lw.mean().item() - 1e-9 <= v <= lw.max().item() + 1e-9  # Jensen and max
    assert abs(log_mean_exp(lw + c).item() - (v + c)) < 1e-9 * max(1.0, abs(v + c))
    ess = effective_sample_size(lw).item()
    assert 1 - 1e-9 <= ess <= len(xs) + 1e-9
    assert abs(effective_sample_size(lw + c).item() - ess) < 1e-8 * ess
    w = self_normalized_weights(lw)
    assert abs(w.sum().item() - 1) < 1e-12 and (w >= 0).all()
    # Kish's ESS is 1 / sum of squared normalised weights
    assert abs(ess - 1 / (w**2).sum().item()) < 1e-8 * ess


def test_effective_sample_size_and_weights_against_numpy():
    import numpy as np

    lw = torch.randn(50, 4, generator=make_generator(71), dtype=torch.float64) * 2
    w = np.exp(lw.numpy())
    np.testing.assert_allclose(
        effective_sample_size(lw).numpy(), w.sum(0) ** 2 / (w**2).sum(0), rtol=1e-12
    )
    np.testing.assert_allclose(self_normalized_weights(lw).numpy(), w / w.sum(0), rtol=1e-12)
    np.testing.assert_allclose(
        effective_sample_size(lw.T, dim=1).numpy(), effective_sample_size(lw).numpy()
    )
    one = torch.tensor([0.0, -math.inf, -math.inf])
    assert effective_sample_size(one).item() == 1.0
    assert effective_sample_size(torch.zeros(9)).item() == pytest.approx(9.0)
    assert effective_sample_size(torch.tensor([1e4, 0.0])).item() == 1.0  # no overflow


def test_self_normalized_importance_sampling_estimate():
    # E_p[z] for p = N(1, 1) with proposal q = N(0, 2^2): consistent, error O(1/sqrt(n))
    g = make_generator(72)
    z = 2 * torch.randn(200_000, generator=g, dtype=torch.float64)
    p, q = torch.distributions.Normal(1.0, 1.0), torch.distributions.Normal(0.0, 2.0)
    lw = p.log_prob(z) - q.log_prob(z)
    est = (self_normalized_weights(lw) * z).sum().item()
    ess = effective_sample_size(lw).item()
    assert abs(est - 1) < 5 / math.sqrt(ess)
    # ESS / n -> 1 / E_q[(p/q)^2] = 1 / (4/sqrt(7) * exp(1/7))  (closed form for these Gaussians)
    assert abs(ess / 200_000 - 1 / (4 / math.sqrt(7) * math.exp(1 / 7))) < 0.02


def test_iwae_bound_on_a_gaussian_model_with_known_evidence():
    # z ~ N(0, 1), x | z ~ N(z, 1): log p(x) = log N(x; 0, 2); posterior N(x/2, 1/2)
    x = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    log_px = torch.distributions.Normal(0.0, math.sqrt(2)).log_prob(x)

    def log_w(q_mean, q_std, m, seed):
        z = normal_rsample(q_mean, q_std, (m,), generator=make_generator(seed))
        lp = torch.distributions.Normal(0.0, 1.0).log_prob(z) + torch.distributions.Normal(
            z, 1.0
        ).log_prob(x)
        return lp - torch.distributions.Normal(q_mean, q_std).log_prob(z)

    # exact posterior: every weight equals p(x), so every M gives log p(x) exactly
    exact_q = log_w(x / 2, math.sqrt(0.5), 5, 73)
    torch.testing.assert_close(iwae_bound(exact_q), log_px)
    # a too-wide proposal N(x/2, 1): M = 1 is the ELBO; the bound rises with M toward log p(x)
    elbo = log_px - 0.5 * (2 * 1.0 - 1 - math.log(2 * 1.0))  # KL(N(m,1) || N(m,1/2))
    means = []
    for m in (1, 4, 64):
        lw = log_w(x / 2, torch.ones(3, dtype=torch.float64), m * 4000, 74).reshape(m, 4000, 3)
        b = iwae_bound(lw)
        assert b.shape == (4000, 3)
        means.append(b.mean(0))
        if m == 1:
            _assert_mc_close(b, elbo)
    assert (means[0] < means[1]).all() and (means[1] < means[2]).all()
    assert (means[2] <= log_px + 1e-3).all() and ((log_px - means[2]) < 0.01).all()


# --------------------------------------------------------------------------- new bad inputs


def test_bad_inputs_new_functions():
    f = _cubic
    x = torch.zeros(3)
    with pytest.raises(TypeError, match=r"^f\b"):
        zo_grad(3.0, x, 0.1, 4)
    with pytest.raises(ValueError, match=r"^x\b"):
        zo_grad(f, torch.zeros(2, 3), 0.1, 4)
    with pytest.raises(TypeError, match=r"^x\b"):
        zo_grad(f, torch.zeros(3, dtype=torch.long), 0.1, 4)
    with pytest.raises(ValueError, match=r"^x\b"):
        zo_grad(f, torch.tensor([0.0, math.nan]), 0.1, 4)
    with pytest.raises(ValueError, match=r"^eps\b"):
        zo_grad(f, x, 0.0, 4)
    with pytest.raises(ValueError, match=r"^n_dirs\b"):
        zo_grad(f, x, 0.1, 0)
    with pytest.raises(TypeError, match=r"^n_dirs\b"):
        zo_grad(f, x, 0.1, 4.0)
    with pytest.raises(ValueError, match=r"^dist\b"):
        zo_grad(f, x, 0.1, 4, dist="uniform")
    with pytest.raises(ValueError, match=r"^baseline\b"):
        zo_grad(f, x, 0.1, 4, baseline="median")
    with pytest.raises(ValueError, match=r"^baseline\b"):
        zo_grad(f, x, 0.1, 4, baseline=math.inf)
    with pytest.raises(ValueError, match=r"^n_dirs\b"):
        zo_grad(f, x, 0.1, 1, baseline="optimal")
    with pytest.raises(ValueError, match=r"^baseline\b"):
        zo_grad(f, x, 0.1, 4, baseline="loo", antithetic=True)
    with pytest.raises(ValueError, match=r"^antithetic\b"):
        zo_grad(f, x, 0.1, 4, dist="gumbel", antithetic=True)
    with pytest.raises(TypeError, match=r"^antithetic\b"):
        zo_grad(f, x, 0.1, 4, antithetic=1)
    with pytest.raises(ValueError, match=r"^f\b"):
        zo_grad(lambda z: z, x, 0.1, 4)
    with pytest.raises(ValueError, match=r"^f\b"):
        zo_grad(lambda z: z.sum(1) * math.nan, x, 0.1, 4)
    with pytest.raises(ValueError, match=r"^n\b"):
        smoothed_value(f, x, 0.1, 0)
    with pytest.raises(ValueError, match=r"^eps\b"):
        implicit_policy(lambda t: t, x, -1.0, 5)
    with pytest.raises(ValueError, match=r"^noise\b"):
        implicit_policy(lambda t: t, x, 1.0, 5, noise="sphere")
    with pytest.raises(ValueError, match=r"^score_fn\b"):
        implicit_policy(lambda t: t[:, 0], x, 1.0, 5)
    with pytest.raises(ValueError, match=r"^score_fn\b"):
        implicit_policy(lambda t: t[:, :1], x, 1.0, 5)
    with pytest.raises(ValueError, match=r"^theta\b"):
        implicit_policy(lambda t: t, torch.zeros(2, 2), 1.0, 5)
    with pytest.raises(ValueError, match=r"^logits\b"):
        reinforce_grad(torch.zeros(3, 1), torch.zeros(3, 1), 5)
    with pytest.raises(ValueError, match=r"^reward\b"):
        reinforce_grad(torch.zeros(3, 2), torch.zeros(4, 2), 5)
    with pytest.raises(ValueError, match=r"^reward\b"):
        reinforce_grad(torch.zeros(3, 2), lambda y: y, 5)
    with pytest.raises(ValueError, match=r"^n_samples\b"):
        reinforce_grad(torch.zeros(3, 2), torch.zeros(3, 2), 1, baseline="loo")
    with pytest.raises(ValueError, match=r"^sigma\b"):
        normal_rsample(torch.zeros(2), 0.0)
    with pytest.raises(ValueError, match=r"^sigma\b"):
        normal_rsample(torch.zeros(2), torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match=r"^sigma\b"):
        normal_rsample(torch.zeros(2), torch.ones(3))
    with pytest.raises(TypeError, match=r"^mu\b"):
        normal_rsample([0.0], 1.0)
    with pytest.raises(ValueError, match=r"^sample_shape\b"):
        normal_rsample(torch.zeros(2), 1.0, (-1,))
    with pytest.raises(TypeError, match=r"^logw\b"):
        log_mean_exp(torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"^logw\b"):
        log_mean_exp(torch.tensor(1.0))
    with pytest.raises(ValueError, match=r"^logw\b"):
        log_mean_exp(torch.zeros(0, 3))
    with pytest.raises(ValueError, match=r"^logw\b"):
        log_mean_exp(torch.tensor([0.0, math.nan]))
    with pytest.raises(ValueError, match=r"^dim\b"):
        log_mean_exp(torch.zeros(3), dim=1)
    with pytest.raises(ValueError, match=r"^log_w\b"):
        iwae_bound(torch.tensor(0.0))
    with pytest.raises(ValueError, match=r"^logw\b"):
        effective_sample_size(torch.full((3,), -math.inf))
    with pytest.raises(ValueError, match=r"^logw\b"):
        self_normalized_weights(torch.tensor([0.0, math.inf]))


@requires_cuda
def test_cuda_new_functions():
    dev = torch.device("cuda")
    g = make_generator(80, device=dev)
    x = torch.tensor([0.5, -1.0], device=dev)
    est, info = zo_grad(_cubic, x, 0.3, 100_000, antithetic=True, generator=g)
    assert est.device.type == "cuda" and info["rows"].device.type == "cuda"
    _assert_mc_close(info["rows"].cpu(), 3 * x.cpu() ** 2 + 3 * 0.3**2)
    p = implicit_policy(lambda t: t, x, 1.0, 1000, noise="gumbel", generator=g)
    assert p.device.type == "cuda"
    lw = torch.randn(8, 3, device=dev, generator=g)
    for fn in (log_mean_exp, iwae_bound, effective_sample_size, self_normalized_weights):
        assert fn(lw).device.type == "cuda"
    assert normal_rsample(x, 1.0, (4,), generator=g).device.type == "cuda"
    assert reinforce_grad(
        x[None].expand(3, 2), torch.ones(3, 2, device=dev), 10, generator=g
    ).is_cuda
