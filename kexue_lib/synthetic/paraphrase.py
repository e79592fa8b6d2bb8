"""A tiny paraphrase language with exact paraphrase sets (RoFormer-Sim, kexue.fm/archives/8454).

Sentences ask which of two cities is better in some respect, e.g.
``which is cheaper , canton or bombay ?``. A *meaning* is an unordered pair of cities and an
aspect; its surface forms vary by template (three, all eight tokens long), by the order of
the two cities and by a synonym for every content word (each city has a historical alias,
each aspect two words). Every sentence parses back to exactly one meaning, so whether a
generated sentence is a valid paraphrase is decidable.
"""

from __future__ import annotations

import itertools

import torch

from kexue_lib._core import check_int, check_tensor

__all__ = ["ComparisonParaphrases"]

_SPECIALS = ("[PAD]", "[CLS]", "[SEP]", "[MASK]")
_CITIES = (
    ("guangzhou", "canton"),
    ("beijing", "peking"),
    ("mumbai", "bombay"),
    ("chennai", "madras"),
    ("kolkata", "calcutta"),
    ("yangon", "rangoon"),
    ("istanbul", "constantinople"),
    ("kyiv", "kiev"),
    ("harare", "salisbury"),
    ("jakarta", "batavia"),
)
_ASPECTS = (
    ("better", "nicer"),
    ("cheaper", "affordable"),
    ("bigger", "larger"),
    ("safer", "securer"),
)
_TEMPLATES = (
    ("which", "is", "ASP", ",", "A", "or", "B", "?"),
    ("A", "or", "B", ",", "which", "is", "ASP", "?"),
    ("of", "A", "and", "B", "which", "is", "ASP", "?"),
)
_FUNCTION = ("which", "is", ",", "or", "?", "of", "and")


class ComparisonParaphrases:
    """The language: vocabulary, sampler of surface forms, parser back to meanings.

    ``vocab`` lists the tokens (ids are positions; ``pad_id, cls_id, sep_id, mask_id`` are
    0-3); ``n_meanings = C(n_cities, 2) * 4`` (180 for all ten cities); ``length = 8`` tokens
    per sentence.
    """

    length = 8

    def __init__(self, n_cities: int = 10) -> None:
        check_int("n_cities", n_cities, minimum=2)
        if n_cities > len(_CITIES):
            raise ValueError(f"n_cities: expected at most {len(_CITIES)}, got {n_cities}")
        cities = _CITIES[:n_cities]
        self.cities = cities
        self.vocab = list(_SPECIALS) + [w for c in cities for w in c]
        self.vocab += [w for a in _ASPECTS for w in a] + list(_FUNCTION)
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.pad_id, self.cls_id, self.sep_id, self.mask_id = 0, 1, 2, 3
        self.pairs = list(itertools.combinations(range(n_cities), 2))
        self.n_meanings = len(self.pairs) * len(_ASPECTS)
        city_of = {w: k for k, names in enumerate(cities) for w in names}
        aspect_of = {w: k for k, names in enumerate(_ASPECTS) for w in names}
        self._city_of = {self.index[w]: k for w, k in city_of.items()}
        self._aspect_of = {self.index[w]: k for w, k in aspect_of.items()}
        self._pair_index = {p: i for i, p in enumerate(self.pairs)}
        self._templates = [
            [None if w in ("A", "B", "ASP") else self.index[w] for w in t] for t in _TEMPLATES
        ]

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def meaning(self, pair_index: int, aspect: int) -> int:
        return pair_index * len(_ASPECTS) + aspect

    def sample(self, meanings: torch.Tensor, *, generator: torch.Generator) -> torch.Tensor:
        """One random surface form per meaning id: ``meanings: (N,) -> tokens (N, 8)``."""
        check_tensor("meanings", meanings)
        if meanings.dim() != 1 or meanings.is_floating_point():
            raise ValueError(
                f"meanings: expected a 1-D integer tensor, got {tuple(meanings.shape)}"
            )
        if meanings.numel() and (int(meanings.min()) < 0 or int(meanings.max()) >= self.n_meanings):
            raise ValueError(f"meanings: expected ids in [0, {self.n_meanings}), got out of range")
        n = meanings.numel()
        choice = torch.randint(0, 2**20, (n, 5), generator=generator, device=generator.device)
        rows = []
        for m, (tmpl, swap, syn_a, syn_b, syn_asp) in zip(meanings.tolist(), choice.tolist()):
            (a, b), asp = self.pairs[m // len(_ASPECTS)], m % len(_ASPECTS)
            if swap % 2:
                a, b = b, a
            fill = {
                "A": self.index[_CITIES[a][syn_a % 2]],
                "B": self.index[_CITIES[b][syn_b % 2]],
                "ASP": self.index[_ASPECTS[asp][syn_asp % 2]],
            }
            t = _TEMPLATES[tmpl % len(_TEMPLATES)]
            rows.append([fill.get(w, self.index.get(w)) for w in t])
        return torch.tensor(rows, dtype=torch.long).reshape(n, self.length).to(meanings.device)

    def parse(self, tokens: torch.Tensor) -> torch.Tensor:
        """Meaning id of each row of ``tokens: (N, 8)``, or -1 where a row is not a sentence."""
        check_tensor("tokens", tokens)
        if tokens.dim() != 2 or tokens.shape[1] != self.length:
            raise ValueError(
                f"tokens: expected shape (N, {self.length}), got {tuple(tokens.shape)}"
            )
        out = []
        for row in tokens.tolist():
            found = -1
            for tmpl, spec in zip(self._templates, _TEMPLATES):
                slots = {}
                ok = True
                for want, name, got in zip(tmpl, spec, row):
                    if want is None:
                        slots[name] = got
                    elif want != got:
                        ok = False
                        break
                if not ok:
                    continue
                ca, cb = self._city_of.get(slots["A"]), self._city_of.get(slots["B"])
                asp = self._aspect_of.get(slots["ASP"])
                if ca is None or cb is None or asp is None or ca == cb:
                    continue
                found = self.meaning(self._pair_index[tuple(sorted((ca, cb)))], asp)
                break
            out.append(found)
        return torch.tensor(out, dtype=torch.long, device=tokens.device)

    def decode(self, tokens: torch.Tensor) -> list[str]:
        """Rows of token ids as space-separated words."""
        check_tensor("tokens", tokens)
        return [
            " ".join(self.vocab[i] for i in row)
            for row in tokens.reshape(-1, tokens.shape[-1]).tolist()
        ]

    def n_surface_forms(self) -> int:
        """Distinct sentences per meaning: templates x orders x synonyms = 3 * 2 * 8 = 48."""
        return len(_TEMPLATES) * 2 * 8
