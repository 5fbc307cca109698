"""Pretrain the shipped tiny LLaMA on Shakespeare (chapter 07) and write ``data/tiny_llama/``.

The shipped checkpoint ``data/tiny_llama/`` is regenerated, bit for bit, by::

    python -m labkit.experiments.pretrain     # defaults below = the shipped run; about 21 CPU-minutes

It runs on one thread (``torch.set_num_threads(1)``), so the float reductions, and hence every weight,
do not depend on the machine's core count. The run's log (losses, settings, final validation loss) is
written next to the weights as ``train_log.json``.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

from labkit.model.checkpoint import PRETRAINED_DIR, save_checkpoint
from labkit.model.config import LlamaConfig
from labkit.model.llama import Llama
from labkit.tokenizer.bpe import BPETokenizer
from labkit.tokenizer.shipped import load_shakespeare_tokenizer
from labkit.train.loop import corpus_tokens, evaluate, train_lm, unigram_loss

__all__ = ["SHIPPED_CONFIG", "SHIPPED_TRAINING", "main"]


#: The shipped model: 4 layers, width 128, 4 query heads sharing 2 KV heads (GQA), SwiGLU 384, tied embeddings.
SHIPPED_CONFIG: dict[str, Any] = dict(vocab_size=1024, dim=128, n_layers=4, n_heads=4, n_kv_heads=2,
                                      hidden_dim=384, max_seq_len=128, tie_embeddings=True)
#: The shipped run's training settings (``python -m labkit.experiments.pretrain`` defaults).
SHIPPED_TRAINING: dict[str, Any] = dict(steps=1200, batch_size=32, block_size=128, lr=3e-3, warmup=60,
                                        min_lr=3e-4, weight_decay=0.1, grad_clip=1.0, eval_every=100,
                                        eval_batches=4, seed=0)


def main(argv: list[str] | None = None) -> int:
    """``python -m labkit.experiments.pretrain``: train the shipped tiny LLaMA and write ``data/tiny_llama/``."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for k, v in SHIPPED_TRAINING.items():
        ap.add_argument(f"--{k.replace('_', '-')}", type=type(v), default=v)
    ap.add_argument("--out", type=Path, default=PRETRAINED_DIR, help="output folder")
    ap.add_argument("--tokenizer", type=Path, default=None, help="tokenizer file (default: the shipped one)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)                      # bit-for-bit the same weights on any machine
    tok = BPETokenizer.load(args.tokenizer) if args.tokenizer else load_shakespeare_tokenizer()
    config = LlamaConfig(**SHIPPED_CONFIG)
    if tok.vocab_size != config.vocab_size:
        raise ValueError(f"tokenizer vocab_size {tok.vocab_size} != SHIPPED_CONFIG vocab_size {config.vocab_size}")
    train_tokens, val_tokens = corpus_tokens(tok, "train"), corpus_tokens(tok, "val")
    torch.manual_seed(args.seed)
    model = Llama(config)
    t0, c0 = time.time(), time.process_time()
    settings = {k: getattr(args, k) for k in SHIPPED_TRAINING}
    hist = train_lm(model, train_tokens, val_tokens, **settings)
    val = evaluate(model, val_tokens, args.block_size, args.batch_size)
    wall, cpu = time.time() - t0, time.process_time() - c0
    save_checkpoint(model, tok, args.out)
    log = {"config": config.to_dict(), "training": settings, "val_loss": val,
           "val_eval": {"block_size": args.block_size, "batch_size": args.batch_size, "max_batches": None},
           "train_tokens": int(train_tokens.numel()), "val_tokens": int(val_tokens.numel()),
           "unigram_val_loss": unigram_loss(train_tokens, val_tokens, config.vocab_size),
           "history": hist}
    (args.out / "train_log.json").write_text(json.dumps(log, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}: {model.num_parameters():,} params, val loss {val:.4f} "
          f"(ppl {math.exp(val):.2f}); {cpu:.0f} CPU-s, {wall:.0f} s wall")
    return 0


if __name__ == "__main__":
    sys.exit(main())
