"""Tests of the MLP VAEs of kexue_lib.models.vae (GaussianVAE, VMFVAE): every density against
torch.distributions or scipy, the KL against Monte Carlo, and log p(x) against the exact
marginal of a linear-Gaussian model whose encoder is set to the exact posterior."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import distributions as D

from kexue_lib._core import seeded
from kexue_lib.models.vae import VMFVAE, GaussianVAE
from kexue_lib.training import fit, single_thread
from kexue_lib.vmf import vmf_kl_to_uniform
from tests.conftest import gen, requires_cuda

stats = pytest.importorskip("scipy.stats")


def binary(n, x_dim, seed, dtype=torch.float64):
    return (torch.rand(n, x_dim, generator=gen(seed)) < 0.3).to(dtype)


def make(kind, dtype=torch.float64, seed=0, **kw):
    with seeded(seed):
        m = GaussianVAE(12, 3, **kw) if kind == "gauss" else VMFVAE(12, 3, 8.0, **kw)
    return m.to(dtype)


@pytest.mark.parametrize("kind", ["gauss", "vmf"])
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_log_px_given_z_matches_torch_distributions(kind, likelihood):
    m = make(kind, likelihood=likelihood, dec_sigma=0.3)
    x = binary(5, 12, 1)
    z = m.rsample(m.encode(x), (4,), generator=gen(2))
    assert z.shape == (4, 5, 3)
    out = m.decode(z)
    ref = (
        D.Bernoulli(logits=out).log_prob(x).sum(-1)
        if likelihood == "bernoulli"
        else D.Normal(out, 0.3).log_prob(x).sum(-1)
    )
    torch.testing.assert_close(m.log_px_given_z(x, z), ref)


def test_gaussian_densities_and_kl():
    m = make("gauss")
    x = binary(6, 12, 3)
    mean, lv = m.encode(x)
    z = m.rsample((mean, lv), (3,), generator=gen(4))
    q = D.Normal(mean, torch.exp(0.5 * lv))
    torch.testing.assert_close(m.log_q(z, (mean, lv)), q.log_prob(z).sum(-1))
    torch.testing.assert_close(m.log_prior(z), D.Normal(0.0, 1.0).log_prob(z).sum(-1))
    prior = D.Normal(torch.zeros_like(mean), torch.ones_like(mean))
    torch.testing.assert_close(m.kl((mean, lv)), D.kl_divergence(q, prior).sum(-1))


def test_vmf_densities_and_constant_kl():
    m = make("vmf")
    x = binary(6, 12, 5)
    (mu,) = m.encode(x)
    torch.testing.assert_close(mu.norm(dim=-1), torch.ones(6, dtype=torch.float64))
    z = m.rsample((mu,), (3,), generator=gen(6))
    ref = np.stack(
        [stats.vonmises_fisher(mu[b].detach().numpy(), 8.0).logpdf(z[:, b].detach().numpy())
         for b in range(6)], 1)  # fmt: skip
    np.testing.assert_allclose(m.log_q(z, (mu,)).detach().numpy(), ref, rtol=1e-10, atol=1e-9)
    log_area = math.log(4 * math.pi)  # |S^2|
    torch.testing.assert_close(m.log_prior(z), torch.full((3, 6), -log_area, dtype=torch.float64))
    kl = m.kl((mu,))
    assert kl.shape == (6,) and torch.all(kl == kl[0])
    assert kl[0].item() == pytest.approx(vmf_kl_to_uniform(3, 8.0).item())
    # d = 3 closed form: KL = k coth k - 1 + log(k / sinh k)
    assert kl[0].item() == pytest.approx(8 / math.tanh(8) - 1 + math.log(8 / math.sinh(8)))


@pytest.mark.parametrize("kind", ["gauss", "vmf"])
def test_kl_equals_monte_carlo_of_log_ratio(kind):
    """KL = E_q[log q(z|x) - log p(z)], per example, within 4 standard errors."""
    m = make(kind)
    x = binary(4, 12, 7)
    params = m.encode(x)
    with torch.no_grad():
        z = m.rsample(params, (100_000,), generator=gen(8))
        r = m.log_q(z, params) - m.log_prior(z)
    se = r.std(0) / math.sqrt(r.shape[0])
    assert ((r.mean(0) - m.kl(params)).abs() < 4 * se).all()


def linear_gaussian_vae(seed=0, x_dim=6, z_dim=2, sigma=0.5):
    """depth=0: decoder x = W z + b + sigma e. With orthogonal columns in W the posterior is
    diagonal; the encoder is set to it, so every importance weight equals p(x)."""
    torch.manual_seed(seed)
    m = GaussianVAE(x_dim, z_dim, depth=0, likelihood="gaussian", dec_sigma=sigma).double()
    q, _ = torch.linalg.qr(torch.randn(x_dim, z_dim, dtype=torch.float64))
    W = q * torch.tensor([2.0, 0.7], dtype=torch.float64)
    b = torch.randn(x_dim, dtype=torch.float64)
    var = 1 / (1 + (W**2).sum(0) / sigma**2)  # diagonal posterior covariance
    A = var[:, None] * W.T / sigma**2
    with torch.no_grad():
        m.decoder[0].weight.copy_(W)
        m.decoder[0].bias.copy_(b)
        m.encoder[0].weight.zero_()
        m.encoder[0].weight[:z_dim] = A
        m.encoder[0].bias.zero_()
        m.encoder[0].bias[:z_dim] = -A @ b
        m.encoder[0].bias[z_dim:] = var.log()
    exact = D.MultivariateNormal(b, W @ W.T + sigma**2 * torch.eye(x_dim, dtype=torch.float64))
    return m, exact


def test_log_likelihood_exact_for_linear_gaussian_with_true_posterior():
    m, exact = linear_gaussian_vae()
    x = exact.sample((7,))
    ref = exact.log_prob(x)
    torch.testing.assert_close(m.log_likelihood(x, M=50, chunk=16, generator=gen(9)), ref)
    torch.testing.assert_close(m.iw_bound(x, M=1, generator=gen(11)).detach(), ref)
    # the analytic-KL ELBO is tight only in expectation: mean over draws within 4 SE
    e = torch.stack([m.elbo(x, generator=gen(100 + s)).detach() for s in range(400)])
    assert ((e.mean(0) - ref).abs() < 4 * e.std(0) / 20).all()
    # a wrong posterior (encoder perturbed): bounds fall below log p(x), IWAE closes the gap
    with torch.no_grad():
        m.encoder[0].bias[:2] += 0.8
    elbo = torch.stack([m.elbo(x, generator=gen(s)).detach() for s in range(200)]).mean(0)
    ll = m.log_likelihood(x, M=4096, generator=gen(12))
    assert (elbo < ref - 0.05).all()
    assert ((ref - ll).abs() < 0.5 * (ref - elbo)).all()


@pytest.mark.parametrize("kind", ["gauss", "vmf"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shapes_dtypes_determinism_and_loss(kind, dtype):
    m = make(kind, dtype=dtype)
    x = binary(8, 12, 13, dtype=dtype)
    l1 = m.loss(x, generator=gen(14))
    l2 = m.loss(x, generator=gen(14))
    assert l1.dtype == dtype and l1.shape == () and torch.isfinite(l1)
    assert l1.item() == l2.item()
    iw = m.loss(x, M=5, generator=gen(15))
    assert iw.dtype == dtype and torch.isfinite(iw)
    ll = m.log_likelihood(x, M=20, chunk=7, generator=gen(16))
    assert ll.shape == (8,) and ll.dtype == dtype
    assert m.code(x).shape == (8, 3) and m.sample_prior(4, generator=gen(17)).shape == (4, 3)
    assert m.decode(m.sample_prior(4, generator=gen(17))).dtype == dtype
    l1.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())


def test_vmf_vae_trains_and_uses_its_code():
    """A short fit lowers the loss; reconstructions from the example's own code beat those
    from another example's code (the decoder reads z)."""
    x = torch.zeros(64, 12)
    x[:32, :6] = 1.0
    x[32:, 6:] = 1.0
    with seeded(0):
        m = VMFVAE(12, 3, 20.0, hidden=32)
    with single_thread():
        losses = fit(m, lambda g: (x[torch.randint(0, 64, (32,), generator=g)],),
                     lambda mod, xb: mod.loss(xb, generator=gen(1)), steps=150,
                     generator=gen(2), lr=1e-2)  # fmt: skip
    assert np.mean(losses[-20:]) < 0.5 * np.mean(losses[:5])
    with torch.no_grad():
        z = m.code(x)
        own = m.log_px_given_z(x, z).mean()
        other = m.log_px_given_z(x, z.roll(32, 0)).mean()
    assert own > other + 3.0


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"^likelihood\b"):
        GaussianVAE(4, 2, likelihood="poisson")
    with pytest.raises(ValueError, match=r"^z_dim\b"):
        VMFVAE(4, 1, 5.0)
    with pytest.raises(ValueError, match=r"^kappa\b"):
        VMFVAE(4, 3, -1.0)
    with pytest.raises(ValueError, match=r"^dec_sigma\b"):
        GaussianVAE(4, 2, dec_sigma=0.0)
    with pytest.raises(TypeError, match=r"^x_dim\b"):
        GaussianVAE(4.0, 2)
    m = GaussianVAE(4, 2)
    with pytest.raises(ValueError, match=r"^x\b"):
        m.loss(torch.zeros(3, 5))
    with pytest.raises(TypeError, match=r"^x\b"):
        m.loss(torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"^z\b"):
        m.decode(torch.zeros(3, 3))
    with pytest.raises(ValueError, match=r"^M\b"):
        m.loss(torch.zeros(3, 4), M=0)
    with pytest.raises(ValueError, match=r"^sample_shape\b"):
        m.rsample(m.encode(torch.zeros(3, 4)), (0,))


@requires_cuda
@pytest.mark.parametrize("kind", ["gauss", "vmf"])
def test_cuda(kind):
    dev = torch.device("cuda")
    m = make(kind, dtype=torch.float32).to(dev)
    x = binary(16, 12, 18, dtype=torch.float32).to(dev)
    loss = m.loss(x, M=4, generator=gen(19, dev))
    assert loss.device.type == "cuda" and torch.isfinite(loss)
    ll = m.log_likelihood(x, M=64, generator=gen(20, dev))
    assert ll.device.type == "cuda" and torch.isfinite(ll).all()
