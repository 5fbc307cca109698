"""Test-set contamination by n-gram overlap (GPT-3 used 13-grams; others 8-grams or 50-character spans).

Words: lowercase runs of letters, digits and apostrophes. A test item is *flagged* when at least one of its
word n-grams occurs anywhere in the training corpus; its overlap is the share of its n-grams that do:

    overlap(item) = |G_n(item) ∩ G_n(train)| / |G_n(item)|,      flagged = overlap > 0

Too small an n flags clean items that merely share a common phrase; too large an n misses edited copies.
Items shorter than n words have no n-grams and are never flagged.
"""
from __future__ import annotations

import re
from typing import Iterable, Sequence

__all__ = ["words", "word_ngrams", "NGramIndex", "contamination_report"]

_WORD = re.compile(r"[a-z0-9']+")


def words(text: str) -> list[str]:
    """Lowercase word tokens (letters, digits, apostrophes); punctuation and case are ignored."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return _WORD.findall(text.lower())


def word_ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    """The set of word n-grams of ``text``."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int (e.g. 13 as in GPT-3, or 8), got {n!r}")
    w = words(text)
    return {tuple(w[i:i + n]) for i in range(len(w) - n + 1)}


class NGramIndex:
    """Every word n-gram of a training corpus, for membership tests (a Python set of hashes)."""

    def __init__(self, corpus: str | Iterable[str], n: int):
        docs = [corpus] if isinstance(corpus, str) else list(corpus)
        self.n = n
        self._grams: set[int] = set()
        for d in docs:
            self._grams.update(hash(g) for g in word_ngrams(d, n))

    def __len__(self) -> int:
        return len(self._grams)

    def overlap(self, text: str) -> float:
        """Share of the n-grams of ``text`` found in the corpus (0.0 when ``text`` has fewer than n words)."""
        grams = word_ngrams(text, self.n)
        if not grams:
            return 0.0
        return sum(hash(g) in self._grams for g in grams) / len(grams)


def contamination_report(index: NGramIndex, items: Sequence[str]) -> dict[str, float]:
    """Flag rate (share of items with any n-gram in the corpus) and mean overlap over ``items``."""
    if isinstance(items, str) or len(items) == 0:
        raise ValueError("items must be a non-empty list of test strings")
    ov = [index.overlap(t) for t in items]
    return {"flagged": sum(o > 0 for o in ov) / len(ov), "mean_overlap": sum(ov) / len(ov)}
