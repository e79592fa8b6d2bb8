"""synthetic.sequences.nested_span_toy: gold spans re-derived from the tokens by a parser."""

from __future__ import annotations

import pytest
import torch

from kexue_lib.synthetic.sequences import nested_span_toy


def _parse(tokens, n_filler=20, n_name=20):
    name0, suf0 = 1 + n_filler, 1 + n_filler + n_name
    kind = ["F" if t < name0 else "N" if t < suf0 else "S" for t in tokens]
    spans, i = set(), 0
    while i < len(kind):
        if kind[i] != "N":
            i += 1
            continue
        j = i
        while j + 1 < len(kind) and kind[j + 1] == "N":
            j += 1
        spans.add((0, i, j))
        k = j
        while k + 1 < len(kind) and kind[k + 1] == "S":
            k += 1
        if k > j:
            spans.add((1, i, k))
        i = k + 1
    return spans


def test_labels_are_a_function_of_the_tokens_and_nested():
    tokens, labels = nested_span_toy(200, 30, generator=torch.Generator().manual_seed(0))
    assert tokens.shape == (200, 30) and labels.shape == (200, 2, 30, 30)
    assert int(tokens.min()) >= 1 and int(tokens.max()) <= 44
    n_org = 0
    for b in range(200):
        gold = {tuple(x) for x in torch.nonzero(labels[b]).tolist()}
        assert gold == _parse(tokens[b].tolist())
        for t, i, j in gold:
            if t == 1:
                n_org += 1
                assert any(u == 0 and k == i and l < j for u, k, l in gold)  # nested NAME
    assert n_org > 200


def test_seeded():
    a = nested_span_toy(5, 12, generator=torch.Generator().manual_seed(1))
    b = nested_span_toy(5, 12, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(batch=0), ValueError, r"^batch\b"),
        (dict(length=3), ValueError, r"^length\b"),
        (dict(n_name=1.0), TypeError, r"^n_name\b"),
    ],
)
def test_bad_input(kwargs, exc, match):
    args = dict(batch=2, length=10) | kwargs
    with pytest.raises(exc, match=match):
        nested_span_toy(args.pop("batch"), args.pop("length"), **args)
