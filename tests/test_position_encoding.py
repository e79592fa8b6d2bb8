"""Tests of kexue_lib.position_encoding against explicit loops, scipy quadrature and HF T5."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kexue_lib.linalg import toeplitz_fraction
from kexue_lib.position_encoding import (
    clip_relative,
    floater_generator,
    oscillatory_integral,
    relative_positions,
    sinusoidal_frequencies,
    sinusoidal_inner_product,
    sinusoidal_position_encoding,
    sinusoidal_shift_matrix,
    t5_relative_position_bucket,
)
from tests.conftest import requires_cuda


def vaswani_loop(n: int, d: int, base: float = 1e4) -> torch.Tensor:
    """PE(pos, 2i) = sin(pos / base^(2i/d)), PE(pos, 2i+1) = cos(...), entry by entry."""
    P = torch.empty(n, d, dtype=torch.float64)
    for pos in range(n):
        for i in range(d // 2):
            a = pos / base ** (2 * i / d)
            P[pos, 2 * i] = math.sin(a)
            P[pos, 2 * i + 1] = math.cos(a)
    return P


# --------------------------------------------------------------------------- tables


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-6)])
def test_table_matches_vaswani_loop(dtype, tol):
    P = sinusoidal_position_encoding(50, 16, dtype=dtype)
    assert P.dtype == dtype and P.shape == (50, 16)
    torch.testing.assert_close(P.double(), vaswani_loop(50, 16), atol=tol, rtol=0)


def test_layouts_are_permutations_of_the_loop():
    ref = vaswani_loop(20, 8, base=100.0)
    sin, cos = ref[:, 0::2], ref[:, 1::2]
    cs = sinusoidal_position_encoding(20, 8, base=100.0, order="cos_sin", dtype=torch.float64)
    torch.testing.assert_close(cs[:, 0::2], cos)
    torch.testing.assert_close(cs[:, 1::2], sin)
    half = sinusoidal_position_encoding(20, 8, base=100.0, layout="half", dtype=torch.float64)
    torch.testing.assert_close(half, torch.cat([sin, cos], -1))
    half_cs = sinusoidal_position_encoding(
        20, 8, base=100.0, layout="half", order="cos_sin", dtype=torch.float64
    )
    torch.testing.assert_close(half_cs, torch.cat([cos, sin], -1))


def test_half_layout_matches_transformers_roformer_table():
    mod = pytest.importorskip("transformers.models.roformer.modeling_roformer")
    cls = getattr(mod, "RoFormerSinusoidalPositionalEmbedding", None)
    if cls is None:
        pytest.skip("RoFormerSinusoidalPositionalEmbedding moved")
    emb = cls(64, 32)
    if hasattr(emb, "create_weight"):  # newer versions fill the table lazily
        W = emb.create_weight().double()
    elif hasattr(emb, "_init_weight"):
        W = emb._init_weight(emb.weight).detach().double()
    else:
        W = emb.weight.detach().double()
    ours = sinusoidal_position_encoding(64, 32, layout="half", dtype=torch.float64)
    torch.testing.assert_close(W, ours, atol=1e-6, rtol=0)


def test_table_accepts_tensor_positions_and_batch_shape():
    pos = torch.tensor([[0, 3], [7, 100]])
    P = sinusoidal_position_encoding(pos, 8, dtype=torch.float64)
    assert P.shape == (2, 2, 8)
    ref = vaswani_loop(101, 8)
    torch.testing.assert_close(P[1, 1], ref[100])
    torch.testing.assert_close(P[0, 1], ref[3])
    # non-integer positions are allowed (continuous-time view)
    Pf = sinusoidal_position_encoding(torch.tensor([0.5]), 2, dtype=torch.float64)
    torch.testing.assert_close(
        Pf[0], torch.tensor([math.sin(0.5), math.cos(0.5)], dtype=torch.float64)
    )


def test_half_precision_output_is_finite_and_angles_are_exact():
    # a bf16 angle at position 1000 would be off by several radians; the table must not be.
    P = sinusoidal_position_encoding(torch.tensor([1001]), 4, dtype=torch.bfloat16)
    assert P.dtype == torch.bfloat16 and torch.isfinite(P).all()
    ref = torch.tensor([math.sin(1001), math.cos(1001)])
    torch.testing.assert_close(P[0, :2].float(), ref, atol=1e-2, rtol=0)


@settings(max_examples=30, deadline=None)
@given(
    d=st.sampled_from([2, 8, 32, 64]),
    base=st.floats(2.0, 1e5),
    m=st.integers(-500, 500),
    n=st.integers(-500, 500),
)
def test_inner_product_depends_only_on_delta(d, base, m, n):
    P = sinusoidal_position_encoding(torch.tensor([m, n]), d, base=base, dtype=torch.float64)
    got = sinusoidal_inner_product(m - n, d, base=base)
    assert abs(float(P[0] @ P[1]) - float(got)) < 1e-9
    # and a different pair with the same difference gives the same number
    Q = sinusoidal_position_encoding(
        torch.tensor([m + 17, n + 17]), d, base=base, dtype=torch.float64
    )
    assert abs(float(Q[0] @ Q[1]) - float(got)) < 1e-9


@pytest.mark.parametrize("layout", ["interleaved", "half"])
@pytest.mark.parametrize("order", ["sin_cos", "cos_sin"])
def test_gram_matrix_is_toeplitz_and_equals_inner_product(layout, order):
    P = sinusoidal_position_encoding(40, 32, layout=layout, order=order, dtype=torch.float64)
    G = P @ P.T
    assert float(toeplitz_fraction(G)) > 1 - 1e-12
    rel = relative_positions(40, 40)
    torch.testing.assert_close(G, sinusoidal_inner_product(-rel, 32), atol=1e-10, rtol=0)


def test_inner_product_table_of_the_fact_sheet():
    delta = torch.tensor([0, 1, 10, 50, 100, 128, 1000, 10000])
    want = [64.0, 62.0937, 42.8200, 34.9550, 30.5435, 21.2988, 10.1777, -1.7852]
    got = sinusoidal_inner_product(delta, 128)
    assert got.dtype == torch.float64
    for g, w in zip(got.tolist(), want, strict=True):
        assert abs(g - w) < 1e-4, (g, w)


def test_inner_product_dtypes():
    assert sinusoidal_inner_product(torch.tensor([1.0]), 8).dtype == torch.float32
    assert (
        sinusoidal_inner_product(torch.tensor([1.0], dtype=torch.float16), 8).dtype == torch.float16
    )
    assert sinusoidal_inner_product(3, 8).dtype == torch.float64


# --------------------------------------------------------------------------- shift matrix, FLOATER


@settings(max_examples=30, deadline=None)
@given(
    beta=st.integers(-300, 300),
    d=st.sampled_from([2, 6, 16]),
    layout=st.sampled_from(["interleaved", "half"]),
    order=st.sampled_from(["sin_cos", "cos_sin"]),
)
def test_shift_matrix_identity(beta, d, layout, order):
    kw = dict(layout=layout, order=order)
    P = sinusoidal_position_encoding(torch.arange(-20, 21), d, dtype=torch.float64, **kw)
    Pb = sinusoidal_position_encoding(torch.arange(-20, 21) + beta, d, dtype=torch.float64, **kw)
    M = sinusoidal_shift_matrix(beta, d, **kw)
    torch.testing.assert_close(P @ M.T, Pb, atol=1e-11, rtol=0)
    torch.testing.assert_close(M @ M.T, torch.eye(d, dtype=torch.float64), atol=1e-12, rtol=0)


def test_shift_matrix_is_block_diagonal_rotation_written_out():
    d, beta = 6, 5
    M = sinusoidal_shift_matrix(beta, d)
    th = [1e4 ** (-2 * i / d) for i in range(d // 2)]
    for i, t in enumerate(th):
        blk = M[2 * i : 2 * i + 2, 2 * i : 2 * i + 2]
        c, s = math.cos(beta * t), math.sin(beta * t)
        ref = torch.tensor([[c, s], [-s, c]], dtype=torch.float64)
        torch.testing.assert_close(blk, ref)
    off = M.clone()
    for i in range(d // 2):
        off[2 * i : 2 * i + 2, 2 * i : 2 * i + 2] = 0
    assert off.abs().max() == 0


@pytest.mark.parametrize("layout", ["interleaved", "half"])
def test_floater_matrix_exponential_solves_the_ode(layout):
    d = 8
    G = floater_generator(d, layout=layout)
    assert torch.equal(G, -G.T)
    p0 = sinusoidal_position_encoding(torch.tensor([0]), d, layout=layout, dtype=torch.float64)[0]
    for k in (1, 7, 123):
        pk = torch.linalg.matrix_exp(k * G) @ p0
        ref = sinusoidal_position_encoding(torch.tensor([k]), d, layout=layout, dtype=torch.float64)
        torch.testing.assert_close(pk, ref[0], atol=1e-11, rtol=0)
    # the derivative of the table is G p (central difference)
    h = 1e-5
    t = torch.tensor([3.0 - h, 3.0 + h], dtype=torch.float64)
    Pt = sinusoidal_position_encoding(t, d, layout=layout, dtype=torch.float64)
    p3 = sinusoidal_position_encoding(torch.tensor([3.0]), d, layout=layout, dtype=torch.float64)
    torch.testing.assert_close((Pt[1] - Pt[0]) / (2 * h), G @ p3[0], atol=1e-8, rtol=0)


# --------------------------------------------------------------------------- oscillatory integral


@pytest.mark.parametrize("x", [-1000.0, -10.0, 0.3, 1.0, 10.0, 100.0, 1000.0])
@pytest.mark.parametrize("base", [1e4, 1e3, 50.0])
def test_exp_integral_vs_quad(x, base):
    from scipy.integrate import quad

    lim = 2000
    re = quad(lambda t: math.cos(x * base ** (-t)), 0, 1, limit=lim, epsabs=1e-12)[0]
    im = quad(lambda t: math.sin(x * base ** (-t)), 0, 1, limit=lim, epsabs=1e-12)[0]
    got = complex(oscillatory_integral(torch.tensor(x, dtype=torch.float64), base=base))
    assert abs(got.real - re) < 1e-8 and abs(got.imag - im) < 1e-8, (got, re, im)


def test_exp_integral_small_x_and_zero_are_continuous():
    from scipy.integrate import quad

    x = torch.tensor([0.0, 1e-12, -3e-5, 9e-5, 2e-4], dtype=torch.float64)
    got = oscillatory_integral(x)
    for xv, g in zip(x.tolist(), got.tolist(), strict=True):
        re = quad(lambda t, xv=xv: math.cos(xv * 1e4 ** (-t)), 0, 1, epsabs=1e-14)[0]
        im = quad(lambda t, xv=xv: math.sin(xv * 1e4 ** (-t)), 0, 1, epsabs=1e-14)[0]
        assert abs(g.real - re) < 1e-12 and abs(g.imag - im) < 1e-12, (xv, g, re, im)


def test_exp_integral_table_and_zero_crossing():
    want = {1: 0.97396, 10: 0.68239, 50: 0.51198, 100: 0.43677, 128: 0.41115, 1000: 0.18769}
    x = torch.tensor(list(want), dtype=torch.float64)
    got = oscillatory_integral(x).real
    for g, w in zip(got.tolist(), want.values(), strict=True):
        assert abs(g - w) < 5e-5, (g, w)
    # the real part is even
    torch.testing.assert_close(oscillatory_integral(-x).real, got)


def test_exp_integral_first_zero_vs_quad_root():
    # the leading-order envelope 1 - (gamma + ln x)/ln b predicts b exp(-gamma) ~ 5615; the
    # exact integral crosses later (the (x/b)^2 term of Ci(x/b) is not negligible there)
    from scipy.integrate import quad
    from scipy.optimize import brentq

    def re_quad(x):
        return quad(lambda t: math.cos(x * 1e4 ** (-t)), 0, 1, limit=4000, epsabs=1e-12)[0]

    root = brentq(re_quad, 5000.0, 7000.0, xtol=1e-6)
    grid = torch.linspace(3000, 9000, 60001, dtype=torch.float64)
    re = oscillatory_integral(grid).real
    first = float(grid[torch.nonzero(re < 0)[0, 0]])
    assert abs(first - root) < 0.2, (first, root)
    assert first - 1e4 * math.exp(-0.5772156649) > 400


@pytest.mark.parametrize("x", [0.0, 1e-9, 1.0, 5.0, -5.0, 50.0, 500.0])
def test_linear_schedule_closed_form(x):
    got = complex(oscillatory_integral(torch.tensor(x, dtype=torch.float64), schedule="linear"))
    if x == 0:
        assert got == 1
        return
    if abs(x) < 1e-6:  # series: (1 - cos x)/x loses every digit here
        ref = complex(1 - x * x / 6, x / 2 - x**3 / 24)
    else:
        ref = complex(math.sin(x) / x, (1 - math.cos(x)) / x)
    assert abs(got - ref) < 1e-12


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0, 3.0])
def test_power_schedule_vs_quad_and_closed_forms(alpha):
    from scipy.integrate import quad

    xs = [0.0, 1.0, 5.0, -12.0, 60.0, 300.0]
    got = oscillatory_integral(torch.tensor(xs, dtype=torch.float64), schedule="power", alpha=alpha)
    for x, g in zip(xs, got.tolist(), strict=True):
        re = quad(lambda t, x=x: math.cos(x * t**alpha), 0, 1, limit=2000, epsabs=1e-12)[0]
        im = quad(lambda t, x=x: math.sin(x * t**alpha), 0, 1, limit=2000, epsabs=1e-12)[0]
        assert abs(g.real - re) < 1e-7 and abs(g.imag - im) < 1e-7, (alpha, x, g, re, im)
        if alpha == 0.5 and x != 0:
            closed = 2 * (math.sin(x) / x + (math.cos(x) - 1) / x**2)
            assert abs(g.real - closed) < 1e-10


def test_oscillatory_integral_dtypes_and_riemann_lebesgue():
    assert oscillatory_integral(torch.tensor([1.0])).dtype == torch.complex64
    assert oscillatory_integral(torch.tensor([1.0], dtype=torch.float64)).dtype == torch.complex128
    assert oscillatory_integral(3).dtype == torch.complex128
    big = oscillatory_integral(torch.tensor([1e7, 1e9], dtype=torch.float64))
    assert big.abs().max() < 0.01


# --------------------------------------------------------------------------- relative indices


def test_relative_positions_loop():
    rel = relative_positions(3, 5, offset=2)
    for i in range(3):
        for j in range(5):
            assert rel[i, j] == j - (i + 2)
    assert rel.dtype == torch.long


def test_clip_relative():
    rel = torch.arange(-6, 7)
    idx = clip_relative(rel, -2, 3)
    ref = [min(max(r, -2), 3) + 2 for r in range(-6, 7)]
    assert idx.tolist() == ref
    assert idx.min() == 0 and idx.max() == 5


def t5_bucket_loop(r: int, bidirectional: bool, num_buckets: int, max_distance: int) -> int:
    """T5 paper's bucketing for one integer, from the formula (float arithmetic in Python)."""
    out = 0
    nb = num_buckets
    if bidirectional:
        nb //= 2
        out += nb if r > 0 else 0
        n = abs(r)
    else:
        n = max(-r, 0)
    exact = nb // 2
    if n < exact:
        return out + n
    v = exact + int(math.log(n / exact) / math.log(max_distance / exact) * (nb - exact))
    return out + min(v, nb - 1)


def test_t5_buckets_table_of_the_post():
    # the post's table is for i - j = 0..30, i.e. key - query = 0, -1, ..., -30
    got = t5_relative_position_bucket(-torch.arange(31)).tolist()
    want = [0, 1, 2, 3, 4, 5, 6, 7, 8, 8, 8, 8, 9, 9, 9, 9] + [10] * 7 + [11] * 8
    assert got == want
    b = t5_relative_position_bucket(torch.tensor([-90, -91, -1000, 1, 7, 8, 12]))
    assert b.tolist() == [14, 15, 15, 17, 23, 24, 25]


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("nb,md", [(32, 128), (8, 20), (64, 500)])
def test_t5_buckets_vs_loop(bidirectional, nb, md):
    r = torch.arange(-600, 601)
    got = t5_relative_position_bucket(
        r, bidirectional=bidirectional, num_buckets=nb, max_distance=md
    )
    ref = [t5_bucket_loop(v, bidirectional, nb, md) for v in r.tolist()]
    assert got.tolist() == ref


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("nb,md", [(32, 128), (8, 20), (64, 500)])
def test_t5_buckets_vs_transformers(bidirectional, nb, md):
    t5 = pytest.importorskip("transformers.models.t5.modeling_t5")
    r = torch.arange(-300, 301)[:, None] + torch.zeros(1, 2, dtype=torch.long)
    ref = t5.T5Attention._relative_position_bucket(r, bidirectional, nb, md)
    got = t5_relative_position_bucket(
        r, bidirectional=bidirectional, num_buckets=nb, max_distance=md
    )
    assert torch.equal(got, ref)


# --------------------------------------------------------------------------- bad inputs


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"^d\b"):
        sinusoidal_position_encoding(4, 7)
    with pytest.raises(ValueError, match=r"^base\b"):
        sinusoidal_position_encoding(4, 8, base=1.0)
    with pytest.raises(ValueError, match=r"^layout\b"):
        sinusoidal_position_encoding(4, 8, layout="vaswani")
    with pytest.raises(ValueError, match=r"^order\b"):
        sinusoidal_position_encoding(4, 8, order="cos")
    with pytest.raises(ValueError, match=r"^positions\b"):
        sinusoidal_position_encoding(-1, 8)
    with pytest.raises(TypeError, match=r"^positions\b"):
        sinusoidal_position_encoding([1, 2], 8)
    with pytest.raises(TypeError, match=r"^dtype\b"):
        sinusoidal_position_encoding(4, 8, dtype=torch.long)
    with pytest.raises(ValueError, match=r"^d\b"):
        sinusoidal_inner_product(1, 0)
    with pytest.raises(TypeError, match=r"^delta\b"):
        sinusoidal_inner_product("1", 8)
    with pytest.raises(ValueError, match=r"^schedule\b"):
        oscillatory_integral(1.0, schedule="cubic")
    with pytest.raises(ValueError, match=r"^alpha\b"):
        oscillatory_integral(1.0, schedule="power", alpha=0.0)
    with pytest.raises(ValueError, match=r"^x\b"):
        oscillatory_integral(torch.tensor([float("inf")]))
    with pytest.raises(ValueError, match=r"^base\b"):
        oscillatory_integral(1.0, base=0.5)
    with pytest.raises(TypeError, match=r"^beta\b"):
        sinusoidal_shift_matrix("1", 4)
    with pytest.raises(ValueError, match=r"^d\b"):
        floater_generator(3)
    with pytest.raises(ValueError, match=r"^n_q\b"):
        relative_positions(-1, 3)
    with pytest.raises(TypeError, match=r"^offset\b"):
        relative_positions(2, 3, offset=0.5)
    with pytest.raises(TypeError, match=r"^rel\b"):
        clip_relative(torch.tensor([0.5]), -1, 1)
    with pytest.raises(ValueError, match=r"^hi\b"):
        clip_relative(torch.tensor([0]), 2, 1)
    with pytest.raises(TypeError, match=r"^rel\b"):
        t5_relative_position_bucket(torch.tensor([1.0]))
    with pytest.raises(ValueError, match=r"^num_buckets\b"):
        t5_relative_position_bucket(torch.tensor([1]), num_buckets=2)
    with pytest.raises(ValueError, match=r"^max_distance\b"):
        t5_relative_position_bucket(torch.tensor([1]), num_buckets=32, max_distance=8)


def test_frequencies_unchanged():
    th = sinusoidal_frequencies(8)
    torch.testing.assert_close(
        th, torch.tensor([1e4 ** (-2 * i / 8) for i in range(4)], dtype=torch.float64)
    )


# --------------------------------------------------------------------------- CUDA


@requires_cuda
def test_cuda_paths_keep_device():
    dev = torch.device("cuda")
    pos = torch.arange(30, device=dev)
    P = sinusoidal_position_encoding(pos, 16, dtype=torch.float32)
    assert P.device.type == "cuda"
    torch.testing.assert_close(P.cpu().double(), vaswani_loop(30, 16), atol=1e-6, rtol=0)
    x = torch.tensor([1.0, 50.0], device=dev, dtype=torch.float64)
    for sched in ("exp", "linear", "power"):
        out = oscillatory_integral(x, schedule=sched, alpha=2.0)
        assert out.device.type == "cuda"
        torch.testing.assert_close(
            out.cpu(), oscillatory_integral(x.cpu(), schedule=sched, alpha=2.0)
        )
    ip = sinusoidal_inner_product(pos, 16)
    assert ip.device.type == "cuda"
    r = torch.arange(-200, 201, device=dev)
    assert torch.equal(t5_relative_position_bucket(r).cpu(), t5_relative_position_bucket(r.cpu()))
    assert relative_positions(3, 4, device=dev).device.type == "cuda"
    M = sinusoidal_shift_matrix(3, 8, device=dev)
    assert M.device.type == "cuda"
    assert floater_generator(8, device=dev).device.type == "cuda"


@pytest.mark.parametrize("x", [3.0, 700.0, 1999.0, 2001.0, -2500.0, 4e4, 1e7])
def test_power_schedule_alpha_2_vs_fresnel(x):
    # int_0^1 exp(i x t^2) dt = sqrt(pi / (2|x|)) [C(z) + i sgn(x) S(z)], z = sqrt(2|x|/pi)
    from scipy.special import fresnel

    z = math.sqrt(2 * abs(x) / math.pi)
    S, C = fresnel(z)
    f = math.sqrt(math.pi / (2 * abs(x)))
    got = complex(
        oscillatory_integral(torch.tensor(x, dtype=torch.float64), schedule="power", alpha=2.0)
    )
    assert abs(got.real - f * C) < 1e-9 and abs(got.imag - math.copysign(f * S, x)) < 1e-9


@pytest.mark.parametrize("alpha", [0.5, 1 / 3, 0.7, 1.5])
@pytest.mark.parametrize("x", [300.0, 1990.0, 2010.0, 9000.0, -3e5])
def test_power_schedule_vs_incomplete_gamma(alpha, x):
    # (1/alpha) int_0^1 u^b e^{ixu} du = (1/alpha) (-ix)^-(b+1) gamma_lower(b + 1, -ix), b = 1/alpha - 1
    mp = pytest.importorskip("mpmath")
    mp.mp.dps = 30
    b = 1 / alpha - 1
    z = mp.mpc(0, -x)
    ref = complex(mp.gammainc(b + 1, 0, z) * z ** (-(b + 1)) / alpha)
    got = complex(
        oscillatory_integral(torch.tensor(x, dtype=torch.float64), schedule="power", alpha=alpha)
    )
    assert abs(got - ref) < 1e-10 * max(1.0, abs(ref)), (got, ref)
