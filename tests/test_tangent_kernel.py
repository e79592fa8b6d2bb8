"""kexue_lib.tangent_kernel against finite differences, autograd loops and kernel regression."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kexue_lib._core import seeded
from kexue_lib.tangent_kernel import (
    model_params,
    output_loss_grad,
    per_sample_jacobian,
    tangent_kernel,
    train_with_kernel_trace,
)
from tests.conftest import gen, requires_cuda

F64 = torch.float64


def mlp(d_in=2, width=8, d_out=1, *, seed=0, dtype=F64):
    with seeded(seed):
        m = torch.nn.Sequential(
            torch.nn.Linear(d_in, width), torch.nn.Tanh(), torch.nn.Linear(width, d_out)
        )
    return m.to(dtype)


def mse_mean(f, y):
    return 0.5 * ((f.squeeze(-1) - y) ** 2).mean()


def data(N=12, d_in=2, seed=0, dtype=F64):
    g = gen(seed)
    X = torch.randn(N, d_in, dtype=dtype, generator=g)
    y = torch.sin(2 * X[:, 0]) + 0.1 * torch.randn(N, dtype=dtype, generator=g)
    return X, y


# ----------------------------------------------------------------------------- Jacobians


@pytest.mark.parametrize("d_out", [1, 3])
def test_jacobian_matches_finite_differences(d_out):
    model = mlp(d_out=d_out)
    params = model_params(model)
    X, _ = data(5)
    J = per_sample_jacobian(model, params, X)
    P = sum(v.numel() for v in params.values())
    assert J.shape == (5, d_out, P)
    flat = torch.cat([v.reshape(-1) for v in params.values()])
    shapes = [(k, v.shape, v.numel()) for k, v in params.items()]

    def f_of(vec):
        p, i = {}, 0
        for k, shape, n in shapes:
            p[k] = vec[i : i + n].reshape(shape)
            i += n
        return torch.func.functional_call(model, p, (X,)).reshape(5, d_out)

    h = 1e-6
    fd = torch.empty(5, d_out, P, dtype=F64)
    for j in range(P):
        e = torch.zeros(P, dtype=F64)
        e[j] = h
        fd[..., j] = (f_of(flat + e) - f_of(flat - e)) / (2 * h)
    assert torch.allclose(J, fd, atol=1e-8)


def test_tangent_kernel_is_gram_of_autograd_gradients():
    model = mlp(d_in=3, width=6)
    params = model_params(model)
    X1, _ = data(4, 3, seed=1)
    X2, _ = data(6, 3, seed=2)
    K = tangent_kernel(model, params, X1, X2)
    assert K.shape == (4, 6)

    def grad_at(x):
        out = model(x[None]).sum()
        g = torch.autograd.grad(out, list(model.parameters()))
        return torch.cat([t.reshape(-1) for t in g])

    G1 = torch.stack([grad_at(x) for x in X1])
    G2 = torch.stack([grad_at(x) for x in X2])
    assert torch.allclose(K, G1 @ G2.T, atol=1e-12)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 7), d_out=st.integers(1, 3))
def test_kernel_gram_is_symmetric_psd(seed, n, d_out):
    model = mlp(d_out=d_out, seed=seed)
    X, _ = data(n, seed=seed)
    K = tangent_kernel(model, model_params(model), X)
    M = K.reshape(n, n) if d_out == 1 else K.permute(0, 2, 1, 3).reshape(n * d_out, n * d_out)
    assert torch.allclose(M, M.T, atol=1e-12)
    assert torch.linalg.eigvalsh(M).min() > -1e-10 * (1 + M.abs().max())


def test_output_loss_grad_closed_forms():
    g = gen(3)
    f = torch.randn(7, dtype=F64, generator=g)
    y = torch.randn(7, dtype=F64, generator=g)
    half_sse = lambda f, y: 0.5 * ((f - y) ** 2).sum()  # noqa: E731
    assert torch.allclose(-output_loss_grad(half_sse, y, f), y - f)
    logits = torch.randn(7, 4, dtype=F64, generator=g)
    lab = torch.randint(0, 4, (7,), generator=g)
    ce = torch.nn.functional.cross_entropy
    onehot = torch.nn.functional.one_hot(lab, 4).to(F64)
    ref = (torch.softmax(logits, -1) - onehot) / 7
    assert torch.allclose(output_loss_grad(ce, lab, logits), ref, atol=1e-14)


# ----------------------------------------------------------------------------- path kernel


class RandomFeatures(torch.nn.Module):
    """f(x) = phi(x) theta with a fixed random feature map: linear in the parameters."""

    def __init__(self, d_in, P, d_out=1, seed=0):
        super().__init__()
        g = gen(seed)
        self.register_buffer("A", torch.randn(d_in, P, dtype=F64, generator=g))
        self.head = torch.nn.Linear(P, d_out, bias=False).to(F64)
        with torch.no_grad():
            self.head.weight.copy_(0.1 * torch.randn(d_out, P, dtype=F64, generator=g))

    def forward(self, x):
        return self.head(torch.cos(x @ self.A))


@settings(max_examples=10, deadline=None)
@given(
    lr=st.floats(1e-3, 0.5),
    steps=st.integers(1, 30),
    bs=st.integers(1, 10),
    seed=st.integers(0, 1000),
    loss=st.sampled_from(["mse", "logcosh"]),
)
def test_linear_in_parameters_is_exact(lr, steps, bs, seed, loss):
    """For f linear in theta the kernel sum is exact at any step size and batch schedule."""
    model = RandomFeatures(2, 16, seed=seed)
    X, y = data(10, seed=seed)
    Xq, _ = data(5, seed=seed + 1)
    loss_fn = mse_mean if loss == "mse" else (lambda f, y: torch.log(torch.cosh(f[:, 0] - y)).sum())
    r = train_with_kernel_trace(
        model, X, y, Xq, loss_fn, lr=lr, steps=steps, batch_size=bs, generator=gen(seed),
        X_kernel=Xq[:2],
    )  # fmt: skip
    scale = 1 + r["fT"].abs().max()
    assert torch.allclose(r["recon"], r["fT"], atol=1e-11 * scale)
    # the kernel never moves: the frozen-kernel machine f0 + K_0(x, X) alpha_sum is exact too
    K0 = tangent_kernel(model, model_params(model), Xq, X)
    assert torch.allclose(
        r["f0"][:, 0] + K0 @ r["alpha_sum"][:, 0], r["fT"][:, 0], atol=1e-11 * scale
    )
    assert torch.allclose(r["kernel_recon"], r["kernel_fT"], atol=1e-11 * scale)


def test_kernel_regression_closed_form():
    """Linear model, f_0 = 0, squared loss, full-batch GD for T steps:
    f_T(x) = lr k(x)^T sum_{s<T} (I - lr K)^s y (-> k(x)^T K^{-1} y as T grows)."""
    model = RandomFeatures(2, 30, seed=4)
    with torch.no_grad():
        model.head.weight.zero_()
    X, y = data(6, seed=5)
    X = 3 * X  # spread the points: a well-conditioned Gram matrix
    Xq, _ = data(4, seed=6)
    phi = lambda x: torch.cos(x @ model.A)  # noqa: E731
    K = phi(X) @ phi(X).T
    lam = torch.linalg.eigvalsh(K)
    lr, T = 1.0 / lam.max().item(), 3000
    sse = lambda f, y: 0.5 * ((f[:, 0] - y) ** 2).sum()  # noqa: E731
    r = train_with_kernel_trace(model, X, y, Xq, sse, lr=lr, steps=T)
    acc, v = torch.zeros_like(y), y.clone()
    for _ in range(T):
        acc, v = acc + v, v - lr * (K @ v)
    ref = lr * phi(Xq) @ phi(X).T @ acc
    assert torch.allclose(r["fT"][:, 0], ref, atol=1e-9)
    assert torch.allclose(r["recon"][:, 0], ref, atol=1e-9)


def test_two_routes_agree_for_an_mlp():
    """jvp accumulation and explicit Jacobian-Gram accumulation give the same Euler sum."""
    model = mlp(width=16)
    X, y = data(10)
    Xq, _ = data(3, seed=7)
    r = train_with_kernel_trace(model, X, y, Xq, mse_mean, lr=0.05, steps=40, X_kernel=Xq)
    assert torch.allclose(r["recon"], r["kernel_recon"], atol=1e-12)
    # the contributions and alpha_x reproduce the sum; the path kernel on x itself is >= 0
    assert torch.allclose(r["contributions"].sum(1)[:, 0], (r["recon"] - r["f0"])[:, 0], atol=1e-12)
    a = r["alpha_x"]
    assert torch.allclose((a * r["path_kernel"]).sum(1), (r["recon"] - r["f0"])[:, 0], atol=1e-10)
    # alpha_sum: per-sample sums of lr * residual / N (mean squared loss), checked against a loop
    ref, ref_max = torch.zeros(10, dtype=F64), torch.zeros(10, dtype=F64)
    p = model_params(model)
    for _ in range(40):
        f = torch.func.functional_call(model, p, (X,))[:, 0]
        ref += 0.05 * (y - f) / 10
        ref_max = torch.maximum(ref_max, (y - f).abs() / 10)
        g = torch.func.grad(lambda q: mse_mean(torch.func.functional_call(model, q, (X,)), y))(p)
        p = {k: p[k] - 0.05 * g[k] for k in p}
    assert torch.allclose(r["alpha_sum"][:, 0], ref, atol=1e-12)
    assert torch.allclose(r["alpha_abs_max"][:, 0], ref_max, atol=1e-12)


def test_first_order_convergence_and_segment_averaging():
    """At a fixed horizon lr * steps the Euler error halves with lr; Gauss-Legendre kills it."""
    model = mlp(width=16, seed=1)
    X, y = data(10, seed=1)
    Xq, _ = data(20, seed=2)
    errs = []
    for lr, steps in ((0.2, 10), (0.1, 20), (0.05, 40)):
        r = train_with_kernel_trace(model, X, y, Xq, mse_mean, lr=lr, steps=steps)
        errs.append((r["recon"] - r["fT"]).abs().max().item())
    assert 1.6 < errs[0] / errs[1] < 2.5 and 1.6 < errs[1] / errs[2] < 2.5, errs
    r3 = train_with_kernel_trace(model, X, y, Xq, mse_mean, lr=0.2, steps=10, segment_average=3)
    assert (r3["recon"] - r3["fT"]).abs().max().item() < 1e-3 * errs[0]
    # and the trained model does move: the error is small relative to the change
    assert errs[2] < 0.1 * (r["fT"] - r["f0"]).abs().max().item()


def test_model_untouched_and_params_returned():
    model = mlp()
    before = model_params(model)
    X, y = data(8)
    r = train_with_kernel_trace(model, X, y, X, mse_mean, lr=0.1, steps=5)
    for k, v in model.named_parameters():
        assert torch.equal(v.detach(), before[k])
    fT = torch.func.functional_call(model, r["params"], (X,))
    assert torch.allclose(fT, r["fT"])
    assert r["losses"].shape == (5,) and r["losses"][-1] < r["losses"][0]


def test_sgd_matches_a_torch_optim_sgd_run():
    """Same batches, same steps: the trace's parameters equal torch.optim.SGD's."""
    model = mlp(width=8, seed=3)
    X, y = data(12, seed=3)
    r = train_with_kernel_trace(
        model, X, y, X[:2], mse_mean, lr=0.1, steps=15, batch_size=4, generator=gen(11)
    )
    ref = mlp(width=8, seed=3)
    opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    g = gen(11)
    for _ in range(15):
        idx = torch.randperm(12, generator=g)[:4]
        opt.zero_grad()
        mse_mean(ref(X[idx]), y[idx]).backward()
        opt.step()
    for k, v in ref.named_parameters():
        assert torch.allclose(r["params"][k], v.detach(), atol=1e-13)


def test_float32_and_vector_outputs():
    model = mlp(d_out=3, dtype=torch.float32)
    X, _ = data(8, dtype=torch.float32)
    lab = torch.arange(8) % 3
    r = train_with_kernel_trace(
        model, X, lab, X[:4], torch.nn.functional.cross_entropy, lr=0.1, steps=20, X_kernel=X[:2]
    )
    assert r["fT"].dtype == torch.float32 and r["fT"].shape == (4, 3)
    assert r["path_kernel"].shape == (2, 8, 3, 3) and "alpha_x" not in r
    assert torch.allclose(r["recon"], r["fT"], atol=5e-3)
    assert torch.isfinite(r["recon"]).all()


@requires_cuda
def test_cuda():
    model = mlp().cuda()
    X, y = data(8)
    X, y = X.cuda(), y.cuda()
    r = train_with_kernel_trace(model, X, y, X, mse_mean, lr=0.1, steps=5, X_kernel=X[:2])
    assert r["recon"].device.type == "cuda"
    J = per_sample_jacobian(model, model_params(model), X)
    assert J.device.type == "cuda"


# ----------------------------------------------------------------------------- bad input


def test_bad_input():
    model = mlp()
    params = model_params(model)
    X, y = data(6)
    with pytest.raises(TypeError, match=r"^model\b"):
        per_sample_jacobian(lambda x: x, params, X)
    with pytest.raises(TypeError, match=r"^X\b"):
        per_sample_jacobian(model, params, X.long())
    with pytest.raises(ValueError, match=r"^params\b"):
        per_sample_jacobian(model, {"nope": torch.zeros(1)}, X)
    with pytest.raises(TypeError, match=r"^loss_fn\b"):
        output_loss_grad("mse", y, y)
    with pytest.raises(ValueError, match=r"^loss_fn\b"):
        output_loss_grad(lambda f, y: f - y, y, y)
    kw = dict(lr=0.1, steps=3)
    with pytest.raises(ValueError, match=r"^lr\b"):
        train_with_kernel_trace(model, X, y, X, mse_mean, lr=0.0, steps=3)
    with pytest.raises(ValueError, match=r"^steps\b"):
        train_with_kernel_trace(model, X, y, X, mse_mean, lr=0.1, steps=0)
    with pytest.raises(ValueError, match=r"^batch_size\b"):
        train_with_kernel_trace(model, X, y, X, mse_mean, batch_size=7, generator=gen(0), **kw)
    with pytest.raises(TypeError, match=r"^generator\b"):
        train_with_kernel_trace(model, X, y, X, mse_mean, batch_size=2, **kw)
    with pytest.raises(ValueError, match=r"^segment_average\b"):
        train_with_kernel_trace(model, X, y, X, mse_mean, segment_average=4, **kw)
    with pytest.raises(ValueError, match=r"^y_train\b"):
        train_with_kernel_trace(model, X, y[:3], X, mse_mean, **kw)
    with pytest.raises(ValueError, match=r"^X_query\b"):
        train_with_kernel_trace(model, X, y, X.float(), mse_mean, **kw)
