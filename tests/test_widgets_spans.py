"""The GlobalPointer threshold widget: drawn data against decode_spans / global_pointer_f1."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from kexue_lib.spans import span_f1  # noqa: E402
from kexue_lib.synthetic.sequences import nested_span_toy  # noqa: E402
from kexue_lib.widgets.frontends import animate, live  # noqa: E402
from kexue_lib.widgets.spans import span_threshold_explorer  # noqa: E402
from tests.conftest import assert_redraws_within_budget  # noqa: E402


@pytest.fixture(scope="module")
def setup():
    _, labels = nested_span_toy(40, 16, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    upper = torch.ones(16, 16, dtype=torch.bool).triu()
    noisy = torch.where(labels > 0, 4.0, -4.0) + 3 * torch.randn(labels.shape, generator=g)
    noisy = noisy.masked_fill(~upper, float("-inf"))
    perfect = torch.where(labels > 0, 5.0, -5.0).masked_fill(~upper, float("-inf"))
    scores = {"noisy": noisy, "perfect": perfect}
    return scores, labels, span_threshold_explorer(scores, labels, type_names=("NAME", "ORG"))


@pytest.mark.parametrize("threshold", [-3.0, 0.0, 2.5])
def test_pred_and_f1_match_set_arithmetic(setup, threshold):
    scores, labels, ex = setup
    for sample in (0, 3):
        d = ex.data(threshold=threshold, model="noisy", type_name="ORG", sample=sample)
        S = scores["noisy"][sample, 1]
        want = {(i, j) for i in range(16) for j in range(i, 16) if S[i, j] > threshold}
        assert d["pred"] == want
        assert d["gold"] == {(i, j) for i, j in torch.nonzero(labels[sample, 1]).tolist()}
    pred = [
        {(t, i, j) for t, i, j in torch.nonzero(scores["noisy"][b] > threshold).tolist()}
        for b in range(40)
    ]
    gold = [{tuple(x) for x in torch.nonzero(labels[b]).tolist()} for b in range(40)]
    assert abs(d["f1_now"]["noisy"] - span_f1(pred, gold)) < 1e-6
    assert d["f1_now"]["perfect"] == 1.0 if -5 < threshold < 5 else True


def test_curve_is_the_grid_of_f1(setup):
    from kexue_lib.spans import global_pointer_f1

    scores, labels, ex = setup
    d = ex.data()
    for k in (0, 13, 20, 31, 40):
        t = float(d["grid"][k])
        assert (
            abs(
                d["f1"]["noisy"][k] - float(global_pointer_f1(scores["noisy"], labels, threshold=t))
            )
            < 1e-6
        )
    assert np.all(d["f1"]["perfect"][np.abs(d["grid"]) < 5] == 1.0)
    i0 = int(np.argmin(np.abs(d["grid"])))
    assert abs(d["f1"]["noisy"][i0] - ex.data(threshold=0.0)["f1_now"]["noisy"]) < 1e-12


def test_live_animate_bad_input_and_budget(setup):
    scores, labels, ex = setup
    box = live(ex)
    box.sliders["threshold"].value = 1.0
    assert "<img" in animate(ex, "threshold", [-2.0, 0.0, 2.0])
    with pytest.raises(ValueError, match=r"^scores\b"):
        span_threshold_explorer({"a": scores["noisy"][:, :1]}, labels)
    with pytest.raises(ValueError, match=r"^type_names\b"):
        span_threshold_explorer(scores, labels, type_names=("A",))
    assert_redraws_within_budget(
        ex, [dict(threshold=1.0, sample=1), dict(threshold=-1.0, model="perfect")], name="spans"
    )
