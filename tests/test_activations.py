"""SquarePlus against autograd, finite differences, exact algebra and SoftPlus."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kexue_lib.activations import (
    SQUAREPLUS_DOMINANCE_B,
    SquarePlus,
    softplus_exact,
    squareplus,
    squareplus_grad,
    squareplus_minimax_b,
    squareplus_naive,
)
from tests.conftest import requires_cuda

F64 = torch.float64


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_matches_naive_formula_where_there_is_no_cancellation(dtype):
    x = torch.linspace(-5, 50, 1001, dtype=dtype)
    torch.testing.assert_close(squareplus(x, 1.0), squareplus_naive(x, 1.0))
    assert squareplus(x).dtype == dtype


def test_gradcheck_and_closed_form_derivatives():
    x = torch.linspace(-6, 6, 41, dtype=F64, requires_grad=True)
    for b in (0.3, 1.0, SQUAREPLUS_DOMINANCE_B):
        assert torch.autograd.gradcheck(lambda t, b=b: squareplus(t, b), (x,))
        (g,) = torch.autograd.grad(squareplus(x, b).sum(), x, create_graph=True)
        torch.testing.assert_close(g, squareplus_grad(x.detach(), b))
        (h,) = torch.autograd.grad(g.sum(), x)
        torch.testing.assert_close(h, b / (2 * (x.detach() ** 2 + b) ** 1.5))
        # central finite differences of the function value
        eps = 1e-6
        fd = (squareplus(x.detach() + eps, b) - squareplus(x.detach() - eps, b)) / (2 * eps)
        torch.testing.assert_close(fd, squareplus_grad(x.detach(), b), atol=1e-8, rtol=1e-8)


def test_stable_branch_against_exact_rational_algebra():
    # b/(2(sqrt(x²+b) − x)) evaluated with exact rationals around a float64 sqrt is within 1 ulp
    b = 1.0
    for x in (-1e4, -3e5, -1e8):
        r = Fraction(math.sqrt(x * x + b))
        exact = Fraction(b) / (2 * (r - Fraction(x)))
        got = squareplus(torch.tensor([x], dtype=torch.float32), b).item()
        assert abs(got - float(exact)) <= 1e-6 * float(exact)
        assert abs(float(exact) - b / (4 * abs(x))) <= 1e-6 * float(exact)  # the b/(4|x|) tail
    # the naive float32 formula cancels to 0 there
    assert squareplus_naive(torch.tensor([-1e4]), 1.0).item() == 0.0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_has_no_nan_or_inf(dtype):
    x = torch.linspace(-6e4, 6e4, 20001).to(dtype)
    y = squareplus(x)
    assert y.dtype == dtype and torch.isfinite(y).all() and (y >= 0).all()
    ref = squareplus(x.double())
    torch.testing.assert_close(y.double(), ref, rtol=1e-2, atol=1e-6)
    naive = squareplus_naive(torch.tensor([-6e4], dtype=dtype)).item()
    assert not math.isfinite(naive) or naive == 0  # overflow (fp16) or cancellation (bf16)


def test_softplus_dominance_threshold():
    x = torch.linspace(-30, 30, 60001, dtype=F64)
    sp = softplus_exact(x)
    gap = squareplus(x, SQUAREPLUS_DOMINANCE_B) - sp
    assert gap.min().item() >= -1e-15 and abs(gap[30000].item()) < 1e-15
    assert (squareplus(x, SQUAREPLUS_DOMINANCE_B * 0.99) - sp).min() < 0


def test_minimax_b_matches_post_and_equioscillates():
    b, err, xp = squareplus_minimax_b(x_max=10.0, num=100_001)
    assert abs(b - 1.52382103) < 2e-6 and abs(err - 0.075931) < 2e-6 and abs(xp - 3.56) < 0.01
    assert abs((math.log(2) - math.sqrt(b) / 2) - err) < 1e-6  # |e_b(0)| equals the max error


@settings(max_examples=60, deadline=None)
@given(
    x=st.floats(-1e3, 1e3, allow_nan=False),
    b=st.floats(1e-3, 10.0),
)
def test_properties(x, b):
    t = torch.tensor([x, -x], dtype=F64)
    y = squareplus(t, b)
    assert abs((y[0] - y[1]).item() - x) <= 1e-9 * (1 + abs(x))  # f(x) − f(−x) = x
    assert y[0].item() >= max(x, 0.0)  # above ReLU
    assert y[0].item() * y[1].item() == pytest.approx(b / 4, rel=1e-9)  # f(x) f(−x) = b/4


def test_module_keeps_device_and_grad():
    m = SquarePlus(1.0)
    x = torch.randn(4, 3, requires_grad=True)
    m(x).sum().backward()
    assert x.grad is not None and "b=1" in repr(m)


def test_b_zero_is_relu_with_finite_gradient():
    x = torch.tensor([-2.0, 0.0, 3.0], requires_grad=True)
    y = squareplus(x, 0.0)
    y.sum().backward()
    assert y.tolist() == [0.0, 0.0, 3.0] and torch.isfinite(x.grad).all()


def test_bad_input():
    with pytest.raises(ValueError, match=r"^b\b"):
        squareplus(torch.zeros(2), -1.0)
    with pytest.raises(TypeError, match=r"^x\b"):
        squareplus([1.0])
    with pytest.raises(TypeError, match=r"^x\b"):
        squareplus(torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"^num\b"):
        squareplus_minimax_b(num=1)


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cuda_keeps_device_and_dtype(dtype):
    x = torch.linspace(-6e4, 6e4, 10001, device="cuda").to(dtype)
    y = squareplus(x)
    assert y.device == x.device and y.dtype == dtype and torch.isfinite(y).all()
    torch.testing.assert_close(y.cpu().double(), squareplus(x.cpu().double()), rtol=1e-2, atol=1e-6)
