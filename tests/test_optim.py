"""kexue_lib.optim against torch.optim with explicit accumulation, hand algebra and loops."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kexue_lib.optim import (
    AdamAccum,
    SGDMAccum,
    beta_tilde,
    chi,
    explicit_accumulation_step,
    limit_decay,
    window_weights,
)
from tests.conftest import gen, requires_cuda


def _quadratic(d: int, seed: int, dtype=torch.float64, device="cpu"):
    """theta -> 0.5 theta^T H theta + theta . noise_t: gradients depend on theta and on t."""
    g = gen(seed)
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    h = (a @ a.T / d + 0.1 * torch.eye(d, dtype=torch.float64)).to(dtype=dtype, device=device)
    noise = torch.randn(400, d, generator=g, dtype=torch.float64).to(dtype=dtype, device=device)
    theta0 = torch.randn(d, generator=g, dtype=torch.float64).to(dtype=dtype, device=device)
    return h, noise, theta0


def _run_in_momentum(opt_cls, h, noise, theta0, *, steps, sched=None, **kw):
    p = torch.nn.Parameter(theta0.clone())
    opt = opt_cls([p], **kw)
    lr_sched = torch.optim.lr_scheduler.LambdaLR(opt, sched) if sched else None
    path = []
    for t in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = 0.5 * p @ h @ p + p @ noise[t]
        loss.backward()
        opt.step()
        if lr_sched and (t + 1) % kw["k"] == 0:
            lr_sched.step()  # one scheduler step per macro-step, like the explicit loop
        path.append(p.detach().clone())
    return torch.stack(path)


def _run_explicit(h, noise, theta0, *, steps, k, lr, beta, sched=None, adam=None):
    """torch.optim on the mean of k micro-gradients (loss / k), one step per window."""
    p = torch.nn.Parameter(theta0.clone())
    if adam is None:
        opt = torch.optim.SGD([p], lr=lr, momentum=beta, dampening=beta)
        opt.state[p]["momentum_buffer"] = torch.zeros_like(p)  # EMA form from a zero buffer
    else:
        opt = torch.optim.Adam([p], lr=lr, betas=adam, eps=1e-8)
    lr_sched = torch.optim.lr_scheduler.LambdaLR(opt, sched) if sched else None
    path = []
    for s in range(steps // k):
        batches = [(noise[s * k + i],) for i in range(k)]
        explicit_accumulation_step(p, lambda m, n: 0.5 * m @ h @ m + m @ n, batches, opt)
        if lr_sched:
            lr_sched.step()
        path.append(p.detach().clone())
    return torch.stack(path)


@pytest.mark.parametrize("k", [1, 2, 3, 8])
def test_sgdm_accum_equals_explicit_accumulation(k):
    h, noise, theta0 = _quadratic(12, seed=k)

    def sched(s):
        return 1.0 / (1 + 0.05 * s)

    steps = 24 * k
    ours = _run_in_momentum(
        SGDMAccum, h, noise, theta0, steps=steps, lr=0.3, beta=0.8, k=k, sched=sched
    )
    ref = _run_explicit(h, noise, theta0, steps=steps, k=k, lr=0.3, beta=0.8, sched=sched)
    assert torch.allclose(ours[k - 1 :: k], ref, atol=1e-12, rtol=0)
    # parameters are frozen inside a window
    for s in range(steps // k):
        window = ours[s * k : s * k + k - 1]
        before = theta0 if s == 0 else ours[s * k - 1]
        assert torch.equal(window, before.expand_as(window))
    assert (ref[-1] - ref[0]).abs().max() > 1e-3  # the run moves: the comparison is not vacuous


def test_sgdm_accum_float32_and_the_naive_recipe_differs():
    h, noise, theta0 = _quadratic(10, seed=5, dtype=torch.float32)
    k = 4
    ours = _run_in_momentum(SGDMAccum, h, noise, theta0, steps=80, lr=0.2, beta=0.9, k=k)
    ref = _run_explicit(h, noise, theta0, steps=80, k=k, lr=0.2, beta=0.9)
    assert torch.allclose(ours[k - 1 :: k], ref, atol=1e-5, rtol=0)
    # the alternative: plain momentum stepping every micro-batch is a different algorithm
    plain = _run_in_momentum(SGDMAccum, h, noise, theta0, steps=80, lr=0.2, beta=0.9, k=1)
    assert (plain[k - 1 :: k] - ref).abs().max() > 1e-2


def test_torch_sgd_without_preseeding_differs():
    """PyTorch's first momentum step copies g undamped: the comparison needs a zero buffer."""
    h, noise, theta0 = _quadratic(6, seed=1)
    p = torch.nn.Parameter(theta0.clone())
    opt = torch.optim.SGD([p], lr=0.1, momentum=0.9, dampening=0.9)
    (0.5 * p @ h @ p + p @ noise[0]).backward()
    opt.step()
    ours = _run_in_momentum(SGDMAccum, h, noise, theta0, steps=1, lr=0.1, beta=0.9, k=1)
    assert not torch.allclose(p.detach(), ours[0])


def test_adam_accum_k1_is_torch_adam():
    h, noise, theta0 = _quadratic(8, seed=2, dtype=torch.float32)
    ours = _run_in_momentum(AdamAccum, h, noise, theta0, steps=60, lr=0.01, k=1, betas=(0.9, 0.99))
    ref = _run_explicit(h, noise, theta0, steps=60, k=1, lr=0.01, beta=None, adam=(0.9, 0.99))
    assert torch.allclose(ours, ref, atol=1e-6, rtol=0)


def test_adam_accum_first_update_is_mean_over_rms(rng):
    """First update: lr * mean(g) / (sqrt(mean(g^2)) + eps); true accumulation: lr * sign(mean g)."""
    k, d, lr = 5, 7, 0.1
    gs = torch.randn(k, d, generator=rng, dtype=torch.float64)
    p = torch.nn.Parameter(torch.zeros(d, dtype=torch.float64))
    opt = AdamAccum([p], lr=lr, k=k, eps=1e-12)
    for i in range(k):
        p.grad = gs[i].clone()
        opt.step()
    by_hand = -lr * gs.mean(0) / (gs.pow(2).mean(0).sqrt() + 1e-12)
    assert torch.allclose(p.detach(), by_hand, atol=1e-12)
    q = torch.nn.Parameter(torch.zeros(d, dtype=torch.float64))
    ref = torch.optim.Adam([q], lr=lr, eps=1e-12)
    q.grad = gs.mean(0)
    ref.step()
    assert torch.allclose(q.detach(), -lr * gs.mean(0).sign(), atol=1e-9)
    assert (p.detach() - q.detach()).abs().max() > 0.01  # the approximation is visible


def test_adam_eps_conventions_differ_and_match_hand_formula():
    p = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    opt = AdamAccum([p], lr=1.0, eps=1e-2, eps_inside_sqrt=True)
    p.grad = torch.tensor([0.1], dtype=torch.float64)
    opt.step()
    assert math.isclose(float(p.detach()), -0.1 / math.sqrt(0.01 + 1e-2), rel_tol=1e-12)
    q = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    opt = AdamAccum([q], lr=1.0, eps=1e-2)
    q.grad = torch.tensor([0.1], dtype=torch.float64)
    opt.step()
    assert math.isclose(float(q.detach()), -0.1 / (0.1 + 1e-2), rel_tol=1e-12)


def test_weight_decay_is_the_decay_of_the_mean_gradient():
    h, noise, theta0 = _quadratic(5, seed=3)
    ours = _run_in_momentum(
        SGDMAccum, h, noise, theta0, steps=12, lr=0.1, beta=0.5, k=3, weight_decay=0.1
    )
    p = torch.nn.Parameter(theta0.clone())
    opt = torch.optim.SGD([p], lr=0.1, momentum=0.5, dampening=0.5, weight_decay=0.1)
    opt.state[p]["momentum_buffer"] = torch.zeros_like(p)
    for s in range(4):
        batches = [(noise[s * 3 + i],) for i in range(3)]
        explicit_accumulation_step(p, lambda m, n: 0.5 * m @ h @ m + m @ n, batches, opt)
    assert torch.allclose(ours[-1], p.detach(), atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(
    beta=st.floats(0.0, 0.999),
    k=st.integers(1, 64),
)
def test_beta_tilde_algebra(beta, k):
    bt = beta_tilde(beta, k)
    w = window_weights(beta, k, k, scheme="beta_tilde")
    assert math.isclose(float(w.sum()), 1 - bt**k, rel_tol=1e-9, abs_tol=1e-12)
    # exact accumulation puts (1 - beta) on the window; the EMA with beta_tilde puts 1 - bt^k
    acc = window_weights(beta, k, k, scheme="accumulate")
    assert math.isclose(float(acc.sum()), 1 - beta, rel_tol=1e-9, abs_tol=1e-12)
    # beta_tilde^k lies between beta and the limit exp(-(1 - beta)) (Bernoulli's inequality)
    assert beta - 1e-12 <= bt**k <= limit_decay(beta) + 1e-12


def test_window_weights_by_loop():
    beta, k, n = 0.7, 3, 10
    acc = window_weights(beta, k, n, scheme="accumulate")
    loop = [(1 - beta) / k * beta ** (i // k) for i in range(n)]
    assert torch.allclose(acc, torch.tensor(loop, dtype=torch.float64))
    ema = window_weights(beta, k, n, scheme="ema")
    assert torch.allclose(ema, torch.tensor([(1 - beta) * beta**i for i in range(n)]).double())


def test_chi():
    assert [chi(t, 3) for t in range(1, 8)] == [0, 0, 1, 0, 0, 1, 0]


def test_extreme_settings_no_nan():
    p = torch.nn.Parameter(torch.zeros(4, dtype=torch.bfloat16))
    opt = AdamAccum([p], lr=1e-3, k=2, betas=(0.0, 0.0))
    for _ in range(4):
        p.grad = torch.tensor([0.0, 1e-30, 3e4, -1.0], dtype=torch.bfloat16)
        opt.step()
    assert torch.isfinite(p).all()
    q = torch.nn.Parameter(torch.zeros(3, dtype=torch.float16))
    opt = SGDMAccum([q], lr=1e-3, beta=0.999, k=64)
    for _ in range(128):
        q.grad = torch.ones(3, dtype=torch.float16)
        opt.step()
    assert torch.isfinite(q).all() and (q < 0).all()


@pytest.mark.parametrize(
    ("call", "match", "exc"),
    [
        (lambda p: SGDMAccum(p, lr=-1.0), r"^lr\b", ValueError),
        (lambda p: SGDMAccum(p, lr=0.1, beta=1.5), r"^beta\b", ValueError),
        (lambda p: SGDMAccum(p, lr=0.1, k=0), r"^k\b", ValueError),
        (lambda p: SGDMAccum(p, lr=0.1, k=2.0), r"^k\b", TypeError),
        (lambda p: AdamAccum(p, betas=(0.9,)), r"^betas\b", ValueError),
        (lambda p: AdamAccum(p, betas=(0.9, 1.0)), r"^betas\b", ValueError),
        (lambda p: AdamAccum(p, eps_inside_sqrt=1), r"^eps_inside_sqrt\b", TypeError),
        (lambda p: SGDMAccum(p[0], lr=0.1), r"^params\b", TypeError),
    ],
)
def test_bad_input(call, match, exc):
    with pytest.raises(exc, match=match):
        call([torch.nn.Parameter(torch.zeros(2))])


def test_bad_helpers():
    with pytest.raises(ValueError, match=r"^scheme\b"):
        window_weights(0.9, 2, 4, scheme="adam")
    with pytest.raises(ValueError, match=r"^t\b"):
        chi(0, 2)
    with pytest.raises(ValueError, match=r"^micro_batches\b"):
        explicit_accumulation_step(torch.nn.Linear(1, 1), lambda m: 0, [], None)


@requires_cuda
def test_cuda_matches_cpu():
    h, noise, theta0 = _quadratic(6, seed=4)
    cpu = _run_in_momentum(SGDMAccum, h, noise, theta0, steps=12, lr=0.2, beta=0.9, k=3)
    hc, nc, tc = (x.cuda() for x in (h, noise, theta0))
    gpu = _run_in_momentum(SGDMAccum, hc, nc, tc, steps=12, lr=0.2, beta=0.9, k=3)
    assert gpu.device.type == "cuda"
    assert torch.allclose(gpu.cpu(), cpu, atol=1e-10)


def test_window_decay_false_is_ema_with_sparse_updates():
    """window_decay=False: m is a plain EMA on every micro-step; theta moves every k-th step."""
    h, noise, theta0 = _quadratic(5, seed=6)
    k, lr, beta = 4, 0.1, 0.9
    ours = _run_in_momentum(
        SGDMAccum, h, noise, theta0, steps=16, lr=lr, beta=beta, k=k, window_decay=False
    )
    theta, m = theta0.clone(), torch.zeros_like(theta0)
    for t in range(1, 17):
        g = h @ theta + noise[t - 1]
        m = beta * m + (1 - beta) * g
        if t % k == 0:
            theta = theta - lr * m
        assert torch.allclose(ours[t - 1], theta, atol=1e-12)
