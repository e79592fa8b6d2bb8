"""Tests of kexue_lib.vmf against closed forms (d = 3), scipy.special.ive and
scipy.stats.vonmises_fisher, plus finite differences for the reparameterisation gradient."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kexue_lib.vmf import (
    VMFCosineSampler,
    VMFReparam,
    vmf_cosine_log_density,
    vmf_kl_to_uniform,
    vmf_log_normalizer,
    vmf_log_prob,
    vmf_mean_length,
    vmf_rsample,
)
from tests.conftest import gen, requires_cuda

stats = pytest.importorskip("scipy.stats")
special = pytest.importorskip("scipy.special")
needs_vmf = pytest.mark.skipif(
    not hasattr(stats, "vonmises_fisher"), reason="scipy >= 1.11 has vonmises_fisher"
)


def e1(d: int) -> np.ndarray:
    mu = np.zeros(d)
    mu[0] = 1.0
    return mu


# --------------------------------------------------------------------------- constants


@pytest.mark.parametrize("kappa", [0.01, 1.0, 10.0, 300.0, 1e4])
def test_d3_closed_forms(kappa):
    """d = 3: Z = 4 pi sinh(k)/k, A = coth k - 1/k, KL = k coth k - 1 + log(k / sinh k)."""
    log_sinh = kappa + math.log1p(-math.exp(-2 * kappa)) - math.log(2)
    coth = 1 / math.tanh(kappa)
    log_z = math.log(4 * math.pi) + log_sinh - math.log(kappa)
    a = coth - 1 / kappa
    kl = kappa * coth - 1 + math.log(kappa) - log_sinh
    assert vmf_log_normalizer(3, kappa).item() == pytest.approx(log_z, rel=1e-11, abs=1e-11)
    assert vmf_mean_length(3, kappa).item() == pytest.approx(a, rel=1e-6, abs=1e-9)
    assert vmf_kl_to_uniform(3, kappa).item() == pytest.approx(kl, rel=1e-6, abs=1e-8)


@pytest.mark.parametrize(
    "d, kappa", [(2, 0.5), (4, 3.0), (16, 32.0), (64, 10.0), (128, 100.0), (512, 1e4)]
)
def test_normalizer_quad_vs_bessel(d, kappa):
    """Quadrature in the angle vs the closed form (2 pi)^(d/2) I_(d/2-1)(k) / k^(d/2-1)."""
    nu = d / 2 - 1
    ref = (
        0.5 * d * math.log(2 * math.pi)
        + math.log(special.ive(nu, kappa))
        + kappa
        - nu * math.log(kappa)
    )
    got = vmf_log_normalizer(d, kappa)
    assert got.dtype == torch.float64
    assert got.item() == pytest.approx(ref, rel=1e-9, abs=1e-8)
    assert vmf_log_normalizer(d, kappa, method="bessel").item() == pytest.approx(ref, rel=1e-12)
    a_ref = special.ive(d / 2, kappa) / special.ive(nu, kappa)
    assert vmf_mean_length(d, kappa).item() == pytest.approx(a_ref, rel=1e-8, abs=1e-12)


def test_normalizer_kappa_zero_is_sphere_area():
    # |S^2| = 4 pi, |S^15| = 2 pi^8 / 7!
    assert vmf_log_normalizer(3, 0.0).item() == pytest.approx(math.log(4 * math.pi))
    area15 = math.log(2 * math.pi**8 / math.factorial(7))
    assert vmf_log_normalizer(16, 0.0).item() == pytest.approx(area15, rel=1e-12)
    assert vmf_kl_to_uniform(16, 0.0).item() == 0.0
    assert vmf_mean_length(16, 0.0).item() == 0.0


def test_normalizer_where_bessel_underflows():
    """ive(383, 50) underflows to 0 (log Z = -inf); the quadrature stays finite and agrees
    with an arbitrary-precision Bessel function (mpmath)."""
    assert special.ive(383, 50.0) == 0.0
    got = vmf_log_normalizer(768, 50.0).item()
    assert math.isfinite(got)
    assert got == pytest.approx(-1457.097, abs=2e-3)  # the fact sheet's value; mpmath below
    mpmath = pytest.importorskip("mpmath")
    ref = (
        384 * math.log(2 * math.pi)
        + float(mpmath.log(mpmath.besseli(383, 50)))
        - 383 * math.log(50)
    )
    assert got == pytest.approx(ref, rel=1e-10)


@needs_vmf
@pytest.mark.parametrize("d, kappa", [(3, 2.0), (16, 32.0), (100, 50.0), (512, 1e4)])
def test_kl_vs_scipy_entropy(d, kappa):
    """KL(vMF || U) = log|S^(d-1)| - H[vMF]; the sheet quotes 7.58214 nats at (16, 32)."""
    log_area = math.log(2) + d / 2 * math.log(math.pi) - math.lgamma(d / 2)
    ref = log_area - stats.vonmises_fisher(e1(d), kappa).entropy()
    assert vmf_kl_to_uniform(d, kappa).item() == pytest.approx(ref, rel=1e-8, abs=1e-8)


def test_sheet_numbers():
    assert vmf_mean_length(16, 32.0).item() == pytest.approx(0.78990, abs=5e-6)
    assert vmf_kl_to_uniform(16, 32.0).item() == pytest.approx(7.58214, abs=5e-6)
    # the non-monotone KL in d at kappa = 10 (vMF sheet, E2)
    for d, kl in [(2, 1.543), (3, 1.996), (8, 2.540), (64, 0.755)]:
        assert vmf_kl_to_uniform(d, 10.0).item() == pytest.approx(kl, abs=1e-3)


@settings(max_examples=25, deadline=None)
@given(d=st.integers(2, 300), log_kappa=st.floats(-2.0, 8.0))
def test_derivative_of_log_normalizer_is_mean_length(d, log_kappa):
    """d log Z / d kappa = A_d(kappa) (Z is a moment generating function); KL >= 0; A in [0, 1)."""
    kappa = math.exp(log_kappa)
    h = 1e-4 * max(kappa, 1.0)
    fd = (vmf_log_normalizer(d, kappa + h) - vmf_log_normalizer(d, kappa - h)).item() / (2 * h)
    a = vmf_mean_length(d, kappa).item()
    assert 0.0 <= a < 1.0
    assert fd == pytest.approx(a, rel=1e-5, abs=1e-7)
    assert vmf_kl_to_uniform(d, kappa).item() >= 0.0


def test_cosine_log_density_integrates_to_one_and_matches_shape():
    """Gauss-Jacobi quadrature with weight (1 - w^2)^((d-3)/2) integrates the density to 1."""
    for d, kappa in [(3, 5.0), (16, 32.0), (2, 1.0), (200, 40.0)]:
        a = (d - 3) / 2
        x, wt = special.roots_jacobi(400, a, a)
        logp = vmf_cosine_log_density(torch.tensor(x), d, kappa).numpy()
        total = np.sum(wt * np.exp(logp - a * np.log1p(-x * x)))
        assert total == pytest.approx(1.0, abs=1e-9)
    w = torch.tensor([-1.5, -1.0, 0.3, 1.0], dtype=torch.float32)
    out = vmf_cosine_log_density(w, 16, 32.0)
    assert out.dtype == torch.float32
    assert torch.isneginf(out[[0, 1, 3]]).all() and torch.isfinite(out[2])
    # log-density differences follow kappa w + (d-3)/2 log(1-w^2) exactly
    ws = torch.tensor([0.1, 0.7], dtype=torch.float64)
    lp = vmf_cosine_log_density(ws, 16, 32.0)
    expect = 32.0 * 0.6 + 6.5 * (math.log(1 - 0.49) - math.log(1 - 0.01))
    assert (lp[1] - lp[0]).item() == pytest.approx(expect, rel=1e-12)


# --------------------------------------------------------------------------- sampling


@pytest.mark.parametrize("d, kappa", [(2, 1.0), (16, 32.0), (128, 100.0), (3, 1e4), (512, 10.0)])
def test_sampler_mean_within_mc_error(d, kappa):
    w = VMFCosineSampler(d, kappa).sample(200_000, generator=gen(0))
    mpmath = pytest.importorskip("mpmath")
    a = float(mpmath.besseli(d / 2, kappa) / mpmath.besseli(d / 2 - 1, kappa))
    se = w.std().item() / math.sqrt(w.numel())
    assert abs(w.mean().item() - a) < 4 * se, (w.mean().item(), a, se)
    assert w.dtype == torch.float64 and w.shape == (200_000,)


@pytest.mark.parametrize("kappa", [0.5, 20.0, 1e4])
def test_sampler_d3_exact_cdf_ks(kappa):
    """d = 3: F(w) = (e^(k w) - e^(-k)) / (e^k - e^(-k)), written stably; one-sample KS."""
    w = VMFCosineSampler(3, kappa).sample(20_000, generator=gen(1)).numpy()

    def cdf(x):
        return (np.exp(kappa * (x - 1)) - np.exp(-2 * kappa)) / (-np.expm1(-2 * kappa))

    assert cdf(-1.0) == pytest.approx(0.0, abs=1e-15) and cdf(1.0) == pytest.approx(1.0)
    assert stats.kstest(w, cdf).pvalue > 1e-3


@needs_vmf
@pytest.mark.parametrize("d, kappa", [(4, 2.0), (16, 32.0), (100, 300.0)])
def test_rsample_vs_scipy_vonmises_fisher(d, kappa):
    """Two-sample KS on w = mu.z against scipy's sampler, for a random direction mu."""
    rng = np.random.default_rng(0)
    mu = rng.standard_normal(d)
    mu /= np.linalg.norm(mu)
    n = 20_000
    mu_t = torch.tensor(mu).expand(n, d)
    z = vmf_rsample(mu_t, kappa, generator=gen(2))
    w = (z @ torch.tensor(mu)).numpy()
    ref = stats.vonmises_fisher(mu, kappa).rvs(n, random_state=3) @ mu
    assert stats.ks_2samp(w, ref).pvalue > 1e-3
    # the mean resultant vector is A_d(kappa) mu (direction and length)
    mean = z.mean(0)
    a = vmf_mean_length(d, kappa).item()
    se = z.std(0).max().item() / math.sqrt(n)
    torch.testing.assert_close(mean, a * torch.tensor(mu), atol=5 * se, rtol=0)


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-6)])
def test_rsample_geometry(dtype, tol):
    mu = torch.randn(1000, 7, dtype=dtype, generator=gen(4)) * 3
    z = vmf_rsample(mu, 5.0, generator=gen(5))
    assert z.dtype == dtype and z.shape == mu.shape
    assert (z.norm(dim=-1) - 1).abs().max().item() < tol
    # the part orthogonal to mu_hat has norm sin(phi) = sqrt(1 - w^2)
    mh = mu / mu.norm(dim=-1, keepdim=True)
    w = (z * mh).sum(-1)
    perp = z - w[:, None] * mh
    assert (perp.norm(dim=-1) - (1 - w * w).clamp_min(0).sqrt()).abs().max().item() < 10 * tol**0.5


def test_rsample_gradient_matches_finite_differences():
    """Autograd through z = cos(phi) mu_hat + sin(phi) nu(mu) vs central differences with the
    same random numbers (same generator seed)."""
    d, kappa = 6, 8.0
    sampler = VMFCosineSampler(d, kappa)
    mu = torch.randn(3, d, dtype=torch.float64, generator=gen(6), requires_grad=True)
    c = torch.randn(3, d, dtype=torch.float64, generator=gen(7))

    def f(m):
        return (vmf_rsample(m, kappa, sampler=sampler, generator=gen(8)) * c).sum()

    (grad,) = torch.autograd.grad(f(mu), mu)
    assert grad.abs().sum() > 0
    fd = torch.zeros_like(mu)
    h = 1e-6
    with torch.no_grad():
        for i in range(mu.shape[0]):
            for j in range(d):
                e = torch.zeros_like(mu)
                e[i, j] = h
                fd[i, j] = (f(mu + e) - f(mu - e)) / (2 * h)
    torch.testing.assert_close(grad, fd, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("d, kappa", [(512, 1e4), (3, 1e4), (512, 1e-3), (2, 1e6)])
def test_extreme_parameters_give_no_nan(dtype, d, kappa):
    mu = torch.randn(64, d, generator=gen(9)).to(dtype).requires_grad_()
    z = vmf_rsample(mu, kappa, generator=gen(10))
    assert z.dtype == dtype and torch.isfinite(z).all()
    z.float().pow(2).sum().backward()
    assert torch.isfinite(mu.grad).all()
    for f in (vmf_log_normalizer, vmf_mean_length, vmf_kl_to_uniform):
        assert torch.isfinite(f(d, kappa))
    if dtype == torch.float32:
        w = (z.detach() * torch.nn.functional.normalize(mu.detach(), dim=-1)).sum(-1)
        a = vmf_mean_length(d, kappa).item()
        assert abs(w.mean().item() - a) < 0.05 * (1 - a) + 1e-3


def test_sampler_reproducible_and_different_seeds_differ():
    s = VMFCosineSampler(16, 32.0)
    a = s.sample((4, 5), generator=gen(11))
    b = s.sample((4, 5), generator=gen(11))
    c = s.sample((4, 5), generator=gen(12))
    assert a.shape == (4, 5)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_reparam_module():
    layer = VMFReparam(16, 32.0)
    mu = torch.randn(50_000, 16, generator=gen(13))
    z = layer(mu, generator=gen(14))
    assert z.shape == mu.shape
    # the same draw as the functional form with the same random numbers
    z2 = vmf_rsample(mu, 32.0, sampler=VMFCosineSampler(16, 32.0), generator=gen(14))
    torch.testing.assert_close(z, z2)
    w = (z * torch.nn.functional.normalize(mu, dim=-1)).sum(-1)
    se = w.std().item() / math.sqrt(w.numel())
    assert abs(w.mean().item() - 0.789895) < 4 * se
    assert layer.kl().item() == pytest.approx(7.58214, abs=5e-6)
    assert "kappa=32" in repr(layer)
    assert len(layer.state_dict()) == 0  # the table is rebuilt, not saved
    # a half-precision module still samples from a float64 table
    zh = layer.half()(mu.half(), generator=gen(14))
    assert zh.dtype == torch.float16 and torch.isfinite(zh).all()
    assert layer.cdf.dtype == torch.float64 and layer.phi.dtype == torch.float64


# --------------------------------------------------------------------------- bad inputs


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"^d\b"):
        vmf_log_normalizer(1, 1.0)
    with pytest.raises(TypeError, match=r"^d\b"):
        vmf_mean_length(3.0, 1.0)
    with pytest.raises(ValueError, match=r"^kappa\b"):
        vmf_kl_to_uniform(3, -1.0)
    with pytest.raises(ValueError, match=r"^kappa\b"):
        VMFCosineSampler(3, float("nan"))
    with pytest.raises(ValueError, match=r"^kappa\b"):
        vmf_rsample(torch.randn(2, 3), torch.tensor(1.0, requires_grad=True))
    with pytest.raises(ValueError, match=r"^method\b"):
        vmf_log_normalizer(3, 1.0, method="series")
    with pytest.raises(ValueError, match=r"^n_grid\b"):
        VMFCosineSampler(3, 1.0, n_grid=4)
    with pytest.raises(TypeError, match=r"^mu\b"):
        vmf_rsample(torch.ones(2, 3, dtype=torch.long), 1.0)
    with pytest.raises(ValueError, match=r"^mu\b"):
        vmf_rsample(torch.ones(2, 1), 1.0)
    with pytest.raises(ValueError, match=r"^mu\b"):
        vmf_rsample(torch.tensor([[float("nan"), 1.0, 0.0]]), 1.0)
    with pytest.raises(ValueError, match=r"^sampler\b"):
        vmf_rsample(torch.randn(2, 4), 1.0, sampler=VMFCosineSampler(3, 1.0))
    with pytest.raises(TypeError, match=r"^sampler\b"):
        vmf_rsample(torch.randn(2, 4), 1.0, sampler="table")
    with pytest.raises(ValueError, match=r"^mu\b"):
        VMFReparam(4, 1.0)(torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"^sample_shape\b"):
        VMFCosineSampler(3, 1.0).sample((-1,))
    with pytest.raises(TypeError, match=r"^w\b"):
        vmf_cosine_log_density([0.1], 3, 1.0)


# --------------------------------------------------------------------------- log density


def _unit(rng, *shape):
    x = rng.standard_normal(shape)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@needs_vmf
@pytest.mark.parametrize("d, kappa", [(2, 0.5), (3, 2.0), (16, 32.0), (100, 300.0), (5, 1e4)])
def test_log_prob_vs_scipy_logpdf(d, kappa):
    rng = np.random.default_rng(d)
    mu = _unit(rng, d)
    x = vmf_rsample(torch.tensor(mu).expand(50, d), kappa, generator=gen(d)).numpy()
    x = np.concatenate([x, _unit(rng, 50, d)])  # draws near mu and points anywhere
    ref = stats.vonmises_fisher(mu, kappa).logpdf(x)
    got = vmf_log_prob(torch.tensor(x), torch.tensor(mu), kappa)
    assert got.dtype == torch.float64 and got.shape == (100,)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10, atol=1e-8)
    # float32 keeps its digits near mu (chord form) even where kappa * (mu.x) ~ 1e4
    got32 = vmf_log_prob(torch.tensor(x, dtype=torch.float32), torch.tensor(mu), kappa)
    assert got32.dtype == torch.float64  # promoted with mu's float64
    got32 = vmf_log_prob(torch.tensor(x, dtype=torch.float32), torch.tensor(mu).float(), kappa)
    assert got32.dtype == torch.float32
    np.testing.assert_allclose(got32.double().numpy(), ref, rtol=1e-5, atol=1e-6 * max(kappa, 1))


def test_log_prob_integrates_to_one():
    """d = 2: integrate over the circle; d = 3: Monte Carlo over uniform points (|S^2| E[p] = 1)."""
    t = torch.linspace(0, 2 * math.pi, 20_001, dtype=torch.float64)[:-1]
    circle = torch.stack([t.cos(), t.sin()], -1)
    mu = torch.tensor([0.6, 0.8], dtype=torch.float64)
    for kappa in (0.0, 1.0, 30.0):
        p = vmf_log_prob(circle, mu, kappa).exp()
        assert (p.mean() * 2 * math.pi).item() == pytest.approx(1.0, abs=1e-10)
    from kexue_lib.geometry import sample_sphere

    x = sample_sphere(400_000, 3, dtype=torch.float64, generator=gen(7))
    p = vmf_log_prob(x, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64), 2.0).exp()
    est, se = (4 * math.pi * p).mean().item(), (4 * math.pi * p).std().item() / math.sqrt(4e5)
    assert abs(est - 1) < 4 * se


@settings(max_examples=30, deadline=None)
@given(d=st.integers(2, 40), log_kappa=st.floats(-3.0, 7.0), seed=st.integers(0, 2**31 - 1))
def test_log_prob_rotation_invariance_and_cosine_law(d, log_kappa, seed):
    """log p(Rx | R mu) = log p(x | mu) for orthogonal R; differences are kappa * (mu.x - mu.y);
    at mu = x the value is kappa - log Z (the mode)."""
    kappa = math.exp(log_kappa)
    rng = np.random.default_rng(seed)
    x, y, mu = (torch.tensor(_unit(rng, d)) for _ in range(3))
    q, _ = torch.linalg.qr(torch.tensor(rng.standard_normal((d, d))))
    lp = vmf_log_prob(x, mu, kappa)
    scale = max(1.0, kappa)
    assert vmf_log_prob(q @ x, q @ mu, kappa).item() == pytest.approx(lp.item(), abs=1e-10 * scale)
    diff = (lp - vmf_log_prob(y, mu, kappa)).item()
    assert diff == pytest.approx(kappa * (mu @ x - mu @ y).item(), abs=1e-10 * scale)
    mode = kappa - vmf_log_normalizer(d, kappa).item()
    assert vmf_log_prob(mu, 3.0 * mu, kappa).item() == pytest.approx(mode, abs=1e-10 * scale)


def test_log_prob_broadcast_gradient_and_extremes():
    mu = torch.randn(4, 1, 6, dtype=torch.float64, generator=gen(8), requires_grad=True)
    x = torch.nn.functional.normalize(
        torch.randn(5, 6, dtype=torch.float64, generator=gen(9)), dim=-1
    )
    lp = vmf_log_prob(x, mu, 3.0)
    assert lp.shape == (4, 5)
    # gradient w.r.t. mu: kappa * (I - m m^T) x / |mu| summed over x (projection of the cosine)
    lp.sum().backward()
    m = mu.detach() / mu.detach().norm(dim=-1, keepdim=True)
    proj = x.sum(0) - (m * x.sum(0)).sum(-1, keepdim=True) * m
    torch.testing.assert_close(mu.grad, 3.0 * proj / mu.detach().norm(dim=-1, keepdim=True))
    # large d and kappa: finite, no overflow (the Bessel route of scipy returns inf here)
    for d, kappa in [(768, 50.0), (512, 1e4), (3, 1e6)]:
        e = torch.zeros(d, dtype=torch.float64)
        e[0] = 1.0
        for dtype in (torch.float32, torch.float64):
            out = vmf_log_prob(e.to(dtype), e.to(dtype), kappa)
            assert torch.isfinite(out) and out.dtype == dtype


def test_log_prob_bad_inputs():
    mu = torch.tensor([1.0, 0.0, 0.0])
    with pytest.raises(ValueError, match=r"^x\b"):
        vmf_log_prob(torch.tensor([2.0, 0.0, 0.0]), mu, 1.0)
    with pytest.raises(ValueError, match=r"^x\b"):
        vmf_log_prob(torch.tensor([1.0, 0.0]), mu, 1.0)
    with pytest.raises(TypeError, match=r"^x\b"):
        vmf_log_prob([1.0, 0.0, 0.0], mu, 1.0)
    with pytest.raises(ValueError, match=r"^mu\b"):
        vmf_log_prob(mu, torch.tensor([float("inf"), 0.0, 0.0]), 1.0)
    with pytest.raises(ValueError, match=r"^kappa\b"):
        vmf_log_prob(mu, mu, -0.5)


# --------------------------------------------------------------------------- the post's table


def test_uniform_grid_reproduces_the_post_and_its_failure():
    """The post's table (uniform in w) is right when its step resolves (d-1)/(2 kappa) and
    biased when it does not: at d = 3, kappa = 1e4 a step of 1e-3 gives E[w] ~ 0.9985, the
    exact value is 0.9999 (= coth k - 1/k); the adaptive angle grid matches it."""
    exact = 1 / math.tanh(1e4) - 1e-4
    n = 200_000
    coarse = VMFCosineSampler(3, 1e4, grid="uniform", n_grid=1999).sample(n, generator=gen(10))
    fine = VMFCosineSampler(3, 1e4).sample(n, generator=gen(10))
    se = fine.std().item() / math.sqrt(n)
    assert abs(fine.mean().item() - exact) < 4 * se
    assert coarse.mean().item() == pytest.approx(0.9985, abs=2e-4)
    assert exact - coarse.mean().item() > 100 * se
    # a resolving uniform grid agrees with the exact d = 3 CDF (one-sample KS)
    w = VMFCosineSampler(3, 20.0, grid="uniform", n_grid=200_000).sample(20_000, generator=gen(11))

    def cdf(x):
        return (np.exp(20 * (x - 1)) - np.exp(-40)) / (-np.expm1(-40))

    assert stats.kstest(w.numpy(), cdf).pvalue > 1e-3
    assert "grid='uniform'" in repr(VMFCosineSampler(3, 1.0, grid="uniform"))
    with pytest.raises(ValueError, match=r"^grid\b"):
        VMFCosineSampler(3, 1.0, grid="chebyshev")


@requires_cuda
def test_cuda_sampling():
    dev = torch.device("cuda")
    mu = torch.randn(100_000, 16, device=dev, generator=gen(15, dev))
    layer = VMFReparam(16, 32.0).to(dev)
    z = layer(mu, generator=gen(16, dev))
    assert z.device.type == "cuda"
    w = (z * torch.nn.functional.normalize(mu, dim=-1)).sum(-1)
    assert abs(w.mean().item() - 0.789895) < 0.003
    z2 = vmf_rsample(mu, 32.0, generator=gen(16, dev))
    assert z2.device.type == "cuda" and torch.isfinite(z2).all()
    s = VMFCosineSampler(16, 32.0, device=dev)
    assert s.sample(10, generator=gen(17, dev)).device.type == "cuda"
    assert vmf_log_normalizer(16, 32.0, device=dev).device.type == "cuda"
    lp = vmf_log_prob(z2[:10], mu[:10], 32.0)
    assert lp.device.type == "cuda" and torch.isfinite(lp).all()
