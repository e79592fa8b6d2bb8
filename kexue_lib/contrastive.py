"""In-batch contrastive losses and their exact gradient accumulation.

One primitive, :func:`inbatch_softmax_loss` (every row of a batch of embeddings is a softmax
classifier over the rows of the same batch), two conveniences (:func:`twin_contrastive_loss`
for interleaved pairs as in SimCSE / SimBERT, :func:`info_nce` for two towers) and the
machinery of kexue.fm/archives/8471: the loss-gradient with respect to the embeddings in
closed form (:func:`surrogate_label_vectors`, :func:`two_tower_surrogates`) and
:func:`accumulate_contrastive_grad`, which fills ``.grad`` exactly as a full-batch backward
would while holding the activations of only one micro-batch at a time.

Reductions: every loss is the *mean* over rows of the cross-entropy (the post writes the sum;
the two differ by the factor ``1/B``, which the surrogate vectors carry).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from kexue_lib._core import check_choice, check_int, check_positive, check_tensor

__all__ = [
    "accumulate_contrastive_grad",
    "gram_distillation_loss",
    "inbatch_softmax_loss",
    "info_nce",
    "similarity_logits",
    "surrogate_label_vectors",
    "target_matrix",
    "twin_contrastive_loss",
    "twin_labels",
    "two_tower_surrogates",
]


def twin_labels(n_rows: int, *, device: torch.device | str | None = None) -> torch.Tensor:
    """Targets of an interleaved twin batch: row ``i`` is paired with ``i ^ 1`` -> ``[1, 0, 3, 2, ...]``.

    ``n_rows`` must be even (rows ``2k`` and ``2k + 1`` are the two views of one item).
    """
    check_int("n_rows", n_rows, minimum=2)
    if n_rows % 2:
        raise ValueError(f"n_rows: expected an even number of rows (pairs), got {n_rows}")
    return torch.arange(n_rows, device=device) ^ 1


def _check_embeddings(name: str, h) -> torch.Tensor:
    check_tensor(name, h, floating=True)
    if h.dim() != 2 or h.shape[0] < 1 or h.shape[1] < 1:
        raise ValueError(f"{name}: expected shape (B, d) with B, d >= 1, got {tuple(h.shape)}")
    return h


def target_matrix(
    targets: torch.Tensor, n_rows: int, n_cols: int | None = None, *, dtype=None
) -> torch.Tensor:
    """Targets as a ``(n_rows, n_cols)`` matrix of row distributions.

    ``targets`` is either a ``(n_rows,)`` integer tensor of column indices (one-hot rows) or a
    ``(n_rows, n_cols)`` floating matrix whose rows are probability vectors (returned as is,
    cast to ``dtype``).
    """
    check_tensor("targets", targets)
    n_cols = n_rows if n_cols is None else n_cols
    dtype = dtype or torch.get_default_dtype()
    if not targets.is_floating_point():
        if targets.shape != (n_rows,):
            raise ValueError(
                f"targets: expected integer shape ({n_rows},) or float shape ({n_rows}, {n_cols}), "
                f"got {tuple(targets.shape)}"
            )
        if n_rows and (int(targets.min()) < 0 or int(targets.max()) >= n_cols):
            raise ValueError(
                f"targets: expected indices in [0, {n_cols}), got out-of-range entries"
            )
        return F.one_hot(targets.long(), n_cols).to(dtype)
    if targets.shape != (n_rows, n_cols):
        raise ValueError(
            f"targets: expected shape ({n_rows}, {n_cols}) (or integer ({n_rows},)), "
            f"got {tuple(targets.shape)}"
        )
    if not torch.isfinite(targets).all() or (targets < 0).any():
        raise ValueError("targets: expected finite non-negative row distributions")
    err = (targets.sum(-1, dtype=torch.float64) - 1).abs().max().item()
    if err > 1e-5:
        raise ValueError(f"targets: expected rows summing to 1, got a row sum off by {err:.3g}")
    return targets.to(dtype)


def similarity_logits(
    h: torch.Tensor, *, scale: float = 1.0, mask_diagonal: bool = False, normalize: bool = False
) -> torch.Tensor:
    """``s_ij = scale * <g_i, g_j>`` with ``g = h`` or ``h / |h|``; diagonal at ``-inf`` when masked.

    ``h: (B, d) -> (B, B)``.
    """
    _check_embeddings("h", h)
    check_positive("scale", scale)
    g = F.normalize(h, dim=-1) if normalize else h
    s = scale * (g @ g.transpose(0, 1))
    if mask_diagonal:
        if h.shape[0] < 2:
            raise ValueError("h: expected at least 2 rows when mask_diagonal=True")
        eye = torch.eye(h.shape[0], dtype=torch.bool, device=h.device)
        s = s.masked_fill(eye, float("-inf"))
    return s


def _soft_ce(logits: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Mean over rows of ``-sum_j t_ij log softmax(logits)_ij`` (0 * log 0 read as 0)."""
    logp = torch.log_softmax(logits, dim=-1)
    return -(t * logp.masked_fill(t == 0, 0.0)).sum(-1).mean()


def inbatch_softmax_loss(
    h: torch.Tensor,
    targets: torch.Tensor,
    *,
    scale: float = 1.0,
    mask_diagonal: bool = False,
    normalize: bool = False,
) -> torch.Tensor:
    """In-batch softmax cross-entropy, eq. (contrastive-grad-accumulation-loss).

    ``L = -(1/B) sum_ij t_ij log p_ij``, ``p_ij = softmax_j(s_ij)``, ``s`` from
    :func:`similarity_logits`. ``h: (B, d)``; ``targets``: ``(B,)`` column indices or a
    ``(B, B)`` matrix of row distributions. With ``mask_diagonal`` a row may not target itself.
    """
    _check_embeddings("h", h)
    n = h.shape[0]
    t = target_matrix(targets, n, dtype=h.dtype).to(h.device)
    if mask_diagonal and bool((t.diagonal() > 0).any()):
        raise ValueError("targets: expected no mass on the diagonal when mask_diagonal=True")
    s = similarity_logits(h, scale=scale, mask_diagonal=mask_diagonal, normalize=normalize)
    return _soft_ce(s, t)


def twin_contrastive_loss(
    h: torch.Tensor, *, scale: float = 20.0, same_view_negatives: bool = True
) -> torch.Tensor:
    """SimCSE / SimBERT loss on an interleaved twin batch ``h: (2N, d)`` (rows 2k, 2k+1 paired).

    Cosine similarities times ``scale``, diagonal masked, target :func:`twin_labels`. With
    ``same_view_negatives=False`` row ``i`` competes only against rows of the other parity
    (the other view), which is two-directional InfoNCE.
    """
    _check_embeddings("h", h)
    if not isinstance(same_view_negatives, bool):
        raise TypeError(
            f"same_view_negatives: expected a bool, got {type(same_view_negatives).__name__}"
        )
    labels = twin_labels(h.shape[0], device=h.device)
    s = similarity_logits(h, scale=scale, mask_diagonal=True, normalize=True)
    if not same_view_negatives:
        par = torch.arange(h.shape[0], device=h.device) % 2
        s = s.masked_fill(par[:, None] == par[None, :], float("-inf"))
    return F.cross_entropy(s, labels)


def info_nce(
    q: torch.Tensor,
    k: torch.Tensor,
    *,
    scale: float = 1.0,
    targets: torch.Tensor | None = None,
    normalize: bool = False,
) -> torch.Tensor:
    """Two-tower InfoNCE: ``-(1/B) sum_ij t_ij log softmax_j(scale <q_i, k_j>)``.

    ``q: (B, d)``, ``k: (C, d)``; ``targets`` default ``arange(B)`` (needs ``C >= B``), or
    ``(B,)`` indices, or a ``(B, C)`` matrix of row distributions. ``normalize`` uses cosines
    (sentence-transformers' MultipleNegativesRankingLoss is ``normalize=True, scale=20``).
    """
    _check_embeddings("q", q)
    _check_embeddings("k", k)
    if q.shape[1] != k.shape[1]:
        raise ValueError(f"k: expected feature size {q.shape[1]} (as q), got {k.shape[1]}")
    check_positive("scale", scale)
    b, c = q.shape[0], k.shape[0]
    if targets is None:
        if c < b:
            raise ValueError(f"k: expected at least B = {b} rows for default targets, got {c}")
        targets = torch.arange(b, device=q.device)
    t = target_matrix(targets, b, c, dtype=q.dtype).to(q.device)
    if normalize:
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    return _soft_ce(scale * (q @ k.transpose(0, 1)), t)


@torch.no_grad()
def surrogate_label_vectors(
    g: torch.Tensor, targets: torch.Tensor, *, scale: float = 1.0, mask_diagonal: bool = False
) -> torch.Tensor:
    """The "label vectors" ``g~`` with ``grad L = grad sum_i <g_i, sg[g~_i]>``, eq. (contrastive-grad-accumulation-surrogate).

    ``g~_i = (scale / B) sum_j [(p_ij - t_ij) + (p_ji - t_ji)] g_j`` for the single-tower loss
    :func:`inbatch_softmax_loss` on ``g: (B, d)`` (pass the *normalised* vectors when the loss
    normalises). For symmetric targets this is the post's ``2 (p_bar - t)``. Returns ``(B, d)``,
    no graph.
    """
    _check_embeddings("g", g)
    n = g.shape[0]
    t = target_matrix(targets, n, dtype=g.dtype).to(g.device)
    s = similarity_logits(g, scale=scale, mask_diagonal=mask_diagonal)
    a = torch.softmax(s, dim=-1) - t
    return (scale / n) * ((a + a.transpose(0, 1)) @ g)


@torch.no_grad()
def two_tower_surrogates(
    q: torch.Tensor, k: torch.Tensor, targets: torch.Tensor | None = None, *, scale: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(q~, k~)`` for :func:`info_nce` (no normalisation): ``q~ = (scale/B)(P - T) k``, ``k~ = (scale/B)(P - T)^T q``.

    ``q: (B, d)``, ``k: (C, d)`` -> ``(B, d), (C, d)``; these are the loss gradients with
    respect to ``q`` and ``k`` (the GradCache form).
    """
    _check_embeddings("q", q)
    _check_embeddings("k", k)
    check_positive("scale", scale)
    b, c = q.shape[0], k.shape[0]
    if targets is None:
        if c < b:
            raise ValueError(f"k: expected at least B = {b} rows for default targets, got {c}")
        targets = torch.arange(b, device=q.device)
    t = target_matrix(targets, b, c, dtype=q.dtype).to(q.device)
    a = torch.softmax(scale * (q @ k.transpose(0, 1)), dim=-1) - t
    return (scale / b) * (a @ k), (scale / b) * (a.transpose(0, 1) @ q)


def _chunks(inputs, n: int, micro_batch: int):
    for lo in range(0, n, micro_batch):
        sl = slice(lo, min(lo + micro_batch, n))
        yield sl, tuple(x[sl] for x in inputs)


def accumulate_contrastive_grad(
    encoder: torch.nn.Module,
    inputs: torch.Tensor | Sequence[torch.Tensor],
    targets: torch.Tensor,
    *,
    micro_batch: int,
    scale: float = 1.0,
    mask_diagonal: bool = False,
    normalize: bool = False,
    method: str = "two_pass",
    replay_rng: bool = False,
) -> float:
    """Add to ``.grad`` the gradient of :func:`inbatch_softmax_loss` on the batch, in micro-batches.

    ``encoder(*inputs[sl]) -> (m, d)`` embeds a slice of the batch (``inputs``: one tensor or a
    tuple of tensors sharing dim 0 of size ``B``). ``method="two_pass"`` (kexue.fm/archives/8471):
    (1) embed all ``B`` rows without a graph, micro-batch by micro-batch; (2) ``G = dL/dH`` on
    the cached ``H: (B, d)``; (3) re-embed each micro-batch with a graph and backpropagate
    ``<h, G>`` -- ``.grad`` receives exactly what ``loss.backward()`` on the whole batch adds,
    with the activations of one micro-batch alive at a time, for one extra forward pass.
    ``replay_rng=True`` restores the RNG state of pass 1 before each micro-batch of pass 3, so
    dropout draws the same masks in both. ``method="naive"``: the usual accumulation, the loss
    of each micro-batch on its own (weighted by its share of rows), which is a different
    objective; every row's targets must lie inside its micro-batch. Gradients are recorded
    also when called under ``torch.no_grad()``. Returns the loss value
    (two_pass: the true full-batch loss; naive: the weighted sum of micro-batch losses).
    """
    if not isinstance(encoder, torch.nn.Module):
        raise TypeError(f"encoder: expected a torch.nn.Module, got {type(encoder).__name__}")
    inputs = (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)
    if not inputs or not all(isinstance(x, torch.Tensor) for x in inputs):
        raise TypeError("inputs: expected a tensor or a non-empty sequence of tensors")
    n = inputs[0].shape[0] if inputs[0].dim() else 0
    if n < 1 or any(x.dim() == 0 or x.shape[0] != n for x in inputs):
        raise ValueError("inputs: expected tensors sharing a leading batch dimension >= 1")
    check_int("micro_batch", micro_batch, minimum=1)
    check_positive("scale", scale)
    check_choice("method", method, ("two_pass", "naive"))
    if not isinstance(replay_rng, bool):
        raise TypeError(f"replay_rng: expected a bool, got {type(replay_rng).__name__}")
    params = [p for p in encoder.parameters() if p.requires_grad]
    dev = params[0].device if params else inputs[0].device
    t_full = target_matrix(targets, n, dtype=torch.float64).to(dev)
    if mask_diagonal and bool((t_full.diagonal() > 0).any()):
        raise ValueError("targets: expected no mass on the diagonal when mask_diagonal=True")
    kw = dict(scale=scale, mask_diagonal=mask_diagonal, normalize=normalize)

    if method == "naive":
        total = 0.0
        for sl, chunk in _chunks(inputs, n, micro_batch):
            t = t_full[sl, sl]
            if (t.sum(-1) < 1 - 1e-9).any():
                raise ValueError(
                    "targets: naive accumulation needs every row's targets inside its "
                    f"micro-batch; rows {sl.start}..{sl.stop - 1} point outside"
                )
            with torch.enable_grad():
                h = encoder(*chunk)
                loss = inbatch_softmax_loss(h, t.to(h.dtype), **kw) * (h.shape[0] / n)
                loss.backward()
            total += loss.item()
        return total

    cuda = dev.type == "cuda"

    def get_state():
        return (torch.get_rng_state(), torch.cuda.get_rng_state(dev) if cuda else None)

    def set_state(st):
        torch.set_rng_state(st[0])
        if cuda:
            torch.cuda.set_rng_state(st[1], dev)

    states, parts = [], []
    with torch.no_grad():
        for _, chunk in _chunks(inputs, n, micro_batch):
            states.append(get_state())
            parts.append(encoder(*chunk))
    after = get_state()
    h_all = torch.cat(parts).detach().requires_grad_(True)
    with torch.enable_grad():
        loss = inbatch_softmax_loss(h_all, t_full.to(h_all.dtype), **kw)
        (g_all,) = torch.autograd.grad(loss, h_all)
    for k, (sl, chunk) in enumerate(_chunks(inputs, n, micro_batch)):
        if replay_rng:
            set_state(states[k])
        with torch.enable_grad():
            h = encoder(*chunk)
            torch.autograd.backward(h, grad_tensors=g_all[sl].to(h.dtype))
    if replay_rng:
        set_state(after)
    return loss.item()


def gram_distillation_loss(
    teacher: torch.Tensor, student: torch.Tensor, *, weight: float = 100.0
) -> torch.Tensor:
    """Similarity distillation of RoFormer-Sim (kexue.fm/archives/8454).

    ``weight / n^2 * sum_ij (cos(u_i, u_j) - cos(v_i, v_j))^2`` for teacher rows ``u``
    ``(n, d_t)`` and student rows ``v`` ``(n, d_s)``; the widths may differ. Only the
    normalised Gram matrices meet, so the loss is invariant to orthogonal maps and positive
    per-row rescalings of either side. The teacher gets no gradient.
    """
    _check_embeddings("teacher", teacher)
    _check_embeddings("student", student)
    if teacher.shape[0] != student.shape[0]:
        raise ValueError(
            f"student: expected {teacher.shape[0]} rows (as teacher), got {student.shape[0]}"
        )
    check_positive("weight", weight)
    u = F.normalize(teacher.detach(), dim=-1)
    v = F.normalize(student, dim=-1)
    diff = (u @ u.transpose(0, 1)).to(v.dtype) - v @ v.transpose(0, 1)
    return weight * diff.pow(2).mean()


# --- simcse ---


def simcse_twin_labels(n_rows, device=None):
    """Targets of the post's SimCSE rows ``[s0, s0, s1, s1, ...]``: row ``i`` -> ``i + 1 - 2 (i mod 2)``.

    ``n_rows`` must be even (``[1, 0, 3, 2, 5, 4, ...]``).
    """
    import torch

    from kexue_lib._core import check_int

    check_int("n_rows", n_rows, minimum=2)
    if n_rows % 2:
        raise ValueError(f"n_rows: expected an even number of rows (twins), got {n_rows}")
    i = torch.arange(n_rows, device=device)
    return i + 1 - 2 * (i % 2)


def simcse_unsup_loss(h, *, scale=20.0, same_view_negatives=True):
    """Unsupervised SimCSE loss on twin rows ``h: (2N, d)`` (row ``2m`` and ``2m+1``: two dropout
    views of sentence ``m``), mean over the ``2N`` rows.

    ``same_view_negatives=True`` is the post's form (bojone/SimCSE): each row is a softmax over
    the other ``2N − 1`` rows, ``S = scale · cos``, self-similarity masked with ``−inf`` after
    scaling (safe in half precision). ``False`` is the paper's form: each row competes only
    with the ``N`` rows of the other view. ``scale = 1/τ`` (20 ↔ τ = 0.05). When every row is
    the same vector the loss is ``log(2N − 1)`` (post) or ``log N`` (paper).
    """
    import torch
    import torch.nn.functional as F

    from kexue_lib._core import check_positive, check_tensor, work_dtype

    check_tensor("h", h, floating=True)
    if h.dim() != 2 or h.shape[0] < 2 or h.shape[0] % 2:
        raise ValueError(f"h: expected shape (2N, d) with N >= 1, got {tuple(h.shape)}")
    check_positive("scale", scale)
    n2 = h.shape[0]
    x = F.normalize(h.to(work_dtype(h.dtype)), dim=1)
    s = scale * (x @ x.T)
    labels = simcse_twin_labels(n2, device=h.device)
    i = torch.arange(n2, device=h.device)
    if same_view_negatives:
        s = s.masked_fill(i[:, None] == i[None, :], float("-inf"))
    else:
        same_view = (i[:, None] % 2) == (i[None, :] % 2)
        s = s.masked_fill(same_view, float("-inf"))
    return F.cross_entropy(s, labels).to(h.dtype)


def simcse_alignment_uniformity(h, *, alpha=2.0, t=2.0):
    """Wang & Isola's alignment ``E‖x − x⁺‖^α`` over twin rows and uniformity
    ``log E_{x≠y} e^{−t‖x − y‖²}`` over the distinct sentences (view 0 rows) of ``h: (2N, d)``,
    both on L2-normalised rows. Returns ``(alignment, uniformity)`` as floats.
    """
    import math

    import torch
    import torch.nn.functional as F

    from kexue_lib._core import check_positive, check_tensor

    check_tensor("h", h, floating=True)
    if h.dim() != 2 or h.shape[0] < 4 or h.shape[0] % 2:
        raise ValueError(f"h: expected shape (2N, d) with N >= 2, got {tuple(h.shape)}")
    check_positive("alpha", alpha)
    check_positive("t", t)
    x = F.normalize(h.detach().double(), dim=1)
    a, b = x[0::2], x[1::2]
    align = (a - b).norm(dim=1).pow(alpha).mean().item()
    d2 = torch.pdist(a).pow(2)
    unif = (torch.logsumexp(-t * d2, 0) - math.log(d2.numel())).item()
    return align, unif
