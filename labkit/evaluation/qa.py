"""Exact match and token F1 as in SQuAD (Rajpurkar et al., 2016), the answer metrics of QA and RAG.

Normalisation (SQuAD's ``normalize_answer``): lowercase → drop punctuation (ASCII and CJK) → drop the
articles a/an/the → collapse whitespace. Tokens are whitespace-separated words, and each CJK character is
one token (Chinese has no spaces). With prediction tokens p and gold tokens g as bags (multisets):

    EM = 1[norm(pred) == norm(gold)],   overlap = |p ∩ g|,   P = overlap/|p|,  R = overlap/|g|,  F1 = 2PR/(P+R)

Several gold answers: the maximum over them. Both empty: EM = F1 = 1 (SQuAD 2.0's no-answer rule);
one empty: 0.
"""
from __future__ import annotations

import re
import string
from collections import Counter
from typing import Sequence

__all__ = ["normalize_answer", "answer_tokens", "exact_match", "token_f1"]

_PUNCT = frozenset(string.punctuation) | frozenset("，。！？、；：（）《》“”‘’「」")
_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(s: str) -> str:
    """SQuAD normalisation: lowercase, drop punctuation, drop a/an/the, collapse whitespace."""
    if not isinstance(s, str):
        raise TypeError(f"answer must be a str, got {type(s).__name__}")
    s = "".join(ch for ch in s.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", s).split())


def answer_tokens(s: str) -> list[str]:
    """Tokens of the normalised answer: words, and every CJK character on its own."""
    return re.findall(rf"[{_CJK}]|[^\s{_CJK}]+", normalize_answer(s))


def _golds(prediction: str, gold: str | Sequence[str]) -> list[str]:
    if not isinstance(prediction, str):
        raise TypeError(f"prediction must be a str, got {type(prediction).__name__}")
    golds = [gold] if isinstance(gold, str) else list(gold)
    if not golds:
        raise ValueError("gold is an empty list; pass one gold answer string or a non-empty list of them")
    if not all(isinstance(g, str) for g in golds):
        raise TypeError(f"gold must be a str or a list of str, got {gold!r}")
    return golds


def exact_match(prediction: str, gold: str | Sequence[str]) -> float:
    """1.0 if the normalised prediction equals some normalised gold answer, else 0.0."""
    golds = _golds(prediction, gold)
    p = normalize_answer(prediction)
    return float(any(p == normalize_answer(g) for g in golds))


def token_f1(prediction: str, gold: str | Sequence[str]) -> float:
    """SQuAD token F1 of the bags of normalised tokens, max over the gold answers (module docstring)."""
    golds = _golds(prediction, gold)
    best = 0.0
    p = answer_tokens(prediction)
    for g in golds:
        t = answer_tokens(g)
        if not p or not t:
            best = max(best, float(p == t))
            continue
        common = sum((Counter(p) & Counter(t)).values())
        if common:
            prec, rec = common / len(p), common / len(t)
            best = max(best, 2 * prec * rec / (prec + rec))
    return best
