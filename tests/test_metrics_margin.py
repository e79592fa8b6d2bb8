"""Leave-one-out class retrieval against sklearn's average_precision_score and a loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kexue_lib.metrics import class_retrieval_scores


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("k", [1, 3])
def test_against_sklearn_and_loop(dtype, k):
    from sklearn.metrics import average_precision_score

    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (40,), generator=g)
    x = torch.randn(40, 5, generator=g, dtype=torch.float64) + 0.8 * torch.nn.functional.one_hot(
        labels, 5
    )
    recall, mean_ap = class_retrieval_scores(x.to(dtype), labels, k=k)
    u = torch.nn.functional.normalize(x, dim=-1).numpy()
    aps, hits = [], []
    for q in range(40):
        others = [i for i in range(40) if i != q]
        sims = u[others] @ u[q]
        rel = (labels[others] == labels[q]).numpy()
        if rel.sum() == 0:
            continue
        aps.append(average_precision_score(rel, sims))
        hits.append(rel[np.argsort(-sims)[:k]].any())
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    assert abs(float(mean_ap) - np.mean(aps)) < tol
    assert abs(float(recall) - np.mean(hits)) < tol
    assert recall.dtype == dtype


def test_perfect_and_bad_input():
    x = torch.tensor([[1.0, 0], [0.9, 0.1], [0, 1.0], [0.1, 0.9]])
    r, m = class_retrieval_scores(x, torch.tensor([0, 0, 1, 1]))
    assert float(r) == 1.0 and float(m) == 1.0
    with pytest.raises(ValueError, match=r"^labels\b"):
        class_retrieval_scores(x, torch.tensor([0.0, 0, 1, 1]))
    with pytest.raises(ValueError, match=r"^k\b"):
        class_retrieval_scores(x, torch.tensor([0, 0, 1, 1]), k=4)
    with pytest.raises(ValueError, match=r"^embeddings\b"):
        class_retrieval_scores(torch.randn(4), torch.tensor([0, 0, 1, 1]))
