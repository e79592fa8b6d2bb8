"""Loss weighting and min-norm (MGDA) solvers against scipy, closed forms and autograd."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kexue_lib import multitask as mt
from tests.conftest import requires_cuda

F64 = torch.float64


def _toy(seed=0, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(5, 4, dtype=dtype, generator=g, requires_grad=True)
    x = torch.randn(32, 5, dtype=dtype, generator=g)
    h = torch.tanh(x @ W)
    L1 = (h[:, 0] - 1).pow(2).mean()
    L2 = (h[:, 1:].sum(1) + 0.5).pow(2).mean() + 0.1
    L3 = torch.nn.functional.softplus(h).mean()
    return W, [L1, L2, L3]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_realtime_weighting_is_gradient_of_sum_of_logs(dtype):
    W, Ls = _toy(dtype=dtype)
    (g1,) = torch.autograd.grad(mt.realtime_weighted(Ls), W, retain_graph=True)
    (g2,) = torch.autograd.grad(sum(L.log() for L in Ls), W)
    torch.testing.assert_close(g1, g2)
    assert mt.realtime_weighted(Ls).item() == pytest.approx(3.0)


def test_power_mean_against_scipy_and_limits():
    from scipy.stats import gmean, pmean

    L = [torch.tensor(v, dtype=F64) for v in (0.3, 1.7, 4.0, 2.2)]
    arr = np.array([0.3, 1.7, 4.0, 2.2])
    for gam in (-3.0, -1.0, 0.5, 1.0, 2.0, 7.0):
        assert mt.power_mean(L, gam).item() == pytest.approx(pmean(arr, gam), rel=1e-12)
    assert mt.power_mean(L, 0).item() == pytest.approx(gmean(arr), rel=1e-12)
    assert mt.power_mean(L, 400.0).item() == pytest.approx(4.0, rel=1e-2)
    assert mt.power_mean(L, -400.0).item() == pytest.approx(0.3, rel=1e-2)
    assert mt.power_mean(L, math.inf).item() == 4.0 and mt.power_mean(L, -math.inf).item() == 0.3
    assert math.isfinite(mt.power_mean(L, 1e6).item())  # log-space: no overflow


def test_power_mean_gradient_weights():
    W, Ls = _toy()
    gam = 2.5
    (g,) = torch.autograd.grad(mt.power_mean(Ls, gam), W, retain_graph=True)
    G = mt.task_gradients(Ls, [W])
    Lv = torch.stack([L.detach() for L in Ls])
    pm = mt.power_mean(Lv, gam)
    expected = pm ** (1 - gam) / 3 * (Lv ** (gam - 1)) @ G
    torch.testing.assert_close(g.reshape(-1), expected)
    a = mt.power_mean_weights(Ls, gam)
    torch.testing.assert_close(a, Lv ** (gam - 1) / (Lv ** (gam - 1)).sum())


def _direction(method, Ls, W):
    if method == "equal":
        loss = sum(Ls)
    elif method == "init":
        loss = mt.normalized_sum(Ls, [1.0, 2.0, 3.0])
    elif method == "realtime":
        loss = mt.realtime_weighted(Ls)
    else:
        loss = mt.gradnorm_weighted_loss(Ls, [W])
    (g,) = torch.autograd.grad(loss, W, retain_graph=True)
    return g.reshape(-1) / g.norm()


@pytest.mark.parametrize(
    "method, scale_inv, shift_inv",
    [("equal", False, True), ("realtime", True, False), ("gradnorm", True, True)],
)
def test_invariance_matrix(method, scale_inv, shift_inv):
    W, Ls = _toy()
    base = _direction(method, Ls, W)
    scaled = _direction(method, [100 * Ls[0], *Ls[1:]], W)
    shifted = _direction(method, [Ls[0] + 5, *Ls[1:]], W)
    assert ((base - scaled).norm() < 1e-9) == scale_inv
    assert ((base - shifted).norm() < 1e-9) == shift_inv


def test_init_normalisation_scale_invariant_when_reference_scales():
    W, Ls = _toy()
    refs = [L.item() for L in Ls]
    (g1,) = torch.autograd.grad(mt.normalized_sum(Ls, refs), W, retain_graph=True)
    (g2,) = torch.autograd.grad(
        mt.normalized_sum([7 * Ls[0], *Ls[1:]], [7 * refs[0], *refs[1:]]), W
    )
    torch.testing.assert_close(g1, g2)


def test_gradnorm_loss_gradient_equals_combined_gradients():
    W, Ls = _toy()
    (g,) = torch.autograd.grad(mt.gradnorm_weighted_loss(Ls, [W]), W, retain_graph=True)
    torch.testing.assert_close(g.reshape(-1), mt.gradnorm_combine(mt.task_gradients(Ls, [W])))


def test_prior_losses_against_sklearn_and_numpy():
    from sklearn.metrics import log_loss

    y = torch.tensor([0, 0, 1, 2, 2, 2, 3, 0])
    p = np.bincount(y.numpy(), minlength=5) / 8
    ref = log_loss(y.numpy(), np.tile(p, (8, 1)), labels=range(5))
    assert mt.prior_loss_classification(y, 5).item() == pytest.approx(ref, rel=1e-12)
    Y = torch.randn(50, 3, dtype=F64, generator=torch.Generator().manual_seed(1))
    assert mt.prior_loss_regression(Y).item() == pytest.approx(np.var(Y.numpy(), axis=0).sum())
    assert mt.init_loss_regression(Y).item() == pytest.approx((Y.numpy() ** 2).sum(1).mean())
    assert mt.init_loss_classification(10) == pytest.approx(math.log(10))


def test_uncertainty_weighting_optimum():
    L = torch.tensor([0.5, 3.0], dtype=F64)
    s = (0.5 * L.log()).requires_grad_(True)  # σ² = L
    val = mt.uncertainty_weighted(list(L), s)
    (g,) = torch.autograd.grad(val, s)
    assert g.abs().max() < 1e-12
    assert val.item() == pytest.approx(0.5 * L.log().sum().item() + 1.0)


def _slsqp(M):
    from scipy.optimize import minimize

    n = M.shape[0]
    res = minimize(
        lambda a: a @ M @ a,
        np.full(n, 1 / n),
        jac=lambda a: 2 * M @ a,
        bounds=[(0, 1)] * n,
        constraints=[{"type": "eq", "fun": lambda a: a.sum() - 1}],
        method="SLSQP",
        options={"ftol": 1e-15, "maxiter": 500},
    )
    return res.x, res.fun


@pytest.mark.parametrize("seed", range(6))
def test_min_norm_solvers_against_slsqp(seed):
    g = torch.Generator().manual_seed(seed)
    n = 2 + seed
    G = torch.randn(n, 7, dtype=F64, generator=g) + torch.tensor(0.3 * seed)
    M = mt.gram(G)
    _, fun = _slsqp(M.numpy())
    a_ex = mt.min_norm_exact(M)

    def obj(a):
        return (a @ M @ a).item()

    assert obj(a_ex) == pytest.approx(fun, abs=1e-9)
    assert obj(a_ex) <= fun + 1e-12
    assert obj(mt.min_norm_frank_wolfe(M, iters=3000)) == pytest.approx(obj(a_ex), abs=1e-7)
    # softmax-GD approaches a face of the simplex only slowly (β_i → −∞): 0.1 % of the optimum
    assert obj(mt.min_norm_softmax_gd(M, iters=3000, lr=2.0)) == pytest.approx(obj(a_ex), rel=1e-3)
    # KKT: <g_i, u*> = ||u*||² on the support, >= elsewhere
    Ma = M @ a_ex
    val = obj(a_ex)
    assert (Ma >= val - 1e-9).all()
    assert (Ma[a_ex > 1e-9] - val).abs().max() < 1e-9


def test_two_task_formula_and_normalised_sum():
    g = torch.Generator().manual_seed(3)
    for _ in range(20):
        g1, g2 = torch.randn(2, 5, dtype=F64, generator=g)
        gam, u = mt.min_norm_2(g1, g2)
        alpha = mt.min_norm_exact(mt.gram(torch.stack([g1, g2])))
        assert gam == pytest.approx(alpha[1].item(), abs=1e-10)
        un = mt.gradnorm_combine(torch.stack([g1, g2]))
        assert (un @ g1).item() >= -1e-12 and (un @ g2).item() >= -1e-12
        un_mgda, a = mt.mgda_direction(torch.stack([g1, g2]), normalize=True)
        torch.testing.assert_close(a, torch.tensor([0.5, 0.5], dtype=F64))
        torch.testing.assert_close(un_mgda, un / 2)


def test_averaging_iteration_is_fw_with_harmonic_step():
    G = torch.tensor([[1.0, 0], [0, 1], [-0.5, 0.2]], dtype=F64)
    M = mt.gram(G)
    _, path = mt.min_norm_frank_wolfe(M, iters=50, step="1/(k+1)", return_path=True)
    u = G[0].clone()
    for k in range(1, 51):
        tau = int(torch.argmin(G @ u))
        u = (k * u + G[tau]) / (k + 1)
        torch.testing.assert_close(path[k] @ G, u)
    torch.testing.assert_close(
        mt.min_norm_exact(M), torch.tensor([0.345, 0.0, 0.655], dtype=F64), atol=1e-3, rtol=0
    )


def test_pcgrad_removes_conflict_for_two_tasks():
    G = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=F64)
    d = mt.pcgrad(G, generator=torch.Generator().manual_seed(0))
    assert (G @ d >= -1e-12).all()


@settings(max_examples=40, deadline=None)
@given(
    vals=st.lists(st.floats(1e-3, 1e3), min_size=2, max_size=6),
    g1=st.floats(-5, 5),
    g2=st.floats(-5, 5),
)
def test_power_mean_monotone_and_bounded(vals, g1, g2):
    L = torch.tensor(vals, dtype=F64)
    lo, hi = sorted((g1, g2))
    a, b = mt.power_mean(L, lo).item(), mt.power_mean(L, hi).item()
    assert a <= b * (1 + 1e-12)
    assert L.min().item() * (1 - 1e-12) <= a and b <= L.max().item() * (1 + 1e-12)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 5), s=st.floats(0.01, 100))
def test_min_norm_descent_property(seed, n, s):
    G = torch.randn(n, 4, dtype=F64, generator=torch.Generator().manual_seed(seed))
    u, a = mt.mgda_direction(G)
    assert (G @ u >= (u @ u) - 1e-9 * (1 + G.abs().max() ** 2)).all()  # every task descends
    u2, _ = mt.mgda_direction(s * G)  # homogeneous of degree one in a common scale
    torch.testing.assert_close(u2, s * u, rtol=1e-6, atol=1e-9 * s)


def test_bad_input():
    with pytest.raises(ValueError, match=r"^losses\b"):
        mt.power_mean([torch.tensor(-1.0)], 1.0)
    with pytest.raises(ValueError, match=r"^gamma\b"):
        mt.power_mean([torch.tensor(1.0)], float("nan"))
    with pytest.raises(ValueError, match=r"^M\b"):
        mt.min_norm_exact(torch.zeros(2, 3, dtype=F64))
    with pytest.raises(ValueError, match=r"^step\b"):
        mt.min_norm_frank_wolfe(torch.eye(2, dtype=F64), step="bad")
    with pytest.raises(ValueError, match=r"^refs\b"):
        mt.normalized_sum([torch.tensor(1.0)], [1.0, 2.0])
    with pytest.raises(ValueError, match=r"^labels\b"):
        mt.prior_loss_classification(torch.tensor([0, 5]), 3)
    with pytest.raises(ValueError, match=r"^log_sigma\b"):
        mt.uncertainty_weighted([torch.tensor(1.0)], torch.zeros(2))
    with pytest.raises(ValueError, match=r"^g2\b"):
        mt.min_norm_2(torch.zeros(2), torch.zeros(3))


@requires_cuda
def test_cuda_min_norm_and_power_mean_stay_on_device():
    G = torch.randn(
        4, 1000, dtype=F64, device="cuda", generator=torch.Generator("cuda").manual_seed(0)
    )
    u, a = mt.mgda_direction(G)
    assert u.device == G.device and a.device == G.device
    u_cpu, a_cpu = mt.mgda_direction(G.cpu())
    torch.testing.assert_close(a.cpu(), a_cpu)
    L = torch.tensor([0.5, 2.0], device="cuda")
    assert mt.power_mean(L, 2.0).device == L.device
