"""Streaming encode (流式编码) (chapter 02): the pre-split of a text that arrives in pieces, in bounded memory.

Encoding a file line by line is *not* encoding it whole, because the pre-split regex groups characters across
line ends: ``"a\\n\\n  b"`` splits as ``['a', '\\n\\n', ' ', ' b']``, but its lines ``"a\\n"``, ``"\\n"``,
``"  b"`` split as ``['a', '\\n']``, ``['\\n']``, ``[' ', ' b']``. :func:`stream_pretokens` yields exactly the
pieces of ``"".join(chunks)`` for any chunking, while holding only a short tail of the text;
:meth:`BPETokenizer.encode_iterable` turns them into ids.

**The finality rule** (for :data:`GPT2_SPLIT_PATTERN` and :data:`GPT4_SPLIT_PATTERN`). Pre-split the buffer
``B`` (``n`` characters) into ``t_1 … t_k`` and emit ``t_i`` once

1. it is not the last pre-token (``i < k``), and
2. it starts at least 3 characters before the end of the buffer (``start(t_i) + 3 <= n``).

Everything from the first pre-token that fails waits for more text. Why it is exact: the regex engine decides
the pre-token at position ``p`` from the characters it reads, so appending text can change it only if deciding
it read past the end of ``B``. With these two patterns that happens in two ways only:

* a branch scans a run (letters, digits, punctuation + newlines, whitespace) that reaches the end of ``B``.
  Then the match reaches the end too: a letter/number/punctuation run is matched to its end, a trailing
  whitespace run is taken whole by ``\\s++$`` before ``\\s*[\\r\\n]`` or ``\\s+(?!\\S)`` are tried, and a
  leading space/punctuation with nothing after it is left as a one-character match. So it is the last
  pre-token, which may still grow or split (``'  '`` → ``' '`` + ``' b'``, ``'\\n'`` → ``'\\n\\n'``,
  ``'12'`` → ``'123'``): rule 1. A run that ends inside ``B`` was decided by the character after it;
* the contraction branch ``'(?:[sdmt]|ll|ve|re)`` reads up to two characters after the apostrophe. GPT-2's
  pattern splits ``"'l"`` as ``["'", 'l']`` but ``"'ll"`` as ``["'ll"]``: the *second-to-last* pre-token
  changed. A pre-token with 3 characters from its start in ``B`` was decided inside ``B``: rule 2. (GPT-4's
  pattern lets a word take one leading apostrophe, ``"'l"`` is one pre-token, so there rule 1 alone would do.)

An exhaustive check of every string of up to 6 characters over ``l e ' space \\t \\n \\r 1 . U+0301`` (every
split point) and the randomized chunkings in ``tests/test_tokenizer.py`` agree; with rule 1 alone GPT-2 fails
on ``"'l" | "l"``.

**Special tokens.** A special-token string may be cut between chunks (``"<|end"`` + ``"oftext|>"``). Specials
are matched first (longest first at a position, as :meth:`BPETokenizer.encode` does); a match starting at ``s``
is decided once ``s + L <= n`` for the longest special length ``L``. The text before it is then a complete
segment, pre-split whole, and the current segment is known up to ``n - (L - 1)`` (a special may still start
after that), where the rule above applies.

**Other patterns** (and ``pattern=None``: the whole text is one chunk) have no proved rule: each segment
between special tokens is buffered until it ends. Still exact, but memory then grows with the text.

**Memory and time.** New chunks are collected until at least ``max(buffer_chars, len(pending))`` characters
arrived, then ``pending + new`` is split once. Memory: the pending tail (the last pre-token + 2 characters,
+ ``L - 1``) plus one batch (plus the chunk being read); independent of the text length unless one pre-token
is huge (e.g. a 10 MB whitespace run, which :meth:`BPETokenizer.encode` would also hold whole). Each character
is split O(1) times on average, even when a long pending tail is carried over many chunks.
"""
from __future__ import annotations

from collections.abc import Generator, Iterable, Iterator

import regex

from labkit.tokenizer.pretokenize import GPT2_SPLIT_PATTERN, GPT4_SPLIT_PATTERN, _special_regex

__all__ = ["BUFFER_CHARS", "STREAMABLE_PATTERNS", "stream_pretokens"]


#: Split the buffer once at least this many new characters have arrived (64 k characters).
BUFFER_CHARS = 1 << 16
#: Patterns for which the finality rule is proved (see the module docstring).
STREAMABLE_PATTERNS = frozenset({GPT2_SPLIT_PATTERN, GPT4_SPLIT_PATTERN})
#: Rule 2: a pre-token is decided once the buffer holds 3 characters from its start ("'ll", "'ve", "'re").
_LOOKAHEAD = 3

Piece = tuple[str, bool]  # (text, is_special): a pre-token, or the name of a special token


def _split_all(text: str, split_regex: regex.Pattern | None) -> Iterator[Piece]:
    """The pre-tokens of a complete segment, exactly as :meth:`BPETokenizer.encode_ordinary` splits it."""
    if split_regex is None:
        if text:
            yield text, False
        return
    for m in split_regex.finditer(text):
        yield m.group(), False


def _final_pretokens(region: str, split_regex: regex.Pattern) -> Generator[Piece, None, int]:
    """Yield the pre-tokens of ``region`` (a prefix of a segment that may go on) that are final by the
    rule; return the number of characters they consumed."""
    consumed = 0
    prev = None
    for m in split_regex.finditer(region):
        if prev is not None:  # prev passed rule 2 and m follows it: rule 1
            yield prev.group(), False
            consumed = prev.end()
        if m.start() + _LOOKAHEAD > len(region):
            break
        prev = m
    return consumed


def _emit(buf: str, split_regex: regex.Pattern | None, special_re: regex.Pattern | None, hold: int,
          streamable: bool, at_end: bool) -> Generator[Piece, None, int]:
    """Yield every piece of ``buf`` that more text cannot change (all of it if ``at_end``); return how many
    characters of ``buf`` were consumed (the rest is carried over)."""
    cut = 0
    if special_re is not None:
        for m in special_re.finditer(buf):
            if not at_end and m.start() + hold >= len(buf):
                break  # a longer special token starting here may still complete
            yield from _split_all(buf[cut:m.start()], split_regex)  # the segment before it is complete
            yield m.group(), True
            cut = m.end()
    if at_end:
        yield from _split_all(buf[cut:], split_regex)
        return len(buf)
    if not streamable:
        return cut
    region = buf[cut:max(cut, len(buf) - hold)]  # no special token can start before its end
    consumed = yield from _final_pretokens(region, split_regex)
    return cut + consumed


def stream_pretokens(
    chunks: Iterable[str],
    split_regex: regex.Pattern | None,
    special_tokens: Iterable[str] = (),
    *,
    buffer_chars: int = BUFFER_CHARS,
) -> Iterator[Piece]:
    """Pre-split a text given in pieces: yields ``(text, is_special)`` in order.

    Joined, the output equals what :meth:`BPETokenizer.encode` does to ``T = "".join(chunks)``: ``T`` cut
    around the ``special_tokens`` strings (``(name, True)``), each segment between them pre-split by
    ``split_regex`` (``(pre_token, False)``; ``None``: the segment is one piece). Any chunking gives the
    same output (module docstring: the finality rule). ``buffer_chars``: see *Memory and time* there.

    ``list(stream_pretokens(["a\\n", "\\n", "  b"], regex.compile(GPT4_SPLIT_PATTERN)))`` →
    ``[('a', False), ('\\n\\n', False), (' ', False), (' b', False)]``.
    """
    if isinstance(buffer_chars, bool) or not isinstance(buffer_chars, int) or buffer_chars < 1:
        raise ValueError(f"buffer_chars must be an int >= 1 (new characters per split of the buffer, default "
                         f"{BUFFER_CHARS}), got {buffer_chars!r}")
    if isinstance(chunks, (bytes, bytearray)) or not isinstance(chunks, Iterable):
        raise TypeError(f"chunks must be an iterable of str (lines of a text file, a list of strings), got "
                        f"{type(chunks).__name__}; decode bytes first or open the file in text mode")
    specials = [s for s in special_tokens if s]
    special_re = _special_regex(specials) if specials else None
    hold = max((len(s) for s in specials), default=1) - 1  # characters at the end that may start a special
    streamable = split_regex is not None and split_regex.pattern in STREAMABLE_PATTERNS
    return _stream(iter(chunks), split_regex, special_re, hold, streamable, buffer_chars)


def _stream(chunks: Iterator[str], split_regex: regex.Pattern | None, special_re: regex.Pattern | None, hold: int,
            streamable: bool, buffer_chars: int) -> Iterator[Piece]:
    """The loop of :func:`stream_pretokens` (arguments already checked)."""
    pending, new, n_new = "", [], 0
    for chunk in chunks:
        if not isinstance(chunk, str):
            raise TypeError(f"chunks must yield str, got {type(chunk).__name__}; open the file in text mode "
                            "(open(path, encoding='utf-8')) or decode the bytes first")
        new.append(chunk)
        n_new += len(chunk)
        if n_new >= max(buffer_chars, len(pending)):  # amortized: each character is split O(1) times
            buf = pending + "".join(new)
            new, n_new = [], 0
            cut = yield from _emit(buf, split_regex, special_re, hold, streamable, at_end=False)
            pending = buf[cut:]
    yield from _emit(pending + "".join(new), split_regex, special_re, hold, streamable, at_end=True)
