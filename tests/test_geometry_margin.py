"""Cosine distances and the triangle inequality (margin-softmax chapter): brute-force triples."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kexue_lib.geometry import (
    chord_distance,
    cosine_distance,
    sqrt_cosine_distance,
    triangle_violations,
)
from tests.conftest import requires_cuda


def _unit(deg):
    r = math.radians(deg)
    return torch.tensor([math.cos(r), math.sin(r)], dtype=torch.float64)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_distances_against_closed_forms(dtype):
    g = torch.Generator().manual_seed(0)
    x, y = (
        torch.randn(50, 6, generator=g, dtype=dtype),
        torch.randn(50, 6, generator=g, dtype=dtype),
    )
    cos = torch.nn.functional.cosine_similarity(x, y, dim=-1)
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cosine_distance(x, y), 1 - cos, **tol)
    torch.testing.assert_close(chord_distance(x, y), torch.sqrt(2 - 2 * cos), **tol)
    torch.testing.assert_close(sqrt_cosine_distance(x, y), torch.sqrt(1 - cos), **tol)
    assert chord_distance(x, y).dtype == dtype
    # near-duplicates: the difference form keeps digits the sqrt(2 - 2cos) form loses
    z = x + 1e-9 * y
    assert (chord_distance(x, z) > 0).all() if dtype == torch.float64 else True


def test_post_counterexample_0_60_120():
    p = torch.stack([_unit(0), _unit(60), _unit(120)])
    v = triangle_violations(cosine_distance, p)
    assert {tuple(r) for r in v.tolist()} == {(0, 1, 2), (2, 1, 0)}
    assert len(triangle_violations(sqrt_cosine_distance, p)) == 0


def test_triangle_violations_matches_brute_force_loop():
    g = torch.Generator().manual_seed(1)
    p = torch.randn(12, 3, generator=g, dtype=torch.float64)
    got = {tuple(r) for r in triangle_violations(cosine_distance, p).tolist()}
    want = set()
    for i, j, k in itertools.permutations(range(12), 3):
        if cosine_distance(p[i], p[k]) > cosine_distance(p[i], p[j]) + cosine_distance(p[j], p[k]):
            want.add((i, j, k))
    assert got == want and len(want) > 0
    assert len(triangle_violations(chord_distance, p, tol=1e-12)) == 0


def test_sqrt_cosine_has_no_violations_on_many_triples():
    g = torch.Generator().manual_seed(2)
    a, b, c = (torch.randn(100_000, 3, generator=g, dtype=torch.float64) for _ in range(3))
    d = sqrt_cosine_distance
    assert (d(a, c) <= d(a, b) + d(b, c) + 1e-12).all()
    cd = cosine_distance
    assert (cd(a, c) > cd(a, b) + cd(b, c)).double().mean() > 0.01


@given(st.floats(-1, 1), st.floats(-1, 1), st.floats(0, 0.5))
@settings(max_examples=200, deadline=None)
def test_am_sufficient_condition(c1, c2, m):
    """cos1 - cos2 > 2 sqrt(2) m implies sqrt(1 - cos2) - sqrt(1 - cos1) > m."""
    if c1 - c2 > 2 * math.sqrt(2) * m + 1e-12:
        assert math.sqrt(1 - c2) - math.sqrt(1 - c1) > m - 1e-12


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: cosine_distance(torch.randn(3), torch.randn(4)), ValueError, r"^y\b"),
        (
            lambda: chord_distance(torch.ones(3, dtype=torch.long), torch.ones(3)),
            TypeError,
            r"^x\b",
        ),
        (lambda: triangle_violations(None, torch.randn(3, 2)), TypeError, r"^dist_fn\b"),
        (lambda: triangle_violations(cosine_distance, torch.randn(3)), ValueError, r"^points\b"),
        (
            lambda: triangle_violations(cosine_distance, torch.randn(3, 2), tol=-1.0),
            ValueError,
            r"^tol\b",
        ),
    ],
)
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@requires_cuda
def test_cuda():
    p = torch.stack([_unit(0), _unit(60), _unit(120)]).cuda()
    assert triangle_violations(cosine_distance, p).device.type == "cuda"
