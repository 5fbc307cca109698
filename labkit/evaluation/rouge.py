"""ROUGE-N and ROUGE-L (Lin, 2004) from scratch, equal to Google's ``rouge-score`` (``rouge_scorer``).

Tokens: lowercase, every run of characters outside [a-z0-9] is a separator (so non-ASCII text has *no*
tokens), and with a stemmer only words longer than 3 characters are stemmed. For a reference (target) with
n-gram counts t(g) and a prediction with counts p(g):

    ROUGE-N:  overlap = Σ_g min(t(g), p(g)),  P = overlap / Σ p,  R = overlap / Σ t,  F = 2PR / (P + R)
    ROUGE-L:  P = LCS / |prediction|,  R = LCS / |reference|,  F = 2PR / (P + R)

with LCS the length of the longest common subsequence (in order, gaps allowed) of the two token lists,
computed by the dynamic programme L[i][j] = L[i−1][j−1] + 1 if a_i = b_j else max(L[i−1][j], L[i][j−1]).
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Callable, NamedTuple, Sequence

__all__ = ["RougeScore", "rouge_tokenize", "rouge_n", "lcs_length", "rouge_l", "rouge_scores"]

_NON_ALNUM = re.compile(r"[^a-z0-9]+")


class RougeScore(NamedTuple):
    """Precision, recall and F1 of one ROUGE variant (fields named as rouge-score's ``Score``)."""

    precision: float
    recall: float
    fmeasure: float


def rouge_tokenize(text: str, stemmer: Callable[[str], str] | None = None) -> list[str]:
    """rouge-score's default tokenizer: lowercase, split on anything but [a-z0-9], stem words of > 3 chars."""
    if not isinstance(text, str):
        raise TypeError(f"`text` must be a str, got {type(text).__name__}")
    tokens = [t for t in _NON_ALNUM.split(text.lower()) if t]
    if stemmer is not None:
        tokens = [stemmer(t) if len(t) > 3 else t for t in tokens]
    return [t for t in tokens if re.fullmatch(r"[a-z0-9]+", t)]


def _f(p: float, r: float) -> RougeScore:
    return RougeScore(p, r, 2 * p * r / (p + r) if p + r > 0 else 0.0)


def rouge_n(target: str, prediction: str, n: int = 1, stemmer: Callable[[str], str] | None = None) -> RougeScore:
    """ROUGE-N of ``prediction`` against ``target`` (clipped n-gram overlap; module docstring)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int (1 for ROUGE-1, 2 for ROUGE-2), got {n!r}")
    t, p = rouge_tokenize(target, stemmer), rouge_tokenize(prediction, stemmer)
    tc = Counter(tuple(t[i:i + n]) for i in range(len(t) - n + 1))
    pc = Counter(tuple(p[i:i + n]) for i in range(len(p) - n + 1))
    overlap = sum(min(c, pc[g]) for g, c in tc.items())
    return _f(overlap / max(sum(pc.values()), 1), overlap / max(sum(tc.values()), 1))


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists, O(|a|·|b|) time, O(|b|) memory."""
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(target: str, prediction: str, stemmer: Callable[[str], str] | None = None) -> RougeScore:
    """ROUGE-L (sentence level, rouge-score's ``rougeL``): P = LCS/|pred|, R = LCS/|target|; 0 if either is empty."""
    t, p = rouge_tokenize(target, stemmer), rouge_tokenize(prediction, stemmer)
    if not t or not p:
        return RougeScore(0.0, 0.0, 0.0)
    lcs = lcs_length(t, p)
    return _f(lcs / len(p), lcs / len(t))


def rouge_scores(target: str, prediction: str, types: Sequence[str] = ("rouge1", "rouge2", "rougeL"),
                 stemmer: Callable[[str], str] | None = None) -> dict[str, RougeScore]:
    """Several variants at once, keyed like ``RougeScorer(types).score(target, prediction)``."""
    out: dict[str, RougeScore] = {}
    for name in types:
        if name == "rougeL":
            out[name] = rouge_l(target, prediction, stemmer)
        elif re.fullmatch(r"rouge[1-9]", name):
            out[name] = rouge_n(target, prediction, int(name[5:]), stemmer)
        else:
            raise ValueError(f"unknown ROUGE type {name!r}; use 'rouge1' ... 'rouge9' or 'rougeL'")
    return out
