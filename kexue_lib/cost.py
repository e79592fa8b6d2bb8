"""Cost models of a Transformer layer, FLOP counting, timing and nominal device numbers.

The multiplication model (Su 2021, "the linear Transformer is probably not the model you are
waiting for"): multiplying an ``a x b`` by a ``b x c`` matrix costs ``abc`` multiplications;
additions, softmax, LayerNorm, activations, residuals and embeddings are left out. A
multiply-add is 2 FLOPs, so ``unit="flop"`` doubles every count (what
``torch.utils.flop_counter.FlopCounterMode`` reports for matmuls).

Derived in book/positions/linear-transformer-cost.ipynb.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import torch

from kexue_lib._core import check_int, check_positive

__all__ = [
    "NOMINAL_H200",
    "arithmetic_intensity",
    "cost_crossovers",
    "count_flops",
    "roofline_seconds",
    "time_fn",
    "transformer_layer_cost",
]

#: Nominal NVIDIA H200 SXM numbers from NVIDIA's datasheet (dense, i.e. the "with sparsity"
#: tensor-core figures halved). Peak rates are upper bounds that real kernels do not reach;
#: use them for order-of-magnitude roofline arguments only.
NOMINAL_H200 = MappingProxyType(
    {
        "name": "NVIDIA H200 SXM (nominal datasheet values, dense)",
        "bf16_flops_per_s": 989e12,
        "fp16_flops_per_s": 989e12,
        "fp8_flops_per_s": 1979e12,
        "tf32_flops_per_s": 494.5e12,
        "fp32_flops_per_s": 67e12,
        "fp64_flops_per_s": 34e12,
        "hbm_bytes_per_s": 4.8e12,
        "hbm_bytes": 141e9,
        "ridge_bf16_flop_per_byte": 989e12 / 4.8e12,  # ~206 FLOP/B
    }
)

_UNITS = ("mul", "flop")


def _check_mult(name: str, x: Any) -> None:
    check_positive(name, x)


def transformer_layer_cost(
    n: int,
    h: int,
    d: int,
    *,
    ffn_mult: float = 4,
    attention: str = "softmax",
    key_mult: float = 1,
    value_mult: float = 1,
    widen_projections: bool = False,
    unit: str = "mul",
) -> dict:
    """Multiplications (or FLOPs) of one encoder layer on ``n`` tokens, ``h`` heads of size ``d``.

    With ``D = h d``, key size ``d_k = key_mult d`` and value size ``d_v = value_mult d``:

    - ``qkv_proj = 3 n D^2`` and ``out_proj = n D^2``; with ``widen_projections`` the
      projections produce the wider heads: ``qkv_proj = n D h (2 d_k + d_v)``,
      ``out_proj = n h d_v D``;
    - ``attn_core``: softmax ``h n^2 (d_k + d_v)`` (scores + weighted sum; ``2 n^2 h d`` at
      equal sizes); linear ``h 2 n d_k d_v`` (``phi(K)^T V`` then ``phi(Q)(.)``; the
      normaliser's ``2 n d_k`` per head is left out, as in the post);
    - ``ffn = 2 ffn_mult n D^2``.

    Returns a dict with those keys plus ``total`` and ``quadratic_share`` (the fraction of
    ``total`` that grows like ``n^2``; 0 for linear attention). ``unit="flop"`` doubles every
    count. ``attention="linear", key_mult=value_mult=4`` is the post's accounting.
    """
    for name, val in (("n", n), ("h", h), ("d", d)):
        check_int(name, val, minimum=1)
    for name, val in (("ffn_mult", ffn_mult), ("key_mult", key_mult), ("value_mult", value_mult)):
        _check_mult(name, val)
    if attention not in ("softmax", "linear"):
        raise ValueError(f"attention: expected 'softmax' or 'linear', got {attention!r}")
    if unit not in _UNITS:
        raise ValueError(f"unit: expected one of {_UNITS}, got {unit!r}")
    if not isinstance(widen_projections, bool):
        raise TypeError(
            f"widen_projections: expected a bool, got {type(widen_projections).__name__}"
        )
    D = h * d
    dk, dv = key_mult * d, value_mult * d
    if widen_projections:
        qkv = n * D * h * (2 * dk + dv)
        out = n * h * dv * D
    else:
        qkv = 3 * n * D * D
        out = n * D * D
    if attention == "softmax":
        core = h * n * n * (dk + dv)
        quad = core
    else:
        core = h * 2 * n * dk * dv
        quad = 0
    ffn = 2 * ffn_mult * n * D * D
    factor = 2 if unit == "flop" else 1
    res = {"qkv_proj": qkv, "attn_core": core, "out_proj": out, "ffn": ffn}
    res = {k: _tidy(v * factor) for k, v in res.items()}
    res["total"] = _tidy(sum(res.values()))
    res["quadratic_share"] = quad / (qkv + core + out + ffn)
    return res


def _tidy(x):
    """Integral floats back to int, so integer inputs give exact integer counts."""
    if isinstance(x, float) and x.is_integer():
        return int(x)
    return x


def cost_crossovers(h: int, d: int, *, key_mult: float = 4, ffn_mult: float = 4) -> dict:
    """Sequence lengths where the terms of :func:`transformer_layer_cost` trade places.

    - ``sa_gt_ffn = (ffn_mult - 2) h d``: self-attention (projections + core) costs more than
      the FFN beyond it (``2 h d`` = 1536 for BERT-base);
    - ``quadratic_dominates = (ffn_mult + 2) h d``: the ``n^2`` term exceeds all linear terms
      (``6 h d`` = 4608 for base);
    - ``linear_core_cheaper_equal_size = d``: linear core cheaper than softmax core, equal heads;
    - ``linear_core_cheaper = key_mult^2 d``: the same with keys and values widened by
      ``key_mult`` (the post's accounting, ``16 d`` = 1024 for base); with free projections
      this is also where the whole linear layer becomes cheaper;
    - ``linear_core_cheaper_wide_keys = key_mult d``: only keys widened (values keep ``d``);
    - ``linear_layer_cheaper_widened = (key_mult - 1) h d + key_mult d``: whole layer, keys
      widened *and* paid for by wider Q/K projections, values at ``d``.
    """
    check_int("h", h, minimum=1)
    check_int("d", d, minimum=1)
    _check_mult("key_mult", key_mult)
    _check_mult("ffn_mult", ffn_mult)
    hd = h * d
    out = {
        "sa_gt_ffn": (ffn_mult - 2) * hd,
        "quadratic_dominates": (ffn_mult + 2) * hd,
        "linear_core_cheaper_equal_size": d,
        "linear_core_cheaper": key_mult**2 * d,
        "linear_core_cheaper_wide_keys": key_mult * d,
        "linear_layer_cheaper_widened": (key_mult - 1) * hd + key_mult * d,
    }
    return {k: _tidy(float(v)) for k, v in out.items()}


def count_flops(fn_or_module: Callable, *inputs: Any, **kwargs: Any) -> int:
    """FLOPs of one call ``fn_or_module(*inputs, **kwargs)`` by ``FlopCounterMode``.

    Counts matmul-like ops as ``2 M N K`` (and the fused SDPA kernels it knows); elementwise
    ops, softmax, LayerNorm and activations count 0. Runs under ``torch.no_grad``.
    """
    from torch.utils.flop_counter import FlopCounterMode

    if not callable(fn_or_module):
        raise TypeError(
            f"fn_or_module: expected a callable or nn.Module, got {type(fn_or_module).__name__}"
        )
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        fn_or_module(*inputs, **kwargs)
    return int(counter.get_total_flops())


def _sync(args) -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def time_fn(
    fn: Callable, *args: Any, repeats: int = 20, warmup: int = 3, threads: int | None = None
) -> float:
    """Median wall time in seconds of ``fn(*args)`` over ``repeats`` calls after ``warmup``.

    CUDA work is synchronised before and after every call. ``threads`` sets
    ``torch.set_num_threads`` for the measurement and restores it afterwards. Timings vary
    from machine to machine and run to run: plot them or quote coarse ratios, never exact
    numbers.
    """
    if not callable(fn):
        raise TypeError(f"fn: expected a callable, got {type(fn).__name__}")
    check_int("repeats", repeats, minimum=1)
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup: expected an int >= 0, got {warmup!r}")
    if threads is not None:
        check_int("threads", threads, minimum=1)
    old = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            for _ in range(warmup):
                fn(*args)
            _sync(args)
            times = []
            for _ in range(repeats):
                _sync(args)
                t0 = time.perf_counter()
                fn(*args)
                _sync(args)
                times.append(time.perf_counter() - t0)
    finally:
        if threads is not None:
            torch.set_num_threads(old)
    return float(statistics.median(times))


def arithmetic_intensity(flops: float, bytes_moved: float) -> float:
    """FLOPs per byte of memory traffic, ``flops / bytes_moved`` (the roofline's x axis)."""
    check_positive("flops", flops, strict=False)
    check_positive("bytes_moved", bytes_moved)
    return float(flops) / float(bytes_moved)


def roofline_seconds(
    flops: float,
    bytes_moved: float,
    *,
    peak_flops_per_s: float | None = None,
    bytes_per_s: float | None = None,
) -> float:
    """Roofline lower bound on run time: ``max(flops / peak, bytes / bandwidth)``.

    Defaults: :data:`NOMINAL_H200` dense BF16 peak and HBM bandwidth.
    """
    peak = NOMINAL_H200["bf16_flops_per_s"] if peak_flops_per_s is None else peak_flops_per_s
    bw = NOMINAL_H200["hbm_bytes_per_s"] if bytes_per_s is None else bytes_per_s
    check_positive("flops", flops, strict=False)
    check_positive("bytes_moved", bytes_moved, strict=False)
    check_positive("peak_flops_per_s", peak)
    check_positive("bytes_per_s", bw)
    return max(float(flops) / peak, float(bytes_moved) / bw)
