"""kexue_lib.contrastive: losses against double loops and sentence-transformers, exact accumulation."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kexue_lib.contrastive import (
    accumulate_contrastive_grad,
    inbatch_softmax_loss,
    info_nce,
    surrogate_label_vectors,
    target_matrix,
    twin_contrastive_loss,
    twin_labels,
    two_tower_surrogates,
)
from tests.conftest import requires_cuda

F64 = torch.float64


def _loop_loss(h, t, scale, mask_diagonal, normalize):
    """-(1/B) sum_ij t_ij log p_ij with explicit Python loops over rows and columns."""
    b = h.shape[0]
    g = [h[i] / h[i].norm() if normalize else h[i] for i in range(b)]
    total = 0.0
    for i in range(b):
        cols = [j for j in range(b) if not (mask_diagonal and j == i)]
        s = {j: scale * float(g[i] @ g[j]) for j in cols}
        mx = max(s.values())
        lse = mx + math.log(sum(math.exp(v - mx) for v in s.values()))
        for j in cols:
            if t[i, j] > 0:
                total -= float(t[i, j]) * (s[j] - lse)
    return total / b


def _mlp(seed, dtype=F64, dropout=0.0):
    torch.manual_seed(seed)
    layers = [torch.nn.Linear(6, 12), torch.nn.Tanh()]
    if dropout:
        layers.append(torch.nn.Dropout(dropout))
    layers.append(torch.nn.Linear(12, 5))
    return torch.nn.Sequential(*layers).to(dtype)


def _grads(model):
    return [p.grad.clone() for p in model.parameters()]


def _full_grad(model, x, t, **kw):
    model.zero_grad()
    inbatch_softmax_loss(model(x), t, **kw).backward()
    return _grads(model)


def _rel(a, b):
    num = sum(((u - v) ** 2).sum() for u, v in zip(a, b)).sqrt()
    return float(num / sum((v**2).sum() for v in b).sqrt())


def test_twin_labels():
    assert twin_labels(6).tolist() == [1, 0, 3, 2, 5, 4]
    with pytest.raises(ValueError, match=r"^n_rows\b"):
        twin_labels(5)
    with pytest.raises(TypeError, match=r"^n_rows\b"):
        twin_labels(4.0)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("mask_diagonal", [False, True])
@pytest.mark.parametrize("normalize", [False, True])
def test_inbatch_loss_matches_double_loop(dtype, mask_diagonal, normalize):
    g = torch.Generator().manual_seed(1)
    h = torch.randn(8, 4, generator=g, dtype=dtype)
    t = target_matrix(twin_labels(8), 8, dtype=dtype)
    t[0] = 0.0
    t[0, 3], t[0, 5] = 0.25, 0.75  # a soft row
    got = inbatch_softmax_loss(h, t, scale=3.0, mask_diagonal=mask_diagonal, normalize=normalize)
    assert got.dtype == dtype
    ref = _loop_loss(h.double(), t.double(), 3.0, mask_diagonal, normalize)
    tol = 1e-12 if dtype == F64 else 1e-5
    assert abs(got.item() - ref) <= tol * max(1.0, abs(ref))


def test_twin_loss_is_cross_entropy_and_infonce():
    g = torch.Generator().manual_seed(2)
    h = torch.randn(10, 6, generator=g, dtype=F64)
    ref = _loop_loss(h, target_matrix(twin_labels(10), 10, dtype=F64), 20.0, True, True)
    assert twin_contrastive_loss(h).item() == pytest.approx(ref, rel=1e-12)
    # cross-view only: the mean of the two InfoNCE directions between the views
    a, b = h[0::2], h[1::2]
    two_way = 0.5 * (
        info_nce(a, b, scale=20.0, normalize=True) + info_nce(b, a, scale=20.0, normalize=True)
    )
    got = twin_contrastive_loss(h, same_view_negatives=False)
    assert got.item() == pytest.approx(two_way.item(), rel=1e-12)


def test_info_nce_matches_sentence_transformers_mnrl():
    st_losses = pytest.importorskip("sentence_transformers.sentence_transformer.losses")
    mnrl = st_losses.MultipleNegativesRankingLoss(model=None)  # scale 20, cosine, no model used
    g = torch.Generator().manual_seed(3)
    for dtype in (torch.float32, F64):
        q = torch.randn(12, 7, generator=g, dtype=dtype)
        k = torch.randn(12, 7, generator=g, dtype=dtype)
        ref = mnrl.compute_loss_from_embeddings([q, k], None)
        got = info_nce(q, k, scale=20.0, normalize=True)
        assert got.item() == pytest.approx(
            ref.item(), rel=1e-6 if dtype == torch.float32 else 1e-12
        )


@pytest.mark.parametrize("mask_diagonal", [False, True])
def test_surrogates_are_the_embedding_gradients(mask_diagonal):
    g = torch.Generator().manual_seed(4)
    h = torch.randn(8, 5, generator=g, dtype=F64, requires_grad=True)
    # asymmetric targets: the general form (P - T) + (P - T)^T still holds
    t = torch.tensor([1, 2, 3, 0, 5, 6, 7, 4])
    (grad,) = torch.autograd.grad(
        inbatch_softmax_loss(h, t, scale=2.5, mask_diagonal=mask_diagonal), h
    )
    sur = surrogate_label_vectors(h, t, scale=2.5, mask_diagonal=mask_diagonal)
    assert torch.allclose(sur, grad, rtol=0, atol=1e-14)
    q = torch.randn(6, 4, generator=g, dtype=F64, requires_grad=True)
    k = torch.randn(9, 4, generator=g, dtype=F64, requires_grad=True)
    gq, gk = torch.autograd.grad(info_nce(q, k, scale=1.7), (q, k))
    sq, sk = two_tower_surrogates(q, k, scale=1.7)
    assert torch.allclose(sq, gq, atol=1e-14) and torch.allclose(sk, gk, atol=1e-14)


@settings(max_examples=25, deadline=None)
@given(
    half=st.integers(2, 6),
    micro=st.integers(1, 12),
    scale=st.floats(0.1, 30.0),
    mask_diagonal=st.booleans(),
    normalize=st.booleans(),
    seed=st.integers(0, 10_000),
)
def test_two_pass_equals_full_batch(half, micro, scale, mask_diagonal, normalize, seed):
    n = 2 * half
    model = _mlp(seed)
    x = torch.randn(n, 6, generator=torch.Generator().manual_seed(seed), dtype=F64)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 1))
    t = torch.empty(n, dtype=torch.long)
    t[perm] = perm[twin_labels(n)]  # a random symmetric pairing
    kw = dict(scale=scale, mask_diagonal=mask_diagonal, normalize=normalize)
    ref = _full_grad(model, x, t, **kw)
    full_loss = inbatch_softmax_loss(model(x), t, **kw).item()
    model.zero_grad()
    loss = accumulate_contrastive_grad(model, x, t, micro_batch=micro, **kw)
    assert loss == pytest.approx(full_loss, rel=1e-12, abs=1e-12)
    assert _rel(_grads(model), ref) < 1e-10


def test_naive_accumulation_differs_and_matches_its_own_definition():
    model = _mlp(0)
    x = torch.randn(12, 6, generator=torch.Generator().manual_seed(0), dtype=F64)
    t = twin_labels(12)
    ref = _full_grad(model, x, t, scale=5.0, mask_diagonal=True)
    model.zero_grad()
    accumulate_contrastive_grad(
        model, x, t, micro_batch=4, scale=5.0, mask_diagonal=True, method="naive"
    )
    naive = _grads(model)
    assert _rel(naive, ref) > 1e-2
    # independent definition: the mean of per-chunk losses, one backward
    model.zero_grad()
    sum(
        inbatch_softmax_loss(model(x[i : i + 4]), twin_labels(4), scale=5.0, mask_diagonal=True)
        for i in (0, 4, 8)
    ).div(3).backward()
    assert _rel(naive, _grads(model)) < 1e-12
    # with one micro-batch holding everything the two agree
    model.zero_grad()
    accumulate_contrastive_grad(
        model, x, t, micro_batch=12, scale=5.0, mask_diagonal=True, method="naive"
    )
    assert _rel(_grads(model), ref) < 1e-12


def test_accumulation_adds_to_existing_grad_and_float32():
    model = _mlp(1, dtype=torch.float32)
    x = torch.randn(8, 6, generator=torch.Generator().manual_seed(1))
    t = twin_labels(8)
    ref = _full_grad(model, x, t, scale=4.0, normalize=True)
    accumulate_contrastive_grad(model, x, t, micro_batch=3, scale=4.0, normalize=True)
    assert _rel(_grads(model), [2 * r for r in ref]) < 1e-5
    assert all(p.grad.dtype == torch.float32 for p in model.parameters())


def test_dropout_needs_rng_replay():
    model = _mlp(2, dropout=0.3)
    model.train()
    x = torch.randn(8, 6, generator=torch.Generator().manual_seed(2), dtype=F64)
    t = twin_labels(8)

    def run(replay):
        torch.manual_seed(7)
        model.zero_grad()
        accumulate_contrastive_grad(model, x, t, micro_batch=2, scale=3.0, replay_rng=replay)
        return _grads(model)

    # reference: the full-batch loss with the dropout masks pass 1 draws (the same seed and
    # the same chunking of the RNG stream)
    torch.manual_seed(7)
    h = torch.cat([model(x[i : i + 2]) for i in range(0, 8, 2)])
    model.zero_grad()
    inbatch_softmax_loss(h, t, scale=3.0).backward()
    ref = _grads(model)
    assert _rel(run(True), ref) < 1e-12
    assert _rel(run(False), ref) > 1e-3


def test_two_input_encoder():
    class Two(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Linear(3, 4).double()

        def forward(self, x, y):
            return self.a(x) * y

    m = Two()
    gen = torch.Generator().manual_seed(5)
    x, y = torch.randn(6, 3, generator=gen, dtype=F64), torch.rand(6, 1, generator=gen, dtype=F64)
    t = twin_labels(6)
    m.zero_grad()
    inbatch_softmax_loss(m(x, y), t).backward()
    ref = _grads(m)
    m.zero_grad()
    accumulate_contrastive_grad(m, (x, y), t, micro_batch=4)
    assert _rel(_grads(m), ref) < 1e-12


def test_bad_input():
    h = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"^h\b"):
        inbatch_softmax_loss(torch.randn(4), twin_labels(4))
    with pytest.raises(TypeError, match=r"^h\b"):
        inbatch_softmax_loss(torch.ones(4, 3, dtype=torch.long), twin_labels(4))
    with pytest.raises(ValueError, match=r"^targets\b"):
        inbatch_softmax_loss(h, torch.arange(4), mask_diagonal=True)
    with pytest.raises(ValueError, match=r"^targets\b"):
        inbatch_softmax_loss(h, torch.tensor([0, 1, 2, 4]))
    with pytest.raises(ValueError, match=r"^targets\b"):
        inbatch_softmax_loss(h, torch.full((4, 4), 0.3))
    with pytest.raises(ValueError, match=r"^scale\b"):
        inbatch_softmax_loss(h, twin_labels(4), scale=0.0)
    with pytest.raises(ValueError, match=r"^k\b"):
        info_nce(h, torch.randn(4, 5))
    model = _mlp(0)
    x = torch.randn(4, 6, dtype=F64)
    with pytest.raises(ValueError, match=r"^micro_batch\b"):
        accumulate_contrastive_grad(model, x, twin_labels(4), micro_batch=0)
    with pytest.raises(ValueError, match=r"^method\b"):
        accumulate_contrastive_grad(model, x, twin_labels(4), micro_batch=2, method="fast")
    with pytest.raises(ValueError, match=r"^targets\b"):  # naive: the twin sits in another chunk
        accumulate_contrastive_grad(
            model, x, torch.tensor([2, 3, 0, 1]), micro_batch=2, method="naive"
        )
    with pytest.raises(TypeError, match=r"^encoder\b"):
        accumulate_contrastive_grad(lambda z: z, x, twin_labels(4), micro_batch=2)


def test_extreme_scale_no_nan():
    h = torch.randn(6, 4, generator=torch.Generator().manual_seed(9), dtype=torch.float32)
    h.requires_grad_(True)
    loss = inbatch_softmax_loss(h, twin_labels(6), scale=1e4, mask_diagonal=True, normalize=True)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(h.grad).all()


@requires_cuda
def test_cuda_two_pass():
    dev = torch.device("cuda")
    model = _mlp(3).to(dev)
    x = torch.randn(8, 6, dtype=F64, device=dev)
    t = twin_labels(8, device=dev)
    ref = _full_grad(model, x, t, scale=2.0)
    model.zero_grad()
    accumulate_contrastive_grad(model, x, t, micro_batch=3, scale=2.0)
    assert all(p.grad.device.type == "cuda" for p in model.parameters())
    assert _rel(_grads(model), ref) < 1e-10


def test_records_gradients_under_no_grad():
    model = _mlp(4)
    x = torch.randn(6, 6, generator=torch.Generator().manual_seed(4), dtype=F64)
    ref = _full_grad(model, x, twin_labels(6), scale=2.0)
    for method in ("two_pass", "naive"):
        model.zero_grad()
        with torch.no_grad():
            accumulate_contrastive_grad(
                model, x, twin_labels(6), micro_batch=6, scale=2.0, method=method
            )
        assert _rel(_grads(model), ref) < 1e-12


def test_gram_distillation_loss_double_sum_and_invariances():
    from kexue_lib.contrastive import gram_distillation_loss

    g = torch.Generator().manual_seed(11)
    u = torch.randn(7, 6, generator=g, dtype=F64)
    v = torch.randn(7, 3, generator=g, dtype=F64)
    ref = 0.0
    for i in range(7):
        for j in range(7):
            cu = float(u[i] @ u[j] / (u[i].norm() * u[j].norm()))
            cv = float(v[i] @ v[j] / (v[i].norm() * v[j].norm()))
            ref += (cu - cv) ** 2
    assert gram_distillation_loss(u, v).item() == pytest.approx(100 * ref / 49, rel=1e-12)
    assert (
        gram_distillation_loss(
            u, u @ torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=F64))[0]
        ).item()
        < 1e-25
    )


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), d_s=st.integers(1, 8))
def test_gram_distillation_invariant_to_rotation_and_rescaling(seed, d_s):
    from kexue_lib.contrastive import gram_distillation_loss

    g = torch.Generator().manual_seed(seed)
    u = torch.randn(6, 5, generator=g, dtype=F64)
    v = torch.randn(6, d_s, generator=g, dtype=F64)
    q = torch.linalg.qr(torch.randn(d_s, d_s, generator=g, dtype=F64))[0]
    r = torch.rand(6, 1, generator=g, dtype=F64) + 0.1
    base = gram_distillation_loss(u, v, weight=3.0)
    moved = gram_distillation_loss(u * r.flip(0), (v @ q) * r, weight=3.0)
    assert abs(base.item() - moved.item()) < 1e-12 * max(1.0, base.item())
    # the unnormalised Gram matrix is not invariant: the pitfall the loss avoids
    dots = ((u @ u.T - v @ v.T) ** 2).mean()
    dots_scaled = ((u @ u.T - (v * r) @ (v * r).T) ** 2).mean()
    assert abs(dots.item() - dots_scaled.item()) > 1e-6


def test_gram_distillation_bad_input():
    from kexue_lib.contrastive import gram_distillation_loss

    with pytest.raises(ValueError, match=r"^student\b"):
        gram_distillation_loss(torch.randn(4, 3), torch.randn(5, 3))
    with pytest.raises(ValueError, match=r"^weight\b"):
        gram_distillation_loss(torch.randn(4, 3), torch.randn(4, 3), weight=-1.0)
