"""Paged KV cache (chapter 09): the allocator's ref counts and copy-on-write, paged attention and a paged
forward pass of a LLaMA equal to a contiguous cache (GQA 4 heads / 2 KV heads, block sizes that do not divide
the lengths), fork with copy-on-write, memory waste, and the bad-input errors."""
from __future__ import annotations

import math

import pytest
import torch

from labkit.model import Llama, LlamaConfig
from labkit.serving import (BlockAllocator, OutOfBlocks, PagedKVCache, append_slot, kv_waste, paged_attention,
                            paged_forward)


def _model(seed: int, vocab: int = 97) -> Llama:
    torch.manual_seed(seed)
    return Llama(LlamaConfig(vocab_size=vocab, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=48,
                             max_seq_len=64)).eval()


# ---------------------------------------------------------------------------------------------- allocator
def test_append_slot_fills_blocks_in_order_and_takes_the_first_free_block():
    table, refs, free = [], [0] * 6, [3, 1, 4, 0, 2, 5]
    slots = [append_slot(table, t, 3, refs, free)[0] for t in range(7)]
    assert table == [3, 1, 4] and free == [0, 2, 5]
    assert slots == [9, 10, 11, 3, 4, 5, 12]                     # table[t // 3] * 3 + t % 3
    assert refs == [0, 1, 0, 1, 1, 0]


def test_append_slot_copies_a_shared_block_on_write_and_not_a_private_one():
    table, refs, free = [0, 1], [2, 2, 0, 0], [2, 3]
    other = [0, 1]                                                # another sequence shares both blocks
    slot, src = append_slot(table, 5, 4, refs, free)              # position 5 lives in shared block 1
    assert (slot, src) == (2 * 4 + 1, 1) and table == [0, 2] and other == [0, 1]
    assert refs == [2, 1, 1, 0] and free == [3]
    slot, src = append_slot(table, 6, 4, refs, free)              # now private: no copy
    assert (slot, src) == (2 * 4 + 2, None) and refs == [2, 1, 1, 0]


def test_append_slot_out_of_blocks_changes_nothing():
    table, refs, free = [0], [1], []
    with pytest.raises(OutOfBlocks):
        append_slot(table, 2, 2, refs, free)
    assert table == [0] and refs == [1]


@pytest.mark.parametrize("kwargs, match", [(dict(block_size=0), "block_size"), (dict(length=-1), "length"),
                                           (dict(length=9), "beyond the block table")])
def test_append_slot_bad_input(kwargs, match):
    args = dict(block_table=[0], length=1, block_size=4, ref_counts=[1, 0], free_blocks=[1]) | kwargs
    with pytest.raises(ValueError, match=match):
        append_slot(**args)


def test_allocator_ref_counts_free_list_and_double_free():
    a = BlockAllocator(3)
    b0, b1 = a.allocate(), a.allocate()
    a.share(b0)
    a.free(b0)
    assert a.num_free == 1 and a.ref_counts[b0] == 1              # still held by one table
    a.free(b0)
    assert a.free_blocks == [2, 0]
    with pytest.raises(ValueError, match="freed twice"):
        a.free(b0)
    with pytest.raises(ValueError, match="only a block in use"):
        a.share(b0)
    a.allocate(), a.allocate()
    with pytest.raises(OutOfBlocks):
        a.allocate()
    with pytest.raises(ValueError, match="num_blocks"):
        BlockAllocator(0)
    assert b1 == 1


# ---------------------------------------------------------------------------------------------- attention
def _reference_attention(q, k, v):
    """Contiguous GQA attention, bottom-right causal: q (H, Tq, hd), k/v (n_kv, C, hd)."""
    H, Tq, _ = q.shape
    rep = H // k.shape[0]
    k, v = k.repeat_interleave(rep, 0), v.repeat_interleave(rep, 0)
    C = k.shape[1]
    mask = torch.arange(C)[None] <= torch.arange(C - Tq, C)[:, None]
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)


@pytest.mark.parametrize("seed, bs, C, Tq", [(0, 3, 11, 1), (1, 5, 23, 4), (2, 7, 7, 7), (3, 4, 13, 2)])
def test_paged_attention_equals_contiguous(seed, bs, C, Tq):
    g = torch.Generator().manual_seed(seed)
    H, n_kv, hd, nb = 4, 2, 8, 12
    k_cache, v_cache = torch.randn(nb, bs, n_kv, hd, generator=g), torch.randn(nb, bs, n_kv, hd, generator=g)
    table = torch.randperm(nb, generator=g)[:math.ceil(C / bs)]
    pos = torch.arange(C)
    k = k_cache[table[pos // bs], pos % bs].transpose(0, 1)
    v = v_cache[table[pos // bs], pos % bs].transpose(0, 1)
    q = torch.randn(H, Tq, hd, generator=g)
    out = paged_attention(q, k_cache, v_cache, table.tolist(), C)
    torch.testing.assert_close(out, _reference_attention(q, k, v), atol=1e-6, rtol=0)
    wrong = paged_attention(q, k_cache, v_cache, table.flip(0).tolist(), C) if len(table) > 1 else None
    if wrong is not None:                                         # the table really matters
        assert (wrong - out).abs().max() > 1e-3


def test_paged_attention_bad_input():
    kc = torch.zeros(4, 3, 2, 8)
    with pytest.raises(ValueError, match="context_len"):
        paged_attention(torch.zeros(4, 1, 8), kc, kc, [0], 0)
    with pytest.raises(ValueError, match="too few"):
        paged_attention(torch.zeros(4, 1, 8), kc, kc, [0], 5)
    with pytest.raises(ValueError, match="divisible"):
        paged_attention(torch.zeros(3, 1, 8), kc, kc, [0, 1], 5)


# ---------------------------------------------------------------------------------------------- forward
@pytest.mark.parametrize("seed, bs", [(0, 3), (1, 5), (2, 7)])
def test_paged_forward_equals_contiguous_cache(seed, bs):
    model = _model(seed)
    g = torch.Generator().manual_seed(seed)
    lens, extra = [7, 1, 12, 5], [[1], [3], [1], [2]]
    prompts = [torch.randint(0, 97, (n,), generator=g).tolist() for n in lens]
    cache = PagedKVCache.for_model(model, 40, bs)
    for i in range(4):
        cache.add(i)
    first = paged_forward(model, cache, [0, 1, 2, 3], prompts)
    more = [torch.randint(0, 97, (e[0],), generator=g).tolist() for e in extra]
    second = paged_forward(model, cache, [0, 1, 2, 3], more)
    for i, (p, m) in enumerate(zip(prompts, more)):
        kv = model.new_cache()
        ref1 = model(torch.tensor([p]), kv_cache=kv)[0]
        ref2 = model(torch.tensor([m]), kv_cache=kv)[0]
        torch.testing.assert_close(first[i, :len(p)], ref1, atol=1e-5, rtol=0)
        torch.testing.assert_close(second[i, :len(m)], ref2, atol=1e-5, rtol=0)
    assert cache.lengths == {i: lens[i] + len(more[i]) for i in range(4)}
    assert cache.blocks_in_use() == sum(math.ceil(n / bs) for n in cache.lengths.values())


def test_fork_shares_blocks_and_copies_on_write():
    model = _model(5)
    bs, prompt = 4, list(range(10, 20))                            # 10 tokens: the third block is half full
    cache = PagedKVCache.for_model(model, 16, bs)
    cache.add("a")
    paged_forward(model, cache, ["a"], [prompt])
    cache.fork("a", "b")
    assert cache.tables["a"] == cache.tables["b"] and cache.blocks_in_use() == 3
    assert cache.memory_stats() == {"used": 10, "allocated": 12, "waste": 2}
    out = paged_forward(model, cache, ["a", "b"], [[1], [2]])      # both write into the shared third block
    assert cache.tables["a"][:2] == cache.tables["b"][:2] and cache.tables["a"][2] != cache.tables["b"][2]
    assert cache.blocks_in_use() == 4
    for row, tok in ((0, 1), (1, 2)):
        ref = model(torch.tensor([prompt + [tok]]))[0, -1]
        torch.testing.assert_close(out[row, 0], ref, atol=1e-5, rtol=0)
    cache.free("a")
    cache.free("b")
    assert cache.blocks_in_use() == 0 and sorted(cache.allocator.free_blocks) == list(range(16))
    with pytest.raises(ValueError, match="freed twice"):
        cache.free("b")


def test_cache_bad_input():
    with pytest.raises(ValueError, match="block_size"):
        PagedKVCache(1, 2, 8, 4, 0)
    with pytest.raises(ValueError, match="num_blocks"):
        PagedKVCache(1, 2, 8, 0, 4)
    c = PagedKVCache(1, 2, 8, 2, 4)
    c.add(0)
    with pytest.raises(ValueError, match="already in the cache"):
        c.add(0)
    with pytest.raises(OutOfBlocks):
        c.reserve(0, 9)
    with pytest.raises(ValueError, match="seqs and new_tokens"):
        paged_forward(_model(0), c, [0], [])


def test_kv_waste_counts_slots():
    w = kv_waste([5, 16, 17, 1], block_size=8, max_len=32)
    assert w["used"] == 39 and w["paged_allocated"] == 8 + 16 + 24 + 8 and w["static_allocated"] == 128
    assert w["paged_waste"] == pytest.approx(17 / 56) and w["static_waste"] == pytest.approx(89 / 128)
    with pytest.raises(ValueError, match="lengths"):
        kv_waste([40], 8, 32)
    with pytest.raises(ValueError, match="block_size"):
        kv_waste([4], 0, 32)
