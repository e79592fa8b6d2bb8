"""Small sentence encoders and pair heads: bi-encoders (feature-based) and cross-encoders.

A bi-encoder maps each text to a vector on its own and scores a pair by cosine (or by a
shallow head on the two vectors); a cross-encoder reads the two texts together.
Used by book/embeddings/cosent.ipynb and book/embeddings/cosent-interaction.ipynb.
Token tensors are ``(B, n)`` long with id 0 = padding.
"""

from __future__ import annotations

import torch
from torch import nn

from kexue_lib._core import check_choice, check_int, check_probability, check_tensor

__all__ = [
    "BagOfEmbeddingsEncoder",
    "CrossEncoder",
    "GRUEncoder",
    "MLPEncoder",
    "PairHead",
    "concat_pair_tokens",
]


# --- cosent, cosent-interaction ---


def _check_tokens(name: str, tokens: torch.Tensor, vocab: int) -> None:
    check_tensor(name, tokens)
    if tokens.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"{name}: expected integer token ids, got dtype {tokens.dtype}")
    if tokens.dim() != 2:
        raise ValueError(f"{name}: expected shape (B, n), got {tuple(tokens.shape)}")
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= vocab):
        raise ValueError(
            f"{name}: expected ids in [0, {vocab}), got range "
            f"[{int(tokens.min())}, {int(tokens.max())}]"
        )


class MLPEncoder(nn.Module):
    """``x: (..., d_in) -> (..., d_out)``: Linear, tanh, Linear (a stand-in for a sentence encoder)."""

    def __init__(self, d_in: int, d_hidden: int, d_out: int) -> None:
        super().__init__()
        for name, v in (("d_in", d_in), ("d_hidden", d_hidden), ("d_out", d_out)):
            check_int(name, v)
        self.net = nn.Sequential(nn.Linear(d_in, d_hidden), nn.Tanh(), nn.Linear(d_hidden, d_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor("x", x, floating=True)
        return self.net(x)


class BagOfEmbeddingsEncoder(nn.Module):
    """Order-blind encoder: pooled token embeddings, ``tokens: (B, n) -> (B, d)``.

    ``pooling="mean"`` averages the non-padding tokens (id 0 is padding), ``"sum"`` adds them.
    Any permutation of a sentence's tokens gives the same vector.
    """

    def __init__(self, vocab: int, d: int, *, dropout: float = 0.0, pooling: str = "mean") -> None:
        super().__init__()
        check_int("vocab", vocab, minimum=2)
        check_int("d", d)
        if dropout:
            check_probability("dropout", dropout)
        self.pooling = check_choice("pooling", pooling, ("mean", "sum"))
        self.vocab = vocab
        self.embed = nn.Embedding(vocab, d, padding_idx=0)
        self.dropout = nn.Dropout(dropout)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        _check_tokens("tokens", tokens, self.vocab)
        keep = (tokens != 0).unsqueeze(-1)
        h = self.dropout(self.embed(tokens)) * keep
        total = h.sum(1)
        if self.pooling == "sum":
            return total
        return total / keep.sum(1).clamp_min(1).to(total.dtype)


class GRUEncoder(nn.Module):
    """Order-aware encoder: embeddings, one GRU layer, mean of the states over non-padding tokens.

    ``tokens: (B, n) -> (B, d)``; padding (id 0) must come after the tokens of each row.
    """

    def __init__(self, vocab: int, d: int, *, d_embed: int | None = None) -> None:
        super().__init__()
        check_int("vocab", vocab, minimum=2)
        check_int("d", d)
        d_embed = d if d_embed is None else check_int("d_embed", d_embed)
        self.vocab = vocab
        self.embed = nn.Embedding(vocab, d_embed, padding_idx=0)
        self.gru = nn.GRU(d_embed, d, batch_first=True)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        _check_tokens("tokens", tokens, self.vocab)
        h, _ = self.gru(self.embed(tokens))
        keep = (tokens != 0).unsqueeze(-1).to(h.dtype)
        return (h * keep).sum(1) / keep.sum(1).clamp_min(1)


class PairHead(nn.Module):
    """Linear classifier on pair features of two sentence vectors ``u, v: (B, d) -> (B, n_out)``.

    ``features="sbert"``: ``[u; v; |u - v|]`` (Sentence-BERT / InferSent, 3d inputs);
    ``features="nsp"``: ``[u; v; u * v; |u - v|]`` (4d inputs).
    """

    def __init__(self, d: int, n_out: int, *, features: str = "sbert") -> None:
        super().__init__()
        check_int("d", d)
        check_int("n_out", n_out)
        self.features = check_choice("features", features, ("sbert", "nsp"))
        self.d = d
        k = 3 if features == "sbert" else 4
        self.linear = nn.Linear(k * d, n_out)

    def pair_features(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        check_tensor("u", u, floating=True)
        check_tensor("v", v, floating=True)
        if u.dim() != 2 or u.shape[-1] != self.d:
            raise ValueError(f"u: expected shape (B, {self.d}), got {tuple(u.shape)}")
        if v.shape != u.shape:
            raise ValueError(f"v: expected shape {tuple(u.shape)} like u, got {tuple(v.shape)}")
        parts = [u, v, (u - v).abs()]
        if self.features == "nsp":
            parts.insert(2, u * v)
        return torch.cat(parts, -1)

    def forward(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.linear(self.pair_features(u, v))


def concat_pair_tokens(a: torch.Tensor, b: torch.Tensor, *, sep_id: int) -> torch.Tensor:
    """Cross-encoder input ``[a; SEP; b]`` with padding moved to the end: ``(B, na + 1 + nb)``."""
    check_tensor("a", a)
    check_tensor("b", b)
    if a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[0]:
        raise ValueError(
            f"b: expected (B, n) token tensors with the same B as a, got {tuple(a.shape)} "
            f"and {tuple(b.shape)}"
        )
    check_int("sep_id", sep_id)
    sep = torch.full((a.shape[0], 1), sep_id, dtype=a.dtype, device=a.device)
    x = torch.cat([a, sep, b], 1)
    # stable sort: non-padding tokens first, in their order
    order = torch.argsort((x == 0).to(torch.int8), dim=1, stable=True)
    return x.gather(1, order)


class CrossEncoder(nn.Module):
    """Interaction model: ``encoder([a; SEP; b])`` then ``head``: ``(B, na), (B, nb) -> (B, n_out)``."""

    def __init__(self, encoder: nn.Module, head: nn.Module, *, sep_id: int) -> None:
        super().__init__()
        if not isinstance(encoder, nn.Module) or not isinstance(head, nn.Module):
            raise TypeError("encoder: expected encoder and head to be torch.nn.Module instances")
        self.encoder, self.head = encoder, head
        self.sep_id = check_int("sep_id", sep_id)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(concat_pair_tokens(a, b, sep_id=self.sep_id)))


class TransformerTokenEncoder(nn.Module):
    """Tiny Transformer over tokens, mean-pooled over non-padding positions: ``(B, n) -> (B, d)``.

    Padding keys are masked out of attention. Used as the bi-encoder and, on ``[a; SEP; b]``,
    as the cross-encoder of book/embeddings/cosent-interaction.ipynb (the same architecture on
    both sides, so the comparison is about interaction only).
    """

    def __init__(
        self, vocab: int, d: int, *, heads: int = 2, layers: int = 1, max_len: int = 16
    ) -> None:
        super().__init__()
        from kexue_lib.models.transformer import TinyTransformer

        check_int("vocab", vocab, minimum=2)
        check_int("d", d)
        self.vocab, self.max_len = vocab, check_int("max_len", max_len)
        self.body = TinyTransformer(vocab, d, heads, layers, max_len=max_len, head="none")

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        _check_tokens("tokens", tokens, self.vocab)
        if tokens.shape[1] > self.max_len:
            raise ValueError(
                f"tokens: expected at most max_len = {self.max_len} positions, got {tokens.shape[1]}"
            )
        keep = tokens != 0
        mask = keep[:, None, :].expand(-1, tokens.shape[1], -1)
        h = self.body(tokens, attn_mask=mask)
        w = keep.unsqueeze(-1).to(h.dtype)
        return (h * w).sum(1) / w.sum(1).clamp_min(1)


__all__ += ["TransformerTokenEncoder"]
