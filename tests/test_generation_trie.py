"""Trie, trie-constrained beam search and candidate scoring (kexue.fm/archives/8802, 8671).

References: brute-force prefix sets, ``pygtrie`` and ``marisa_trie`` for the prefix tree;
exhaustive search over the allowed sequences and Hugging Face ``generate`` with
``prefix_allowed_tokens_fn`` on a tiny random GPT-2 for decoding; an explicit loop for
``score_candidates``; enumeration for the NSP posterior.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kexue_lib.generation import (
    Trie,
    beam_search,
    exhaustive_best,
    lcs_length,
    lookahead_reweight,
    nsp_pmi_logit,
    score_candidates,
    sequence_logprob,
    trie_prefix_allowed_fn,
)
from tests.conftest import requires_cuda

V, EOS = 6, 5
seq_st = st.lists(st.integers(0, EOS - 1), min_size=1, max_size=4).map(tuple)
db_st = st.lists(seq_st, min_size=1, max_size=12)


def table_model(seed: int, dtype=torch.float64, v: int = V):
    """Random logits for every prefix (a lookup table keyed by the prefix): any distribution."""
    cache: dict = {}

    def fn(prefixes):
        rows = []
        for p in prefixes:
            if p not in cache:
                g = torch.Generator().manual_seed(hash((seed,) + p) % (2**31))
                cache[p] = 2.0 * torch.randn(v, generator=g, dtype=torch.float64)
            rows.append(cache[p])
        return torch.stack(rows).to(dtype)

    return fn


# ------------------------------------------------------------------ Trie


def test_post_example_allowed_sets_and_node_count():
    db = [
        "明月几时有",
        "明天会更好",
        "明天下雨",
        "明天下午开会",
        "明天下午放假",
        "明年见",
        "今夕是何年",
        "今天去哪里玩",
    ]
    t = Trie([tuple(s) for s in db])
    assert set(t.next_tokens(())) == {"明", "今"}
    assert set(t.next_tokens(("明",))) == {"月", "天", "年"}
    assert set(t.next_tokens(tuple("明天"))) == {"会", "下"}
    prefixes = {s[:i] for s in db for i in range(1, len(s) + 1)}
    assert t.num_nodes == len(prefixes) == 28 and sum(map(len, db)) == 40
    assert sorted(t.keys()) == sorted(tuple(s) for s in db)


@settings(max_examples=60, deadline=None)
@given(db_st, seq_st)
def test_trie_matches_brute_force_prefix_sets(db, query):
    t = Trie(db)
    assert set(t.keys()) == set(db) and len(t) == len(set(db))
    prefixes = {s[:i] for s in db for i in range(1, len(s) + 1)}
    assert t.num_nodes == len(prefixes)
    for k in range(len(query) + 1):
        q = query[:k]
        want = {s[k] for s in db if len(s) > k and s[:k] == q}
        assert set(t.next_tokens(q)) == want
        assert t.has_prefix(q) == any(s[:k] == q for s in db)
        assert (q in t) == (q in set(db))
        assert set(t.keys(q)) == {s for s in db if s[:k] == q}


@settings(max_examples=40, deadline=None)
@given(db_st, seq_st)
def test_trie_against_pygtrie_and_marisa(db, query):
    pygtrie = pytest.importorskip("pygtrie")
    marisa_trie = pytest.importorskip("marisa_trie")
    t = Trie()
    ref = pygtrie.Trie()
    for i, s in enumerate(db):
        t.insert(s, value=i)
        ref[s] = i
    as_str = ["".join(chr(97 + x) for x in s) for s in db]
    m = marisa_trie.Trie(as_str)
    for k in range(len(query) + 1):
        q = query[:k]
        assert t.has_prefix(q) == (ref.has_subtrie(q) or ref.has_key(q))
        if ref.has_node(q):
            assert sorted(t.keys(q)) == sorted(ref.keys(prefix=q))
        qs = "".join(chr(97 + x) for x in q)
        assert sorted("".join(chr(97 + x) for x in s) for s in t.keys(q)) == sorted(m.keys(qs))
    for s in set(db):
        assert t.value(s) == ref[s]


def test_prefix_of_another_sequence_is_representable():
    t = Trie([(1, 2, 3), (1, 2)])
    assert (1, 2) in t and (1,) not in t and t.next_tokens((1, 2)) == [3]
    t.insert((1, 2), value="x")
    assert len(t) == 2 and t.value((1, 2)) == "x"
    with pytest.raises(KeyError):
        t.value((1,))


def test_trie_bad_input():
    with pytest.raises(ValueError, match=r"^seq\b"):
        Trie().insert(())
    with pytest.raises(TypeError, match=r"^seq\b"):
        Trie().insert(5)
    with pytest.raises(TypeError, match=r"^seq\b"):
        Trie().insert([[1], [2]])
    with pytest.raises(TypeError, match=r"^prefix\b"):
        Trie([(1,)]).next_tokens(3)


# ------------------------------------------------------------------ decoding


def exhaustive_all(fn, db, renormalize=False):
    t = Trie(db)
    return {s: sequence_logprob(fn, s, eos=EOS, trie=t, renormalize=renormalize) for s in db}


@settings(max_examples=25, deadline=None)
@given(db_st, st.integers(0, 1000), st.sampled_from([False, True]))
def test_wide_beam_equals_exhaustive_and_outputs_are_keys(db, seed, renorm):
    fn = table_model(seed)
    t = Trie(db)
    res = beam_search(
        fn, beam_size=t.num_nodes + len(t), max_len=6, eos=EOS, trie=t, renormalize=renorm
    )
    scores = exhaustive_all(fn, set(db), renorm)
    assert all(done for _, _, done in res)
    assert all(s in t for s, _, _ in res)
    best, best_s = exhaustive_best(fn, db, eos=EOS, renormalize=renorm)
    assert res[0][0] == best or math.isclose(scores[res[0][0]], best_s, rel_tol=1e-12)
    assert math.isclose(res[0][1], best_s, rel_tol=1e-9, abs_tol=1e-12)
    for s, sc, _ in res:  # every reported score is the teacher-forced score
        assert math.isclose(sc, scores[s], rel_tol=1e-9, abs_tol=1e-12)


@settings(max_examples=25, deadline=None)
@given(db_st, st.integers(0, 1000), st.integers(1, 3))
def test_narrow_beam_outputs_are_keys_and_not_better_than_exhaustive(db, seed, b):
    fn = table_model(seed)
    t = Trie(db)
    res = beam_search(fn, beam_size=b, max_len=6, eos=EOS, trie=t)
    best_s = exhaustive_best(fn, db, eos=EOS)[1]
    assert res and all(done and s in t for s, _, done in res)
    assert res[0][1] <= best_s + 1e-12
    if b == 1:  # greedy: follow the best allowed token (eos counted) at every step
        pre = ()
        while True:
            allowed = t.next_tokens(pre) + ([EOS] if pre in t else [])
            row = fn([pre])[0]
            a = max(allowed, key=lambda x: row[x].item())
            if a == EOS:
                break
            pre += (a,)
        assert res[0][0] == pre


def test_beam_is_exhaustive_over_all_sequences_without_trie():
    fn = table_model(3, v=4)
    eos = 3
    res = beam_search(fn, beam_size=64, max_len=3, eos=eos)
    cands = [s for n in range(0, 3) for s in itertools.product(range(3), repeat=n)]
    scores = {
        s: sequence_logprob(fn, s, eos=eos) if s else float(torch.log_softmax(fn([()])[0], 0)[eos])
        for s in cands
    }
    best = max(scores, key=scores.get)
    finished_best = max((r for r in res if r[2]), key=lambda r: r[1])
    assert finished_best[0] == best
    assert math.isclose(finished_best[1], scores[best], rel_tol=1e-9)


def test_renormalisation_changes_the_winner():
    # a long forced suffix is free under renormalisation
    logits = {(): [0.2, 0.0, -9, -9, -9], (0,): [-9, -9, 1.0, -9, -9], (1,): [-9, -9, -9, -9, 2.0]}

    def fn(prefixes):
        return torch.tensor(
            [logits.get(p, [-9, -9, -9, 0.0, 5.0]) for p in prefixes], dtype=torch.float64
        )

    db = [(0, 2, 3), (1,)]
    t = Trie(db)
    raw = beam_search(fn, beam_size=8, max_len=5, eos=4, trie=t)[0]
    ren = beam_search(fn, beam_size=8, max_len=5, eos=4, trie=t, renormalize=True)[0]
    assert raw[0] == (1,) and ren[0] == (0, 2, 3)
    assert math.isclose(ren[1], math.log(1 / (1 + math.exp(-0.2))), rel_tol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_and_all_masked_rows_give_no_nan(dtype):
    fn = table_model(1, dtype=dtype)
    t = Trie([(0, 1), (2,)])
    res = beam_search(fn, beam_size=4, max_len=4, eos=EOS, trie=t, renormalize=True)
    assert all(math.isfinite(s) for _, s, _ in res)

    def dead(prefixes):  # exactly zero probability on every allowed token
        row = torch.full((V,), -math.inf, dtype=dtype)
        row[4] = 0.0
        return row.expand(len(prefixes), V).clone()

    assert beam_search(dead, beam_size=2, max_len=3, eos=EOS, trie=t, renormalize=True) == []


def test_decoding_bad_input():
    fn = table_model(0)
    t = Trie([(0,)])
    with pytest.raises(ValueError, match=r"^beam_size\b"):
        beam_search(fn, beam_size=0, max_len=3, eos=EOS, trie=t)
    with pytest.raises(ValueError, match=r"^renormalize\b"):
        beam_search(fn, beam_size=1, max_len=3, eos=EOS, renormalize=True)
    with pytest.raises(ValueError, match=r"^trie\b"):
        beam_search(fn, beam_size=1, max_len=3, eos=EOS, trie=Trie([(9,)]))
    with pytest.raises(ValueError, match=r"^trie\b"):
        beam_search(fn, beam_size=1, max_len=3, eos=EOS, trie=Trie())
    with pytest.raises(ValueError, match=r"^logits_fn\b"):
        beam_search(lambda p: torch.zeros(len(p) + 1, V), beam_size=1, max_len=3, eos=EOS)
    with pytest.raises(ValueError, match=r"^logits_fn\b"):
        beam_search(lambda p: torch.full((len(p), V), math.nan), beam_size=1, max_len=3, eos=EOS)
    with pytest.raises(TypeError, match=r"^logits_fn\b"):
        beam_search(None, beam_size=1, max_len=3, eos=EOS)
    with pytest.raises(ValueError, match=r"^sequences\b"):
        exhaustive_best(fn, [], eos=EOS)


# ------------------------------------------------------------------ Hugging Face reference


@pytest.fixture(scope="module")
def tiny_gpt2():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        vocab_size=12,
        n_positions=16,
        n_embd=16,
        n_layer=1,
        n_head=2,
        bos_token_id=10,
        eos_token_id=11,
        pad_token_id=11,
    )
    model = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():  # larger logits: distinct paths have distinct scores
        model.lm_head.weight.mul_(8.0)
    return model


def _gpt2_fn(model, bos):
    def fn(prefixes):
        with torch.no_grad():  # prefixes may differ in length: one call each
            rows = [model(torch.tensor([(bos,) + p])).logits[0, -1] for p in prefixes]
        return torch.stack(rows).double()

    return fn


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_hf_generate_with_prefix_allowed_tokens_fn(tiny_gpt2, seed):
    g = torch.Generator().manual_seed(seed)
    db = {
        tuple(
            torch.randint(
                0, 10, (int(torch.randint(1, 5, (1,), generator=g)),), generator=g
            ).tolist()
        )
        for _ in range(8)
    }
    t = Trie(sorted(db))
    fn = _gpt2_fn(tiny_gpt2, 10)
    allowed = trie_prefix_allowed_fn(t, eos=11, start=1)
    prompt = torch.tensor([[10]])
    kw = dict(max_new_tokens=6, prefix_allowed_tokens_fn=allowed, pad_token_id=11, eos_token_id=11)
    hf_greedy = tiny_gpt2.generate(prompt, do_sample=False, num_beams=1, **kw)[0, 1:].tolist()
    ours = beam_search(fn, beam_size=1, max_len=6, eos=11, trie=t)[0][0]
    assert hf_greedy[: hf_greedy.index(11)] == list(ours)
    hf_beam = tiny_gpt2.generate(
        prompt,
        do_sample=False,
        num_beams=t.num_nodes + len(t),
        length_penalty=0.0,
        early_stopping=False,
        **kw,
    )[0, 1:].tolist()
    best = beam_search(fn, beam_size=t.num_nodes + len(t), max_len=6, eos=11, trie=t)[0][0]
    assert (
        hf_beam[: hf_beam.index(11)]
        == list(best)
        == list(exhaustive_best(fn, sorted(db), eos=11)[0])
    )


# ------------------------------------------------------------------ candidates and NSP


@pytest.mark.parametrize("candidate_first", [True, False])
@pytest.mark.parametrize("batch_size", [1, 4, 100])
def test_score_candidates_equals_explicit_loop(candidate_first, batch_size):
    g = torch.Generator().manual_seed(0)
    texts = [torch.randn(3, generator=g, dtype=torch.float64) for _ in range(5)]
    cands = [torch.randn(3, generator=g, dtype=torch.float64) for _ in range(3)]
    W = torch.randn(3, 3, generator=g, dtype=torch.float64)

    def pair(a, b):
        return torch.stack([x @ W @ y for x, y in zip(a, b)])

    S = score_candidates(pair, texts, cands, candidate_first=candidate_first, batch_size=batch_size)
    for i, x in enumerate(texts):
        for j, c in enumerate(cands):
            want = c @ W @ x if candidate_first else x @ W @ c
            torch.testing.assert_close(S[i, j], want, rtol=0, atol=0)
    assert S.dtype == torch.float64 and S.shape == (5, 3)


def test_score_candidates_bad_input():
    f = lambda a, b: torch.zeros(len(a))  # noqa: E731
    with pytest.raises(ValueError, match=r"^candidates\b"):
        score_candidates(f, ["x"], [])
    with pytest.raises(TypeError, match=r"^texts\b"):
        score_candidates(f, "abc", ["y"])
    with pytest.raises(ValueError, match=r"^batch_size\b"):
        score_candidates(f, ["x"], ["y"], batch_size=0)
    with pytest.raises(ValueError, match=r"^pair_score_fn\b"):
        score_candidates(lambda a, b: torch.zeros(len(a) + 1), ["x"], ["y"])


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 6), st.integers(0, 10_000))
def test_nsp_posterior_is_sigmoid_of_pmi(k, seed):
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(k, k, generator=g, dtype=torch.float64) + 0.01
    p = p / p.sum()
    pa, pb = p.sum(1), p.sum(0)
    post = torch.empty(k, k, dtype=torch.float64)
    for a in range(k):
        for b in range(k):  # the 50/50 mixture of adjacent and independent pairs, enumerated
            post[a, b] = 0.5 * p[a, b] / (0.5 * p[a, b] + 0.5 * pa[a] * pb[b])
    torch.testing.assert_close(torch.sigmoid(nsp_pmi_logit(p)), post)
    torch.testing.assert_close(torch.sigmoid(nsp_pmi_logit(p.float())), post.float())


def test_nsp_pmi_bad_input():
    with pytest.raises(ValueError, match=r"^p_next\b"):
        nsp_pmi_logit(torch.ones(2, 3) / 6)
    with pytest.raises(ValueError, match=r"^p_next\b"):
        nsp_pmi_logit(torch.ones(2, 2))


# ------------------------------------------------------------------ look-ahead (8802 step 6)


def _is_subsequence(s, b):
    it = iter(b)
    return all(any(x == y for y in it) for x in s)


@settings(max_examples=80, deadline=None)
@given(st.text("abc", max_size=7), st.text("abc", max_size=7))
def test_lcs_matches_brute_force_subsequences(a, b):
    best = max(
        (
            k
            for k in range(len(a) + 1)
            for idx in itertools.combinations(range(len(a)), k)
            if _is_subsequence([a[i] for i in idx], b)
        ),
        default=0,
    )
    assert lcs_length(a, b) == best == lcs_length(b, a)


def test_lookahead_on_the_posts_trap():
    q = "某某主要讲什么课程"
    cands = ["主要成就", "主讲课程"]
    for p_yao in (0.6, 0.7):
        probs = torch.tensor([p_yao, 1 - p_yao], dtype=torch.float64)
        out = lookahead_reweight("主", probs, ["要", "讲"], cands, q)
        want = torch.tensor([p_yao**0.5, (1 - p_yao) ** 0.25], dtype=torch.float64)
        torch.testing.assert_close(out, want / want.sum())
    assert lookahead_reweight("主", torch.tensor([0.6, 0.4]), ["要", "讲"], cands, q).argmax() == 1


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.01, 1.0), min_size=1, max_size=5))
def test_lookahead_without_gain_only_renormalises(ps):
    p = torch.tensor(ps, dtype=torch.float32)
    allowed = list(range(len(ps)))
    out = lookahead_reweight((), p, allowed, [], (9, 9))
    torch.testing.assert_close(out, p / p.sum())
    assert out.dtype == torch.float32


def test_lookahead_bad_input():
    with pytest.raises(ValueError, match=r"^probs\b"):
        lookahead_reweight((), torch.tensor([0.5]), [1, 2], [], ())
    with pytest.raises(ValueError, match=r"^probs\b"):
        lookahead_reweight((), torch.tensor([0.0, 0.0]), [1, 2], [], ())
    with pytest.raises(TypeError, match=r"^probs\b"):
        lookahead_reweight((), [0.5, 0.5], [1, 2], [], ())
    with pytest.raises(TypeError, match=r"^a\b"):
        lcs_length(3, "ab")


@requires_cuda
def test_score_candidates_and_pmi_keep_device():
    dev = torch.device("cuda")
    texts = [torch.randn(3, device=dev) for _ in range(4)]
    cands = [torch.randn(3, device=dev) for _ in range(2)]
    S = score_candidates(lambda a, b: (torch.stack(a) * torch.stack(b)).sum(-1), texts, cands)
    assert S.device.type == "cuda" and S.shape == (4, 2)
    p = torch.full((3, 3), 1 / 9, device=dev, dtype=torch.float64)
    assert nsp_pmi_logit(p).device.type == "cuda"
