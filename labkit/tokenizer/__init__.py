"""Layer 2, tokenizer (chapter 02): byte-level BPE, regex pre-splitting, special tokens, streaming encode,
tiktoken parity.
"""
from __future__ import annotations

from .bpe import FORMAT_NAME, FORMAT_VERSION, BPETokenizer  # noqa: F401
from .cl100k import from_tiktoken  # noqa: F401
from .pretokenize import COURSE_SPECIAL_TOKENS, GPT2_SPLIT_PATTERN, GPT4_SPLIT_PATTERN, split_chunks  # noqa: F401
from .shipped import SHAKESPEARE_TOKENIZER, SHAKESPEARE_VOCAB_SIZE, load_shakespeare_tokenizer  # noqa: F401
from .stream import BUFFER_CHARS, STREAMABLE_PATTERNS, stream_pretokens  # noqa: F401
from .train import get_pair_counts, merge_pair, train_merges_fast, train_merges_slow  # noqa: F401

__all__ = ["GPT4_SPLIT_PATTERN", "GPT2_SPLIT_PATTERN", "COURSE_SPECIAL_TOKENS", "split_chunks", "get_pair_counts", "merge_pair", "train_merges_slow", "train_merges_fast", "FORMAT_NAME", "FORMAT_VERSION", "BPETokenizer", "from_tiktoken", "SHAKESPEARE_VOCAB_SIZE", "SHAKESPEARE_TOKENIZER", "load_shakespeare_tokenizer", "BUFFER_CHARS", "STREAMABLE_PATTERNS", "stream_pretokens"]
