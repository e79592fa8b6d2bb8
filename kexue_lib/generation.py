"""Decoding distributions: truncation rules for sampling.

So far only the two truncation rules that entropy normalisation is compared with
(kexue.fm/archives/8829): top-k and top-p (nucleus) filtering. Both take logits and return
logits with the dropped entries set to ``-inf``, so ``softmax`` of the result is the
renormalised truncated distribution. They work on ``dim`` (default the last) and are batched
over the other dimensions; dtype and device are kept.
"""

from __future__ import annotations

import math

import torch

from kexue_lib._core import check_int, check_probability, check_tensor

__all__ = ["top_k_filter", "top_p_filter"]


def _check_logits(logits) -> torch.Tensor:
    check_tensor("logits", logits, floating=True)
    if logits.dim() == 0:
        raise ValueError("logits: expected at least one dimension (the vocabulary), got a scalar")
    if bool(torch.isnan(logits).any()):
        raise ValueError("logits: expected no NaN entries")
    return logits


def top_k_filter(logits: torch.Tensor, k: int, *, dim: int = -1) -> torch.Tensor:
    """Keep the ``k`` largest logits along ``dim``, set the rest to ``-inf``.

    ``logits: (..., V, ...)`` -> same shape. ``k >= 1``; ``k >= V`` keeps everything. Ties at
    the k-th value are broken by ``torch.topk`` (exactly ``k`` entries survive).
    """
    _check_logits(logits)
    check_int("k", k, minimum=1)
    n = logits.shape[dim]
    if k >= n:
        return logits.clone()
    idx = torch.topk(logits, k, dim=dim).indices
    keep = torch.zeros_like(logits, dtype=torch.bool).scatter(dim, idx, True)
    return logits.masked_fill(~keep, -math.inf)


def top_p_filter(logits: torch.Tensor, p: float, *, dim: int = -1) -> torch.Tensor:
    """Nucleus filtering: keep the smallest set of most probable entries whose mass is >= ``p``.

    ``logits: (..., V, ...)`` -> same shape, dropped entries at ``-inf``. ``p`` in ``(0, 1]``;
    the most probable entry always survives (also for tiny ``p``), ``p = 1`` keeps the whole
    support. An entry is kept when the mass of the entries sorted before it is below ``p``.
    """
    _check_logits(logits)
    p = check_probability("p", p, open_interval=False)
    if p == 0:
        raise ValueError("p: expected a number in (0, 1], got 0")
    x = logits.movedim(dim, -1)
    srt, order = torch.sort(x, dim=-1, descending=True, stable=True)
    probs = torch.softmax(srt.to(torch.promote_types(srt.dtype, torch.float32)), dim=-1)
    before = probs.cumsum(-1) - probs  # mass of the strictly more probable entries
    drop_sorted = before >= p
    drop_sorted[..., 0] = False
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return x.masked_fill(drop, -math.inf).movedim(-1, dim)


# --- roformer-sim ---


def seq2seq_token_loss(
    logits: torch.Tensor, tokens: torch.Tensor, segment_ids: torch.Tensor
) -> torch.Tensor:
    """UniLM seq2seq loss: cross-entropy of the target segment, shifted by one, averaged.

    ``logits: (B, L, V)``, ``tokens: (B, L)``, ``segment_ids: (B, L)`` with 0 on ``[CLS] x
    [SEP]`` (and on padding) and 1 on ``y [SEP]``. Position ``t`` predicts token ``t + 1``
    wherever ``segment_ids[:, t + 1] == 1`` (the closing ``[SEP]`` included: it teaches the
    model to stop); the mean is over those target tokens of the whole batch
    (kexue.fm/archives/8454, bert4keras' ``y_true[:, 1:]``, ``y_pred[:, :-1]``).
    """
    check_tensor("logits", logits, floating=True)
    check_tensor("tokens", tokens)
    check_tensor("segment_ids", segment_ids)
    if logits.dim() != 3:
        raise ValueError(f"logits: expected shape (B, L, V), got {tuple(logits.shape)}")
    if tokens.shape != logits.shape[:2] or tokens.is_floating_point():
        raise ValueError(
            f"tokens: expected an integer tensor of shape {tuple(logits.shape[:2])}, "
            f"got {tuple(tokens.shape)} {tokens.dtype}"
        )
    if segment_ids.shape != tokens.shape or segment_ids.is_floating_point():
        raise ValueError(
            f"segment_ids: expected an integer tensor of shape {tuple(tokens.shape)}, "
            f"got {tuple(segment_ids.shape)} {segment_ids.dtype}"
        )
    if ((segment_ids != 0) & (segment_ids != 1)).any():
        raise ValueError("segment_ids: expected entries 0 (source) or 1 (target)")
    weight = segment_ids[:, 1:].to(logits.dtype)
    n_target = weight.sum()
    if n_target == 0:
        raise ValueError("segment_ids: expected at least one target token (segment 1) after t = 0")
    ce = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1), reduction="none"
    )
    return (ce * weight.reshape(-1)).sum() / n_target


__all__ += ["seq2seq_token_loss"]
