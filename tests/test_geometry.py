"""Tests for kexue_lib.geometry: distances, cosines, spheres and the entropy dimension rule.

References are independent of the code under test: torch.cdist / torch.pdist /
F.cosine_similarity, explicit loops, closed forms (2 pi, 4 pi, 2 pi^2, the post's printed
h_n table), mpmath at 40 digits, scipy quadrature, Monte Carlo on Gaussian vectors, KS tests.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from kexue_lib._core import make_generator
from kexue_lib.geometry import (
    LAPLACE_COEF,
    LAPLACE_CONST,
    LAPLACE_CONST_POST,
    angle_log_density,
    condensed_sq_dists,
    cosine_matrix,
    entropy_min_dim,
    log_sphere_area,
    pairwise_sq_dists,
    project_to_sphere,
    sample_sphere,
    skipgram_entropy_offset,
    skipgram_entropy_offset_laplace,
)
from tests.conftest import requires_cuda

DTYPES = [torch.float32, torch.float64]
TOL = {torch.float32: dict(rtol=1e-4, atol=1e-4), torch.float64: dict(rtol=1e-10, atol=1e-10)}


def _randn(*shape, dtype=torch.float64, seed=0, device="cpu"):
    return torch.randn(*shape, generator=make_generator(seed), dtype=dtype).to(device)


# ============================================================ distances and cosines


@pytest.mark.parametrize("dtype", DTYPES)
def test_pairwise_sq_dists_vs_cdist_and_loop(dtype):
    x, y = _randn(7, 5, dtype=dtype, seed=1), _randn(4, 5, dtype=dtype, seed=2)
    d = pairwise_sq_dists(x, y)
    assert d.shape == (7, 4) and d.dtype == dtype
    torch.testing.assert_close(d, torch.cdist(x, y) ** 2, **TOL[dtype])
    loop = torch.tensor(
        [
            [sum((float(a) - float(b)) ** 2 for a, b in zip(xi, yj, strict=True)) for yj in y]
            for xi in x
        ],
        dtype=dtype,
    )
    torch.testing.assert_close(d, loop, **TOL[dtype])


def test_pairwise_sq_dists_self_has_zero_diagonal_and_is_nonnegative():
    x = 1e3 + _randn(20, 3, dtype=torch.float32, seed=3)  # large offset: Gram form cancels
    d = pairwise_sq_dists(x)
    assert torch.all(d.diagonal() == 0)
    assert torch.all(d >= 0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_condensed_sq_dists_vs_pdist(dtype):
    x = _randn(11, 6, dtype=dtype, seed=4)
    c = condensed_sq_dists(x)
    assert c.shape == (11 * 10 // 2,) and c.dtype == dtype
    torch.testing.assert_close(c, torch.pdist(x) ** 2, **TOL[dtype])


def test_condensed_sq_dists_chunking_and_empty():
    x = _randn(9, 4, seed=5)
    torch.testing.assert_close(condensed_sq_dists(x, max_elements=5), torch.pdist(x) ** 2)
    assert condensed_sq_dists(x[:1]).shape == (0,)


@pytest.mark.parametrize("dtype", DTYPES)
def test_condensed_keeps_near_duplicates_where_gram_form_fails(dtype):
    # points 1e-3 apart at distance 1e3 from the origin: |x|^2 ~ 1e6 swamps |x - y|^2 ~ 1e-6
    base = 1e3 * torch.ones(1, 8, dtype=torch.float64)
    x64 = base + 1e-3 * _randn(12, 8, seed=6)
    x = x64.to(dtype)
    exact = torch.pdist(x.to(torch.float64)) ** 2  # differences of the same stored values
    rel_c = ((condensed_sq_dists(x).to(torch.float64) - exact).abs() / exact).max().item()
    i, j = torch.triu_indices(12, 12, offset=1)
    gram = pairwise_sq_dists(x)[i, j].to(torch.float64)
    rel_g = ((gram - exact).abs() / exact).max().item()
    eps = torch.finfo(dtype).eps
    assert rel_c < 50 * eps, rel_c
    assert rel_g > 1e3 * rel_c, (rel_g, rel_c)  # why condensed_sq_dists exists


@pytest.mark.parametrize("dtype", DTYPES)
def test_cosine_matrix_vs_functional(dtype):
    x, y = _randn(6, 5, dtype=dtype, seed=7), _randn(3, 5, dtype=dtype, seed=8)
    ref = F.cosine_similarity(x[:, None, :], y[None, :, :], dim=-1)
    torch.testing.assert_close(cosine_matrix(x, y), ref, **TOL[dtype])
    torch.testing.assert_close(cosine_matrix(x).diagonal(), torch.ones(6, dtype=dtype))


def test_distance_bad_inputs():
    with pytest.raises(TypeError, match=r"^x\b"):
        pairwise_sq_dists(np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"^x\b"):
        pairwise_sq_dists(torch.zeros(3))
    with pytest.raises(ValueError, match=r"^y\b"):
        pairwise_sq_dists(torch.zeros(3, 2), torch.zeros(3, 4))
    with pytest.raises(TypeError, match=r"^x\b"):
        condensed_sq_dists(torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"^y\b"):
        cosine_matrix(torch.zeros(3, 2), torch.zeros(3, 4))


# ============================================================ spheres


def test_log_sphere_area_closed_forms():
    assert log_sphere_area(0) == pytest.approx(math.log(2.0), rel=1e-14)  # two points
    assert log_sphere_area(1) == pytest.approx(math.log(2 * math.pi), rel=1e-14)
    assert log_sphere_area(2) == pytest.approx(math.log(4 * math.pi), rel=1e-14)
    assert log_sphere_area(3) == pytest.approx(math.log(2 * math.pi**2), rel=1e-14)
    assert log_sphere_area(4) == pytest.approx(math.log(8 * math.pi**2 / 3), rel=1e-14)


@pytest.mark.parametrize("dtype", DTYPES)
def test_log_sphere_area_tensor_matches_scalar(dtype):
    n = torch.tensor([1.0, 2.0, 10.0, 1000.0], dtype=dtype)
    out = log_sphere_area(n)
    assert out.dtype == dtype and torch.isfinite(out).all()
    ref = torch.tensor([log_sphere_area(float(v)) for v in n], dtype=dtype)
    torch.testing.assert_close(out, ref, **TOL[dtype])


@settings(max_examples=40, deadline=None)
@given(st.floats(min_value=2.0, max_value=500.0))
def test_log_sphere_area_recurrence(n):
    # |S^n| = 2 pi / (n - 1) |S^(n-2)| (integrate over the last two coordinates)
    lhs = log_sphere_area(n)
    rhs = math.log(2 * math.pi / (n - 1)) + log_sphere_area(n - 2)
    assert lhs == pytest.approx(rhs, rel=1e-12, abs=1e-12)


def test_log_sphere_area_is_ball_volume_derivative():
    # |S^(d-1)| = d * V_d with V_d = pi^(d/2) / Gamma(d/2 + 1), from scipy
    from scipy.special import gamma

    for d in [1, 2, 3, 7, 20]:
        v = math.pi ** (d / 2) / gamma(d / 2 + 1)
        assert math.exp(log_sphere_area(d - 1)) == pytest.approx(d * v, rel=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sample_sphere_norms_shape_dtype(dtype):
    x = sample_sphere((3, 100), 7, radius=2.5, dtype=dtype, generator=make_generator(0))
    assert x.shape == (3, 100, 7) and x.dtype == dtype
    torch.testing.assert_close(x.norm(dim=-1), torch.full((3, 100), 2.5, dtype=dtype))


def test_sample_sphere_reproducible_and_half():
    a = sample_sphere(5, 3, generator=make_generator(3), dtype=torch.float64)
    b = sample_sphere(5, 3, generator=make_generator(3), dtype=torch.float64)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    h = sample_sphere(50, 8, generator=make_generator(3), dtype=torch.bfloat16)
    assert h.dtype == torch.bfloat16 and torch.isfinite(h).all()
    assert (h.float().norm(dim=-1) - 1).abs().max() < 2e-2


def test_sample_sphere_coordinate_laws():
    from scipy import stats

    # Archimedes: on S^2 a coordinate is uniform on [-1, 1]
    x = sample_sphere(4000, 3, dtype=torch.float64, generator=make_generator(11))
    assert stats.kstest(x[:, 0].numpy(), stats.uniform(loc=-1, scale=2).cdf).pvalue > 1e-3
    # in R^d, x_1^2 ~ Beta(1/2, (d-1)/2); second moments are I/d
    d = 10
    x = sample_sphere(4000, d, dtype=torch.float64, generator=make_generator(12))
    assert stats.kstest(x[:, 0].numpy() ** 2, stats.beta(0.5, (d - 1) / 2).cdf).pvalue > 1e-3
    cov = x.T @ x / x.shape[0]
    torch.testing.assert_close(cov, torch.eye(d, dtype=torch.float64) / d, rtol=0, atol=0.02)


def test_sample_sphere_bad_inputs():
    with pytest.raises(ValueError, match=r"^d\b"):
        sample_sphere(3, 0)
    with pytest.raises(TypeError, match=r"^d\b"):
        sample_sphere(3, 2.0)
    with pytest.raises(ValueError, match=r"^radius\b"):
        sample_sphere(3, 2, radius=-1.0)
    with pytest.raises(ValueError, match=r"^sample_shape\b"):
        sample_sphere((3, -1), 2)
    with pytest.raises(TypeError, match=r"^dtype\b"):
        sample_sphere(3, 2, dtype=torch.long)


@pytest.mark.parametrize("dtype", DTYPES)
def test_project_to_sphere_vs_normalize(dtype):
    x = _randn(10, 4, dtype=dtype, seed=13)
    p = project_to_sphere(x, 3.0)
    assert p.dtype == dtype
    torch.testing.assert_close(p, 3.0 * F.normalize(x, dim=-1), **TOL[dtype])
    torch.testing.assert_close(project_to_sphere(p, 3.0), p, **TOL[dtype])  # idempotent
    r = torch.tensor([[1.0], [2.0]], dtype=dtype)
    q = project_to_sphere(x[:2], r)
    torch.testing.assert_close(q.norm(dim=-1), r[:, 0], **TOL[dtype])


def test_project_to_sphere_zero_and_low_precision_and_grad():
    z = project_to_sphere(torch.zeros(2, 3))
    assert torch.equal(z, torch.zeros(2, 3))
    x = torch.tensor([[300.0, 400.0], [1e-3, 0.0]], dtype=torch.float16)  # |x|^2 overflows fp16
    p = project_to_sphere(x)
    assert p.dtype == torch.float16 and torch.isfinite(p).all()
    torch.testing.assert_close(p.float(), torch.tensor([[0.6, 0.8], [1.0, 0.0]]), rtol=0, atol=1e-3)
    w = _randn(3, 4, seed=14).requires_grad_()
    project_to_sphere(w).sum().backward()
    assert torch.isfinite(w.grad).all()
    # the gradient of a radial projection is orthogonal to the point
    torch.testing.assert_close((w.grad * w.detach()).sum(-1), torch.zeros(3, dtype=torch.float64))


def test_project_to_sphere_bad_inputs():
    with pytest.raises(TypeError, match=r"^x\b"):
        project_to_sphere(torch.ones(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"^radius\b"):
        project_to_sphere(torch.ones(3), 0.0)
    with pytest.raises(ValueError, match=r"^radius\b"):
        project_to_sphere(torch.ones(2, 3), torch.tensor([[1.0], [-1.0]]))


# ------------------------------------------------------------ angle density


@pytest.mark.parametrize("d", [2, 3, 4.5, 32, 512, 5000])
def test_angle_density_integrates_to_one(d):
    from scipy import integrate

    mode = math.pi / 2
    total = integrate.quad(
        lambda t: math.exp(angle_log_density(t, d)), 0, math.pi, points=[mode], limit=200
    )[0]
    assert total == pytest.approx(1.0, abs=1e-9)


def test_angle_density_closed_forms():
    t = np.linspace(0.05, 3.0, 7)
    np.testing.assert_allclose(np.exp(angle_log_density(t, 2)), 1 / np.pi, rtol=1e-12)
    np.testing.assert_allclose(np.exp(angle_log_density(t, 3)), np.sin(t) / 2, rtol=1e-12)
    np.testing.assert_allclose(
        np.exp(angle_log_density(t, 4)), 2 * np.sin(t) ** 2 / np.pi, rtol=1e-12
    )
    out = angle_log_density(np.array([-0.1, 0.0, 4.0]), 5)
    assert np.all(np.isneginf(out))
    assert angle_log_density(math.pi, 5) < -100  # float sin(pi) = 1.2e-16, not 0
    assert angle_log_density(0.0, 2) == pytest.approx(-math.log(math.pi))  # no 0 * log 0 NaN


@pytest.mark.parametrize("d", [3, 7, 50])
def test_angle_density_matches_gaussian_pairs_ks(d):
    from scipy import stats
    from scipy.integrate import cumulative_trapezoid

    g = make_generator(100 + d)
    u = torch.randn(3000, d, generator=g, dtype=torch.float64)
    v = torch.randn(3000, d, generator=g, dtype=torch.float64)
    ang = torch.arccos(F.cosine_similarity(u, v, dim=-1).clamp(-1, 1)).numpy()
    grid = np.linspace(0, np.pi, 20001)
    cdf = cumulative_trapezoid(np.exp(angle_log_density(grid, d)), grid, initial=0.0)
    assert stats.kstest(ang, lambda a: np.interp(a, grid, cdf)).pvalue > 1e-3


@pytest.mark.parametrize("dtype", DTYPES + [torch.bfloat16])
def test_angle_density_tensor_path(dtype):
    t = torch.linspace(0.01, 3.1, 9, dtype=dtype)
    out = angle_log_density(t, 16)
    assert out.dtype == dtype and torch.isfinite(out).all()
    ref = torch.as_tensor(angle_log_density(t.to(torch.float64).numpy(), 16))
    tol = dict(rtol=2e-2, atol=2e-2) if dtype == torch.bfloat16 else TOL[dtype]
    torch.testing.assert_close(out.to(torch.float64), ref, **tol)


@settings(max_examples=30, deadline=None)
@given(st.floats(min_value=1e-3, max_value=math.pi / 2), st.floats(min_value=1.5, max_value=300.0))
def test_angle_density_symmetric(theta, d):
    # p(theta) = p(pi - theta) (v -> -v); endpoints excluded: float sin(pi) is 1.2e-16, not 0
    a, b = angle_log_density(theta, d), angle_log_density(math.pi - theta, d)
    assert a == pytest.approx(b, rel=1e-9, abs=1e-9)


def test_angle_density_bad_inputs():
    with pytest.raises(ValueError, match=r"^d\b"):
        angle_log_density(1.0, 1)
    with pytest.raises(TypeError, match=r"^d\b"):
        angle_log_density(1.0, "3")
    with pytest.raises(TypeError, match=r"^theta\b"):
        angle_log_density(torch.ones(3, dtype=torch.long), 3)


# ============================================================ the entropy dimension rule

# archives/7695, the post's table (printed digits)
POST_H = {32: -7.77471, 64: -15.4734, 96: -23.1726, 128: -30.8718, 256: -61.6692, 512: -123.264}


@pytest.mark.parametrize("n", sorted(POST_H))
def test_h_n_reproduces_post_table(n):
    printed = POST_H[n]
    digits = len(str(printed).split(".")[1])
    assert round(skipgram_entropy_offset(n), digits) == pytest.approx(printed, abs=1e-12)


def test_post_example_entropy_n64_vocab_1e5():
    assert 2 * math.log(1e5) + skipgram_entropy_offset(64) == pytest.approx(7.55245, abs=5e-6)


@pytest.mark.parametrize("n", [2, 2.7, 17, 64, 300, 2048])
def test_h_n_quad_vs_mpmath(n):
    q, m = skipgram_entropy_offset(n), skipgram_entropy_offset(n, method="mpmath")
    assert q == pytest.approx(m, rel=1e-10, abs=1e-10)


def test_h_n_two_dim_closed_form():
    # n = 2: theta uniform, E[e^{2 cos}] = I0(2), E[2 cos e^{2 cos}] = 2 I1(2)
    from scipy.special import i0, i1

    ref = math.log(i0(2.0)) - 2 * i1(2.0) / i0(2.0)
    assert skipgram_entropy_offset(2) == pytest.approx(ref, rel=1e-12)


def _mc_h(n, m, batches, seed):
    """h_n by Monte Carlo on Gaussian pairs normalised to the sqrt(n)-sphere; (mean, s.e.)."""
    g = make_generator(seed)
    vals = []
    for _ in range(batches):
        u = F.normalize(torch.randn(m, n, generator=g, dtype=torch.float64), dim=-1)
        v = F.normalize(torch.randn(m, n, generator=g, dtype=torch.float64), dim=-1)
        x = n * (u * v).sum(-1)  # <u, v> for |u| = |v| = sqrt(n)
        log_mean = torch.logsumexp(x, 0) - math.log(m)
        tilted_mean = (torch.softmax(x, 0) * x).sum()
        vals.append((log_mean - tilted_mean).item())
    vals = np.array(vals)
    return vals.mean(), vals.std(ddof=1) / math.sqrt(batches)


@pytest.mark.parametrize("n", [3, 8, 16])
def test_h_n_vs_monte_carlo(n):
    mean, se = _mc_h(n, 25_000, 8, seed=n)
    assert abs(mean - skipgram_entropy_offset(n)) < 5 * se + 0.01 * abs(mean), (mean, se)


def test_h_n_is_nonpositive_and_decreasing():
    ns = [2, 3, 5, 10, 40, 200, 1000]
    h = [skipgram_entropy_offset(n) for n in ns]
    assert all(v < 0 for v in h)
    assert all(a > b for a, b in zip(h, h[1:], strict=False))


def test_laplace_slope_and_constants():
    golden = (1 + math.sqrt(5)) / 2
    assert LAPLACE_COEF == pytest.approx(-0.2406059, abs=1e-7)
    assert LAPLACE_COEF == pytest.approx(math.log(math.sin(math.atan(math.sqrt(golden)))))
    assert LAPLACE_CONST_POST == pytest.approx(math.log(1.67629 / 2.50663), abs=1e-5)
    # the corrected constant is the n -> inf limit of h_n - LAPLACE_COEF * n (quadrature)
    for n in [4096, 32768]:
        resid = skipgram_entropy_offset(n) - LAPLACE_COEF * n
        assert resid == pytest.approx(LAPLACE_CONST, abs=0.6 / n), n


def test_h_n_huge_dimension_no_overflow():
    # e^{n cos} overflows float64 for n > 709; the shifted quadrature must not care
    for n in [710.0, 1e5, 1e8]:
        h = skipgram_entropy_offset(n)
        assert math.isfinite(h)
        assert h == pytest.approx(skipgram_entropy_offset_laplace(n), abs=1e-4 + 1.0 / n)


def test_laplace_approximation_errors():
    for n in [128, 512, 2048]:
        h = skipgram_entropy_offset(n)
        err = abs(skipgram_entropy_offset_laplace(n) - h)
        assert err < 1.0 / n, (n, err)  # O(1/n) with the corrected constant
        err_post = skipgram_entropy_offset_laplace(n, constant="post") - h
        assert err_post == pytest.approx(LAPLACE_CONST_POST - LAPLACE_CONST, abs=1.0 / n)
        lead = skipgram_entropy_offset_laplace(n, constant="none")
        assert lead == pytest.approx(LAPLACE_COEF * n)
    arr = skipgram_entropy_offset_laplace(np.array([64.0, 128.0]), constant="post")
    np.testing.assert_allclose(arr, np.array([64.0, 128.0]) * LAPLACE_COEF - math.log(5) / 4)
    t = skipgram_entropy_offset_laplace(torch.tensor([64.0, 128.0], dtype=torch.float32))
    assert t.dtype == torch.float32
    torch.testing.assert_close(t, torch.tensor([64.0, 128.0]) * LAPLACE_COEF + LAPLACE_CONST)


def test_entropy_min_dim_rules():
    # sheet C3: exact thresholds 95.39, 127.91, 51.54 (N = 1e5, 5e6, L = 512)
    for N, ref in [(1e5, 95.39), (5e6, 127.91), (512, 51.54)]:
        assert entropy_min_dim(N) == pytest.approx(ref, abs=5e-3)
        assert entropy_min_dim(N, rule="8.33") == pytest.approx(8.33 * math.log(N), rel=1e-14)
        assert entropy_min_dim(N, rule="laplace") == pytest.approx(ref, abs=0.02)
    assert round(entropy_min_dim(1e5, rule="8.33")) == 96  # the post's examples
    assert round(entropy_min_dim(5e6, rule="8.33")) == 128
    assert round(entropy_min_dim(512, rule="8.33")) == 52


@settings(max_examples=5, deadline=None)
@given(st.floats(min_value=2.0, max_value=1e8))
def test_entropy_min_dim_exact_is_root_of_mpmath_h(N):
    n = entropy_min_dim(N)
    assert 2 * math.log(N) + skipgram_entropy_offset(n, method="mpmath") == pytest.approx(
        0.0, abs=1e-7
    )


def test_entropy_rule_bad_inputs():
    with pytest.raises(ValueError, match=r"^n\b"):
        skipgram_entropy_offset(1.5)
    with pytest.raises(ValueError, match=r"^n\b"):
        skipgram_entropy_offset(float("inf"))
    with pytest.raises(TypeError, match=r"^n\b"):
        skipgram_entropy_offset("64")
    with pytest.raises(ValueError, match=r"^method\b"):
        skipgram_entropy_offset(64, method="simpson")
    with pytest.raises(ValueError, match=r"^n\b"):
        skipgram_entropy_offset_laplace(np.array([1.0, -2.0]))
    with pytest.raises(ValueError, match=r"^constant\b"):
        skipgram_entropy_offset_laplace(64, constant="guess")
    with pytest.raises(ValueError, match=r"^N\b"):
        entropy_min_dim(1.0)
    with pytest.raises(ValueError, match=r"^rule\b"):
        entropy_min_dim(1e5, rule="8")
    with pytest.raises(TypeError, match=r"^N\b"):
        entropy_min_dim(None)


# ============================================================ CUDA


@requires_cuda
def test_cuda_paths_follow_device():
    dev = torch.device("cuda")
    x = _randn(30, 5, seed=20, device=dev)
    torch.testing.assert_close(pairwise_sq_dists(x).cpu(), pairwise_sq_dists(x.cpu()))
    torch.testing.assert_close(condensed_sq_dists(x).cpu(), condensed_sq_dists(x.cpu()))
    torch.testing.assert_close(cosine_matrix(x).cpu(), cosine_matrix(x.cpu()))
    s = sample_sphere((4, 6), 5, radius=2.0, generator=make_generator(0, dev))
    assert s.device.type == "cuda"
    torch.testing.assert_close(s.norm(dim=-1).cpu(), torch.full((4, 6), 2.0))
    p = project_to_sphere(x, 3.0)
    assert p.device.type == "cuda"
    torch.testing.assert_close(p.cpu(), project_to_sphere(x.cpu(), 3.0))
    t = torch.linspace(0.1, 3.0, 5, device=dev, dtype=torch.float64)
    torch.testing.assert_close(angle_log_density(t, 9).cpu(), angle_log_density(t.cpu(), 9))
    n = torch.tensor([1.0, 2.0], device=dev)
    assert log_sphere_area(n).device.type == "cuda"
