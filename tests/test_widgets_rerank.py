"""The generate-then-rerank widget: statistics against a brute-force loop."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from kexue_lib.widgets.frontends import animate, live  # noqa: E402
from kexue_lib.widgets.rerank import rerank_explorer, rerank_stats  # noqa: E402
from tests.conftest import assert_redraws_within_budget  # noqa: E402


def _table(seed, n=20, k=6):
    rng = np.random.default_rng(seed)
    out = {}
    for p in (0.5, 0.9, 1.0):
        out[p] = dict(
            valid=rng.random((n, k)) < p,
            copy=rng.random((n, k)) < 0.2,
            cos=rng.normal(size=(n, k)),
            form=rng.integers(0, 5, (n, k)),
        )
    return out


def _brute(valid, copy, cos, form, keep):
    ok_top, n_top, ok_all, n_all, distinct = 0, 0, 0, 0, []
    for i in range(valid.shape[0]):
        cands = [(cos[i, j], j) for j in range(valid.shape[1]) if not copy[i, j]]
        cands.sort(key=lambda t: (-t[0], t[1]))
        for _, j in cands[:keep]:
            ok_top += valid[i, j]
            n_top += 1
        for _, j in cands:
            ok_all += valid[i, j]
            n_all += 1
        distinct.append(len({form[i, j] for _, j in cands}))
    return ok_top / max(n_top, 1), ok_all / n_all, np.mean(distinct)


@pytest.mark.parametrize("keep", [1, 3, 6])
def test_stats_match_brute_force(keep):
    for arrays in _table(0).values():
        got = rerank_stats(**arrays, keep=keep)
        top, all_, distinct = _brute(**arrays, keep=keep)
        assert got["valid_top"] == pytest.approx(top, abs=1e-12)
        assert got["valid_all"] == pytest.approx(all_, abs=1e-12)
        assert got["distinct"] == pytest.approx(distinct, abs=1e-12)


def test_keep_everything_equals_all():
    arrays = _table(1)[0.9]
    s = rerank_stats(**arrays, keep=6)
    assert s["valid_top"] == pytest.approx(s["valid_all"], abs=1e-12)


def test_explorer_live_animate_and_budget():
    ex = rerank_explorer(_table(2), k=6)
    d = ex.data(top_p=0.9, keep=2)
    assert list(d["grid"]) == [0.5, 0.9, 1.0] and d["index"] == 1
    w = live(ex)
    w.sliders["keep"].value = 3
    assert w.last_data["keep"] == 3
    assert animate(ex, "top_p", [0.5, 0.9, 1.0]).count("data:image/png") == 4
    assert_redraws_within_budget(
        ex, [dict(top_p=0.9, keep=1), dict(top_p=1.0, keep=2)], name="rerank"
    )


def test_bad_input():
    a = _table(3)[0.5]
    with pytest.raises(ValueError, match=r"^valid\b"):
        rerank_stats(a["valid"][:, :2], a["copy"], a["cos"], a["form"], keep=1)
    with pytest.raises(ValueError, match=r"^keep\b"):
        rerank_stats(**a, keep=0)
    with pytest.raises(ValueError, match=r"^table\b"):
        rerank_explorer({}, k=2)
