"""Variational autoencoders built from kexue_lib pieces: small MLP VAEs with a Gaussian or a
von Mises-Fisher latent (kexue.fm 8404), and UniVAE (kexue.fm 8475).

**MLP VAEs.** :class:`GaussianVAE` and :class:`VMFVAE` share one body (:class:`MLPVAE`): an
MLP encoder ``x: (B, x_dim) -> posterior parameters``, a reparameterised sampler, and an MLP
decoder ``z -> logits`` (Bernoulli pixels) or ``z -> means`` (Gaussian pixels with a fixed
``dec_sigma``). Every density is exposed on its own (``log_q``, ``log_prior``,
``log_px_given_z``), so the ELBO, the importance-weighted bound and an importance-sampled
``log p(x)`` are written once for both latents. The Gaussian latent has prior ``N(0, I)`` and
posterior ``N(m, diag(exp(logvar)))``; the vMF latent has a uniform prior on ``S^(z_dim-1)``
and posterior ``vMF(mu(x), kappa)`` with a **fixed** ``kappa``, so its KL is a constant.

**UniVAE.**
UniVAE turns **one** Transformer into an encoder-decoder VAE with nothing but attention masks.
The input is a sentence twice, ``[src | tgt]`` (each ``[CLS] x_1 .. x_n [SEP]`` right-padded to
``max_len``), with segment ids ``s = [0 .. 0 | 1 .. 1]`` and ``c_t = sum_{u <= t} s_u``:

* the first ``k = layers - latent_layers`` layers use the *independent* mask
  ``M_ij = [s_i = s_j] and [c_j <= c_i]`` (source bidirectional, target causal, no crossing);
* the last ``latent_layers`` layers use the *UniAE* mask ``M_ij or [j = 0]``: every position may
  also read position 0, the source's CLS;
* at the input of each latent layer ``l`` the CLS state is squeezed through a bottleneck,
  ``mu_l = normalize(W_down h_0)`` (``z_dim`` numbers on the unit sphere), ``z_l ~ vMF(mu_l,
  kappa)`` (``mode="vae"``) or ``z_l = mu_l`` (``mode="ae"``), and position 0 is overwritten by
  ``W_up z_l``.

So the target half sees the source only through ``z = [z_l]_l``: a multi-scale code, one chunk
per latent layer. With a fixed ``kappa`` and a uniform prior on each sphere the KL term is a
constant (``kexue_lib.vmf.vmf_kl_to_uniform``) and training is plain reconstruction.
The source half is always padded to ``max_len``, so the target starts at the same position for
every sentence and its positions do not leak the source length.

Shapes: ``tokens: (B, n)`` int64 with ``n <= max_len``; latents ``(B, latent_layers * z_dim)``
(chunk ``j`` belongs to block ``layers - latent_layers + j``); logits ``(B, n, vocab)``, where
``logits[:, t]`` predicts ``tokens[:, t + 1]`` (teacher forcing).

Derived in book/positions/univae.ipynb (masks, bottleneck, constant KL).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from kexue_lib._core import check_choice, check_int, check_positive, check_tensor
from kexue_lib.attention import uniae_mask, with_key_padding
from kexue_lib.geometry import log_sphere_area, sample_sphere
from kexue_lib.models.transformer import TinyTransformer
from kexue_lib.vmf import VMFReparam, vmf_kl_to_uniform, vmf_log_prob

__all__ = ["GaussianVAE", "MLPVAE", "UniVAE", "VMFVAE"]

_LIKELIHOODS = ("bernoulli", "gaussian")
_LOGVAR_RANGE = (-30.0, 20.0)


def _mlp(d_in: int, d_out: int, hidden: int, depth: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(d_in if i == 0 else hidden, hidden), nn.ReLU()]
    layers.append(nn.Linear(hidden if depth else d_in, d_out))
    return nn.Sequential(*layers)


def _sample_shape(sample_shape) -> tuple[int, ...]:
    shape = (sample_shape,) if isinstance(sample_shape, int) else tuple(sample_shape)
    if any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape):
        raise ValueError(f"sample_shape: expected positive ints, got {sample_shape!r}")
    return shape


class MLPVAE(nn.Module):
    """The shared body of :class:`GaussianVAE` and :class:`VMFVAE` (not used on its own).

    ``encoder``: MLP ``x_dim -> hidden (x depth, ReLU) -> n_head``; ``decoder``: MLP
    ``z_dim -> hidden (x depth) -> x_dim``. ``likelihood="bernoulli"``: ``decode`` returns
    logits and ``log p(x|z) = sum_i [x_i l_i - softplus(l_i)]`` (a normalised likelihood for
    binary ``x``); ``"gaussian"``: ``decode`` returns means and ``log p(x|z)`` is the
    ``N(mean, dec_sigma^2 I)`` log density. Subclasses define :meth:`encode`,
    :meth:`rsample`, :meth:`log_q`, :meth:`log_prior` and :meth:`kl`; everything else
    (ELBO, IWAE bound, importance-sampled ``log p(x)``) is written here once.

    Shapes: ``x: (B, x_dim)``; posterior parameters: a tuple of ``(B, .)`` tensors;
    ``z: (*S, B, z_dim)`` for a sample shape ``S`` (``()`` by default).
    """

    def __init__(
        self,
        x_dim: int,
        z_dim: int,
        n_head: int,
        *,
        hidden: int,
        depth: int,
        likelihood: str,
        dec_sigma: float,
    ):
        super().__init__()
        self.x_dim = check_int("x_dim", x_dim)
        self.z_dim = check_int("z_dim", z_dim)
        self.hidden = check_int("hidden", hidden)
        self.depth = check_int("depth", depth, minimum=0)
        self.likelihood = check_choice("likelihood", likelihood, _LIKELIHOODS)
        check_positive("dec_sigma", dec_sigma)
        self.dec_sigma = float(dec_sigma)
        self.encoder = _mlp(x_dim, n_head, hidden, depth)
        self.decoder = _mlp(z_dim, x_dim, hidden, depth)

    def extra_repr(self) -> str:
        return f"x_dim={self.x_dim}, z_dim={self.z_dim}, likelihood={self.likelihood!r}"

    def _check_x(self, x) -> torch.Tensor:
        check_tensor("x", x, floating=True)
        if x.dim() != 2 or x.shape[-1] != self.x_dim:
            raise ValueError(f"x: expected shape (B, {self.x_dim}), got {tuple(x.shape)}")
        return x

    def _check_z(self, z) -> torch.Tensor:
        check_tensor("z", z, floating=True)
        if z.dim() < 1 or z.shape[-1] != self.z_dim:
            raise ValueError(f"z: expected shape (..., {self.z_dim}), got {tuple(z.shape)}")
        return z

    # ------------------------------------------------------------------ per-latent pieces

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Posterior parameters of ``q(z|x)``, a tuple of ``(B, .)`` tensors."""
        raise NotImplementedError

    def code(self, x: torch.Tensor) -> torch.Tensor:
        """A deterministic code ``(B, z_dim)``: the posterior's mean direction or mean."""
        return self.encode(x)[0]

    def rsample(self, params, sample_shape=(), *, generator=None) -> torch.Tensor:
        """Reparameterised draws ``z: (*sample_shape, B, z_dim)`` from ``q(z|x)``."""
        raise NotImplementedError

    def log_q(self, z: torch.Tensor, params) -> torch.Tensor:
        """``log q(z|x)``: ``(..., B, z_dim) -> (..., B)``."""
        raise NotImplementedError

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """``log p(z)``: ``(..., z_dim) -> (...)``."""
        raise NotImplementedError

    def kl(self, params) -> torch.Tensor:
        """``KL(q(z|x) || p(z))`` per example, ``(B,)``, in closed form."""
        raise NotImplementedError

    def sample_prior(self, n: int, *, generator=None, dtype=None) -> torch.Tensor:
        """``n`` codes from the prior, ``(n, z_dim)``."""
        raise NotImplementedError

    # ------------------------------------------------------------------ shared

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``z: (..., z_dim) -> (..., x_dim)``: Bernoulli logits or Gaussian means."""
        return self.decoder(self._check_z(z))

    def log_px_given_z(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``log p(x|z)`` summed over pixels: ``x: (B, x_dim)``, ``z: (..., B, z_dim) -> (..., B)``."""
        self._check_x(x)
        out = self.decode(z)
        if self.likelihood == "bernoulli":
            return (x * out - F.softplus(out)).sum(-1)
        s = self.dec_sigma
        return (-0.5 * ((x - out) / s) ** 2 - math.log(s) - 0.5 * math.log(2 * math.pi)).sum(-1)

    def elbo(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """One-sample ELBO per example, ``(B,)``: ``log p(x|z) - KL(q(z|x) || p(z))``."""
        params = self.encode(x)
        z = self.rsample(params, generator=generator)
        return self.log_px_given_z(x, z) - self.kl(params)

    def iw_bound(
        self, x: torch.Tensor, *, M: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Importance-weighted bound with ``M`` samples per example, ``(B,)``:
        ``log (1/M) sum_m p(x|z_m) p(z_m) / q(z_m|x)``, ``z_m ~ q(z|x)`` (``M = 1``: the ELBO
        with a Monte Carlo KL)."""
        check_int("M", M)
        params = self.encode(x)
        z = self.rsample(params, (M,), generator=generator)
        log_w = self.log_px_given_z(x, z) + self.log_prior(z) - self.log_q(z, params)
        return torch.logsumexp(log_w, 0) - math.log(M)

    def loss(
        self, x: torch.Tensor, *, M: int = 1, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Mean negative bound, a 0-d tensor: ``-ELBO`` (analytic KL) for ``M = 1``, the
        negative IWAE bound for ``M > 1``."""
        check_int("M", M)
        if M == 1:
            return -self.elbo(x, generator=generator).mean()
        return -self.iw_bound(x, M=M, generator=generator).mean()

    @torch.no_grad()
    def log_likelihood(
        self,
        x: torch.Tensor,
        *,
        M: int = 1024,
        chunk: int = 256,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Importance-sampled ``log p(x)`` with ``q(z|x)`` as proposal, ``(B,)``: the IWAE
        bound with ``M`` samples, drawn ``chunk`` at a time (a lower bound in expectation that
        tightens as ``M`` grows)."""
        check_int("M", M)
        check_int("chunk", chunk)
        params = self.encode(x)
        parts = []
        for start in range(0, M, chunk):
            m = min(chunk, M - start)
            z = self.rsample(params, (m,), generator=generator)
            lw = self.log_px_given_z(x, z) + self.log_prior(z) - self.log_q(z, params)
            parts.append(torch.logsumexp(lw, 0))
        return torch.logsumexp(torch.stack(parts), 0) - math.log(M)


class GaussianVAE(MLPVAE):
    """MLP VAE with a Gaussian latent: prior ``N(0, I_z)``, posterior ``N(m(x), diag(e^lv(x)))``.

    ``encode(x) -> (m, logvar)``, both ``(B, z_dim)`` (``logvar`` clamped to [-30, 20]);
    ``kl`` is ``0.5 sum(m^2 + e^lv - 1 - lv)``, which the optimiser may drive to 0 in some
    coordinates (posterior collapse: those coordinates carry no information about ``x``).
    """

    latent = "gaussian"

    def __init__(
        self,
        x_dim: int,
        z_dim: int,
        *,
        hidden: int = 64,
        depth: int = 1,
        likelihood: str = "bernoulli",
        dec_sigma: float = 0.1,
    ):
        super().__init__(x_dim, z_dim, 2 * check_int("z_dim", z_dim), hidden=hidden,
                         depth=depth, likelihood=likelihood, dec_sigma=dec_sigma)  # fmt: skip

    def encode(self, x):
        m, lv = self.encoder(self._check_x(x)).chunk(2, dim=-1)
        return m, lv.clamp(*_LOGVAR_RANGE)

    def rsample(self, params, sample_shape=(), *, generator=None):
        m, lv = params
        shape = _sample_shape(sample_shape) + tuple(m.shape)
        eps = torch.randn(shape, dtype=m.dtype, device=m.device, generator=generator)
        return m + torch.exp(0.5 * lv) * eps

    def log_q(self, z, params):
        m, lv = params
        z = self._check_z(z)
        return (-0.5 * ((z - m) ** 2 * torch.exp(-lv) + lv + math.log(2 * math.pi))).sum(-1)

    def log_prior(self, z):
        z = self._check_z(z)
        return (-0.5 * (z**2 + math.log(2 * math.pi))).sum(-1)

    def kl(self, params):
        m, lv = params
        return 0.5 * (m**2 + torch.exp(lv) - 1 - lv).sum(-1)

    def sample_prior(self, n, *, generator=None, dtype=None):
        check_int("n", n)
        w = self.decoder[0].weight
        return torch.randn(n, self.z_dim, dtype=dtype or w.dtype, device=w.device,
                           generator=generator)  # fmt: skip


class VMFVAE(MLPVAE):
    """MLP VAE with a vMF latent on ``S^(z_dim-1)`` (kexue.fm 8404): uniform prior, posterior
    ``vMF(mu(x), kappa)`` with a fixed concentration ``kappa``.

    ``encode(x) -> (mu,)``, ``mu: (B, z_dim)`` of unit norm; draws come from
    :class:`~kexue_lib.vmf.VMFReparam` (inverse-CDF table, differentiable in ``mu``). ``kl``
    is the constant ``KL(vMF(., kappa) || U(S^(z_dim-1)))`` for every example: the loss is a
    reconstruction term plus a number, and ``kappa`` alone sets how much noise the code carries.
    """

    latent = "vmf"

    def __init__(
        self,
        x_dim: int,
        z_dim: int,
        kappa: float,
        *,
        hidden: int = 64,
        depth: int = 1,
        likelihood: str = "bernoulli",
        dec_sigma: float = 0.1,
        n_grid: int = 2**16,
    ):
        z_dim = check_int("z_dim", z_dim, minimum=2)
        super().__init__(x_dim, z_dim, z_dim, hidden=hidden, depth=depth,
                         likelihood=likelihood, dec_sigma=dec_sigma)  # fmt: skip
        self.reparam = VMFReparam(z_dim, kappa, n_grid=n_grid)
        self.kappa = self.reparam.kappa
        self._kl = float(vmf_kl_to_uniform(z_dim, self.kappa))
        self._log_area = float(log_sphere_area(z_dim - 1))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", kappa={self.kappa:g}"

    def encode(self, x):
        return (F.normalize(self.encoder(self._check_x(x)), dim=-1),)

    def rsample(self, params, sample_shape=(), *, generator=None):
        (mu,) = params
        mu = mu.expand(_sample_shape(sample_shape) + tuple(mu.shape))
        return self.reparam(mu, generator=generator)

    def log_q(self, z, params):
        return vmf_log_prob(self._check_z(z), params[0], self.kappa)

    def log_prior(self, z):
        z = self._check_z(z)
        return torch.full(z.shape[:-1], -self._log_area, dtype=z.dtype, device=z.device)

    def kl(self, params):
        mu = params[0]
        return torch.full(mu.shape[:-1], self._kl, dtype=mu.dtype, device=mu.device)

    def sample_prior(self, n, *, generator=None, dtype=None):
        check_int("n", n)
        w = self.decoder[0].weight
        return sample_sphere(n, self.z_dim, dtype=dtype or w.dtype, device=w.device,
                             generator=generator)  # fmt: skip


_MODES = ("vae", "ae", "encoder", "decoder")
_POS = ("rope", "learned", "sinusoidal")


class UniVAE(nn.Module):
    """One Transformer as a multi-scale vMF-VAE, by attention masks (Su 2021, kexue.fm 8475).

    ``UniVAE(vocab, d, heads, layers, *, latent_layers, z_dim, kappa, max_len, pos="rope")``
    wraps a :class:`~kexue_lib.models.transformer.TinyTransformer` of ``layers`` pre-LN blocks
    (``max_len`` is the padded length of **one** half; the model sees ``2 max_len`` tokens), two
    segment embeddings and a tied LM head. Special ids: ``pad_id`` (never predicted, masked as
    a key), ``cls_id`` (first token; position 0 carries the code), ``sep_id`` (end of sentence).

    ``forward(tokens, *, mode, target=None, z=None, generator=None, return_latent=False)``:

    * ``"vae"`` / ``"ae"``: encode ``tokens`` (the source), decode ``target`` (default: the
      same sentence) with teacher forcing; returns logits ``(B, n_tgt, vocab)`` (and the code
      ``(B, latent_layers * z_dim)`` with ``return_latent``). ``"vae"`` samples each chunk from
      ``vMF(mu_l, kappa)`` with ``generator``; ``"ae"`` uses ``mu_l``.
    * ``"encoder"``: runs the source half only; returns ``mu: (B, latent_layers * z_dim)``,
      unit norm per chunk (the deterministic code of ``"ae"``).
    * ``"decoder"``: runs ``[CLS] + tokens`` as the target half at its usual positions, with
      ``z`` injected at the latent layers; returns logits ``(B, n, vocab)``. With ``z`` from
      ``"encoder"`` it reproduces the ``"ae"`` logits (the only path from source to target).
    """

    def __init__(
        self,
        vocab: int,
        d: int,
        heads: int,
        layers: int,
        *,
        latent_layers: int,
        z_dim: int,
        kappa: float,
        max_len: int,
        pos: str = "rope",
        pad_id: int = 0,
        cls_id: int = 1,
        sep_id: int = 2,
        ffn_mult: int = 4,
        n_grid: int = 2**14,
    ):
        super().__init__()
        check_int("vocab", vocab, minimum=4)
        check_int("layers", layers, minimum=2)
        check_int("latent_layers", latent_layers)
        if latent_layers > layers - 1:
            raise ValueError(
                f"latent_layers: expected at most layers - 1 = {layers - 1} (the CLS state "
                f"entering block 0 is a constant embedding and carries no code), got {latent_layers}"
            )
        check_int("z_dim", z_dim, minimum=2)
        check_int("max_len", max_len, minimum=2)
        check_positive("kappa", kappa, strict=False)
        if pos not in _POS:
            raise ValueError(f"pos: expected one of {list(_POS)}, got {pos!r}")
        ids = {"pad_id": pad_id, "cls_id": cls_id, "sep_id": sep_id}
        for name, v in ids.items():
            check_int(name, v, minimum=0)
            if v >= vocab:
                raise ValueError(f"{name}: expected an id < vocab = {vocab}, got {v}")
        if len(set(ids.values())) != 3:
            raise ValueError(f"pad_id, cls_id, sep_id: expected three different ids, got {ids}")
        self.vocab, self.d, self.layers = vocab, d, layers
        self.latent_layers, self.z_dim, self.kappa = latent_layers, z_dim, float(kappa)
        self.max_len, self.pos = max_len, pos
        self.pad_id, self.cls_id, self.sep_id = pad_id, cls_id, sep_id
        self.k = layers - latent_layers  # independent (code-free) layers
        self.net = TinyTransformer(
            vocab, d, heads, layers, max_len=2 * max_len, pos=pos, segments=2, ffn_mult=ffn_mult
        )
        self.down = nn.ModuleList(nn.Linear(d, z_dim) for _ in range(latent_layers))
        self.up = nn.ModuleList(nn.Linear(z_dim, d) for _ in range(latent_layers))
        self.reparam = VMFReparam(z_dim, kappa, n_grid=n_grid)

    def extra_repr(self) -> str:
        return (
            f"k={self.k} independent + {self.latent_layers} latent layers, z_dim={self.z_dim}, "
            f"kappa={self.kappa:g}, max_len={self.max_len}"
        )

    @property
    def code_dim(self) -> int:
        """Size of the whole code, ``latent_layers * z_dim``."""
        return self.latent_layers * self.z_dim

    @property
    def latent_block_indices(self) -> list[int]:
        """Block index (0-based) at whose input each code chunk is injected."""
        return list(range(self.k, self.layers))

    # ------------------------------------------------------------------ inputs and masks

    def _check_tokens(self, name: str, tokens) -> torch.Tensor:
        check_tensor(name, tokens)
        if tokens.dim() != 2 or tokens.dtype not in (torch.int64, torch.int32):
            raise ValueError(
                f"{name}: expected an integer tensor (B, n), got shape {tuple(tokens.shape)} "
                f"and dtype {tokens.dtype}"
            )
        n = tokens.shape[1]
        if not 1 <= n <= self.max_len:
            raise ValueError(f"{name}: expected a length in [1, max_len={self.max_len}], got {n}")
        if int(tokens.min()) < 0 or int(tokens.max()) >= self.vocab:
            raise ValueError(f"{name}: expected ids in [0, {self.vocab}), got a value outside")
        return tokens.long()

    def _pad(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.pad(tokens, (0, self.max_len - tokens.shape[1]), value=self.pad_id)

    def _layer_masks(self, segment_ids: torch.Tensor, real: torch.Tensor) -> list[torch.Tensor]:
        ind = with_key_padding(uniae_mask(segment_ids, allow_cls=False), real)
        ae = with_key_padding(uniae_mask(segment_ids, allow_cls=True), real)
        return [ind] * self.k + [ae] * self.latent_layers

    def masks(self, tokens: torch.Tensor, target: torch.Tensor | None = None) -> list[torch.Tensor]:
        """The per-layer bool masks ``(B, 2 max_len, 2 max_len)`` (True = may attend) of the
        ``"vae"`` / ``"ae"`` modes: ``k`` independent masks, then ``latent_layers`` UniAE masks,
        with padded keys removed."""
        seq, seg = self._full_input(tokens, target)
        return self._layer_masks(seg, seq != self.pad_id)

    def _full_input(self, tokens, target):
        src = self._pad(self._check_tokens("tokens", tokens))
        tgt = self._pad(self._check_tokens("target", tokens if target is None else target))
        if tgt.shape[0] != src.shape[0]:
            raise ValueError(f"target: expected batch size {src.shape[0]}, got {tuple(tgt.shape)}")
        seq = torch.cat([src, tgt], dim=1)
        seg = torch.zeros_like(seq)
        seg[:, self.max_len :] = 1
        return seq, seg

    # ------------------------------------------------------------------ the shared trunk

    def _trunk(self, seq, seg, positions, masks, *, code, stop_after_code=False, generator=None):
        """Run the blocks; ``code`` is "mu" | "vae" | a tensor (B, code_dim) to inject.
        Returns the final hidden states (None if stopped early) and the code used."""
        pos_embed = positions if self.pos in ("learned", "sinusoidal") else None
        h = self.net.embed(seq, segment_ids=seg, positions=pos_embed)
        rope_pos = positions if self.pos == "rope" else None
        chunks = []
        for i, block in enumerate(self.net.blocks):
            if i >= self.k:
                j = i - self.k
                if isinstance(code, torch.Tensor):
                    z = code[:, j * self.z_dim : (j + 1) * self.z_dim]
                else:
                    mu = F.normalize(self.down[j](h[:, 0]), dim=-1)
                    z = self.reparam(mu, generator=generator) if code == "vae" else mu
                chunks.append(z)
                if stop_after_code and j == self.latent_layers - 1:
                    return None, torch.cat(chunks, dim=-1)
                h = torch.cat([self.up[j](z.to(h.dtype)).unsqueeze(1), h[:, 1:]], dim=1)
            h = block(h, attn_mask=masks[i], positions=rope_pos)
        return h, torch.cat(chunks, dim=-1)

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.net.lm_head(self.net.ln_f(h))

    # ------------------------------------------------------------------ public API

    def forward(
        self,
        tokens: torch.Tensor,
        *,
        mode: str = "vae",
        target: torch.Tensor | None = None,
        z: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        return_latent: bool = False,
    ):
        if mode not in _MODES:
            raise ValueError(f"mode: expected one of {list(_MODES)}, got {mode!r}")
        dev = self.net.tok_emb.weight.device
        if mode == "encoder":
            src = self._pad(self._check_tokens("tokens", tokens))
            seg = torch.zeros_like(src)
            real = src != self.pad_id
            full = torch.ones(self.max_len, self.max_len, dtype=torch.bool, device=src.device)
            masks = [with_key_padding(full, real)] * self.layers
            positions = torch.arange(self.max_len, device=dev)
            return self._trunk(src, seg, positions, masks, code="mu", stop_after_code=True)[1]
        if mode == "decoder":
            tgt = self._check_tokens("tokens", tokens)
            check_tensor("z", z, floating=True)
            if z.shape != (tgt.shape[0], self.code_dim):
                raise ValueError(
                    f"z: expected shape ({tgt.shape[0]}, {self.code_dim}), got {tuple(z.shape)}"
                )
            B, n = tgt.shape
            cls = torch.full((B, 1), self.cls_id, dtype=torch.long, device=tgt.device)
            seq = torch.cat([cls, tgt], dim=1)
            seg = torch.ones_like(seq)
            seg[:, 0] = 0
            positions = torch.cat(
                [
                    torch.zeros(1, dtype=torch.long, device=dev),
                    self.max_len + torch.arange(n, device=dev),
                ]
            )
            masks = self._layer_masks(seg, seq != self.pad_id)
            h, code = self._trunk(seq, seg, positions, masks, code=z)
            logits = self._logits(h[:, 1:])
            return (logits, code) if return_latent else logits
        seq, seg = self._full_input(tokens, target)
        n_tgt = (tokens if target is None else target).shape[1]
        positions = torch.arange(2 * self.max_len, device=dev)
        masks = self._layer_masks(seg, seq != self.pad_id)
        code = "vae" if mode == "vae" else "mu"
        h, zc = self._trunk(seq, seg, positions, masks, code=code, generator=generator)
        logits = self._logits(h[:, self.max_len : self.max_len + n_tgt])
        return (logits, zc) if return_latent else logits

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """The deterministic code ``mu: (B, latent_layers * z_dim)``, unit norm per chunk."""
        return self(tokens, mode="encoder")

    def loss(
        self, tokens: torch.Tensor, *, mode: str = "vae", generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Mean next-token cross-entropy on the target half (pads excluded), a 0-d tensor.

        With a fixed ``kappa`` this is the whole VAE objective up to the constant :meth:`kl`.
        """
        if mode not in ("vae", "ae"):
            raise ValueError(f"mode: expected 'vae' or 'ae' for a loss, got {mode!r}")
        logits = self(tokens, mode=mode, generator=generator)
        return F.cross_entropy(
            logits[:, :-1].reshape(-1, self.vocab),
            tokens[:, 1:].reshape(-1).long(),
            ignore_index=self.pad_id,
        )

    def kl(self) -> torch.Tensor:
        """The constant KL term ``latent_layers * KL(vMF(., kappa) || U(S^(z_dim-1)))`` (nats)."""
        return self.latent_layers * vmf_kl_to_uniform(self.z_dim, self.kappa)

    def sample_prior(
        self, n: int, *, generator: torch.Generator | None = None, dtype=torch.float32
    ) -> torch.Tensor:
        """Codes from the prior, ``(n, latent_layers * z_dim)``: each chunk uniform on its sphere."""
        check_int("n", n)
        dev = self.net.tok_emb.weight.device
        z = sample_sphere((n, self.latent_layers), self.z_dim, dtype=dtype, device=dev,
                          generator=generator)  # fmt: skip
        return z.reshape(n, self.code_dim)

    @torch.no_grad()
    def generate(
        self,
        z: torch.Tensor,
        *,
        max_len: int | None = None,
        greedy: bool = True,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.LongTensor:
        """Decode codes ``z: (B, code_dim)`` into ``(B, n <= max_len)`` token ids.

        Starts from ``[CLS]`` and appends argmax (``greedy``) or sampled tokens until every row
        has emitted ``[SEP]`` or ``max_len`` is reached; rows that finished are padded.
        """
        max_len = self.max_len if max_len is None else check_int("max_len", max_len, minimum=2)
        max_len = min(max_len, self.max_len)
        check_positive("temperature", temperature)
        check_tensor("z", z, floating=True)
        B = z.shape[0]
        seq = torch.full((B, 1), self.cls_id, dtype=torch.long, device=z.device)
        done = torch.zeros(B, dtype=torch.bool, device=z.device)
        while seq.shape[1] < max_len and not bool(done.all()):
            logits = self(seq, mode="decoder", z=z)[:, -1].float()
            logits[:, [self.pad_id, self.cls_id]] = float("-inf")
            if greedy:
                nxt = logits.argmax(-1)
            else:
                probs = torch.softmax(logits / temperature, dim=-1)
                nxt = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
            nxt = torch.where(done, torch.full_like(nxt, self.pad_id), nxt)
            seq = torch.cat([seq, nxt[:, None]], dim=1)
            done |= nxt == self.sep_id
        return seq
