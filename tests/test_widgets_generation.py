"""The beam-size widget of 8802: the drawn shares checked against the table it is built from."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from kexue_lib.widgets.frontends import animate, live  # noqa: E402
from kexue_lib.widgets.generation import beam_trie_explorer  # noqa: E402
from tests.conftest import assert_redraws_within_budget  # noqa: E402

BEAMS = [1, 2, 4]
CORRECT = np.array([[0.6, 0.7], [0.62, 0.75], [0.62, 0.79]])
INVALID = np.array([[0.34, 0.0], [0.34, 0.0], [0.33, 0.0]])


@pytest.fixture(scope="module")
def ex():
    return beam_trie_explorer(BEAMS, CORRECT, INVALID)


@pytest.mark.parametrize("k", range(3))
def test_shares_are_the_table_and_sum_to_one(ex, k):
    d = ex.data(beam=BEAMS[k])
    np.testing.assert_allclose(d["shares"][:, 0], CORRECT[k])
    np.testing.assert_allclose(d["shares"][:, 2], INVALID[k])
    np.testing.assert_allclose(d["shares"].sum(1), 1.0)
    assert (d["shares"] >= 0).all()


def test_frontends_and_budget(ex):
    assert live(ex) is not None
    assert "<script" in animate(ex, "beam", BEAMS)
    assert_redraws_within_budget(ex, [{"beam": b} for b in BEAMS], name="beam_trie")


def test_bad_input():
    with pytest.raises(ValueError, match=r"^beam_sizes\b"):
        beam_trie_explorer([2, 1], CORRECT[:2], INVALID[:2])
    with pytest.raises(ValueError, match=r"^correct\b"):
        beam_trie_explorer(BEAMS, CORRECT[:2], INVALID)
    with pytest.raises(ValueError, match=r"^invalid\b"):
        beam_trie_explorer(BEAMS, CORRECT, INVALID + 0.5)
    with pytest.raises(ValueError, match=r"^beam\b"):
        beam_trie_explorer(BEAMS, CORRECT, INVALID).data(beam=3)
