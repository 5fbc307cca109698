"""Train the draft model for speculative decoding (chapter 09) and write ``data/draft/``.

A 2-layer, width-64 LLaMA (same family, same byte-level BPE tokenizer, same Shakespeare data as the course
model ``data/tiny_llama``), small enough to propose tokens cheaply for the 4-layer target::

    python -m labkit.experiments.draft        # defaults = the shipped run; about 80 CPU-seconds on one thread

One thread (``torch.set_num_threads(1)``) so the float reductions, hence every weight, do not depend on the
machine's core count. Writes ``model.safetensors`` + ``config.json`` (no tokenizer: the draft uses the
target's) and ``train_log.json`` (settings, loss history, final validation loss).
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

from labkit.core.io import atomic_write_json
from labkit.core.paths import DATA
from labkit.model.checkpoint import save_checkpoint
from labkit.model.config import LlamaConfig
from labkit.model.llama import Llama
from labkit.tokenizer.shipped import load_shakespeare_tokenizer
from labkit.train.loop import corpus_tokens, evaluate, train_lm

__all__ = ["DRAFT_DIR", "DRAFT_CONFIG", "DRAFT_TRAINING", "train_draft", "main"]

#: Where the shipped draft checkpoint lives.
DRAFT_DIR = DATA / "draft"
#: The draft: 2 layers, width 64, 4 query heads sharing 2 KV heads, SwiGLU 192, tied embeddings.
DRAFT_CONFIG: dict[str, Any] = dict(vocab_size=1024, dim=64, n_layers=2, n_heads=4, n_kv_heads=2,
                                    hidden_dim=192, max_seq_len=128, tie_embeddings=True)
#: The shipped run's training settings (``python -m labkit.experiments.draft`` defaults).
DRAFT_TRAINING: dict[str, Any] = dict(steps=600, batch_size=32, block_size=128, lr=4e-3, warmup=40,
                                      min_lr=4e-4, weight_decay=0.1, grad_clip=1.0, eval_every=100,
                                      eval_batches=4, seed=0)


def train_draft(stop_after: int | None = None, **overrides: Any) -> tuple[Llama, dict[str, list[float]]]:
    """Build the draft (seed ``seed``) and train it with :func:`labkit.train.train_lm` → ``(model, history)``.

    ``stop_after=n`` replays only the first n steps of the shipped run (the cheap check of the shipped log).
    """
    settings = {**DRAFT_TRAINING, **overrides}
    tok = load_shakespeare_tokenizer()
    train_tokens, val_tokens = corpus_tokens(tok, "train"), corpus_tokens(tok, "val")
    torch.manual_seed(settings["seed"])
    model = Llama(LlamaConfig(**DRAFT_CONFIG))
    hist = train_lm(model, train_tokens, val_tokens, progress=False, stop_after=stop_after, **settings)
    return model, hist


def main(argv: list[str] | None = None) -> int:
    """``python -m labkit.experiments.draft``: train the draft model and write ``data/draft/``."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DRAFT_DIR, help="output folder")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0, c0 = time.time(), time.process_time()
    model, hist = train_draft()
    tok = load_shakespeare_tokenizer()
    val_tokens = corpus_tokens(tok, "val")
    val = evaluate(model, val_tokens, DRAFT_TRAINING["block_size"], DRAFT_TRAINING["batch_size"])
    wall, cpu = time.time() - t0, time.process_time() - c0
    save_checkpoint(model, None, args.out)
    log = {"config": model.config.to_dict(), "training": DRAFT_TRAINING, "val_loss": val,
           "n_params": model.num_parameters(), "cpu_seconds": round(cpu), "history": hist}
    atomic_write_json(args.out / "train_log.json", log)
    print(f"wrote {args.out}: {model.num_parameters():,} params, val loss {val:.4f} "
          f"(ppl {math.exp(val):.2f}); {cpu:.0f} CPU-s, {wall:.0f} s wall")
    return 0


if __name__ == "__main__":
    sys.exit(main())
