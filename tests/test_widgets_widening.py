"""The widening widget: its drawn deviations checked against modified small models."""

from __future__ import annotations

import copy
import json
import re

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

from kexue_lib._core import make_generator, seeded  # noqa: E402
from kexue_lib.models.transformer import TinyTransformer  # noqa: E402
from kexue_lib.widgets.frontends import animate, live  # noqa: E402
from kexue_lib.widgets.widening import RECIPES, widening_explorer  # noqa: E402
from tests.conftest import assert_redraws_within_budget  # noqa: E402

SEED = 4


@pytest.fixture(scope="module")
def ex():
    return widening_explorer(k_max=3, seed=SEED)


@pytest.fixture(scope="module")
def small_and_tokens():
    """The explorer's model and tokens, rebuilt from the documented recipe."""
    with seeded(SEED):
        m = TinyTransformer(32, 8, 2, 2, max_len=12, pos="rope", head="lm")
    m = m.double().eval()
    tokens = torch.randint(0, 32, (2, 12), generator=make_generator(SEED))
    return m, tokens


def _max_dev(a, b):
    return float((a - b).abs().max())


def test_exact_recipes_and_k1(ex):
    for k in (1, 2, 3):
        d = ex.data(k=k, recipe="exact widening")
        errs = dict(zip(d["recipes"], d["errs"], strict=True))
        assert errs["exact widening"] < 1e-12 and errs["head duplication"] < 1e-12, errs
        if k == 1:  # every mistake is a factor k^something or a layout: all vanish at k = 1
            assert max(errs.values()) < 1e-12, errs
        else:  # every mistake is visible
            assert min(v for n, v in errs.items() if RECIPES[n]) > 1e-6, errs


@pytest.mark.parametrize("k", [2, 3])
def test_mistakes_match_predicted_small_models(ex, small_and_tokens, k):
    m, tokens = small_and_tokens
    with torch.no_grad():
        ref = m(tokens)
        temp = copy.deepcopy(m)  # no k^(1/4): scores divided by sqrt(k)
        bias = copy.deepcopy(m)  # b/k: the small model with b2 / sqrt(k)
        for bt, bb in zip(temp.blocks, bias.blocks, strict=True):
            bt.mixer.q.weight.mul_(k**-0.5)
            bt.mixer.q.bias.mul_(k**-0.5)
            bb.ffn.fc2.bias.mul_(k**-0.5)
        pred = {
            "no k^(1/4) on q, k": _max_dev(temp(tokens), ref),
            "FFN-out bias b/k": _max_dev(bias(tokens), ref),
        }
    d = ex.data(k=k, recipe="exact widening")
    errs = dict(zip(d["recipes"], d["errs"], strict=True))
    for name, p in pred.items():
        assert errs[name] == pytest.approx(p, rel=1e-9, abs=1e-12), (name, errs[name], p)
    # panel C is consistent with panel A, and the small logits are the model's
    d2 = ex.data(k=k, recipe="FFN-out bias b/k")
    assert abs(d2["wide"] - d2["small"]).max() == pytest.approx(errs["FFN-out bias b/k"])
    assert d2["small"] == pytest.approx(ref.numpy().ravel())
    assert list(d2["err_vs_k"]) == pytest.approx(
        [ex.data(k=j, recipe="exact widening")["errs"][d2["sel"]] for j in (1, 2, 3)]
    )


def test_live_slider(ex):
    w = live(ex)
    w.sliders["k"].value = 3
    w.sliders["recipe"].value = "tiled [x, x] layout"
    d = w.last_data
    assert d["k"] == 3 and d["recipe"] == "tiled [x, x] layout"
    assert d["errs"][d["sel"]] > 1e-3


def test_redraw_is_fast(ex):
    for k in (1, 2, 3):
        ex.data(k=k, recipe="exact widening")
    settings = [dict(k=k, recipe="exact widening") for k in (1, 2, 3)]
    assert_redraws_within_budget(ex, settings, name="widening")


def test_animate_frames(ex):
    html = animate(ex, "k", [1, 2, 3], recipe="no k^(1/4) on q, k")
    frames = re.search(r"frames = (\[.*?\]), texts =", html, re.S)
    assert frames is not None
    assert len(json.loads(frames.group(1))) == 3
    assert "<img" in html


def test_bad_arguments(ex):
    with pytest.raises(ValueError, match=r"^k_max\b"):
        widening_explorer(k_max=0)
    with pytest.raises(ValueError, match=r"^recipe\b"):
        ex.data(k=2, recipe="zero padding")
    with pytest.raises(ValueError, match=r"^k\b"):
        ex.data(k=5)
