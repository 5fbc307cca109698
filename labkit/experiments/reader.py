"""The reader of chapter 19: the course's tiny LLaMA fine-tuned to answer from retrieved sentences.

Training data: template questions about single facts of **other worlds** (seeds 1 … ``worlds``, never the
shipped world 0), each with 1–3 context sentences (the gold one and distractors), a few closed-book
(:func:`labkit.retrieval.advanced.training_records`); records over the model's 128-token window are dropped.
The loop is chapter 12's :func:`labkit.finetune.sft.train_sft` (packed rows, AdamW, warm-up + cosine), on one
CPU thread. The trained model is stored in float16 (half the bytes) and every number below is measured on
the stored weights, on the shipped world's 107 questions, in three settings:

* closed-book: no context (the reader never saw this world: a floor);
* gold: the sentences that state the question's facts;
* retrieved: the top-``k`` sentences by MiniLM cosine (the shipped sentence and question embeddings), the
  best one last (next to the question).

The reader *reads* (:meth:`LMReader.read_many`): it scores every candidate span of the context (names and
years) by the model's log-probability and returns the best; only without context does it generate freely.
``gold_generative`` records free greedy generation with the gold sentences too (the 0.92 M model does not
learn to copy names token by token in this budget: that is why the chapter's reader is extractive).

Command (deterministic)::

    python -m labkit.experiments.reader [--steps N] [--out DIR] [--skip-training]

writes ``data/reader/model.safetensors`` + ``config.json`` (a labkit checkpoint, no tokenizer: it is
data/tiny_llama's) and ``data/reader/results.json``.
"""
from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from labkit.core.io import atomic_write_json, read_json
from labkit.core.paths import DATA
from labkit.core.repro import seed_everything
from labkit.datasets.world import WORLD_DIR, load_corpus, load_questions
from labkit.finetune import sft
from labkit.model import Llama, load_checkpoint, load_pretrained, save_checkpoint
from labkit.evaluation import exact_match, token_f1
from labkit.retrieval.advanced import LMReader, gold_sentences, training_records, world_sentences

__all__ = ["RUN", "READER_DIR", "RESULTS_PATH", "training_examples", "train_reader", "load_reader",
           "load_results", "world_retrieval", "retrieve", "score_answers", "main"]

#: Settings of the shipped run.
RUN: dict[str, Any] = dict(worlds=30, steps=600, batch_size=16, max_len=128, lr=3e-3, warmup=50, seed=0,
                           closed_book=0.05, rename=0.5, k=2)
READER_DIR: Path = DATA / "reader"
RESULTS_PATH: Path = READER_DIR / "results.json"
_CMD = "python -m labkit.experiments.reader"


def training_examples(tokenizer: Any) -> tuple[list[dict[str, list[int]]], dict[str, int]]:
    """Encoded training records (≤ ``max_len`` tokens) and counts: records, dropped as test questions, too long."""
    test_q = [q["question"] for q in load_questions()]
    recs, dropped = training_records(range(1, RUN["worlds"] + 1), exclude=test_q,
                                     closed_book=RUN["closed_book"], rename=RUN["rename"], seed=RUN["seed"])
    enc = [sft.encode_example(r, tokenizer) for r in recs]
    keep = [e for e in enc if len(e["input_ids"]) <= RUN["max_len"]]
    return keep, {"records": len(recs), "dropped_test_questions": dropped, "dropped_too_long": len(enc) - len(keep)}


def train_reader(steps: int | None = None, *, schedule_steps: int | None = None,
                 progress: bool = True) -> tuple[Llama, Any, list[float], dict[str, int]]:
    """Fine-tune the shipped base model as a reader → ``(model, tokenizer, losses, counts)``.

    ``steps`` (default ``RUN["steps"]``) with ``schedule_steps`` = the shipped run's length replays its first
    steps exactly (the test of the shipped log)."""
    seed_everything(RUN["seed"])
    model, tok = load_pretrained()
    examples, counts = training_examples(tok)
    losses = sft.train_sft(model, examples, steps=steps or RUN["steps"], batch_size=RUN["batch_size"],
                           max_len=RUN["max_len"], lr=RUN["lr"], warmup=RUN["warmup"], seed=RUN["seed"],
                           schedule_steps=schedule_steps, progress=progress)
    return model, tok, losses, counts


def load_reader(root: str | Path | None = None, *, max_new_tokens: int = 12) -> LMReader:
    """The shipped reader (``data/reader``, checked against data/MANIFEST) with data/tiny_llama's tokenizer."""
    root = Path(root or READER_DIR)
    model, _ = load_checkpoint(root)
    _, tok = load_pretrained()
    return LMReader(model, tok, max_new_tokens=max_new_tokens)


def load_results(path: str | Path | None = None) -> dict[str, Any]:
    """``data/reader/results.json`` (see :func:`main`)."""
    return read_json(Path(path or RESULTS_PATH), regenerate=_CMD)


def world_retrieval() -> tuple[list[dict[str, Any]], list[tuple[str, str]], np.ndarray, np.ndarray]:
    """``(questions, sentences, sentence_emb, question_emb)`` of the shipped world (embeddings: MiniLM,
    L2-normalised, from data/world; sentences: ``(passage id, "Title: sentence")`` in the same order)."""
    sents = world_sentences(load_corpus())
    s_emb = np.load(WORLD_DIR / "sentence_emb.npz")["emb"]
    q_emb = np.load(WORLD_DIR / "question_emb.npy")
    if len(sents) != len(s_emb):
        raise ValueError(f"{len(sents)} sentences but {len(s_emb)} embeddings; regenerate data/world "
                         "(python -m labkit.experiments.world --out data/world --embed)")
    return load_questions(), sents, s_emb, q_emb


def retrieve(query_emb: np.ndarray, sentence_emb: np.ndarray, k: int) -> np.ndarray:
    """Indices of the top-``k`` sentences per query by cosine (inner product of normalised rows), (n, k);
    ties break by index."""
    scores = np.atleast_2d(query_emb) @ sentence_emb.T
    return np.stack([np.lexsort((np.arange(scores.shape[1]), -row))[:k] for row in scores])


def score_answers(questions: Sequence[dict[str, Any]], answers: Sequence[str]) -> dict[str, Any]:
    """Exact match and token F1, overall and per question type (``by_type``), plus the answers."""
    em: dict[str, list[float]] = defaultdict(list)
    f1: dict[str, list[float]] = defaultdict(list)
    for q, a in zip(questions, answers):
        gold = [q["answer"], *q["answer_aliases"]]
        for key in ("all", q["type"]):
            em[key].append(exact_match(a, gold))
            f1[key].append(token_f1(a, gold))
    return {"exact_match": {k: round(float(np.mean(v)), 6) for k, v in em.items()},
            "f1": {k: round(float(np.mean(v)), 6) for k, v in f1.items()},
            "answers": list(answers)}


def evaluate(reader: LMReader, k: int) -> dict[str, Any]:
    """Closed-book, gold-sentence and retrieved (top-k, best last) answers to the shipped questions, read with
    :meth:`LMReader.read_many` (the best-scored span of the context; greedy generation without context), and
    ``gold_generative``: greedy generation with the gold sentences (what the reader writes when not restricted
    to the context's spans)."""
    qs, sents, s_emb, q_emb = world_retrieval()
    top = retrieve(q_emb, s_emb, k)
    questions = [q["question"] for q in qs]
    contexts = {"closed_book": [[] for _ in qs], "gold": [gold_sentences(q, sents) for q in qs],
                "retrieved": [[sents[j][1] for j in reversed(row)] for row in top]}
    out = {}
    for name, ctx in contexts.items():
        ans = reader.read_many(questions, ctx)
        out[name] = score_answers(qs, [a.text for a in ans])
        out[name]["min_prob"] = [round(a.min_prob, 6) for a in ans]
    out["retrieved"]["top"] = top.tolist()
    out["gold_generative"] = score_answers(qs, [a.text for a in reader.answer_many(questions, contexts["gold"])])
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m labkit.experiments.reader [--steps N] [--out DIR] [--skip-training]``."""
    ap = argparse.ArgumentParser(prog="python -m labkit.experiments.reader", description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(READER_DIR))
    ap.add_argument("--steps", type=int, default=None, help=f"training steps (default {RUN['steps']})")
    ap.add_argument("--skip-training", action="store_true",
                    help="re-evaluate the weights in --out, keeping the logged run (losses, counts, seconds)")
    args = ap.parse_args(list(argv) if argv is not None else None)
    torch.set_num_threads(1)
    out = Path(args.out)
    if args.skip_training:
        old = load_results(out / "results.json")
        res = {k: old[k] for k in ("run", "counts", "losses", "train_seconds")}
        reader = load_reader(out)
    else:
        t0 = time.perf_counter()
        model, tok, losses, counts = train_reader(args.steps)
        seconds = time.perf_counter() - t0
        save_checkpoint(model.half(), None, out)
        reader = LMReader(model.float(), tok)       # the stored float16 weights, upcast: what load_reader gives
        res = {"run": {**RUN, "steps": args.steps or RUN["steps"]}, "counts": counts,
               "losses": [round(x, 6) for x in losses], "train_seconds": round(seconds, 1)}
    res.update(evaluate(reader, RUN["k"]))
    atomic_write_json(out / "results.json", res)
    print({k: res[k]["exact_match"] for k in ("closed_book", "gold", "retrieved", "gold_generative")})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
