"""Second-stage reranking (chapter 18): rescore candidate passages by their best sentence,
s(q, p) = alpha cos(q, p) + (1 - alpha) max over sentences s of p of cos(q, s).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["SentenceReranker"]


class SentenceReranker:
    r"""Second-stage reranker: rescore first-stage candidates by their *best sentence*.

    A passage embedding averages all its sentences, so one answering sentence among unrelated ones is
    diluted. The reranker scores candidate passage ``p`` as

    .. math:: s(q, p) = \alpha\,\cos(q, p) + (1-\alpha)\,\max_{s \in p} \cos(q, s)

    with sentence embeddings computed once for the corpus. Cheaper than a cross-encoder (none ships
    offline), finer than the first stage.
    """

    def __init__(self, passage_emb: np.ndarray, sentence_emb: np.ndarray, sentence_passage: np.ndarray,
                 alpha: float = 0.3) -> None:
        if not 0 <= alpha <= 1:
            raise ValueError(f"alpha ({alpha}) must be in [0, 1]")
        if len(sentence_emb) != len(sentence_passage):
            raise ValueError("sentence_emb and sentence_passage must have the same length")
        passage_emb, sentence_emb = np.asarray(passage_emb), np.asarray(sentence_emb)
        if passage_emb.ndim != 2 or sentence_emb.ndim != 2 or passage_emb.shape[1] != sentence_emb.shape[1]:
            raise ValueError(f"passage_emb {passage_emb.shape} and sentence_emb {sentence_emb.shape} must be (n, d) "
                             "arrays with the same d (one encoder)")
        for name, e in (("passage_emb", passage_emb), ("sentence_emb", sentence_emb)):
            if not np.isfinite(e).all():
                raise ValueError(f"`{name}` holds NaN/inf; re-encode those texts")
        self.sp = np.asarray(sentence_passage)
        if self.sp.size and (self.sp.min() < 0 or self.sp.max() >= len(passage_emb)):
            raise ValueError(f"sentence_passage must hold passage indices in [0, {len(passage_emb)}), got "
                             f"[{self.sp.min()}, {self.sp.max()}]")
        self.p, self.s, self.alpha = passage_emb, sentence_emb, alpha
        self._by_passage = {int(i): np.flatnonzero(self.sp == i) for i in np.unique(self.sp)}

    def rerank(self, query_emb: np.ndarray, candidates: Sequence[int]) -> list[tuple[int, float]]:
        """``(passage index, score)`` for the candidates, best first."""
        q = np.asarray(query_emb, dtype=np.float32).reshape(-1)
        if q.shape[0] != self.p.shape[1] or not np.isfinite(q).all():
            raise ValueError(f"query_emb must be a finite vector of dimension {self.p.shape[1]}, got "
                             f"shape {np.shape(query_emb)}" + ("" if np.isfinite(q).all() else " with NaN/inf"))
        bad = [c for c in candidates if not 0 <= int(c) < len(self.p)]
        if bad:
            raise ValueError(f"candidates {bad[:5]} are not passage indices in [0, {len(self.p)})")
        out = []
        for c in candidates:
            sims = self.s[self._by_passage[int(c)]] @ q if int(c) in self._by_passage else np.array([-1.0])
            out.append((int(c), float(self.alpha * (self.p[int(c)] @ q) + (1 - self.alpha) * sims.max())))
        return sorted(out, key=lambda t: -t[1])
