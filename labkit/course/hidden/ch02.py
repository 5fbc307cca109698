"""Hidden tests of chapter 02's lab tasks: pair counts and merge, the BPE merge loop, encode.

References: labkit's clear trainer and encoder (which chapter 02 proves equal to tiktoken's cl100k ids and
to the ``tokenizers`` merges), Sennrich-style worked examples, the tie rule (smallest id pair), random
corpora over small alphabets, multi-byte UTF-8 and the shipped Shakespeare merges.
"""
from __future__ import annotations

import torch

from labkit.core.check import exact
from labkit.course import fallbacks
from labkit.course.hidden.base import Check, Forbidden, Learner, Task
from labkit.tokenizer import BPETokenizer, get_pair_counts, load_shakespeare_tokenizer, merge_pair, train_merges_slow

__all__ = ["TASKS"]

_ALPHABET = "ab c\nd中"


def _ints(g: torch.Generator, n: int, hi: int) -> list[int]:
    return [int(v) for v in torch.randint(0, hi, (n,), generator=g)]


def _text(g: torch.Generator, n: int, alphabet: str = _ALPHABET) -> str:
    return "".join(alphabet[int(i)] for i in torch.randint(0, len(alphabet), (n,), generator=g))


def _chunks(g: torch.Generator, n_chunks: int) -> list[str]:
    return [_text(g, 1 + int(torch.randint(0, 9, (1,), generator=g))) for _ in range(n_chunks)]


# ---- 02.A get_stats, merge -----------------------------------------------------------------------------
def _stats(L: Learner, g: torch.Generator) -> None:
    cases = [[], [7], [5, 5, 5, 5], [1, 2, 3, 1, 2]] + [_ints(g, int(torch.randint(2, 30, (1,), generator=g)), 4)
                                                        for _ in range(20)]
    for ids in cases:
        exact(dict(L.get_stats(list(ids))), get_pair_counts(ids), quiet=True, name=f"get_stats({ids[:8]}...)")


def _merge(L: Learner, g: torch.Generator) -> None:
    cases = [([5, 5, 5], (5, 5)), ([1, 2], (1, 2)), ([], (1, 2)), ([3, 1, 2], (1, 2)), ([1, 3, 1], (1, 2))]
    cases += [(_ints(g, int(torch.randint(0, 14, (1,), generator=g)), 3), tuple(_ints(g, 2, 3))) for _ in range(40)]
    for ids, pair in cases:
        before = list(ids)
        exact(L.merge(ids, pair, 99), merge_pair(before, pair, 99), quiet=True, name=f"merge({before}, {pair}, 99)")
        exact(ids, before, quiet=True, name="the input list is left unchanged")


# ---- 02.B train_bpe ------------------------------------------------------------------------------------
def _train_worked(L: Learner, g: torch.Generator) -> None:
    exact(tuple(map(list, L.train_bpe(["aaabdaaabac"], 3))), ([(97, 97), (97, 98), (256, 257)], [4, 2, 2]),
          quiet=True, name="train_bpe(['aaabdaaabac'], 3) (merges, counts)")
    exact(L.train_bpe(["ab", " cd"], 1)[0], [(32, 99)], quiet=True,
          name="tie rule: ['ab', ' cd'] merges the smallest id pair (32, 99) first")


def _train_random(L: Learner, g: torch.Generator) -> None:
    for _ in range(3):
        chunks = _chunks(g, 60)
        got = L.train_bpe(list(chunks), 25)
        exact((list(got[0]), list(got[1])), train_merges_slow(chunks, 25), quiet=True,
              name=f"train_bpe on {len(chunks)} random chunks, 25 merges (merges, counts)")


def _train_edges(L: Learner, g: torch.Generator) -> None:
    exact(tuple(map(list, L.train_bpe(["ab", "a"], 10))), ([(97, 98)], [1]), quiet=True,
          name="more merges asked than pairs exist: stop early")
    exact(tuple(map(list, L.train_bpe([], 5))), ([], []), quiet=True, name="no chunks")
    exact(tuple(map(list, L.train_bpe(["aaaa", "aaa"], 0))), ([], []), quiet=True, name="num_merges=0")
    exact(tuple(map(list, L.train_bpe(["中中", "中"], 4))), train_merges_slow(["中中", "中"], 4), quiet=True,
          name="a Chinese character is 3 UTF-8 bytes")


# ---- 02.C encode_chunk ---------------------------------------------------------------------------------
def _encode_rank(L: Learner, g: torch.Generator) -> None:
    exact(L.encode_chunk("aaaaa", {(97, 97): 256, (256, 97): 257}), [256, 257], quiet=True,
          name="encode_chunk('aaaaa', {(a,a): 256, (256,a): 257})")
    exact(L.encode_chunk("abc", {(98, 99): 256, (97, 98): 257}), [97, 256], quiet=True,
          name="the lowest-rank merge goes first, not the leftmost: 'abc' with (b,c) ranked before (a,b)")


def _encode_shipped(L: Learner, g: torch.Generator) -> None:
    tok = load_shakespeare_tokenizer()
    ref = BPETokenizer(tok.merges, pattern=None)
    words = "To be or not to be that is the question whether tis nobler in the mind".split()
    for _ in range(8):
        idx = torch.randint(0, len(words), (int(torch.randint(1, 6, (1,), generator=g)),), generator=g)
        s = " ".join(words[int(i)] for i in idx)
        exact(L.encode_chunk(s, tok.merges), ref.encode_ordinary(s), quiet=True, name=f"encode_chunk({s!r})")


def _encode_bytes(L: Learner, g: torch.Generator) -> None:
    tok = load_shakespeare_tokenizer()
    ref = BPETokenizer(tok.merges, pattern=None)
    for s in ["", "a", "中文 and 🤗", "e\u0301"]:
        exact(L.encode_chunk(s, tok.merges), ref.encode_ordinary(s), quiet=True, name=f"encode_chunk({s!r})")


def _encode_random(L: Learner, g: torch.Generator) -> None:
    chunks = _chunks(g, 80)
    merges = {p: 256 + i for i, p in enumerate(train_merges_slow(chunks, 40)[0])}
    ref = BPETokenizer(merges, pattern=None)
    for _ in range(10):
        s = _text(g, int(torch.randint(0, 25, (1,), generator=g)))
        exact(L.encode_chunk(s, merges), ref.encode_ordinary(s), quiet=True,
              name=f"encode_chunk({s!r}) with 40 merges learned on random text")


_BPE_FORBIDDEN = Forbidden(packages=("labkit", "tiktoken", "tokenizers"))
_TRAIN_FORBIDDEN = Forbidden(packages=("labkit", "tiktoken", "tokenizers"),
                             allowed=(fallbacks.get_stats, fallbacks.merge, get_pair_counts, merge_pair))
_ENCODE_FORBIDDEN = Forbidden(packages=("labkit", "tiktoken", "tokenizers"), allowed=(fallbacks.merge, merge_pair))

TASKS = (
    Task("02.A", "pair counts and merge", ("get_stats", "merge"), (
        Check("get_stats counts every adjacent pair, overlaps included", 1, _stats),
        Check("merge: left to right, no overlaps, input unchanged", 1, _merge),
    ), _BPE_FORBIDDEN),
    Task("02.B", "the BPE merge loop", ("train_bpe",), (
        Check("worked example and the tie rule", 1, _train_worked),
        Check("random corpora == labkit's clear trainer (merges and counts)", 1, _train_random),
        Check("edge cases: too many merges, no chunks, 0 merges, UTF-8", 1, _train_edges),
    ), _TRAIN_FORBIDDEN),
    Task("02.C", "encode by merge rank", ("encode_chunk",), (
        Check("lowest rank first, on hand-made merges", 1, _encode_rank),
        Check("the shipped Shakespeare merges", 1, _encode_shipped),
        Check("empty, one byte, multi-byte UTF-8", 1, _encode_bytes),
        Check("merges learned on random text", 1, _encode_random),
    ), _ENCODE_FORBIDDEN),
)
