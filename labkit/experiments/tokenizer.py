"""Train the course's shipped tokenizer (chapter 02): byte-level BPE, vocabulary 1024, on the Shakespeare
training split; writes ``data/tokenizer/shakespeare_bpe.json`` (deterministic, byte-identical)::

    python -m labkit.experiments.tokenizer
"""
from __future__ import annotations

import sys

from labkit.datasets.shakespeare import load_shakespeare
from labkit.tokenizer.bpe import BPETokenizer
from labkit.tokenizer.shipped import SHAKESPEARE_TOKENIZER, SHAKESPEARE_VOCAB_SIZE

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """``python -m labkit.experiments.tokenizer``: train the shipped tokenizer on the Shakespeare training split."""
    text = load_shakespeare("train")
    tok = BPETokenizer.train(text, SHAKESPEARE_VOCAB_SIZE)
    path = tok.save(SHAKESPEARE_TOKENIZER)
    val = load_shakespeare("val")
    n = len(tok.encode(val))
    print(f"wrote {path}: vocab {tok.vocab_size}, {len(tok.merges)} merges; "
          f"val: {len(val.encode()):,} bytes -> {n:,} tokens ({len(val.encode()) / n:.3f} bytes/token)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
