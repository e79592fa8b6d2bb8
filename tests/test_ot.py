"""Minibatch optimal transport: checked against POT, scipy, brute force, LP duality and sklearn."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kexue_lib import ot as O
from kexue_lib._core import make_generator
from tests.conftest import requires_cuda

pot = pytest.importorskip("ot")


def _cloud(n, d, seed, dtype=torch.float64):
    return torch.randn(n, d, generator=make_generator(seed), dtype=dtype)


# --------------------------------------------------------------------------- exact OT


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("d", [1, 3, 17])
def test_exact_ot_matches_pot_emd2(p, d):
    x, y = _cloud(12, d, 0), _cloud(12, d, 1) + 0.5
    value, perm = O.exact_ot(x, y, p=p)
    M = (torch.cdist(x, y) ** p).numpy()
    a = np.full(12, 1 / 12)
    assert value.item() == pytest.approx(pot.emd2(a, a, M), abs=1e-8)
    assert sorted(perm.tolist()) == list(range(12))
    assert value.item() == pytest.approx(float(M[np.arange(12), perm.numpy()].mean()), abs=1e-12)


def test_exact_ot_matches_brute_force_over_permutations():
    x, y = _cloud(6, 2, 2), _cloud(6, 2, 3)
    M = torch.cdist(x, y).numpy()
    best = min(M[np.arange(6), list(s)].mean() for s in itertools.permutations(range(6)))
    assert O.exact_ot(x, y)[0].item() == pytest.approx(best, abs=1e-12)


def test_one_dimensional_against_scipy():
    from scipy.stats import wasserstein_distance

    u, v = _cloud(40, 1, 4)[:, 0], 2 * _cloud(40, 1, 5)[:, 0] + 1
    ref = wasserstein_distance(u.numpy(), v.numpy())
    assert O.wasserstein_1d(u, v).item() == pytest.approx(ref, abs=1e-12)
    assert O.exact_ot(u[:, None], v[:, None])[0].item() == pytest.approx(ref, abs=1e-10)
    w2 = O.wasserstein_1d(u, v, p=2).item()
    assert w2 == pytest.approx(O.exact_ot(u[:, None], v[:, None], p=2)[0].item(), abs=1e-10)


def test_value_is_differentiable_with_the_envelope_gradient():
    x = _cloud(8, 3, 6).requires_grad_(True)
    y = _cloud(8, 3, 7)
    value, perm = O.exact_ot(x, y, p=2)
    (g,) = torch.autograd.grad(value, x)
    torch.testing.assert_close(g, 2 * (x - y[perm]).detach() / 8)


def test_coincident_points_give_finite_gradients():
    x = _cloud(5, 3, 8)
    y = x.clone().requires_grad_(True)
    value, _ = O.exact_ot(x, y)
    (g,) = torch.autograd.grad(value, y)
    assert value.item() < 1e-5 and torch.isfinite(g).all()


def test_w1_to_point_is_mean_distance_and_exact_ot_against_repeated_atom():
    x = _cloud(10, 4, 9)
    m = torch.ones(4, dtype=torch.float64)
    direct = torch.linalg.vector_norm(x - m, dim=1).mean()
    assert O.w1_to_point(x, m).item() == pytest.approx(direct.item(), rel=1e-12)
    assert O.exact_ot(x, m.expand(10, 4))[0].item() == pytest.approx(direct.item(), rel=1e-10)


# --------------------------------------------------------------------------- duality


def test_c_transform_lower_bounds_and_lp_optimum_attains():
    from scipy.optimize import linprog

    B = 8
    x, y = _cloud(B, 2, 10), _cloud(B, 2, 11) + 1
    C = O.cost_matrix(x, y)
    primal = O.exact_ot(x, y)[0].item()
    # dual LP: max (sum f + sum g)/B  s.t. f_i + g_j <= C_ij
    A = np.zeros((B * B, 2 * B))
    for i in range(B):
        for j in range(B):
            A[i * B + j, i] = A[i * B + j, B + j] = 1
    res = linprog(-np.ones(2 * B) / B, A_ub=A, b_ub=C.numpy().ravel(), bounds=(None, None))
    assert -res.fun == pytest.approx(primal, abs=1e-8)
    phi = torch.tensor(res.x[:B])
    attained = phi.mean() + O.c_transform(phi, C).mean()
    assert attained.item() == pytest.approx(primal, abs=1e-8)
    for seed in range(20):  # any potential gives a lower bound
        phi = torch.randn(B, generator=make_generator(seed), dtype=torch.float64)
        assert (phi.mean() + O.c_transform(phi, C).mean()).item() <= primal + 1e-12


def test_c_transform_dual_with_a_critic_module():
    x, y = _cloud(16, 3, 12), _cloud(16, 3, 13)
    critic = torch.nn.Linear(3, 1).double()
    val = O.c_transform_dual(critic, x, y)
    assert val.item() <= O.exact_ot(x, y)[0].item() + 1e-12
    val.backward()
    assert critic.weight.grad is not None


# --------------------------------------------------------------------------- sinkhorn


def test_sinkhorn_matches_pot():
    x, y = _cloud(10, 2, 14), _cloud(12, 2, 15)
    M = (torch.cdist(x, y) ** 2).numpy()
    a, b = np.full(10, 0.1), np.full(12, 1 / 12)
    P = pot.sinkhorn(a, b, M, 0.5, numItermax=5000, stopThr=1e-14)
    ref = float((P * M).sum())
    assert O.sinkhorn(x, y, 0.5, n_iter=2000).item() == pytest.approx(ref, rel=1e-7)
    ref2 = pot.sinkhorn2(a, b, M, 0.5, numItermax=5000, stopThr=1e-14)
    assert float(ref2) >= ref - 1e-9  # POT's sinkhorn2 returns the same <P, M>


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sinkhorn_extreme_eps_is_finite_and_has_the_right_limits(dtype):
    x, y = _cloud(9, 2, 16, dtype), _cloud(9, 2, 17, dtype)
    exact = O.exact_ot(x, y, p=2)[0].item()
    small = O.sinkhorn(x, y, 1e-6, n_iter=300)
    big = O.sinkhorn(x, y, 1e8, n_iter=5)
    assert torch.isfinite(small) and torch.isfinite(big)
    assert small.dtype == dtype
    # float32 resolves (f + g - C) / eps only to about 1e-7 |C| / eps: 10% of mass at eps = 1e-6
    assert small.item() == pytest.approx(exact, rel=1e-2 if dtype == torch.float64 else 0.1)
    assert big.item() == pytest.approx(O.cost_matrix(x, y, p=2).mean().item(), rel=1e-4)


# --------------------------------------------------------------------------- penalties


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradient_penalty_of_a_linear_critic(dtype):
    w = torch.tensor([[3.0, -4.0, 12.0]], dtype=dtype)  # |w| = 13
    critic = torch.nn.Linear(3, 1, dtype=dtype)
    with torch.no_grad():
        critic.weight.copy_(w)
    real, fake = _cloud(7, 3, 18, dtype), _cloud(7, 3, 19, dtype)
    gp = O.gradient_penalty(critic, real, fake, generator=make_generator(0))
    assert gp.item() == pytest.approx((13 - 1) ** 2, rel=1e-6)
    assert gp.dtype == dtype
    gp0 = O.gradient_penalty(critic, real, fake, center=0.0, generator=make_generator(0))
    assert gp0.item() == pytest.approx(169.0, rel=1e-6)
    gp.backward()  # create_graph: d/dw (|w| - 1)^2 = 2 (|w| - 1) w / |w|
    torch.testing.assert_close(critic.weight.grad, 2 * 12 * w / 13, rtol=1e-5, atol=1e-5)


def test_gradient_penalty_draws_alpha_per_sample():
    # critic x -> |x|^2 / 2 has gradient x_hat; with real = 1 and fake = 0, x_hat = alpha
    critic = lambda z: 0.5 * (z**2).sum((1, 2))  # noqa: E731
    real, fake = (
        torch.ones(200, 1, 1, dtype=torch.float64),
        torch.zeros(200, 1, 1, dtype=torch.float64),
    )
    gp0 = O.gradient_penalty(critic, real, fake, center=0.0, generator=make_generator(1))
    assert gp0.item() == pytest.approx(1 / 3, abs=0.06)  # E alpha^2 = 1/3, not alpha shared


# --------------------------------------------------------------------------- k-means


def test_kmeans_matches_sklearn_on_a_fixed_init():
    from sklearn.cluster import KMeans

    x = torch.cat([_cloud(30, 2, 20) + 4, _cloud(30, 2, 21) - 4, _cloud(30, 2, 22)])
    init = x[[0, 30, 60]].clone()
    centers, labels = O.kmeans(x, 3, init=init, iters=100)
    km = KMeans(3, init=init.numpy(), n_init=1, max_iter=100, tol=0, algorithm="lloyd").fit(
        x.numpy()
    )
    inertia = ((x - centers[labels]) ** 2).sum().item()
    assert inertia == pytest.approx(km.inertia_, rel=1e-9)
    np.testing.assert_allclose(
        np.sort(centers.numpy(), 0), np.sort(km.cluster_centers_, 0), atol=1e-9
    )


def test_kmeans_plus_plus_reaches_brute_force_on_tiny_data():
    x = torch.tensor([[0.0], [0.1], [0.2], [5.0], [5.2], [9.0]], dtype=torch.float64)
    best = math.inf
    for lab in itertools.product(range(2), repeat=6):
        lab = torch.tensor(lab)
        if len(set(lab.tolist())) < 2:
            continue
        cost = sum(((x[lab == c] - x[lab == c].mean(0)) ** 2).sum().item() for c in range(2))
        best = min(best, cost)
    centers, labels = O.kmeans(x, 2, generator=make_generator(3))
    assert ((x - centers[labels]) ** 2).sum().item() == pytest.approx(best, abs=1e-12)


# --------------------------------------------------------------------------- properties

_pts = st.lists(st.floats(-5, 5, allow_nan=False), min_size=8, max_size=8)


@settings(max_examples=30, deadline=None)
@given(a=_pts, b=_pts, c=_pts, shift=st.floats(-3, 3))
def test_w1_is_a_metric_and_translation_behaves(a, b, c, shift):
    x, y, z = (torch.tensor(v, dtype=torch.float64).reshape(4, 2) for v in (a, b, c))
    dxy, dyz, dxz = (O.exact_ot(u, v)[0].item() for u, v in ((x, y), (y, z), (x, z)))
    assert dxy == pytest.approx(O.exact_ot(y, x)[0].item(), abs=1e-9)
    assert dxz <= dxy + dyz + 1e-9
    t = torch.tensor([shift, -shift], dtype=torch.float64)
    # moving both clouds leaves W unchanged; moving one by t changes W_1 by at most |t|
    assert O.exact_ot(x + t, y + t)[0].item() == pytest.approx(dxy, abs=1e-6)
    assert abs(O.exact_ot(x + t, y)[0].item() - dxy) <= t.norm().item() + 1e-9
    # W_2^2 of a translate = |t|^2 + 2 t.(mean x - mean y) + W_2^2  (the plan does not change)
    w2 = O.exact_ot(x, y, p=2)[0].item()
    expect = w2 + t.dot(t).item() + 2 * t.dot(x.mean(0) - y.mean(0)).item()
    assert O.exact_ot(x + t, y, p=2)[0].item() == pytest.approx(expect, abs=1e-6)


# --------------------------------------------------------------------------- dtypes, input


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_and_device_are_kept(dtype):
    x, y = _cloud(6, 3, 23, dtype), _cloud(6, 3, 24, dtype)
    value, perm = O.exact_ot(x, y)
    assert value.dtype == dtype and perm.dtype == torch.long and value.device == x.device
    ref = O.exact_ot(x.double(), y.double())[0].item()
    assert value.item() == pytest.approx(ref, rel=1e-5)
    assert O.c_transform_dual(torch.nn.Linear(3, 1, dtype=dtype), x, y).dtype == dtype
    assert O.kmeans(x, 2, generator=make_generator(0))[0].dtype == dtype


def test_bad_input():
    x = _cloud(4, 2, 25)
    with pytest.raises(ValueError, match=r"^y\b"):
        O.exact_ot(x, _cloud(5, 2, 26))
    with pytest.raises(ValueError, match=r"^y\b"):
        O.exact_ot(x, _cloud(4, 3, 26))
    with pytest.raises(ValueError, match=r"^p\b"):
        O.exact_ot(x, x, p=3)
    with pytest.raises(ValueError, match=r"^x\b"):
        O.exact_ot(x[:, 0], x[:, 0])
    with pytest.raises(ValueError, match=r"^x\b"):
        O.exact_ot(x * float("nan"), x)
    with pytest.raises(TypeError, match=r"^x\b"):
        O.exact_ot(x.numpy(), x)
    with pytest.raises(ValueError, match=r"^eps\b"):
        O.sinkhorn(x, x, 0.0)
    with pytest.raises(ValueError, match=r"^k\b"):
        O.kmeans(x, 5)
    with pytest.raises(ValueError, match=r"^C\b"):
        O.c_transform(torch.zeros(3, dtype=torch.float64), torch.zeros(4, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"^fake\b"):
        O.gradient_penalty(torch.nn.Linear(2, 1).double(), x, x[:3])
    with pytest.raises(ValueError, match=r"^v\b"):
        O.wasserstein_1d(x[:, 0], x[:3, 0])
    with pytest.raises(ValueError, match=r"^m\b"):
        O.w1_to_point(x, torch.zeros(3, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"^critic\b"):
        O.c_transform_dual(3, x, x)


@requires_cuda
def test_cuda_tensors_stay_on_the_device():
    dev = torch.device("cuda")
    x = torch.randn(16, 5, generator=make_generator(0, dev), device=dev)
    y = torch.randn(16, 5, generator=make_generator(1, dev), device=dev)
    value, perm = O.exact_ot(x, y)
    assert value.device.type == "cuda" and perm.device.type == "cuda"
    ref = O.exact_ot(x.cpu().double(), y.cpu().double())[0].item()
    assert value.item() == pytest.approx(ref, rel=1e-5)
    s = O.sinkhorn(x, y, 0.05, n_iter=300)
    assert s.device.type == "cuda" and torch.isfinite(s)
    gp = O.gradient_penalty(torch.nn.Linear(5, 1).to(dev), x, y, generator=make_generator(2, dev))
    assert gp.device.type == "cuda"
    centers, labels = O.kmeans(x, 3, generator=make_generator(3, dev))
    assert centers.device.type == "cuda" and labels.device.type == "cuda"
