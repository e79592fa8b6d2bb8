"""Devices, generators, seeding and argument validation shared by every kexue_lib module."""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Sequence
from typing import Any

import torch

__all__ = [
    "check_choice",
    "check_dim_even",
    "check_int",
    "check_positive",
    "check_probability",
    "check_shape",
    "check_simplex",
    "check_tensor",
    "default_device",
    "make_generator",
    "seeded",
    "size_for_device",
    "to_numpy64",
    "work_dtype",
]


def default_device() -> torch.device:
    """CUDA when a GPU is present, else CPU. ``KEXUE_DEVICE`` overrides (e.g. ``cpu``)."""
    forced = os.environ.get("KEXUE_DEVICE")
    if forced:
        return torch.device(forced)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def make_generator(seed: int, device: torch.device | str | None = None) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` (default CPU) seeded with ``seed``."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed: expected an int, got {type(seed).__name__}")
    g = torch.Generator(device=torch.device(device) if device is not None else "cpu")
    g.manual_seed(seed)
    return g


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block under ``torch.manual_seed(seed)`` without disturbing the global RNG state.

    For APIs that take no generator (``torch.distributions``, ``nn.init``, dropout).
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed: expected an int, got {type(seed).__name__}")
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def size_for_device(cpu: Any, gpu: Any, device: torch.device | str | None = None) -> Any:
    """The one size knob: ``gpu`` on a CUDA device, ``cpu`` otherwise.

    ``KEXUE_SIZE=cpu|gpu`` in the environment overrides the choice (CI pins ``cpu``).
    """
    forced = os.environ.get("KEXUE_SIZE")
    if forced not in (None, "", "cpu", "gpu"):
        raise ValueError(f"KEXUE_SIZE: expected 'cpu' or 'gpu', got {forced!r}")
    if forced:
        return gpu if forced == "gpu" else cpu
    dev = torch.device(device) if device is not None else default_device()
    return gpu if dev.type == "cuda" else cpu


def to_numpy64(x: Any):
    """A float64 numpy array of ``x`` (tensor, array or number): the edge to scipy and matplotlib."""
    import numpy as np

    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """The precision to compute in: float64 stays float64, everything else works in float32.

    Half types (fp16, bf16) lose too much in sums, angles, QR and logsumexp; modules compute in
    this dtype and cast the result back to the caller's dtype.
    """
    return torch.float64 if dtype == torch.float64 else torch.float32


# --------------------------------------------------------------------------- validation


def check_tensor(name: str, x: Any, *, floating: bool = False) -> torch.Tensor:
    """Raise TypeError unless ``x`` is a tensor (a floating one when ``floating``)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if floating and not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got dtype {x.dtype}")
    return x


def _as_float(name: str, x: Any) -> float:
    if isinstance(x, torch.Tensor):
        if x.numel() != 1:
            raise ValueError(f"{name}: expected a scalar, got a tensor of shape {tuple(x.shape)}")
        x = x.item()
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise TypeError(f"{name}: expected a number, got {type(x).__name__}")
    return float(x)


def check_positive(name: str, x: Any, *, strict: bool = True, integer: bool = False) -> Any:
    """Raise unless ``x`` is a (strictly) positive finite number; returns ``x`` unchanged."""
    if integer and (isinstance(x, bool) or not isinstance(x, int)):
        raise TypeError(f"{name}: expected an int, got {type(x).__name__}")
    v = _as_float(name, x)
    ok = (v > 0 if strict else v >= 0) and math.isfinite(v)
    if not ok:
        bound = "> 0" if strict else ">= 0"
        raise ValueError(f"{name}: expected a finite number {bound}, got {x!r}")
    return x


def check_probability(name: str, x: Any, *, open_interval: bool = True) -> float:
    """Raise unless ``x`` lies in (0, 1) (or [0, 1] when ``open_interval=False``)."""
    v = _as_float(name, x)
    ok = (0 < v < 1) if open_interval else (0 <= v <= 1)
    if not ok:
        rng = "(0, 1)" if open_interval else "[0, 1]"
        raise ValueError(f"{name}: expected a number in {rng}, got {x!r}")
    return v


def check_int(name: str, value: Any, *, minimum: int = 1) -> int:
    """Raise unless ``value`` is an int (not a bool) of at least ``minimum``; returns it."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value}")
    return value


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> Any:
    """Raise ValueError unless ``value`` is one of ``choices``; returns it."""
    if value not in choices:
        raise ValueError(f"{name}: expected one of {list(choices)}, got {value!r}")
    return value


def check_dim_even(name: str, d: Any) -> int:
    """Raise unless ``d`` is a positive even int (rotary and sinusoidal sizes)."""
    if isinstance(d, bool) or not isinstance(d, int):
        raise TypeError(f"{name}: expected an int, got {type(d).__name__}")
    if d <= 0 or d % 2:
        raise ValueError(f"{name}: expected a positive even size, got {d}")
    return d


def check_shape(name: str, x: torch.Tensor, shape: Sequence[int | None]) -> torch.Tensor:
    """Raise unless ``x`` has ``len(shape)`` dims matching ``shape`` (``None`` = any size)."""
    check_tensor(name, x)
    if x.dim() != len(shape) or any(s is not None and s != n for s, n in zip(shape, x.shape)):
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name}: expected shape {want}, got {tuple(x.shape)}")
    return x


def check_simplex(name: str, p: torch.Tensor, *, dim: int = -1, atol: float = 1e-5) -> torch.Tensor:
    """Raise unless ``p`` is non-negative and sums to 1 along ``dim`` (within ``atol``)."""
    check_tensor(name, p, floating=True)
    if not torch.isfinite(p).all():
        raise ValueError(f"{name}: expected finite probabilities, got non-finite entries")
    if (p < 0).any():
        raise ValueError(f"{name}: expected non-negative probabilities, got min {p.min().item():g}")
    s = p.sum(dim=dim, dtype=torch.float64)
    err = (s - 1).abs().max().item() if s.numel() else 0.0
    if err > atol:
        raise ValueError(
            f"{name}: expected probabilities summing to 1 along dim {dim}, "
            f"got a sum off by {err:.3g}"
        )
    return p
