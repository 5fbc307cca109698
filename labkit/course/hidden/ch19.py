"""Hidden tests of chapter 19's lab tasks: RAG-Fusion over query variants' dense rankings, the HyDE query
embedding, and RAGAS context precision@k.

References: rankings by a plain Python sort of the cosine scores and fusion by the RRF sum written out (no
labkit), HyDE as a numpy mean of the N + 1 vectors then L2-normalised, context precision by its definition
(Σ_k P@k·v_k / #relevant) with worked values; fresh random sizes each run (ties, k = 0, empty relevance).
"""
from __future__ import annotations

import random

import numpy as np
import torch

from labkit.core.check import close, exact
from labkit.course.hidden.base import Check, Forbidden, Learner, Task

__all__ = ["TASKS"]


def _rng(g: torch.Generator) -> random.Random:
    return random.Random(int(torch.randint(0, 2**31 - 1, (1,), generator=g)))


def _np(g: torch.Generator) -> np.random.Generator:
    return np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,), generator=g)))


# ---- 19.A multi_query_fusion ---------------------------------------------------------------------------
def _fusion_ref(q: np.ndarray, p: np.ndarray, depth: int, k: float) -> dict[int, float]:
    score: dict[int, float] = {}
    for row in q:
        order = sorted(range(len(p)), key=lambda j: (-float(row @ p[j]), j))[:depth]
        for r, j in enumerate(order, start=1):
            score[j] = score.get(j, 0.0) + 1.0 / (k + r)
    return score


def _check_fusion(got, score: dict[int, float], top: int | None, what: str) -> None:
    got = [int(x) for x in got]
    want = sorted(score, key=lambda j: -score[j])[:top]
    exact(len(got), len(want), quiet=True, name=f"{what}: number of passages returned")
    exact(len(set(got)), len(got), quiet=True, name=f"{what}: each passage at most once")
    close([score.get(j, -1.0) for j in got], [score[j] for j in want], atol=1e-12, quiet=True,
          name=f"{what}: fused scores, best first")


def _fusion_random(L: Learner, g: torch.Generator) -> None:
    r = _np(g)
    for _ in range(3):
        nq, n, d = int(r.integers(1, 5)), int(r.integers(4, 30)), int(r.integers(2, 9))
        q, p = r.normal(size=(nq, d)), r.normal(size=(n, d))
        depth, k = int(r.integers(1, n + 1)), float(r.choice([60, 0, 1, 2.5]))
        _check_fusion(L.multi_query_fusion(q, p, depth=depth, k=k), _fusion_ref(q, p, depth, k), None,
                      f"{nq} variants, {n} passages, depth {depth}, k {k}")


def _fusion_top(L: Learner, g: torch.Generator) -> None:
    r = _np(g)
    q, p = r.normal(size=(3, 4)), r.normal(size=(11, 4))
    top = int(r.integers(1, 5))
    _check_fusion(L.multi_query_fusion(q, p, depth=6, k=60, top=top), _fusion_ref(q, p, 6, 60), top, f"top={top}")


def _fusion_single(L: Learner, g: torch.Generator) -> None:
    r = _np(g)
    q, p = r.normal(size=(1, 5)), r.normal(size=(9, 5))
    got = [int(x) for x in L.multi_query_fusion(q, p, depth=9, k=60)]
    want = sorted(range(9), key=lambda j: -float(q[0] @ p[j]))
    exact(got, want, quiet=True, name="one variant: the fused list is the plain cosine ranking")
    tie = np.array([[1.0, 0.0]]), np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    exact([int(x) for x in L.multi_query_fusion(*tie, depth=4, k=60)], [1, 3, 0, 2], quiet=True,
          name="equal cosines rank by passage index")


# ---- 19.B hyde_embedding -------------------------------------------------------------------------------
def _hyde_random(L: Learner, g: torch.Generator) -> None:
    r = _np(g)
    for n in (1, int(r.integers(2, 9))):
        d = int(r.integers(3, 40))
        q, docs = r.normal(size=d), r.normal(size=(n, d))
        mean = np.vstack([q[None], docs]).mean(0)
        close(np.asarray(L.hyde_embedding(q, docs), dtype=np.float64), mean / np.linalg.norm(mean), atol=1e-9,
              quiet=True, name=f"N = {n}, d = {d}: the normalised mean of f(q) and the N documents")


def _hyde_edges(L: Learner, g: torch.Generator) -> None:
    r = _np(g)
    q = r.normal(size=6)
    close(np.asarray(L.hyde_embedding(q, np.zeros((0, 6))), dtype=np.float64), q / np.linalg.norm(q), atol=1e-9,
          quiet=True, name="N = 0: the query alone (normalised)")
    docs = np.vstack([q * 3.0, r.normal(size=6)])
    mean = (q + docs.sum(0)) / 3
    close(np.asarray(L.hyde_embedding(q, docs), dtype=np.float64), mean / np.linalg.norm(mean), atol=1e-9,
          quiet=True, name="the query counts once, like each document (divide by N + 1)")
    v = np.asarray(L.hyde_embedding(q.astype(np.float32), docs.astype(np.float32)), dtype=np.float64)
    close(float(np.linalg.norm(v)), 1.0, atol=1e-5, quiet=True, name="float32 input: unit length")


# ---- 19.C context_precision ----------------------------------------------------------------------------
def _cp_ref(v: list[int], k: int) -> float:
    v = v[:k]
    hits = sum(v)
    return sum(sum(v[:i + 1]) / (i + 1) * v[i] for i in range(len(v))) / hits if hits else 0.0


def _cp_random(L: Learner, g: torch.Generator) -> None:
    r = _rng(g)
    for _ in range(6):
        v = [int(r.random() < 0.4) for _ in range(r.randint(1, 15))]
        k = r.randint(1, 18)
        close(float(L.context_precision(v, k)), _cp_ref(v, k), atol=1e-12, quiet=True,
              name=f"relevance {v}, k = {k}")


def _cp_worked(L: Learner, g: torch.Generator) -> None:
    close(float(L.context_precision([1, 0, 1], 3)), (1 + 2 / 3) / 2, atol=1e-12, quiet=True,
          name="[1, 0, 1], k = 3: (1 + 2/3) / 2")
    close(float(L.context_precision([0, 1, 1], 3)), (1 / 2 + 2 / 3) / 2, atol=1e-12, quiet=True,
          name="[0, 1, 1], k = 3: the order matters")
    close(float(L.context_precision([1, 1, 0, 1], 2)), 1.0, atol=1e-12, quiet=True,
          name="only the first k flags count")
    close(float(L.context_precision([0, 0, 0], 3)), 0.0, atol=0, quiet=True, name="nothing relevant: 0, not NaN")
    close(float(L.context_precision([True, False], 2)), 1.0, atol=1e-12, quiet=True, name="bool flags")


_FORBID = Forbidden(packages=("labkit", "ragas", "sklearn", "faiss"))

TASKS = (
    Task("19.A", "RAG-Fusion over query variants' dense rankings", ("multi_query_fusion",), (
        Check("random variants, passages, depth and k == rankings + RRF written out", 2, _fusion_random),
        Check("top keeps the best fused passages", 1, _fusion_top),
        Check("one variant is the plain ranking; ties by index", 1, _fusion_single),
    ), _FORBID),
    Task("19.B", "the HyDE query embedding", ("hyde_embedding",), (
        Check("random N and d == the normalised mean of N + 1 vectors", 1, _hyde_random),
        Check("N = 0, the query counted once, float32 input", 1, _hyde_edges),
    ), _FORBID),
    Task("19.C", "context precision@k (RAGAS)", ("context_precision",), (
        Check("random relevance flags and k == Σ P@k·v_k / #relevant", 1, _cp_random),
        Check("worked values: order, cut at k, nothing relevant, bools", 1, _cp_worked),
    ), _FORBID),
)
