"""Tests of the UniVAE mask widget: drawn masks and reach against loops written from the rule."""

from __future__ import annotations

import itertools
import json
import re

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from kexue_lib.models.vae import UniVAE  # noqa: E402
from kexue_lib.widgets.frontends import animate, live  # noqa: E402
from kexue_lib.widgets.univae import KINDS, mask_explorer, token_labels  # noqa: E402
from tests.conftest import assert_redraws_within_budget  # noqa: E402

LAYERS, HALF = 4, 3  # the 6-token example: [src src src | tgt tgt tgt]


@pytest.fixture(scope="module")
def ex6():
    return mask_explorer(layers=LAYERS, max_len=HALF)


@pytest.fixture(scope="module")
def ex():
    return mask_explorer()


# ------------------------------------------------------------------ the rule, written out
# Positions 0..h-1 are the source copy, h..2h-1 the target copy; in each copy the first
# `length` positions are real ([CLS] x .. [SEP]) and the rest padding.


def rule_allows(kind: str, i: int, j: int, h: int, length: int) -> bool:
    """May query i attend key j? One case per sentence of the chapter's definitions."""
    src_i, src_j = i < h, j < h
    if (j % h) >= length:  # a padded key is never read
        return False
    if src_i:  # source rows: the whole (real) source, in every mask
        return src_j
    # target rows
    if kind == "UniLM":
        return src_j or j <= i  # all of the source, own causal past
    own_past = (not src_j) and j <= i  # independent: causal target only
    if kind == "independent":
        return own_past
    return own_past or j == 0  # UniAE: plus the source [CLS]


def rule_mask(kind: str, h: int, length: int) -> np.ndarray:
    T = 2 * h
    m = np.zeros((T, T), dtype=bool)
    for i in range(T):
        for j in range(T):
            m[i, j] = rule_allows(kind, i, j, h, length)
        if not m[i].any():  # a row with no key keeps itself (never hit by these masks)
            m[i, i] = True
    return m


def rule_schedule(kind: str, layers: int, latent: int) -> list[str]:
    if kind == "UniVAE":
        return ["independent"] * (layers - latent) + ["UniAE"] * latent
    return [kind] * layers


def path_reach(masks: list[np.ndarray], h: int, length: int) -> np.ndarray:
    """(layers, h): does source input j influence a real target output after block b?

    Follows every attention edge forward, one block at a time, from each source token.
    """
    T = masks[0].shape[0]
    out = np.zeros((len(masks), h), dtype=bool)
    for j in range(h):
        frontier = {j}
        for b, m in enumerate(masks):
            frontier = {i for i in range(T) if any(m[i, k] for k in frontier)}
            out[b, j] = any(h <= t < h + length for t in frontier)
    return out


# ------------------------------------------------------------------ tests


def test_six_token_example_by_hand(ex6):
    """The UniAE block of the 6-token sentence [C x S | C x S], spelled out."""
    d = ex6.data(layer=3, latent=2, length=3, kind="UniVAE")
    want = np.array(
        [
            [1, 1, 1, 0, 0, 0],
            [1, 1, 1, 0, 0, 0],
            [1, 1, 1, 0, 0, 0],
            [1, 0, 0, 1, 0, 0],
            [1, 0, 0, 1, 1, 0],
            [1, 0, 0, 1, 1, 1],
        ],
        dtype=bool,
    )
    np.testing.assert_array_equal(d["mask"], want)
    np.testing.assert_array_equal(d["direct"][3], [True, False, False])
    assert d["kinds"] == ["independent", "independent", "UniAE", "UniAE"]
    assert d["code_blocks"] == [2, 3]
    assert d["density"] == pytest.approx(want.mean(), abs=0)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("length", [2, 3])
def test_drawn_masks_match_the_rule(ex6, kind, length):
    for latent in range(LAYERS):
        names = rule_schedule(kind, LAYERS, latent)
        want = [rule_mask(name, HALF, length) for name in names]
        for layer in range(LAYERS):
            d = ex6.data(layer=layer, latent=latent, length=length, kind=kind)
            np.testing.assert_array_equal(d["mask"], want[layer], err_msg=f"{kind} {layer}")
            assert d["kinds"] == names
        np.testing.assert_array_equal(d["masks"], np.stack(want))
        # direct reads: real target rows x source keys
        direct = np.array([[w[HALF : HALF + length, j].any() for j in range(HALF)] for w in want])
        np.testing.assert_array_equal(d["direct"], direct)
        reach = path_reach(want, HALF, length)
        np.testing.assert_array_equal(d["reach"], reach)
        first = [b for b in range(LAYERS) if reach[b].any()]
        assert d["first_reach"] == (first[0] if first else -1)


def test_reach_tells_the_story(ex):
    """UniVAE: nothing crosses in the independent blocks, then all real source tokens reach
    the target, read directly only through [CLS]; UniAE everywhere: block 0 passes only the
    [CLS] embedding itself; UniLM: every real source token, directly, from block 0."""
    d = ex.data(latent=2, length=5, kind="UniVAE")
    assert d["first_reach"] == 2 and not d["reach"][:2].any()
    np.testing.assert_array_equal(d["reach"][2:], [[1, 1, 1, 1, 1, 0]] * 2)
    np.testing.assert_array_equal(d["direct"][2:], [[1, 0, 0, 0, 0, 0]] * 2)
    d = ex.data(kind="UniAE", length=4)
    np.testing.assert_array_equal(d["reach"][0], [1, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(d["reach"][1], [1, 1, 1, 1, 0, 0])
    d = ex.data(kind="UniLM", length=4)
    assert d["first_reach"] == 0 and d["direct"][:, :4].all() and not d["direct"][:, 4:].any()
    assert ex.data(kind="independent")["first_reach"] == -1


@pytest.mark.parametrize("latent,length", [(1, 2), (2, 4), (3, 6)])
def test_univae_schedule_is_the_models(ex, latent, length):
    """The widget's UniVAE stack equals UniVAE.masks on a sentence of that length."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = UniVAE(8, 8, 2, 4, latent_layers=latent, z_dim=2, kappa=8.0, max_len=6, n_grid=64)
    tokens = torch.tensor([[1] + [3] * (length - 2) + [2] + [0] * (6 - length)])
    want = np.stack([m[0].numpy() for m in model.masks(tokens)])
    d = ex.data(latent=latent, length=length, kind="UniVAE")
    np.testing.assert_array_equal(d["masks"], want)
    assert d["code_blocks"] == model.latent_block_indices


def test_token_labels():
    assert token_labels(4, 6) == ["C", "x1", "x2", "S", "·", "·"]
    assert token_labels(2, 2) == ["C", "S"]


def test_live_sliders_drive_the_data(ex):
    w = live(ex)
    w.sliders["kind"].value = "UniAE"
    w.sliders["length"].value = 3
    w.sliders["layer"].value = 1
    got = w.last_data
    assert (got["kind"], got["length"], got["layer"]) == ("UniAE", 3, 1)
    np.testing.assert_array_equal(got["mask"], rule_mask("UniAE", 6, 3))
    w.sliders["kind"].value = "UniVAE"
    w.sliders["latent"].value = 1
    w.sliders["layer"].value = 2
    got = w.last_data
    np.testing.assert_array_equal(got["mask"], rule_mask("independent", 6, 3))
    assert got["first_reach"] == 3


def test_render_is_fast(ex):
    settings = [
        dict(),
        dict(layer=0, kind="UniLM", length=6),
        dict(layer=3, latent=1, length=2),
        dict(kind="independent", length=5),
    ]
    assert_redraws_within_budget(ex, settings, name="UniVAE masks")


def test_animate_frames(ex):
    values = [0, 1, 2, 3]
    html = animate(ex, "layer", values, latent=2)
    assert "<img" in html
    frames = re.search(r"frames = (\[.*?\]), texts =", html, re.S)
    assert frames is not None
    frames = json.loads(frames.group(1))
    assert len(frames) == len(values)
    assert len(set(frames)) == len(values)  # each block draws differently


def test_bad_values(ex):
    with pytest.raises(ValueError, match="layer"):
        ex.data(layer=4)
    with pytest.raises(ValueError, match="latent"):
        ex.data(latent=-1)
    with pytest.raises(ValueError, match="length"):
        ex.data(length=7)
    with pytest.raises(ValueError, match="length"):
        ex.data(length=1)
    with pytest.raises(TypeError, match="layer"):
        ex.data(layer=1.5)
    with pytest.raises(ValueError, match="kind"):
        ex.data(kind="causal")
    with pytest.raises(ValueError, match="unknown control"):
        ex.data(max_len=4)
    with pytest.raises(ValueError, match="values"):
        animate(ex, "layer", [0, 1, 2, 3] * 7)
    for kw, name in [
        (dict(layers=1), "layers"),
        (dict(max_len=1), "max_len"),
        (dict(max_len=17), "max_len"),
    ]:
        with pytest.raises(ValueError, match=name):
            mask_explorer(**kw)
    with pytest.raises(TypeError, match="layers"):
        mask_explorer(layers=2.0)


def test_every_setting_computes(ex6):
    """No control combination fails or leaves a row without a key."""
    for layer, latent, length, kind in itertools.product(range(4), range(4), (2, 3), KINDS):
        d = ex6.data(layer=layer, latent=latent, length=length, kind=kind)
        assert d["mask"].any(axis=1).all()
