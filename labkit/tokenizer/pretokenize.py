"""Pre-splitting (预切分) for byte-level BPE (chapter 02): the GPT-2 and GPT-4 regexes and the special tokens.

Before BPE sees any bytes, the text is cut into chunks by a regex, and merges never cross a chunk
boundary (so ``" the"`` and ``"the."`` cannot fuse into one token)::

    split_chunks("Hello world's 2024!!") == ['Hello', ' world', "'s", ' ', '202', '4', '!!']

Special-token strings (``<|endoftext|>`` ...) are cut out of training text first, so they are never learned
as ordinary text; :data:`COURSE_SPECIAL_TOKENS` are the ones the course registers.
"""
from __future__ import annotations

from typing import Iterable

import regex

__all__ = ["GPT4_SPLIT_PATTERN", "GPT2_SPLIT_PATTERN", "COURSE_SPECIAL_TOKENS", "split_chunks"]


#: The GPT-4 (cl100k_base) pre-split regex, exactly as tiktoken uses it. Pieces: English contractions
#: ('s 't 're ...), a word with at most one leading non-letter (usually the space), numbers of 1–3
#: digits, punctuation runs with an optional leading space, and whitespace runs (newlines kept apart).
GPT4_SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
#: The GPT-2 pre-split regex (case-sensitive contractions, numbers of any length).
GPT2_SPLIT_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""

#: Special tokens (特殊标记) registered for the course: document end, padding and the chat template roles.
COURSE_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>", "<|pad|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>",
)


def _compile(pattern: str) -> regex.Pattern:
    if not isinstance(pattern, str):
        raise TypeError(f"pattern must be a regex string (e.g. GPT4_SPLIT_PATTERN), got {type(pattern).__name__}")
    try:
        return regex.compile(pattern)
    except regex.error as e:
        raise ValueError(f"pattern is not a valid regex: {e}; use GPT4_SPLIT_PATTERN or fix the expression") from e


def _special_regex(special_tokens: Iterable[str]) -> regex.Pattern:
    """One capturing alternation of the special-token strings, longest first, so that at one position the
    longest special token wins (``<|endoftext|>`` before a hypothetical ``<|end``)."""
    return regex.compile("(" + "|".join(regex.escape(s) for s in sorted(special_tokens, key=len, reverse=True)) + ")")


def _strip_specials(text: str, special_tokens: Iterable[str]) -> list[str]:
    """Split ``text`` around special-token strings so they are never learned as ordinary text."""
    specials = [s for s in special_tokens if s]
    if not specials:
        return [text]
    return [part for part in _special_regex(specials).split(text) if part and part not in specials]


def split_chunks(text: str, pattern: str | None = GPT4_SPLIT_PATTERN) -> list[str]:
    """Pre-split (预切分) ``text`` with the regex; ``pattern=None`` keeps the text as one chunk.

    ``split_chunks("Hello world's 2024!!")`` → ``['Hello', ' world', "'s", ' ', '202', '4', '!!']``.
    BPE merges never cross a chunk boundary.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be str, got {type(text).__name__}")
    if pattern is None:
        return [text] if text else []
    return _compile(pattern).findall(text)
