"""BPE training (chapter 02): the two primitive operations and the two trainers that learn the merges.

Primitives: :func:`get_pair_counts` (count adjacent id pairs) and :func:`merge_pair` (rewrite a pair as
a new id). Two trainers give the same merges (tests check it):

* :func:`train_merges_slow`: the clear version. Every merge recounts all adjacent pairs of the whole
  chunked corpus and rewrites it: O(n · merges) for n bytes.
* :func:`train_merges_fast`: counts each *distinct* pre-split chunk once (with its frequency) and, after a
  merge, updates the pair counts only in the chunks that contained the merged pair (an inverted index
  pair → chunks, plus a max-heap with lazy deletion).

Pair counting convention (both trainers): all adjacent pairs, overlapping ones included, so ``"aaa"``
counts ``(a, a)`` twice; a merge rewrites left to right (``"aaa"`` → ``["aa", "a"]``). Merge ``i`` creates
id ``256 + i``.

Tie-breaking (平局决胜): when several pairs share the highest count, the **lexicographically smallest id pair**
``(a, b)`` is merged (smaller ``a`` first, then smaller ``b``), i.e. the pair minimising ``(-count, a, b)``.
Ids 0–255 are the byte values, so among byte pairs the rule follows byte order, and a merged token (id ≥ 256)
loses ties against byte pairs with a smaller first element. Example: in the chunks ``["ab", " cd"]`` the pairs
``(97, 98)`` ``'a'+'b'``, ``(32, 99)`` ``' '+'c'`` and ``(99, 100)`` ``'c'+'d'`` all occur once; the first merge
is ``(32, 99)`` (32 < 97 < 99), not the first pair in the text. Training is deterministic, but other trainers
break ties differently (first pair seen, their own internal ids), so merge lists can differ on ties.
"""
from __future__ import annotations

import heapq
from collections import Counter
from typing import Iterable, Sequence

__all__ = ["get_pair_counts", "merge_pair", "train_merges_slow", "train_merges_fast"]


Pair = tuple[int, int]


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
    """Most frequent pair; ties go to the lexicographically smallest ``(a, b)`` (module docstring)."""
    pair = min(counts, key=lambda p: (-counts[p], p))
    return pair, counts[pair]


def _check_num_merges(num_merges: int) -> None:
    if not isinstance(num_merges, int) or isinstance(num_merges, bool) or num_merges < 0:
        raise ValueError(f"num_merges must be an int >= 0, got {num_merges!r}")


def train_merges_slow(chunks: Iterable[str], num_merges: int) -> tuple[list[Pair], list[int]]:
    """The clear trainer: recount every pair of the whole corpus for every merge. O(n · merges).

    Each step merges the most frequent pair; a tie in the count goes to the lexicographically smallest id
    pair ``(a, b)``: ``train_merges_slow(["cd", "ab"], 1)`` → ``([(97, 98)], [1])``, although ``"cd"`` comes first.

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

    Cost per merge ∝ the size of the chunks that actually contain the pair, not the corpus size. Ties: the
    heap holds ``(-count, (a, b))``, so among equal counts it pops the smallest pair, the same rule as
    :func:`train_merges_slow` (lexicographically smallest ``(a, b)``).
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
