"""kexue_lib.linear_models against least squares, sklearn's LDA and LogisticRegression, Bayes' rule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kexue_lib.linear_models import (
    analytic_logistic,
    analytic_softmax,
    class_statistics,
    fit_softmax_mle,
    gaussian_linear_regression,
    predict_logits,
    whitening_transform,
)
from tests.conftest import gen, requires_cuda

F64 = torch.float64


def gaussian_classes(N, n, K, *, seed=0, sep=1.0, dtype=F64, device="cpu"):
    """Shared-covariance Gaussian classes: returns X, y, and the true p, mu, Sigma."""
    g = gen(seed)
    A = torch.randn(n, n, dtype=F64, generator=g) / math.sqrt(n)
    Sigma = A @ A.T + 0.3 * torch.eye(n, dtype=F64)
    mu = sep * torch.randn(K, n, dtype=F64, generator=g)
    p = torch.softmax(0.5 * torch.randn(K, dtype=F64, generator=g), 0)
    y = torch.multinomial(p, N, replacement=True, generator=g)
    y[:K] = torch.arange(K)  # every class present
    L = torch.linalg.cholesky(Sigma)
    X = mu[y] + torch.randn(N, n, dtype=F64, generator=g) @ L.T
    return X.to(dtype=dtype, device=device), y.to(device), p, mu, Sigma


# ----------------------------------------------------------------------------- regression


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 2e-3)])
def test_gaussian_regression_is_least_squares(dtype, tol):
    g = gen(1)
    N, n, m = 300, 5, 3
    # non-Gaussian (exponential) correlated features: only moments matter
    X = -torch.log(torch.rand(N, n, dtype=F64, generator=g)) @ torch.randn(
        n, n, dtype=F64, generator=g
    )
    Y = X @ torch.randn(n, m, dtype=F64, generator=g) + torch.rand(N, m, dtype=F64, generator=g)
    W, b = gaussian_linear_regression(X.to(dtype), Y.to(dtype))
    assert W.dtype == dtype and W.shape == (n, m) and b.shape == (m,)
    Xa = torch.cat([X, torch.ones(N, 1, dtype=F64)], 1)
    sol = torch.linalg.lstsq(Xa, Y).solution
    scale = sol.abs().max()
    assert torch.allclose(W.double(), sol[:n], atol=tol * scale)
    assert torch.allclose(b.double(), sol[n], atol=tol * scale)
    from sklearn.linear_model import LinearRegression

    ref = LinearRegression().fit(X.numpy(), Y.numpy())
    assert np.allclose(W.double().numpy(), ref.coef_.T, atol=tol * float(scale))


def test_gaussian_regression_vector_target():
    X, y, *_ = gaussian_classes(50, 3, 2)
    t = X @ torch.tensor([1.0, -2.0, 0.5], dtype=F64) + 3.0
    W, b = gaussian_linear_regression(X, t)
    assert W.shape == (3,) and b.shape == ()
    assert torch.allclose(W, torch.tensor([1.0, -2.0, 0.5], dtype=F64), atol=1e-10)
    assert abs(float(b) - 3.0) < 1e-10


# ----------------------------------------------------------------------------- statistics


@settings(max_examples=25, deadline=None)
@given(
    N=st.integers(10, 80),
    n=st.integers(1, 6),
    K=st.integers(2, 5),
    seed=st.integers(0, 10_000),
)
def test_pooled_covariance_identity(N, n, K, seed):
    """Sigma = Cov(X) + mu~^T mu~ - sum_i p_i mu_i^T mu_i = sum_i p_i Cov_i (biased)."""
    X, y, *_ = gaussian_classes(max(N, K), n, K, seed=seed)
    p, mu, Sigma = class_statistics(X, y, K)
    assert torch.isclose(p.sum(), torch.tensor(1.0, dtype=F64))
    m = X.mean(0)
    C = (X - m).T @ (X - m) / X.shape[0]
    post = C + torch.outer(m, m) - torch.einsum("k,ki,kj->ij", p, mu, mu)
    assert torch.allclose(Sigma, post, atol=1e-10 * (1 + C.abs().max()))
    brute = sum(p[k] * torch.cov(X[y == k].T, correction=0).reshape(n, n) for k in range(K))
    assert torch.allclose(Sigma, brute, atol=1e-10 * (1 + C.abs().max()))


def test_whitening_transform():
    X, *_ = gaussian_classes(400, 6, 3)
    T, m = whitening_transform(X)
    Z = (X - m) @ T
    assert torch.allclose(Z.mean(0), torch.zeros(6, dtype=F64), atol=1e-12)
    assert torch.allclose(Z.T @ Z / 400, torch.eye(6, dtype=F64), atol=1e-10)


# ----------------------------------------------------------------------------- LDA closed form


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-8), (torch.float32, 1e-4)])
@pytest.mark.parametrize("whiten", [True, False])
def test_analytic_softmax_equals_sklearn_lda(dtype, tol, whiten):
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    X, y, *_ = gaussian_classes(500, 5, 4, seed=3)
    W, b = analytic_softmax(X.to(dtype), y, 4, whiten=whiten)
    assert W.dtype == dtype and W.shape == (5, 4) and b.shape == (4,)
    prob = torch.softmax(predict_logits(X.to(dtype), W, b), -1).double().numpy()
    lda = LinearDiscriminantAnalysis(solver="lsqr").fit(X.numpy(), y.numpy())
    assert np.allclose(prob, lda.predict_proba(X.numpy()), atol=tol)
    # LDA's covariance_ is the same pooled biased estimate
    _, _, Sigma = class_statistics(X, y, 4)
    assert np.allclose(Sigma.numpy(), lda.covariance_, atol=1e-10)


def test_analytic_softmax_equals_sklearn_lda_with_svd_solver_on_digits():
    """A real data set: LDA's default solver (svd) gives the same posterior."""
    from sklearn.datasets import load_wine
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    data = load_wine()
    X = torch.tensor(data.data, dtype=F64)
    y = torch.tensor(data.target)
    W, b = analytic_softmax(X, y, 3)
    prob = torch.softmax(predict_logits(X, W, b), -1).numpy()
    lda = LinearDiscriminantAnalysis().fit(data.data, data.target)
    assert np.allclose(prob, lda.predict_proba(data.data), atol=1e-7)


@pytest.mark.parametrize("shrinkage", [0.0, 0.3, 1.0])
def test_whitening_changes_nothing_but_rounding(shrinkage):
    X, y, *_ = gaussian_classes(300, 6, 3, seed=4)
    Xs = X * torch.tensor([1e-3, 1.0, 10.0, 1.0, 100.0, 0.1], dtype=F64) + 5.0
    W1, b1 = analytic_softmax(Xs, y, 3, whiten=True, shrinkage=shrinkage)
    W0, b0 = analytic_softmax(Xs, y, 3, whiten=False, shrinkage=shrinkage)
    l1, l0 = predict_logits(Xs, W1, b1), predict_logits(Xs, W0, b0)
    assert torch.allclose(torch.log_softmax(l1, -1), torch.log_softmax(l0, -1), atol=1e-8)


def test_shrinkage_endpoint_is_nearest_scaled_mean():
    """shrinkage = 1: Sigma -> c I, so the classifier is nearest-mean with priors."""
    X, y, *_ = gaussian_classes(300, 4, 3, seed=5)
    p, mu, Sigma = class_statistics(X, y, 3)
    c = torch.diagonal(Sigma).mean()
    W, b = analytic_softmax(X, y, 3, whiten=False, shrinkage=1.0)
    ref = -((X[:, None, :] - mu[None]) ** 2).sum(-1) / (2 * c) + torch.log(p)
    got = predict_logits(X, W, b)
    assert torch.allclose(torch.log_softmax(got, -1), torch.log_softmax(ref, -1), atol=1e-10)


def test_true_parameters_give_bayes_posterior():
    """With the true p, mu, Sigma the softmax is Bayes' rule with scipy's Gaussian densities."""
    from scipy.stats import multivariate_normal

    X, y, p, mu, Sigma = gaussian_classes(50, 3, 3, seed=6)
    from kexue_lib.linear_models import _lda_weights

    W, b = _lda_weights(p, mu, Sigma)
    post = torch.softmax(predict_logits(X, W, b), -1).numpy()
    logj = np.stack(
        [np.log(p[k].item()) + multivariate_normal(mu[k].numpy(), Sigma.numpy()).logpdf(X.numpy())
         for k in range(3)], 1
    )  # fmt: skip
    ref = np.exp(logj - logj.max(1, keepdims=True))
    ref /= ref.sum(1, keepdims=True)
    assert np.allclose(post, ref, atol=1e-12)


def test_estimates_converge_at_root_n():
    """Posterior error against the true-parameter posterior shrinks ~ N^{-1/2}."""
    from kexue_lib.linear_models import _lda_weights

    errs = []
    for N in (500, 8000):
        e = []
        for s in range(6):
            X, y, p, mu, Sigma = gaussian_classes(N, 3, 3, seed=100 + s)
            W, b = analytic_softmax(X, y, 3)
            Wt, bt = _lda_weights(p, mu, Sigma)
            Xq = X[:200]
            d = torch.softmax(predict_logits(Xq, W, b), -1) - torch.softmax(
                predict_logits(Xq, Wt, bt), -1
            )
            e.append(d.abs().mean().item())
        errs.append(np.mean(e))
    ratio = errs[0] / errs[1]
    assert 2.0 < ratio < 8.0, ratio  # sqrt(16) = 4


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 5))
def test_logistic_is_the_two_class_softmax(seed, n):
    X, y, *_ = gaussian_classes(60, n, 2, seed=seed)
    w, b = analytic_logistic(X, y)
    W, B = analytic_softmax(X, y, 2, whiten=False)
    assert w.shape == (n,) and b.shape == ()
    assert torch.allclose(w, W[:, 1] - W[:, 0], atol=1e-9 * (1 + w.abs().max()))
    p1 = torch.sigmoid(X @ w + b)
    assert torch.allclose(p1, torch.softmax(X @ W + B, -1)[:, 1], atol=1e-9)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), shift=st.floats(-50, 50), scale=st.floats(0.01, 100))
def test_affine_equivariance(seed, shift, scale):
    """Rescaling and shifting the features does not change the predicted probabilities."""
    X, y, *_ = gaussian_classes(80, 3, 3, seed=seed)
    W, b = analytic_softmax(X, y, 3)
    W2, b2 = analytic_softmax(X * scale + shift, y, 3)
    p = torch.softmax(predict_logits(X, W, b), -1)
    p2 = torch.softmax(predict_logits(X * scale + shift, W2, b2), -1)
    assert torch.allclose(p, p2, atol=1e-7)


# ----------------------------------------------------------------------------- MLE reference


@pytest.mark.parametrize("l2", [0.0, 0.05])
def test_mle_matches_sklearn_logistic_regression(l2):
    from sklearn.linear_model import LogisticRegression

    X, y, *_ = gaussian_classes(400, 4, 3, seed=7, sep=0.6)
    W, b = fit_softmax_mle(X, y, 3, l2=l2)
    prob = torch.softmax(predict_logits(X, W, b), -1).numpy()
    C = np.inf if l2 == 0 else 1.0 / (l2 * 400)
    ref = LogisticRegression(C=C, tol=1e-12, max_iter=5000).fit(X.numpy(), y.numpy())
    assert np.allclose(prob, ref.predict_proba(X.numpy()), atol=1e-5)


def test_closed_form_approximates_but_is_not_the_mle():
    """Under the true model the two estimators agree closely but not exactly (pitfall 7)."""
    X, y, *_ = gaussian_classes(4000, 4, 3, seed=8, sep=0.6)
    Wa, ba = analytic_softmax(X, y, 3)
    Wm, bm = fit_softmax_mle(X, y, 3)
    pa = torch.softmax(predict_logits(X, Wa, ba), -1)
    pm = torch.softmax(predict_logits(X, Wm, bm), -1)
    diff = (pa - pm).abs().max().item()
    assert 1e-6 < diff < 0.05, diff
    ce = lambda P: -torch.log(P[torch.arange(4000), y]).mean().item()  # noqa: E731
    assert ce(pm) <= ce(pa) + 1e-12  # the MLE minimises the training log-loss


def test_float32_and_device_kept():
    X, y, *_ = gaussian_classes(100, 3, 2, dtype=torch.float32)
    for W, b in (analytic_softmax(X, y, 2), fit_softmax_mle(X, y, 2, l2=0.1)):
        assert W.dtype == torch.float32 and b.dtype == torch.float32
        assert torch.isfinite(W).all() and torch.isfinite(b).all()


@requires_cuda
def test_cuda():
    X, y, *_ = gaussian_classes(200, 3, 3, device="cuda")
    W, b = analytic_softmax(X, y, 3)
    W0, b0 = analytic_softmax(X.cpu(), y.cpu(), 3)
    assert W.device.type == "cuda"
    assert torch.allclose(W.cpu(), W0, atol=1e-8)


# ----------------------------------------------------------------------------- bad input


def test_bad_input():
    X, y, *_ = gaussian_classes(20, 3, 2)
    with pytest.raises(TypeError, match=r"^X\b"):
        analytic_softmax(X.numpy(), y, 2)
    with pytest.raises(ValueError, match=r"^X\b"):
        analytic_softmax(X[0], y, 2)
    with pytest.raises(TypeError, match=r"^y\b"):
        analytic_softmax(X, y.double(), 2)
    with pytest.raises(ValueError, match=r"^y\b"):
        analytic_softmax(X, y[:5], 2)
    with pytest.raises(ValueError, match=r"^y\b"):
        analytic_softmax(X, y + 5, 2)
    with pytest.raises(ValueError, match=r"^y\b"):
        class_statistics(X, torch.zeros(20, dtype=torch.long), 2)  # an empty class
    with pytest.raises(ValueError, match=r"^num_classes\b"):
        analytic_softmax(X, y, 1)
    with pytest.raises(ValueError, match=r"^shrinkage\b"):
        analytic_softmax(X, y, 2, shrinkage=1.5)
    with pytest.raises(ValueError, match=r"^shrinkage\b"):
        analytic_softmax(X, y, 2, shrinkage=-0.1)
    with pytest.raises(TypeError, match=r"^whiten\b"):
        analytic_softmax(X, y, 2, whiten="yes")
    with pytest.raises(ValueError, match=r"^X\b"):
        analytic_softmax(X.clone().fill_(float("nan")), y, 2)
    with pytest.raises(ValueError, match=r"^l2\b"):
        fit_softmax_mle(X, y, 2, l2=-1.0)
    with pytest.raises(ValueError, match=r"^Y\b"):
        gaussian_linear_regression(X, X[:5])
    with pytest.raises(ValueError, match=r"^W\b"):
        predict_logits(X, torch.zeros(4, 2, dtype=F64), torch.zeros(2, dtype=F64))


def test_singular_covariance_needs_shrinkage():
    """More features than samples: a clear error without shrinkage, finite weights with it."""
    g = gen(9)
    X = torch.randn(10, 30, dtype=F64, generator=g)
    y = torch.arange(10) % 2
    with pytest.raises(ValueError, match=r"^X\b.*shrinkage"):
        analytic_softmax(X, y, 2, whiten=False)
    W, b = analytic_softmax(X, y, 2, whiten=False, shrinkage=0.2)
    assert torch.isfinite(W).all() and torch.isfinite(b).all()
