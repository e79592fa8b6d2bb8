"""Decoding distributions: truncation rules for sampling.

So far only the two truncation rules that entropy normalisation is compared with
(kexue.fm/archives/8829): top-k and top-p (nucleus) filtering. Both take logits and return
logits with the dropped entries set to ``-inf``, so ``softmax`` of the result is the
renormalised truncated distribution. They work on ``dim`` (default the last) and are batched
over the other dimensions; dtype and device are kept.
"""

from __future__ import annotations

import math

import torch

from kexue_lib._core import check_int, check_probability, check_tensor

__all__ = ["top_k_filter", "top_p_filter"]


def _check_logits(logits) -> torch.Tensor:
    check_tensor("logits", logits, floating=True)
    if logits.dim() == 0:
        raise ValueError("logits: expected at least one dimension (the vocabulary), got a scalar")
    if bool(torch.isnan(logits).any()):
        raise ValueError("logits: expected no NaN entries")
    return logits


def top_k_filter(logits: torch.Tensor, k: int, *, dim: int = -1) -> torch.Tensor:
    """Keep the ``k`` largest logits along ``dim``, set the rest to ``-inf``.

    ``logits: (..., V, ...)`` -> same shape. ``k >= 1``; ``k >= V`` keeps everything. Ties at
    the k-th value are broken by ``torch.topk`` (exactly ``k`` entries survive).
    """
    _check_logits(logits)
    check_int("k", k, minimum=1)
    n = logits.shape[dim]
    if k >= n:
        return logits.clone()
    idx = torch.topk(logits, k, dim=dim).indices
    keep = torch.zeros_like(logits, dtype=torch.bool).scatter(dim, idx, True)
    return logits.masked_fill(~keep, -math.inf)


def top_p_filter(logits: torch.Tensor, p: float, *, dim: int = -1) -> torch.Tensor:
    """Nucleus filtering: keep the smallest set of most probable entries whose mass is >= ``p``.

    ``logits: (..., V, ...)`` -> same shape, dropped entries at ``-inf``. ``p`` in ``(0, 1]``;
    the most probable entry always survives (also for tiny ``p``), ``p = 1`` keeps the whole
    support. An entry is kept when the mass of the entries sorted before it is below ``p``.
    """
    _check_logits(logits)
    p = check_probability("p", p, open_interval=False)
    if p == 0:
        raise ValueError("p: expected a number in (0, 1], got 0")
    x = logits.movedim(dim, -1)
    srt, order = torch.sort(x, dim=-1, descending=True, stable=True)
    probs = torch.softmax(srt.to(torch.promote_types(srt.dtype, torch.float32)), dim=-1)
    before = probs.cumsum(-1) - probs  # mass of the strictly more probable entries
    drop_sorted = before >= p
    drop_sorted[..., 0] = False
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return x.masked_fill(drop, -math.inf).movedim(-1, dim)


# --- roformer-sim ---


def seq2seq_token_loss(
    logits: torch.Tensor, tokens: torch.Tensor, segment_ids: torch.Tensor
) -> torch.Tensor:
    """UniLM seq2seq loss: cross-entropy of the target segment, shifted by one, averaged.

    ``logits: (B, L, V)``, ``tokens: (B, L)``, ``segment_ids: (B, L)`` with 0 on ``[CLS] x
    [SEP]`` (and on padding) and 1 on ``y [SEP]``. Position ``t`` predicts token ``t + 1``
    wherever ``segment_ids[:, t + 1] == 1`` (the closing ``[SEP]`` included: it teaches the
    model to stop); the mean is over those target tokens of the whole batch
    (kexue.fm/archives/8454, bert4keras' ``y_true[:, 1:]``, ``y_pred[:, :-1]``).
    """
    check_tensor("logits", logits, floating=True)
    check_tensor("tokens", tokens)
    check_tensor("segment_ids", segment_ids)
    if logits.dim() != 3:
        raise ValueError(f"logits: expected shape (B, L, V), got {tuple(logits.shape)}")
    if tokens.shape != logits.shape[:2] or tokens.is_floating_point():
        raise ValueError(
            f"tokens: expected an integer tensor of shape {tuple(logits.shape[:2])}, "
            f"got {tuple(tokens.shape)} {tokens.dtype}"
        )
    if segment_ids.shape != tokens.shape or segment_ids.is_floating_point():
        raise ValueError(
            f"segment_ids: expected an integer tensor of shape {tuple(tokens.shape)}, "
            f"got {tuple(segment_ids.shape)} {segment_ids.dtype}"
        )
    if ((segment_ids != 0) & (segment_ids != 1)).any():
        raise ValueError("segment_ids: expected entries 0 (source) or 1 (target)")
    weight = segment_ids[:, 1:].to(logits.dtype)
    n_target = weight.sum()
    if n_target == 0:
        raise ValueError("segment_ids: expected at least one target token (segment 1) after t = 0")
    ce = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1), reduction="none"
    )
    return (ce * weight.reshape(-1)).sum() / n_target


__all__ += ["seq2seq_token_loss"]
# --- seq2seq-trie-retrieval ---
# Retrieval as constrained generation (kexue.fm/archives/8802): a prefix tree over the database
# of token sequences, beam search whose next tokens may be restricted to the tree, and the
# brute-force reference that scores every database sequence by teacher forcing.


class Trie:
    """A prefix tree over sequences of hashable tokens (keep them ints), dict of dicts.

    Every stored sequence ends in an explicit end marker (a private sentinel child), so a
    sequence that is a prefix of another (``(1, 2)`` and ``(1, 2, 3)``) is representable.
    ``insert(seq, value=None)``; ``next_tokens(prefix)`` lists the tokens ``a`` such that
    ``prefix + (a,)`` is a prefix of a stored sequence (insertion order); ``has_prefix``;
    ``seq in trie``; ``value(seq)``; ``keys(prefix=())`` lists the stored sequences that start
    with ``prefix``; ``num_nodes`` counts the distinct non-empty prefixes (the root and the end
    markers excluded), at most the total number of tokens.
    """

    _END = object()

    def __init__(self, sequences=None):
        self._root: dict = {}
        self._n_seq = 0
        self._n_nodes = 0
        if sequences is not None:
            for s in sequences:
                self.insert(s)

    @staticmethod
    def _as_tuple(name: str, seq) -> tuple:
        if isinstance(seq, (str, bytes)) or not hasattr(seq, "__iter__"):
            raise TypeError(f"{name}: expected a sequence of tokens, got {type(seq).__name__}")
        if isinstance(seq, torch.Tensor):
            seq = seq.tolist()
        out = tuple(seq)
        for t in out:
            try:
                hash(t)
            except TypeError:
                raise TypeError(
                    f"{name}: expected hashable tokens, got {type(t).__name__}"
                ) from None
        return out

    def _node(self, prefix: tuple):
        node = self._root
        for t in prefix:
            node = node.get(t)
            if node is None:
                return None
        return node

    def insert(self, seq, value=None) -> None:
        """Store ``seq`` (non-empty) with an optional ``value`` (replaced on re-insertion)."""
        seq = self._as_tuple("seq", seq)
        if not seq:
            raise ValueError("seq: expected a non-empty sequence, got an empty one")
        node = self._root
        for t in seq:
            if t not in node:
                node[t] = {}
                self._n_nodes += 1
            node = node[t]
        if Trie._END not in node:
            self._n_seq += 1
        node[Trie._END] = value

    def has_prefix(self, prefix) -> bool:
        """True when ``prefix`` starts some stored sequence (the empty prefix: any stored)."""
        node = self._node(self._as_tuple("prefix", prefix))
        return node is not None and bool(node)

    def __contains__(self, seq) -> bool:
        node = self._node(self._as_tuple("seq", seq))
        return node is not None and Trie._END in node

    def __len__(self) -> int:
        return self._n_seq

    @property
    def num_sequences(self) -> int:
        return self._n_seq

    @property
    def num_nodes(self) -> int:
        return self._n_nodes

    def next_tokens(self, prefix=()) -> list:
        """Tokens that extend ``prefix`` toward a stored sequence (``[]`` if none)."""
        node = self._node(self._as_tuple("prefix", prefix))
        if node is None:
            return []
        return [t for t in node if t is not Trie._END]

    def value(self, seq):
        """The value stored with ``seq``; KeyError when ``seq`` is not stored."""
        seq = self._as_tuple("seq", seq)
        node = self._node(seq)
        if node is None or Trie._END not in node:
            raise KeyError(seq)
        return node[Trie._END]

    def keys(self, prefix=()) -> list[tuple]:
        """Every stored sequence starting with ``prefix`` (depth-first, insertion order)."""
        prefix = self._as_tuple("prefix", prefix)
        node = self._node(prefix)
        if node is None:
            return []
        out, stack = [], [(prefix, node)]
        while stack:
            pre, nd = stack.pop()
            if Trie._END in nd:
                out.append(pre)
            children = [(pre + (t,), c) for t, c in nd.items() if t is not Trie._END]
            stack.extend(reversed(children))
        return out


def _step_logprobs(logits_fn, prefixes: list[tuple]) -> torch.Tensor:
    out = logits_fn(prefixes)
    check_tensor("logits_fn(prefixes)", out, floating=True)
    if out.dim() != 2 or out.shape[0] != len(prefixes):
        raise ValueError(
            f"logits_fn: expected a tensor of shape ({len(prefixes)}, V), got {tuple(out.shape)}"
        )
    if bool(torch.isnan(out).any()):
        raise ValueError("logits_fn: returned NaN entries")
    return torch.log_softmax(out.to(torch.promote_types(out.dtype, torch.float32)), dim=-1)


def _allowed(trie: Trie, prefix: tuple, eos: int) -> list:
    allowed = trie.next_tokens(prefix)
    if prefix in trie:
        allowed = allowed + [eos]
    return allowed


def beam_search(
    logits_fn,
    *,
    beam_size: int,
    max_len: int,
    eos: int,
    trie: Trie | None = None,
    renormalize: bool = False,
) -> list[tuple[tuple, float, bool]]:
    """Beam search over ``logits_fn(prefixes: list[tuple]) -> (B, V)`` next-token logits.

    A prefix is the tuple of generated tokens (the context, e.g. a question or a BOS token, is
    the closure's business). Scores are sums of ``log_softmax`` over the vocabulary. With
    ``trie``, a prefix may only continue with ``trie.next_tokens(prefix)``, and with ``eos``
    when the prefix is a stored sequence (the other tokens are masked to ``-inf``, the scores
    of the surviving ones are left as they are); ``renormalize=True`` instead renormalises the
    probabilities over the allowed set at every step (8802's code), so a forced step costs 0.

    Every step expands each live hypothesis by every allowed token and ranks the candidates;
    one ending in ``eos`` joins the finished list when its rank is below ``beam_size`` (as in
    Hugging Face's beam search), the ``beam_size`` best others stay live. It stops when nothing
    is live, after ``max_len`` tokens, or when the best finished score is at least the best
    live score (step scores are ``<= 0``, so no live hypothesis can win). ``beam_size=1`` is
    greedy decoding. Returns ``(tokens, score, finished)`` triples, ``tokens`` without ``eos``:
    the finished hypotheses best first, then, if one of them beats every finished one, the
    live ones left at ``max_len`` (``finished=False``). With a beam at least as wide as
    ``trie.num_nodes + len(trie)`` (nothing is ever pruned), the first triple is the
    ``exhaustive_best`` sequence (with the same ``renormalize``).
    """
    if not callable(logits_fn):
        raise TypeError(f"logits_fn: expected a callable, got {type(logits_fn).__name__}")
    check_int("beam_size", beam_size)
    check_int("max_len", max_len)
    check_int("eos", eos, minimum=0)
    if trie is not None and not isinstance(trie, Trie):
        raise TypeError(f"trie: expected a Trie or None, got {type(trie).__name__}")
    if not isinstance(renormalize, bool):
        raise TypeError(f"renormalize: expected a bool, got {type(renormalize).__name__}")
    if renormalize and trie is None:
        raise ValueError("renormalize: True needs a trie (there is no allowed set without one)")
    if trie is not None and len(trie) == 0:
        raise ValueError("trie: expected at least one stored sequence, got an empty trie")
    live: list[tuple[tuple, float]] = [((), 0.0)]
    finished: list[tuple[tuple, float]] = []
    for _ in range(max_len):
        lp = _step_logprobs(logits_fn, [p for p, _ in live]).double()
        V = lp.shape[1]
        cands = []
        for i, (pre, score) in enumerate(live):
            row = lp[i]
            if trie is not None:
                allowed = _allowed(trie, pre, eos)
                if any(not isinstance(a, int) or not 0 <= a < V for a in allowed):
                    raise ValueError(
                        f"trie: expected int tokens in [0, {V}) (the vocabulary of logits_fn),"
                        f" got {allowed}"
                    )
                idx = torch.tensor(allowed, dtype=torch.long)
                vals = row[idx]
                if renormalize:
                    vals = vals - torch.logsumexp(vals, 0)  # all -inf stays -inf, no 0/0
                toks, vals = allowed, vals.tolist()
            else:
                toks, vals = range(V), row.tolist()
            cands.extend((score + v, pre, t) for t, v in zip(toks, vals) if v > -math.inf)
        cands.sort(key=lambda c: -c[0])  # stable: ties keep beam order, then token order
        live = []
        for rank, (s, pre, t) in enumerate(cands):
            if t == eos:
                if rank < beam_size:  # an ending that would have taken a beam slot
                    finished.append((pre, s))
            elif len(live) < beam_size:
                live.append((pre + (t,), s))
        if not live:
            break
        if finished and max(s for _, s in finished) >= live[0][1]:
            break
    finished.sort(key=lambda c: -c[1])
    out = [(p, s, True) for p, s in finished]
    if len(live) and (not finished or max(s for _, s in finished) < live[0][1]):
        out += [(p, s, False) for p, s in live]
    return out


def sequence_logprob(
    logits_fn, seq, *, eos: int, trie: Trie | None = None, renormalize: bool = False
) -> float:
    """``log p(seq + [eos])`` by teacher forcing: one batched call with every prefix.

    With ``trie`` and ``renormalize=True`` each step is renormalised over the trie's allowed
    set, the score that ``beam_search(..., renormalize=True)`` assigns to the path.
    """
    seq = Trie._as_tuple("seq", seq)
    check_int("eos", eos, minimum=0)
    if renormalize and trie is None:
        raise ValueError("renormalize: True needs a trie (there is no allowed set without one)")
    prefixes = [seq[:i] for i in range(len(seq) + 1)]
    lp = _step_logprobs(logits_fn, prefixes).double()
    total = 0.0
    for i, pre in enumerate(prefixes):
        tok = seq[i] if i < len(seq) else eos
        v = lp[i, tok]
        if renormalize:
            v = v - torch.logsumexp(lp[i, torch.tensor(_allowed(trie, pre, eos))], 0)
        total += float(v)
    return total


def exhaustive_best(
    logits_fn, sequences, *, eos: int, renormalize: bool = False
) -> tuple[tuple, float]:
    """The brute-force retrieval ``argmax_{y in sequences} log p(y + [eos])`` (first on ties).

    ``renormalize=True`` scores with the per-step renormalised probabilities of the trie built
    on ``sequences`` (what renormalised beam search maximises).
    """
    seqs = [Trie._as_tuple("sequences", s) for s in sequences]
    if not seqs:
        raise ValueError("sequences: expected at least one sequence, got none")
    trie = Trie(seqs)
    best, best_s = None, -math.inf
    for s in seqs:
        v = sequence_logprob(logits_fn, s, eos=eos, trie=trie, renormalize=renormalize)
        if v > best_s:
            best, best_s = s, v
    if best is None:
        best, best_s = seqs[0], -math.inf
    return best, best_s


def trie_prefix_allowed_fn(trie: Trie, *, eos: int, start: int = 0):
    """A ``prefix_allowed_tokens_fn(batch_id, input_ids)`` for Hugging Face ``generate``.

    The generated part of ``input_ids`` starts at position ``start`` (the prompt length); the
    allowed tokens are ``trie.next_tokens`` plus ``eos`` once the prefix is stored; a prefix
    off the trie (only after ``eos``) may continue with ``eos`` (padding).
    """
    check_int("start", start, minimum=0)

    def fn(batch_id, input_ids):
        pre = tuple(int(t) for t in input_ids[start:])
        if eos in pre:
            return [eos]
        return _allowed(trie, pre, eos) or [eos]

    return fn


# --- nsp-zero-shot ---
# Zero-shot classification with a pair (coherence / next-sentence) scorer
# (kexue.fm/archives/8671): one pair per candidate, the most coherent candidate wins. Lives here
# until models.encoders (owned by another chapter) exists on this branch.


def score_candidates(
    pair_score_fn, texts, candidates, *, candidate_first: bool = True, batch_size: int = 64
) -> torch.Tensor:
    """Score every (text, candidate) pair: ``(N, C)`` with entry ``[i, j]`` the score of the
    pair (``candidates[j]``, ``texts[i]``) when ``candidate_first`` (a prompt as the first
    sentence, the NSP-BERT demo's order), else (``texts[i]``, ``candidates[j]``).

    ``pair_score_fn(first: list, second: list) -> Tensor[b]`` (e.g. the IsNext logit) is called
    on batches of at most ``batch_size`` pairs in row-major order; zero-shot classification is
    ``score_candidates(...).argmax(-1)``. ``texts`` and ``candidates`` are lists of anything
    ``pair_score_fn`` accepts (strings, token-id tensors).
    """
    if not callable(pair_score_fn):
        raise TypeError(f"pair_score_fn: expected a callable, got {type(pair_score_fn).__name__}")
    for name, xs in (("texts", texts), ("candidates", candidates)):
        if isinstance(xs, (str, bytes)) or not hasattr(xs, "__len__"):
            raise TypeError(f"{name}: expected a list, got {type(xs).__name__}")
        if len(xs) == 0:
            raise ValueError(f"{name}: expected at least one element, got none")
    if not isinstance(candidate_first, bool):
        raise TypeError(f"candidate_first: expected a bool, got {type(candidate_first).__name__}")
    check_int("batch_size", batch_size)
    n, c = len(texts), len(candidates)
    pairs = [(i, j) for i in range(n) for j in range(c)]
    chunks = []
    for k in range(0, len(pairs), batch_size):
        part = pairs[k : k + batch_size]
        a = [candidates[j] if candidate_first else texts[i] for i, j in part]
        b = [texts[i] if candidate_first else candidates[j] for i, j in part]
        out = pair_score_fn(a, b)
        check_tensor("pair_score_fn(first, second)", out)
        if out.shape != (len(part),):
            raise ValueError(
                f"pair_score_fn: expected a tensor of shape ({len(part)},), got {tuple(out.shape)}"
            )
        chunks.append(out)
    return torch.cat(chunks).reshape(n, c)


def nsp_pmi_logit(p_next: torch.Tensor) -> torch.Tensor:
    """Logit of the Bayes-optimal NSP classifier for discrete sentence types.

    ``p_next: (K, K)`` is the joint law of an adjacent pair (A, B) (a simplex over all
    entries). NSP data mixes it 50/50 with ``p(A) p(B)`` (the marginals of ``p_next``), so
    ``p(IsNext | A, B) = sigmoid(PMI)`` with ``PMI = log p_next - log p(A) - log p(B)``
    (returned; ``-inf`` where ``p_next`` is 0).
    """
    from kexue_lib._core import check_simplex

    check_tensor("p_next", p_next, floating=True)
    if p_next.dim() != 2 or p_next.shape[0] != p_next.shape[1]:
        raise ValueError(f"p_next: expected a square (K, K) matrix, got {tuple(p_next.shape)}")
    check_simplex("p_next", p_next.reshape(-1))
    pa, pb = p_next.sum(1, keepdim=True), p_next.sum(0, keepdim=True)
    return p_next.log() - pa.log() - pb.log()


def lcs_length(a, b) -> int:
    """Length of the longest common subsequence of two sequences (dynamic programming,
    ``O(|a| |b|)`` time, ``O(|b|)`` memory). Elements are compared with ``==``."""
    for name, x in (("a", a), ("b", b)):
        if not hasattr(x, "__len__") or not hasattr(x, "__getitem__"):
            raise TypeError(f"{name}: expected a sequence, got {type(x).__name__}")
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def lookahead_reweight(prefix, probs: torch.Tensor, allowed, candidates, query) -> torch.Tensor:
    """8802's look-ahead re-weighting of the allowed next tokens.

    ``allowed``: the ``K`` allowed tokens after ``prefix``; ``probs: (K,)`` the model's
    probabilities for them; ``candidates``: complete sequences in the database that start with
    ``prefix`` (e.g. ``trie.keys(prefix)``); ``query``: the question. For each allowed token
    ``a`` the gain is ``Delta_a = max_k LCS(c_k, query) - LCS(prefix, query)`` over the
    candidates ``c_k`` that continue with ``a`` (0 when none does), and the result is
    ``p_a ** (1 / (Delta_a + 1))`` renormalised over the allowed set (``(K,)``, dtype kept).
    """
    check_tensor("probs", probs, floating=True)
    allowed = list(allowed)
    if probs.shape != (len(allowed),):
        raise ValueError(
            f"probs: expected shape ({len(allowed)},) (one per allowed token), got "
            f"{tuple(probs.shape)}"
        )
    if not allowed:
        raise ValueError("allowed: expected at least one token, got none")
    if bool((probs < 0).any()) or not bool(torch.isfinite(probs).all()):
        raise ValueError("probs: expected finite non-negative probabilities")
    prefix = tuple(prefix)
    base = lcs_length(prefix, query)
    gain = {a: 0 for a in allowed}
    n = len(prefix)
    for c in candidates:
        c = tuple(c)
        if len(c) > n and c[:n] == prefix and c[n] in gain:
            gain[c[n]] = max(gain[c[n]], lcs_length(c, query) - base)
    delta = torch.tensor([gain[a] for a in allowed], dtype=probs.dtype, device=probs.device)
    out = probs ** (1.0 / (delta + 1.0))
    z = out.sum()
    if not z > 0:
        raise ValueError("probs: expected positive mass on the allowed tokens, got all zeros")
    return out / z
