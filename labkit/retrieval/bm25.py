"""Okapi BM25 (chapter 18): sparse, lexical retrieval over tokenized documents, with precomputed
posting lists (one weight per (term, doc) pair).
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Sequence

import numpy as np

from labkit.retrieval.metrics import _check_k

__all__ = ["BM25"]


class BM25:
    r"""Okapi BM25 (Robertson & Zaragoza), the Lucene variant of IDF.

    .. math::
        \mathrm{score}(q, d) = \sum_{t \in q} \mathrm{IDF}(t)\,
            \frac{f(t,d)\,(k_1 + 1)}{f(t,d) + k_1\,(1 - b + b\,|d| / \mathrm{avgdl})},\qquad
        \mathrm{IDF}(t) = \ln\!\Big(1 + \frac{N - n(t) + 0.5}{n(t) + 0.5}\Big)

    ``f(t, d)`` term frequency, ``|d|`` document length in tokens, ``n(t)`` number of documents containing
    ``t``, ``N`` number of documents. A repeated query term counts once per occurrence. The term weights
    are precomputed once per (term, doc) pair, so a query costs O(sum of posting-list lengths).
    """

    def __init__(self, tokenized_docs: Sequence[Sequence[str]], k1: float = 1.5, b: float = 0.75) -> None:
        if isinstance(tokenized_docs, str) or not isinstance(tokenized_docs, Sequence):
            raise TypeError("tokenized_docs must be a list of token lists, e.g. [tokenize(d) for d in docs]")
        if len(tokenized_docs) == 0:
            raise ValueError("tokenized_docs is empty: BM25 needs at least one document")
        for i, d in enumerate(tokenized_docs):
            if isinstance(d, str) or not isinstance(d, Sequence):
                raise TypeError(f"tokenized_docs[{i}] must be a list of tokens, got {type(d).__name__}; "
                                "tokenize each document first")
        if isinstance(k1, bool) or not isinstance(k1, (int, float)) or not k1 >= 0:
            raise ValueError(f"k1 ({k1!r}) must be a number >= 0 (typical 1.2-2.0)")
        if isinstance(b, bool) or not isinstance(b, (int, float)) or not 0 <= b <= 1:
            raise ValueError(f"b ({b}) must be in [0, 1] (0: no length normalisation, 1: full)")
        self.k1, self.b = float(k1), float(b)
        self.n_docs = len(tokenized_docs)
        self.doc_len = np.array([len(d) for d in tokenized_docs], dtype=np.float64)
        self.avgdl = float(self.doc_len.mean()) or 1.0
        tfs = [Counter(d) for d in tokenized_docs]
        self.df: Counter = Counter(t for tf in tfs for t in tf)
        norm = k1 * (1 - b + b * self.doc_len / self.avgdl)
        postings: dict[str, tuple[list[int], list[float]]] = {}
        for j, tf in enumerate(tfs):
            for t, f in tf.items():
                ids, ws = postings.setdefault(t, ([], []))
                ids.append(j)
                ws.append(f * (k1 + 1) / (f + norm[j]))
        self._postings = {t: (np.array(i), np.array(w)) for t, (i, w) in postings.items()}

    def idf(self, term: str) -> float:
        n = self.df.get(term, 0)
        return math.log(1.0 + (self.n_docs - n + 0.5) / (n + 0.5))

    def scores(self, query_tokens: Sequence[str]) -> np.ndarray:
        """BM25 score of every document, shape ``(n_docs,)`` float64."""
        if isinstance(query_tokens, str):
            raise TypeError("query_tokens must be a list of tokens, not a str; use tokenize(query)")
        if len(query_tokens) == 0:
            raise ValueError("query_tokens is empty: tokenize a non-empty query")
        out = np.zeros(self.n_docs)
        for t in query_tokens:
            if t in self._postings:
                ids, ws = self._postings[t]
                out[ids] += self.idf(t) * ws
        return out

    def search(self, query_tokens: Sequence[str], k: int) -> list[tuple[int, float]]:
        """Top-``k`` ``(doc_index, score)`` pairs, best first (ties: lower index first)."""
        k = _check_k(k, self.n_docs)
        s = self.scores(query_tokens)
        order = np.lexsort((np.arange(self.n_docs), -s))[:k]
        return [(int(i), float(s[i])) for i in order]
