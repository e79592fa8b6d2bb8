"""CoSENT and the factorised positive/negative ranking loss against loops and sentence-transformers."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kexue_lib.ranking_losses import cosent_loss, pairwise_ranking_loss, pos_neg_ranking_loss
from tests.conftest import requires_cuda


def loop_cosent(scores, labels, scale):
    """log(1 + sum over ordered pairs) by an explicit O(B^2) double loop, in Python floats."""
    s = [float(x) for x in scores]
    y = [float(x) for x in labels]
    total = 1.0
    for a in range(len(s)):
        for b in range(len(s)):
            if y[a] > y[b]:
                total += math.exp(scale * (s[b] - s[a]))
    return math.log(total)


def loop_pos_neg(pos, neg, scale, margin):
    total = 1.0
    for p in pos.tolist():
        for n in neg.tolist():
            total += math.exp(scale * (n - p + margin))
    return math.log(total)


def _batch(seed, B=12, levels=6, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, levels, (B,), generator=g)
    c = (torch.rand(B, generator=g, dtype=torch.float64) * 2 - 1).to(dtype)
    return c, y


@pytest.mark.parametrize("levels", [2, 3, 6])
@pytest.mark.parametrize("scale", [1.0, 5.0, 20.0])
def test_pairwise_matches_double_loop(levels, scale):
    for seed in range(5):
        c, y = _batch(seed, levels=levels)
        got = pairwise_ranking_loss(c, y, scale=scale)
        assert got.dtype == torch.float64
        assert got.item() == pytest.approx(loop_cosent(c, y, scale), rel=1e-12)


def test_float32_close_to_float64_and_dtype_kept():
    c, y = _batch(0, B=20)
    l64 = pairwise_ranking_loss(c, y)
    l32 = pairwise_ranking_loss(c.float(), y)
    assert l32.dtype == torch.float32
    assert l32.item() == pytest.approx(l64.item(), rel=1e-5)


def test_half_precision_finite_and_kept():
    c, y = _batch(1, B=16)
    for dt in (torch.float16, torch.bfloat16):
        out = pairwise_ranking_loss(c.to(dt), y)
        assert out.dtype == dt and torch.isfinite(out)
        assert out.float().item() == pytest.approx(
            loop_cosent(c.to(dt).double(), y, 20.0), rel=2e-2
        )


def test_ties_and_no_ordered_pair_give_zero_with_graph():
    c = torch.tensor([0.3, -0.2, 0.9], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([2.0, 2.0, 2.0])
    out = pairwise_ranking_loss(c, y)
    assert out.item() == 0.0
    out.backward()
    assert torch.equal(c.grad, torch.zeros(3, dtype=torch.float64))
    # a single element and ties only: still 0, never -inf
    assert pairwise_ranking_loss(torch.tensor([0.5]), torch.tensor([1])).item() == 0.0


def test_extreme_scale_no_nan():
    c, y = _batch(2, B=10)
    for scale in (1e-6, 1e4):
        out = pairwise_ranking_loss(c, y, scale=scale)
        assert torch.isfinite(out)
        c2 = c.clone().requires_grad_(True)
        pairwise_ranking_loss(c2, y, scale=scale).backward()
        assert torch.isfinite(c2.grad).all()


def test_gradcheck_float64():
    c, y = _batch(3, B=8)
    c.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda s: pairwise_ranking_loss(s, y, scale=3.0), (c,))
    p = torch.rand(2, 4, dtype=torch.float64, requires_grad=True)
    n = torch.rand(2, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, b: pos_neg_ranking_loss(a, b, scale=4.0, margin=0.2), (p, n)
    )


def test_gradient_formula():
    """dL/dc_a = lambda/Z (sum_{y_b > y_a} e^{lam(c_a - c_b)} - sum_{y_b < y_a} e^{lam(c_b - c_a)})."""
    c, y = _batch(4, B=15)
    lam = 7.0
    c.requires_grad_(True)
    L = pairwise_ranking_loss(c, y, scale=lam)
    (g,) = torch.autograd.grad(L, c)
    Z = math.exp(L.item())
    cs, ys = c.detach().tolist(), y.tolist()
    for a in range(len(cs)):
        up = sum(math.exp(lam * (cs[a] - cs[b])) for b in range(len(cs)) if ys[b] > ys[a])
        down = sum(math.exp(lam * (cs[b] - cs[a])) for b in range(len(cs)) if ys[b] < ys[a])
        assert g[a].item() == pytest.approx(lam / Z * (up - down), rel=1e-10, abs=1e-14)


def test_cosent_loss_matches_sentence_transformers():
    st_losses = pytest.importorskip("sentence_transformers.losses")
    import warnings

    g = torch.Generator().manual_seed(0)
    u, v = torch.randn(16, 8, generator=g), torch.randn(16, 8, generator=g)
    for labels in (
        torch.randint(0, 2, (16,), generator=g).float(),
        torch.rand(16, generator=g) * 5,
    ):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref_loss = st_losses.CoSENTLoss(model=torch.nn.Identity(), scale=20.0)
        ref = ref_loss.compute_loss_from_embeddings([u, v], labels)
        ours = cosent_loss(u, v, labels, scale=20.0)
        assert ours.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-6)


def test_pos_neg_matches_loop_and_cosent_binary():
    g = torch.Generator().manual_seed(5)
    pos = torch.rand(3, 4, dtype=torch.float64, generator=g)
    neg = torch.rand(3, 6, dtype=torch.float64, generator=g)
    out = pos_neg_ranking_loss(pos, neg, scale=8.0, margin=0.25)
    assert out.shape == (3,)
    for i in range(3):
        assert out[i].item() == pytest.approx(loop_pos_neg(pos[i], neg[i], 8.0, 0.25), rel=1e-12)
    c, y = _batch(6, B=14, levels=2)
    fact = pos_neg_ranking_loss(c[y == 1], c[y == 0], scale=20.0)
    assert fact.item() == pytest.approx(pairwise_ranking_loss(c, y).item(), rel=1e-12)


def test_pos_neg_empty_side_is_zero():
    pos = torch.rand(4, dtype=torch.float64)
    assert pos_neg_ranking_loss(pos, torch.empty(0, dtype=torch.float64)).item() == 0.0


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.floats(-1, 1), st.integers(0, 4)), min_size=2, max_size=20),
    st.floats(-2, 2),
    st.floats(0.5, 40),
)
def test_properties(items, shift, scale):
    c = torch.tensor([a for a, _ in items], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([b for _, b in items])
    L = pairwise_ranking_loss(c, y, scale=scale)
    # shift invariance
    assert pairwise_ranking_loss(c + shift, y, scale=scale).item() == pytest.approx(
        L.item(), rel=1e-9, abs=1e-12
    )
    # gradients sum to zero
    (g,) = torch.autograd.grad(L, c)
    assert abs(g.sum().item()) <= 1e-9 * (1 + g.abs().sum().item())
    # smooth max bounds and the discordant-pair bound
    ordered = y[:, None] > y[None, :]
    M = int(ordered.sum())
    gaps = (scale * (c[None, :] - c[:, None]))[ordered]
    m = max(0.0, gaps.max().item()) if M else 0.0
    assert m - 1e-9 <= L.item() <= m + math.log1p(M) + 1e-9
    D = int((ordered & (c[:, None] <= c[None, :])).sum())
    assert math.log1p(D) <= L.item() + 1e-9
    # all cosines equal -> log(1 + M)
    flat = pairwise_ranking_loss(torch.zeros_like(c), y, scale=scale)
    assert flat.item() == pytest.approx(math.log1p(M), rel=1e-12, abs=1e-15)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: pairwise_ranking_loss(torch.rand(3), torch.rand(4)), r"^labels\b"),
        (lambda: pairwise_ranking_loss(torch.rand(3, 2), torch.rand(3, 2)), r"^scores\b"),
        (lambda: pairwise_ranking_loss(torch.rand(3), torch.rand(3), scale=0.0), r"^scale\b"),
        (lambda: pairwise_ranking_loss(torch.rand(3), torch.rand(3), scale=-1), r"^scale\b"),
        (
            lambda: pairwise_ranking_loss(torch.tensor([0.1, float("nan")]), torch.rand(2)),
            r"^scores\b",
        ),
        (
            lambda: pairwise_ranking_loss(torch.rand(2), torch.tensor([1.0, float("inf")])),
            r"^labels\b",
        ),
        (lambda: cosent_loss(torch.rand(3, 2), torch.rand(3, 4), torch.rand(3)), r"^v\b"),
        (lambda: cosent_loss(torch.rand(3), torch.rand(3), torch.rand(3)), r"^u\b"),
        (lambda: pos_neg_ranking_loss(torch.rand(2, 3), torch.rand(3, 3)), r"^neg\b"),
        (lambda: pos_neg_ranking_loss(torch.rand(3), torch.rand(3), scale=0), r"^scale\b"),
    ],
)
def test_bad_input_value_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_bad_input_type_errors():
    with pytest.raises(TypeError, match=r"^scores\b"):
        pairwise_ranking_loss(torch.tensor([1, 2]), torch.tensor([1, 2]))
    with pytest.raises(TypeError, match=r"^scores\b"):
        pairwise_ranking_loss([0.1, 0.2], torch.tensor([1, 2]))
    with pytest.raises(TypeError, match=r"^margin\b"):
        pos_neg_ranking_loss(torch.rand(3), torch.rand(3), margin="1")


@requires_cuda
def test_cuda_device_kept():
    c, y = _batch(7, B=10)
    out = pairwise_ranking_loss(c.cuda(), y.cuda())
    assert out.device.type == "cuda"
    assert out.item() == pytest.approx(pairwise_ranking_loss(c, y).item(), rel=1e-10)
