"""Tests of kexue_lib.estimators: autograd on the exact expectation, Monte Carlo unbiasedness,
closed-form variances and a 1-D quadrature reference for the pathwise (Gumbel-softmax) mean."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kexue_lib._core import make_generator
from kexue_lib.estimators import (
    pathwise_grad_samples,
    reinforce_grad_samples,
    softmax_expectation_grad,
)
from kexue_lib.gumbel import sample_gumbel

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
