r"""Hard-negative mining for a dense retriever (chapter 19): the in-batch contrastive loss with mined hard
negatives (sentence-transformers' MultipleNegativesRankingLoss), mining, the false-negative filter, and a
linear query adapter trained on top of frozen MiniLM embeddings.

Loss for a batch of B queries, each with G passages stored contiguously (its positive first, then G − 1 hard
negatives), scale s = 1/τ, every passage of the batch a candidate for every query:

.. math:: \ell_i = -\log \frac{e^{s\,\cos(q_i, d_{iG})}}{\sum_{j=1}^{BG} e^{s\,\cos(q_i, d_j)}},
          \qquad \text{target}_i = i \cdot G = i \cdot \frac{|D|}{|Q|}

(the source notes invert the factor: ``arange(B) * (q.size(0) // d.size(0))`` is 0 for every query when
G > 1).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from labkit.evaluation import normalize_answer

__all__ = ["mnrl_loss", "mine_hard_negatives", "is_false_negative", "QueryAdapter"]


def mnrl_loss(q: Tensor, d: Tensor, *, scale: float = 20.0) -> Tensor:
    """MultipleNegativesRankingLoss: ``q`` (B, dim), ``d`` (B·G, dim) with query i's positive at row i·G.

    Cosine similarities times ``scale``, cross-entropy with targets ``arange(B) * G``; mean over queries.
    """
    if q.ndim != 2 or d.ndim != 2 or q.shape[1] != d.shape[1]:
        raise ValueError(f"q must be (B, dim) and d (B*G, dim); got {tuple(q.shape)} and {tuple(d.shape)}")
    if d.shape[0] % q.shape[0]:
        raise ValueError(f"d has {d.shape[0]} rows, not a multiple of the {q.shape[0]} queries; store G passages "
                         "per query (positive first)")
    g = d.shape[0] // q.shape[0]
    scores = scale * F.normalize(q, dim=-1) @ F.normalize(d, dim=-1).T
    target = torch.arange(q.shape[0]) * g
    return F.cross_entropy(scores, target)


def mine_hard_negatives(scores: np.ndarray, positives: Sequence[Sequence[int]], n: int, *,
                        skip: Sequence[Sequence[int]] | None = None) -> list[list[int]]:
    """The ``n`` best-scored passages per query that are not positives (nor in ``skip``): top-K hard negatives.

    ``scores``: (n_queries, n_passages) retriever scores; ``positives[i]``: query i's gold passages;
    ``skip[i]``: passages to exclude too (e.g. detected false negatives). Ties break by passage index.
    """
    s = np.asarray(scores)
    if s.ndim != 2 or len(positives) != s.shape[0]:
        raise ValueError(f"scores must be (n_queries, n_passages) with one positives list per query; got "
                         f"{s.shape} and {len(positives)} lists")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    out = []
    for i in range(s.shape[0]):
        ban = set(positives[i]) | set(skip[i] if skip is not None else ())
        order = np.lexsort((np.arange(s.shape[1]), -s[i]))
        out.append([int(j) for j in order if int(j) not in ban][:n])
    return out


def is_false_negative(passage: str, subject: str, answer: str) -> bool:
    """True when a mined "negative" names both the question's subject and its answer: it probably states the
    fact, so training to push it away teaches the retriever to reject a correct passage."""
    p = f" {normalize_answer(passage)} "
    return all(f" {normalize_answer(x)} " in p for x in (subject, answer) if normalize_answer(x))


class QueryAdapter(nn.Module):
    """A linear map applied to frozen query embeddings, ``q' = W q + b`` (W starts as the identity, b as 0), so
    the untrained adapter is the plain retriever. Passages keep their frozen embeddings."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        self.linear = nn.Linear(dim, dim)
        with torch.no_grad():
            self.linear.weight.copy_(torch.eye(dim))
            self.linear.bias.zero_()

    def forward(self, q: Tensor) -> Tensor:
        """(B, dim) → (B, dim), L2-normalised."""
        return F.normalize(self.linear(q), dim=-1)
