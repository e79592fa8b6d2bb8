"""Encoders and pair heads: shapes, order (in)variance, padding, pair features, bad input."""

from __future__ import annotations

import pytest
import torch

from kexue_lib.models.encoders import (
    BagOfEmbeddingsEncoder,
    CrossEncoder,
    GRUEncoder,
    MLPEncoder,
    PairHead,
    concat_pair_tokens,
)


def test_bag_is_order_blind_and_ignores_padding():
    torch.manual_seed(0)
    enc = BagOfEmbeddingsEncoder(10, 4)
    x = torch.tensor([[3, 4, 5, 0, 0]])
    perm = torch.tensor([[5, 3, 4, 0, 0]])
    assert torch.allclose(enc(x), enc(perm))
    assert torch.allclose(enc(x), enc.embed.weight[[3, 4, 5]].mean(0, keepdim=True))
    assert torch.allclose(enc(x[:, :3]), enc(x))
    s = BagOfEmbeddingsEncoder(10, 4, pooling="sum")
    assert torch.allclose(s(x), s.embed.weight[[3, 4, 5]].sum(0, keepdim=True))


def test_gru_is_order_aware_and_padding_safe():
    torch.manual_seed(0)
    enc = GRUEncoder(10, 6)
    a, b = torch.tensor([[3, 4, 5]]), torch.tensor([[5, 4, 3]])
    assert not torch.allclose(enc(a), enc(b))
    assert torch.allclose(enc(torch.tensor([[3, 4, 5, 0, 0]])), enc(a), atol=1e-6)


def test_pair_head_features():
    u, v = torch.randn(3, 2, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64)
    h = PairHead(2, 2).double()
    assert torch.equal(h.pair_features(u, v), torch.cat([u, v, (u - v).abs()], -1))
    n = PairHead(2, 1, features="nsp").double()
    assert torch.equal(n.pair_features(u, v), torch.cat([u, v, u * v, (u - v).abs()], -1))
    expect = h.pair_features(u, v) @ h.linear.weight.T + h.linear.bias
    assert torch.allclose(h(u, v), expect)


def test_cross_encoder_concatenation():
    a = torch.tensor([[3, 4, 0], [5, 0, 0]])
    b = torch.tensor([[6, 0], [7, 8]])
    out = concat_pair_tokens(a, b, sep_id=1)
    assert out.tolist() == [[3, 4, 1, 6, 0, 0], [5, 1, 7, 8, 0, 0]]
    torch.manual_seed(0)
    ce = CrossEncoder(GRUEncoder(10, 4), torch.nn.Linear(4, 1), sep_id=1)
    assert ce(a, b).shape == (2, 1)
    assert MLPEncoder(3, 5, 2)(torch.randn(4, 3)).shape == (4, 2)


def test_bad_input():
    enc = BagOfEmbeddingsEncoder(10, 4)
    with pytest.raises(ValueError, match=r"^tokens\b"):
        enc(torch.tensor([[11, 2]]))
    with pytest.raises(TypeError, match=r"^tokens\b"):
        enc(torch.rand(2, 3))
    with pytest.raises(ValueError, match=r"^pooling\b"):
        BagOfEmbeddingsEncoder(10, 4, pooling="max")
    with pytest.raises(ValueError, match=r"^features\b"):
        PairHead(4, 2, features="cat")
    with pytest.raises(ValueError, match=r"^v\b"):
        PairHead(4, 2)(torch.rand(3, 4), torch.rand(2, 4))
    with pytest.raises(TypeError, match=r"^d\b"):
        GRUEncoder(10, 2.0)


def test_transformer_token_encoder_padding_and_order():
    from kexue_lib.models.encoders import TransformerTokenEncoder

    torch.manual_seed(0)
    enc = TransformerTokenEncoder(12, 8, heads=2, layers=1, max_len=6)
    a = torch.tensor([[3, 4, 5, 0, 0]])
    assert enc(a).shape == (1, 8)
    assert torch.allclose(enc(a), enc(torch.tensor([[3, 4, 5, 0, 0, 0]])), atol=1e-6)
    assert torch.allclose(enc(a), enc(torch.tensor([[3, 4, 5]])), atol=1e-6)
    assert not torch.allclose(enc(a), enc(torch.tensor([[5, 4, 3, 0, 0]])))
    with pytest.raises(ValueError, match=r"^tokens\b"):
        enc(torch.ones(1, 7, dtype=torch.long))
