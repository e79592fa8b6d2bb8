"""kexue_lib.hsic against independent references.

References: the O(n^3) textbook formula with an explicit centring matrix H, brute-force
U-statistic sums over 4-tuples, the linear-kernel covariance identity, ``dcor`` (distance
covariance = 4 HSIC with the distance kernel), ``hyppo`` (its kernel Hsic is a distance
correlation of the Gram matrices), Gretton's gamma test written out in numpy, and Monte Carlo
for the closed-form population HSIC of a bivariate normal.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats

from kexue_lib import hsic as H
from kexue_lib._core import make_generator
from tests.conftest import requires_cuda


def _sample(n, dx=1, dy=1, *, seed=0, dep=0.5, dtype=torch.float64, device="cpu"):
    g = make_generator(seed)
    x = torch.randn(n, dx, generator=g, dtype=torch.float64)
    y = dep * x[:, :1] ** 2 + torch.randn(n, dy, generator=g, dtype=torch.float64)
    return x.to(device, dtype), y.to(device, dtype)


def _textbook(K, L):
    """tr(K H L H) / n^2 with H = I - 11^T / n formed explicitly (O(n^3))."""
    n = K.shape[0]
    Hm = torch.eye(n, dtype=K.dtype) - torch.full((n, n), 1.0 / n, dtype=K.dtype)
    return torch.trace(K @ Hm @ L @ Hm) / n**2


def _np_gauss(x, s):
    d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    return np.exp(-d2 / (2 * s * s))


# --------------------------------------------------------------------------- algebra


@pytest.mark.parametrize("kernel", H.KERNELS)
def test_biased_matches_textbook_trace_and_three_term_form(kernel):
    x, y = _sample(40, 3, 2, seed=1)
    K, L = H.gram(x, kernel), H.gram(y, kernel)
    n = K.shape[0]
    ours = H.hsic_from_grams(K, L)
    assert torch.allclose(ours, _textbook(K, L), atol=1e-12, rtol=1e-10)
    # the three expectations of the chapter, each replaced by a plain sample mean
    three = (K * L).mean() + K.mean() * L.mean() - 2 * (K.mean(1) * L.mean(1)).mean()
    assert torch.allclose(ours, three, atol=1e-12, rtol=1e-10)
    Hm = torch.eye(n, dtype=K.dtype) - 1.0 / n
    assert torch.allclose(H.center_gram(K), Hm @ K @ Hm, atol=1e-12)
    # the public entry point agrees with the Gram route
    assert torch.allclose(H.hsic(x, y, kernel_x=kernel, kernel_y=kernel), ours, atol=1e-14)


def test_unbiased_matches_brute_force_u_statistic():
    x, y = _sample(8, 2, 1, seed=2)
    K, L = H.gaussian_gram(x, 0.9).numpy(), H.gaussian_gram(y, 1.3).numpy()
    n = 8
    total, count = 0.0, 0
    for i, j, q, r in itertools.permutations(range(n), 4):
        total += K[i, j] * L[i, j] + K[i, j] * L[q, r] - 2 * K[i, j] * L[i, q]
        count += 1
    brute = total / count
    ours = H.hsic(x, y, bandwidth_x=0.9, bandwidth_y=1.3, estimator="unbiased").item()
    assert abs(ours - brute) < 1e-12


def test_linear_kernel_is_squared_cross_covariance():
    x, y = _sample(50, 3, 4, seed=3)
    xc, yc = x - x.mean(0), y - y.mean(0)
    cov = xc.T @ yc / x.shape[0]
    ours = H.hsic(x, y, kernel_x="linear", kernel_y="linear")
    assert torch.allclose(ours, (cov**2).sum(), atol=1e-13, rtol=1e-11)


def test_median_bandwidth_matches_numpy_and_skips_ties():
    x, _ = _sample(31, 2, seed=4)
    x = torch.cat([x, x[:3]])  # ties: zero distances are skipped, as in Gretton's code
    d2 = ((x[:, None] - x[None]) ** 2).sum(-1).numpy()
    iu = np.triu_indices(len(x), 1)
    v = d2[iu]
    ref = math.sqrt(0.5 * np.median(v[v > 0]))
    assert abs(H.median_bandwidth(x).item() - ref) < 1e-12
    # squared gaps of 0..4: 1 (x4), 4 (x3), 9 (x2), 16; median 4, so s = sqrt(2)
    assert (
        abs(H.median_bandwidth(torch.arange(5.0, dtype=torch.float64)).item() - math.sqrt(2))
        < 1e-15
    )


def test_distance_gram_and_gaussian_gram_closed_forms():
    x, _ = _sample(12, 3, seed=5)
    xn = x.numpy()
    r = np.linalg.norm(xn, axis=1)
    d = np.linalg.norm(xn[:, None] - xn[None], axis=-1)
    np.testing.assert_allclose(
        H.distance_gram(x).numpy(), 0.5 * (r[:, None] + r[None] - d), atol=1e-12
    )
    np.testing.assert_allclose(H.gaussian_gram(x, 0.7).numpy(), _np_gauss(xn, 0.7), atol=1e-13)
    np.testing.assert_allclose(H.linear_gram(x).numpy(), xn @ xn.T, atol=1e-13)


# --------------------------------------------------------------------------- established packages


def test_distance_kernel_is_quarter_distance_covariance_dcor():
    dcor = pytest.importorskip("dcor")
    x, y = _sample(60, 2, 3, seed=6)
    K, L = H.distance_gram(x), H.distance_gram(y)
    v = dcor.distance_covariance_sqr(x.numpy(), y.numpy())  # V-statistic
    u = dcor.u_distance_covariance_sqr(x.numpy(), y.numpy())  # U-statistic
    assert abs(4 * H.hsic_from_grams(K, L).item() - v) < 1e-12 * max(1, abs(v))
    assert abs(4 * H.hsic_from_grams(K, L, estimator="unbiased").item() - u) < 1e-12 * max(
        1, abs(u)
    )


def test_cka_and_unbiased_against_hyppo():
    hyppo = pytest.importorskip("hyppo.independence")
    x, y = _sample(70, 2, 1, seed=7)
    K, L = H.gram(x), H.gram(y)
    # hyppo's kernel Hsic is the (biased, square-rooted) distance correlation of K and L
    stat_b = hyppo.Hsic(compute_kernel=None, bias=True).statistic(K.numpy(), L.numpy())
    assert abs(stat_b**2 - H.cka(x, y, kernel="gaussian").item()) < 1e-10
    # unbiased: U-centring of zero-diagonal Gram matrices is Song's unbiased HSIC
    Kt, Lt = K.clone().fill_diagonal_(0), L.clone().fill_diagonal_(0)
    stat_u = hyppo.Hsic(compute_kernel=None, bias=False).statistic(Kt.numpy(), Lt.numpy())

    def hu(A, B):
        return H.hsic_from_grams(A, B, estimator="unbiased").item()

    assert abs(stat_u - hu(K, L) / math.sqrt(hu(K, K) * hu(L, L))) < 1e-10


@pytest.mark.filterwarnings("ignore:The number of replications:RuntimeWarning")
def test_permutation_p_value_agrees_with_hyppo_within_monte_carlo_error():
    hyppo = pytest.importorskip("hyppo.independence")
    x, y = _sample(40, 1, 1, seed=8, dep=0.25)
    K, L = H.gram(x), H.gram(y)
    reps = 300
    _, p_ref = hyppo.Hsic(compute_kernel=None, bias=True).test(
        K.numpy(), L.numpy(), reps=reps, auto=False, random_state=0
    )
    res = H.hsic_permutation_test(x, y, n_perm=reps, generator=make_generator(0))
    assert 0.02 < res.p_value < 0.9  # a moderately dependent sample: the comparison has teeth
    se = math.sqrt(2 * p_ref * (1 - p_ref) / reps)
    assert abs(res.p_value - p_ref) < 4 * se + 2 / reps, (res.p_value, p_ref)


def _gretton_gamma(x, y, alpha):
    """Gretton et al. (2007) gamma test, written out from the paper with an explicit H."""
    n = x.shape[0]

    def width(z):
        d2 = ((z[:, None] - z[None]) ** 2).sum(-1)
        v = d2[np.triu_indices(n, 1)]
        return math.sqrt(0.5 * np.median(v[v > 0]))

    K, L = _np_gauss(x, width(x)), _np_gauss(y, width(y))
    Hm = np.eye(n) - np.ones((n, n)) / n
    Kc, Lc = Hm @ K @ Hm, Hm @ L @ Hm
    test_stat = np.sum(Kc.T * Lc) / n
    v = (Kc * Lc / 6) ** 2
    var = (v.sum() - np.trace(v)) / n / (n - 1)
    var = var * 72 * (n - 4) * (n - 5) / n / (n - 1) / (n - 2) / (n - 3)
    K0, L0 = K - np.diag(np.diag(K)), L - np.diag(np.diag(L))
    mu_x, mu_y = K0.sum() / n / (n - 1), L0.sum() / n / (n - 1)
    mean = (1 + mu_x * mu_y - mu_x - mu_y) / n
    al, bet = mean**2 / var, var * n / mean
    return (
        test_stat,
        stats.gamma.ppf(1 - alpha, al, scale=bet),
        stats.gamma.sf(test_stat, al, scale=bet),
    )


@pytest.mark.parametrize("alpha", [0.05, 0.5])
def test_gamma_test_matches_gretton_reference(alpha):
    x, y = _sample(80, 2, 1, seed=9, dep=0.3)
    ref = _gretton_gamma(x.numpy(), y.numpy(), alpha)
    ours = H.hsic_gamma_test(x, y, alpha=alpha)
    for a, b in zip(ours, ref, strict=True):
        assert abs(a - b) < 1e-10 * max(1.0, abs(b)), (ours, ref)
    hb = H.hsic(x, y).item()
    assert abs(ours.statistic - 80 * hb) < 1e-10


# --------------------------------------------------------------------------- population oracle


@pytest.mark.parametrize("rho", [0.0, 0.3, -0.6, 0.9])
def test_population_closed_form_against_monte_carlo(rho):
    n, reps = 1000, 5
    g = make_generator(10)
    truth = H.hsic_gaussian_population(rho, 1.0)
    for estimator in ("biased", "unbiased"):
        vals = []
        for _ in range(reps):
            z = torch.randn(n, 2, generator=g, dtype=torch.float64)
            x = z[:, :1]
            y = rho * z[:, :1] + math.sqrt(1 - rho**2) * z[:, 1:]
            vals.append(H.hsic(x, y, bandwidth_x=1.0, bandwidth_y=1.0, estimator=estimator).item())
        # the spread between repeats sets the tolerance; the V-statistic may add O(1/n) bias
        tol = 4 * np.std(vals, ddof=1) / math.sqrt(reps) + (1 / n if estimator == "biased" else 0)
        assert abs(np.mean(vals) - truth) < max(tol, 1e-4), (estimator, np.mean(vals), truth)


def test_population_closed_form_against_kernel_expectations_by_monte_carlo():
    # each of the three expectations sampled directly from independent copies (not via HSIC)
    rho, sx, sy, m = 0.7, 0.8, 1.5, 400_000
    g = make_generator(11)

    def pair(k):
        z = torch.randn(k, 2, generator=g, dtype=torch.float64)
        return z[:, 0], rho * z[:, 0] + math.sqrt(1 - rho**2) * z[:, 1]

    def kx(a, b):
        return torch.exp(-((a - b) ** 2) / (2 * sx**2))

    def ky(a, b):
        return torch.exp(-((a - b) ** 2) / (2 * sy**2))

    (x1, y1), (x2, y2), (_, y3) = pair(m), pair(m), pair(m)
    joint = (kx(x1, x2) * ky(y1, y2)).mean()
    product = kx(x1, x2).mean() * ky(y1, y3).mean()
    cross = (kx(x1, x2) * ky(y1, y3)).mean()
    mc = (joint + product - 2 * cross).item()
    truth = H.hsic_gaussian_population(rho, sx, bandwidth_y=sy)
    assert abs(mc - truth) < 2e-3, (mc, truth)


def test_population_shape():
    s = 1.0
    assert H.hsic_gaussian_population(0.0, s) == 0.0
    rhos = np.linspace(0, 1, 11)
    vals = [H.hsic_gaussian_population(float(r), s) for r in rhos]
    assert all(b > a for a, b in zip(vals, vals[1:]))  # increasing in |rho|
    assert H.hsic_gaussian_population(-0.4, s) == pytest.approx(H.hsic_gaussian_population(0.4, s))
    # vanishes at both ends of the bandwidth axis
    assert H.hsic_gaussian_population(0.8, 1e-4) < 1e-6
    assert H.hsic_gaussian_population(0.8, 1e4) < 1e-6
    assert math.isfinite(H.hsic_gaussian_population(1.0, 1e-8))


# --------------------------------------------------------------------------- tests of independence


def test_permutation_p_values_are_uniform_under_independence():
    g = make_generator(12)
    ps = []
    for _ in range(150):
        x = torch.randn(25, 1, generator=g, dtype=torch.float64)
        y = torch.randn(25, 1, generator=g, dtype=torch.float64)
        ps.append(H.hsic_permutation_test(x, y, n_perm=99, generator=g).p_value)
    ks = stats.kstest(ps, "uniform")
    assert ks.pvalue > 1e-3, ks


def test_unbiased_permutation_null_matches_direct_recomputation():
    x, y = _sample(20, 2, 1, seed=13)
    g = make_generator(14)
    res = H.hsic_permutation_test(x, y, n_perm=7, generator=g, estimator="unbiased")
    perms = torch.rand(7, 20, generator=make_generator(14)).argsort(1)
    for b in range(7):
        direct = H.hsic(x, y[perms[b]], estimator="unbiased")
        assert abs(res.null[b].item() - direct.item()) < 1e-12
    assert abs(res.statistic.item() - H.hsic(x, y, estimator="unbiased").item()) < 1e-14


def test_gamma_test_level_under_independence():
    g = make_generator(15)
    rejections, draws = 0, 200
    for _ in range(draws):
        x = torch.randn(100, 1, generator=g, dtype=torch.float64)
        y = torch.randn(100, 1, generator=g, dtype=torch.float64)
        rejections += H.hsic_gamma_test(x, y).p_value < 0.05
    assert 0.01 < rejections / draws < 0.1, rejections


def test_dependence_that_correlation_misses_is_detected():
    g = make_generator(16)
    x = torch.rand(200, 1, generator=g, dtype=torch.float64) * 2 - 1
    y = x**2 + 0.1 * torch.randn(200, 1, generator=g, dtype=torch.float64)
    lin = H.hsic_permutation_test(
        x, y, n_perm=199, generator=g, kernel_x="linear", kernel_y="linear"
    )
    gau = H.hsic_permutation_test(x, y, n_perm=199, generator=g)
    assert gau.p_value == 1 / 200 and lin.p_value > 0.01


# --------------------------------------------------------------------------- properties


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(6, 25),
    shift=st.floats(-50, 50),
    scale=st.floats(0.1, 10),
    estimator=st.sampled_from(H.ESTIMATORS),
)
def test_invariances(seed, n, shift, scale, estimator):
    x, y = _sample(n, 2, 2, seed=seed)
    base = H.hsic(x, y, estimator=estimator).item()
    perm = torch.randperm(n, generator=make_generator(seed))
    tol = 1e-10 * max(1.0, abs(base))
    assert abs(H.hsic(x[perm], y[perm], estimator=estimator).item() - base) < tol  # pair order
    assert (
        abs(H.hsic(x + shift, y - shift, estimator=estimator).item() - base) < 1e-9
    )  # translation
    # scaling both samples with the median bandwidth leaves the Gaussian HSIC unchanged
    assert abs(H.hsic(scale * x, y / scale, estimator=estimator).item() - base) < 1e-9
    if estimator == "biased":
        assert base >= -1e-15  # HSIC_b = <HKH, HLH>_F / n^2 of two PSD matrices
        c = H.cka(x, y, kernel="gaussian").item()
        assert -1e-12 <= c <= 1 + 1e-12


def test_unbiased_is_zero_in_expectation_under_independence_biased_is_not():
    g = make_generator(17)
    ub, b = [], []
    for _ in range(400):
        x = torch.randn(20, 1, generator=g, dtype=torch.float64)
        y = torch.randn(20, 1, generator=g, dtype=torch.float64)
        ub.append(H.hsic(x, y, bandwidth_x=1.0, bandwidth_y=1.0, estimator="unbiased").item())
        b.append(H.hsic(x, y, bandwidth_x=1.0, bandwidth_y=1.0).item())
    se = np.std(ub) / math.sqrt(len(ub))
    assert abs(np.mean(ub)) < 4 * se
    assert np.mean(b) > 10 * np.std(b) / math.sqrt(len(b))  # the V-statistic is biased upward
    assert min(ub) < 0  # and the U-statistic can be negative


def test_gradients():
    x, y = _sample(9, 2, 1, seed=18)
    x.requires_grad_(True)
    s = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
    for est in H.ESTIMATORS:
        assert torch.autograd.gradcheck(
            lambda a, b, e=est: H.hsic(a, y, bandwidth_x=b, bandwidth_y=1.0, estimator=e), (x, s)
        )
    xd = x.detach().clone().requires_grad_(True)
    H.hsic(xd, y, kernel_x="distance", kernel_y="distance").backward()
    assert torch.isfinite(xd.grad).all()
    xm = x.detach().clone().requires_grad_(True)
    H.hsic(xm, y).backward()  # the median bandwidth is detached: no discontinuous path
    assert torch.isfinite(xm.grad).all()


# --------------------------------------------------------------------------- dtype, device


def test_float32_keeps_dtype_and_agrees_with_float64():
    x, y = _sample(64, 3, 1, seed=19)
    x32, y32 = x.float(), y.float()
    for est in H.ESTIMATORS:
        v32, v64 = H.hsic(x32, y32, estimator=est), H.hsic(x, y, estimator=est)
        assert v32.dtype == torch.float32 and v32.shape == ()
        assert abs(v32.item() - v64.item()) < 1e-5
    assert H.median_bandwidth(x32).dtype == torch.float32
    assert H.cka(x32, y32).dtype == torch.float32
    res = H.hsic_permutation_test(x32, y32, n_perm=9, generator=make_generator(0))
    assert res.statistic.dtype == torch.float32 and res.null.dtype == torch.float32
    assert H.center_gram(H.gram(x32)).dtype == torch.float32


@requires_cuda
def test_cuda_keeps_device():
    x, y = _sample(64, 2, 1, seed=20, device="cuda")
    v = H.hsic(x, y)
    assert v.device.type == "cuda"
    assert abs(v.item() - H.hsic(x.cpu(), y.cpu()).item()) < 1e-10
    res = H.hsic_permutation_test(x, y, n_perm=19, generator=make_generator(0, "cuda"))
    assert res.null.device.type == "cuda"
    assert H.cka(x, y).device.type == "cuda"


# --------------------------------------------------------------------------- bad input


def test_bad_input():
    x, y = _sample(10, 2, 1)
    with pytest.raises(TypeError, match=r"^x\b"):
        H.hsic(np.zeros((10, 2)), y)
    with pytest.raises(TypeError, match=r"^x\b"):
        H.hsic(torch.zeros(10, 2, dtype=torch.int64), y)
    with pytest.raises(ValueError, match=r"^x\b"):
        H.hsic(torch.zeros(10, 2, 2, dtype=torch.float64), y)
    with pytest.raises(ValueError, match=r"^y\b"):
        H.hsic(x, y[:9])
    with pytest.raises(ValueError, match=r"^x\b"):
        H.hsic(x.clone().fill_(float("nan")), y)
    with pytest.raises(ValueError, match=r"^kernel_x\b"):
        H.hsic(x, y, kernel_x="rbf")
    with pytest.raises(ValueError, match=r"^estimator\b"):
        H.hsic(x, y, estimator="u")
    with pytest.raises(ValueError, match=r"^bandwidth_y\b"):
        H.hsic(x, y, bandwidth_y=0.0)
    with pytest.raises(ValueError, match=r"^bandwidth_x\b"):
        H.hsic(x, y, kernel_x="linear", bandwidth_x=1.0)
    with pytest.raises(ValueError, match=r"^bandwidth\b"):
        H.gaussian_gram(x, -1.0)
    with pytest.raises(ValueError, match=r"^x\b"):
        H.median_bandwidth(torch.ones(5, 1, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"^K\b"):
        H.center_gram(torch.zeros(3, 4))
    with pytest.raises(ValueError, match=r"^L\b"):
        H.hsic_from_grams(torch.eye(4), torch.eye(5))
    with pytest.raises(ValueError, match=r"^K\b"):
        H.hsic_from_grams(torch.eye(3), torch.eye(3), estimator="unbiased")
    with pytest.raises(ValueError, match=r"^n_perm\b"):
        H.hsic_permutation_test(x, y, n_perm=0)
    with pytest.raises(TypeError, match=r"^generator\b"):
        H.hsic_permutation_test(x, y, generator=0)
    with pytest.raises(ValueError, match=r"^alpha\b"):
        H.hsic_gamma_test(x, y, alpha=1.5)
    with pytest.raises(ValueError, match=r"^x\b"):
        H.hsic_gamma_test(x[:5], y[:5])
    with pytest.raises(ValueError, match=r"^rho\b"):
        H.hsic_gaussian_population(1.2)
    with pytest.raises(TypeError, match=r"^rho\b"):
        H.hsic_gaussian_population("0.5")
    with pytest.raises(ValueError, match=r"^bandwidth\b"):
        H.hsic_gaussian_population(0.5, 0.0)
    with pytest.raises(ValueError, match=r"^kernel\b"):
        H.cka(x, y, kernel="poly")
    with pytest.raises(ValueError, match=r"^y\b"):
        H.cka(x, torch.ones(10, 1, dtype=torch.float64))
