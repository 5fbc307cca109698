"""Retrieval metrics (chapter 18) for one ranked list of doc ids against the set ``R`` of relevant ones:
Hit@k, Recall@k = |top-k ∩ R| / |R|, Precision@k = |top-k ∩ R| / k, MRR, binary nDCG@k; and the checks
of ``k`` and ``R`` that the retrievers share. A ranked list holds each doc id once (a duplicate would be
counted twice and push nDCG above 1): duplicates are a ValueError.
"""
from __future__ import annotations

import math
from typing import Hashable, Iterable, Sequence

import numpy as np

__all__ = ["hit_at_k", "recall_at_k", "precision_at_k", "mrr", "ndcg_at_k"]


def _check_k(k: int, n: int | None = None) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an int, got {type(k).__name__}")
    if k < 1:
        raise ValueError(f"k ({k}) must be >= 1")
    return int(k) if n is None else min(int(k), n)


def _check_ranked(ranked: Sequence[Hashable]) -> list[Hashable]:
    if isinstance(ranked, (str, bytes)) or not isinstance(ranked, (Sequence, np.ndarray)):
        raise TypeError(f"ranked must be a list of doc ids (best first), got {type(ranked).__name__}")
    ranked = ranked.tolist() if isinstance(ranked, np.ndarray) else list(ranked)
    seen: dict[Hashable, int] = {}
    for i, d in enumerate(ranked):
        if d in seen:
            raise ValueError(f"ranked lists doc id {d!r} twice (positions {seen[d]} and {i}); a ranking holds each "
                             "doc once: deduplicate it first, e.g. list(dict.fromkeys(ranked))")
        seen[d] = i
    return ranked


def _check_rel(relevant: Iterable[Hashable]) -> set:
    if isinstance(relevant, (str, bytes)):
        raise TypeError("relevant must be a collection of doc ids, not one string; wrap it: {doc_id}")
    rel = set(relevant)
    if not rel:
        raise ValueError("relevant is empty: a metric needs at least one relevant doc id")
    return rel


def hit_at_k(ranked: Sequence[Hashable], relevant: Iterable[Hashable], k: int) -> float:
    """1.0 if any of the top-k is relevant, else 0.0."""
    ranked, k, rel = _check_ranked(ranked), _check_k(k), _check_rel(relevant)
    return float(any(d in rel for d in ranked[:k]))


def recall_at_k(ranked: Sequence[Hashable], relevant: Iterable[Hashable], k: int) -> float:
    """|top-k ∩ relevant| / |relevant|."""
    ranked, k, rel = _check_ranked(ranked), _check_k(k), _check_rel(relevant)
    return len(set(ranked[:k]) & rel) / len(rel)


def precision_at_k(ranked: Sequence[Hashable], relevant: Iterable[Hashable], k: int) -> float:
    """|top-k ∩ relevant| / k."""
    ranked, k, rel = _check_ranked(ranked), _check_k(k), _check_rel(relevant)
    return len(set(ranked[:k]) & rel) / k


def mrr(ranked: Sequence[Hashable], relevant: Iterable[Hashable]) -> float:
    """Reciprocal rank 1/r of the first relevant doc (r 1-based); 0.0 if none is retrieved."""
    ranked, rel = _check_ranked(ranked), _check_rel(relevant)
    return next((1.0 / (i + 1) for i, d in enumerate(ranked) if d in rel), 0.0)


def ndcg_at_k(ranked: Sequence[Hashable], relevant: Iterable[Hashable], k: int) -> float:
    r"""Binary-relevance nDCG: :math:`\mathrm{DCG@k}=\sum_{i=1}^{k} \frac{[d_i\in R]}{\log_2(i+1)}`, divided by the
    DCG of the ideal ranking (all of R first): :math:`\sum_{i=1}^{\min(|R|,k)} 1/\log_2(i+1)`."""
    ranked, k, rel = _check_ranked(ranked), _check_k(k), _check_rel(relevant)
    dcg = sum(1.0 / math.log2(i + 2) for i, d in enumerate(ranked[:k]) if d in rel)
    idcg = sum(1.0 / math.log2(i + 2) for i in range(min(len(rel), k)))
    return dcg / idcg
