"""The widget machinery: one pure compute/draw pair behind live sliders and a kernel-free animation."""

from __future__ import annotations

import re

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from kexue_lib.widgets.frontends import (  # noqa: E402
    MAX_FRAMES,
    Control,
    Explorer,
    animate,
    live,
    sweep_values,
)
from tests.conftest import assert_redraws_within_budget  # noqa: E402


def _power_explorer(calls: list):
    def compute(a, kind):
        calls.append((a, kind))
        x = np.linspace(0.0, 1.0, 64)
        return {"x": x, "y": x**a if kind == "power" else np.exp(-a * x)}

    def draw(fig, d):
        ax = fig.subplots()
        ax.plot(d["x"], d["y"])
        ax.set_xlabel("x")

    return Explorer(
        [Control("a", (0.1, 4.0), 1.0, log=True), Control("kind", ["power", "exp"], "power")],
        compute,
        draw,
        figsize=(4, 3),
    )


def test_data_fills_defaults_validates_and_caches():
    calls = []
    ex = _power_explorer(calls)
    d = ex.data(a=2.0)
    np.testing.assert_allclose(d["y"], d["x"] ** 2)
    assert ex.data(a=2.0) is d and calls == [(2.0, "power")]
    np.testing.assert_allclose(ex.data(kind="exp")["y"], np.exp(-ex.data(kind="exp")["x"]))
    with pytest.raises(ValueError, match=r"a: expected a value in \[0.1, 4.0\], got 9"):
        ex.data(a=9)
    with pytest.raises(ValueError, match="kind: expected one of"):
        ex.data(kind="log")
    with pytest.raises(ValueError, match="unknown control"):
        ex.data(b=1)
    with pytest.raises(TypeError, match="a: expected a number"):
        ex.data(a="2")


def test_live_sliders_redraw_with_the_new_values():
    ex = _power_explorer([])
    w = live(ex, a=0.5)
    assert w.last_values == {"a": 0.5, "kind": "power"}
    w.sliders["kind"].value = "exp"
    w.sliders["a"].value = 3.0
    assert w.last_values == {"a": pytest.approx(3.0), "kind": "exp"}
    np.testing.assert_allclose(w.last_data["y"], np.exp(-w.last_values["a"] * w.last_data["x"]))
    assert w.last_seconds > 0
    with pytest.raises(ValueError, match="not a control"):
        live(ex, b=1)


def test_render_seconds_is_small_for_a_simple_figure():
    ex = _power_explorer([])
    assert_redraws_within_budget(
        ex, [{"a": v} for v in (0.5, 1.0, 2.0)], name="a one-line figure (test_frontends)"
    )


def test_animate_embeds_one_frame_per_value_and_no_external_scripts():
    ex = _power_explorer([])
    html = animate(ex, "a", [0.5, 1.0, 2.0, 4.0], kind="exp")
    frames = re.findall(r"data:image/png;base64,", html)
    assert len(frames) == 4 + 1  # four frames, the first also as the initial image
    assert 'type="range"' in html and 'max="3"' in html
    assert '["0.5", "1", "2", "4"]' in html  # the slider's value labels
    assert not re.search(r"https?://", html), "the player must not reference any network resource"
    with pytest.raises(ValueError, match="sweep"):
        animate(ex, "b", [1.0])
    with pytest.raises(ValueError, match="frames"):
        animate(ex, "a", np.linspace(0.1, 4, MAX_FRAMES + 1))
    with pytest.raises(ValueError, match="a: expected a value"):
        animate(ex, "a", [0.5, 10.0])


def test_sweep_values_spans_each_kind_of_control():
    ex = _power_explorer([])
    np.testing.assert_allclose(sweep_values(ex, "a", 3), [0.1, np.sqrt(0.4), 4.0], rtol=1e-3)
    assert sweep_values(ex, "kind", 12) == ["power", "exp"]
    ints = Explorer([Control("k", (0, 10), 5), Control("c", list("abcdefg"), "a")], dict, print)
    assert sweep_values(ints, "k", 6) == [0, 2, 4, 6, 8, 10]
    assert sweep_values(ints, "c", 3) == ["a", "d", "g"]
    with pytest.raises(ValueError, match="name"):
        sweep_values(ex, "b")
    with pytest.raises(ValueError, match="n: expected"):
        sweep_values(ex, "a", 1)
