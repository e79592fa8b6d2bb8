"""Softmax and linear attention, kernel feature maps and attention masks.

Conventions (the whole book; derived in book/positions/): per-head tensors are ``(B, h, n, d)`` (any leading dims work);
masks are bool with True = may attend, shape ``(n_q, n_k)`` or ``(B, n_q, n_k)`` (broadcast
over heads) or ``(B, h, n_q, n_k)``; a Performer projection ``omega`` is ``(m, d)`` and is
applied as ``x @ omega.T``. Every function keeps the caller's device; accumulations (scores,
``phi(K)^T V``, normalisers, prefix sums) run in at least float32 and the result is cast back
to the input dtype.

Linear attention (Katharopoulos et al. 2020) replaces ``exp(q.k)`` by ``phi(q).phi(k)``::

    out_i = phi(q_i)^T [sum_j phi(k_j) v_j^T] / (phi(q_i)^T [sum_j phi(k_j)] + eps)

which costs ``O(n m d_v)`` instead of ``O(n^2 d)``; the causal form replaces the sums by
prefix sums, computed here chunk by chunk.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from kexue_lib._core import check_int, check_positive, check_tensor, work_dtype

__all__ = [
    "attend",
    "band_mask",
    "causal_mask",
    "elu_plus_one",
    "exp_features",
    "linear_attention",
    "linear_attention_weights",
    "performer_positive_features",
    "performer_trig_features",
    "rank_collapse_residual",
    "relu_eps",
    "softmax_attention",
    "unilm_mask",
    "uniae_mask",
    "with_key_padding",
]

_ROPE_VARIANTS = ("numerator_only", "rotate_both", "cosine")
FeatureMap = Callable[[torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------- helpers


def _check_qkv(q, k, v) -> None:
    for name, x in (("q", q), ("k", k), ("v", v)):
        check_tensor(name, x, floating=True)
        if x.dim() < 2:
            raise ValueError(
                f"{name}: expected shape (..., n, d) with at least 2 dims, got {tuple(x.shape)}"
            )
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"k: expected last dim {q.shape[-1]} (the query size), got shape {tuple(k.shape)}"
        )
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(
            f"v: expected {k.shape[-2]} rows (one per key), got shape {tuple(v.shape)}"
        )
    _check_leading(q=q, k=k, v=v)
    if q.dtype != k.dtype or q.dtype != v.dtype:
        raise TypeError(f"q, k, v: expected one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if q.device != k.device or q.device != v.device:
        raise ValueError(f"q, k, v: expected one device, got {q.device}, {k.device}, {v.device}")


def _check_leading(**named: torch.Tensor) -> None:
    """Raise unless the leading (batch, head) dims ``x.shape[:-2]`` broadcast together."""
    lead = {name: tuple(x.shape[:-2]) for name, x in named.items()}
    try:
        torch.broadcast_shapes(*lead.values())
    except RuntimeError:
        names = list(lead)
        raise ValueError(
            f"{', '.join(names[1:])}: expected leading (batch, head) dims broadcastable with "
            f"{names[0]}'s {lead[names[0]]}, got "
            + ", ".join(f"{n} {sh}" for n, sh in list(lead.items())[1:])
            + " (a missing or extra head dim?)"
        ) from None


def _prepare_mask(attn_mask: torch.Tensor, q_dim: int, n_q: int, n_k: int, device) -> torch.Tensor:
    """Bring a (n_q, n_k) / (B, n_q, n_k) / (B, h, n_q, n_k) mask to broadcast against scores."""
    check_tensor("attn_mask", attn_mask)
    if attn_mask.dtype != torch.bool and not attn_mask.is_floating_point():
        raise TypeError(
            f"attn_mask: expected a bool mask (True = may attend) or a float bias, got {attn_mask.dtype}"
        )
    if attn_mask.dim() < 2 or attn_mask.shape[-2:] != (n_q, n_k):
        raise ValueError(
            f"attn_mask: expected shape (..., {n_q}, {n_k}) (queries, keys), got {tuple(attn_mask.shape)}"
        )
    if attn_mask.device != device:
        raise ValueError(f"attn_mask: expected device {device}, got {attn_mask.device}")
    if attn_mask.dim() == 3 and q_dim == 4:  # (B, n_q, n_k): broadcast over heads
        attn_mask = attn_mask.unsqueeze(-3)
    return attn_mask


def _causal(n_q: int, n_k: int, device) -> torch.Tensor:
    """Query i may see key j iff j <= i + (n_k - n_q) (queries aligned with the last keys)."""
    i = torch.arange(n_q, device=device)[:, None]
    j = torch.arange(n_k, device=device)[None, :]
    return j <= i + (n_k - n_q)


# --------------------------------------------------------------------------- softmax attention


def attend(logits: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Row-softmax of ``logits`` applied to ``v``: ``(..., n_q, n_k), (..., n_k, d_v) -> (..., n_q, d_v)``.

    ``out = softmax(logits, -1) @ v``, computed in float32 (or float64) and cast back.
    ``-inf`` logits are masked keys; a row with no finite logit gives a zero output (as
    ``F.scaled_dot_product_attention`` does), never NaN.
    """
    check_tensor("logits", logits, floating=True)
    check_tensor("v", v, floating=True)
    if logits.dim() < 2 or v.dim() < 2 or logits.shape[-1] != v.shape[-2]:
        raise ValueError(
            f"v: expected (..., {logits.shape[-1] if logits.dim() else '?'}, d_v) matching the logits' "
            f"key count, got logits {tuple(logits.shape)} and v {tuple(v.shape)}"
        )
    _check_leading(logits=logits, v=v)
    acc = work_dtype(torch.promote_types(logits.dtype, v.dtype))
    w = _safe_softmax(logits.to(acc))
    return (w @ v.to(acc)).to(v.dtype)


def _safe_softmax(x: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dim; rows that are entirely -inf give zeros."""
    row_max = x.amax(-1, keepdim=True)
    dead = ~torch.isfinite(row_max)
    shifted = x - torch.where(dead, torch.zeros_like(row_max), row_max)
    e = torch.exp(shifted)
    s = e.sum(-1, keepdim=True)
    return torch.where(dead, torch.zeros_like(e), e / s.clamp_min(torch.finfo(x.dtype).tiny))


def softmax_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    attn_mask: torch.Tensor | None = None,
    causal: bool = False,
    scale: float | None = None,
    return_weights: bool = False,
):
    """Scaled dot-product attention: ``q: (B, h, n_q, d), k: (B, h, n_k, d), v: (B, h, n_k, d_v)``.

    ``out = softmax(scale * q k^T + mask) v`` with ``scale = 1/sqrt(d)`` by default. Uses
    ``F.scaled_dot_product_attention`` unless ``return_weights`` is set, in which case the
    explicit float32 path returns ``(out, weights)`` with ``weights: (B, h, n_q, n_k)``.

    ``attn_mask``: bool (True = may attend) or a float bias added to the scores; shapes
    ``(n_q, n_k)``, ``(B, n_q, n_k)`` (broadcast over heads) or ``(B, h, n_q, n_k)``.
    ``causal``: query i sees keys ``j <= i + (n_k - n_q)`` (the usual lower triangle when
    ``n_q == n_k``); combined with ``attn_mask`` by logical and. Fully masked rows give 0.
    """
    _check_qkv(q, k, v)
    n_q, d = q.shape[-2], q.shape[-1]
    n_k = k.shape[-2]
    if scale is None:
        scale = 1.0 / math.sqrt(d)
    else:
        check_positive("scale", scale)
        scale = float(scale)
    if not isinstance(causal, bool):
        raise TypeError(f"causal: expected a bool, got {type(causal).__name__}")
    mask = None if attn_mask is None else _prepare_mask(attn_mask, q.dim(), n_q, n_k, q.device)
    if causal:
        cm = _causal(n_q, n_k, q.device)
        if mask is None:
            mask = cm
        elif mask.dtype == torch.bool:
            mask = mask & cm
        else:
            mask = mask.masked_fill(~cm, float("-inf"))
    if not return_weights:
        if mask is not None and mask.is_floating_point():
            mask = mask.to(q.dtype)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    acc = work_dtype(q.dtype)
    logits = (q.to(acc) @ k.to(acc).transpose(-1, -2)) * scale
    if mask is not None:
        if mask.dtype == torch.bool:
            logits = logits.masked_fill(~mask, float("-inf"))
        else:
            logits = logits + mask.to(acc)
    w = _safe_softmax(logits)
    out = (w @ v.to(acc)).to(v.dtype)
    return out, w.to(q.dtype)


# --------------------------------------------------------------------------- masks


def causal_mask(n: int, *, device: torch.device | str | None = None) -> torch.Tensor:
    """Lower-triangular mask ``(n, n)``: query i may attend key j iff ``j <= i``."""
    check_int("n", n, minimum=1)
    return _causal(n, n, device)


def band_mask(n: int, width: int, *, device: torch.device | str | None = None) -> torch.Tensor:
    """Local window ``(n, n)``: query i may attend key j iff ``|j - i| <= width``."""
    check_int("n", n, minimum=1)
    check_int("width", width, minimum=0)
    i = torch.arange(n, device=device)
    return (i[None, :] - i[:, None]).abs() <= width


def _check_segments(segment_ids: torch.Tensor) -> torch.Tensor:
    check_tensor("segment_ids", segment_ids)
    if segment_ids.dim() != 2:
        raise ValueError(f"segment_ids: expected shape (B, n), got {tuple(segment_ids.shape)}")
    if segment_ids.is_floating_point() or segment_ids.is_complex():
        raise TypeError(f"segment_ids: expected an integer or bool tensor, got {segment_ids.dtype}")
    s = segment_ids.long()
    if ((s != 0) & (s != 1)).any():
        raise ValueError("segment_ids: expected entries 0 (source) or 1 (target), got other values")
    return s


def unilm_mask(segment_ids: torch.Tensor) -> torch.Tensor:
    """UniLM seq2seq mask ``(B, n) -> (B, n, n)``: source (segment 0) bidirectional, target causal.

    With ``c_t = sum_{u <= t} s_u``, query i may attend key j iff ``c_j <= c_i``: source
    rows see the whole source, target rows see the source and their own past.
    """
    s = _check_segments(segment_ids)
    c = s.cumsum(-1)
    return c[:, None, :] <= c[:, :, None]


def uniae_mask(
    segment_ids: torch.Tensor, *, cls_index: int = 0, allow_cls: bool = True
) -> torch.Tensor:
    """UniAE mask ``(B, n) -> (B, n, n)``: the segments run independently, plus key ``cls_index``.

    ``M_ij = [s_i = s_j] and [c_j <= c_i]`` (source bidirectional, target causal, no
    cross-segment attention), or-ed with ``[j = cls_index]`` when ``allow_cls``.
    ``allow_cls=False`` is the "independent" mask.
    """
    s = _check_segments(segment_ids)
    n = s.shape[-1]
    check_int("cls_index", cls_index, minimum=0)
    if cls_index >= n:
        raise ValueError(f"cls_index: expected an index < n = {n}, got {cls_index}")
    if not isinstance(allow_cls, bool):
        raise TypeError(f"allow_cls: expected a bool, got {type(allow_cls).__name__}")
    c = s.cumsum(-1)
    m = (s[:, None, :] == s[:, :, None]) & (c[:, None, :] <= c[:, :, None])
    if allow_cls:
        m[:, :, cls_index] = True
    return m


def with_key_padding(mask: torch.Tensor, key_padding: torch.Tensor) -> torch.Tensor:
    """Forbid padded keys: ``mask: (n_q, n_k) | (B, n_q, n_k)``, ``key_padding: (B, n_k)`` (True = real).

    Returns ``mask & key_padding[:, None, :]`` of shape ``(B, n_q, n_k)``. A row left with no
    allowed key (a padded query, say) is given key ``min(i, n_k - 1)`` (itself, for square
    masks), so no softmax row is empty.
    """
    check_tensor("mask", mask)
    check_tensor("key_padding", key_padding)
    if mask.dtype != torch.bool:
        raise TypeError(f"mask: expected a bool tensor (True = may attend), got {mask.dtype}")
    if key_padding.dtype != torch.bool:
        raise TypeError(
            f"key_padding: expected a bool tensor (True = real token), got {key_padding.dtype}"
        )
    if mask.dim() not in (2, 3):
        raise ValueError(
            f"mask: expected shape (n_q, n_k) or (B, n_q, n_k), got {tuple(mask.shape)}"
        )
    if key_padding.dim() != 2 or key_padding.shape[-1] != mask.shape[-1]:
        raise ValueError(
            f"key_padding: expected shape (B, {mask.shape[-1]}), got {tuple(key_padding.shape)}"
        )
    if mask.dim() == 3 and mask.shape[0] not in (1, key_padding.shape[0]):
        raise ValueError(
            f"mask: expected batch size {key_padding.shape[0]} or 1, got {mask.shape[0]}"
        )
    out = mask & key_padding[:, None, :]
    n_q, n_k = out.shape[-2:]
    empty = ~out.any(-1)  # (B, n_q)
    if empty.any():
        fallback = torch.zeros(n_q, n_k, dtype=torch.bool, device=out.device)
        fallback[torch.arange(n_q), torch.arange(n_q).clamp_max(n_k - 1)] = True
        out = out | (empty[..., None] & fallback)
    return out


# --------------------------------------------------------------------------- feature maps


def elu_plus_one(x: torch.Tensor) -> torch.Tensor:
    """``phi(x) = 1 + elu(x)`` elementwise, ``(..., d) -> (..., d)``: ``e^x`` for x < 0, ``1 + x`` else."""
    check_tensor("x", x, floating=True)
    return F.elu(x) + 1


def relu_eps(x: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """``phi(x) = relu(x) + eps`` elementwise, ``(..., d) -> (..., d)`` (strictly positive)."""
    check_tensor("x", x, floating=True)
    check_positive("eps", eps)
    return F.relu(x) + eps


def _stabilize(z: torch.Tensor, stabilize: str | None) -> torch.Tensor:
    if stabilize is None:
        return z
    if stabilize == "row":
        return z - z.amax(-1, keepdim=True).detach()
    if stabilize == "global":
        if z.dim() < 2:
            return z - z.amax().detach()
        return z - z.amax(dim=(-2, -1), keepdim=True).detach()
    raise ValueError(f"stabilize: expected 'row', 'global' or None, got {stabilize!r}")


def _check_omega(omega: torch.Tensor, x: torch.Tensor) -> None:
    check_tensor("omega", omega, floating=True)
    if omega.dim() != 2 or omega.shape[-1] != x.shape[-1]:
        raise ValueError(
            f"omega: expected shape (m, {x.shape[-1]}) applied as x @ omega.T, got {tuple(omega.shape)}"
        )
    if omega.device != x.device:
        raise ValueError(f"omega: expected device {x.device}, got {omega.device}")


def exp_features(
    x: torch.Tensor, W: torch.Tensor | None = None, *, stabilize: str | None = "row"
) -> torch.Tensor:
    """Exponential features ``(..., n, d) -> (..., n, m)``: ``phi(x) = exp(x W^T - c)``.

    ``W: (m, d)`` (identity when None, m = d). ``c`` is a constant that cancels in linear
    attention: ``"row"`` = the max of each row (exact for **queries**, whose rows are
    normalised separately), ``"global"`` = one max over the last two dims (the only shift
    allowed for **keys**), ``None`` = no shift (may overflow).
    """
    check_tensor("x", x, floating=True)
    z = x
    if W is not None:
        _check_omega(W, x)
        z = x @ W.to(x.dtype).T
    acc = work_dtype(z.dtype)
    return torch.exp(_stabilize(z.to(acc), stabilize)).to(x.dtype)


def performer_positive_features(
    x: torch.Tensor, omega: torch.Tensor, *, is_query: bool, stabilize: bool = True
) -> torch.Tensor:
    """Performer positive random features ``(..., n, d) -> (..., n, m)``, ``omega: (m, d)``.

    ``phi(x)_l = exp(omega_l . x - |x|^2 / 2) / sqrt(m)`` so that, for ``omega_l ~ N(0, I)``,
    ``E[phi(q) . phi(k)] = exp(q . k)`` (Choromanski et al. 2021). ``stabilize=False`` is the
    unbiased estimator itself. ``stabilize=True`` subtracts the row max for queries
    (``is_query=True``) and one global max over ``(n, m)`` for keys: attention outputs are
    unchanged (the shifts cancel between numerator and denominator) and exp cannot overflow.
    To approximate ``softmax(q k^T / sqrt(d))`` pass ``x * d**-0.25``.
    """
    check_tensor("x", x, floating=True)
    _check_omega(omega, x)
    if not isinstance(is_query, bool):
        raise TypeError(f"is_query: expected a bool, got {type(is_query).__name__}")
    acc = work_dtype(x.dtype)
    xa = x.to(acc)
    m = omega.shape[0]
    z = xa @ omega.to(acc).T - 0.5 * (xa * xa).sum(-1, keepdim=True)
    if stabilize:
        z = _stabilize(z, "row" if is_query else "global")
    return (torch.exp(z) / math.sqrt(m)).to(x.dtype)


def performer_trig_features(x: torch.Tensor, omega: torch.Tensor) -> torch.Tensor:
    """Performer trigonometric random features ``(..., n, d) -> (..., n, 2m)``, ``omega: (m, d)``.

    ``phi(x) = exp(|x|^2 / 2) / sqrt(m) [sin(omega x), cos(omega x)]``; unbiased for
    ``exp(q . k)`` because ``E[cos(omega . (q - k))] = exp(-|q - k|^2 / 2)``, but the products
    can be negative (so linear-attention denominators can vanish).
    """
    check_tensor("x", x, floating=True)
    _check_omega(omega, x)
    acc = work_dtype(x.dtype)
    xa = x.to(acc)
    m = omega.shape[0]
    proj = xa @ omega.to(acc).T
    amp = torch.exp(0.5 * (xa * xa).sum(-1, keepdim=True)) / math.sqrt(m)
    return (amp * torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)).to(x.dtype)


# --------------------------------------------------------------------------- linear attention


def _split_maps(feature_map) -> tuple[FeatureMap, FeatureMap]:
    if isinstance(feature_map, (tuple, list)):
        if len(feature_map) != 2 or not all(callable(f) for f in feature_map):
            raise TypeError(
                "feature_map: expected a callable or a pair (query_map, key_map) of callables"
            )
        return feature_map[0], feature_map[1]
    if not callable(feature_map):
        raise TypeError(
            f"feature_map: expected a callable or a pair of callables, got {type(feature_map).__name__}"
        )
    return feature_map, feature_map


def _features(q, k, feature_map, rope_positions, rope_variant):
    """(num_q, num_k, den_q, den_k) in the accumulation dtype; den_* is None when equal to num_*."""
    if rope_variant not in _ROPE_VARIANTS:
        raise ValueError(f"rope_variant: expected one of {_ROPE_VARIANTS}, got {rope_variant!r}")
    if feature_map is None:
        if rope_variant != "cosine":
            raise TypeError("feature_map: expected a callable or a pair of callables, got None")
        fq_map = fk_map = None
    else:
        fq_map, fk_map = _split_maps(feature_map)
    acc = work_dtype(q.dtype)
    fq = (q if fq_map is None else fq_map(q)).to(acc)
    fk = (k if fk_map is None else fk_map(k)).to(acc)
    if fq.shape[-1] != fk.shape[-1]:
        raise ValueError(
            f"feature_map: query and key features differ in size: {tuple(fq.shape)} vs {tuple(fk.shape)}"
        )
    if fq.shape[-2] != q.shape[-2] or fk.shape[-2] != k.shape[-2]:
        raise ValueError("feature_map: expected a map (..., n, d) -> (..., n, m) that keeps n")
    if rope_positions is not None:
        check_tensor("rope_positions", rope_positions)
        if (
            rope_positions.dim() != 1
            or rope_positions.shape[0] != q.shape[-2]
            or q.shape[-2] != k.shape[-2]
        ):
            raise ValueError(
                f"rope_positions: expected shape ({q.shape[-2]},) with as many keys as queries, "
                f"got {tuple(rope_positions.shape)} for n_q={q.shape[-2]}, n_k={k.shape[-2]}"
            )
        if fq.shape[-1] % 2:
            raise ValueError(
                f"feature_map: RoPE needs an even feature size, got m = {fq.shape[-1]}"
            )
    if rope_variant == "cosine":
        fq = F.normalize(fq, dim=-1)
        fk = F.normalize(fk, dim=-1)
        if rope_positions is not None:
            fq, fk = _rope(fq, rope_positions), _rope(fk, rope_positions)
        one_q = torch.ones_like(fq[..., :1])
        one_k = torch.ones_like(fk[..., :1])
        return torch.cat([one_q, fq], -1), torch.cat([one_k, fk], -1), None, None
    if rope_positions is None:
        return fq, fk, None, None
    rq, rk = _rope(fq, rope_positions), _rope(fk, rope_positions)
    if rope_variant == "rotate_both":
        return rq, rk, None, None
    return rq, rk, fq, fk


def _rope(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    from kexue_lib.rope import apply_rope

    return apply_rope(x, positions)


def _prefix_product(
    fq: torch.Tensor, fk: torch.Tensor, v: torch.Tensor, causal: bool, chunk: int
) -> torch.Tensor:
    """``sum_j (fq_i . fk_j) v_j`` over all j (or j <= i when causal): O(n m d_v) work."""
    if not causal:
        return fq @ (fk.transpose(-1, -2) @ v)
    n = fq.shape[-2]
    m, dv = fq.shape[-1], v.shape[-1]
    c = min(chunk, n)
    pad = (-n) % c
    if pad:
        fq = F.pad(fq, (0, 0, 0, pad))
        fk = F.pad(fk, (0, 0, 0, pad))
        v = F.pad(v, (0, 0, 0, pad))
    nc = (n + pad) // c
    lead = fq.shape[:-2]
    fq = fq.reshape(*lead, nc, c, m)
    fk = fk.reshape(*lead, nc, c, m)
    v = v.reshape(*lead, nc, c, dv)
    state = fk.transpose(-1, -2) @ v  # (..., nc, m, dv): each chunk's sum phi(k) v^T
    prefix = torch.cumsum(state, dim=-3)
    prefix = torch.cat([torch.zeros_like(prefix[..., :1, :, :]), prefix[..., :-1, :, :]], dim=-3)
    inter = fq @ prefix  # earlier chunks
    tri = torch.ones(c, c, dtype=torch.bool, device=fq.device).tril()
    scores = (fq @ fk.transpose(-1, -2)).masked_fill(~tri, 0.0)  # within the chunk, j <= i
    out = inter + scores @ v
    return out.reshape(*lead, nc * c, dv)[..., :n, :]


def linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    feature_map=None,
    causal: bool = False,
    eps: float = 1e-6,
    chunk_size: int | None = None,
    rope_positions: torch.Tensor | None = None,
    rope_variant: str = "numerator_only",
) -> torch.Tensor:
    """Kernelised attention in O(n): ``q: (..., n_q, d), k: (..., n_k, d), v: (..., n_k, d_v) -> (..., n_q, d_v)``.

    ``out_i = sum_j (a_i . b_j) v_j / (sum_j (c_i . e_j) + eps)`` where ``a = c = phi(q)``,
    ``b = e = phi'(k)`` for a ``feature_map`` that is one callable ``phi`` or a pair
    ``(phi, phi')`` (query map, key map). Non-causal: ``phi(Q) (phi'(K)^T V)``. Causal
    (``j <= i``, needs ``n_q == n_k``): prefix sums of ``phi'(k_j) v_j^T`` computed in chunks of
    ``chunk_size`` (default 64), O(n (c m + m d_v)) work and O(n m d_v / c) memory.

    RoPE (``rope_positions: (n,)``, even feature size; ``kexue_lib.rope.apply_rope`` on the
    features): ``"numerator_only"`` rotates ``a, b`` and keeps the denominator unrotated
    (positive); ``"rotate_both"`` rotates all four; ``"cosine"`` uses the similarity
    ``1 + R_i phi_hat(q_i) . R_j phi_hat(k_j)`` with unit-norm features (in [0, 2]);
    ``feature_map=None`` means the identity there. Accumulation in float32 (or float64).
    """
    _check_qkv(q, k, v)
    if not isinstance(causal, bool):
        raise TypeError(f"causal: expected a bool, got {type(causal).__name__}")
    check_positive("eps", eps, strict=False)
    if chunk_size is None:
        chunk_size = 64
    check_int("chunk_size", chunk_size, minimum=1)
    if causal and q.shape[-2] != k.shape[-2]:
        raise ValueError(
            f"k: causal linear attention needs n_k == n_q = {q.shape[-2]}, got n_k = {k.shape[-2]}"
        )
    aq, bk, cq, ek = _features(q, k, feature_map, rope_positions, rope_variant)
    va = v.to(aq.dtype)
    if cq is None:  # one pass: append a ones column to v for the normaliser
        both = _prefix_product(
            aq, bk, torch.cat([va, torch.ones_like(va[..., :1])], -1), causal, chunk_size
        )
        num, den = both[..., :-1], both[..., -1:]
    else:
        num = _prefix_product(aq, bk, va, causal, chunk_size)
        den = _prefix_product(cq, ek, torch.ones_like(va[..., :1]), causal, chunk_size)
    return (num / (den + eps)).to(v.dtype)


def linear_attention_weights(
    q: torch.Tensor,
    k: torch.Tensor,
    *,
    feature_map=None,
    causal: bool = False,
    eps: float = 1e-6,
    rope_positions: torch.Tensor | None = None,
    rope_variant: str = "numerator_only",
) -> torch.Tensor:
    """The explicit O(n^2) weight matrix of :func:`linear_attention`: ``(..., n_q, n_k)``.

    ``A_ij = (a_i . b_j) [j <= i if causal] / (sum_j' (c_i . e_j') [j' <= i] + eps)``, so
    ``linear_attention(q, k, v, ...) == A @ v``. For analysis (rank, entropy, plots) and as
    the reference of the O(n) path. Returned in float32 (float64 for float64 input).
    """
    check_tensor("q", q, floating=True)
    check_tensor("k", k, floating=True)
    if q.dim() < 2 or k.dim() < 2:
        raise ValueError(
            f"q, k: expected shapes (..., n, d) with at least 2 dims, got {tuple(q.shape)}, "
            f"{tuple(k.shape)}"
        )
    _check_leading(q=q, k=k)
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"k: expected last dim {q.shape[-1]} (the query size), got shape {tuple(k.shape)}"
        )
    check_positive("eps", eps, strict=False)
    if not isinstance(causal, bool):
        raise TypeError(f"causal: expected a bool, got {type(causal).__name__}")
    if causal and q.shape[-2] != k.shape[-2]:
        raise ValueError(
            f"k: causal linear attention needs n_k == n_q = {q.shape[-2]}, got n_k = {k.shape[-2]}"
        )
    aq, bk, cq, ek = _features(q, k, feature_map, rope_positions, rope_variant)
    num = aq @ bk.transpose(-1, -2)
    den_mat = num if cq is None else cq @ ek.transpose(-1, -2)
    if causal:
        tri = causal_mask(q.shape[-2], device=q.device)
        num = num.masked_fill(~tri, 0.0)
        den_mat = den_mat.masked_fill(~tri, 0.0)
    return num / (den_mat.sum(-1, keepdim=True) + eps)


def rank_collapse_residual(X: torch.Tensor) -> torch.Tensor:
    """Relative distance of ``X: (..., n, d)`` from rank-1 "all rows equal": ``(...)``.

    ``res(X) = |X - 1 xbar^T|_F / |X|_F`` with ``xbar`` the mean row (the Frobenius-optimal
    ``x`` in ``min_x |X - 1 x^T|``; Dong et al. 2021). 0 for a zero matrix.
    """
    check_tensor("X", X, floating=True)
    if X.dim() < 2:
        raise ValueError(
            f"X: expected shape (..., n, d) with at least 2 dims, got {tuple(X.shape)}"
        )
    acc = work_dtype(X.dtype)
    Xa = X.to(acc)
    resid = torch.linalg.matrix_norm(Xa - Xa.mean(-2, keepdim=True))
    total = torch.linalg.matrix_norm(Xa)
    return torch.where(
        total > 0, resid / total.clamp_min(torch.finfo(acc).tiny), torch.zeros_like(total)
    )
