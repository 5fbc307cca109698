r"""The block allocator of a paged KV cache (chapter 09): free list, reference counts, copy-on-write.

The cache memory is cut into ``num_blocks`` fixed-size **blocks** (物理块) of ``block_size`` token slots.
A sequence owns a **block table** (块表): logical block ``i`` (its tokens ``i·bs … i·bs + bs − 1``) lives in
physical block ``table[i]``, so token position ``t`` sits in slot

.. math:: \text{slot}(t) = \text{table}[\lfloor t / bs \rfloor]\cdot bs + (t \bmod bs).

Several sequences may share a block (a common prompt, a forked sample): ``ref_counts[b]`` counts the tables
holding block ``b``. A shared block is read-only; the first write into it **copies on write** (写时复制): the
writer gets a fresh copy and the old block loses one reference. A block whose count drops to 0 returns to the
free list.
"""
from __future__ import annotations

from labkit.core.validate import require_int

__all__ = ["OutOfBlocks", "BlockAllocator", "append_slot"]


class OutOfBlocks(RuntimeError):
    """No free block is left: the scheduler must wait, preempt a sequence or free one."""


def append_slot(block_table: list[int], length: int, block_size: int, ref_counts: list[int],
                free_blocks: list[int]) -> tuple[int, int | None]:
    """Reserve the slot of token position ``length`` (the next token) of a sequence; returns
    ``(slot, copied_from)``.

    * ``length % block_size == 0`` and the table is full: take the first free block (``free_blocks.pop(0)``),
      set its count to 1, append it to the table.
    * the block holding position ``length`` is shared (count > 1): copy-on-write, i.e. take a fresh block,
      put it in the table instead, decrement the old block's count; ``copied_from`` is the old block (the
      caller copies its contents), else ``None``.

    ``slot = table[length // block_size] * block_size + length % block_size``. Mutates ``block_table``,
    ``ref_counts`` and ``free_blocks`` in place. :class:`OutOfBlocks` when a block is needed and none is free
    (nothing is changed then).
    """
    require_int(block_size, "block_size", 1, "pass the tokens per block, e.g. 16")
    require_int(length, "length", 0, "pass the number of tokens the sequence already holds")
    idx, off = divmod(length, block_size)
    if idx > len(block_table):
        raise ValueError(f"length ({length}) is beyond the block table ({len(block_table)} blocks of {block_size}); "
                         "reserve slots one position at a time, in order")
    if idx == len(block_table):
        if not free_blocks:
            raise OutOfBlocks("no free block left; free or preempt a sequence first")
        new = free_blocks.pop(0)
        ref_counts[new] = 1
        block_table.append(new)
        return new * block_size + off, None
    old = block_table[idx]
    if ref_counts[old] > 1:
        if not free_blocks:
            raise OutOfBlocks("no free block left for copy-on-write; free or preempt a sequence first")
        new = free_blocks.pop(0)
        ref_counts[new] = 1
        ref_counts[old] -= 1
        block_table[idx] = new
        return new * block_size + off, old
    return old * block_size + off, None


class BlockAllocator:
    """``num_blocks`` physical blocks: ``free_blocks`` (lowest id first) and ``ref_counts`` (one per block)."""

    def __init__(self, num_blocks: int) -> None:
        require_int(num_blocks, "num_blocks", 1, "pass how many blocks the cache memory holds")
        self.num_blocks = num_blocks
        self.free_blocks: list[int] = list(range(num_blocks))
        self.ref_counts: list[int] = [0] * num_blocks

    @property
    def num_free(self) -> int:
        """Blocks on the free list."""
        return len(self.free_blocks)

    def _check_block(self, block: int) -> None:
        if isinstance(block, bool) or not isinstance(block, int) or not 0 <= block < self.num_blocks:
            raise ValueError(f"block must be an int in [0, {self.num_blocks}), got {block!r}")

    def allocate(self) -> int:
        """Take the first free block (count 1). :class:`OutOfBlocks` when none is free."""
        if not self.free_blocks:
            raise OutOfBlocks(f"all {self.num_blocks} blocks are in use; free or preempt a sequence first")
        block = self.free_blocks.pop(0)
        self.ref_counts[block] = 1
        return block

    def share(self, block: int) -> None:
        """One more table holds ``block`` (prefix sharing, fork): count + 1."""
        self._check_block(block)
        if self.ref_counts[block] == 0:
            raise ValueError(f"block {block} is free; only a block in use can be shared")
        self.ref_counts[block] += 1

    def free(self, block: int) -> None:
        """One table lets go of ``block``: count − 1; at 0 the block returns to the free list."""
        self._check_block(block)
        if self.ref_counts[block] == 0:
            raise ValueError(f"block {block} is already free (freed twice?); free each reference once")
        self.ref_counts[block] -= 1
        if self.ref_counts[block] == 0:
            self.free_blocks.append(block)
