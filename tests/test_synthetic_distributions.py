"""LinearGaussianLVM: exact marginal, posterior and prior-ESS checked against torch, scipy, MC."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kexue_lib._core import make_generator
from kexue_lib.estimators import effective_sample_size, iwae_bound
from kexue_lib.synthetic.distributions import LinearGaussianLVM
from tests.conftest import requires_cuda


def _model(D=5, k=3, sigma=0.4, seed=0, dtype=torch.float64, device="cpu"):
    g = make_generator(seed)
    W = torch.randn(D, k, generator=g, dtype=torch.float64).to(dtype=dtype, device=device)
    b = torch.randn(D, generator=g, dtype=torch.float64).to(dtype=dtype, device=device)
    return LinearGaussianLVM(W, b, sigma)


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 2e-4)])
def test_log_marginal_against_torch_and_scipy(dtype, tol):
    stats = pytest.importorskip("scipy.stats")
    m = _model(dtype=dtype)
    x = m.sample(7, generator=make_generator(1))
    assert x.dtype == dtype
    ours = m.log_marginal(x)
    assert ours.dtype == dtype and ours.shape == (7,)
    cov = m.W.double() @ m.W.double().T + m.sigma**2 * torch.eye(m.D, dtype=torch.float64)
    ref = torch.distributions.MultivariateNormal(m.b.double(), cov).log_prob(x.double())
    ref_scipy = stats.multivariate_normal(m.b.double().numpy(), cov.numpy()).logpdf(
        x.double().numpy()
    )
    torch.testing.assert_close(ours.double(), ref, rtol=tol, atol=tol)
    torch.testing.assert_close(ours.double(), torch.from_numpy(ref_scipy), rtol=tol, atol=tol)
    # batch shapes are kept
    assert m.log_marginal(x.reshape(7, 1, m.D)).shape == (7, 1)


def test_posterior_against_gaussian_conditioning():
    """The joint of (z, x) is Gaussian: condition it with the Schur complement (numpy)."""
    np = pytest.importorskip("numpy")
    m = _model(D=6, k=2, sigma=0.3, seed=2)
    W, b, s = m.W.numpy(), m.b.numpy(), m.sigma
    S_xx = W @ W.T + s**2 * np.eye(6)
    S_zx = W.T  # Cov(z, x)
    x = m.sample(3, generator=make_generator(3))
    mean, cov = m.posterior(x)
    ref_mean = (S_zx @ np.linalg.solve(S_xx, (x.numpy() - b).T)).T
    ref_cov = np.eye(2) - S_zx @ np.linalg.solve(S_xx, S_zx.T)
    np.testing.assert_allclose(mean.numpy(), ref_mean, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(cov.numpy(), ref_cov, rtol=1e-10, atol=1e-12)
    z = torch.randn(4, 3, 2, generator=make_generator(4), dtype=torch.float64)
    ref_lp = torch.distributions.MultivariateNormal(mean, torch.from_numpy(ref_cov)).log_prob(z)
    torch.testing.assert_close(m.log_posterior(z, x), ref_lp)


def test_sample_moments():
    m = _model(D=4, k=2, sigma=0.5, seed=5)
    n = 200_000
    x, z = m.sample(n, generator=make_generator(6), return_latent=True)
    assert x.shape == (n, 4) and z.shape == (n, 2)
    se = x.std(0) / math.sqrt(n)
    assert ((x.mean(0) - m.b).abs() < 5 * se).all()
    cov = torch.cov(x.T)
    assert (cov - m.marginal_cov()).abs().max() < 0.03


def test_prior_ess_fraction_closed_form_and_monte_carlo():
    # the sheet's case: W = I_k, x = 0: [sigma sqrt(2 + sigma^2) / (1 + sigma^2)]^k
    for k, sigma in [(1, 0.3), (3, 1.0), (10, 0.1)]:
        m = LinearGaussianLVM(torch.eye(k, dtype=torch.float64), None, sigma)
        got = m.prior_ess_fraction(torch.zeros(k, dtype=torch.float64)).item()
        want = (sigma * math.sqrt(2 + sigma**2) / (1 + sigma**2)) ** k
        assert got == pytest.approx(want, rel=1e-10)
    assert (0.3 * math.sqrt(2.09) / 1.09) == pytest.approx(0.397894, abs=1e-6)
    # Monte Carlo: ESS of many prior draws / their number
    m = _model(D=3, k=2, sigma=0.8, seed=7)
    x = m.sample(2, generator=make_generator(8))
    z = torch.randn(400_000, 1, 2, generator=make_generator(9), dtype=torch.float64)
    logw = m.log_likelihood(x, z)
    frac = effective_sample_size(logw) / z.shape[0]
    torch.testing.assert_close(frac, m.prior_ess_fraction(x), rtol=0.03, atol=0)


@settings(max_examples=25, deadline=None)
@given(
    D=st.integers(1, 6),
    k=st.integers(1, 4),
    sigma=st.floats(0.05, 3.0),
    seed=st.integers(0, 10_000),
)
def test_exact_posterior_gives_zero_variance_weights(D, k, sigma, seed):
    """p(x, z) / p(z | x) = p(x) for every z: each importance weight is the marginal."""
    m = _model(D=D, k=k, sigma=sigma, seed=seed)
    x = m.sample(3, generator=make_generator(seed + 1))
    mean, cov = m.posterior(x)
    z = torch.distributions.MultivariateNormal(mean, cov).sample((5,))
    logw = m.log_joint(x, z) - m.log_posterior(z, x)
    exact = m.log_marginal(x)
    torch.testing.assert_close(logw, exact.expand(5, 3), rtol=1e-9, atol=1e-8)
    torch.testing.assert_close(iwae_bound(logw), exact, rtol=1e-9, atol=1e-8)


def test_bad_inputs():
    W = torch.ones(3, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"^W\b"):
        LinearGaussianLVM(torch.ones(3, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"^W\b"):
        LinearGaussianLVM([[1.0]])
    with pytest.raises(ValueError, match=r"^W\b"):
        LinearGaussianLVM(torch.full((2, 2), float("nan")))
    with pytest.raises(ValueError, match=r"^b\b"):
        LinearGaussianLVM(W, torch.zeros(2, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"^sigma\b"):
        LinearGaussianLVM(W, None, 0.0)
    m = LinearGaussianLVM(W, None, 1.0)
    with pytest.raises(ValueError, match=r"^x\b"):
        m.log_marginal(torch.zeros(4, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"^z\b"):
        m.log_prior(torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"^n\b"):
        m.sample(0)


def test_extreme_sigma_is_finite():
    m = LinearGaussianLVM(torch.eye(4, dtype=torch.float64) * 3, None, 1e-4)
    x = m.sample(5, generator=make_generator(0))
    assert torch.isfinite(m.log_marginal(x)).all()
    assert torch.isfinite(m.posterior(x)[1]).all()
    frac = m.prior_ess_fraction(x)
    assert torch.isfinite(frac).all() and (frac >= 0).all() and (frac < 1e-10).all()


@requires_cuda
def test_cuda_keeps_device():
    m = _model(device="cuda")
    x = m.sample(4, generator=make_generator(0, "cuda"))
    assert x.device.type == "cuda"
    assert m.log_marginal(x).device.type == "cuda"
    mean, cov = m.posterior(x)
    assert mean.device.type == "cuda" and cov.device.type == "cuda"


@settings(max_examples=30, deadline=None)
@given(
    D=st.integers(1, 6),
    k=st.integers(1, 4),
    sigma=st.floats(0.05, 3.0),
    seed=st.integers(0, 10_000),
)
def test_prior_ess_fraction_is_a_fraction_and_matches_the_isotropic_law(D, k, sigma, seed):
    """0 < E[w]^2 / E[w^2] <= 1 always (Cauchy-Schwarz); with W = I and x = b it is the
    product of k one-dimensional factors sigma sqrt(2 + sigma^2) / (1 + sigma^2)."""
    m = _model(D=D, k=k, sigma=sigma, seed=seed)
    x = m.sample(4, generator=make_generator(seed + 1))
    frac = m.prior_ess_fraction(x)
    assert ((frac > 0) & (frac <= 1 + 1e-12)).all()
    iso = LinearGaussianLVM(torch.eye(k, dtype=torch.float64), None, sigma)
    b = sigma * math.sqrt(2 + sigma**2) / (1 + sigma**2)
    assert iso.prior_ess_fraction(torch.zeros(k, dtype=torch.float64)).item() == pytest.approx(
        b**k, rel=1e-10
    )
