"""Layer 2, tokenizer (chapter 02): byte-level BPE, regex pre-splitting, special tokens, tiktoken parity.
"""
from __future__ import annotations

from .bpe import (  # noqa: F401
    COURSE_SPECIAL_TOKENS,
    FORMAT_NAME,
    FORMAT_VERSION,
    GPT2_SPLIT_PATTERN,
    GPT4_SPLIT_PATTERN,
    SHAKESPEARE_TOKENIZER,
    SHAKESPEARE_VOCAB_SIZE,
    BPETokenizer,
    from_tiktoken,
    get_pair_counts,
    load_shakespeare_tokenizer,
    merge_pair,
    split_chunks,
    train_merges_fast,
    train_merges_slow,
)

__all__ = ['GPT4_SPLIT_PATTERN', 'GPT2_SPLIT_PATTERN', 'COURSE_SPECIAL_TOKENS', 'FORMAT_NAME', 'FORMAT_VERSION', 'BPETokenizer', 'get_pair_counts', 'merge_pair', 'train_merges_slow', 'train_merges_fast', 'split_chunks', 'from_tiktoken', 'load_shakespeare_tokenizer', 'SHAKESPEARE_TOKENIZER', 'SHAKESPEARE_VOCAB_SIZE']
