"""synthetic.paraphrase: every sampled sentence parses back to its meaning; the counts are exact."""

from __future__ import annotations

import itertools

import pytest
import torch

from kexue_lib.synthetic.paraphrase import ComparisonParaphrases

G = ComparisonParaphrases()


def test_sample_parse_roundtrip_and_variety():
    gen = torch.Generator().manual_seed(0)
    meanings = torch.arange(G.n_meanings).repeat(40)
    toks = G.sample(meanings, generator=gen)
    assert toks.shape == (len(meanings), 8)
    assert G.parse(toks).equal(meanings)
    # enough draws per meaning to see most of its 48 surface forms
    forms = {tuple(r) for r in toks[meanings == 7].tolist()}
    assert 20 <= len(forms) <= G.n_surface_forms() == 48


def test_enumeration_of_all_forms_parses():
    # brute force: every template x order x synonym choice of one meaning parses back to it
    m = G.meaning(3, 2)
    a, b = G.pairs[3]
    seen = set()
    for _ in range(2000):
        seen.add(
            tuple(
                G.sample(torch.tensor([m]), generator=torch.Generator().manual_seed(_))[0].tolist()
            )
        )
    assert len(seen) == 48
    assert G.n_meanings == 180


def test_parse_rejects_non_sentences():
    gen = torch.Generator().manual_seed(1)
    toks = G.sample(torch.tensor([5, 6]), generator=gen)
    bad = toks.clone()
    bad[0, 0] = G.mask_id  # broken function word / slot
    same_city = toks[1].clone()
    cities = [i for i, w in enumerate(G.vocab) if w in ("canton", "guangzhou")]
    slots = [
        j
        for j in range(8)
        if G.vocab[int(same_city[j])] not in ("which", "is", ",", "or", "?", "of", "and")
        and G.vocab[int(same_city[j])]
        not in ("better", "nicer", "cheaper", "affordable", "bigger", "larger", "safer", "securer")
    ]
    for j, c in zip(slots, itertools.cycle(cities)):
        same_city[j] = c
    out = G.parse(torch.stack([bad[0], same_city]))
    assert out.tolist() == [-1, -1]
    assert G.decode(toks[:1])[0].endswith("?")


def test_bad_input():
    with pytest.raises(ValueError, match=r"^meanings\b"):
        G.sample(torch.tensor([180]), generator=torch.Generator())
    with pytest.raises(ValueError, match=r"^tokens\b"):
        G.parse(torch.zeros(2, 7, dtype=torch.long))


def test_n_cities():
    small = ComparisonParaphrases(3)
    assert small.n_meanings == 3 * 4 and small.vocab_size == 4 + 6 + 8 + 7
    toks = small.sample(torch.arange(12), generator=torch.Generator().manual_seed(2))
    assert small.parse(toks).equal(torch.arange(12))
    with pytest.raises(ValueError, match=r"^n_cities\b"):
        ComparisonParaphrases(11)
    with pytest.raises(ValueError, match=r"^n_cities\b"):
        ComparisonParaphrases(1)
