"""Token sequences with planted structure, for the position-encoding and token-mixing chapters."""

from __future__ import annotations

import torch

from kexue_lib._core import check_int

__all__ = ["copy_at_offset"]


def copy_at_offset(
    batch: int,
    length: int,
    vocab: int,
    *,
    offset: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform random tokens and the copy task "predict the token ``offset`` places back".

    Returns ``tokens: (batch, length)`` and ``target: (batch, length)`` with
    ``target[:, t] = tokens[:, t - offset]`` for ``t >= offset`` and ``-100`` (the
    ``ignore_index`` of ``F.cross_entropy``) where there is nothing to copy yet. A model can
    solve it only if it knows relative positions; the tokens are drawn with one
    ``torch.randint`` call on ``generator`` (on the CPU), then moved to ``device``.
    """
    check_int("batch", batch)
    check_int("length", length)
    check_int("vocab", vocab)
    check_int("offset", offset, minimum=0)
    if offset >= length:
        raise ValueError(f"offset: expected an int < length={length}, got {offset}")
    tokens = torch.randint(0, vocab, (batch, length), generator=generator)
    target = torch.full_like(tokens, -100)
    target[:, offset:] = tokens[:, : length - offset]
    return tokens.to(device), target.to(device)
