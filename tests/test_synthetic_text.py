"""Synthetic sentence pairs: planted structure, determinism, bad input."""

from __future__ import annotations

import pytest
import torch

from kexue_lib.synthetic.text import latent_pairs, role_swap_pairs, role_swap_vocab_size


def test_latent_pairs_structure_and_determinism():
    a = latent_pairs(500, generator=torch.Generator().manual_seed(0))
    b = latent_pairs(500, generator=torch.Generator().manual_seed(0))
    for x, z in zip(a, b):
        assert torch.equal(x, z)
    xa, xb, y, sim, kind = a
    assert xa.shape == xb.shape == (500, 32)
    assert torch.equal(y, (5 * sim.clamp_min(0)).round().long())
    # positives are closer in meaning than hard negatives, which are closer than easy ones
    means = [sim[kind == k].mean().item() for k in range(3)]
    assert means[0] > means[1] > means[2]
    yb = latent_pairs(100, graded=False, generator=torch.Generator().manual_seed(1))[2]
    kb = latent_pairs(100, graded=False, generator=torch.Generator().manual_seed(1))[4]
    assert torch.equal(yb, (kb == 0).long())


def test_role_swap_pairs_bags_equal_on_swaps():
    xa, xb, y, kind = role_swap_pairs(400, generator=torch.Generator().manual_seed(0))
    V = role_swap_vocab_size()
    assert int(xa.max()) < V and int(xb.max()) < V and int(xa.min()) >= 0
    assert torch.equal(y, (kind == 0).long())
    content_lo, content_hi = 2, 2 + 24  # entities
    for i in torch.nonzero(kind == 1).flatten().tolist()[:50]:
        ea = [t for t in xa[i].tolist() if content_lo <= t < content_hi]
        eb = [t for t in xb[i].tolist() if content_lo <= t < content_hi]
        assert ea == eb[::-1] and ea[0] != ea[1]  # roles exchanged
    # padding only at the end
    for x in (xa, xb):
        pad = x == 0
        assert not (pad[:, :-1] & ~pad[:, 1:]).any()


def test_bad_input():
    with pytest.raises(ValueError, match=r"^pos_frac\b"):
        latent_pairs(10, pos_frac=1.5)
    with pytest.raises(TypeError, match=r"^n\b"):
        latent_pairs(2.5)
    with pytest.raises(ValueError, match=r"^max_len\b"):
        role_swap_pairs(10, max_len=4)
    with pytest.raises(TypeError, match=r"^graded\b"):
        latent_pairs(10, graded=1)
