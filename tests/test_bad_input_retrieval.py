"""labkit.retrieval on bad input (issue 16, "no silent failures"): NaN embeddings, duplicate ids in a
ranking, wrong types and out-of-range indices raise errors that name the argument."""
from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import ndcg_score

from labkit import retrieval as R


def _emb(n: int = 12, d: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def test_dense_index_refuses_nan_documents_and_queries() -> None:
    x = _emb()
    bad = x.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match=r"`embeddings` has NaN/inf in row\(s\) \[3\]"):
        R.DenseIndex(bad)                                   # used: accepted, and row 3 never retrievable
    idx = R.DenseIndex(x)
    q = x[0].copy()
    q[1] = np.inf
    with pytest.raises(ValueError, match=r"`queries` has NaN/inf in row\(s\) \[0\]"):
        idx.search(q, 3)                                     # used: ids -1, -1, -1 and scores -3.4e38
    with pytest.raises(ValueError, match="all-zero"):
        idx.search(np.zeros(6, dtype=np.float32), 3)
    with pytest.raises(ValueError, match="all-zero"):
        R.DenseIndex(np.vstack([x, np.zeros((1, 6), np.float32)]))
    R.DenseIndex(np.vstack([x, np.zeros((1, 6), np.float32)]), normalize=False)   # raw inner product: allowed
    with pytest.raises(ValueError, match="`nprobe` only applies to kind='ivf'"):
        idx.set_params(nprobe=4)
    with pytest.raises(ValueError, match="`M` must be a positive int"):
        R.DenseIndex(x, kind="hnsw", M=0)


def test_retriever_never_returns_fake_ids() -> None:
    x = _emb(8, 6, seed=1)
    texts = [f"passage number {i} about topic {i % 3}" for i in range(8)]
    retr = R.Retriever(texts, x, depth=5)
    ranked = retr.rank("topic 1", "dense", query_emb=x[2])
    assert len(ranked) == 5 and all(0 <= i < 8 for i in ranked) and ranked[0] == 2
    with pytest.raises(ValueError, match="`queries` has NaN"):
        retr.rank("topic 1", "dense", query_emb=np.full(6, np.nan, np.float32))
    with pytest.raises(ValueError, match="sentence_emb and sentence_passage"):
        R.Retriever(texts, x, sentence_emb=x)
    with pytest.raises(TypeError, match="texts must be a list"):
        R.Retriever("one text", x[:8])


def test_ranking_metrics_refuse_duplicate_ids() -> None:
    with pytest.raises(ValueError, match="ranked lists doc id 1 twice"):
        R.ndcg_at_k([1, 1, 1], [1], 3)                      # used to return 2.131 (nDCG above 1)
    for fn in (lambda r: R.hit_at_k(r, {1}, 2), lambda r: R.recall_at_k(r, {1}, 2),
               lambda r: R.precision_at_k(r, {1}, 2), lambda r: R.mrr(r, {1})):
        with pytest.raises(ValueError, match="twice"):
            fn([2, 2, 1])
    with pytest.raises(TypeError, match="ranked must be a list"):
        R.mrr("abc", ["a"])
    with pytest.raises(TypeError, match="relevant must be a collection"):
        R.recall_at_k(["a"], "a", 1)
    # numpy rankings still work, and nDCG stays the textbook value (scikit-learn) and <= 1
    ranked = np.array([4, 0, 2, 7])
    ours = R.ndcg_at_k(ranked, {0, 7}, 4)
    scores = np.zeros(8)
    scores[ranked] = [4, 3, 2, 1]
    truth = np.isin(np.arange(8), [0, 7]).astype(float)
    assert math.isclose(ours, ndcg_score(truth[None], scores[None], k=4)) and ours <= 1


def test_fusion_bm25_and_reranker_refuse_bad_numbers_and_indices() -> None:
    with pytest.raises(ValueError, match="k .*must be a number >= 0"):
        R.reciprocal_rank_fusion([[1, 2]], float("nan"))   # used: every score NaN
    with pytest.raises(TypeError, match=r"rankings\[0\] must be a list"):
        R.reciprocal_rank_fusion(["ab"])
    with pytest.raises(ValueError, match="k1"):
        R.BM25([["a"]], k1=float("nan"))
    x = _emb(6, 4)
    with pytest.raises(ValueError, match=r"sentence_passage must hold passage indices in \[0, 6\)"):
        R.SentenceReranker(x, x, np.array([0, 1, 2, 3, 4, 9]))
    rr = R.SentenceReranker(x, x, np.arange(6))
    with pytest.raises(ValueError, match=r"candidates \[7\]"):
        rr.rerank(x[0], [7])
    with pytest.raises(ValueError, match="finite vector of dimension 4"):
        rr.rerank(np.full(4, np.nan), [1])


def test_text_and_reader_refuse_a_single_string_for_a_list() -> None:
    with pytest.raises(TypeError, match="passages must be a list"):
        R.build_prompt("Who?", "one passage")                # used: one numbered passage per character
    with pytest.raises(TypeError, match="passages must be a list"):
        R.ExtractiveReader()("Who founded X?", "X was founded by Y.")
    with pytest.raises(ValueError, match="gold is an empty list; pass one gold answer string or a non-empty list"):
        R.exact_match("a", [])                               # used: 0.0, as if the answer were wrong
    with pytest.raises(TypeError, match="prediction must be a str"):
        R.f1_score(None, "a")
    with pytest.raises(TypeError, match="size and overlap must be ints"):
        R.chunk_text("abc", True)
    with pytest.raises(TypeError, match="text must be a str"):
        R.split_sentences(None)
