"""Hard-negative mining on the fictional world (chapter 19): a linear query adapter on frozen MiniLM embeddings,
trained with in-batch negatives (MultipleNegativesRankingLoss) with and without mined hard negatives, and the
false-negative trap.

Fine-tuning all of MiniLM (22 M parameters) was not attempted (the chapter's precompute budget is a few CPU
minutes on a shared 2-core machine); only a 384×384 linear map on the *query* side trains (:class:`labkit.retrieval.advanced.QueryAdapter`); passages keep
their shipped embeddings (data/world/passage_emb.npy).

Queries: one template question per (sentence, fact) of the shipped corpus
(:func:`labkit.retrieval.advanced.fact_questions`), split by the fact's **subject**: every third subject
(sorted names) is held out. A training query is labelled with its *source passage* only, as a generated
test set would be; held-out queries count every passage whose triples hold the fact as relevant.
Mining takes the base retriever's best non-labelled passages; a mined passage that names the subject and the
answer is a false negative (it states the fact too). Runs: ``in_batch`` (G = 1), ``hard`` (G = 2, mined),
``hard_filtered`` (G = 2, false negatives skipped). Command (deterministic)::

    python -m labkit.experiments.hard_negatives [--out DIR]

writes ``data/advanced_rag/hard_negatives.json`` and ``data/advanced_rag/adapter.safetensors`` (the
``hard_filtered`` adapter, float16).
"""
from __future__ import annotations

import argparse
import random
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from labkit.core.io import atomic_write_bytes, atomic_write_json, read_json
from labkit.core.paths import DATA
from labkit.core.repro import seed_everything
from labkit.datasets.world import WORLD_DIR, load_corpus
from labkit.retrieval import encode, ndcg_at_k, recall_at_k
from labkit.retrieval.advanced import QueryAdapter, fact_questions, is_false_negative, mine_hard_negatives, mnrl_loss

__all__ = ["RUN", "OUT_DIR", "RESULTS_PATH", "make_queries", "train_adapter", "evaluate", "false_negative_rank",
           "load_results", "main"]

RUN: dict[str, Any] = dict(seed=0, epochs=30, batch_size=32, lr=1e-3, scale=20.0, holdout_every=3)
OUT_DIR: Path = DATA / "advanced_rag"
RESULTS_PATH: Path = OUT_DIR / "hard_negatives.json"


def make_queries(corpus: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Template queries of the shipped corpus, their labels and the subject split (see the module text)."""
    fq = fact_questions(corpus, random.Random(RUN["seed"]))
    ids = [p["id"] for p in corpus]
    subjects = sorted({q["fact"][0] for q in fq})
    held = set(subjects[::RUN["holdout_every"]])
    train = [q for q in fq if q["fact"][0] not in held]
    test = [q for q in fq if q["fact"][0] in held]
    test_text = {q["question"] for q in test}
    train = [q for q in train if q["question"] not in test_text]
    facts = {i: {tuple(t) for t in p["triples"]} for i, p in enumerate(corpus)}
    all_pos = [[i for i in range(len(ids)) if tuple(q["fact"]) in facts[i]] for q in test]
    return {"train": train, "test": test, "train_pos": [[ids.index(q["passage"])] for q in train],
            "test_pos": all_pos}


def train_adapter(q: np.ndarray, p: np.ndarray, pos: Sequence[Sequence[int]], negs: Sequence[Sequence[int]] | None,
                  ) -> tuple[QueryAdapter, list[float]]:
    """Train a :class:`QueryAdapter` with :func:`mnrl_loss`; ``negs[i]`` (one per query) or ``None`` (G = 1)."""
    seed_everything(RUN["seed"])
    ad = QueryAdapter(q.shape[1])
    opt = torch.optim.Adam(ad.parameters(), lr=RUN["lr"])
    qt, pt = torch.from_numpy(q), torch.from_numpy(p)
    g = torch.Generator().manual_seed(RUN["seed"])
    losses = []
    for _ in range(RUN["epochs"]):
        order = torch.randperm(len(q), generator=g).tolist()
        for s in range(0, len(order), RUN["batch_size"]):
            idx = order[s:s + RUN["batch_size"]]
            rows = [j for i in idx for j in ([pos[i][0]] + ([negs[i][0]] if negs is not None else []))]
            loss = mnrl_loss(ad(qt[idx]), pt[rows], scale=RUN["scale"])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(round(float(loss.detach()), 6))
    return ad, losses


def evaluate(q: np.ndarray, p: np.ndarray, pos: Sequence[Sequence[int]], adapter: QueryAdapter | None) -> dict[str, float]:
    """Held-out recall@5 and nDCG@10 of passage retrieval (cosine), with or without the adapter."""
    if adapter is not None:
        with torch.no_grad():
            q = adapter(torch.from_numpy(q)).numpy()
    ranked = np.argsort(-(q @ p.T), axis=1, kind="stable")
    r5 = np.mean([recall_at_k(r.tolist(), ps, 5) for r, ps in zip(ranked, pos)])
    n10 = np.mean([ndcg_at_k(r.tolist(), ps, 10) for r, ps in zip(ranked, pos)])
    return {"recall@5": round(float(r5), 6), "ndcg@10": round(float(n10), 6)}


def false_negative_rank(q: np.ndarray, p: np.ndarray, pairs: Sequence[tuple[int, int]],
                        adapter: QueryAdapter | None) -> float:
    """Mean 1-based rank of each detected false negative (query i, passage j) for its query: the passages
    that state the fact but were mined as negatives. Training on them pushes them down (a larger rank)."""
    if adapter is not None:
        with torch.no_grad():
            q = adapter(torch.from_numpy(q)).numpy()
    ranks = [1 + int(np.sum(q[i] @ p.T > q[i] @ p[j])) for i, j in pairs]
    return round(float(np.mean(ranks)), 6)


def load_results(path: str | Path | None = None) -> dict[str, Any]:
    """``data/advanced_rag/hard_negatives.json`` (see :func:`main`)."""
    return read_json(Path(path or RESULTS_PATH), regenerate="python -m labkit.experiments.hard_negatives")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m labkit.experiments.hard_negatives [--out DIR]``."""
    from safetensors.torch import save as st_save

    ap = argparse.ArgumentParser(prog="python -m labkit.experiments.hard_negatives", description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(OUT_DIR))
    args = ap.parse_args(list(argv) if argv is not None else None)
    torch.set_num_threads(1)
    corpus = load_corpus()
    p = np.load(WORLD_DIR / "passage_emb.npy")
    data = make_queries(corpus)
    qtr = encode([x["question"] for x in data["train"]])
    qte = encode([x["question"] for x in data["test"]])
    mined = mine_hard_negatives(qtr @ p.T, data["train_pos"], 1)
    false_neg = [is_false_negative(corpus[m[0]]["text"], x["fact"][0], x["answer"]) for m, x in zip(mined, data["train"])]
    skip = [[j for j in mine_hard_negatives(qtr[i:i + 1] @ p.T, [data["train_pos"][i]], 10)[0]
             if is_false_negative(corpus[j]["text"], x["fact"][0], x["answer"])] for i, x in enumerate(data["train"])]
    filtered = mine_hard_negatives(qtr @ p.T, data["train_pos"], 1, skip=skip)
    res: dict[str, Any] = {"run": RUN, "n_train": len(qtr), "n_test": len(qte),
                           "false_negatives": int(sum(false_neg)),
                           "false_negative_example": next(({"question": x["question"], "subject": x["fact"][0],
                                                            "answer": x["answer"], "label": x["passage"],
                                                            "mined": corpus[m[0]]["id"], "text": corpus[m[0]]["text"]}
                                                           for f, m, x in zip(false_neg, mined, data["train"]) if f), None),
                           "base": evaluate(qte, p, data["test_pos"], None), "runs": {}}
    pairs = [(i, m[0]) for i, (f, m) in enumerate(zip(false_neg, mined)) if f]
    res["base"]["false_negative_rank"] = false_negative_rank(qtr, p, pairs, None)
    adapters = {}
    for name, negs in (("in_batch", None), ("hard", mined), ("hard_filtered", filtered)):
        ad, losses = train_adapter(qtr, p, data["train_pos"], negs)
        adapters[name] = ad
        res["runs"][name] = {**evaluate(qte, p, data["test_pos"], ad),
                             "false_negative_rank": false_negative_rank(qtr, p, pairs, ad),
                             "first_losses": losses[:5], "last_loss": losses[-1]}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().half().contiguous() for k, v in adapters["hard_filtered"].state_dict().items()}
    atomic_write_bytes(out / "adapter.safetensors", st_save(sd, metadata={"format": "pt"}))
    atomic_write_json(out / "hard_negatives.json", res)
    print({k: res[k] for k in ("n_train", "n_test", "false_negatives", "base")}, {k: v["recall@5"] for k, v in res["runs"].items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
