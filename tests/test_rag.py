"""labkit.rag against independent computations: BM25 by the formula, RRF on the notes' worked example,
metrics vs scikit-learn, faiss vs brute force, the reader, the OpenAI-compatible adapter (fake transport)."""
import math
import random
import re

import numpy as np
import pytest
from sklearn.metrics import ndcg_score

from labkit import retrieval as rag
from labkit.datasets import world

TEXT = ("# Title\n\nFirst paragraph. It has two sentences! Does it?\n\n## Part\n\n"
        "中文句子一。中文句子二！第三句？Mixed text here.\n\nLast line without a stop")


# ------------------------------------------------------------------------------------ chunking
@pytest.mark.parametrize("mode", ["fixed", "recursive", "sentence", "markdown"])
@pytest.mark.parametrize("size,overlap", [(7, 0), (13, 3), (40, 0), (41, 10), (500, 0)])
def test_chunks_are_bounded_substrings_and_lossless(mode, size, overlap):
    chunks = rag.chunk_text(TEXT, size, overlap, mode=mode)
    assert chunks and all(0 < len(c) <= size for c in chunks)
    pos = 0
    for c in chunks:  # contiguous substrings in order
        i = TEXT.find(c, max(pos - overlap, 0))
        assert i >= 0
        pos = i + len(c)
    assert pos == len(TEXT)
    if overlap == 0:
        assert "".join(chunks) == TEXT


def test_fixed_overlap_is_exact():
    t = "abcdefghijklmnopqrstuvwxyz"
    ch = rag.chunk_text(t, 10, 3, mode="fixed")
    assert ch == [t[0:10], t[7:17], t[14:24], t[21:31]]


def test_sentence_mode_splits_chinese_and_english():
    t = "第一句。第二句！第三句？Then English. And more!"
    assert rag.split_sentences(t) == ["第一句。", "第二句！", "第三句？", "Then English.", " And more!"]
    assert rag.chunk_text(t, 8, 0, mode="sentence")[:2] == ["第一句。第二句！", "第三句？"]
    assert rag.chunk_text(t, 14, 0, mode="sentence")[1:] == ["Then English.", " And more!"]
    # the source notes' pattern needs a newline after the punctuation and ASCII ?!, so it never splits here
    assert len(re.split("[。?!;]\n", "第一句。第二句！第三句？")) == 1


def test_markdown_chunks_never_cross_headers():
    art = world.article_text(world.load_corpus(), "person:0")
    chunks = rag.chunk_text(art, 400, 0, mode="markdown")
    assert len(chunks) == 2 and all(c.lstrip().startswith("#") for c in chunks)
    assert all(c.count("\n## ") + c.startswith("## ") <= 1 for c in chunks)


def test_chunk_bad_input():
    with pytest.raises(ValueError, match="overlap"):
        rag.chunk_text("abc", 10, 10)
    with pytest.raises(ValueError, match="overlap"):
        rag.chunk_text("abc", 10, -1)
    with pytest.raises(ValueError, match="size"):
        rag.chunk_text("abc", 0, 0)
    with pytest.raises(ValueError, match="mode"):
        rag.chunk_text("abc", 10, 0, mode="words")
    with pytest.raises(TypeError, match="text"):
        rag.chunk_text(["abc"], 10, 0)


# ---------------------------------------------------------------------------------------- BM25
def bm25_direct(docs, query, k1, b):
    """The formula, term by term, with no precomputation (independent of labkit's postings)."""
    N = len(docs)
    avgdl = sum(len(d) for d in docs) / N
    out = []
    for d in docs:
        s = 0.0
        for t in query:
            n_t = sum(1 for x in docs if t in x)
            idf = math.log((N - n_t + 0.5) / (n_t + 0.5) + 1)
            f = d.count(t)
            s += idf * f * (k1 + 1) / (f + k1 * (1 - b + b * len(d) / avgdl))
        out.append(s)
    return np.array(out)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k1,b", [(1.5, 0.75), (1.2, 0.0), (2.0, 1.0), (0.3, 0.5)])
def test_bm25_matches_direct_formula(seed, k1, b):
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(13)]
    docs = [[rng.choice(vocab) for _ in range(rng.randint(1, 17))] for _ in range(rng.randint(5, 23))]
    query = [rng.choice(vocab) for _ in range(5)] + ["unseen", vocab[0], vocab[0]]  # duplicates + OOV
    ours = rag.BM25(docs, k1=k1, b=b).scores(query)
    np.testing.assert_allclose(ours, bm25_direct(docs, query, k1, b), rtol=1e-12, atol=1e-12)


def test_bm25_search_order_and_shipped_corpus():
    corpus = world.load_corpus()
    bm = rag.BM25([rag.tokenize(p["text"]) for p in corpus])
    top = bm.search(rag.tokenize("Who founded Greern Foundry?"), 3)
    assert [s for _, s in top] == sorted([s for _, s in top], reverse=True)
    assert any("Greern" in corpus[i]["text"] for i, _ in top)
    assert len(bm.search(["greern"], 10_000)) == len(corpus)  # k is capped at the corpus size


def test_bm25_bad_input():
    with pytest.raises(ValueError, match="empty"):
        rag.BM25([])
    with pytest.raises(TypeError, match="tokenized_docs"):
        rag.BM25(["not", "tokenized"])
    bm = rag.BM25([["a", "b"], ["b"]])
    with pytest.raises(ValueError, match="query_tokens"):
        bm.scores([])
    with pytest.raises(TypeError, match="query_tokens"):
        bm.scores("a b")
    with pytest.raises(ValueError, match="k"):
        bm.search(["a"], 0)
    with pytest.raises(ValueError, match="b"):
        rag.BM25([["a"]], b=1.5)
    for not_text in (None, ["a b"], b"a b"):
        with pytest.raises(TypeError, match="text must be a str"):
            rag.tokenize(not_text)


# ----------------------------------------------------------------------------------------- RRF
NOTES_RANKINGS = [["doc1", "doc3", "doc2", "doc5"], ["doc2", "doc1", "doc4", "doc3"], ["doc3", "doc1", "doc5", "doc2"]]


def test_rrf_reproduces_worked_example():
    fused = dict(rag.reciprocal_rank_fusion(NOTES_RANKINGS, k=60))
    want = {"doc1": 0.048652, "doc3": 0.048147, "doc2": 0.047891, "doc5": 0.031498, "doc4": 0.015873}
    assert [d for d, _ in rag.reciprocal_rank_fusion(NOTES_RANKINGS)] == list(want)
    for d, v in want.items():
        assert abs(fused[d] - v) < 1e-6


def test_rrf_differs_from_notes_indentation_bug():
    def buggy(rankings, k=60):
        scores = {}
        for ranked in rankings:
            for rank, doc in enumerate(ranked):
                if doc not in scores:
                    scores[doc] = 0
                    scores[doc] += 1.0 / (k + rank + 1)
        return scores
    b = buggy(NOTES_RANKINGS)
    assert b["doc2"] == b["doc4"]  # a tie that should not exist
    ours = dict(rag.reciprocal_rank_fusion(NOTES_RANKINGS))
    assert ours["doc2"] > ours["doc4"] and ours["doc5"] > ours["doc4"]


def test_rrf_uses_ranks_only_and_bad_input():
    r1 = rag.reciprocal_rank_fusion([["a", "b", "c"], ["c", "a"]], k=1)
    assert [d for d, _ in r1] == ["a", "c", "b"]
    assert r1[0][1] == pytest.approx(1 / 2 + 1 / 3)
    with pytest.raises(ValueError, match="rankings"):
        rag.reciprocal_rank_fusion([])
    with pytest.raises(ValueError, match="twice"):
        rag.reciprocal_rank_fusion([["a", "a"]])
    with pytest.raises(ValueError, match="k"):
        rag.reciprocal_rank_fusion([["a"]], k=-1)


# ------------------------------------------------------------------------------------- metrics
@pytest.mark.parametrize("seed", range(6))
def test_metrics_against_sklearn_and_definitions(seed):
    rng = random.Random(seed)
    n = rng.randint(5, 19)
    ranked = list(range(n))
    rng.shuffle(ranked)
    relevant = set(rng.sample(range(n), rng.randint(1, 4)))
    for k in (1, 3, 5, n + 2):
        y_true = np.array([[1.0 if d in relevant else 0.0 for d in range(n)]])
        y_score = np.zeros((1, n))
        for pos, d in enumerate(ranked):
            y_score[0, d] = n - pos  # distinct scores, best first
        assert rag.ndcg_at_k(ranked, relevant, k) == pytest.approx(ndcg_score(y_true, y_score, k=k), abs=1e-12)
        top = ranked[:k]
        assert rag.hit_at_k(ranked, relevant, k) == float(bool(set(top) & relevant))
        assert rag.recall_at_k(ranked, relevant, k) == len(set(top) & relevant) / len(relevant)
        assert rag.precision_at_k(ranked, relevant, k) == len(set(top) & relevant) / k
    first = min(ranked.index(d) for d in relevant)
    assert rag.mrr(ranked, relevant) == 1 / (first + 1)


def test_metric_worked_values_and_bad_input():
    assert rag.mrr(["x", "y", "z"], {"z"}) == pytest.approx(1 / 3)
    assert rag.mrr(["x"], {"z"}) == 0.0
    assert rag.ndcg_at_k(["a", "b", "c"], {"a", "b"}, 3) == 1.0
    assert rag.ndcg_at_k(["c", "a"], {"a"}, 2) == pytest.approx(1 / math.log2(3))
    with pytest.raises(ValueError, match="relevant"):
        rag.hit_at_k(["a"], set(), 1)
    with pytest.raises(ValueError, match="k"):
        rag.ndcg_at_k(["a"], {"a"}, 0)


# ------------------------------------------------------------------------------------ dense
def _unit(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_flat_index_equals_brute_force_and_ivf_full_probe():
    rng = np.random.default_rng(0)
    x, q = _unit(rng, 101, 37), _unit(rng, 9, 37)
    s, i = rag.DenseIndex(x).search(q, 7)
    ref = np.argsort(-(q @ x.T), axis=1, kind="stable")[:, :7]
    assert np.array_equal(i, ref)
    np.testing.assert_allclose(s, np.take_along_axis(q @ x.T, ref, 1), atol=1e-5)
    ivf = rag.DenseIndex(x, kind="ivf", nlist=8, nprobe=8)  # probing every cell is exact
    assert np.array_equal(ivf.search(q, 7)[1], ref)
    # fewer probed cells = a subset of the candidates: recall@7 never rises as nprobe falls, and one cell
    # of eight misses most true neighbours (0.32 on this data), so set_params really changes the search
    recall = []
    for nprobe in range(1, 9):
        ivf.set_params(nprobe=nprobe)
        recall.append(np.mean([len(set(a) & set(b)) / 7 for a, b in zip(ivf.search(q, 7)[1], ref)]))
    assert 0 < recall[0] < 0.5 and recall[-1] == 1.0
    assert all(r0 <= r1 for r0, r1 in zip(recall, recall[1:]))
    hnsw = rag.DenseIndex(x, kind="hnsw", M=8, ef_search=64)
    assert np.mean([len(set(a) & set(b)) / 7 for a, b in zip(hnsw.search(q, 7)[1], ref)]) >= 0.9


def test_dense_bad_input():
    x = _unit(np.random.default_rng(1), 10, 8)
    idx = rag.DenseIndex(x)
    with pytest.raises(ValueError, match="dimension"):
        idx.search(np.ones(9, dtype=np.float32), 3)
    with pytest.raises(ValueError, match="k"):
        idx.search(x[0], 0)
    with pytest.raises(ValueError, match="exceeds"):
        idx.search(x[0], 11)
    with pytest.raises(ValueError, match="embeddings"):
        rag.DenseIndex(np.zeros((0, 8)))
    with pytest.raises(ValueError, match="kind"):
        rag.DenseIndex(x, kind="lsh")
    with pytest.raises(ValueError, match=r"nlist \(0\) must be in \[1, n=10\]"):
        rag.DenseIndex(x, kind="ivf", nlist=0)
    with pytest.raises(ValueError, match=r"nlist \(11\) must be in \[1, n=10\]"):
        rag.DenseIndex(x, kind="ivf", nlist=11)
    rag.DenseIndex(x, kind="ivf", nlist=10)  # the bound itself is allowed


def test_cached_embeddings_equal_fresh_minilm():
    corpus = world.load_corpus()
    cached = np.load(world.WORLD_DIR / "passage_emb.npy")
    assert cached.shape == (len(corpus), 384)
    sample = [0, 7, len(corpus) - 1]  # includes a Chinese passage
    fresh = rag.encode([corpus[i]["text"] for i in sample])
    np.testing.assert_allclose(fresh, cached[sample], atol=1e-5)
    with pytest.raises(ValueError, match="empty"):
        rag.encode([])


def test_sentence_reranker_prefers_best_sentence():
    p = np.array([[1.0, 0.0], [0.6, 0.8]], dtype=np.float32)
    s = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], dtype=np.float32)
    rr = rag.SentenceReranker(p, s, np.array([0, 1, 1]), alpha=0.0)
    assert [i for i, _ in rr.rerank(np.array([0.0, 1.0]), [0, 1])] == [1, 0]
    with pytest.raises(ValueError, match="alpha"):
        rag.SentenceReranker(p, s, np.array([0, 1, 1]), alpha=2)
    with pytest.raises(ValueError, match="sentence_emb and sentence_passage must have the same length"):
        rag.SentenceReranker(p, s, np.array([0, 1]))


# --------------------------------------------------------------------------------- answer step
PASSAGES = ["# Greern Foundry\n\n## History\n\nGreern Foundry was founded in 1930 by Lionia Ravsby. "
            "It is based in Morford.",
            "# Lionia Ravsby\n\n## Early life\n\nLionia Ravsby was born in 1898. She grew up in Lornmoor.",
            "# Tern-3\n\n## Description\n\nThe Tern-3 is a loom made by Greern Foundry. It went on sale in 1941."]


def test_extractive_reader():
    read = rag.ExtractiveReader()
    assert read("Who founded Greern Foundry?", PASSAGES) == "Lionia Ravsby"
    assert read("When did the Tern-3 go on sale?", PASSAGES) == "1941"
    assert read("Which was launched first, the Tern-3 or Greern Foundry?", PASSAGES) == "Greern Foundry"
    assert read("Where is Greern Foundry based?", PASSAGES) == "Morford"
    with pytest.raises(ValueError, match="question"):
        read("  ", PASSAGES)


def test_prompt_template_and_double_brace_pitfall():
    prompt = rag.build_prompt("Who founded Greern Foundry?", PASSAGES[:1])
    assert "[1] # Greern Foundry" in prompt and "Who founded" in prompt
    assert "{{context}}".format() == "{context}"  # the notes' template never injects context
    with pytest.raises(ValueError, match="context"):
        rag.build_prompt("q?", PASSAGES, template="Known: {{context}} Q: {question}")
    for empty in ("", "   \n"):
        with pytest.raises(ValueError, match="question is empty"):
            rag.build_prompt(empty, PASSAGES)
    with pytest.raises(ValueError, match=r"unknown placeholder 'answer'.*\{context\} and \{question\}"):
        rag.build_prompt("q?", PASSAGES, template="{context} {question} {answer}")
    with pytest.raises(ValueError, match="unknown placeholder"):
        rag.build_prompt("q?", PASSAGES, template="{context} {question} {0}")


def test_openai_adapter_with_fake_transport():
    calls = []

    def fake(url, headers, body):
        calls.append((url, headers, body))
        return {"choices": [{"message": {"content": " Lionia Ravsby \n"}}]}

    gen = rag.OpenAICompatibleGenerator("http://localhost:8000/v1/", "tiny", api_key="k", transport=fake)
    out = rag.rag_answer("Who founded Greern Foundry?", lambda q, k: PASSAGES[:k], gen, k=2)
    assert out["answer"] == "Lionia Ravsby" and len(out["passages"]) == 2
    url, headers, body = calls[0]
    assert url == "http://localhost:8000/v1/chat/completions"
    assert headers["Authorization"] == "Bearer k" and body["model"] == "tiny"
    assert "founded in 1930" in body["messages"][0]["content"]
    bad = rag.OpenAICompatibleGenerator("http://x", "m", transport=lambda *a: {"error": "nope"})
    with pytest.raises(ValueError, match="unexpected response"):
        bad("q?", PASSAGES)
    with pytest.raises(ValueError, match="base_url"):
        rag.OpenAICompatibleGenerator("localhost:8000", "m")
    with pytest.raises(ValueError, match="k"):
        rag.rag_answer("q?", lambda q, k: PASSAGES, k=0)


def test_exact_match_and_f1():
    assert rag.exact_match("Paris", "paris.") == 1.0
    assert rag.exact_match("The Iron Circle", ["Iron Circle"]) == 1.0
    assert rag.f1_score("London", "Paris") == 0.0
    assert rag.f1_score("Greern", "Greern Foundry") == pytest.approx(2 * 1 * 0.5 / 1.5)
    assert rag.f1_score("出生在Ashgate", "Ashgate") > 0


def test_retriever_methods_on_shipped_corpus():
    corpus, qs = world.load_corpus(), world.load_questions()
    P = np.load(world.WORLD_DIR / "passage_emb.npy")
    Qe = np.load(world.WORLD_DIR / "question_emb.npy")
    S = np.load(world.WORLD_DIR / "sentence_emb.npz")
    texts = [p["text"] for p in corpus]
    retr = rag.Retriever(texts, P, S["emb"], S["passage"], depth=10)
    single = [i for i, q in enumerate(qs) if q["type"] == "single"]
    for m in rag.Retriever.METHODS:
        runs = [[corpus[j]["id"] for j in retr.rank(qs[i]["question"], m, Qe[i])] for i in single]
        assert all(len(r) == 10 and len(set(r)) == 10 for r in runs)
        assert np.mean([rag.hit_at_k(r, qs[i]["support"], 5) for r, i in zip(runs, single)]) >= 0.9, m
    fused = retr.rank(qs[0]["question"], "hybrid", Qe[0])
    sparse = [i for i, _ in retr.bm25.search(rag.tokenize(qs[0]["question"]), 10)]
    dense = [int(i) for i in retr.dense.search(Qe[0], 10)[1][0]]
    assert fused == [d for d, _ in rag.reciprocal_rank_fusion([sparse, dense])][:10]
    with pytest.raises(ValueError, match="method"):
        retr.rank("q?", "splade", Qe[0])
    with pytest.raises(ValueError, match="question"):
        retr.rank(" ", "bm25")
    with pytest.raises(ValueError, match="embeddings"):
        rag.Retriever(texts[:3], P)
    with pytest.raises(ValueError, match="texts is empty"):
        rag.Retriever([], P[:0])
    with pytest.raises(ValueError, match="rerank"):
        rag.Retriever(texts, P).rank("Who founded Greern Foundry?", "dense+rerank", Qe[0])
