"""Whitening: identity covariance, eigh = SVD, sklearn PCA(whiten=True), streaming moments."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kexue_lib.whitening import (
    RunningMoments,
    Whitening,
    apply_whitening,
    fit_whitening,
    mahalanobis_cosine,
    zca_matrix,
)
from tests.conftest import requires_cuda

F = torch.nn.functional


def anisotropic(n=400, d=12, seed=0, dtype=torch.float64, offset=5.0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, d, generator=g, dtype=torch.float64)
    a = torch.randn(d, d, generator=g, dtype=torch.float64) * torch.logspace(0, -2, d)[:, None]
    o = offset * torch.randn(1, d, generator=g, dtype=torch.float64)
    return (z @ a + o).to(dtype)


def test_covariance_after_whitening_is_identity_float64():
    x = anisotropic()
    w = fit_whitening(x)
    y = apply_whitening(x, w, normalize=False)
    assert y.dtype == torch.float64
    torch.testing.assert_close(y.mean(0), torch.zeros(12, dtype=torch.float64), atol=1e-10, rtol=0)
    cov = torch.cov(y.T, correction=0)  # torch.cov wants (variables, observations)
    torch.testing.assert_close(cov, torch.eye(12, dtype=torch.float64), atol=1e-10, rtol=0)
    # W^T Sigma W = I with the 1/N covariance, and Sigma = U Lambda U^T
    sigma = torch.cov(x.T, correction=0)
    torch.testing.assert_close(w.W.T @ sigma @ w.W, torch.eye(12, dtype=torch.float64))
    torch.testing.assert_close((w.eigvecs * w.eigvals) @ w.eigvecs.T, sigma)
    assert (w.eigvals[:-1] >= w.eigvals[1:]).all()


def test_float32_keeps_dtype_and_is_close():
    x = anisotropic(dtype=torch.float32, offset=1.0)
    w = fit_whitening(x, n_components=6)
    assert w.W.dtype == torch.float32 and w.W.shape == (12, 6) and w.mu.shape == (1, 12)
    y = apply_whitening(x, w)
    assert y.dtype == torch.float32 and y.shape == (400, 6)
    w64 = fit_whitening(x.double(), n_components=6)
    y64 = apply_whitening(x.double(), w64)
    torch.testing.assert_close(y.double(), y64, atol=2e-3, rtol=0)


@pytest.mark.parametrize("n", [400, 8])
def test_svd_and_eigh_routes_agree(n):
    x = anisotropic(n=n)
    k = min(n - 1, 12)
    a = fit_whitening(x, method="eigh", n_components=k)
    b = fit_whitening(x, method="svd", n_components=k)
    torch.testing.assert_close(a.eigvals[:k], b.eigvals[:k], atol=1e-10, rtol=1e-9)
    # eigenvectors up to the shared sign convention (distinct eigenvalues here)
    torch.testing.assert_close(a.W, b.W, atol=1e-7, rtol=1e-7)


def test_matches_reference_numpy_recipe_and_sklearn_pca():
    from sklearn.decomposition import PCA

    x = anisotropic(n=300, d=10, seed=3)
    xn = x.numpy()
    # the post's reference code: np.cov (1/(N-1)), svd of the covariance, W = u / sqrt(s)
    mu = xn.mean(0, keepdims=True)
    u, s, _ = np.linalg.svd(np.cov(xn.T))
    ref = (xn - mu) @ (u / np.sqrt(s))
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    ours = apply_whitening(x, fit_whitening(x)).numpy()
    # columns may differ in sign, and the N-1 convention rescales every column by one constant:
    # cosines (Gram matrices of the normalised rows) must agree
    np.testing.assert_allclose(ours @ ours.T, ref @ ref.T, atol=1e-10)
    for k in (3, 7):
        # sklearn: x_pca = (x - mean) V_k / sqrt(lambda_k (N/(N-1))), signs by svd_flip
        sk = PCA(n_components=k, whiten=True, svd_solver="full").fit_transform(xn)
        sk /= np.linalg.norm(sk, axis=1, keepdims=True)
        y = apply_whitening(x, fit_whitening(x, n_components=k)).numpy()
        np.testing.assert_allclose(y @ y.T, sk @ sk.T, atol=1e-9)
        signs = np.sign((y * sk).sum(0))
        np.testing.assert_allclose(y, sk * signs, atol=1e-9)


def test_pca_and_zca_give_identical_cosines_and_mahalanobis():
    x = anisotropic(n=200, d=8, seed=4)
    w = fit_whitening(x)
    zca = zca_matrix(w.eigvecs, w.eigvals)
    torch.testing.assert_close(zca, zca.T)
    yp = F.normalize((x - w.mu) @ w.W, dim=1)
    yz = F.normalize((x - w.mu) @ zca, dim=1)
    torch.testing.assert_close(yp @ yp.T, yz @ yz.T, atol=1e-10, rtol=0)
    sigma_inv = torch.linalg.inv(torch.cov(x.T, correction=0))
    m = mahalanobis_cosine(x[:100], x[100:], w.mu, sigma_inv)
    torch.testing.assert_close(m, (yp[:100] * yp[100:]).sum(1), atol=1e-10, rtol=0)


def test_rotation_only_keeps_every_cosine():
    x = anisotropic(n=150, d=9, seed=5)
    y = apply_whitening(x, fit_whitening(x, beta=0.0, gamma=0.0))
    xn = F.normalize(x, dim=1)
    torch.testing.assert_close(y @ y.T, xn @ xn.T, atol=1e-12, rtol=0)


def test_beta_centres_at_a_fraction_of_the_mean():
    x = anisotropic(n=100, d=5, seed=6)
    w = fit_whitening(x, beta=0.5, gamma=1.0)
    torch.testing.assert_close(w.mu, 0.5 * x.mean(0, keepdim=True))
    c = x - w.mu
    torch.testing.assert_close(w.W.T @ (c.T @ c / 100) @ w.W, torch.eye(5, dtype=torch.float64))


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(3, 40),
    d=st.integers(1, 6),
    seed=st.integers(0, 10_000),
    scale=st.floats(1e-3, 1e3),
)
def test_property_whitened_covariance_is_identity(n, d, seed, scale):
    g = torch.Generator().manual_seed(seed)
    x = scale * torch.randn(n, d, generator=g, dtype=torch.float64)
    k = min(d, n - 1)
    w = fit_whitening(x, n_components=k)
    y = apply_whitening(x, w, normalize=False)
    cov = y.T @ y / n
    torch.testing.assert_close(cov, torch.eye(k, dtype=torch.float64), atol=1e-6, rtol=0)


@settings(max_examples=30, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 20), min_size=1, max_size=6),
    d=st.integers(1, 5),
    seed=st.integers(0, 10_000),
    offset=st.floats(-1e4, 1e4),
)
def test_property_running_moments_match_batch(sizes, d, seed, offset):
    g = torch.Generator().manual_seed(seed)
    n = sum(sizes)
    if n == 0:
        return
    x = torch.randn(n, d, generator=g, dtype=torch.float64) + offset
    parts = torch.split(x, sizes)
    rm = RunningMoments(d)
    for p in parts:
        rm.update(p)
    assert rm.count == n
    torch.testing.assert_close(rm.mean, x.mean(0), atol=1e-9 * (1 + abs(offset)), rtol=1e-12)
    ref = (x - x.mean(0)).T @ (x - x.mean(0)) / n
    torch.testing.assert_close(rm.cov, ref, atol=1e-8, rtol=1e-8)
    # merging accumulators built on two halves gives the same
    a, b = RunningMoments(d), RunningMoments(d)
    for i, p in enumerate(parts):
        (a if i % 2 else b).update(p)
    a.merge(b)
    torch.testing.assert_close(a.cov, ref, atol=1e-8, rtol=1e-8)


def test_running_moments_against_numpy_cov_float32_input():
    x = anisotropic(n=257, d=6, seed=7, dtype=torch.float32)
    rm = RunningMoments(6, dtype=torch.float64)
    for chunk in torch.split(x, 50):
        rm.update(chunk)
    np.testing.assert_allclose(
        rm.cov.numpy(), np.cov(x.double().numpy().T, bias=True), atol=1e-10, rtol=1e-10
    )


def test_bad_input():
    x = anisotropic(n=20, d=4)
    with pytest.raises(ValueError, match=r"^n_components\b"):
        fit_whitening(x, n_components=5)
    with pytest.raises(ValueError, match=r"^x\b"):
        fit_whitening(x[:1])
    with pytest.raises(ValueError, match=r"^x\b"):
        fit_whitening(x[:3])  # 3 rows, 4 dims: a singular covariance
    fit_whitening(x[:3], gamma=0.0)  # rotation only is fine
    fit_whitening(x[:3], eps=1e-3)  # so is shrinkage
    with pytest.raises(ValueError, match=r"^beta\b"):
        fit_whitening(x, beta=-1.0)
    with pytest.raises(ValueError, match=r"^gamma\b"):
        fit_whitening(x, gamma=float("nan"))
    with pytest.raises(ValueError, match=r"^method\b"):
        fit_whitening(x, method="qr")
    with pytest.raises(TypeError, match=r"^x\b"):
        fit_whitening(x.long())
    with pytest.raises(ValueError, match=r"^x\b"):
        fit_whitening(x[0])
    with pytest.raises(ValueError, match=r"^x\b"):
        apply_whitening(x[:, :3], fit_whitening(x))
    with pytest.raises(TypeError, match=r"^w\b"):
        apply_whitening(x, (x, x))
    with pytest.raises(ValueError, match=r"^eigvals\b"):
        zca_matrix(torch.eye(2, dtype=torch.float64), torch.tensor([1.0, 0.0], dtype=torch.float64))
    rm = RunningMoments(4)
    with pytest.raises(ValueError, match=r"^count\b"):
        _ = rm.cov
    with pytest.raises(ValueError, match=r"^batch\b"):
        rm.update(torch.zeros(3, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"^other\b"):
        rm.merge(RunningMoments(3))


def test_extreme_scales_no_nan():
    x = anisotropic(n=50, d=4) * 1e-150
    y = apply_whitening(x, fit_whitening(x, n_components=4))
    assert torch.isfinite(y).all()
    assert isinstance(fit_whitening(x), Whitening)


@requires_cuda
def test_cuda_keeps_device_and_dtype():
    x = anisotropic(n=300, d=8).cuda()
    w = fit_whitening(x, n_components=5)
    assert w.W.device == x.device and w.W.dtype == torch.float64
    y = apply_whitening(x, w, normalize=False)
    torch.testing.assert_close(
        torch.cov(y.T, correction=0), torch.eye(5, dtype=torch.float64, device="cuda")
    )
    ref = apply_whitening(x.cpu(), fit_whitening(x.cpu(), n_components=5), normalize=False)
    torch.testing.assert_close(y.cpu(), ref, atol=1e-8, rtol=1e-8)
    rm = RunningMoments(8, device="cuda").update(x)
    torch.testing.assert_close(rm.cov, torch.cov(x.T, correction=0))
