"""Sketches built on random and data-adaptive projections: SimHash codes, Hamming search,
the arcsine cosine decoder, the Halko-Martinsson-Tropp randomized SVD and PCA scores.

Conventions (those of ``kexue_lib.projection``): points are rows ``X: (N, m)``; a projection
matrix is ``(d_out, d_in)`` and applied as ``X @ A.T``; randomness only through
``generator=``; the caller's device and dtype are kept (half precision is computed in float32
and cast back).

Derived in book/geometry/jl-applications.ipynb.
"""

from __future__ import annotations

import math

import torch

from kexue_lib._core import check_positive, check_tensor, work_dtype

__all__ = [
    "decode_cosine",
    "hamming",
    "packbits",
    "pca_project",
    "randomized_svd",
    "sign_cosine",
    "simhash",
]


def _check_matrix(name: str, x: torch.Tensor) -> torch.Tensor:
    check_tensor(name, x, floating=True)
    if x.dim() != 2:
        raise ValueError(f"{name}: expected a 2-D matrix, got shape {tuple(x.shape)}")
    if x.numel() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name}: expected finite entries, got NaN or inf")
    return x


def _randn(shape: tuple[int, ...], *, dtype, device, generator) -> torch.Tensor:
    """Standard normal draws on ``device``; a CPU generator works for CUDA targets too."""
    gen_device = generator.device if generator is not None else torch.device(device)
    z = torch.randn(shape, dtype=dtype, device=gen_device, generator=generator)
    return z.to(device)


# --------------------------------------------------------------------------- SimHash


def simhash(
    X: torch.Tensor,
    n_bits: int,
    *,
    generator: torch.Generator | None = None,
    return_projection: bool = False,
):
    """Sign-random-projection (SimHash) codes of the rows of ``X``.

    ``X: (N, m)`` -> ``codes: (N, n_bits)`` bool, ``codes[i, k] = (a_k . x_i > 0)`` with rows
    ``a_k ~ N(0, I_m)`` of ``A: (n_bits, m)`` (returned too when ``return_projection``).
    For two vectors at angle theta each bit differs with probability ``theta / pi``
    (Charikar 2002). A zero row gets all-False bits.

    Derived in book/geometry/jl-applications.ipynb, eq. (jl-applications-wedge).
    """
    _check_matrix("X", X)
    check_positive("n_bits", n_bits, integer=True)
    work = work_dtype(X.dtype)
    A = _randn((n_bits, X.shape[1]), dtype=work, device=X.device, generator=generator)
    codes = (X.to(work) @ A.T) > 0
    if return_projection:
        return codes, A.to(X.dtype)
    return codes


_BIT_WEIGHTS = (128, 64, 32, 16, 8, 4, 2, 1)


def packbits(codes: torch.Tensor) -> torch.Tensor:
    """Pack bool codes 8 bits per byte along the last dim, big-endian like ``numpy.packbits``.

    ``codes: (..., n)`` bool -> ``(..., ceil(n / 8))`` uint8 (the last byte is zero-padded).

    Used for the Hamming search of book/geometry/jl-applications.ipynb.
    """
    check_tensor("codes", codes)
    if codes.dtype != torch.bool:
        raise TypeError(f"codes: expected a bool tensor, got dtype {codes.dtype}")
    if codes.dim() == 0:
        raise ValueError("codes: expected at least 1 dim (the bits), got a scalar")
    n = codes.shape[-1]
    n_bytes = -(-n // 8)
    pad = n_bytes * 8 - n
    c = codes.to(torch.uint8)
    if pad:
        c = torch.nn.functional.pad(c, (0, pad))
    c = c.reshape(*codes.shape[:-1], n_bytes, 8)
    w = torch.tensor(_BIT_WEIGHTS, dtype=torch.uint8, device=codes.device)
    # sum of distinct powers of two <= 255: exact in int32, then narrowed to uint8
    return (c.to(torch.int32) * w.to(torch.int32)).sum(-1).to(torch.uint8)


_POPCOUNT_CACHE: dict[torch.device, torch.Tensor] = {}


def _popcount_table(device: torch.device) -> torch.Tensor:
    """Popcount lookup table of all 16-bit words (65536 uint8 entries) on ``device``, cached."""
    key = torch.device(device)
    if key not in _POPCOUNT_CACHE:
        t = torch.zeros(1, dtype=torch.uint8)
        for _ in range(16):  # popcount on [2^b, 2^(b+1)) = popcount on [0, 2^b) + 1
            t = torch.cat([t, t + 1])
        _POPCOUNT_CACHE[key] = t.to(device)
    return _POPCOUNT_CACHE[key]


def _as_words(packed: torch.Tensor) -> torch.Tensor:
    """``(N, n_bytes)`` uint8 -> ``(N, ceil(n_bytes / 2))`` int32 holding 16-bit words.

    A zero byte pads an odd row; byte order inside a word does not change a popcount.
    """
    if packed.shape[1] % 2:
        packed = torch.nn.functional.pad(packed, (0, 1))
    return packed.contiguous().view(torch.int16).to(torch.int32) & 0xFFFF


def _as_packed(name: str, codes: torch.Tensor) -> tuple[torch.Tensor, int | None]:
    check_tensor(name, codes)
    if codes.dim() != 2:
        raise ValueError(
            f"{name}: expected (N, n_bits) bool or (N, n_bytes) uint8 codes, "
            f"got shape {tuple(codes.shape)}"
        )
    if codes.dtype == torch.bool:
        return packbits(codes), codes.shape[1]
    if codes.dtype == torch.uint8:
        return codes, None
    raise TypeError(f"{name}: expected bool codes or uint8 packed codes, got dtype {codes.dtype}")


def hamming(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    pairwise: bool = True,
    max_elements: int = 1 << 24,
) -> torch.Tensor:
    """Hamming distances between binary codes: popcount (16-bit lookup table) of XOR-ed words.

    ``a: (Na, n_bits)`` bool or ``(Na, n_bytes)`` uint8 (from :func:`packbits`), ``b`` alike.
    ``pairwise=True`` -> ``(Na, Nb)`` int64 with ``H[i, j] = #{k : a_ik != b_jk}``;
    ``pairwise=False`` -> ``(N,)`` distances of matching rows (``Na == Nb``).
    The XOR/lookup work runs in row chunks of at most ``max_elements`` 16-bit words.

    Used for the Hamming search of book/geometry/jl-applications.ipynb.
    """
    pa, na = _as_packed("a", a)
    pb, nb = _as_packed("b", b)
    if na is not None and nb is not None and na != nb:
        raise ValueError(f"b: expected codes of {na} bits like a, got {nb}")
    if pa.shape[1] != pb.shape[1]:
        raise ValueError(
            f"b: expected {pa.shape[1]} packed bytes per row like a, got {pb.shape[1]}"
        )
    if pa.device != pb.device:
        raise ValueError(f"b: expected codes on {pa.device} like a, got {pb.device}")
    check_positive("max_elements", max_elements, integer=True)
    lut = _popcount_table(pa.device)
    wa, wb = _as_words(pa), _as_words(pb)
    if not pairwise:
        if pa.shape[0] != pb.shape[0]:
            raise ValueError(
                f"b: expected {pa.shape[0]} rows like a for pairwise=False, got {pb.shape[0]}"
            )
        return lut[wa ^ wb].sum(-1, dtype=torch.int64)
    n_a, n_words = wa.shape
    n_b = wb.shape[0]
    out = torch.empty((n_a, n_b), dtype=torch.int64, device=pa.device)
    step = max(1, max_elements // max(1, n_b * n_words))
    for s in range(0, n_a, step):
        x = wa[s : s + step, None, :] ^ wb[None, :, :]
        out[s : s + step] = lut[x].sum(-1, dtype=torch.int64)
    return out


def sign_cosine(hamming_dist: torch.Tensor, n_bits: int, *, dtype: torch.dtype | None = None):
    """Cosine of two ``+-1`` codes from their Hamming distance: ``s = 1 - 2 h / n_bits``.

    ``hamming_dist: (...)`` integer or float -> ``(...)`` floating (default dtype unless
    ``dtype``). In expectation ``s = 1 - 2 theta / pi = (2 / pi) arcsin(cos theta)``.

    Derived in book/geometry/jl-applications.ipynb, eq. (jl-applications-arcsine).
    """
    check_tensor("hamming_dist", hamming_dist)
    check_positive("n_bits", n_bits, integer=True)
    if hamming_dist.dtype == torch.bool or hamming_dist.is_complex():
        raise TypeError(
            f"hamming_dist: expected integer or float distances, got dtype {hamming_dist.dtype}"
        )
    if hamming_dist.numel() and (
        bool((hamming_dist < 0).any()) or bool((hamming_dist > n_bits).any())
    ):
        raise ValueError(
            f"hamming_dist: expected distances in [0, n_bits={n_bits}], got range "
            f"[{hamming_dist.min().item()}, {hamming_dist.max().item()}]"
        )
    if dtype is None:
        dtype = (
            hamming_dist.dtype if hamming_dist.is_floating_point() else torch.get_default_dtype()
        )
    return 1.0 - 2.0 * hamming_dist.to(dtype) / n_bits


def decode_cosine(s: torch.Tensor) -> torch.Tensor:
    """Invert the arcsine law: ``cos theta ~= sin(pi s / 2)`` for a sign-code cosine ``s``.

    ``s: (...)`` floating in [-1, 1] -> ``(...)`` same dtype. Consistent (bias O(1/n_bits)).

    Derived in book/geometry/jl-applications.ipynb, eq. (jl-applications-decode).
    """
    check_tensor("s", s, floating=True)
    if s.numel() and bool((s.abs() > 1 + 1e-6).any()):
        raise ValueError(
            f"s: expected sign-code cosines in [-1, 1], got max |s| = {s.abs().max().item():g}"
        )
    work = work_dtype(s.dtype)
    return torch.sin((math.pi / 2) * s.to(work).clamp(-1, 1)).to(s.dtype)


# --------------------------------------------------------------------------- low-rank sketches


def randomized_svd(
    M: torch.Tensor,
    k: int,
    *,
    oversample: int = 10,
    n_iter: int = 2,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rank-``k`` SVD by the Halko-Martinsson-Tropp randomized range finder.

    ``M: (m, n)`` -> ``U: (m, k)``, ``S: (k,)`` descending, ``V: (n, k)`` with
    ``M ~= U diag(S) V^T``. Steps: ``Y = M Omega`` (``Omega: (n, k + oversample)`` Gaussian),
    ``Q = qr(Y)``; ``n_iter`` power iterations ``Q <- qr(M qr(M^T Q))`` (re-orthonormalised
    each half step); ``B = Q^T M = U_B S V^T``; ``U = Q U_B``. Exact when rank(M) <= k +
    oversample; otherwise ``E||M - Q Q^T M|| <= (1 + ...) sigma_{k+1}`` (HMT 2011, Thm 10.5-10.6).

    Derived in book/geometry/jl-applications.ipynb, eq. (jl-applications-hmt).
    """
    _check_matrix("M", M)
    m, n = M.shape
    check_positive("k", k, integer=True)
    check_positive("oversample", oversample, strict=False, integer=True)
    check_positive("n_iter", n_iter, strict=False, integer=True)
    if k > min(m, n):
        raise ValueError(
            f"k: expected at most min(m, n) = {min(m, n)} for M of shape {(m, n)}, got {k}"
        )
    ell = min(k + oversample, m, n)
    work = work_dtype(M.dtype)
    A = M.to(work)
    omega = _randn((n, ell), dtype=work, device=M.device, generator=generator)
    Q = torch.linalg.qr(A @ omega).Q
    for _ in range(n_iter):
        Z = torch.linalg.qr(A.T @ Q).Q
        Q = torch.linalg.qr(A @ Z).Q
    B = Q.T @ A
    Ub, S, Vh = torch.linalg.svd(B, full_matrices=False)
    U = Q @ Ub[:, :k]
    return U.to(M.dtype), S[:k].to(M.dtype), Vh[:k].T.to(M.dtype)


def pca_project(X: torch.Tensor, k: int, *, center: bool = True) -> torch.Tensor:
    """Scores of the rows of ``X`` on the top-``k`` principal directions.

    ``X: (N, m)`` -> ``(N, k)``: ``Z = (X - mean) V_k = U_k diag(S_k)`` from the thin SVD of
    the centred data (no centring when ``center=False``). Column signs are fixed so the
    largest-magnitude loading of each direction is positive.

    Compared with random projections in book/geometry/jl-applications.ipynb.
    """
    _check_matrix("X", X)
    check_positive("k", k, integer=True)
    N, m = X.shape
    if k > min(N, m):
        raise ValueError(
            f"k: expected at most min(N, m) = {min(N, m)} for X of shape {(N, m)}, got {k}"
        )
    work = work_dtype(X.dtype)
    Xc = X.to(work)
    if center:
        Xc = Xc - Xc.mean(0, keepdim=True)
    _, _, Vh = torch.linalg.svd(Xc, full_matrices=False)
    Vk = Vh[:k]  # (k, m): rows are principal directions, (d_out, d_in) like sklearn components_
    idx = Vk.abs().argmax(1, keepdim=True)
    signs = torch.sign(Vk.gather(1, idx))
    signs = torch.where(signs == 0, torch.ones_like(signs), signs)
    Vk = Vk * signs
    return (Xc @ Vk.T).to(X.dtype)
