"""Build the fictional world's shipped files (chapters 18-20): the text (``labkit.datasets.world``) and its
cached MiniLM embeddings (which need the retrieval layer, hence this experiments module).

    python -m labkit.experiments.world --seed 0 --out data/world --embed
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from labkit.core.io import atomic_path
from labkit.datasets.world.io import WORLD_DIR, generate, load_corpus, load_questions, sentences
from labkit.retrieval.dense import load_encoder

__all__ = ["embed", "main"]


def embed(out: str | Path = WORLD_DIR) -> dict[str, Path]:
    """Cache MiniLM embeddings (float32, L2-normalised) of every passage, every question and every sentence, each sentence
    prefixed with its article title ("Kerec Ellvale: He joined ...") so pronoun sentences keep their subject."""
    out = Path(out)
    corpus = load_corpus(out)
    enc = load_encoder()
    pe = enc.encode([p["text"] for p in corpus], batch_size=32, normalize_embeddings=True,
                    convert_to_numpy=True).astype(np.float32)
    sents = [(i, f"{p['title']}: {s}") for i, p in enumerate(corpus) for s in sentences(p["text"])]
    se = enc.encode([s for _, s in sents], batch_size=64, normalize_embeddings=True,
                    convert_to_numpy=True).astype(np.float32)
    qe = enc.encode([q["question"] for q in load_questions(out)], batch_size=64, normalize_embeddings=True,
                    convert_to_numpy=True).astype(np.float32)
    paths = {"passages": out / "passage_emb.npy", "questions": out / "question_emb.npy",
             "sentences": out / "sentence_emb.npz"}
    for key, arr in (("passages", pe), ("questions", qe)):
        with atomic_path(paths[key]) as tmp:
            np.save(tmp, arr)
    with atomic_path(paths["sentences"]) as tmp:
        np.savez(tmp, emb=se, passage=np.array([i for i, _ in sents]))
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m labkit.experiments.world", description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(WORLD_DIR))
    ap.add_argument("--embed", action="store_true", help="also cache MiniLM embeddings (needs ~20 CPU-s)")
    args = ap.parse_args(argv)
    for k, p in generate(args.seed, args.out).items():
        print(f"wrote {k}: {p}")
    if args.embed:
        for k, p in embed(args.out).items():
            print(f"wrote {k}: {p}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
