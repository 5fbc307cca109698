"""The course's shipped tokenizer (chapter 02, used from chapter 07 on): byte-level BPE trained on Shakespeare.

Vocabulary 1024 (256 bytes + 762 merges + the 6 course special tokens), GPT-4 pre-split, trained on
``data/shakespeare/train.txt`` and shipped in ``data/tokenizer/shakespeare_bpe.json``. Regenerate it with
``python -m labkit.experiments.tokenizer``; load it with :func:`load_shakespeare_tokenizer`.
"""
from __future__ import annotations

from labkit.core.paths import DATA, data_path
from labkit.tokenizer.bpe import BPETokenizer

__all__ = ["SHAKESPEARE_VOCAB_SIZE", "SHAKESPEARE_TOKENIZER", "load_shakespeare_tokenizer"]


#: Vocabulary size of the shipped tokenizer: 256 bytes + 762 merges + 6 special tokens.
SHAKESPEARE_VOCAB_SIZE = 1024
#: Where the shipped tokenizer file lives.
SHAKESPEARE_TOKENIZER = DATA / "tokenizer" / "shakespeare_bpe.json"


def load_shakespeare_tokenizer() -> BPETokenizer:
    """The course tokenizer (vocab 1024, GPT-4 pre-split, course special tokens), trained on
    ``data/shakespeare/train.txt`` by ``python -m labkit.experiments.tokenizer``."""
    return BPETokenizer.load(data_path("tokenizer", "shakespeare_bpe.json"))
