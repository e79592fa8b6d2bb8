"""synthetic.sequences.copy_at_offset against torch.roll and a loop."""

from __future__ import annotations

import pytest
import torch

from kexue_lib import make_generator
from kexue_lib.synthetic.sequences import copy_at_offset


@pytest.mark.parametrize("offset", [0, 1, 3, 7])
def test_target_is_the_token_offset_places_back(offset):
    tokens, target = copy_at_offset(5, 8, 11, offset=offset, generator=make_generator(0))
    assert tokens.shape == target.shape == (5, 8) and tokens.dtype == torch.long
    assert int(tokens.min()) >= 0 and int(tokens.max()) < 11
    rolled = torch.roll(tokens, offset, dims=1)
    for t in range(8):  # loop reference
        want = rolled[:, t] if t >= offset else torch.full((5,), -100)
        torch.testing.assert_close(target[:, t], want)


def test_seeded_and_uniform():
    a, _ = copy_at_offset(200, 50, 4, offset=2, generator=make_generator(1))
    b, _ = copy_at_offset(200, 50, 4, offset=2, generator=make_generator(1))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    freq = torch.bincount(a.flatten(), minlength=4).double() / a.numel()
    assert (freq - 0.25).abs().max() < 0.02  # 10 000 draws: sd of a frequency ~ 0.004


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(batch=0), ValueError, "batch"),
        (dict(length=2.0), TypeError, "length"),
        (dict(offset=-1), ValueError, "offset"),
        (dict(offset=8), ValueError, "offset: expected an int < length=8"),
    ],
)
def test_bad_input(kwargs, exc, match):
    args = dict(batch=2, length=8, vocab=5, offset=1) | kwargs
    with pytest.raises(exc, match=match):
        copy_at_offset(args.pop("batch"), args.pop("length"), args.pop("vocab"), **args)
