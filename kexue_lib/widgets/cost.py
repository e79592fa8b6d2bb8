"""The cost widget: where the multiplications of one Transformer layer go, and when linear wins.

Knobs: the sequence length ``n`` (powers of two, 128 to 65536), the model size (``h`` heads of
size ``d``), the attention of the layer whose bill is split (``"softmax"`` or ``"linear"``), the
key multiplier ``kappa`` of linear attention and the ``accounting`` of its wider keys (the
post's, with keys and values ``kappa d`` and projections left at their cost, or wider Q/K
projections that pay for the keys). Panels: (A) the share of the layer's multiplications in the
projections, the attention core and the FFN at every ``n`` choice, the current ``n`` outlined;
(B) cost(softmax layer) / cost(linear layer) against ``n`` for both accountings, with their
crossovers from :func:`kexue_lib.cost.cost_crossovers` and the current ``n`` marked.
"""

from __future__ import annotations

import numpy as np

from kexue_lib.cost import cost_crossovers, transformer_layer_cost
from kexue_lib.widgets.frontends import Control, Explorer

__all__ = ["ACCOUNTINGS", "MODELS", "N_CHOICES", "cost_explorer"]

#: label -> (heads h, head size d); the hidden size is h d
MODELS: dict[str, tuple[int, int]] = {
    "base: h=12, d=64": (12, 64),
    "large: h=16, d=64": (16, 64),
    "7B-like: h=32, d=128": (32, 128),
}
N_CHOICES = tuple(2**k for k in range(7, 17))  # 128 .. 65536
KAPPA_CHOICES = (1, 2, 4, 8)
#: how the linear layer pays for keys of size ``kappa d``: "post" widens keys and values and
#: keeps the projections' cost; "paid projections" widens Q/K projections, values stay ``d``
ACCOUNTINGS = ("post", "paid projections")
PARTS = ("projections (Q, K, V, O)", "attention core", "FFN")
_COLORS = ("#9ecae1", "#fb6a4a", "#a1d99b")


def _giga(x: float) -> str:
    """Multiplications in units of 1e9, three significant digits without an exponent."""
    g = x / 1e9
    return f"{g:,.0f}" if g >= 100 else f"{g:.3g}"


def _linear_kwargs(accounting: str, kappa: int) -> dict:
    if accounting == "post":  # keys and values kappa d, projections keep their cost
        return dict(attention="linear", key_mult=kappa, value_mult=kappa)
    # keys kappa d produced by wider Q/K projections, values d
    return dict(attention="linear", key_mult=kappa, widen_projections=True)


def cost_explorer(*, n_grid: int = 121) -> Explorer:
    """Explorer of the multiplication model of :func:`kexue_lib.cost.transformer_layer_cost`.

    ``compute`` returns, for the layer chosen by ``attention`` (linear: ``kappa`` and
    ``accounting``), ``ns: (N,)`` the ``n`` choices, ``proj, core, ffn, total: (N,)`` its
    multiplications (projections = ``qkv_proj + out_proj``) and ``shares: (3, N)``; the index
    ``i`` of the current ``n``; ``grid: (n_grid,)`` log-spaced lengths 64 .. 131072 with
    ``ratio_post, ratio_paid: (n_grid,)`` = softmax total / linear total for both accountings;
    the crossovers ``cross_post = kappa^2 d`` and ``cross_paid = (kappa - 1) h d + kappa d``,
    ``sa_gt_ffn = 2 h d`` and ``quadratic_dominates = 6 h d``; ``ratio_at_n`` for the chosen
    accounting. The model: ``C = 4 n D^2 + 2 n^2 D + 8 n D^2`` (``D = h d``) for softmax.
    """
    if isinstance(n_grid, bool) or not isinstance(n_grid, int) or n_grid < 2:
        raise ValueError(f"n_grid: expected an int >= 2, got {n_grid!r}")
    grid = np.unique(np.geomspace(64, 2**17, n_grid).round().astype(np.int64))

    def totals(h: int, d: int, ns, **kw) -> np.ndarray:
        return np.array(
            [transformer_layer_cost(int(n), h, d, **kw)["total"] for n in ns], dtype=float
        )

    std_cache: dict[str, np.ndarray] = {}

    def compute(*, n: int, model: str, attention: str, kappa: int, accounting: str) -> dict:
        h, d = MODELS[model]
        kw = {} if attention == "softmax" else _linear_kwargs(accounting, kappa)
        costs = [transformer_layer_cost(m, h, d, **kw) for m in N_CHOICES]
        proj = np.array([c["qkv_proj"] + c["out_proj"] for c in costs], dtype=float)
        core = np.array([c["attn_core"] for c in costs], dtype=float)
        ffn = np.array([c["ffn"] for c in costs], dtype=float)
        total = np.array([c["total"] for c in costs], dtype=float)
        if model not in std_cache:
            std_cache[model] = totals(h, d, grid)
        std = std_cache[model]
        ratio = {acc: std / totals(h, d, grid, **_linear_kwargs(acc, kappa)) for acc in ACCOUNTINGS}
        cross = cost_crossovers(h, d, key_mult=kappa)
        i = N_CHOICES.index(n)
        std_n = transformer_layer_cost(n, h, d)["total"]
        lin_n = transformer_layer_cost(n, h, d, **_linear_kwargs(accounting, kappa))["total"]
        return {
            "n": n,
            "i": i,
            "h": h,
            "d": d,
            "model": model,
            "attention": attention,
            "kappa": kappa,
            "accounting": accounting,
            "ns": np.array(N_CHOICES, dtype=float),
            "proj": proj,
            "core": core,
            "ffn": ffn,
            "total": total,
            "shares": np.stack([proj, core, ffn]) / total,
            "grid": grid.astype(float),
            "ratio_post": ratio["post"],
            "ratio_paid": ratio["paid projections"],
            "cross_post": float(cross["linear_core_cheaper"]),
            "cross_paid": float(cross["linear_layer_cheaper_widened"]),
            "sa_gt_ffn": float(cross["sa_gt_ffn"]),
            "quadratic_dominates": float(cross["quadratic_dominates"]),
            "ratio_at_n": std_n / lin_n,
        }

    def draw(fig, data: dict) -> None:
        from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter

        plain = FuncFormatter(lambda v, _: f"{v:g}")  # no mathtext: it costs ~40 ms a redraw

        axA, axB = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.15, 1]})
        x = np.log2(data["ns"])
        bottom = np.zeros_like(x)
        for share, lab, col in zip(data["shares"], PARTS, _COLORS):
            axA.bar(x, share, width=0.8, bottom=bottom, color=col, label=lab)
            bottom = bottom + share
        i = data["i"]
        axA.bar(x[i], 1.0, width=0.9, fill=False, edgecolor="k", lw=2)
        if data["attention"] == "softmax":
            for v, lab in ((data["sa_gt_ffn"], "2hd"), (data["quadratic_dominates"], "6hd")):
                axA.axvline(np.log2(v), color="k", ls="--", lw=0.8)
                axA.text(np.log2(v) + 0.08, 1.02, lab, fontsize=7)
            name = "softmax"
        else:
            name = f"linear, κ = {data['kappa']} ({data['accounting']})"
        axA.set_xticks(x[::3], [f"{int(v)}" for v in data["ns"][::3]])
        axA.set_ylim(0, 1.22)
        axA.set_yticks([0, 0.25, 0.5, 0.75, 1])
        axA.set_xlabel("sequence length n")
        axA.set_ylabel("share of multiplications")
        q = data["shares"][1, i]
        axA.set_title(
            f"{name}: {_giga(data['total'][i])} G mult. at n = {data['n']}, core {q:.0%}",
            fontsize=9,
        )
        axA.legend(fontsize=7, loc="upper center", ncol=3, handlelength=1, columnspacing=0.8)

        g = data["grid"]
        sel = data["accounting"]
        for k, (acc, key, cross, col) in enumerate(
            (
                ("post", "ratio_post", data["cross_post"], "C0"),
                ("paid projections", "ratio_paid", data["cross_paid"], "C1"),
            )
        ):
            bold = acc == sel
            axB.plot(g, data[key], color=col, lw=2 if bold else 1, ls="-" if bold else "--")
            axB.plot([cross], [1.0], "o", color=col, ms=6)
            # coloured text instead of a legend (a legend costs ~7 ms a redraw)
            axB.text(
                0.03,
                0.95 - 0.09 * k,
                f"{acc}: equal at n = {cross:.0f}",
                color=col,
                fontsize=7,
                transform=axB.transAxes,
                va="top",
                fontweight="bold" if bold else "normal",
            )
        axB.axhline(1.0, color="k", lw=0.8)
        axB.plot([data["n"]], [data["ratio_at_n"]], "o", ms=9, mfc="none", mec="red")
        axB.axvline(data["n"], color="red", lw=0.6, alpha=0.5)
        axB.set_xscale("log", base=2)
        axB.set_yscale("log")
        axB.xaxis.set_major_locator(FixedLocator([2.0**k for k in range(6, 18, 2)]))
        axB.xaxis.set_major_formatter(plain)
        axB.yaxis.set_major_locator(LogLocator(base=10, subs=(1, 2, 5)))
        axB.yaxis.set_major_formatter(plain)
        axB.yaxis.set_minor_formatter(NullFormatter())
        axB.set_xlabel("sequence length n")
        axB.set_ylabel("cost(softmax) / cost(linear)")
        axB.set_title(
            f"linear, κ = {data['kappa']}: softmax/linear = {data['ratio_at_n']:.3g} "
            f"at n = {data['n']}",
            fontsize=9,
        )

    return Explorer(
        controls=[
            Control("n", list(N_CHOICES), 512, label="sequence length n"),
            Control("model", list(MODELS), "base: h=12, d=64", label="model"),
            Control("attention", ["softmax", "linear"], "softmax", label="split bill of"),
            Control("kappa", list(KAPPA_CHOICES), 4, label="key multiplier κ"),
            Control("accounting", list(ACCOUNTINGS), "post", label="linear accounting"),
        ],
        compute=compute,
        draw=draw,
        figsize=(10.0, 3.4),
    )
