"""One pure drawing function, two front ends: live ipywidgets sliders and a kernel-free animation.

An :class:`Explorer` bundles the knobs of an interactive figure (``controls``), a pure
``compute(**values) -> dict`` of arrays (no matplotlib; what tests assert on) and a
``draw(fig, data)`` that only draws that dict. :func:`live` wires it to ipywidgets for
Jupyter; :func:`animate` renders it over a grid of values with matplotlib's
``FuncAnimation(...).to_jshtml()``, so a reader of the static HTML book can still drag a
slider with no kernel and no CDN.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Control", "Explorer", "animate", "axes_title", "live", "sweep_values"]

MAX_FRAMES = 24


@dataclass(frozen=True)
class Control:
    """A knob. ``values`` is a ``(lo, hi)`` tuple (a slider range) or a list of choices.

    ``log=True`` makes a range slider move in log space (temperatures, concentrations).
    ``label`` is what the slider shows (defaults to ``name``).
    """

    name: str
    values: Sequence[Any] | tuple[float, float]
    default: Any
    log: bool = False
    step: float | None = None
    label: str | None = None

    @property
    def is_range(self) -> bool:
        """A ``(lo, hi)`` tuple of numbers is a range; a list is a set of choices."""
        v = self.values
        return (
            isinstance(v, tuple)
            and len(v) == 2
            and all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in v)
        )

    def validate(self, value: Any) -> Any:
        if self.is_range:
            lo, hi = self.values
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{self.name}: expected a number, got {type(value).__name__}")
            if not (lo <= value <= hi):
                raise ValueError(f"{self.name}: expected a value in [{lo}, {hi}], got {value}")
        elif value not in list(self.values):
            raise ValueError(f"{self.name}: expected one of {list(self.values)}, got {value!r}")
        return value


@dataclass
class Explorer:
    """An interactive figure: controls, a pure ``compute`` and a matplotlib-only ``draw``."""

    controls: Sequence[Control]
    compute: Callable[..., dict]
    draw: Callable[[Any, dict], None]
    figsize: tuple[float, float] = (9.0, 3.0)
    title: Callable[[dict], str] | None = None
    _cache: dict = field(default_factory=dict, repr=False)
    _layout: tuple | None = field(default=None, repr=False)

    def values(self, **values: Any) -> dict:
        """Control values with defaults filled in; unknown or out-of-range names raise."""
        names = {c.name for c in self.controls}
        unknown = set(values) - names
        if unknown:
            raise ValueError(
                f"unknown control(s) {sorted(unknown)}; expected some of {sorted(names)}"
            )
        return {c.name: c.validate(values.get(c.name, c.default)) for c in self.controls}

    def data(self, **values: Any) -> dict:
        """``compute`` at these values (defaults filled in), cached per distinct values."""
        full = self.values(**values)
        key = tuple(sorted(full.items()))
        if key not in self._cache:
            if len(self._cache) > 256:
                self._cache.clear()
            self._cache[key] = self.compute(**full)
        return self._cache[key]

    def figure(self, fig=None, *, suptitle: str | None = None, **values: Any):
        """Draw the figure for these values on ``fig`` (a new Figure when None) and return it.

        Panels are placed by constrained layout once, on the first draw, and the positions are
        reused while the figure keeps the same panels: the layout pass costs about a third of
        a redraw, and a slider should not make the panels jump. A ``draw`` that sets its own
        layout engine keeps it.
        """
        from matplotlib.figure import Figure
        from matplotlib.layout_engine import ConstrainedLayoutEngine

        fig = fig if fig is not None else Figure(figsize=self.figsize, layout="constrained")
        d = self.data(**values)
        self.draw(fig, d)
        _lighten_ticks(fig)
        if suptitle is None and self.title is not None:
            suptitle = self.title(self.values(**values))
        if suptitle is not None:
            fig.suptitle(suptitle, fontsize=10)
        if isinstance(fig.get_layout_engine(), ConstrainedLayoutEngine):
            key = (len(fig.axes), tuple(fig.get_size_inches()), suptitle is not None)
            if self._layout is None or self._layout[0] != key:
                # extra room around panels: later values may bring wider tick labels
                fig.get_layout_engine().set(w_pad=0.12, h_pad=0.06)
                fig.get_layout_engine().execute(fig)
                self._layout = (key, [ax.get_position().bounds for ax in fig.axes])
            else:
                for ax, bounds in zip(fig.axes, self._layout[1]):
                    ax.set_position(bounds)
            fig.set_layout_engine("none")
        return fig

    def png(self, *, dpi: float = 80, suptitle: str | None = None, **values: Any) -> bytes:
        """The figure for these values as PNG bytes: one draw, one rasterisation.

        Both front ends show exactly this: the live sliders display it, and the kernel-free
        player embeds one per frame.
        """
        import io

        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        # unhinted glyphs: about a tenth of a redraw cheaper, and at 80 dpi they look the same
        with matplotlib.rc_context({"text.hinting": "no_hinting"}):
            fig = self.figure(suptitle=suptitle, **values)
            fig.set_dpi(dpi)
            buf = io.BytesIO()
            FigureCanvasAgg(fig).print_png(buf)
        return buf.getvalue()

    def render_seconds(self, **values: Any) -> float:
        """Wall time of one live redraw: compute (on a cache miss), draw, PNG."""
        t0 = time.perf_counter()
        self.png(**values)
        return time.perf_counter() - t0


def _lighten_ticks(fig) -> None:
    """Fewer tick objects: creating ticks is about half of a redraw of a fresh figure.

    Minor ticks go; linear axes get at most six major ticks (a draw may set its own later).
    """
    from matplotlib.ticker import MaxNLocator

    for ax in fig.axes:
        ax.minorticks_off()
        for axis in (ax.xaxis, ax.yaxis):
            loc = axis.get_major_locator()
            if type(loc).__name__ == "AutoLocator" or type(loc) is MaxNLocator:
                loc.set_params(nbins=5)


def axes_title(ax, text: str, *, fontsize: float = 9) -> None:
    """A panel title drawn as axes text: ``set_title`` places itself by measuring every tick
    label, about a third of a widget redraw."""
    ax.text(0.5, 1.03, text, transform=ax.transAxes, ha="center", va="bottom", fontsize=fontsize)


def sweep_values(explorer: Explorer, name: str, n: int = 12) -> list:
    """About ``n`` values of control ``name`` for :func:`animate`, spread over its range.

    A range gives ``n`` evenly spaced values (log-spaced for ``log=True``; integers for an
    int range); a list of choices gives at most ``n`` of them, evenly picked, ends included.
    """
    import numpy as np

    by_name = {c.name: c for c in explorer.controls}
    if name not in by_name:
        raise ValueError(f"name: expected one of {sorted(by_name)}, got {name!r}")
    if not 2 <= n <= MAX_FRAMES:
        raise ValueError(f"n: expected 2 to {MAX_FRAMES} values, got {n}")
    c = by_name[name]
    if c.is_range:
        lo, hi = c.values
        if all(isinstance(t, int) for t in (lo, hi, c.default)):
            return sorted({int(round(v)) for v in np.linspace(lo, hi, n)})
        grid = np.geomspace(lo, hi, n) if c.log else np.linspace(lo, hi, n)
        return [float(f"{v:.4g}") for v in grid]
    choices = list(c.values)
    idx = sorted({int(round(i)) for i in np.linspace(0, len(choices) - 1, min(n, len(choices)))})
    return [choices[i] for i in idx]


def _slider(c: Control):
    import ipywidgets as W

    label = c.label or c.name
    style = {"description_width": "initial"}
    if c.is_range:
        lo, hi = c.values
        if c.log:
            return W.FloatLogSlider(
                value=c.default,
                base=10,
                min=math.log10(lo),
                max=math.log10(hi),
                step=c.step or 0.02,
                description=label,
                style=style,
                continuous_update=True,
            )
        if all(isinstance(t, int) for t in (lo, hi, c.default)) and (c.step or 1) == int(
            c.step or 1
        ):
            return W.IntSlider(
                value=c.default,
                min=lo,
                max=hi,
                step=int(c.step or 1),
                description=label,
                style=style,
            )
        return W.FloatSlider(
            value=c.default,
            min=lo,
            max=hi,
            step=c.step or (hi - lo) / 100,
            description=label,
            style=style,
        )
    return W.SelectionSlider(
        options=list(c.values), value=c.default, description=label, style=style
    )


def live(explorer: Explorer, **overrides: Any):
    """Sliders plus one output area that redraws the explorer (Jupyter, inline backend).

    Returns a ``VBox``; ``.sliders`` maps control names to sliders, ``.last_data`` holds the
    dict drawn last and ``.last_seconds`` the time that redraw took (for tests).
    """
    import ipywidgets as W
    from IPython.display import Image, display

    sliders = {c.name: _slider(c) for c in explorer.controls}
    for k, v in overrides.items():
        if k not in sliders:
            raise ValueError(
                f"{k}: not a control of this explorer; expected one of {sorted(sliders)}"
            )
        sliders[k].value = v
    box = W.VBox()

    def redraw(**values):
        t0 = time.perf_counter()
        image = Image(data=explorer.png(**values), format="png")
        box.last_data = explorer.data(**values)
        box.last_values = values
        display(image)
        box.last_seconds = time.perf_counter() - t0

    out = W.interactive_output(redraw, sliders)
    box.children = [W.HBox(list(sliders.values()), layout=W.Layout(flex_flow="row wrap")), out]
    box.sliders = sliders
    return box


def animate(
    explorer: Explorer, sweep: str, values: Sequence[Any], *, fps: float = 3, **fixed: Any
) -> str:
    """Kernel-free HTML: the explorer drawn at each of ``values`` of control ``sweep``.

    Each frame is drawn once and embedded as a PNG; a small self-contained player (a range
    slider labelled with the swept value, and a play button) switches between them, with no
    kernel and no external script or stylesheet. Each frame's title also states the value.
    At most 24 frames.
    """
    import base64
    import hashlib
    import html as html_lib
    import json

    by_name = {c.name: c for c in explorer.controls}
    if sweep not in by_name:
        raise ValueError(f"sweep: expected one of {sorted(by_name)}, got {sweep!r}")
    values = list(values)
    if not 1 <= len(values) <= MAX_FRAMES:
        raise ValueError(f"values: expected 1 to {MAX_FRAMES} frames, got {len(values)}")
    for v in values:
        explorer.values(**fixed, **{sweep: v})  # validate every frame before drawing any
    label = by_name[sweep].label or sweep
    texts = [f"{v:.3g}" if isinstance(v, float) else str(v) for v in values]
    frames = []
    for v, text in zip(values, texts):
        title = None if explorer.title is not None else f"{label} = {text}"
        png = explorer.png(suptitle=title, **fixed, **{sweep: v})
        frames.append("data:image/png;base64," + base64.b64encode(png).decode())
    uid = "kx" + hashlib.sha1("".join(frames).encode()).hexdigest()[:12]
    return _PLAYER.format(
        uid=uid,
        first=frames[0],
        label=html_lib.escape(label),
        text0=html_lib.escape(texts[0]),
        last=len(frames) - 1,
        frames=json.dumps(frames),
        texts=json.dumps(texts),
        ms=int(1000 / fps),
    )


# A minimal player: no external resources, one image per frame, the slider shows the value.
_PLAYER = """<div class="animation kexue-animation" id="{uid}">
<img alt="{label} = {text0}" src="{first}" style="max-width:100%">
<div class="anim-controls" style="display:flex;gap:.6em;align-items:center;flex-wrap:wrap">
<button type="button" class="anim-play" aria-label="play">&#9654; play</button>
<label>{label} <input type="range" class="anim-slider" min="0" max="{last}" step="1" value="0"
 style="vertical-align:middle;width:16em"></label> <output>{text0}</output>
</div>
<script>(function () {{
  var root = document.getElementById("{uid}"), frames = {frames}, texts = {texts};
  var img = root.querySelector("img"), slider = root.querySelector("input"),
      out = root.querySelector("output"), play = root.querySelector("button"), timer = null;
  function show(i) {{
    slider.value = i; img.src = frames[i]; out.textContent = texts[i];
    img.alt = "{label} = " + texts[i];
  }}
  slider.addEventListener("input", function () {{ show(parseInt(slider.value, 10)); }});
  play.addEventListener("click", function () {{
    if (timer) {{ clearInterval(timer); timer = null; play.innerHTML = "&#9654; play"; return; }}
    play.innerHTML = "&#10074;&#10074; pause";
    timer = setInterval(function () {{
      var i = parseInt(slider.value, 10) + 1;
      if (i > {last}) {{ clearInterval(timer); timer = null; play.innerHTML = "&#9654; play"; return; }}
      show(i);
    }}, {ms});
  }});
}})();</script>
</div>"""
