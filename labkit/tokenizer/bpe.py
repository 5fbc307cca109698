"""Byte-level BPE (字节级 BPE) tokenizer (chapter 02): the :class:`BPETokenizer` class (train, encode, decode,
save/load).

Byte-level BPE starts from the 256 possible byte values, so *any* string can be encoded: there is no
unknown token (no ``[UNK]``). Training repeatedly finds the most frequent adjacent pair of ids and
replaces it by a new id; the ordered list of those merges *is* the tokenizer::

    text --regex pre-split--> chunks --UTF-8--> byte ids --apply merges in rank order--> token ids

The pieces live next to this module: the pre-split regexes and special tokens in
:mod:`labkit.tokenizer.pretokenize`, the two trainers (:func:`train_merges_slow`, :func:`train_merges_fast`)
and their pair-counting convention in :mod:`labkit.tokenizer.train`, GPT-4's merges in
:mod:`labkit.tokenizer.cl100k`, the shipped Shakespeare tokenizer in :mod:`labkit.tokenizer.shipped`, and the
streaming pre-split behind :meth:`BPETokenizer.encode_iterable` in :mod:`labkit.tokenizer.stream`.

Ids: for a tokenizer trained here, ids 0–255 are the raw bytes, merge ``i`` creates id ``256 + i`` and
the special tokens come last. :func:`from_tiktoken` keeps tiktoken's own ids (its single bytes are not
0–255 in byte order), which is why the byte → id map is stored explicitly.

File format (:meth:`BPETokenizer.save`): one human-readable JSON file, ``format`` :data:`FORMAT_NAME`,
``version`` :data:`FORMAT_VERSION`, the pattern, the special tokens and one ``[a, b, new_id, "token text"]``
row per merge in rank order.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Iterator, Literal, Sequence

from labkit.core.io import atomic_write_text
from labkit.tokenizer.pretokenize import (
    COURSE_SPECIAL_TOKENS,
    GPT4_SPLIT_PATTERN,
    _compile,
    _special_regex,
    _strip_specials,
    split_chunks,
)
from labkit.tokenizer.stream import BUFFER_CHARS, stream_pretokens
from labkit.tokenizer.train import Pair, merge_pair, train_merges_fast, train_merges_slow

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "BPETokenizer"]


FORMAT_NAME = "labkit-bpe"
FORMAT_VERSION = 1


def _readable(b: bytes) -> str:
    """Bytes as text for humans: valid UTF-8 as is, other bytes as ``\\xNN``."""
    return b.decode("utf-8", errors="backslashreplace")


class BPETokenizer:
    """A byte-level BPE tokenizer with a regex pre-split and special tokens.

    Build one with :meth:`train`, :meth:`load` or :func:`from_tiktoken`. Attributes:

    * ``merges``: ``{(a, b): new_id}`` in rank order (insertion order = the order they were learned);
    * ``vocab``: ``{id: bytes}`` for every non-special token;
    * ``special_tokens``: ``{"<|endoftext|>": id, ...}``;
    * ``pattern``: the pre-split regex (``None``: no pre-split);
    * ``byte_ids``: ``byte_ids[b]`` is the id of the single byte ``b`` (``list(range(256))`` when trained here).
    """

    def __init__(
        self,
        merges: dict[Pair, int] | None = None,
        *,
        pattern: str | None = GPT4_SPLIT_PATTERN,
        special_tokens: dict[str, int] | None = None,
        byte_ids: Sequence[int] | None = None,
    ) -> None:
        self.pattern = pattern
        self._regex = _compile(pattern) if pattern is not None else None
        self.byte_ids: list[int] = list(range(256)) if byte_ids is None else [int(i) for i in byte_ids]
        if len(self.byte_ids) != 256 or len(set(self.byte_ids)) != 256:
            raise ValueError("byte_ids must hold 256 distinct ids, one per byte value")
        self.merges: dict[Pair, int] = dict(merges or {})
        self.vocab: dict[int, bytes] = {i: bytes([b]) for b, i in enumerate(self.byte_ids)}
        for (a, b), new in self.merges.items():
            if a not in self.vocab or b not in self.vocab:
                raise ValueError(f"merge ({a}, {b}) -> {new} uses an id that no earlier merge or byte defines")
            if new in self.vocab:
                raise ValueError(f"merge ({a}, {b}) -> {new}: id {new} is already used")
            self.vocab[new] = self.vocab[a] + self.vocab[b]
        self.special_tokens: dict[str, int] = {}
        for name, i in (special_tokens or {}).items():
            self._add_special(name, i)
        self._cache: dict[str, list[int]] = {}
        self.merge_counts: list[int] = []  # filled by train(): how often each merged pair occurred

    def _add_special(self, name: str, i: int) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"special token names must be non-empty strings, got {name!r}")
        if i in self.vocab or i in self.special_tokens.values():
            raise ValueError(f"special token {name!r} id {i} collides with an existing token id")
        self.special_tokens[name] = int(i)

    # ---- training --------------------------------------------------------------------------------
    @classmethod
    def train(
        cls,
        text: str,
        vocab_size: int,
        *,
        pattern: str | None = GPT4_SPLIT_PATTERN,
        special_tokens: Sequence[str] = COURSE_SPECIAL_TOKENS,
        fast: bool = True,
    ) -> "BPETokenizer":
        """Learn ``vocab_size - 256 - len(special_tokens)`` merges from ``text``: each merges the most frequent
        pair; equal counts go to the lexicographically smallest id pair ``(a, b)`` (:mod:`labkit.tokenizer.train`).

        Args:
            text: training text. Occurrences of special-token strings are cut out first (never learned).
            vocab_size: total vocabulary: 256 bytes + merges + special tokens (which get the last ids).
            pattern: pre-split regex (default GPT-4's); ``None`` trains on the raw byte stream.
            special_tokens: names of the special tokens, e.g. :data:`COURSE_SPECIAL_TOKENS`.
            fast: use :func:`train_merges_fast` (``False``: the clear :func:`train_merges_slow`).

        Example: ``BPETokenizer.train(text, 1024)`` → 762 merges, ids 0–1017, specials 1018–1023.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be str, got {type(text).__name__}")
        if isinstance(special_tokens, str):
            raise TypeError("special_tokens must be a sequence of strings, e.g. ['<|endoftext|>'], not one string")
        special_tokens = list(special_tokens)
        if len(set(special_tokens)) != len(special_tokens):
            raise ValueError(f"special_tokens has duplicates: {special_tokens}")
        n_min = 256 + len(special_tokens)
        if not isinstance(vocab_size, int) or isinstance(vocab_size, bool) or vocab_size < n_min:
            raise ValueError(
                f"vocab_size ({vocab_size!r}) must be an int >= 256 + {len(special_tokens)} special tokens = {n_min}: "
                "the 256 byte tokens always exist; raise vocab_size or pass fewer special_tokens"
            )
        num_merges = vocab_size - n_min
        chunks: list[str] = []
        for part in _strip_specials(text, special_tokens):
            chunks.extend(split_chunks(part, pattern))
        trainer = train_merges_fast if fast else train_merges_slow
        pairs, counts = trainer(chunks, num_merges)
        merges = {p: 256 + i for i, p in enumerate(pairs)}
        first_special = 256 + len(pairs)
        tok = cls(merges, pattern=pattern,
                  special_tokens={s: first_special + k for k, s in enumerate(special_tokens)})
        tok.merge_counts = counts
        return tok

    # ---- sizes and lookups -----------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Number of ids (largest id + 1): bytes + merges + special tokens."""
        return max([*self.vocab, *self.special_tokens.values()]) + 1

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes of one token; a special token gives its name in UTF-8."""
        if token_id in self.vocab:
            return self.vocab[token_id]
        for name, i in self.special_tokens.items():
            if i == token_id:
                return name.encode("utf-8")
        raise ValueError(f"token id {token_id!r} is not in this tokenizer (valid ids: 0..{self.vocab_size - 1})")

    def merge_table(self, n: int | None = None) -> list[str]:
        """Readable merge table: ``"256: 'e' + ' ' -> 'e '"``, in rank order (first ``n`` rows)."""
        rows = []
        for k, ((a, b), new) in enumerate(self.merges.items()):
            if n is not None and k >= n:
                break
            rows.append(f"{new}: {_readable(self.vocab[a])!r} + {_readable(self.vocab[b])!r} -> "
                        f"{_readable(self.vocab[new])!r}")
        return rows

    # ---- encoding --------------------------------------------------------------------------------
    def _encode_chunk(self, chunk: str) -> list[int]:
        """Bytes of one pre-split chunk → ids, applying the lowest-rank merge first until none applies."""
        cached = self._cache.get(chunk)
        if cached is not None:
            return cached
        byte_ids = self.byte_ids
        ids = [byte_ids[b] for b in chunk.encode("utf-8")]
        merges = self.merges
        while len(ids) >= 2:
            # the pair with the lowest rank (= the smallest new id; unknown pairs rank +inf)
            best = min(zip(ids, ids[1:]), key=lambda p: merges.get(p, float("inf")))
            new = merges.get(best)
            if new is None:
                break
            ids = merge_pair(ids, best, new)
        if len(self._cache) < 200_000:
            self._cache[chunk] = ids
        return ids

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode ``text`` treating special-token strings as plain text."""
        if not isinstance(text, str):
            raise TypeError(f"text must be str, got {type(text).__name__}; decode bytes first")
        chunks = self._regex.findall(text) if self._regex is not None else ([text] if text else [])
        out: list[int] = []
        for c in chunks:
            out.extend(self._encode_chunk(c))
        return out

    def _allowed_specials(self, allowed_special: object) -> tuple[dict[str, int], bool]:
        """``allowed_special`` → (special tokens to match, raise if any special string appears)."""
        if allowed_special == "all":
            return dict(self.special_tokens), False
        if allowed_special in ("none", "none_raise"):
            return {}, allowed_special == "none_raise"
        if isinstance(allowed_special, (set, frozenset)):
            unknown = set(allowed_special) - set(self.special_tokens)
            if unknown:
                raise ValueError(f"allowed_special names unknown special tokens {sorted(unknown)}; "
                                 f"known: {sorted(self.special_tokens)}")
            return {s: self.special_tokens[s] for s in allowed_special}, False
        raise ValueError(f"allowed_special must be 'all', 'none', 'none_raise' or a set of names, "
                         f"got {allowed_special!r}")

    def _special_in_text_error(self, found: list[str]) -> ValueError:
        return ValueError(f"text contains special token(s) {found}; pass allowed_special='all' (or a set of "
                          "names) to encode them as special ids, or allowed_special='none' to treat them as text")

    def encode(
        self,
        text: str,
        allowed_special: Literal["all", "none", "none_raise"] | set[str] | frozenset[str] = "none_raise",
    ) -> list[int]:
        """Encode a string to token ids.

        Args:
            text: any Unicode string (the empty string gives ``[]``).
            allowed_special: which special-token strings in ``text`` become their special id:
                ``"all"``; a set of names; ``"none"`` (encode them as ordinary text); or ``"none_raise"``
                (the default, like tiktoken: raise ``ValueError`` if one appears, since user text that
                contains ``<|endoftext|>`` is usually a bug or an injection).
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be str, got {type(text).__name__}; decode bytes first")
        allowed, must_raise = self._allowed_specials(allowed_special)
        if must_raise:
            found = [s for s in self.special_tokens if s in text]
            if found:
                raise self._special_in_text_error(found)
        if not allowed:
            return self.encode_ordinary(text)
        out: list[int] = []
        for part in _special_regex(allowed).split(text):
            if part in allowed:
                out.append(allowed[part])
            elif part:
                out.extend(self.encode_ordinary(part))
        return out

    def encode_iterable(
        self,
        chunks: Iterable[str],
        allowed_special: Literal["all", "none", "none_raise"] | set[str] | frozenset[str] = "none_raise",
        *,
        buffer_chars: int = BUFFER_CHARS,
    ) -> Iterator[int]:
        """Streaming encode (流式编码): the ids of ``encode("".join(chunks), allowed_special)``, yielded one by
        one in memory that does not grow with the text, e.g. ``encode_iterable(open(path, encoding="utf-8"))``.

        Exact for *any* chunking (a word, ``"\\r\\n"``, a whitespace run or a special-token string cut
        between chunks, empty chunks, one giant chunk), unlike encoding chunk by chunk:
        ``encode("a\\n") + encode("\\n") + encode("  b") != encode("a\\n\\n  b")``.

        Rule (proof in :mod:`labkit.tokenizer.stream`): buffer the text and pre-split it; a pre-token is final
        once another pre-token follows it *and* the buffer holds at least 3 characters from its start (GPT-2's
        ``"'l"`` is ``'`` + ``l`` until a third character makes it ``'ll``); the rest waits for more text. A
        special-token match is final once the longest special token would fit after its start.

        Memory: the unfinished tail + one batch of ``buffer_chars`` characters (+ the chunk cache, at most
        200 000 entries), for the GPT-2/GPT-4 patterns. Any other ``pattern`` (or ``None``) buffers the whole
        text between special tokens (still exact). With ``"none_raise"`` the ``ValueError`` comes when the
        stream reaches a special-token string (ids before it were already yielded).
        """
        allowed, must_raise = self._allowed_specials(allowed_special)
        specials = list(self.special_tokens) if must_raise else list(allowed)
        return self._iter_ids(stream_pretokens(chunks, self._regex, specials, buffer_chars=buffer_chars), allowed)

    def _iter_ids(self, pieces: Iterator[tuple[str, bool]], allowed: dict[str, int]) -> Iterator[int]:
        for text, is_special in pieces:
            if not is_special:
                yield from self._encode_chunk(text)
            elif text in allowed:
                yield allowed[text]
            else:
                raise self._special_in_text_error([text])

    def decode(self, ids: Iterable[int], errors: str = "replace") -> str:
        """Token ids → string. Byte sequences that are not valid UTF-8 (a cut-off character) become
        U+FFFD with ``errors="replace"``; pass ``errors="strict"`` to raise instead."""
        special_by_id = {i: s.encode("utf-8") for s, i in self.special_tokens.items()}
        parts = []
        for i in ids:
            if isinstance(i, bool) or not isinstance(i, int):
                try:
                    i = int(i)  # numpy / torch integers
                except (TypeError, ValueError):
                    raise TypeError(f"ids must be integers, got {type(i).__name__}") from None
            b = self.vocab.get(i)
            if b is None:
                b = special_by_id.get(i)
                if b is None:
                    raise ValueError(f"unknown token id {i} in decode: valid ids are 0..{self.vocab_size - 1} "
                                     "(was it produced by a different tokenizer?)")
            parts.append(b)
        return b"".join(parts).decode("utf-8", errors=errors)

    # ---- save / load -----------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """The JSON-serialisable form (see :meth:`save`)."""
        identity = self.byte_ids == list(range(256))
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "pattern": self.pattern,
            "byte_ids": None if identity else self.byte_ids,
            "special_tokens": dict(self.special_tokens),
            "vocab_size": self.vocab_size,
            "merges": [[a, b, new, _readable(self.vocab[new])] for (a, b), new in self.merges.items()],
            "merge_counts": list(self.merge_counts),
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write one human-readable JSON file (atomically): format, version, pattern, special tokens and
        the merge table, one ``[a, b, new_id, "token text"]`` row per merge in rank order."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        d = self.to_dict()
        rows = ",\n    ".join(json.dumps(m, ensure_ascii=False) for m in d.pop("merges"))
        counts = json.dumps(d.pop("merge_counts"))
        head = json.dumps(d, ensure_ascii=False, indent=2)[:-2]  # drop the closing "\n}"
        text = f'{head},\n  "merge_counts": {counts},\n  "merges": [\n    {rows}\n  ]\n}}\n'
        atomic_write_text(path, text)
        return path

    @classmethod
    def from_dict(cls, d: dict, *, source: str = "tokenizer dict") -> "BPETokenizer":
        """Rebuild from :meth:`to_dict` output, validating every field."""
        def bad(msg: str) -> ValueError:
            return ValueError(f"{source}: {msg}; regenerate it with BPETokenizer.save() "
                              "(or `python -m labkit.tokenizer` for the shipped one)")
        if not isinstance(d, dict) or d.get("format") != FORMAT_NAME:
            raise bad(f"not a {FORMAT_NAME} file (format field is {d.get('format') if isinstance(d, dict) else d!r})")
        if d.get("version") != FORMAT_VERSION:
            raise bad(f"unsupported version {d.get('version')!r} (this labkit reads version {FORMAT_VERSION})")
        for key in ("pattern", "special_tokens", "merges"):
            if key not in d:
                raise bad(f"missing field {key!r}")
        merges_list = d["merges"]
        if not isinstance(merges_list, list):
            raise bad("'merges' must be a list of [a, b, new_id, text] rows")
        merges: dict[Pair, int] = {}
        for k, row in enumerate(merges_list):
            if (not isinstance(row, list) or len(row) < 3
                    or not all(isinstance(x, int) and not isinstance(x, bool) for x in row[:3])):
                raise bad(f"merge row {k} is {row!r}, expected [a, b, new_id, text]")
            a, b, new = row[:3]
            if (a, b) in merges:
                raise bad(f"merge row {k} repeats pair ({a}, {b})")
            merges[(a, b)] = new
        specials = d["special_tokens"]
        if not isinstance(specials, dict) or not all(isinstance(v, int) for v in specials.values()):
            raise bad("'special_tokens' must map names to int ids")
        try:
            tok = cls(merges, pattern=d["pattern"], special_tokens=specials, byte_ids=d.get("byte_ids"))
        except (TypeError, ValueError) as e:
            raise bad(str(e)) from e
        for k, row in enumerate(merges_list):
            if len(row) > 3 and row[3] != _readable(tok.vocab[row[2]]):
                raise bad(f"merge row {k}: text {row[3]!r} does not match the merged bytes "
                          f"{_readable(tok.vocab[row[2]])!r} (file edited or corrupt)")
        if "vocab_size" in d and d["vocab_size"] != tok.vocab_size:
            raise bad(f"vocab_size field {d['vocab_size']} != {tok.vocab_size} implied by merges + specials")
        tok.merge_counts = list(d.get("merge_counts") or [])
        return tok

    @classmethod
    def load(cls, path: str | os.PathLike) -> "BPETokenizer":
        """Read a file written by :meth:`save`; a wrong format, old version or corrupt table raises ``ValueError``."""
        path = Path(path)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e}); the file is corrupt, regenerate it") from e
        return cls.from_dict(d, source=str(path))

    def __repr__(self) -> str:
        return (f"BPETokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)}, "
                f"special_tokens={len(self.special_tokens)})")
