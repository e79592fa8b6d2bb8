"""kexue_lib.training: the shared loop against a hand-written one, masked accuracy by loop."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from kexue_lib import make_generator, seeded
from kexue_lib.training import fit, masked_accuracy, single_thread


def _model():
    with seeded(0):
        return torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))


def _batch(g):
    x = torch.randn(16, 3, generator=g, dtype=torch.float64)
    return x, (x[:, 0] > 0).long()


def _loss(m, x, y):
    return F.cross_entropy(m(x), y)


@pytest.mark.parametrize("opt", ["adam", "adamw", "sgd"])
def test_fit_matches_hand_written_loop(opt):
    m1, m2 = _model().double(), _model().double()
    losses = fit(
        m1,
        _batch,
        _loss,
        steps=40,
        lr=0.05 if opt != "sgd" else 0.5,
        optimizer=opt,
        generator=make_generator(3),
    )
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}[opt]
    o = cls(m2.parameters(), lr=0.05 if opt != "sgd" else 0.5, weight_decay=0.0)
    g, ref = make_generator(3), []
    for _ in range(40):
        loss = _loss(m2, *_batch(g))
        o.zero_grad()
        loss.backward()
        o.step()
        ref.append(loss.item())
    assert losses == pytest.approx(ref, rel=1e-12, abs=1e-12)
    for a, b in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(a, b)
    assert losses[-1] < 0.5 * losses[0]  # it learns the sign of x0


def test_fit_params_subset_and_clip():
    m = _model().double()
    frozen = m[0].weight.detach().clone()
    fit(m, _batch, _loss, steps=5, lr=0.1, generator=make_generator(0), params=[m[2].weight])
    torch.testing.assert_close(m[0].weight, frozen)
    # with a tiny clip, SGD moves the parameters by at most lr * clip per step
    m = _model().double()
    before = torch.cat([p.detach().flatten() for p in m.parameters()])
    fit(
        m,
        _batch,
        _loss,
        steps=1,
        lr=1.0,
        optimizer="sgd",
        grad_clip=1e-3,
        generator=make_generator(0),
    )
    after = torch.cat([p.detach().flatten() for p in m.parameters()])
    assert (after - before).norm() <= 1e-3 * (1 + 1e-9)


def test_fit_deterministic_and_tensor_batch():
    def run():
        m = _model().double()
        return fit(
            m,
            lambda g: torch.randn(8, 3, generator=g, dtype=torch.float64),
            lambda m, x: m(x).pow(2).mean(),
            steps=10,
            generator=make_generator(7),
        )

    assert run() == run()


def test_fit_bad_input():
    m = _model()
    g = make_generator(0)
    with pytest.raises(TypeError, match=r"^model\b"):
        fit(object(), _batch, _loss, steps=1, generator=g)
    with pytest.raises(ValueError, match=r"^steps\b"):
        fit(m, _batch, _loss, steps=0, generator=g)
    with pytest.raises(TypeError, match=r"^generator\b"):
        fit(m, _batch, _loss, steps=1, generator=0)
    with pytest.raises(ValueError, match=r"^optimizer\b"):
        fit(m, _batch, _loss, steps=1, generator=g, optimizer="lbfgs")
    with pytest.raises(ValueError, match=r"^lr\b"):
        fit(m, _batch, _loss, steps=1, generator=g, lr=-1.0)
    with pytest.raises(ValueError, match=r"^loss_fn\b"):
        fit(m, _batch, lambda m, x, y: m(x.float()), steps=1, generator=g)


def test_masked_accuracy_against_loop(rng):
    g = rng
    logits = torch.randn(5, 7, 4, generator=g)
    target = torch.randint(0, 4, (5, 7), generator=g)
    target[0, :3] = -100
    target[2, 5] = -100
    hits = total = 0
    for i in range(5):
        for j in range(7):
            if target[i, j] != -100:
                total += 1
                hits += int(max(range(4), key=lambda c: logits[i, j, c]) == target[i, j])
    assert masked_accuracy(logits, target) == pytest.approx(hits / total)
    assert math.isnan(masked_accuracy(logits, torch.full((5, 7), -100)))
    with pytest.raises(ValueError, match=r"^target\b"):
        masked_accuracy(logits, target[:, :3])
    with pytest.raises(TypeError, match=r"^target\b"):
        masked_accuracy(logits, target.float())


def test_single_thread_restores():
    before = torch.get_num_threads()
    with single_thread():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), single_thread():
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before
