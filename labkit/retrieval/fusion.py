"""Reciprocal rank fusion (chapter 18): combine ranked lists by ranks only,
RRF(d) = sum over lists of 1 / (k + rank(d)).
"""
from __future__ import annotations

from typing import Hashable, Sequence

__all__ = ["reciprocal_rank_fusion"]


def reciprocal_rank_fusion(rankings: Sequence[Sequence[Hashable]], k: float = 60) -> list[tuple[Hashable, float]]:
    r"""Fuse ranked lists (best first) by reciprocal rank (Cormack et al., 2009).

    .. math:: \mathrm{RRF}(d) = \sum_{r \in R} \frac{1}{k + \mathrm{rank}_r(d)},\quad \mathrm{rank} \text{ 1-based}

    Every list contributes for every document it contains (the source notes' version credits only the
    first list a document appears in). Uses ranks only, so the inputs' score scales do not matter.
    Returns ``(doc_id, score)`` best first; ties keep the order of first appearance.
    """
    if isinstance(rankings, (str, bytes)) or len(rankings) == 0:
        raise ValueError("rankings must be a non-empty list of ranked lists of doc ids")
    if isinstance(k, bool) or not isinstance(k, (int, float)) or not k >= 0:
        raise ValueError(f"k ({k!r}) must be a number >= 0 (the usual constant is 60)")
    scores: dict[Hashable, float] = {}
    for li, ranked in enumerate(rankings):
        if isinstance(ranked, (str, bytes)):
            raise TypeError(f"rankings[{li}] must be a list of doc ids, not a string")
        if len(set(ranked)) != len(ranked):
            raise ValueError(f"rankings[{li}] lists a doc id twice; each list must rank distinct ids")
        for rank, doc in enumerate(ranked, start=1):
            scores[doc] = scores.get(doc, 0.0) + 1.0 / (k + rank)
    order = {d: i for i, d in enumerate(scores)}
    return sorted(scores.items(), key=lambda kv: (-kv[1], order[kv[0]]))
