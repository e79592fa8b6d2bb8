"""The small training loop the chapters share: explicit generators, masked accuracy, one thread.

Every chapter that trains a toy model (the copy tasks of Part II, the VAEs of Part III, the
embedding models of Part IV) runs the same loop: draw a batch from an explicit generator,
compute a loss, step an optimiser. Writing it once keeps the chapters short and makes two
executions print the same numbers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from kexue_lib._core import check_choice, check_int, check_positive, check_tensor

__all__ = ["fit", "masked_accuracy", "single_thread"]

_OPTIMIZERS = ("adam", "adamw", "sgd")


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run a block with ``torch.set_num_threads(1)``, restoring the previous count after.

    Models with a few thousand parameters train faster on one thread than on two: the
    hand-off between threads costs more than the arithmetic it shares.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _to(x: Any, device: torch.device) -> Any:
    return x.to(device) if isinstance(x, torch.Tensor) else x


def fit(
    model: torch.nn.Module,
    batch_fn: Callable[[torch.Generator], Sequence[Any] | torch.Tensor],
    loss_fn: Callable[..., torch.Tensor],
    *,
    steps: int,
    generator: torch.Generator,
    lr: float = 1e-3,
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    grad_clip: float | None = None,
    params: Sequence[torch.nn.Parameter] | None = None,
) -> list[float]:
    """Train ``model`` for ``steps`` steps; return the loss of every step.

    ``batch_fn(generator)`` draws one batch (a tensor or a tuple of tensors/None) on any
    device; tensors are moved to the device of the model's first parameter. ``loss_fn(model,
    *batch)`` returns a scalar loss. ``params`` restricts what is optimised (default: every
    parameter of ``model`` that requires a gradient). ``optimizer``: ``"adam"`` (default),
    ``"adamw"`` or ``"sgd"``; ``grad_clip`` clips the global gradient norm.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if not callable(batch_fn):
        raise TypeError(f"batch_fn: expected a callable, got {type(batch_fn).__name__}")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn: expected a callable, got {type(loss_fn).__name__}")
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator: expected a torch.Generator, got {type(generator).__name__}")
    check_int("steps", steps, minimum=1)
    check_positive("lr", lr)
    check_positive("weight_decay", weight_decay, strict=False)
    check_choice("optimizer", optimizer, _OPTIMIZERS)
    if grad_clip is not None:
        check_positive("grad_clip", grad_clip)
    chosen = [p for p in (model.parameters() if params is None else params) if p.requires_grad]
    if not chosen:
        raise ValueError(
            "params: expected at least one parameter that requires a gradient, got none"
        )
    device = chosen[0].device
    if optimizer == "sgd":
        opt = torch.optim.SGD(chosen, lr=lr, weight_decay=weight_decay)
    else:
        cls = torch.optim.Adam if optimizer == "adam" else torch.optim.AdamW
        opt = cls(chosen, lr=lr, weight_decay=weight_decay, foreach=True)
    losses = []
    model.train()
    for _ in range(steps):
        batch = batch_fn(generator)
        batch = (batch,) if isinstance(batch, torch.Tensor) else tuple(batch)
        loss = loss_fn(model, *(_to(b, device) for b in batch))
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise ValueError(f"loss_fn: expected a scalar tensor, got {type(loss).__name__}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(chosen, grad_clip)
        opt.step()
        losses.append(loss.item())
    model.eval()
    return losses


def masked_accuracy(
    logits: torch.Tensor, target: torch.Tensor, *, ignore_index: int = -100
) -> float:
    """Share of positions where ``logits.argmax(-1) == target``, skipping ``ignore_index``.

    logits: (..., C); target: (...) integer class ids. Returns NaN when every position is
    ignored (there is nothing to score).
    """
    check_tensor("logits", logits, floating=True)
    check_tensor("target", target)
    if target.is_floating_point():
        raise TypeError(f"target: expected an integer tensor, got dtype {target.dtype}")
    if logits.shape[:-1] != target.shape:
        raise ValueError(
            f"target: expected shape {tuple(logits.shape[:-1])} (logits without the class dim), "
            f"got {tuple(target.shape)}"
        )
    keep = target != ignore_index
    n = int(keep.sum())
    if n == 0:
        return float("nan")
    hits = (logits.argmax(-1) == target) & keep
    return int(hits.sum()) / n
