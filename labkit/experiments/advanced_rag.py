"""Chapter 19's measurements with the trained reader (data/reader): chunking scored, query-side techniques,
RAG evaluation, and a test set generated from the corpus.

Every pipeline answers the shipped world's questions with the same reader (:meth:`LMReader.read_many`: the
best-scored candidate span of the top-``k`` contexts, the best context last, next to the question; greedy
generation when there is no context) and is scored on answers (exact match, token F1 by question type) and on its
contexts (context precision@k, context recall, faithfulness; :mod:`labkit.retrieval.advanced.rag_eval`).
Techniques (the reader cannot write paraphrases, so rewrites are templates, stated as such):

* ``plain``: the question's MiniLM embedding, top-k sentences;
* ``keywords``: the template keyword rewrite; ``fusion``: RAG-Fusion, the rankings of the question, its
  keyword rewrite and its statement stub fused by RRF; ``hybrid``: BM25 and dense fused by RRF;
* ``hyde``: the mean of the question's and one hypothetical document's embeddings, the document being the
  statement stub completed with the reader's closed-book guess; ``hyde_gold``: the same with the gold answer
  (an upper bound: what a model that already knew the answer would write);
* ``flare@θ``: answer closed-book, retrieve (query: the question plus the draft's confident tokens) only when
  a token's probability is below θ; ``selfrag``: one answer per top-3 sentence, the best by a critic score.

Chunking: each English article chunked by every mode, size and overlap of :data:`CHUNKING`, chunks embedded
with MiniLM; recall (the gold facts stated in the top-2 chunks) on the English questions and the reader's exact
match on the single-fact ones. Command (deterministic; about 4 CPU-minutes on one thread)::

    python -m labkit.experiments.advanced_rag [--out DIR]

writes ``data/advanced_rag/results.json`` and ``data/advanced_rag/query_emb.npy`` (float16 embeddings of the
rewrites and hypothetical documents, rows listed in results.json, so the notebook needs no encoder).
"""
from __future__ import annotations

import argparse
import random
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from labkit.core.io import atomic_path, atomic_write_json, read_json
from labkit.datasets.world import article_text, load_corpus
from labkit.experiments.hard_negatives import OUT_DIR
from labkit.experiments.reader import load_reader, retrieve, score_answers, world_retrieval
from labkit.retrieval import BM25, chunk_text, encode, tokenize
from labkit.retrieval.advanced import (LMReader, context_precision_at_k, context_recall, fact_questions, faithfulness,
                                       format_qa_pairs, fused_dense_ranking, hyde_vector, multi_queries,
                                       parse_qa_pairs, rag_fusion, selfrag_score, statement_stub)

__all__ = ["RUN", "CHUNKING", "RESULTS_PATH", "relevant", "contexts_of", "pipeline_scores", "load_results", "main"]

RUN: dict[str, Any] = dict(k=2, depth=20, thetas=[0.0, 0.2, 0.4, 0.6, 0.8, 0.95, 1.01], testset=40, seed=0)
#: (mode, size in characters, overlap) of the chunking comparison.
CHUNKING: list[tuple[str, int, int]] = [(m, s, o) for m in ("fixed", "recursive", "sentence") for s in (100, 200, 400)
                                        for o in (0, s // 5)] + [("markdown", 400, 0)]
RESULTS_PATH: Path = OUT_DIR / "results.json"
_CMD = "python -m labkit.experiments.advanced_rag"


def relevant(text: str, facts: Sequence[Sequence[str]]) -> bool:
    """A context is relevant when it states one of the gold facts (names its subject and object)."""
    return context_recall(facts, [text]) > 0


def contexts_of(top: Sequence[int], texts: Sequence[str]) -> list[str]:
    """The reader's context: the top texts, best one last (nearest the question; a long prompt loses its start)."""
    return [texts[j] for j in reversed(list(top))]


def pipeline_scores(qs: Sequence[dict[str, Any]], answers: Sequence[str], ctx: Sequence[Sequence[str]],
                    ranked: Sequence[Sequence[str]] | None) -> dict[str, Any]:
    """Answer scores by type plus context precision@k, context recall and faithfulness (means over questions;
    faithfulness over the non-empty answers)."""
    res = score_answers(qs, answers)
    en = [i for i, q in enumerate(qs) if q["type"] != "global"]
    if ranked is not None:
        res["context_precision"] = round(float(np.mean([context_precision_at_k(
            [relevant(t, qs[i]["facts"]) for t in ranked[i]], RUN["k"]) for i in en])), 6)
        res["context_recall"] = round(float(np.mean([context_recall(qs[i]["facts"], ctx[i]) for i in en])), 6)
    f = [faithfulness(a, c) for a, c in zip(answers, ctx)]
    res["faithfulness"] = round(float(np.nanmean(f)), 6) if not all(np.isnan(f)) else None
    return res


def _run(reader: LMReader, qs: Sequence[dict[str, Any]], ranks: np.ndarray, texts: Sequence[str]) -> dict[str, Any]:
    ctx = [contexts_of(r[:RUN["k"]], texts) for r in ranks]
    ans = reader.read_many([q["question"] for q in qs], ctx)
    res = pipeline_scores(qs, [a.text for a in ans], ctx, [[texts[j] for j in r[:RUN["k"]]] for r in ranks])
    res["top"] = [[int(j) for j in r[:RUN["k"]]] for r in ranks]
    return res


def techniques(reader: LMReader) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every query-side pipeline on the shipped questions → ``(results, embeddings to ship)``."""
    qs, sents, s_emb, q_emb = world_retrieval()
    texts = [s for _, s in sents]
    depth = RUN["depth"]
    closed = reader.answer_many([q["question"] for q in qs], [[] for _ in qs])
    variants = [multi_queries(q["question"]) for q in qs]
    flat = [v for vs in variants for v in vs[1:]]
    hypo = [f"{statement_stub(q['question']) or q['question']} {a.text}" for q, a in zip(qs, closed)]
    hypo_gold = [f"{statement_stub(q['question']) or q['question']} {q['answer']}" for q in qs]
    emb = encode(flat + hypo + hypo_gold).astype(np.float16).astype(np.float32)   # what query_emb.npy holds
    v_emb, h_emb, g_emb = emb[:len(flat)], emb[len(flat):len(flat) + len(qs)], emb[len(flat) + len(qs):]
    plain = retrieve(q_emb, s_emb, depth)
    starts = np.cumsum([0] + [len(v) - 1 for v in variants])
    kw = retrieve(v_emb[starts[:-1]], s_emb, depth)
    fused = [fused_dense_ranking(np.vstack([q_emb[i:i + 1], v_emb[starts[i]:starts[i + 1]]]), s_emb, depth=depth,
                                 top=depth) for i in range(len(qs))]
    bm = BM25([tokenize(t) for t in texts])
    hybrid = [rag_fusion([[j for j, _ in bm.search(tokenize(q["question"]), depth)], plain[i].tolist()], top=depth)
              for i, q in enumerate(qs)]
    hyde = np.stack([retrieve(hyde_vector(q_emb[i], h_emb[i:i + 1]), s_emb, depth)[0] for i in range(len(qs))])
    hyde_g = np.stack([retrieve(hyde_vector(q_emb[i], g_emb[i:i + 1]), s_emb, depth)[0] for i in range(len(qs))])
    out: dict[str, Any] = {"closed_book": pipeline_scores(qs, [a.text for a in closed], [[] for _ in qs], None)}
    for name, r in (("plain", plain), ("keywords", kw), ("fusion", np.array(fused)), ("hybrid", np.array(hybrid)),
                    ("hyde", hyde), ("hyde_gold", hyde_g)):
        out[name] = _run(reader, qs, np.asarray(r), texts)
    out["flare"] = _flare(reader, qs, closed, q_emb, s_emb, texts)
    out["selfrag"] = _selfrag(reader, qs, plain, q_emb, s_emb, texts)
    out["closed_book"]["min_prob"] = [round(a.min_prob, 6) for a in closed]
    out["examples"] = {"variants": variants[:3], "hypothetical": hypo[:3]}
    return out, {"rows": {"rewrites": len(flat), "hypothetical": len(qs), "hypothetical_gold": len(qs)}, "emb": emb}


def _flare(reader: LMReader, qs: Sequence[dict[str, Any]], closed: Sequence[Any], q_emb: np.ndarray,
           s_emb: np.ndarray, texts: Sequence[str]) -> dict[str, Any]:
    """FLARE-direct at each θ: retrieval fires when a draft token's probability < θ; the search query is the
    question's embedding (the masked draft has no extra words here: drafts are 1–4 tokens)."""
    ranks = retrieve(q_emb, s_emb, RUN["k"])
    ctx = [contexts_of(r, texts) for r in ranks]
    with_ctx = reader.read_many([q["question"] for q in qs], ctx)
    out = {}
    for th in RUN["thetas"]:
        fire = [any(p < th for p in a.probs) for a in closed]
        ans = [w.text if f else c.text for f, w, c in zip(fire, with_ctx, closed)]
        s = score_answers(qs, ans)
        out[str(th)] = {"exact_match": s["exact_match"], "retrieval_rate": round(float(np.mean(fire)), 6)}
    return out


def _selfrag(reader: LMReader, qs: Sequence[dict[str, Any]], plain: np.ndarray, q_emb: np.ndarray,
             s_emb: np.ndarray, texts: Sequence[str], n: int = 3) -> dict[str, Any]:
    """One answer per top-n sentence; pick the best :func:`selfrag_score` (log p of the answer, cosine
    relevance clipped to [0, 1], support = the answer is in the sentence)."""
    cands = [[(j, None) for j in plain[i][:n]] for i in range(len(qs))]
    flat_q = [q["question"] for q, c in zip(qs, cands) for _ in c]
    flat_c = [[texts[j]] for c in cands for j, _ in c]
    ans = reader.read_many(flat_q, flat_c)
    picks, ctx = [], []
    for i, c in enumerate(cands):
        best = max(range(n), key=lambda m: selfrag_score(
            ans[i * n + m].mean_logprob * len(ans[i * n + m].probs), float(np.clip(q_emb[i] @ s_emb[c[m][0]], 0, 1)),
            float(faithfulness(ans[i * n + m].text, [texts[c[m][0]]]) == 1.0)))
        picks.append(ans[i * n + best].text)
        ctx.append([texts[c[best][0]]])
    return pipeline_scores(qs, picks, ctx, None)


def chunking(reader: LMReader) -> list[dict[str, Any]]:
    """Every (mode, size, overlap) of :data:`CHUNKING`: chunks, recall of the top-2 chunks (English questions)
    and the reader's exact match with them as context (single-fact questions)."""
    qs, _, _, q_emb = world_retrieval()
    corpus = load_corpus()
    arts = sorted({p["article"] for p in corpus if p["lang"] == "en"}, key=lambda a: [p["article"] for p in corpus].index(a))
    docs = [article_text(corpus, a) for a in arts]
    en = [i for i, q in enumerate(qs) if q["type"] in ("single", "multi", "comparison")]
    single = [i for i in en if qs[i]["type"] == "single"]
    out = []
    for mode, size, overlap in CHUNKING:
        chunks = [c for d in docs for c in chunk_text(d, size, overlap, mode=mode)]
        top = retrieve(q_emb, encode(chunks), RUN["k"])
        recall = np.mean([context_recall(qs[i]["facts"], [chunks[j] for j in top[i]]) for i in en])
        ans = reader.read_many([qs[i]["question"] for i in single], [contexts_of(top[i], chunks) for i in single])
        em = score_answers([qs[i] for i in single], [a.text for a in ans])["exact_match"]["all"]
        out.append({"mode": mode, "size": size, "overlap": overlap, "n_chunks": len(chunks),
                    "mean_chars": round(float(np.mean([len(c) for c in chunks])), 2),
                    "recall": round(float(recall), 6), "exact_match_single": em})
    return out


def generated_testset(reader: LMReader) -> dict[str, Any]:
    """A test set generated from the corpus in the notes' format (template questions standing in for the
    LLM's), parsed back with :func:`parse_qa_pairs`, answered by the plain pipeline."""
    _, sents, s_emb, _ = world_retrieval()
    texts = [s for _, s in sents]
    rng = random.Random(RUN["seed"])
    fq = fact_questions(load_corpus(), rng)
    pick = rng.sample(fq, RUN["testset"])
    raw = format_qa_pairs([(x["question"], x["answer"]) for x in pick])
    pairs = parse_qa_pairs(raw, num_questions=RUN["testset"])
    top = retrieve(encode([q for q, _ in pairs]), s_emb, RUN["k"])
    qs = [{"type": "generated", "answer": a, "answer_aliases": [], "facts": [x["fact"]]} for (_, a), x in zip(pairs, pick)]
    ctx = [contexts_of(r, texts) for r in top]
    ans = reader.read_many([q for q, _ in pairs], ctx)
    res = pipeline_scores(qs, [a.text for a in ans], ctx, [[texts[j] for j in r] for r in top])
    res["raw_head"] = raw[:400]
    res["pairs"] = pairs
    return res


def load_results(path: str | Path | None = None) -> dict[str, Any]:
    """``data/advanced_rag/results.json`` (see :func:`main`)."""
    return read_json(Path(path or RESULTS_PATH), regenerate=_CMD)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m labkit.experiments.advanced_rag [--out DIR] [--skip-chunking] [--reader DIR]``."""
    ap = argparse.ArgumentParser(prog="python -m labkit.experiments.advanced_rag", description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(OUT_DIR))
    ap.add_argument("--skip-chunking", action="store_true")
    ap.add_argument("--reader", default=None, help="reader checkpoint folder (default data/reader)")
    args = ap.parse_args(list(argv) if argv is not None else None)
    torch.set_num_threads(1)
    reader = load_reader(args.reader)
    tech, emb = techniques(reader)
    res = {"run": RUN, "techniques": tech, "testset": generated_testset(reader), "rows": emb["rows"],
           "chunking": [] if args.skip_chunking else chunking(reader)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "query_emb.npy") as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, emb["emb"].astype(np.float16))
    atomic_write_json(out / "results.json", res)
    print({k: v["exact_match"]["all"] for k, v in tech.items() if isinstance(v, dict) and "exact_match" in v})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
