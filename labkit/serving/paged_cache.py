r"""A paged KV cache (chapter 09): every layer's keys/values in fixed-size blocks, one block table per sequence.

Storage per layer: ``k, v`` of shape ``(num_blocks, block_size, n_kv, head_dim)``; a sequence's position ``t``
is in slot ``table[t // bs] · bs + t % bs`` (:mod:`labkit.serving.allocator`). Memory in use is whole blocks,
so the waste per sequence is below one block (internal fragmentation, 内部碎片), against
``max_len − len`` for a buffer pre-allocated at the maximum length.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from labkit.core.validate import require_int
from labkit.serving.allocator import BlockAllocator, OutOfBlocks, append_slot

__all__ = ["PagedKVCache", "kv_waste"]


class PagedKVCache:
    """Paged keys/values for ``n_layers`` layers; sequences are named by hashable ids.

    ``k[layer]``, ``v[layer]``: ``(num_blocks, block_size, n_kv_heads, head_dim)``. ``tables[seq]`` is the block
    table, ``lengths[seq]`` the tokens cached (written or reserved).
    """

    def __init__(self, n_layers: int, n_kv_heads: int, head_dim: int, num_blocks: int, block_size: int,
                 dtype: torch.dtype = torch.float32) -> None:
        require_int(block_size, "block_size", 1, "pass the tokens per block, e.g. 16")
        require_int(num_blocks, "num_blocks", 1, "pass how many blocks the cache memory holds")
        for name, val in (("n_layers", n_layers), ("n_kv_heads", n_kv_heads), ("head_dim", head_dim)):
            require_int(val, name, 1, "read it from the model config")
        self.block_size, self.num_blocks = block_size, num_blocks
        self.n_kv_heads, self.head_dim = n_kv_heads, head_dim
        shape = (n_layers, num_blocks, block_size, n_kv_heads, head_dim)
        self.k, self.v = torch.zeros(shape, dtype=dtype), torch.zeros(shape, dtype=dtype)
        self.allocator = BlockAllocator(num_blocks)
        self.tables: dict[Any, list[int]] = {}
        self.lengths: dict[Any, int] = {}

    @classmethod
    def for_model(cls, model: Any, num_blocks: int, block_size: int) -> "PagedKVCache":
        """A cache shaped for a labkit ``Llama`` (its layers, KV heads and head_dim)."""
        c = model.config
        return cls(c.n_layers, c.n_kv_heads, c.dim // c.n_heads, num_blocks, block_size)

    # ------------------------------------------------------------------------------------ sequences
    def _require(self, seq: Any) -> None:
        if seq not in self.tables:
            raise ValueError(f"sequence {seq!r} is not in the cache (never added, or freed twice); "
                             "add it with add(seq) first")

    def add(self, seq: Any) -> None:
        """Start an empty sequence."""
        if seq in self.tables:
            raise ValueError(f"sequence {seq!r} is already in the cache; free it first or use another id")
        self.tables[seq], self.lengths[seq] = [], 0

    def fork(self, parent: Any, child: Any) -> None:
        """``child`` shares all of ``parent``'s blocks (counts + 1); the first write to a shared block copies it."""
        self._require(parent)
        if child in self.tables:
            raise ValueError(f"sequence {child!r} is already in the cache; fork into a new id")
        for b in self.tables[parent]:
            self.allocator.share(b)
        self.tables[child], self.lengths[child] = list(self.tables[parent]), self.lengths[parent]

    def free(self, seq: Any) -> None:
        """Drop ``seq``: every block of its table loses one reference."""
        self._require(seq)
        for b in self.tables.pop(seq):
            self.allocator.free(b)
        del self.lengths[seq]

    def length(self, seq: Any) -> int:
        """Tokens held by ``seq``."""
        self._require(seq)
        return self.lengths[seq]

    def blocks_needed(self, seq: Any, n: int) -> int:
        """Free blocks that :meth:`reserve` (seq, n) would take (new blocks + a copy-on-write of a shared tail)."""
        L, table = (self.lengths[seq], self.tables[seq]) if seq in self.tables else (0, [])
        need = max(0, math.ceil((L + n) / self.block_size) - len(table))
        if n > 0 and L % self.block_size and self.allocator.ref_counts[table[-1]] > 1:
            need += 1
        return need

    def can_reserve(self, seq: Any, n: int) -> bool:
        """Whether ``n`` more tokens of ``seq`` fit in the free blocks."""
        return self.blocks_needed(seq, n) <= self.allocator.num_free

    def reserve(self, seq: Any, n: int) -> Tensor:
        """Slots (n,) for the next ``n`` tokens of ``seq`` (copying shared blocks on write)."""
        self._require(seq)
        require_int(n, "n", 0, "pass the number of new tokens")
        if not self.can_reserve(seq, n):
            raise OutOfBlocks(f"sequence {seq!r} needs {self.blocks_needed(seq, n)} free blocks, "
                              f"{self.allocator.num_free} are free; preempt or free a sequence")
        slots = []
        for _ in range(n):
            slot, src = append_slot(self.tables[seq], self.lengths[seq], self.block_size,
                                    self.allocator.ref_counts, self.allocator.free_blocks)
            if src is not None:
                dst = slot // self.block_size
                self.k[:, dst], self.v[:, dst] = self.k[:, src], self.v[:, src]
            self.lengths[seq] += 1
            slots.append(slot)
        return torch.tensor(slots, dtype=torch.long)

    # ------------------------------------------------------------------------------------ memory
    def slot_index(self, seqs: list[Any]) -> tuple[Tensor, Tensor]:
        """``(slots (B, L_max), lengths (B,))``: row b lists the slots of positions 0 … L_max − 1 of ``seqs[b]``
        (positions past its length point at slot 0; mask them)."""
        lengths = torch.tensor([self.length(s) for s in seqs], dtype=torch.long)
        L = int(lengths.max()) if len(seqs) else 0
        nb = max(1, math.ceil(L / self.block_size))
        tables = torch.zeros(len(seqs), nb, dtype=torch.long)
        for b, s in enumerate(seqs):
            t = self.tables[s]
            tables[b, :len(t)] = torch.tensor(t, dtype=torch.long)
        pos = torch.arange(L)
        slots = tables[:, pos // self.block_size] * self.block_size + pos % self.block_size
        return torch.where(pos[None] < lengths[:, None], slots, torch.zeros_like(slots)), lengths

    def blocks_in_use(self) -> int:
        """Physical blocks with a count > 0 (shared blocks counted once)."""
        return self.num_blocks - self.allocator.num_free

    def memory_stats(self) -> dict[str, int]:
        """Token slots: ``used`` (distinct positions cached, a shared block's tokens once), ``allocated``
        (blocks in use × block_size), ``waste`` = allocated − used."""
        seen: dict[int, int] = {}
        for s, table in self.tables.items():
            for i, b in enumerate(table):
                seen[b] = max(seen.get(b, 0), min(self.block_size, self.lengths[s] - i * self.block_size))
        used, allocated = sum(seen.values()), self.blocks_in_use() * self.block_size
        return {"used": used, "allocated": allocated, "waste": allocated - used}


def kv_waste(lengths: list[int], block_size: int, max_len: int) -> dict[str, float]:
    r"""KV slots wasted by paging vs by buffers pre-allocated at ``max_len``, for sequences of ``lengths``.

    Paged: :math:`\sum_i \lceil L_i / bs\rceil bs - L_i` (< one block each). Pre-allocated:
    :math:`\sum_i \text{max\_len} - L_i`. Returns used / allocated / waste slots and the waste fractions.
    """
    require_int(block_size, "block_size", 1, "pass the tokens per block, e.g. 16")
    require_int(max_len, "max_len", 1, "pass the longest sequence the server accepts")
    if not lengths or any(isinstance(L, bool) or not isinstance(L, int) or not 0 <= L <= max_len for L in lengths):
        raise ValueError(f"lengths must be a non-empty list of ints in [0, max_len={max_len}]")
    used = sum(lengths)
    paged = sum(math.ceil(L / block_size) * block_size for L in lengths)
    static = len(lengths) * max_len
    return {"used": used, "paged_allocated": paged, "static_allocated": static,
            "paged_waste": (paged - used) / paged, "static_waste": (static - used) / static}
