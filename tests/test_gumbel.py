"""Tests of kexue_lib.gumbel against scipy, torch.multinomial, F.gumbel_softmax and torch.distributions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from kexue_lib._core import make_generator, seeded
from kexue_lib.gumbel import concrete_log_prob, gumbel_max_sample, gumbel_softmax, sample_gumbel
from tests.conftest import requires_cuda

P4 = (0.5, 0.3, 0.15, 0.05)
FLOATS = [torch.float64, torch.float32]


# --------------------------------------------------------------------------- sample_gumbel


@pytest.mark.parametrize("dtype", FLOATS)
def test_sample_gumbel_matches_scipy_gumbel_r(dtype):
    from scipy import stats

    g = sample_gumbel((100_000,), dtype=dtype, generator=make_generator(0))
    assert g.dtype == dtype and g.shape == (100_000,)
    assert torch.isfinite(g).all()
    assert stats.kstest(g.double().numpy(), stats.gumbel_r.cdf).pvalue > 1e-3
    # mean = Euler-Mascheroni constant, variance = pi^2 / 6
    assert abs(g.double().mean().item() - 0.5772156649) < 0.02
    assert abs(g.double().var().item() - math.pi**2 / 6) < 0.05


def test_sample_gumbel_finite_when_rand_hits_0_or_1(monkeypatch):
    for value in (0.0, 1.0):

        def fake_rand(shape, *, dtype, device, generator, _v=value):
            return torch.full(shape, _v, dtype=dtype, device=device)

        monkeypatch.setattr(torch, "rand", fake_rand)
        for dtype in (torch.float64, torch.float32, torch.float16, torch.bfloat16):
            g = sample_gumbel((3,), dtype=dtype)
            assert torch.isfinite(g).all(), (value, dtype, g)


def test_sample_gumbel_generator_reproducible_and_half():
    a = sample_gumbel((5, 4), generator=make_generator(3))
    b = sample_gumbel((5, 4), generator=make_generator(3))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    h = sample_gumbel(7, dtype=torch.bfloat16, generator=make_generator(3))
    assert h.dtype == torch.bfloat16 and h.shape == (7,) and torch.isfinite(h).all()


def test_sample_gumbel_bad_inputs():
    with pytest.raises(TypeError, match=r"^dtype\b"):
        sample_gumbel((3,), dtype=torch.int64)
    with pytest.raises(ValueError, match=r"^shape\b"):
        sample_gumbel((3, -1))


# --------------------------------------------------------------------------- Gumbel-max


@pytest.mark.parametrize("dtype", FLOATS)
def test_gumbel_max_frequencies_chi_square_and_multinomial(dtype):
    from scipy import stats

    n = 200_000
    p = torch.tensor(P4, dtype=dtype)
    logits = p.log() + 1.7  # any shift: only log p up to a constant matters
    y = gumbel_max_sample(logits.expand(n, 4), generator=make_generator(1))
    assert y.dtype == torch.long and y.shape == (n,)
    counts = torch.bincount(y, minlength=4).double().numpy()
    assert np.abs(counts / n - np.array(P4)).max() < 3e-3
    assert stats.chisquare(counts, f_exp=np.array(P4) * n).pvalue > 1e-3
    m = torch.multinomial(p.double(), n, replacement=True, generator=make_generator(2))
    counts_m = torch.bincount(m, minlength=4).double().numpy()
    assert stats.chi2_contingency(np.stack([counts, counts_m])).pvalue > 1e-3


def test_gumbel_max_batch_rows_get_independent_noise():
    # identical rows must not share a noise vector: their samples spread like p
    n = 20_000
    y = gumbel_max_sample(torch.tensor(P4).log().expand(n, 4), generator=make_generator(4))
    freq = torch.bincount(y, minlength=4).double() / n
    assert (freq - torch.tensor(P4, dtype=torch.float64)).abs().max() < 0.015


def test_gumbel_max_never_picks_masked():
    logits = torch.tensor([0.0, -math.inf, 1.0, -math.inf]).expand(5000, 4)
    y = gumbel_max_sample(logits, generator=make_generator(5))
    assert set(y.unique().tolist()) == {0, 2}


def test_gumbel_max_dim_argument():
    g = make_generator(6)
    logits = torch.randn(3, 5, generator=g)
    noise = sample_gumbel((3, 5), generator=g)
    a = gumbel_max_sample(logits, noise=noise)
    b = gumbel_max_sample(logits.T.contiguous(), dim=0, noise=noise.T.contiguous())
    assert torch.equal(a, b)
    assert torch.equal(a, (logits + noise).argmax(-1))


# --------------------------------------------------------------------------- Gumbel-softmax


@pytest.mark.parametrize("dtype", FLOATS)
def test_coupling_argmax_identical_for_every_tau(dtype):
    g = make_generator(7)
    logits = torch.randn(2000, 5, generator=g, dtype=dtype)
    noise = sample_gumbel(logits.shape, dtype=dtype, generator=g)
    y_max = gumbel_max_sample(logits, noise=noise)
    for tau in np.logspace(-2, 1, 9):
        y = gumbel_softmax(logits, float(tau), noise=noise)
        assert y.dtype == dtype
        assert torch.equal(y.argmax(-1), y_max), tau  # exactly 100 %


def test_against_torch_functional_gumbel_softmax_ks():
    from scipy import stats

    n = 100_000
    logits = torch.tensor(P4, dtype=torch.float64).log().expand(n, 4)
    for tau in (0.3, 1.0, 3.0):
        ours = gumbel_softmax(logits, tau, generator=make_generator(8))
        with seeded(9):
            ref = F.gumbel_softmax(logits, tau=tau, hard=False, dim=-1)
        for j in (0, 3):
            assert stats.ks_2samp(ours[:, j].numpy(), ref[:, j].numpy()).pvalue > 1e-3, (tau, j)


def test_relaxed_mean_is_not_p_but_argmax_frequency_is():
    n = 100_000
    p = torch.tensor(P4, dtype=torch.float64)
    noise = sample_gumbel((n, 4), dtype=torch.float64, generator=make_generator(10))
    y = gumbel_softmax(p.log().expand(n, 4), 2.0, noise=noise)
    freq = torch.bincount(y.argmax(-1), minlength=4).double() / n
    assert (freq - p).abs().max() < 5e-3
    assert (y.mean(0) - p).abs().max() > 0.1  # E[y_tau] drifts toward 1/k


@pytest.mark.parametrize("dtype", FLOATS)
def test_limits_tau_to_zero_and_infinity(dtype):
    g = make_generator(11)
    logits = torch.randn(50, 6, generator=g, dtype=dtype)
    noise = sample_gumbel(logits.shape, dtype=dtype, generator=g)
    onehot = F.one_hot((logits + noise).argmax(-1), 6).to(dtype)
    for tau in (1e-30, 1e-12, 1e-6):
        y = gumbel_softmax(logits, tau, noise=noise)
        assert torch.isfinite(y).all()
        torch.testing.assert_close(y, onehot, atol=1e-4, rtol=0)
    y = gumbel_softmax(logits, 1e6, noise=noise)
    torch.testing.assert_close(y, torch.full_like(y, 1 / 6), atol=1e-4, rtol=0)
    # the backward stays finite at a tiny temperature
    x = logits.clone().requires_grad_(True)
    (gumbel_softmax(x, 1e-6, noise=noise) * torch.arange(6, dtype=dtype)).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_gradcheck_with_fixed_noise():
    g = make_generator(12)
    logits = torch.randn(3, 4, dtype=torch.float64, generator=g, requires_grad=True)
    noise = sample_gumbel((3, 4), dtype=torch.float64, generator=g)
    for tau in (0.5, 2.0):
        assert torch.autograd.gradcheck(
            lambda o, t=tau: gumbel_softmax(o, t, noise=noise), (logits,)
        )
    tau_t = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda o, t: gumbel_softmax(o, t, noise=noise), (logits, tau_t))


def test_jacobian_closed_form():
    # d y / d o = (diag(y) - y y^T) / tau
    g = make_generator(13)
    o = torch.randn(5, dtype=torch.float64, generator=g)
    noise = sample_gumbel((5,), dtype=torch.float64, generator=g)
    tau = 0.4
    jac = torch.autograd.functional.jacobian(lambda x: gumbel_softmax(x, tau, noise=noise), o)
    y = torch.softmax((o + noise) / tau, -1)
    torch.testing.assert_close(jac, (torch.diag(y) - torch.outer(y, y)) / tau)


def test_straight_through_forward_is_onehot_and_gradient_is_soft():
    g = make_generator(14)
    logits = torch.randn(64, 5, dtype=torch.float64, generator=g)
    noise = sample_gumbel(logits.shape, dtype=torch.float64, generator=g)
    w = torch.randn(64, 5, dtype=torch.float64, generator=g)
    grads = []
    for hard in (False, True):
        x = logits.clone().requires_grad_(True)
        y = gumbel_softmax(x, 0.5, hard=hard, noise=noise)
        if hard:
            torch.testing.assert_close(
                y.detach(),
                F.one_hot(gumbel_max_sample(logits, noise=noise), 5).double(),
                rtol=0,
                atol=1e-12,
            )
        (w * y).sum().backward()
        grads.append(x.grad)
    torch.testing.assert_close(grads[0], grads[1])


def test_dim_argument_and_tensor_tau():
    g = make_generator(15)
    logits = torch.randn(4, 6, generator=g, dtype=torch.float64)
    noise = sample_gumbel((4, 6), generator=g, dtype=torch.float64)
    a = gumbel_softmax(logits, 0.7, noise=noise)
    b = gumbel_softmax(logits.T, 0.7, dim=0, noise=noise.T)
    torch.testing.assert_close(a, b.T)
    taus = torch.tensor([0.1, 1.0, 3.0, 10.0], dtype=torch.float64)[:, None]
    c = gumbel_softmax(logits, taus, noise=noise)
    for i in range(4):
        torch.testing.assert_close(c[i], torch.softmax((logits[i] + noise[i]) / taus[i], -1))


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.floats(-5, 5), min_size=2, max_size=6),
    st.floats(-50, 50),
    st.floats(0.05, 20),
    st.integers(0, 2**31 - 1),
)
def test_logits_may_replace_log_p(vals, shift, tau, seed):
    # softmax((log p + G)/tau) == softmax((o + G)/tau) for o = log p + c (claim C2)
    o = torch.tensor(vals, dtype=torch.float64)
    noise = sample_gumbel(o.shape, dtype=torch.float64, generator=make_generator(seed))
    a = gumbel_softmax(o + shift, tau, noise=noise)
    b = gumbel_softmax(torch.log_softmax(o, -1), tau, noise=noise)
    torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8)
    torch.testing.assert_close(a.sum(), torch.tensor(1.0, dtype=torch.float64))


@pytest.mark.parametrize("half", [torch.bfloat16, torch.float16])
def test_half_precision_inputs(half):
    n = 100_000
    logits = torch.tensor(P4).log().to(half).expand(n, 4)
    for tau in (1e-3, 0.5, 5.0):
        y = gumbel_softmax(logits, tau, generator=make_generator(16))
        assert y.dtype == half and torch.isfinite(y).all()
    yh = gumbel_softmax(logits, 0.5, hard=True, generator=make_generator(17))
    assert yh.dtype == half and torch.isfinite(yh).all()
    freq = yh.float().mean(0).double()
    assert (freq - torch.tensor(P4, dtype=torch.float64)).abs().max() < 6e-3


# --------------------------------------------------------------------------- Concrete density


@pytest.mark.parametrize("dtype", FLOATS)
def test_concrete_log_prob_matches_relaxed_one_hot_categorical(dtype):
    from torch.distributions import RelaxedOneHotCategorical

    g = make_generator(18)
    logits = torch.randn(5, dtype=dtype, generator=g) * 2
    y = torch.softmax(torch.randn(200, 5, dtype=dtype, generator=g) * 1.5, -1)
    for tau in (0.1, 0.5, 1.0, 4.0):
        ours = concrete_log_prob(y, logits, tau)
        ref = RelaxedOneHotCategorical(torch.tensor(tau, dtype=dtype), logits=logits).log_prob(y)
        tol = 1e-9 if dtype == torch.float64 else 2e-3
        torch.testing.assert_close(ours, ref, atol=tol, rtol=tol)


def test_concrete_density_integrates_to_one_for_two_classes():
    from scipy import integrate

    logits = torch.tensor([0.4, -0.9], dtype=torch.float64)
    for tau in (0.3, 1.0, 2.5):

        def dens(u, t=tau):  # substitute y1 = sigmoid(u): dy1 = y1 (1 - y1) du
            y = torch.sigmoid(torch.tensor([u, -u], dtype=torch.float64))
            return math.exp(concrete_log_prob(y, logits, t).item()) * (y[0] * y[1]).item()

        total, _ = integrate.quad(dens, -80, 80, limit=200, points=[0.0])
        assert abs(total - 1) < 1e-5, (tau, total)


def test_concrete_log_prob_batched_tau():
    g = make_generator(19)
    logits = torch.randn(3, 4, dtype=torch.float64, generator=g)
    y = torch.softmax(torch.randn(3, 4, dtype=torch.float64, generator=g), -1)
    taus = torch.tensor([0.2, 1.0, 3.0], dtype=torch.float64)
    batched = concrete_log_prob(y, logits, taus)
    for i in range(3):
        torch.testing.assert_close(batched[i], concrete_log_prob(y[i], logits[i], float(taus[i])))


# --------------------------------------------------------------------------- bad inputs


def test_bad_inputs():
    logits = torch.zeros(3)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"^tau\b"):
            gumbel_softmax(logits, bad)
        with pytest.raises(ValueError, match=r"^tau\b"):
            concrete_log_prob(torch.full((3,), 1 / 3), logits, bad)
    with pytest.raises(ValueError, match=r"^tau\b"):
        gumbel_softmax(logits, torch.tensor([1.0, 0.0, 2.0]))
    with pytest.raises(TypeError, match=r"^tau\b"):
        gumbel_softmax(logits, "1")
    with pytest.raises(ValueError, match=r"^noise\b"):
        gumbel_softmax(logits, 1.0, noise=torch.zeros(4))
    with pytest.raises(ValueError, match=r"^noise\b"):
        gumbel_max_sample(logits, noise=torch.zeros(2, 3))
    with pytest.raises(TypeError, match=r"^logits\b"):
        gumbel_softmax(torch.zeros(3, dtype=torch.long), 1.0)
    with pytest.raises(ValueError, match=r"^logits\b"):
        gumbel_max_sample(torch.tensor(1.0))
    with pytest.raises(ValueError, match=r"^y\b"):
        concrete_log_prob(torch.full((4,), 0.25), logits, 1.0)
    # y must be a point of the open simplex: logits, unnormalised weights and boundary points
    # used to give a silent number or NaN
    with pytest.raises(ValueError, match=r"^y: expected non-negative"):
        concrete_log_prob(torch.tensor([0.2, -0.5, 1.3]), logits, 1.0)
    with pytest.raises(ValueError, match=r"^y: expected probabilities summing to 1"):
        concrete_log_prob(torch.tensor([0.5, 0.7, 0.1]), logits, 1.0)
    with pytest.raises(ValueError, match=r"^y: expected points inside the open simplex"):
        concrete_log_prob(torch.tensor([1.0, 0.0, 0.0]), logits, 1.0)
    g = make_generator(5)
    y = gumbel_softmax(torch.randn(6, 4, generator=g), 0.5, generator=g).to(torch.bfloat16)
    assert torch.isfinite(concrete_log_prob(y, torch.zeros(4), 0.5)).all()  # bf16 sums pass
    # a tau tensor must broadcast to logits (gumbel_softmax) / the batch (concrete_log_prob)
    # without enlarging it: torch used to raise 'The size of tensor a ...' or broadcast silently
    with pytest.raises(ValueError, match=r"^tau: .* logits shape \(4, 10\), got shape \(3,\)"):
        gumbel_softmax(torch.zeros(4, 10), torch.ones(3), generator=g)
    with pytest.raises(
        ValueError, match=r"^tau: .* logits shape \(4, 10\), got shape \(2, 4, 10\)"
    ):
        gumbel_softmax(torch.zeros(4, 10), torch.ones(2, 4, 10), generator=g)
    with pytest.raises(ValueError, match=r"^tau: .* batch shape \(4,\), got shape \(5,\)"):
        concrete_log_prob(torch.full((4, 3), 1 / 3), torch.zeros(3), torch.ones(5))
    with pytest.raises(ValueError, match=r"^logits: expected a shape broadcastable with y's"):
        concrete_log_prob(torch.full((4, 3), 1 / 3), torch.zeros(2, 3), 1.0)


# --------------------------------------------------------------------------- more references


@pytest.mark.parametrize("dtype", FLOATS)
def test_samples_match_relaxed_one_hot_categorical_rsample(dtype):
    # sample statistics against torch.distributions: KS per coordinate, means, log-density
    from scipy import stats
    from torch.distributions import RelaxedOneHotCategorical

    n = 100_000
    logits = torch.tensor(P4, dtype=dtype).log()
    for tau in (0.5, 2.0):
        ours = gumbel_softmax(logits.expand(n, 4), tau, generator=make_generator(30))
        with seeded(31):
            ref = RelaxedOneHotCategorical(torch.tensor(tau, dtype=dtype), logits=logits).rsample(
                (n,)
            )
        assert ours.dtype == ref.dtype == dtype
        for j in range(4):
            assert stats.ks_2samp(ours[:, j].double(), ref[:, j].double()).pvalue > 1e-3
        se = (ours.double().var(0) / n).sqrt() * math.sqrt(2)
        assert ((ours.double().mean(0) - ref.double().mean(0)).abs() < 5 * se).all()
        # the two samplers give the same law of the log-density (our density, their samples)
        inside = (ours > 0).all(-1) & (ref > 0).all(-1)
        lp_ours = concrete_log_prob(ours[inside].double(), logits.double(), tau)
        lp_ref = concrete_log_prob(ref[inside].double(), logits.double(), tau)
        assert stats.ks_2samp(lp_ours, lp_ref).pvalue > 1e-3


def test_binary_concrete_is_a_logistic_cdf():
    # k = 2: y_1 = sigmoid((o_1 - o_2 + L) / tau) with L = G_1 - G_2 ~ Logistic(0, 1), so
    # P(y_1 <= t) = sigmoid(tau * logit(t) - (o_1 - o_2)); KS against that closed form, and the
    # Concrete density against the derivative of the CDF (finite differences)
    from scipy import stats

    o = torch.tensor([0.7, -0.4], dtype=torch.float64)
    d = (o[0] - o[1]).item()
    n = 100_000
    for tau in (0.3, 1.0, 3.0):
        y1 = gumbel_softmax(o.expand(n, 2), tau, generator=make_generator(32))[:, 0].numpy()

        def cdf(t, tau=tau):
            t = np.clip(t, 1e-300, 1 - 1e-16)
            return 1 / (1 + np.exp(-(tau * np.log(t / (1 - t)) - d)))

        assert stats.kstest(y1, cdf).pvalue > 1e-3, tau
        t = np.linspace(0.02, 0.98, 25)
        h = 1e-6
        num = (cdf(t + h) - cdf(t - h)) / (2 * h)
        y = torch.tensor(np.stack([t, 1 - t], 1))
        dens = concrete_log_prob(y, o, tau).exp().numpy()
        np.testing.assert_allclose(dens, num, rtol=1e-5)


def test_hard_matches_torch_functional_hard():
    # straight-through forward: one-hot with the Gumbel-max law, like F.gumbel_softmax(hard=True)
    from scipy import stats

    n = 200_000
    logits = torch.tensor(P4, dtype=torch.float64).log().expand(n, 4)
    ours = gumbel_softmax(logits, 0.5, hard=True, generator=make_generator(33))
    with seeded(34):
        ref = F.gumbel_softmax(logits, tau=0.5, hard=True)
    for y in (ours, ref):
        assert ((y == 0) | (y == 1)).all() and (y.sum(-1) == 1).all()
    counts = np.stack([ours.sum(0).numpy(), ref.sum(0).numpy()])
    assert stats.chi2_contingency(counts).pvalue > 1e-3
    assert stats.chisquare(counts[0], f_exp=np.array(P4) * n).pvalue > 1e-3


@pytest.mark.parametrize("dtype", FLOATS)
def test_straight_through_gradient_is_its_definition(dtype):
    # ST: forward onehot(argmax(o + G)), backward the Jacobian of the soft sample at that
    # point: d/do [w . y_hard] := J^T w with J = (diag(y) - y y^T) / tau, y = softmax((o+G)/tau)
    g = make_generator(35)
    logits = torch.randn(32, 5, dtype=dtype, generator=g)
    noise = sample_gumbel(logits.shape, dtype=dtype, generator=g)
    w = torch.randn(32, 5, dtype=dtype, generator=g)
    for tau in (0.2, 1.0, 4.0):
        x = logits.clone().requires_grad_(True)
        (w * gumbel_softmax(x, tau, hard=True, noise=noise)).sum().backward()
        y = torch.softmax((logits + noise) / tau, -1)
        jt_w = (y * w - y * (y * w).sum(-1, keepdim=True)) / tau  # J is symmetric
        tol = 1e-12 if dtype == torch.float64 else 1e-5
        torch.testing.assert_close(x.grad, jt_w, atol=tol, rtol=tol)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(-8, 8), min_size=2, max_size=7),
    st.floats(1e-3, 50),
    st.integers(0, 2**31 - 1),
)
def test_property_coupling_simplex_and_shift_invariance(vals, tau, seed):
    o = torch.tensor(vals, dtype=torch.float64)
    noise = sample_gumbel(o.shape, dtype=torch.float64, generator=make_generator(seed))
    y = gumbel_softmax(o, tau, noise=noise)
    # a point of the simplex whose argmax is the Gumbel-max sample (ties aside)
    assert (y >= 0).all() and abs(y.sum().item() - 1) < 1e-12
    x = o + noise
    top2 = x.topk(2).values
    if (top2[0] - top2[1]).item() > 1e-9:
        assert y.argmax().item() == gumbel_max_sample(o, noise=noise).item() == x.argmax().item()
    # ordering: y_i > y_j exactly when o_i + G_i > o_j + G_j (softmax is monotone)
    i, j = 0, 1
    if abs((x[i] - x[j]).item()) > 1e-9 and y[i].item() != y[j].item():
        assert (y[i] > y[j]).item() == (x[i] > x[j]).item()


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(-4, 4), min_size=2, max_size=6),
    st.floats(-20, 20),
    st.floats(0.1, 5),
    st.integers(0, 2**31 - 1),
)
def test_property_concrete_density_shift_and_permutation(vals, shift, tau, seed):
    k = len(vals)
    o = torch.tensor(vals, dtype=torch.float64)
    g = make_generator(seed)
    y = torch.softmax(torch.randn(k, dtype=torch.float64, generator=g), -1)
    a = concrete_log_prob(y, o, tau)
    torch.testing.assert_close(concrete_log_prob(y, o + shift, tau), a, atol=1e-9, rtol=1e-9)
    perm = torch.randperm(k, generator=g)
    torch.testing.assert_close(concrete_log_prob(y[perm], o[perm], tau), a, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float64])
def test_tiny_tau_forward_and_backward_have_no_nan(dtype):
    g = make_generator(36)
    logits = (torch.randn(256, 7, generator=g) * 3).to(dtype)
    for tau in (1e-30, 1e-8, 1e-3):
        for hard in (False, True):
            x = logits.clone().requires_grad_(True)
            y = gumbel_softmax(x, tau, hard=hard, generator=g)
            assert y.dtype == dtype and torch.isfinite(y).all()
            (y * torch.arange(7, dtype=dtype)).sum().backward()
            assert x.grad.dtype == dtype and torch.isfinite(x.grad).all(), (dtype, tau, hard)


# --------------------------------------------------------------------------- CUDA


@requires_cuda
def test_cuda_device_dtype_and_frequencies():
    dev = torch.device("cuda")
    g = make_generator(20, device=dev)
    n = 1_000_000
    logits = torch.tensor(P4, device=dev).log().expand(n, 4)
    assert sample_gumbel((10,), generator=g).device.type == "cuda"
    y = gumbel_max_sample(logits, generator=g)
    assert y.device.type == "cuda"
    freq = torch.bincount(y, minlength=4).double().cpu() / n
    assert (freq - torch.tensor(P4, dtype=torch.float64)).abs().max() < 3e-3
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        ys = gumbel_softmax(logits.to(dtype), 0.3, generator=g)
        assert ys.device.type == "cuda" and ys.dtype == dtype and torch.isfinite(ys).all()
    lp = concrete_log_prob(torch.softmax(logits[:10], -1), logits[:10], 0.5)
    assert lp.device.type == "cuda" and torch.isfinite(lp).all()


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(1, 4), max_size=4),
    st.lists(st.integers(1, 4), max_size=4),
)
def test_private_broadcast_matches_torch(a, b):
    from kexue_lib.gumbel import _broadcast

    try:
        ref = tuple(torch.broadcast_shapes(tuple(a), tuple(b)))
    except RuntimeError:
        ref = None
    assert _broadcast(tuple(a), tuple(b)) == ref


def test_first_sample_does_not_import_sympy():
    # torch.broadcast_shapes imports sympy on first use (seconds in a fresh notebook kernel)
    import subprocess
    import sys

    code = (
        "import sys, torch\n"
        "from kexue_lib.gumbel import concrete_log_prob, gumbel_softmax\n"
        "y = gumbel_softmax(torch.zeros(4, 3), torch.ones(4, 1))\n"
        "concrete_log_prob(y, torch.zeros(3), torch.ones(4))\n"
        "assert 'sympy' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
