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
