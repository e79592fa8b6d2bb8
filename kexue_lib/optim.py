"""Gradient accumulation inside the momentum buffer (kexue.fm/archives/8634).

Accumulating ``k`` mini-batch gradients and then taking one SGD-with-momentum step needs a
buffer for the running sum. The post observes that SGDM's momentum buffer can be that buffer:
decay it only at the first micro-step of each window of ``k``, add ``(1 - beta) / k`` of every
micro-gradient, and move the parameters only at the last micro-step. The result equals explicit
accumulation exactly (:class:`SGDMAccum`). For Adam the first moment splits the same way, but
the second moment of a *mean* gradient is not a sum of per-micro-step terms, so
:class:`AdamAccum` accumulates the mean of the squares instead: an approximation.

Both optimisers are called once per micro-batch (``loss.backward(); opt.step();
opt.zero_grad()``), keep one state tensor per moment on the parameter's device and dtype, and
read ``lr`` from the parameter group at update time, so learning-rate schedulers work.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import torch

from kexue_lib._core import check_choice, check_int, check_positive, check_probability

__all__ = [
    "AdamAccum",
    "SGDMAccum",
    "beta_tilde",
    "chi",
    "explicit_accumulation_step",
    "limit_decay",
    "window_weights",
]


def chi(t: int, k: int) -> int:
    """The post's indicator: 1 when the micro-step ``t >= 1`` ends a window of ``k``, else 0."""
    t = check_int("t", t, minimum=1)
    k = check_int("k", k, minimum=1)
    return int(t % k == 0)


def beta_tilde(beta: float, k: int) -> float:
    """The momentum of a plain EMA that mimics ``k``-step accumulation: ``1 - (1 - beta) / k``."""
    beta = check_probability("beta", beta, open_interval=False)
    k = check_int("k", k, minimum=1)
    return 1.0 - (1.0 - beta) / k


def window_weights(beta: float, k: int, n: int, *, scheme: str) -> torch.Tensor:
    """Weights ``(n,)`` (float64) on the last ``n`` micro-gradients at an update step, newest first.

    ``scheme``: ``"accumulate"`` (exact accumulation: ``(1 - beta) / k`` on each of the last
    ``k``, then ``beta`` times less per earlier window), ``"beta_tilde"`` (a plain EMA with
    :func:`beta_tilde` on every micro-step) or ``"ema"`` (a plain EMA with ``beta`` itself,
    the post's "update less, change nothing else" recipe).
    """
    beta = check_probability("beta", beta, open_interval=False)
    k = check_int("k", k, minimum=1)
    n = check_int("n", n, minimum=1)
    check_choice("scheme", scheme, ("accumulate", "beta_tilde", "ema"))
    i = torch.arange(n, dtype=torch.float64)
    if scheme == "accumulate":
        return (1 - beta) / k * beta ** torch.div(i, k, rounding_mode="floor")
    if scheme == "beta_tilde":
        bt = beta_tilde(beta, k)
        return (1 - bt) * bt**i
    return (1 - beta) * beta**i  # "ema"


def _check_params(params) -> list:
    if isinstance(params, torch.Tensor):
        raise TypeError("params: expected an iterable of tensors or parameter groups, got a Tensor")
    return list(params)


class SGDMAccum(torch.optim.Optimizer):
    """SGD with momentum whose momentum buffer accumulates ``k`` micro-batch gradients.

    With micro-step ``t = 1, 2, ...`` and ``chi(t, k)``::

        m_t = beta * m_{t-1} + (1 - beta) / k * g_t      if (t - 1) % k == 0
        m_t =        m_{t-1} + (1 - beta) / k * g_t      otherwise
        theta_t = theta_{t-1} - lr * m_t                  if t % k == 0 (else unchanged)

    which equals, at every ``t = k s``, the EMA-form momentum ``m = beta m + (1 - beta) mean(g)``
    stepped once on the mean of the window's ``k`` gradients. ``k = 1`` is plain SGDM in EMA
    form, i.e. ``torch.optim.SGD(momentum=beta, dampening=beta)`` started from a zero buffer.
    ``weight_decay`` adds ``weight_decay * theta`` to every micro-gradient (theta is frozen
    inside a window, so this is the decay of the mean gradient).

    ``window_decay=False`` is the post's cheaper variant, not accumulation: a plain EMA
    ``m = beta m + (1 - beta) g`` on every micro-step, parameters still moved only every ``k``
    (pass ``beta=beta_tilde(beta, k)`` for the post's "change beta" recipe).
    """

    def __init__(
        self,
        params: Iterable,
        lr: float,
        *,
        beta: float = 0.9,
        k: int = 1,
        weight_decay: float = 0.0,
        window_decay: bool = True,
    ) -> None:
        lr = check_positive("lr", lr, strict=False)
        beta = check_probability("beta", beta, open_interval=False)
        k = check_int("k", k, minimum=1)
        weight_decay = check_positive("weight_decay", weight_decay, strict=False)
        if not isinstance(window_decay, bool):
            raise TypeError(f"window_decay: expected a bool, got {type(window_decay).__name__}")
        defaults = {"lr": lr, "beta": beta, "k": k, "weight_decay": weight_decay}
        super().__init__(_check_params(params), {**defaults, "window_decay": window_decay})

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta, k, lr, wd = group["beta"], group["k"], group["lr"], group["weight_decay"]
            window = group["window_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["m"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                t, m = state["step"], state["m"]
                g = p.grad if wd == 0 else p.grad.add(p, alpha=wd)
                if window:
                    if (t - 1) % k == 0:
                        m.mul_(beta)
                    m.add_(g, alpha=(1 - beta) / k)
                else:
                    m.mul_(beta).add_(g, alpha=1 - beta)
                if t % k == 0:
                    p.sub_(m, alpha=lr)
        return loss


class AdamAccum(torch.optim.Optimizer):
    """Adam whose moment buffers accumulate ``k`` micro-batches (the post's approximation).

    ``m`` is updated as in :class:`SGDMAccum` (exact); ``v`` accumulates ``(1 - beta2) / k *
    g_t**2``, the mean of the squares where true accumulation would need the square of the
    mean. Bias corrections count macro-steps ``s = t // k``; parameters move when ``t % k ==
    0``. ``eps_inside_sqrt=False`` divides by ``sqrt(v_hat) + eps`` like ``torch.optim.Adam``
    (so ``k = 1`` reproduces it); ``True`` divides by ``sqrt(v_hat + eps)`` as the post writes.
    """

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-3,
        *,
        betas: Sequence[float] = (0.9, 0.999),
        eps: float = 1e-8,
        k: int = 1,
        eps_inside_sqrt: bool = False,
    ) -> None:
        lr = check_positive("lr", lr, strict=False)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"betas: expected a pair (beta1, beta2), got {betas!r}")
        b1 = check_probability("betas[0]", betas[0], open_interval=False)
        b2 = check_probability("betas[1]", betas[1], open_interval=False)
        if b1 >= 1 or b2 >= 1:
            raise ValueError(f"betas: expected values in [0, 1), got {tuple(betas)}")
        eps = check_positive("eps", eps, strict=False)
        k = check_int("k", k, minimum=1)
        if not isinstance(eps_inside_sqrt, bool):
            raise TypeError(
                f"eps_inside_sqrt: expected a bool, got {type(eps_inside_sqrt).__name__}"
            )
        defaults = {"lr": lr, "betas": (b1, b2), "eps": eps, "k": k, "inside": eps_inside_sqrt}
        super().__init__(_check_params(params), defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            (b1, b2), k, lr, eps = group["betas"], group["k"], group["lr"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["m"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["v"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                t, m, v, g = state["step"], state["m"], state["v"], p.grad
                if (t - 1) % k == 0:
                    m.mul_(b1)
                    v.mul_(b2)
                m.add_(g, alpha=(1 - b1) / k)
                v.addcmul_(g, g, value=(1 - b2) / k)
                if t % k == 0:
                    s = t // k
                    m_hat = m / (1 - b1**s)
                    v_hat = v / (1 - b2**s)
                    denom = (v_hat + eps).sqrt() if group["inside"] else v_hat.sqrt().add_(eps)
                    p.addcdiv_(m_hat, denom, value=-lr)
        return loss


def explicit_accumulation_step(
    model: torch.nn.Module,
    loss_fn: Callable[..., torch.Tensor],
    micro_batches: Sequence,
    optimizer: torch.optim.Optimizer,
) -> float:
    """The reference recipe: ``(loss / k).backward()`` on each of ``k`` micro-batches, one step.

    ``loss_fn(model, *batch)`` returns a scalar; returns the mean loss. The gradients stay in
    ``.grad`` across the ``k`` backward passes: the buffer :class:`SGDMAccum` does without.
    """
    if not isinstance(micro_batches, Sequence) or len(micro_batches) == 0:
        raise ValueError(
            f"micro_batches: expected a non-empty sequence of batches, got {micro_batches!r}"
        )
    k = len(micro_batches)
    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    for batch in micro_batches:
        batch = batch if isinstance(batch, (tuple, list)) else (batch,)
        loss = loss_fn(model, *batch) / k
        loss.backward()
        total += float(loss.detach())
    optimizer.step()
    return total


def limit_decay(beta: float) -> float:
    """``lim_{k -> inf} beta_tilde(beta, k) ** k = exp(-(1 - beta))``: the decay per window."""
    beta = check_probability("beta", beta, open_interval=False)
    return math.exp(-(1 - beta))
