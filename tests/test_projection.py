"""kexue_lib.projection and synthetic.vectors against sklearn, scipy.stats.chi2 and torch.pdist."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from kexue_lib import projection as P
from kexue_lib.synthetic.vectors import point_cloud
from tests.conftest import gen, requires_cuda

DTYPES = [torch.float32, torch.float64]


def brute_condensed(x: torch.Tensor) -> torch.Tensor:
    """Squared distances i < j by a double loop (independent of the library)."""
    x = x.to(torch.float64)
    n = x.shape[0]
    return torch.stack([((x[i] - x[j]) ** 2).sum() for i in range(n) for j in range(i + 1, n)])


# --------------------------------------------------------------------------- matrices


@pytest.mark.parametrize("dtype", DTYPES)
def test_gaussian_moments_match_sklearn_convention(dtype):
    from sklearn.random_projection import GaussianRandomProjection

    d_out, d_in = 64, 512
    A = P.gaussian_projection(d_out, d_in, generator=gen(0), dtype=dtype)
    assert A.shape == (d_out, d_in) and A.dtype == dtype
    skl = GaussianRandomProjection(n_components=d_out, random_state=0).fit(np.zeros((2, d_in)))
    ref = skl.components_
    assert ref.shape == (d_out, d_in)
    # same law: mean 0, variance 1/d_out (not std 1/d_out -- pitfall 1)
    ours = A.double().numpy().ravel()
    assert abs(ours.mean()) < 5 / math.sqrt(ours.size * d_out)
    assert abs(ours.var() * d_out - 1) < 0.03
    assert abs(ref.var() * d_out - 1) < 0.03
    assert stats.ks_2samp(ours * math.sqrt(d_out), ref.ravel() * math.sqrt(d_out)).pvalue > 0.01


def test_sparse_values_match_sklearn():
    from sklearn.random_projection import SparseRandomProjection

    d_out, d_in = 50, 400
    for density in (None, 1 / 3):
        A = P.sparse_projection(d_out, d_in, density=density, generator=gen(1), dtype=torch.float64)
        skl = SparseRandomProjection(
            n_components=d_out, density="auto" if density is None else density, random_state=0
        ).fit(np.zeros((2, d_in)))
        ref = skl.components_.toarray()
        np.testing.assert_allclose(np.unique(A.numpy()), np.unique(ref), rtol=1e-12)
        dens = 1 / math.sqrt(d_in) if density is None else density
        frac = (A != 0).double().mean().item()
        sd = math.sqrt(dens * (1 - dens) / A.numel())
        assert abs(frac - dens) < 5 * sd, (frac, dens)
        # +/- balanced
        pos, neg = (A > 0).sum().item(), (A < 0).sum().item()
        assert abs(pos - neg) < 5 * math.sqrt(pos + neg)


def test_sparse_coo_equals_dense_and_project():
    A = P.sparse_projection(16, 100, density=0.2, generator=gen(2), dtype=torch.float64)
    As = P.sparse_projection(
        16, 100, density=0.2, generator=gen(2), dtype=torch.float64, sparse=True
    )
    assert As.layout == torch.sparse_coo
    torch.testing.assert_close(As.to_dense(), A)
    X = torch.randn(7, 100, generator=gen(3), dtype=torch.float64)
    torch.testing.assert_close(P.project(X, As), X @ A.T)
    torch.testing.assert_close(P.project(X, A), torch.einsum("nd,kd->nk", X, A))


def test_rademacher_values():
    A = P.rademacher_projection(25, 300, generator=gen(4), dtype=torch.float64)
    np.testing.assert_allclose(np.unique(A.numpy()), [-0.2, 0.2])
    assert abs((A > 0).double().mean().item() - 0.5) < 5 * 0.5 / math.sqrt(A.numel())


def test_ratio_law_matches_sklearn_ks():
    """|Ax|^2/|x|^2 over independent matrices: ours vs sklearn's, for a fixed x."""
    from sklearn.random_projection import GaussianRandomProjection, SparseRandomProjection

    d_in, d_out, R = 64, 8, 300
    x = np.random.default_rng(0).standard_normal((1, d_in))
    xt = torch.from_numpy(x)
    sq = float((x**2).sum())
    for ours_fn, skl_cls in (
        (P.gaussian_projection, GaussianRandomProjection),
        (P.sparse_projection, SparseRandomProjection),
    ):
        g = gen(5)
        ours = [
            float(
                (P.project(xt, ours_fn(d_out, d_in, generator=g, dtype=torch.float64)) ** 2).sum()
            )
            / sq
            for _ in range(R)
        ]
        ref = [
            float((skl_cls(n_components=d_out, random_state=s).fit_transform(x) ** 2).sum()) / sq
            for s in range(R)
        ]
        assert stats.ks_2samp(ours, ref).pvalue > 0.001


def test_gaussian_ratio_is_exactly_chi_square():
    """n |A u|^2 ~ chi^2_n for a fixed unit u (the chapter's exact law), KS against scipy."""
    n, d_in, R = 6, 40, 2000
    g = gen(6)
    u = torch.randn(d_in, generator=g, dtype=torch.float64)
    u = u / u.norm()
    A = P.gaussian_projection(n * R, d_in, generator=g, dtype=torch.float64) * math.sqrt(n * R)
    # rows of A are iid N(0, I): regroup into R independent (n, d_in) matrices with var 1/n
    s = ((A @ u).reshape(R, n) ** 2).sum(1).numpy()
    assert stats.kstest(s, stats.chi2(n).cdf).pvalue > 0.001


@pytest.mark.parametrize("row_norms", ["chi", "sqrt_d_in"])
def test_orthogonal_blocks(row_norms):
    d_in, d_out = 32, 80  # 3 blocks: 32 + 32 + 16 rows
    W = P.orthogonal_gaussian_matrix(
        d_out, d_in, row_norms=row_norms, generator=gen(7), dtype=torch.float64
    )
    assert W.shape == (d_out, d_in)
    norms = W.norm(dim=1)
    if row_norms == "sqrt_d_in":
        torch.testing.assert_close(
            norms, torch.full((d_out,), math.sqrt(d_in), dtype=torch.float64)
        )
    for lo in range(0, d_out, d_in):
        B = W[lo : lo + d_in]
        G = B @ B.T
        off = G - torch.diag(torch.diag(G))
        assert off.abs().max() < 1e-10 * d_in
    # rows of different blocks are not orthogonal
    U = W / norms[:, None]
    assert (U[:d_in] @ U[d_in : 2 * d_in].T).abs().max() > 0.2


def test_orthogonal_haar_and_chi_norms():
    """Row directions uniform on the sphere (first coordinate ~ Beta law) and chi norms."""
    d_in = 8
    W = P.orthogonal_gaussian_matrix(4000, d_in, generator=gen(8), dtype=torch.float64)
    norms = W.norm(dim=1).numpy()
    assert stats.kstest(norms, stats.chi(d_in).cdf).pvalue > 0.001
    u1 = (W[:, 0] / W.norm(dim=1)).numpy() ** 2
    # u_1^2 of a uniform unit vector in R^d ~ Beta(1/2, (d-1)/2); also no sign bias
    assert stats.kstest(u1, stats.beta(0.5, (d_in - 1) / 2).cdf).pvalue > 0.001
    assert abs((W[:, 0] > 0).double().mean().item() - 0.5) < 0.05


def test_orthogonal_as_jl_map_preserves_norms_at_full_dim():
    d = 24
    W = P.orthogonal_gaussian_matrix(
        d, d, row_norms="sqrt_d_in", generator=gen(9), dtype=torch.float64
    )
    A = W / math.sqrt(d)
    x = torch.randn(5, d, generator=gen(10), dtype=torch.float64)
    torch.testing.assert_close(P.project(x, A).norm(dim=1), x.norm(dim=1))


def test_generator_reproducible_and_dtype_device():
    for fn in (
        P.gaussian_projection,
        P.rademacher_projection,
        P.sparse_projection,
        P.orthogonal_gaussian_matrix,
    ):
        a = fn(6, 9, generator=gen(11))
        b = fn(6, 9, generator=gen(11))
        torch.testing.assert_close(a, b)
        for dt in (torch.float16, torch.bfloat16, torch.float64):
            m = fn(6, 9, generator=gen(11), dtype=dt)
            assert m.dtype == dt and torch.isfinite(m.float()).all()


# --------------------------------------------------------------------------- distortions


@pytest.mark.parametrize("dtype", DTYPES)
def test_distortion_ratios_against_pdist(dtype):
    X = torch.randn(30, 50, generator=gen(12), dtype=dtype)
    A = P.gaussian_projection(10, 50, generator=gen(13), dtype=dtype)
    Y = P.project(X, A)
    r = P.distortion_ratios(X, Y)
    assert r.dtype == dtype and r.shape == (435,)
    ref = torch.pdist(Y.double()) ** 2 / torch.pdist(X.double()) ** 2
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(r.double(), ref, rtol=tol, atol=tol)
    torch.testing.assert_close(
        P.distortion_ratios(X, Y, squared=False).double(), ref.sqrt(), rtol=tol, atol=tol
    )


def test_distortion_ratios_mask_duplicates_and_near_duplicates():
    g = gen(14)
    X = torch.randn(6, 20, generator=g, dtype=torch.float64)
    X = torch.cat([X, X[:2], X[:1] + 1e-3])  # exact duplicates (0, 6), (1, 7); near-duplicates
    A = P.gaussian_projection(8, 20, generator=g, dtype=torch.float64)
    Y = P.project(X, A)
    r, mask = P.distortion_ratios(X, Y, return_mask=True)
    dx = brute_condensed(X)
    torch.testing.assert_close(mask, dx > 0)
    assert mask.numel() == 36 and int((~mask).sum()) == 2
    ref = brute_condensed(Y)[mask] / dx[mask]
    torch.testing.assert_close(r, ref, rtol=1e-7, atol=0)
    assert torch.isfinite(r).all()
    # float32 input: near-duplicate pairs keep their ratios (differences, not the Gram trick)
    r32 = P.distortion_ratios(X.float(), Y.float())
    torch.testing.assert_close(r32.double(), r, rtol=1e-3, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_inner_product_errors_against_loop(dtype):
    g = gen(15)
    X = torch.randn(12, 30, generator=g, dtype=dtype)
    Y = P.project(X, P.gaussian_projection(16, 30, generator=g, dtype=dtype))
    e = P.inner_product_errors(X, Y)
    Xd, Yd = X.double(), Y.double()
    ref = torch.stack([Yd[i] @ Yd[j] - Xd[i] @ Xd[j] for i in range(12) for j in range(i + 1, 12)])
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    torch.testing.assert_close(e.double(), ref, rtol=tol, atol=tol * 30)
    rel = P.inner_product_errors(X, Y, relative=True).double()
    sq = (Xd**2).sum(1)
    scale = torch.stack([(sq[i] + sq[j]) / 2 for i in range(12) for j in range(i + 1, 12)])
    torch.testing.assert_close(rel, ref / scale, rtol=tol, atol=tol)


def test_inner_product_bound_uses_squared_norms():
    """The polarisation step: on the event of Step 4, |err| <= eps (|x_i|^2 + |x_j|^2) / 2."""
    g = gen(16)
    X = 3.0 * torch.randn(40, 200, generator=g, dtype=torch.float64)  # far from unit norm
    n = 2000
    Y = P.project(X, P.gaussian_projection(n, 200, generator=g, dtype=torch.float64))
    eps = P.jl_eps_for_union(40 * 40, n, 0.01)
    rel = P.inner_product_errors(X, Y, relative=True)
    assert rel.abs().max() <= eps
    # with plain norms |x| (the slip) the bound would fail for these |x| ~ 42 vectors
    nrm = X.norm(dim=1)
    i, j = torch.triu_indices(40, 40, 1)
    err = P.inner_product_errors(X, Y)
    assert (err.abs() > eps * (nrm[i] + nrm[j]) / 2).any()


# --------------------------------------------------------------------------- bounds


def test_jl_min_dim_rules():
    from sklearn.random_projection import johnson_lindenstrauss_min_dim

    for N in (2, 10, 100, 1000, 12345, 10**6):
        for eps in (0.05, 0.1, 0.2, 0.5, 0.9):
            assert P.jl_min_dim(N, eps, rule="dasgupta_gupta") == int(
                johnson_lindenstrauss_min_dim(N, eps=eps)
            )
            for c, rule in ((24, "chernoff24"), (16, "chernoff16")):
                n = P.jl_min_dim(N, eps, rule=rule)
                assert n > c * math.log(N) / eps**2 >= n - 1
    assert P.jl_min_dim(1000, 0.2) == 4145
    assert P.jl_min_dim(1000, 0.2, rule="chernoff16") == 2764
    assert P.jl_min_dim(1000, 0.2, rule="dasgupta_gupta") == 1594


def test_pair_failure_prob_closed_form_and_monte_carlo():
    for n in (1, 2, 7, 64, 1000):
        for eps in (0.05, 0.3, 0.8):
            ref = stats.chi2.cdf(n * (1 - eps), n) + stats.chi2.sf(n * (1 + eps), n)
            assert math.isclose(P.jl_pair_failure_prob(n, eps), ref, rel_tol=1e-9)
    # Monte Carlo with Gaussian matrices: count pairs outside the band
    n, eps, R = 16, 0.3, 4000
    g = gen(17)
    u = torch.randn(50, generator=g, dtype=torch.float64)
    A = P.gaussian_projection(n * R, 50, generator=g, dtype=torch.float64) * math.sqrt(n * R / n)
    ratios = ((A @ u).reshape(R, n) ** 2).sum(1) / (u @ u)
    frac = ((ratios - 1).abs() >= eps).double().mean().item()
    p = P.jl_pair_failure_prob(n, eps)
    assert abs(frac - p) < 4 * math.sqrt(p * (1 - p) / R), (frac, p)


def test_chernoff_forms():
    n, eps = 50, 0.4
    assert math.isclose(P.jl_chernoff_bound(n, eps), 2 * math.exp(-n * eps**2 / 8))
    # exact Chernoff = min over lambda of e^{-lambda(1+eps)} E e^{lambda |u|^2} (upper tail) + lower
    from scipy.optimize import minimize_scalar

    up = minimize_scalar(
        lambda lam: -lam * (1 + eps) - n / 2 * math.log(1 - 2 * lam / n),
        bounds=(0, n / 2 - 1e-9),
        method="bounded",
        options={"xatol": 1e-10},
    )
    lo = minimize_scalar(
        lambda lam: lam * (1 - eps) - n / 2 * math.log(1 + 2 * lam / n),
        bounds=(0, 50 * n),
        method="bounded",
        options={"xatol": 1e-10},
    )
    assert math.isclose(up.x, n * eps / (2 * (1 + eps)), rel_tol=1e-6)
    assert math.isclose(lo.x, n * eps / (2 * (1 - eps)), rel_tol=1e-6)
    assert math.isclose(
        P.jl_chernoff_bound(n, eps, exact=True), math.exp(up.fun) + math.exp(lo.fun), rel_tol=1e-8
    )


def test_union_bound_and_eps_for_union():
    assert math.isclose(P.jl_union_bound(1000, 100, 0.5), 1000 * 999 * math.exp(-100 / 32))
    N, n = 1000, 1275
    e = P.jl_eps_for_union(N, n, 0.5)
    assert abs(e - 0.2) < 0.002  # the sheet's "about 1275 dims suffice at eps = 0.2"
    assert math.isclose(N * (N - 1) / 2 * P.jl_pair_failure_prob(n, e), 0.5, rel_tol=1e-6)
    # small n: eps above 1, only the upper tail counts
    e4 = P.jl_eps_for_union(1000, 4, 0.5)
    assert e4 > 1
    assert math.isclose(1000 * 999 / 2 * stats.chi2.sf(4 * (1 + e4), 4), 0.5, rel_tol=1e-6)
    assert P.jl_eps_for_union(2, 10, target=1.0) == 0.0


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 4000), eps=st.floats(0.01, 0.99))
def test_property_exact_le_chernoff_le_simple(n, eps):
    p = P.jl_pair_failure_prob(n, eps)
    ch = P.jl_chernoff_bound(n, eps, exact=True)
    simple = P.jl_chernoff_bound(n, eps)
    assert 0 <= p <= ch * (1 + 1e-12) <= simple * (1 + 1e-12)


@settings(max_examples=40, deadline=None)
@given(N=st.integers(2, 10**5), n=st.integers(1, 5000), eps=st.floats(0.02, 0.98))
def test_property_union_bound_monotone(N, n, eps):
    u = P.jl_union_bound(N, n, eps)
    assert P.jl_union_bound(N + 1, n, eps) > u
    assert P.jl_union_bound(N, n + 1, eps) < u
    assert P.jl_union_bound(N, n, min(eps * 1.01, 0.99)) <= u
    # the union bound dominates C(N,2) * exact per-pair probability
    assert N * (N - 1) / 2 * P.jl_pair_failure_prob(n, eps) <= u * (1 + 1e-12)


@settings(max_examples=25, deadline=None)
@given(N=st.integers(3, 5000), n=st.integers(2, 3000))
def test_property_eps_for_union_decreasing(N, n):
    assert P.jl_eps_for_union(N, n + 1) < P.jl_eps_for_union(N, n)
    assert P.jl_eps_for_union(N + 1, n) > P.jl_eps_for_union(N, n)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    d_in=st.integers(1, 40),
    kind=st.sampled_from(["gaussian", "rademacher", "sparse"]),
)
def test_property_second_moment(seed, d_in, kind):
    """E|Ax|^2 = |x|^2, within 5 standard errors of the exact second moment."""
    g = gen(seed)
    x = torch.randn(d_in, generator=g, dtype=torch.float64)
    n, R = 4, 3000
    fn = {
        "gaussian": P.gaussian_projection,
        "rademacher": P.rademacher_projection,
        "sparse": P.sparse_projection,
    }[kind]
    A = fn(n * R, d_in, generator=g, dtype=torch.float64) * math.sqrt(n * R / n)
    s = ((A @ x).reshape(R, n) ** 2).sum(1)
    sq = float(x @ x)
    # Var |Ax|^2 <= (2 + kurtosis excess) |x|^4 / n ; entries' 4th moment: 3/n^2 (Gauss),
    # 1/n^2 (Rademacher), 1/(dens n^2) (sparse)
    dens = 1 / math.sqrt(d_in)
    m4 = {"gaussian": 3.0, "rademacher": 1.0, "sparse": 1 / dens}[kind]
    var = (2 * sq**2 + (m4 - 3) * float((x**4).sum())) / n
    assert abs(s.mean().item() - sq) <= 5 * math.sqrt(max(var, 0.0) / R) + 1e-12 * sq


# --------------------------------------------------------------------------- bad inputs


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"^eps\b"):
        P.jl_min_dim(10, 1.0)
    with pytest.raises(ValueError, match=r"^eps\b"):
        P.jl_pair_failure_prob(10, 0.0)
    with pytest.raises(ValueError, match=r"^eps\b"):
        P.jl_chernoff_bound(10, -0.1)
    with pytest.raises(ValueError, match=r"^eps\b"):
        P.jl_union_bound(10, 10, 1.5)
    with pytest.raises(ValueError, match=r"^N\b"):
        P.jl_min_dim(1, 0.1)
    with pytest.raises(ValueError, match=r"^N\b"):
        P.jl_union_bound(1, 10, 0.1)
    with pytest.raises(ValueError, match=r"^N\b"):
        P.jl_eps_for_union(1, 10)
    with pytest.raises(TypeError, match=r"^N\b"):
        P.jl_min_dim(10.0, 0.1)
    with pytest.raises(TypeError, match=r"^d_out\b"):
        P.gaussian_projection(4.0, 10)
    with pytest.raises(TypeError, match=r"^d_in\b"):
        P.rademacher_projection(4, True)
    with pytest.raises(ValueError, match=r"^d_out\b"):
        P.jl_pair_failure_prob(0, 0.1)
    with pytest.raises(ValueError, match=r"^rule\b"):
        P.jl_min_dim(10, 0.1, rule="su24")
    with pytest.raises(ValueError, match=r"^density\b"):
        P.sparse_projection(4, 10, density=0.0)
    with pytest.raises(ValueError, match=r"^row_norms\b"):
        P.orthogonal_gaussian_matrix(4, 10, row_norms="unit")
    with pytest.raises(TypeError, match=r"^dtype\b"):
        P.gaussian_projection(4, 10, dtype=torch.int64)
    with pytest.raises(ValueError, match=r"^target\b"):
        P.jl_eps_for_union(10, 10, target=0.0)
    X = torch.randn(5, 10)
    with pytest.raises(ValueError, match=r"^A\b"):
        P.project(X, torch.randn(3, 11))
    with pytest.raises(TypeError, match=r"^A\b"):
        P.project(X, torch.randn(3, 10, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"^Y\b"):
        P.distortion_ratios(X, torch.randn(4, 3))
    with pytest.raises(ValueError, match=r"^X\b"):
        P.distortion_ratios(X[:1], X[:1])
    with pytest.raises(TypeError, match=r"^X\b"):
        P.inner_product_errors(X.long(), X)


# --------------------------------------------------------------------------- synthetic


@pytest.mark.parametrize("kind", ["gaussian", "sparse_bow", "low_rank", "clusters"])
def test_point_cloud_kinds(kind):
    X = point_cloud(kind, 60, 128, generator=gen(18), dtype=torch.float64)
    assert X.shape == (60, 128) and X.dtype == torch.float64 and torch.isfinite(X).all()
    torch.testing.assert_close(
        X, point_cloud(kind, 60, 128, generator=gen(18), dtype=torch.float64)
    )
    if kind == "sparse_bow":
        assert ((X != 0).sum(1) == 5).all() and (X >= 0).all()
        assert (X[X != 0] == X[X != 0].round()).all()
    if kind == "low_rank":
        s = torch.linalg.svdvals(X)
        assert s[5] / s[0] < 0.05 and s[4] / s[0] > 0.05
    if kind == "clusters":
        d = torch.pdist(X)
        # 20 centres: many near-duplicate pairs far below the between-cluster scale
        assert (d < 0.1).sum() > 30 and d.max() > 10
    if kind == "gaussian":
        assert abs(X.var().item() - 1) < 0.05


def test_point_cloud_bad_inputs():
    with pytest.raises(ValueError, match=r"^kind\b"):
        point_cloud("uniform", 10, 10)
    with pytest.raises(TypeError, match=r"^N\b"):
        point_cloud("gaussian", 10.0, 10)
    with pytest.raises(ValueError, match=r"^nnz\b"):
        point_cloud("sparse_bow", 10, 4, nnz=5)


# --------------------------------------------------------------------------- CUDA


@requires_cuda
def test_cuda_paths():
    g = gen(19, "cuda")
    for fn in (
        P.gaussian_projection,
        P.rademacher_projection,
        P.sparse_projection,
        P.orthogonal_gaussian_matrix,
    ):
        A = fn(16, 64, generator=g, device="cuda")
        assert A.device.type == "cuda"
    X = point_cloud("clusters", 40, 64, generator=g, device="cuda")
    A = P.gaussian_projection(16, 64, generator=g, device="cuda")
    Y = P.project(X, A)
    r = P.distortion_ratios(X, Y)
    ref = torch.pdist(Y.double()) ** 2 / torch.pdist(X.double()) ** 2
    torch.testing.assert_close(r.double(), ref[torch.pdist(X.double()) > 0], rtol=1e-4, atol=1e-4)
    As = P.sparse_projection(16, 64, generator=g, device="cuda", sparse=True)
    torch.testing.assert_close(P.project(X, As), X @ As.to_dense().T)
    # CPU generator, CUDA output
    B = P.gaussian_projection(8, 8, generator=gen(0), device="cuda")
    torch.testing.assert_close(B.cpu(), P.gaussian_projection(8, 8, generator=gen(0)))


def test_distortion_ratios_large_near_duplicates_match_pdist():
    """The Gram + near-pair path (large inputs) keeps tight clusters exact vs torch.pdist."""
    X = point_cloud("clusters", 150, 512, generator=gen(20), dtype=torch.float64, spread=1e-6)
    Y = P.project(X, P.gaussian_projection(64, 512, generator=gen(21), dtype=torch.float64))
    dx = torch.pdist(X) ** 2
    ref = (torch.pdist(Y) ** 2 / dx)[dx > 0]
    r = P.distortion_ratios(X, Y)
    torch.testing.assert_close(r, ref, rtol=1e-8, atol=0)
    # the plain Gram expansion in float32 would destroy these pairs (pitfall 5)
    x32 = X.float()
    sq = (x32 * x32).sum(-1)
    i, j = torch.triu_indices(150, 150, 1)
    gram = (sq[i] + sq[j] - 2 * (x32 @ x32.T)[i, j]).double()
    near = dx < 1e-6
    assert near.sum() > 100
    assert ((gram[near] - dx[near]).abs() / dx[near]).max() > 1


def test_extreme_but_legal_values_stay_finite():
    assert P.jl_pair_failure_prob(10**7, 0.5) == 0.0
    ref = stats.chi2.cdf(0.001, 1) + stats.chi2.sf(1.999, 1)
    assert P.jl_pair_failure_prob(1, 0.999) == pytest.approx(ref, rel=1e-9)
    assert P.jl_chernoff_bound(10**9, 0.9, exact=True) == 0.0
    e = P.jl_eps_for_union(10**9, 1)
    assert math.isfinite(e) and e > 10
    X = 1e3 * torch.randn(20, 64, generator=gen(22))
    A = P.gaussian_projection(16, 64, generator=gen(23))
    for dt in (torch.float16, torch.bfloat16):
        Xh, Ah = X.to(dt), A.to(dt)
        r = P.distortion_ratios(Xh, P.project(Xh, Ah))
        assert r.dtype == torch.float32 and torch.isfinite(r).all()
        e = P.inner_product_errors(Xh, P.project(Xh, Ah), relative=True)
        assert torch.isfinite(e).all()
