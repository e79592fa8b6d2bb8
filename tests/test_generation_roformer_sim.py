"""generation.seq2seq_token_loss and the UniLM mask it is trained with (kexue.fm/archives/8454)."""

from __future__ import annotations

import math

import pytest
import torch

from kexue_lib.attention import unilm_mask, with_key_padding
from kexue_lib.generation import seq2seq_token_loss


def _loop_loss(logits, tokens, seg):
    total, count = 0.0, 0
    for b in range(tokens.shape[0]):
        for t in range(tokens.shape[1] - 1):
            if seg[b, t + 1] == 1:
                row = logits[b, t].double()
                total += float(torch.logsumexp(row, 0) - row[tokens[b, t + 1]])
                count += 1
    return total / count


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_seq2seq_loss_matches_loop(dtype):
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 11, (3, 9), generator=g)
    seg = torch.tensor(
        [[0, 0, 0, 0, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1, 1, 0, 0], [0, 0, 0, 0, 0, 0, 1, 1, 0]]
    )
    logits = torch.randn(3, 9, 11, generator=g, dtype=dtype)
    got = seq2seq_token_loss(logits, tokens, seg)
    assert got.dtype == dtype
    assert got.item() == pytest.approx(_loop_loss(logits, tokens, seg), rel=1e-6)


def test_seq2seq_loss_ignores_source_and_padding_logits():
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, 7, (2, 6), generator=g)
    seg = torch.tensor([[0, 0, 0, 1, 1, 0], [0, 0, 1, 1, 1, 1]])
    logits = torch.randn(2, 6, 7, generator=g, dtype=torch.float64, requires_grad=True)
    seq2seq_token_loss(logits, tokens, seg).backward()
    used = torch.zeros(2, 6, dtype=torch.bool)
    used[:, :-1] = seg[:, 1:] == 1
    assert (logits.grad.abs().sum(-1) > 0).eq(used).all()
    # uniform logits: the loss is log V
    flat = torch.zeros(2, 6, 7)
    assert seq2seq_token_loss(flat, tokens, seg).item() == pytest.approx(math.log(7), rel=1e-6)


def test_unilm_mask_brute_force_and_padding_pitfall():
    seg = torch.tensor([[0, 0, 1, 1, 1, 0, 0]])
    real = torch.tensor([[True] * 5 + [False] * 2])
    m = unilm_mask(seg)[0]
    c = [0, 0, 1, 2, 3, 3, 3]
    for i in range(7):
        for j in range(7):
            assert bool(m[i, j]) == (c[j] <= c[i])
    assert m[4, 5] and m[4, 6]  # without the key mask the last target sees the pads
    mp = with_key_padding(unilm_mask(seg), real)[0]
    assert not mp[:5, 5:].any() and mp[:5, :5].equal(m[:5, :5])


def test_bad_input():
    logits = torch.randn(1, 4, 5)
    tokens = torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(ValueError, match=r"^segment_ids\b"):
        seq2seq_token_loss(logits, tokens, torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"^segment_ids\b"):
        seq2seq_token_loss(logits, tokens, torch.tensor([[0, 2, 1, 1]]))
    with pytest.raises(ValueError, match=r"^tokens\b"):
        seq2seq_token_loss(logits, tokens[:, :3], torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"^logits\b"):
        seq2seq_token_loss(logits[0], tokens, tokens)
    with pytest.raises(TypeError, match=r"^logits\b"):
        seq2seq_token_loss(tokens[..., None].expand(1, 4, 5), tokens, tokens)
