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


# --- global-pointer ---


def nested_span_toy(
    batch: int,
    length: int,
    *,
    n_filler: int = 20,
    n_name: int = 20,
    n_suffix: int = 4,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token sequences with nested entity spans of two types (global-pointer chapter).

    Token ids: fillers ``1..n_filler``, name words next ``n_name`` ids, suffix words (think
    "University", "Bank") the last ``n_suffix`` ids; 0 is never used (free for padding).
    A sequence is a left-to-right mix of filler runs (1–2 tokens), NAME entities (1–3 name
    words) and ORG entities (a NAME of 1–2 name words followed by 1–2 suffix words); every
    entity is followed by a filler, so the gold spans are a deterministic function of the
    tokens. Type 0 = NAME, type 1 = ORG; the NAME inside an ORG is a gold NAME as well, so
    ORG spans contain NAME spans (nesting). Returns ``tokens: (batch, length)`` long and
    ``labels: (batch, 2, length, length)`` float with ``labels[b, t, i, j] = 1`` for a gold
    span of type ``t`` from ``i`` to ``j`` inclusive. All draws come from ``generator`` on
    the CPU; results are moved to ``device``.
    """
    check_int("batch", batch)
    check_int("length", length, minimum=4)
    check_int("n_filler", n_filler)
    check_int("n_name", n_name)
    check_int("n_suffix", n_suffix)
    name0, suf0 = 1 + n_filler, 1 + n_filler + n_name
    # all randomness in bulk: kind of segment, lengths and token ids
    m = 2 * length
    kind = torch.multinomial(
        torch.tensor([0.35, 0.35, 0.30]), batch * m, replacement=True, generator=generator
    ).view(batch, m)
    lens = torch.randint(1, 4, (batch, m, 2), generator=generator)
    fill = torch.randint(1, 1 + n_filler, (batch, length), generator=generator)
    names = torch.randint(name0, suf0, (batch, length), generator=generator)
    sufs = torch.randint(suf0, suf0 + n_suffix, (batch, length), generator=generator)
    tokens = fill.clone()
    labels = torch.zeros(batch, 2, length, length)
    kind_l, lens_l = kind.tolist(), lens.tolist()
    for b in range(batch):
        t = 0
        for seg in range(m):
            if t >= length:
                break
            k, (a, c) = kind_l[b][seg], lens_l[b][seg]
            if k == 0:  # filler run of 1-2 tokens (already in place)
                t += 1 + (a > 2)
                continue
            n_nm = a if k == 1 else 1 + (a > 1)  # NAME: 1-3 words; inside an ORG: 1-2
            n_sf = 0 if k == 1 else 1 + (c > 1)
            end = t + n_nm + n_sf  # one past the entity; a filler must follow
            if end >= length:
                break
            tokens[b, t : t + n_nm] = names[b, t : t + n_nm]
            labels[b, 0, t, t + n_nm - 1] = 1
            if n_sf:
                tokens[b, t + n_nm : end] = sufs[b, t + n_nm : end]
                labels[b, 1, t, end - 1] = 1
            t = end + 1
    return tokens.to(device), labels.to(device)


__all__ += ["nested_span_toy"]
