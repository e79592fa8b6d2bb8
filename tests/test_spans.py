"""GlobalPointer span scores, loss, decoding; Viterbi and BIO conversions (global-pointer chapter).

References: an explicit loop over (sample, type, start, end) with explicit RoPE matrices; the
multi-label CE per (sample, type) computed row by row; brute-force enumeration of tag paths.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kexue_lib.ranking_losses import multilabel_categorical_crossentropy
from kexue_lib.rope import rope_matrix
from kexue_lib.spans import (
    GlobalPointer,
    bio_to_spans,
    decode_spans,
    global_pointer_f1,
    global_pointer_loss,
    span_f1,
    span_mask,
    spans_to_bio,
    viterbi_decode,
)
from kexue_lib.synthetic.sequences import nested_span_toy
from tests.conftest import requires_cuda


def _brute_scores(gp, h, mask):
    W, bias = gp.dense.weight.detach().double(), gp.dense.bias.detach().double()
    H, d = gp.heads, gp.head_size
    B, n, _ = h.shape
    out = torch.full((B, H, n, n), float("-inf"), dtype=torch.float64)
    for b in range(B):
        for a in range(H):
            Wq, bq = W[2 * a * d : (2 * a + 1) * d], bias[2 * a * d : (2 * a + 1) * d]
            Wk, bk = W[(2 * a + 1) * d : (2 * a + 2) * d], bias[(2 * a + 1) * d : (2 * a + 2) * d]
            for i in range(n):
                for j in range(i, n):
                    if not (mask[b, i] and mask[b, j]):
                        continue
                    q = Wq @ h[b, i].double() + bq
                    k = Wk @ h[b, j].double() + bk
                    if gp.rope:
                        q, k = rope_matrix(i, d) @ q, rope_matrix(j, d) @ k
                    s = q @ k
                    out[b, a, i, j] = s / math.sqrt(d) if gp.scale else s
    return out


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("rope, scale", [(True, True), (False, True), (True, False)])
def test_scores_match_brute_force_loop(dtype, rope, scale):
    torch.manual_seed(0)
    gp = GlobalPointer(5, 2, 4, rope=rope, scale=scale).to(dtype)
    g = torch.Generator().manual_seed(1)
    h = torch.randn(2, 6, 5, generator=g, dtype=dtype)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 4:] = False  # ragged
    got = gp(h, mask)
    assert got.shape == (2, 2, 6, 6) and got.dtype == dtype
    want = _brute_scores(gp, h, mask)
    fin = torch.isfinite(want)
    assert torch.equal(torch.isfinite(got), fin) and (got[~fin] == float("-inf")).all()
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    torch.testing.assert_close(got[fin].double(), want[fin], rtol=tol, atol=tol)


def test_rope_scores_depend_on_offset_only_and_shift_invariant():
    torch.manual_seed(2)
    gp = GlobalPointer(4, 1, 8).double()
    h = torch.randn(1, 1, 4, dtype=torch.float64).expand(1, 10, 4)  # q_i = q, k_j = k
    s = gp(h)[0, 0]
    for i in range(9):
        for j in range(i, 9):
            torch.testing.assert_close(s[i, j], s[i + 1, j + 1])
    no = GlobalPointer(4, 1, 8, rope=False).double()
    s0 = no(h)[0, 0]
    upper = torch.ones(10, 10, dtype=torch.bool).triu()
    assert s0[upper].std() < 1e-12  # without RoPE every span of a constant input looks alike
    assert s[upper].std() > 1e-3


def test_half_precision_fill_and_no_nan():
    gp = GlobalPointer(4, 1, 4).to(torch.bfloat16)
    s = gp(torch.randn(1, 3, 4, dtype=torch.bfloat16))
    assert s[0, 0, 1, 0] == torch.finfo(torch.bfloat16).min
    lab = torch.zeros_like(s)
    lab[0, 0, 0, 1] = 1
    assert torch.isfinite(global_pointer_loss(s, lab))


def test_loss_is_per_type_multilabel_ce():
    g = torch.Generator().manual_seed(3)
    gp = GlobalPointer(3, 2, 4)
    torch.manual_seed(3)
    h = torch.randn(2, 5, 3, generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    s = gp(h, mask).detach().double()
    lab = torch.zeros_like(s)
    lab[0, 0, 1, 3] = lab[0, 1, 0, 4] = lab[1, 1, 0, 2] = lab[1, 0, 1, 1] = 1
    rows = []
    for b in range(2):
        for t in range(2):
            valid = torch.isfinite(s[b, t])
            rows.append(
                multilabel_categorical_crossentropy(s[b, t][valid][None], lab[b, t][valid][None])[0]
            )
    want = torch.stack(rows).view(2, 2)
    torch.testing.assert_close(global_pointer_loss(s, lab, reduction="none"), want)
    torch.testing.assert_close(global_pointer_loss(s, lab), want.mean())
    # flattening types together ([B, heads*n*n]) is a different loss
    mixed = multilabel_categorical_crossentropy(s.reshape(2, -1), lab.reshape(2, -1)).mean()
    assert abs(float(mixed) - float(want.mean())) > 1e-3
    bad = lab.clone()
    bad[0, 0, 3, 1] = 1  # below the diagonal
    with pytest.raises(ValueError, match=r"^labels\b"):
        global_pointer_loss(s, bad)


def test_decoding_recovers_nested_spans_exactly():
    tokens, labels = nested_span_toy(64, 24, generator=torch.Generator().manual_seed(4))
    scores = torch.where(labels > 0, 5.0, -5.0)  # a perfect scorer
    pred = decode_spans(scores)
    gold = [{(t, i, j) for t, i, j in torch.nonzero(labels[b]).tolist()} for b in range(64)]
    assert pred == gold
    nested = sum(
        1
        for g in gold
        for (t, i, j) in g
        for (u, k, l) in g
        if (t, i, j) != (u, k, l) and i <= k <= l <= j
    )
    assert nested > 20
    assert span_f1(pred, gold) == 1.0 and float(global_pointer_f1(scores, labels)) == 1.0


def test_f1_against_set_arithmetic():
    pred = [{(0, 1, 2), (1, 0, 3)}, {(0, 0, 0)}]
    gold = [{(0, 1, 2)}, {(0, 0, 0), (0, 2, 3)}]
    assert span_f1(pred, gold) == pytest.approx(2 * 2 / (3 + 3))
    scores = torch.full((2, 2, 4, 4), -1.0)
    labels = torch.zeros(2, 2, 4, 4)
    for b, s in enumerate(pred):
        for t, i, j in s:
            scores[b, t, i, j] = 1.0
    for b, s in enumerate(gold):
        for t, i, j in s:
            labels[b, t, i, j] = 1.0
    assert float(global_pointer_f1(scores, labels)) == pytest.approx(span_f1(pred, gold))


@given(st.integers(1, 5), st.integers(2, 3), st.integers(0, 10_000))
@settings(max_examples=30, deadline=None)
def test_viterbi_matches_brute_force(n, T, seed):
    g = torch.Generator().manual_seed(seed)
    em = torch.randn(2, n, T, generator=g, dtype=torch.float64)
    tr = torch.randn(T, T, generator=g, dtype=torch.float64)
    got = viterbi_decode(em, tr)
    for b in range(2):
        best = max(
            itertools.product(range(T), repeat=n),
            key=lambda p: (
                sum(em[b, t, p[t]].item() for t in range(n))
                + sum(tr[p[t - 1], p[t]].item() for t in range(1, n))
            ),
        )
        assert tuple(got[b].tolist()) == best


def test_bio_cannot_hold_nested_spans():
    gold = {(1, 0, 3), (0, 0, 1), (0, 5, 6)}
    tags, lost = spans_to_bio(gold, 8, 2, order="outer")
    assert lost == 1 and bio_to_spans(tags) == {(1, 0, 3), (0, 5, 6)}
    tags, lost = spans_to_bio(gold, 8, 2, order="inner")
    assert lost == 1 and bio_to_spans(tags) == {(0, 0, 1), (0, 5, 6)}
    flat = {(0, 0, 1), (1, 3, 5)}
    assert bio_to_spans(spans_to_bio(flat, 7, 2)[0]) == flat


def test_span_mask():
    m = span_mask(torch.tensor([[True, True, False]]))
    want = torch.tensor([[1, 1, 0], [0, 1, 0], [0, 0, 0]], dtype=torch.bool)
    assert torch.equal(m[0, 0], want)


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: GlobalPointer(4, 1, 3), ValueError, r"^head_size\b"),
        (lambda: GlobalPointer(0, 1, 4), ValueError, r"^d_in\b"),
        (lambda: GlobalPointer(4, 1, 4)(torch.randn(1, 3, 5)), ValueError, r"^h\b"),
        (
            lambda: GlobalPointer(4, 1, 4)(
                torch.randn(1, 3, 4), torch.ones(1, 4, dtype=torch.bool)
            ),
            ValueError,
            r"^mask\b",
        ),
        (
            lambda: global_pointer_loss(torch.randn(1, 1, 3, 3), torch.zeros(1, 1, 3, 4)),
            ValueError,
            r"^labels\b",
        ),
        (lambda: decode_spans(torch.randn(3, 3)), ValueError, r"^scores\b"),
        (lambda: decode_spans(torch.randn(1, 1, 3, 3), threshold="0"), TypeError, r"^threshold\b"),
        (lambda: span_f1([set()], []), ValueError, r"^gold\b"),
        (
            lambda: viterbi_decode(torch.randn(1, 3, 2), torch.randn(3, 3)),
            ValueError,
            r"^transitions\b",
        ),
        (lambda: spans_to_bio({(0, 2, 1)}, 4, 1), ValueError, r"^spans\b"),
        (lambda: spans_to_bio(set(), 4, 1, order="middle"), ValueError, r"^order\b"),
    ],
)
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@requires_cuda
def test_cuda():
    gp = GlobalPointer(4, 2, 4).cuda()
    s = gp(torch.randn(2, 5, 4, device="cuda"))
    assert s.device.type == "cuda"
    assert global_pointer_loss(s, torch.zeros_like(s)).device.type == "cuda"


@given(st.integers(1, 5), st.integers(3, 8), st.integers(0, 10_000))
@settings(max_examples=25, deadline=None)
def test_rope_scores_are_shift_invariant(shift, n, seed):
    """(R_i q)^T (R_j k) = q^T R_{j-i} k: dropping the first `shift` tokens moves every span
    score by (-shift, -shift) and changes nothing else."""
    torch.manual_seed(seed)
    gp = GlobalPointer(3, 2, 4).double()
    h = torch.randn(1, n + shift, 3, dtype=torch.float64)
    full, cut = gp(h)[0], gp(h[:, shift:])[0]
    torch.testing.assert_close(cut, full[:, shift:, shift:], rtol=1e-10, atol=1e-10)
