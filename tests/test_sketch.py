"""Tests of kexue_lib.sketch against brute force, closed forms, torch, numpy and sklearn."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kexue_lib._core import make_generator
from kexue_lib.sketch import (
    decode_cosine,
    hamming,
    packbits,
    pca_project,
    randomized_svd,
    sign_cosine,
    simhash,
)
from tests.conftest import requires_cuda

DTYPES = [torch.float32, torch.float64]


# --------------------------------------------------------------------------- helpers


def brute_hamming(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Double loop over rows, counting differing bits one by one."""
    out = torch.zeros(a.shape[0], b.shape[0], dtype=torch.int64)
    for i in range(a.shape[0]):
        for j in range(b.shape[0]):
            out[i, j] = sum(int(x != y) for x, y in zip(a[i].tolist(), b[j].tolist(), strict=True))
    return out


def pairs_at_angle(theta: float, n_pairs: int, m: int, *, dtype, generator):
    """Unit pairs (x, y) with angle exactly theta and uniformly random orientation."""
    x = torch.randn(n_pairs, m, dtype=dtype, generator=generator)
    u = torch.randn(n_pairs, m, dtype=dtype, generator=generator)
    x = x / x.norm(dim=1, keepdim=True)
    u = u - (u * x).sum(1, keepdim=True) * x
    u = u / u.norm(dim=1, keepdim=True)
    y = math.cos(theta) * x + math.sin(theta) * u
    return x, y


def low_rank(m, n, r, *, dtype, generator, spectrum=None):
    """M = U diag(s) V^T with orthonormal U, V and given singular values (default 1..r)."""
    U = torch.linalg.qr(torch.randn(m, r, dtype=torch.float64, generator=generator)).Q
    V = torch.linalg.qr(torch.randn(n, r, dtype=torch.float64, generator=generator)).Q
    s = torch.linspace(r, 1, r, dtype=torch.float64) if spectrum is None else spectrum
    return ((U * s) @ V.T).to(dtype), s


# --------------------------------------------------------------------------- packbits / hamming


def test_packbits_matches_numpy():
    g = make_generator(0)
    for n in (1, 7, 8, 9, 64, 70):
        codes = torch.rand(5, n, generator=g) > 0.5
        want = np.packbits(codes.numpy(), axis=-1)
        got = packbits(codes)
        assert got.dtype == torch.uint8
        np.testing.assert_array_equal(got.numpy(), want)


@pytest.mark.parametrize("n_bits", [1, 5, 8, 13, 64, 100])
def test_hamming_vs_brute_force(n_bits):
    g = make_generator(1)
    a = torch.rand(7, n_bits, generator=g) > 0.5
    b = torch.rand(4, n_bits, generator=g) > 0.3
    want = brute_hamming(a, b)
    torch.testing.assert_close(hamming(a, b), want)
    torch.testing.assert_close(hamming(packbits(a), packbits(b)), want)
    # tiny chunks exercise the chunk loop
    torch.testing.assert_close(hamming(a, b, max_elements=1), want)
    # row-wise variant equals the diagonal
    torch.testing.assert_close(hamming(a[:4], b, pairwise=False), torch.diagonal(want[:4]))


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 80), st.integers(0, 2**31 - 1))
def test_hamming_is_a_metric(n_bits, seed):
    g = make_generator(seed)
    x = torch.rand(6, n_bits, generator=g) > 0.5
    H = hamming(x, x)
    assert torch.equal(H, H.T)
    assert torch.equal(torch.diagonal(H), torch.zeros(6, dtype=torch.int64))
    assert bool((H[:, :, None] <= H[:, None, :] + H.T[None, :, :]).all())  # triangle
    # complement flips every bit: h(a, ~b) = n - h(a, b)
    assert torch.equal(hamming(x, ~x), n_bits - H)


def test_hamming_bad_inputs():
    a = torch.zeros(3, 8, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"^b\b"):
        hamming(a, torch.zeros(3, 9, dtype=torch.bool))
    with pytest.raises(TypeError, match=r"^a\b"):
        hamming(torch.zeros(3, 8), a)
    with pytest.raises(ValueError, match=r"^a\b"):
        hamming(torch.zeros(8, dtype=torch.bool), a)
    with pytest.raises(ValueError, match=r"^b\b"):
        hamming(a, torch.zeros(2, 8, dtype=torch.bool), pairwise=False)
    with pytest.raises(TypeError, match=r"^codes\b"):
        packbits(torch.zeros(3, 8))


# --------------------------------------------------------------------------- simhash statistics


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("theta", [0.3, math.pi / 2, 2.5])
def test_simhash_mismatch_rate_is_theta_over_pi(dtype, theta):
    g = make_generator(2)
    n_pairs, n_bits = 20_000, 16
    x, y = pairs_at_angle(theta, n_pairs, 24, dtype=dtype, generator=g)
    codes, A = simhash(torch.cat([x, y]), n_bits, generator=g, return_projection=True)
    assert codes.shape == (2 * n_pairs, n_bits) and codes.dtype == torch.bool
    assert A.shape == (n_bits, 24) and A.dtype == dtype
    # codes really are sign(x A^T)
    torch.testing.assert_close(codes[:n_pairs], (x @ A.T) > 0)
    h = hamming(codes[:n_pairs], codes[n_pairs:], pairwise=False)
    p = theta / math.pi
    rate = h.sum().item() / (n_pairs * n_bits)
    sigma = math.sqrt(p * (1 - p) / (n_pairs * n_bits))
    assert abs(rate - p) < 3 * sigma, (rate, p, sigma)


def test_decode_bias_matches_binomial_and_shrinks():
    """h ~ Binomial(n, theta/pi) exactly, so E[sin(pi s / 2)] is a finite sum (scipy.stats)."""
    from scipy.stats import binom

    theta = 1.0
    g = make_generator(3)
    x, y = pairs_at_angle(theta, 4000, 16, dtype=torch.float64, generator=g)
    biases = []
    for n_bits in (8, 64, 512):
        codes = simhash(torch.cat([x, y]), n_bits, generator=g)
        s = sign_cosine(hamming(codes[:4000], codes[4000:], pairwise=False), n_bits)
        est = decode_cosine(s.double())
        hs = np.arange(n_bits + 1)
        exact_mean = float(
            np.sum(binom.pmf(hs, n_bits, theta / np.pi) * np.sin(np.pi / 2 * (1 - 2 * hs / n_bits)))
        )
        sem = est.std().item() / math.sqrt(len(est))
        assert abs(est.mean().item() - exact_mean) < 4 * sem + 1e-12, (
            n_bits,
            est.mean(),
            exact_mean,
        )
        biases.append(abs(exact_mean - math.cos(theta)))
        # the raw sign cosine is centred on the arcsine law, not on cos(theta)
        assert abs(s.mean().item() - (1 - 2 * theta / math.pi)) < 4 * s.std().item() / 63 + 1e-9
    assert biases[0] > biases[1] > biases[2], biases
    assert biases[2] < 2e-3


@settings(max_examples=40, deadline=None)
@given(st.floats(-1.0, 1.0))
def test_decode_inverts_the_arcsine_law(c):
    s = torch.tensor(2 / math.pi * math.asin(c), dtype=torch.float64)
    torch.testing.assert_close(decode_cosine(s), torch.tensor(c, dtype=torch.float64))


def test_sign_cosine_closed_form_and_inputs():
    h = torch.tensor([0, 16, 32, 64])
    torch.testing.assert_close(sign_cosine(h, 64), torch.tensor([1.0, 0.5, 0.0, -1.0]))
    assert sign_cosine(h, 64, dtype=torch.float64).dtype == torch.float64
    with pytest.raises(ValueError, match=r"^hamming_dist\b"):
        sign_cosine(torch.tensor([65]), 64)
    with pytest.raises(ValueError, match=r"^n_bits\b"):
        sign_cosine(h, 0)
    with pytest.raises(ValueError, match=r"^s\b"):
        decode_cosine(torch.tensor([1.5]))
    with pytest.raises(TypeError, match=r"^s\b"):
        decode_cosine(torch.tensor([1]))


def test_simhash_bad_inputs_and_low_precision():
    with pytest.raises(ValueError, match=r"^n_bits\b"):
        simhash(torch.randn(3, 4), 0)
    with pytest.raises(TypeError, match=r"^n_bits\b"):
        simhash(torch.randn(3, 4), 2.0)
    with pytest.raises(ValueError, match=r"^X\b"):
        simhash(torch.randn(4), 8)
    with pytest.raises(TypeError, match=r"^X\b"):
        simhash(torch.ones(3, 4, dtype=torch.int64), 8)
    with pytest.raises(ValueError, match=r"^X\b"):
        simhash(torch.tensor([[float("nan"), 1.0]]), 8)
    # same generator seed: fp16 codes equal fp32 codes away from the hyperplanes
    x = torch.randn(50, 8, generator=make_generator(4))
    c32 = simhash(x, 32, generator=make_generator(5))
    c16 = simhash(x.half(), 32, generator=make_generator(5))
    assert (c32 != c16).float().mean().item() < 0.02
    s = decode_cosine(torch.tensor([-1.0, 0.3, 1.0], dtype=torch.bfloat16))
    assert s.dtype == torch.bfloat16 and bool(torch.isfinite(s).all())


def test_simhash_zero_row_and_determinism():
    x = torch.zeros(2, 5)
    assert not simhash(x, 16, generator=make_generator(0)).any()
    y = torch.randn(4, 5, generator=make_generator(1))
    assert torch.equal(
        simhash(y, 16, generator=make_generator(7)), simhash(y, 16, generator=make_generator(7))
    )


# --------------------------------------------------------------------------- randomized SVD


@pytest.mark.parametrize("dtype", DTYPES)
def test_randomized_svd_exact_on_low_rank(dtype):
    g = make_generator(10)
    M, s = low_rank(120, 80, 8, dtype=dtype, generator=g)
    U, S, V = randomized_svd(M, 8, oversample=0, n_iter=0, generator=g)
    assert U.shape == (120, 8) and S.shape == (8,) and V.shape == (80, 8)
    assert U.dtype == S.dtype == V.dtype == dtype
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    exact = torch.linalg.svdvals(M.double())[:8]
    torch.testing.assert_close(S.double(), exact, rtol=tol, atol=tol)
    torch.testing.assert_close(S.double(), s, rtol=tol, atol=tol)
    err = torch.linalg.norm((U * S) @ V.T - M) / torch.linalg.norm(M)
    assert err.item() < tol, err
    eye = torch.eye(8, dtype=dtype)
    torch.testing.assert_close(U.T @ U, eye, rtol=tol, atol=tol)
    torch.testing.assert_close(V.T @ V, eye, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_randomized_svd_vs_torch_and_sklearn_on_decaying_spectrum(dtype):
    from sklearn.utils.extmath import randomized_svd as sk_rsvd

    g = make_generator(11)
    m, n, k = 300, 200, 10
    spectrum = 1.0 / torch.arange(1, n + 1, dtype=torch.float64)
    M, _ = low_rank(m, n, n, dtype=dtype, generator=g, spectrum=spectrum)
    optimal = spectrum[k:].pow(2).sum().sqrt().item()  # Eckart-Young
    U, S, V = randomized_svd(M, k, oversample=10, n_iter=2, generator=g)
    err = torch.linalg.norm(M.double() - (U * S).double() @ V.double().T).item()
    assert optimal <= err * (1 + 1e-6) and err < 1.05 * optimal, (err, optimal)
    # torch's own HMT implementation with the same sizes
    Ut, St, Vt = torch.svd_lowrank(M, q=k + 10, niter=2)
    err_t = torch.linalg.norm(M.double() - (Ut[:, :k] * St[:k]).double() @ Vt[:, :k].double().T)
    assert err < 1.05 * err_t.item()
    # sklearn's implementation
    Us, Ss, Vts = sk_rsvd(M.double().numpy(), k, n_oversamples=10, n_iter=2, random_state=0)
    err_s = np.linalg.norm(M.double().numpy() - (Us * Ss) @ Vts)
    assert err < 1.05 * err_s
    rtol = 1e-3 if dtype == torch.float64 else 5e-3
    np.testing.assert_allclose(S.double().numpy(), Ss, rtol=rtol)
    np.testing.assert_allclose(S.double().numpy(), spectrum[:k].numpy(), rtol=rtol)


def test_power_iterations_help_on_flat_spectrum():
    g = make_generator(12)
    spectrum = 1.0 / torch.arange(1, 151, dtype=torch.float64).sqrt()
    M, _ = low_rank(200, 150, 150, dtype=torch.float64, generator=g, spectrum=spectrum)
    optimal = spectrum[10:].pow(2).sum().sqrt().item()

    def err(q):
        U, S, V = randomized_svd(M, 10, oversample=5, n_iter=q, generator=make_generator(0))
        return torch.linalg.norm(M - (U * S) @ V.T).item() / optimal

    assert err(0) > err(3) >= 1.0


def test_reorthonormalised_power_iterations_survive_float32():
    """Pitfall: (M M^T)^q M Omega without QR in between loses the tail in float32."""
    g = make_generator(13)
    m, n, k, p = 300, 200, 20, 5
    spectrum = 1.0 / torch.arange(1, n + 1, dtype=torch.float64)
    M64, _ = low_rank(m, n, n, dtype=torch.float64, generator=g, spectrum=spectrum)
    M = M64.float()
    optimal = spectrum[k:].pow(2).sum().sqrt().item()

    def naive(q):
        Y = M @ torch.randn(n, k + p, generator=make_generator(0))
        for _ in range(q):
            Y = M @ (M.T @ Y)
        Q = torch.linalg.qr(Y).Q
        Ub, S, Vh = torch.linalg.svd(Q.T @ M, full_matrices=False)
        return Q @ Ub[:, :k], S[:k], Vh[:k].T

    def err(U, S, V):
        return torch.linalg.norm(M64 - (U * S).double() @ V.double().T).item() / optimal

    q = 6
    ours = err(*randomized_svd(M, k, oversample=p, n_iter=q, generator=make_generator(0)))
    assert ours < 1.02, ours
    assert err(*naive(q)) > 1.3 * ours


@settings(max_examples=25, deadline=None)
@given(st.integers(5, 40), st.integers(5, 40), st.integers(1, 5), st.integers(0, 2**31 - 1))
def test_randomized_svd_reconstructs_any_low_rank(m, n, r, seed):
    g = make_generator(seed)
    r = min(r, m, n)
    M = torch.randn(m, r, dtype=torch.float64, generator=g) @ torch.randn(
        r, n, dtype=torch.float64, generator=g
    )
    k = min(r + 1, m, n)
    U, S, V = randomized_svd(M, k, oversample=2, n_iter=1, generator=g)
    torch.testing.assert_close((U * S) @ V.T, M, rtol=1e-8, atol=1e-8 * M.abs().max().item())
    assert bool((S[:-1] >= S[1:]).all())


def test_randomized_svd_bad_inputs_and_half():
    M = torch.randn(10, 6)
    with pytest.raises(ValueError, match=r"^k\b"):
        randomized_svd(M, 7)
    with pytest.raises(ValueError, match=r"^k\b"):
        randomized_svd(M, 0)
    with pytest.raises(ValueError, match=r"^oversample\b"):
        randomized_svd(M, 2, oversample=-1)
    with pytest.raises(TypeError, match=r"^n_iter\b"):
        randomized_svd(M, 2, n_iter=1.5)
    with pytest.raises(ValueError, match=r"^M\b"):
        randomized_svd(torch.randn(3, 4, 5), 2)
    U, S, V = randomized_svd(M.to(torch.bfloat16), 3, generator=make_generator(0))
    assert S.dtype == torch.bfloat16 and bool(torch.isfinite(U).all())


# --------------------------------------------------------------------------- PCA


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("center", [True, False])
def test_pca_project_vs_sklearn(dtype, center):
    from sklearn.decomposition import PCA, TruncatedSVD

    g = make_generator(20)
    X = (
        torch.randn(100, 12, dtype=dtype, generator=g) * torch.linspace(5, 0.5, 12, dtype=dtype)
        + 3.0
    )
    Z = pca_project(X, 4, center=center)
    assert Z.shape == (100, 4) and Z.dtype == dtype
    if center:
        ref = PCA(n_components=4, svd_solver="full").fit_transform(X.double().numpy())
    else:
        ref = TruncatedSVD(n_components=4, algorithm="arpack").fit_transform(X.double().numpy())
    got = Z.double().numpy()
    signs = np.sign((got * ref).sum(0))
    tol = 1e-9 if dtype == torch.float64 else 1e-3
    np.testing.assert_allclose(got * signs, ref, rtol=tol, atol=tol * np.abs(ref).max())


def test_pca_project_bad_inputs():
    with pytest.raises(ValueError, match=r"^k\b"):
        pca_project(torch.randn(5, 3), 4)
    with pytest.raises(TypeError, match=r"^X\b"):
        pca_project(torch.ones(5, 3, dtype=torch.int32), 2)


# --------------------------------------------------------------------------- CUDA


@requires_cuda
def test_cuda_paths():
    dev = torch.device("cuda")
    g = make_generator(0)  # a CPU generator drives CUDA inputs too
    X = torch.randn(64, 16, device=dev)
    codes = simhash(X, 40, generator=g)
    assert codes.device.type == "cuda"
    H = hamming(codes, codes[:5])
    torch.testing.assert_close(H.cpu(), brute_hamming(codes.cpu(), codes[:5].cpu()))
    s = decode_cosine(sign_cosine(H, 40))
    assert s.device.type == "cuda"
    M, _ = low_rank(60, 40, 5, dtype=torch.float64, generator=g)
    U, S, V = randomized_svd(M.to(dev), 5, generator=g)
    assert U.device.type == "cuda"
    torch.testing.assert_close(((U * S) @ V.T).cpu(), M, rtol=1e-8, atol=1e-8)
    Z = pca_project(X, 3)
    torch.testing.assert_close(Z.cpu(), pca_project(X.cpu(), 3), rtol=1e-4, atol=1e-4)
