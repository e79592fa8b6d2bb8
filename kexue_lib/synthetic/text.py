"""Synthetic sentence pairs with planted similarity, for the CoSENT chapters.

``latent_pairs``: "sentences" as observed vectors generated from a latent meaning plus a
shared lexical nuisance, with graded labels (an STS-B stand-in). ``role_swap_pairs``: token
sentences "subject verb object" with paraphrases, role-swapped adversarial negatives (a
PAWS stand-in) and unrelated negatives. All randomness through ``generator``.
"""

from __future__ import annotations

import math

import torch

from kexue_lib._core import check_int, check_positive, check_probability

__all__ = ["PAIR_KINDS", "latent_pairs", "role_swap_pairs", "role_swap_vocab_size"]


# --- cosent, cosent-interaction ---

#: names of the ``kind`` codes returned by both generators
PAIR_KINDS = ("positive", "hard negative", "easy negative")


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def latent_pairs(
    n: int,
    *,
    d_latent: int = 8,
    d_obs: int = 32,
    pos_frac: float = 0.4,
    hard_frac: float = 0.5,
    pos_noise: float = 0.35,
    hard_noise: float = 0.8,
    obs_noise: float = 0.5,
    nuisance_scale: float = 1.5,
    graded: bool = True,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pairs of observed vectors with a planted meaning similarity.

    Meaning ``z`` uniform on the unit sphere of ``R^d_latent``, lexical nuisance ``l ~ N(0, I)``;
    an observation is ``x = z P + nuisance_scale * l Q + obs_noise * eps`` with fixed random
    ``P, Q: (d_latent, d_obs)`` (entries ``N(0, 1)``, drawn once per call). Kinds: positives
    (``z_b = unit(z_a + pos_noise xi / sqrt(d_latent))``, shared ``l``), hard negatives (same
    with ``hard_noise``: similar meaning and the same words, like annotated negatives), easy
    negatives (independent ``z, l``). ``pos_frac`` of the pairs are positives, ``hard_frac`` of
    the rest are hard negatives. Returns ``(xa, xb, y, true_sim, kind)``: ``xa, xb: (n,
    d_obs)``, ``true_sim = <z_a, z_b>``, ``y = round(5 max(0, true_sim))`` (``graded``) or 1 for
    positives / 0 for negatives, ``kind`` in {0, 1, 2} (see ``PAIR_KINDS``). Draw train and test
    in one call and split them, so they share ``P`` and ``Q``.
    """
    check_int("n", n)
    check_int("d_latent", d_latent, minimum=2)
    check_int("d_obs", d_obs)
    check_probability("pos_frac", pos_frac, open_interval=False)
    check_probability("hard_frac", hard_frac, open_interval=False)
    for name, v in (
        ("pos_noise", pos_noise),
        ("hard_noise", hard_noise),
        ("obs_noise", obs_noise),
        ("nuisance_scale", nuisance_scale),
    ):
        check_positive(name, v, strict=False)
    if not isinstance(graded, bool):
        raise TypeError(f"graded: expected a bool, got {type(graded).__name__}")
    g = generator

    def randn(*shape):
        return torch.randn(*shape, generator=g)

    P, Q = randn(d_latent, d_obs), randn(d_latent, d_obs)
    u = torch.rand(n, generator=g)
    kind = torch.full((n,), 2, dtype=torch.long)
    kind[u < pos_frac] = 0
    hard = (u >= pos_frac) & (torch.rand(n, generator=g) < hard_frac)
    kind[hard] = 1
    za, la = _unit(randn(n, d_latent)), randn(n, d_latent)
    noise = torch.where(kind == 0, pos_noise, hard_noise).unsqueeze(-1) / math.sqrt(d_latent)
    zb_near = _unit(za + noise * randn(n, d_latent))
    zb_far, lb_far = _unit(randn(n, d_latent)), randn(n, d_latent)
    easy = (kind == 2).unsqueeze(-1)
    zb = torch.where(easy, zb_far, zb_near)
    lb = torch.where(easy, lb_far, la)
    xa = za @ P + nuisance_scale * la @ Q + obs_noise * randn(n, d_obs)
    xb = zb @ P + nuisance_scale * lb @ Q + obs_noise * randn(n, d_obs)
    true_sim = (za * zb).sum(-1)
    y = (5 * true_sim.clamp_min(0)).round().long() if graded else (kind == 0).long()
    return xa, xb, y, true_sim, kind


def role_swap_vocab_size(n_entities: int = 24, n_verbs: int = 8, n_fillers: int = 8) -> int:
    """Vocabulary size of ``role_swap_pairs``: pad 0, SEP 1, entities, verbs, verb synonyms, fillers."""
    return 2 + n_entities + 2 * n_verbs + n_fillers


def role_swap_pairs(
    n: int,
    *,
    n_entities: int = 24,
    n_verbs: int = 8,
    n_fillers: int = 8,
    pos_frac: float = 0.5,
    swap_frac: float = 0.5,
    max_len: int = 6,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token sentence pairs ``[fillers] subject verb object [fillers]`` for matching.

    Kinds (codes of ``PAIR_KINDS``): 0 paraphrase (same roles; the verb may become its
    synonym, fillers redrawn; label 1), 1 role swap (subject and object exchanged, otherwise
    like a paraphrase: the same bag of content words, label 0), 2 unrelated sentence (label 0).
    ``pos_frac`` of the pairs are paraphrases, ``swap_frac`` of the rest are swaps. Each
    sentence has 0-1 leading and 0-2 trailing fillers; padding (id 0) at the end, id 1 is SEP
    (kept free for cross-encoders). Returns ``(xa, xb, y, kind)``: ``xa, xb: (n, max_len)``.
    """
    check_int("n", n)
    check_int("n_entities", n_entities, minimum=2)
    check_int("n_verbs", n_verbs)
    check_int("n_fillers", n_fillers)
    check_int("max_len", max_len, minimum=6)
    check_probability("pos_frac", pos_frac, open_interval=False)
    check_probability("swap_frac", swap_frac, open_interval=False)
    g = generator
    ent0, verb0 = 2, 2 + n_entities
    syn0, fill0 = verb0 + n_verbs, verb0 + 2 * n_verbs

    def ints(high, size):
        return torch.randint(high, size, generator=g)

    def sentences(s, v, o):
        m = s.shape[0]
        verb = torch.where(torch.rand(m, generator=g) < 0.5, verb0 + v, syn0 + v)
        lead, trail = ints(2, (m,)), ints(3, (m,))
        fill = fill0 + ints(n_fillers, (m, 3))
        out = torch.zeros(m, max_len, dtype=torch.long)
        pos = torch.arange(max_len)
        core = torch.stack([ent0 + s, verb, ent0 + o], 1)
        for j in range(3):  # core words at positions lead + j
            out.scatter_(1, (lead + j).unsqueeze(1), core[:, j : j + 1])
        out = torch.where((pos == 0) & (lead == 1).unsqueeze(1), fill[:, :1], out)
        for j in range(2):  # trailing fillers at lead + 3 + j while j < trail
            at = (lead + 3 + j).unsqueeze(1)
            use = (j < trail).unsqueeze(1) & (pos == at)
            out = torch.where(use, fill[:, j + 1 : j + 2], out)
        return out

    s = ints(n_entities, (n,))
    o = (s + 1 + ints(n_entities - 1, (n,))) % n_entities  # o != s
    v = ints(n_verbs, (n,))
    u = torch.rand(n, generator=g)
    kind = torch.full((n,), 2, dtype=torch.long)
    kind[u < pos_frac] = 0
    kind[(u >= pos_frac) & (torch.rand(n, generator=g) < swap_frac)] = 1
    s2 = ints(n_entities, (n,))
    o2 = (s2 + 1 + ints(n_entities - 1, (n,))) % n_entities
    v2 = ints(n_verbs, (n,))
    bs = torch.where(kind == 0, s, torch.where(kind == 1, o, s2))
    bo = torch.where(kind == 0, o, torch.where(kind == 1, s, o2))
    bv = torch.where(kind == 2, v2, v)
    xa, xb = sentences(s, v, o), sentences(bs, bv, bo)
    return xa, xb, (kind == 0).long(), kind
