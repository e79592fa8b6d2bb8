"""Tests of kexue_lib.models.vae.UniVAE: masks against literal loops and a hand-worked 6-token
example, the information path from source to target, vMF latents, shapes and determinism."""

from __future__ import annotations

import math

import pytest
import torch

from kexue_lib._core import seeded
from kexue_lib.attention import uniae_mask, unilm_mask
from kexue_lib.models.vae import UniVAE
from kexue_lib.vmf import vmf_mean_length
from tests.conftest import gen, requires_cuda

VOCAB, PAD, CLS, SEP = 16, 0, 1, 2


def make_model(seed=0, **kw) -> UniVAE:
    cfg = dict(latent_layers=2, z_dim=4, kappa=16.0, max_len=6, n_grid=4096)
    cfg.update(kw)
    with seeded(seed):
        return UniVAE(VOCAB, 16, 2, 4, **cfg).eval()


def batch() -> torch.Tensor:
    return torch.tensor(
        [[CLS, 5, 6, 7, SEP, PAD], [CLS, 9, 8, SEP, PAD, PAD], [CLS, 3, 4, 5, 6, SEP]]
    )


# --------------------------------------------------------------------------- masks

SEG6 = torch.tensor([[0, 0, 0, 1, 1, 1]])  # [CLS a SEP | CLS a SEP]


def loop_mask(seg, rule):
    n = len(seg)
    m = torch.zeros(n, n, dtype=torch.bool)
    for i in range(n):
        for j in range(n):
            if seg[i] == 0:  # a source row sees the whole source, never the target
                m[i, j] = seg[j] == 0
            elif rule == "unilm":  # a target row sees the source and its own past
                m[i, j] = seg[j] == 0 or j <= i
            else:  # uniae / independent: own past in the target (+ the CLS key for uniae)
                m[i, j] = (seg[j] == 1 and j <= i) or (rule == "uniae" and j == 0)
    return m


def test_masks_on_the_six_token_example_by_hand():
    unilm = [
        [1, 1, 1, 0, 0, 0],
        [1, 1, 1, 0, 0, 0],
        [1, 1, 1, 0, 0, 0],
        [1, 1, 1, 1, 0, 0],
        [1, 1, 1, 1, 1, 0],
        [1, 1, 1, 1, 1, 1],
    ]
    uniae = [
        [1, 1, 1, 0, 0, 0],
        [1, 1, 1, 0, 0, 0],
        [1, 1, 1, 0, 0, 0],
        [1, 0, 0, 1, 0, 0],
        [1, 0, 0, 1, 1, 0],
        [1, 0, 0, 1, 1, 1],
    ]
    indep = [r[:] for r in uniae]
    for r in indep[3:]:
        r[0] = 0
    assert torch.equal(unilm_mask(SEG6)[0], torch.tensor(unilm, dtype=torch.bool))
    assert torch.equal(uniae_mask(SEG6)[0], torch.tensor(uniae, dtype=torch.bool))
    assert torch.equal(uniae_mask(SEG6, allow_cls=False)[0], torch.tensor(indep, dtype=torch.bool))


@pytest.mark.parametrize("n_src, n_tgt", [(3, 3), (4, 2), (1, 5), (6, 6)])
def test_masks_vs_loops(n_src, n_tgt):
    seg = [0] * n_src + [1] * n_tgt
    s = torch.tensor([seg])
    assert torch.equal(unilm_mask(s)[0], loop_mask(seg, "unilm"))
    assert torch.equal(uniae_mask(s)[0], loop_mask(seg, "uniae"))
    assert torch.equal(uniae_mask(s, allow_cls=False)[0], loop_mask(seg, "independent"))
    # UniAE = UniLM restricted: a target row keeps the CLS key and its own past only
    u, a = unilm_mask(s)[0], uniae_mask(s)[0]
    assert torch.equal(a & ~u, torch.zeros_like(a))


def test_model_layer_masks_schedule_and_padding():
    model = make_model(max_len=3, latent_layers=3)  # k = 1 independent layer
    x = torch.tensor([[CLS, 5, SEP], [CLS, SEP, PAD]])
    ms = model.masks(x)
    assert len(ms) == 4 and all(m.shape == (2, 6, 6) for m in ms)
    seg = [0, 0, 0, 1, 1, 1]
    assert torch.equal(ms[0][0], loop_mask(seg, "independent"))
    for m in ms[1:]:
        assert torch.equal(m[0], loop_mask(seg, "uniae"))
    # second sentence: keys 2 and 5 are padding; real query rows never see them
    real = [0, 1, 3, 4]
    expect = loop_mask(seg, "uniae")
    expect[:, [2, 5]] = False
    assert torch.equal(ms[-1][1][real], expect[real])


# --------------------------------------------------------------------------- information path


def test_target_side_tokens_do_not_change_the_code():
    model = make_model()
    x = batch()
    _, z_a = model(x, mode="ae", return_latent=True)
    other = torch.tensor([[CLS, 11, 12, SEP, PAD, PAD]]).expand(3, 6)
    _, z_b = model(x, mode="ae", target=other, return_latent=True)
    assert torch.equal(z_a, z_b)
    x2 = x.clone()
    x2[0, 2] = 13  # a source token: the code moves
    _, z_c = model(x2, mode="ae", return_latent=True)
    assert (z_c[0] - z_a[0]).abs().max() > 1e-4
    torch.testing.assert_close(z_c[1:], z_a[1:])
    # the encoder-only run gives the same code as the full run
    torch.testing.assert_close(model.encode(x), z_a, atol=1e-6, rtol=0)


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 2e-5), (torch.float64, 1e-12)])
def test_decoder_sees_the_source_only_through_the_code(dtype, tol):
    """Full 'ae' logits == 'decoder' logits fed the encoder's code; and the 'decoder' logits do
    not depend on the source at all (there is none), so the code is the only path."""
    model = make_model().to(dtype)
    x = batch()
    full = model(x, mode="ae")
    dec = model(x, mode="decoder", z=model.encode(x))
    torch.testing.assert_close(dec, full, atol=tol, rtol=0)
    # gradient view: d target logits / d source embeddings vanishes once the code is detached
    emb = model.net.tok_emb
    with torch.no_grad():
        code = model.encode(x)
    out = model(x, mode="decoder", z=code.requires_grad_())
    (g,) = torch.autograd.grad(out.sum(), code)
    assert g.abs().sum() > 0
    assert emb.weight.grad is None


def test_target_is_causal():
    model = make_model()
    x = batch()
    y = x.clone()
    y[:, 3] = 14
    a, b = model(x, mode="ae"), model(x, mode="ae", target=y)
    torch.testing.assert_close(a[:, :3], b[:, :3], atol=1e-6, rtol=0)
    assert (a[:, 3:] - b[:, 3:]).abs().max() > 1e-4


def test_padding_the_source_does_not_change_anything_real():
    """The source half is always padded to max_len: a shorter input tensor (fewer trailing pads)
    gives the same code and the same target logits."""
    model = make_model()
    x = torch.tensor([[CLS, 5, 6, SEP, PAD, PAD]])
    a_logits, a_z = model(x, mode="ae", return_latent=True)
    b_logits, b_z = model(x[:, :4], mode="ae", return_latent=True)
    torch.testing.assert_close(a_z, b_z)
    torch.testing.assert_close(a_logits[:, :4], b_logits)


# --------------------------------------------------------------------------- vMF latents


def test_latent_chunks_are_unit_vectors_and_vmf_distributed():
    model = make_model(kappa=16.0, z_dim=4)
    x = batch()[:1].expand(4000, 6)
    mu = model.encode(x[:1])
    _, z = model(x, mode="vae", generator=gen(1), return_latent=True)
    assert z.shape == (4000, model.code_dim) == (4000, 8)
    for j in range(model.latent_layers):
        sl = slice(4 * j, 4 * j + 4)
        assert torch.allclose(z[:, sl].norm(dim=-1), torch.ones(4000), atol=1e-6)
        assert torch.allclose(mu[:, sl].norm(dim=-1), torch.ones(1), atol=1e-6)
    # the first chunk is vMF(mu_1, kappa) around the deterministic code: E[w] = A_4(16)
    w = (z[:, :4] * mu[:, :4]).sum(-1)
    a = vmf_mean_length(4, 16.0).item()
    se = w.std().item() / math.sqrt(len(w))
    assert abs(w.mean().item() - a) < 4 * se, (w.mean().item(), a)
    assert model.kl().item() > 0
    prior = model.sample_prior(50, generator=gen(2))
    assert prior.shape == (50, 8)
    assert torch.allclose(prior.view(50, 2, 4).norm(dim=-1), torch.ones(50, 2), atol=1e-6)


# --------------------------------------------------------------------------- shapes, determinism


def test_shapes_and_generation():
    model = make_model()
    x = batch()
    assert model(x, mode="vae", generator=gen(0)).shape == (3, 6, VOCAB)
    assert model(x[:, :4], mode="ae").shape == (3, 4, VOCAB)
    assert model(x, mode="encoder").shape == (3, 8)
    assert model(x[:, :2], mode="decoder", z=model.encode(x)).shape == (3, 2, VOCAB)
    assert model.latent_block_indices == [2, 3]
    out = model.generate(model.sample_prior(5, generator=gen(3)), greedy=False, generator=gen(4))
    assert out.dtype == torch.long and out.shape[0] == 5 and 2 <= out.shape[1] <= 6
    assert (out[:, 0] == CLS).all()
    for row in out.tolist():
        if SEP in row:
            assert all(t == PAD for t in row[row.index(SEP) + 1 :])
    assert torch.isfinite(model.loss(x, generator=gen(5)))


def test_determinism_with_a_seed():
    a, b = make_model(seed=7), make_model(seed=7)
    x = batch()
    la = a(x, mode="vae", generator=gen(9))
    assert torch.equal(la, b(x, mode="vae", generator=gen(9)))
    assert not torch.equal(la, a(x, mode="vae", generator=gen(10)))
    z = a.sample_prior(4, generator=gen(11))
    assert torch.equal(a.generate(z), b.generate(z))
    assert not torch.equal(make_model(seed=8)(x, mode="ae"), a(x, mode="ae"))


def test_a_few_steps_of_training_reduce_the_loss():
    model = make_model().train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x = batch()
    g = gen(0)
    first = model.loss(x, generator=g).item()
    for _ in range(30):
        opt.zero_grad()
        loss = model.loss(x, generator=g)
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"^latent_layers\b"):
        UniVAE(VOCAB, 16, 2, 4, latent_layers=4, z_dim=4, kappa=1.0, max_len=6)
    with pytest.raises(ValueError, match=r"^z_dim\b"):
        UniVAE(VOCAB, 16, 2, 4, latent_layers=2, z_dim=1, kappa=1.0, max_len=6)
    with pytest.raises(ValueError, match=r"^kappa\b"):
        UniVAE(VOCAB, 16, 2, 4, latent_layers=2, z_dim=4, kappa=-1.0, max_len=6)
    with pytest.raises(ValueError, match=r"^pos\b"):
        UniVAE(VOCAB, 16, 2, 4, latent_layers=2, z_dim=4, kappa=1.0, max_len=6, pos="none")
    with pytest.raises(ValueError, match=r"^pad_id\b"):
        UniVAE(VOCAB, 16, 2, 4, latent_layers=2, z_dim=4, kappa=1.0, max_len=6, cls_id=0)
    model = make_model()
    x = batch()
    with pytest.raises(ValueError, match=r"^mode\b"):
        model(x, mode="seq2seq")
    with pytest.raises(ValueError, match=r"^tokens\b"):
        model(torch.ones(2, 7, dtype=torch.long), mode="ae")
    with pytest.raises(ValueError, match=r"^tokens\b"):
        model(torch.full((2, 3), VOCAB), mode="ae")
    with pytest.raises(ValueError, match=r"^tokens\b"):
        model(torch.ones(2, 3), mode="ae")
    with pytest.raises(ValueError, match=r"^z\b"):
        model(x, mode="decoder", z=torch.zeros(3, 5))
    with pytest.raises(TypeError, match=r"^z\b"):
        model(x, mode="decoder", z=None)
    with pytest.raises(ValueError, match=r"^target\b"):
        model(x, mode="ae", target=x[:2])


def test_learned_positions_variant_keeps_the_information_path():
    model = make_model(pos="learned")
    x = batch()
    full = model(x, mode="ae")
    torch.testing.assert_close(model(x, mode="decoder", z=model.encode(x)), full, atol=2e-5, rtol=0)


@requires_cuda
def test_cuda_matches_cpu():
    model = make_model()
    x = batch()
    ref = model(x, mode="ae")
    cm = model.to("cuda")
    out = cm(x.cuda(), mode="ae")
    torch.testing.assert_close(out.cpu(), ref, atol=1e-4, rtol=1e-4)
    _, z = cm(x.cuda(), mode="vae", generator=gen(0, "cuda"), return_latent=True)
    assert z.device.type == "cuda" and torch.isfinite(z).all()
    assert cm.generate(cm.sample_prior(3, generator=gen(1, "cuda"))).device.type == "cuda"
