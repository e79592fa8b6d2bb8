"""The chunk-merge widget: drawn data against closed forms and a direct count."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from kexue_lib.external_shuffle import simulate_shuffles  # noqa: E402
from kexue_lib.widgets.external_shuffle import MERGES, chunk_merge_explorer  # noqa: E402
from kexue_lib.widgets.frontends import animate, live  # noqa: E402
from tests.conftest import assert_redraws_within_budget  # noqa: E402


@pytest.fixture(scope="module")
def ex():
    return chunk_merge_explorer(lines_per_chunk=12, max_chunks=10, draws=1000, seed=0)


def test_densities_match_a_direct_count(ex):
    d = ex.data(chunks=4, last_lines=3)
    assert d["sizes"] == [12, 12, 12, 3] and d["L"] == 39
    for merge in MERGES:
        dens, edges = d["density"][merge], d["edges"]
        assert abs((dens * np.diff(edges)).sum() - 1) < 1e-12
    # redo the round-robin draw and count by hand
    sims = simulate_shuffles([12, 12, 12, 3], "round-robin", 1000, seed=0 + 17 * 4)
    pos = [t for row in sims.tolist() for t, v in enumerate(row) if v >= 36]
    assert math.isclose(d["mean_pos"]["round-robin"], sum(pos) / len(pos))
    # round-robin: the 3 lines of the last chunk sit in rounds 0..2, i.e. positions < 12
    assert max(pos) < 12 and abs(np.mean(pos) - 5.5) < 0.3
    assert abs(d["mean_pos"]["exact"] - 19) < 0.8


def test_same_chunk_rates_follow_the_formulas(ex):
    d = ex.data(chunks=5, last_lines=12)
    L, m, n = 60, 5, 12
    assert math.isclose(d["uniform_same"], (n - 1) / (L - 1))
    assert math.isclose(d["rr_same_equal"], (n - 1) / ((L - 1) * m))
    se = math.sqrt(0.2 * 0.8 / (1000 * (L - 1))) * 3
    assert abs(d["same_chunk"]["exact"] - d["uniform_same"]) < 5 * se
    assert abs(d["same_chunk"]["round-robin"] - d["rr_same_equal"]) < 5 * se
    exact = math.factorial(12) ** 5 * math.factorial(5) ** 12 / math.factorial(60)
    assert math.isclose(d["log10_reachable"], math.log10(exact), rel_tol=1e-12)
    assert ex.data(chunks=5, last_lines=3)["rr_same_equal"] is None


def test_bad_arguments():
    for kw in ({"lines_per_chunk": 1}, {"draws": 10}, {"bins": True}, {"max_chunks": 1.5}):
        name = next(iter(kw))
        with pytest.raises(ValueError, match=rf"^{name}\b"):
            chunk_merge_explorer(**kw)
    with pytest.raises(ValueError, match="chunks"):
        chunk_merge_explorer().data(chunks=11)


def test_front_ends(ex):
    w = live(ex)
    w.sliders["chunks"].value = 3
    html = animate(ex, "chunks", [2, 4, 8], last_lines=6)
    assert html.count("data:image/png;base64,") >= 3 and "chunks m = 2" in html


def test_redraw_budget(ex):
    settings = [dict(chunks=4, last_lines=3), dict(chunks=3, last_lines=8)]
    assert_redraws_within_budget(ex, settings, name="chunk_merge_explorer")
