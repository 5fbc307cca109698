"""Hidden tests of chapter 18's lab tasks: BM25 scores, reciprocal rank fusion and binary nDCG@k.

References: BM25 as a plain sum of its formula and labkit's ``BM25`` (posting lists), on random corpora and
on the fictional world's passages; scikit-learn's ``ndcg_score`` (relevant documents that were not retrieved
still count in the ideal ranking); labkit's ``reciprocal_rank_fusion``, plain sums and the worked example of
the source notes, with ties, lists of different lengths and other ``k``.
"""
from __future__ import annotations

import math
import random
from functools import lru_cache

import numpy as np
import torch
from sklearn.metrics import ndcg_score

from labkit.core.check import close, exact
from labkit.course.hidden.base import Check, Forbidden, Learner, Task
from labkit.datasets import world
from labkit.retrieval import BM25, reciprocal_rank_fusion, tokenize

__all__ = ["TASKS"]


def _rng(g: torch.Generator) -> random.Random:
    return random.Random(int(torch.randint(0, 2**31 - 1, (1,), generator=g)))


# ---- 18.A bm25_scores ----------------------------------------------------------------------------------
def _bm25_formula(query: list[str], docs: list[list[str]], k1: float, b: float) -> np.ndarray:
    N, avgdl = len(docs), sum(map(len, docs)) / len(docs)
    out = np.zeros(N)
    for t in query:
        n_t = sum(t in d for d in docs)
        idf = math.log(1 + (N - n_t + 0.5) / (n_t + 0.5))
        for j, d in enumerate(docs):
            f = d.count(t)
            if f:
                out[j] += idf * f * (k1 + 1) / (f + k1 * (1 - b + b * len(d) / avgdl))
    return out


def _corpus(r: random.Random) -> tuple[list[str], list[list[str]]]:
    vocab = [f"w{i}" for i in range(r.randint(6, 14))]
    docs = [[r.choice(vocab) for _ in range(r.randint(1, 20))] for _ in range(r.randint(3, 15))]
    query = [r.choice(vocab) for _ in range(r.randint(1, 5))] + ["absent"]
    return query, docs


def _scores(L: Learner, query, docs, k1: float, b: float, what: str) -> None:
    got = np.asarray(L.bm25_scores(list(query), [list(d) for d in docs], k1=k1, b=b), dtype=np.float64)
    exact(tuple(got.shape), (len(docs),), quiet=True, name=f"{what}: one score per document")
    close(got, _bm25_formula(query, docs, k1, b), atol=1e-9, quiet=True, name=f"{what} == the BM25 formula")
    close(got, BM25(docs, k1=k1, b=b).scores(query), atol=1e-9, quiet=True, name=f"{what} == labkit's BM25")


def _bm25_random(L: Learner, g: torch.Generator) -> None:
    r = _rng(g)
    for _ in range(4):
        query, docs = _corpus(r)
        _scores(L, query, docs, 1.5, 0.75, f"random corpus of {len(docs)} docs, query {query}")


def _bm25_params(L: Learner, g: torch.Generator) -> None:
    r = _rng(g)
    query, docs = _corpus(r)
    for k1, b in [(1.2, 0.0), (2.0, 1.0), (0.0, 0.75), (round(r.uniform(0.3, 3), 2), round(r.uniform(0, 1), 2))]:
        _scores(L, query, docs, k1, b, f"k1={k1}, b={b}")


def _bm25_terms(L: Learner, g: torch.Generator) -> None:
    docs = [["a", "b", "a"], ["b", "c"], ["c", "c", "c", "d"], ["a"]]
    once = np.asarray(L.bm25_scores(["a"], docs), dtype=np.float64)
    twice = np.asarray(L.bm25_scores(["a", "a"], docs), dtype=np.float64)
    close(twice, 2 * once, atol=1e-12, quiet=True, name="a query term given twice counts twice")
    none = np.asarray(L.bm25_scores(["zzz"], docs), dtype=np.float64)
    exact(none.tolist(), [0.0] * 4, quiet=True, name="a term no document contains scores 0 everywhere")
    every = np.asarray(L.bm25_scores(["b", "c"], [["b", "c"], ["c", "b", "x"]]), dtype=np.float64)
    assert bool((every > 0).all()), (f"a term in every document still adds a small positive IDF (Lucene's "
                                     f"ln(1 + ...)), got scores {every.tolist()}")


@lru_cache(maxsize=1)
def _world_docs() -> tuple[list[list[str]], list[str]]:
    return [tokenize(p["text"]) for p in world.load_corpus()], [q["question"] for q in world.load_questions()]


def _bm25_world(L: Learner, g: torch.Generator) -> None:
    docs, questions = _world_docs()
    for qi in torch.randint(0, len(questions), (3,), generator=g).tolist():
        query = tokenize(questions[qi])
        close(np.asarray(L.bm25_scores(query, docs), dtype=np.float64), BM25(docs).scores(query), atol=1e-9,
              quiet=True, name=f"the world's {len(docs)} passages, question {questions[qi]!r}")


# ---- 18.C ndcg_at_k ------------------------------------------------------------------------------------
def _sklearn_ndcg(ranked: list, relevant: set, k: int) -> float:
    """nDCG@k by scikit-learn: the ranked docs get falling scores, then k non-relevant fillers (so nothing
    unretrieved enters the top k), then the relevant docs that were not retrieved (they count in the ideal)."""
    missing = sorted(relevant - set(ranked))
    items = list(ranked) + [f"filler{i}" for i in range(k)] + missing
    y_true = np.array([[1.0 if d in relevant else 0.0 for d in items]])
    y_score = np.array([np.arange(len(items), 0, -1, dtype=float)])
    return float(ndcg_score(y_true, y_score, k=k))


def _case(r: random.Random) -> tuple[list, set, int]:
    pool = [f"d{i}" for i in range(r.randint(4, 30))]
    ranked = r.sample(pool, r.randint(1, len(pool)))
    relevant = set(r.sample(pool, r.randint(1, min(8, len(pool)))))
    return ranked, relevant, r.randint(1, 12)


def _ndcg_vs_sklearn(L: Learner, g: torch.Generator) -> None:
    r = _rng(g)
    for _ in range(12):
        ranked, relevant, k = _case(r)
        close(float(L.ndcg_at_k(list(ranked), set(relevant), k)), _sklearn_ndcg(ranked, relevant, k), atol=1e-12,
              quiet=True, name=f"nDCG@{k} of {ranked} with relevant {sorted(relevant)} == sklearn ndcg_score")


def _ndcg_worked(L: Learner, g: torch.Generator) -> None:
    want = (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3))
    close(float(L.ndcg_at_k(["a", "b", "c", "d"], {"b", "d"}, 4)), want, atol=1e-12, quiet=True,
          name="worked example: ranked a, b, c, d, relevant {b, d}, k = 4")
    close(float(L.ndcg_at_k(["a", "b"], ["b", "z"], 5)), (1 / math.log2(3)) / (1 + 1 / math.log2(3)), atol=1e-12,
          quiet=True, name="k = 5 > 2 ranked docs; relevant given as a list; 'z' never retrieved counts in the ideal")


def _ndcg_extremes(L: Learner, g: torch.Generator) -> None:
    exact(float(L.ndcg_at_k(["x", "y", "a"], {"a"}, 2)), 0.0, quiet=True, name="no relevant doc in the top k gives 0.0")
    close(float(L.ndcg_at_k(["a", "b", "x"], {"a", "b", "c", "d"}, 2)), 1.0, atol=1e-12, quiet=True,
          name="more relevant docs than k, and the top k all relevant: 1.0")
    close(float(L.ndcg_at_k(["b", "a"], {"a"}, 1)), 0.0, atol=1e-12, quiet=True, name="k = 1 counts the first doc only")


# ---- 18.B rrf ------------------------------------------------------------------------------------------
_NOTES = [["doc1", "doc3", "doc2", "doc5"], ["doc2", "doc1", "doc4", "doc3"], ["doc3", "doc1", "doc5", "doc2"]]


def _check_fused(got, rankings, k: float, what: str) -> None:
    want = reciprocal_rank_fusion(rankings, k=k)
    got = [(d, float(s)) for d, s in got]
    exact(sorted(d for d, _ in got), sorted(d for d, _ in want), quiet=True, name=f"{what}: every doc once")
    by_doc = dict(got)
    close([by_doc[d] for d, _ in want], [s for _, s in want], atol=1e-12, quiet=True, name=f"{what}: scores")
    exact([d for d, _ in got], [d for d, _ in want], quiet=True, name=f"{what}: order, best first")


def _rrf_notes(L: Learner, g: torch.Generator) -> None:
    got = L.rrf([list(x) for x in _NOTES])
    _check_fused(got, _NOTES, 60, "the notes' three lists")
    close([float(s) for _, s in got], [0.048652, 0.048147, 0.047891, 0.031498, 0.015873], atol=1e-6, quiet=True,
          name="the worked example's scores")


def _rrf_random(L: Learner, g: torch.Generator) -> None:
    r = _rng(g)
    for k in (60, 0, 1, 2.5):
        pool = [f"p{i}" for i in range(r.randint(3, 12))]
        lists = [r.sample(pool, r.randint(1, len(pool))) for _ in range(r.randint(1, 4))]
        _check_fused(L.rrf([list(x) for x in lists], k=k), lists, k, f"{len(lists)} random lists, k={k}")


def _rrf_ties(L: Learner, g: torch.Generator) -> None:
    _check_fused(L.rrf([["a", "b"], ["b", "a"]]), [["a", "b"], ["b", "a"]], 60,
                 "a and b tie (a appears first)")
    one = [["x", "y", "z"]]
    _check_fused(L.rrf([list(x) for x in one], k=10), one, 10, "one list keeps its order, scores 1/(10 + rank)")


_FORBID = Forbidden(packages=("labkit", "rank_bm25", "bm25s", "sklearn"))

TASKS = (
    Task("18.A", "BM25 scores", ("bm25_scores",), (
        Check("random corpora == the formula and labkit's BM25", 1, _bm25_random),
        Check("k1, b: 0, 1 and random (k1 = 0: no 0/0)", 1, _bm25_params),
        Check("repeated query terms, absent terms, terms in every doc", 1, _bm25_terms),
        Check("the world's passages and questions", 1, _bm25_world),
    ), _FORBID),
    Task("18.B", "reciprocal rank fusion", ("rrf",), (
        Check("the notes' worked example", 1, _rrf_notes),
        Check("random lists of different lengths, other k", 1, _rrf_random),
        Check("ties keep first appearance; a single list", 1, _rrf_ties),
    ), _FORBID),
    Task("18.C", "binary nDCG@k", ("ndcg_at_k",), (
        Check("random rankings == sklearn ndcg_score", 1, _ndcg_vs_sklearn),
        Check("worked examples, k beyond the ranking, unretrieved relevant docs", 1, _ndcg_worked),
        Check("0 with no hit, 1 for a perfect top k, k = 1", 1, _ndcg_extremes),
    ), _FORBID),
)
