r"""Attention over a paged KV cache and a forward pass of the course model through it (chapter 09).

For one sequence with ``context_len`` = C cached tokens and its last ``Tq`` queries (positions
``C − Tq … C − 1``), gather its keys/values from the blocks,

.. math:: K_t = k\_cache[\text{table}[t // bs],\ t \bmod bs], \quad t = 0 … C − 1,

and attend causally (query i sees keys ``t ≤ C − Tq + i``); query head ``h`` reads KV head
``h // (H / n_kv)`` (GQA). The result equals attention over a contiguous cache of the same tokens.

:func:`paged_forward` runs a labkit ``Llama`` on a *batch of sequences of different lengths*, each with a
different number of new tokens (a prompt to prefill, or one token to decode): new tokens are padded into
``(B, T_new_max)``, written into their slots, and each row attends to its own gathered keys.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from labkit.blocks.attention import scaled_dot_product_attention
from labkit.blocks.gqa import repeat_kv
from labkit.blocks.rope import apply_rope
from labkit.core.validate import require_int
from labkit.serving.paged_cache import PagedKVCache

__all__ = ["paged_attention", "paged_forward"]


def paged_attention(q: Tensor, k_cache: Tensor, v_cache: Tensor, block_table: Sequence[int] | Tensor,
                    context_len: int) -> Tensor:
    """Attention of one sequence's last ``Tq`` queries over its paged keys/values.

    Args:
        q: ``(H, Tq, hd)``, already RoPE-rotated; query i is at position ``context_len − Tq + i``.
        k_cache, v_cache: ``(num_blocks, block_size, n_kv, hd)``; ``H`` must be a multiple of ``n_kv``.
        block_table: physical block of each logical block (at least ``ceil(context_len / block_size)``).
        context_len: tokens of the sequence in the cache (the queries' own keys included).

    Returns ``(H, Tq, hd)`` = softmax(q Kᵀ/√hd + causal) V with K, V the first ``context_len`` positions.
    """
    require_int(context_len, "context_len", 1, "pass the number of cached tokens of this sequence")
    if q.dim() != 3 or k_cache.dim() != 4 or v_cache.shape != k_cache.shape:
        raise ValueError(f"q must be (H, Tq, hd) and k_cache/v_cache (num_blocks, block_size, n_kv, hd), got "
                         f"q {tuple(q.shape)}, k_cache {tuple(k_cache.shape)}, v_cache {tuple(v_cache.shape)}")
    H, Tq, hd = q.shape
    _, bs, n_kv, _ = k_cache.shape
    if H % n_kv or Tq > context_len:
        raise ValueError(f"need H ({H}) divisible by n_kv ({n_kv}) and Tq ({Tq}) <= context_len ({context_len})")
    table = torch.as_tensor(block_table, dtype=torch.long)
    if table.numel() * bs < context_len:
        raise ValueError(f"block_table has {table.numel()} blocks of {bs} slots, too few for context_len "
                         f"{context_len}; pass the sequence's whole table")
    pos = torch.arange(context_len)
    blocks, offs = table[pos // bs], pos % bs
    k = k_cache[blocks, offs].permute(1, 0, 2)[None]                     # (1, n_kv, C, hd)
    v = v_cache[blocks, offs].permute(1, 0, 2)[None]
    k, v = repeat_kv(k, H // n_kv), repeat_kv(v, H // n_kv)
    return scaled_dot_product_attention(q[None], k, v, is_causal=True)[0]


def _layer_attention(attn: Any, h: Tensor, positions: Tensor, cache_k: Tensor, cache_v: Tensor,
                     write: tuple[Tensor, Tensor], read_slots: Tensor, mask: Tensor) -> Tensor:
    """One GQA layer on the N new tokens of the batch, flattened: h (N, dim) → (N, dim).

    Project and RoPE-rotate at ``positions`` (N,), write k/v into their ``slots`` (N,), scatter the queries into
    the padded (B, H, T, hd) grid (``valid`` (B, T) marks real tokens), gather each row's keys (B, L, n_kv, hd)
    at ``read_slots`` (B, L), attend under ``mask`` (B, 1, T, L), and take the real rows back out."""
    valid, slots = write
    N, (B, T) = h.shape[0], valid.shape
    H, n_kv, hd = attn.n_heads, attn.n_kv_heads, attn.head_dim
    q = attn.q_proj(h).view(N, H, hd).transpose(0, 1)                    # (H, N, hd)
    k = attn.k_proj(h).view(N, n_kv, hd).transpose(0, 1)
    v = attn.v_proj(h).view(N, n_kv, hd)
    if attn.rope_base is not None:
        q = apply_rope(q, positions, base=attn.rope_base)
        k = apply_rope(k, positions, base=attn.rope_base)
    flat_k, flat_v = cache_k.view(-1, n_kv, hd), cache_v.view(-1, n_kv, hd)   # views of the block storage
    flat_k[slots], flat_v[slots] = k.transpose(0, 1), v
    qp = q.new_zeros(B, T, H, hd)
    qp[valid] = q.transpose(0, 1)
    K = repeat_kv(flat_k[read_slots].transpose(1, 2), attn.n_rep)       # (B, H, L, hd)
    V = repeat_kv(flat_v[read_slots].transpose(1, 2), attn.n_rep)
    out = scaled_dot_product_attention(qp.transpose(1, 2), K, V, mask=mask)  # (B, H, T, hd)
    return attn.o_proj(out.transpose(1, 2)[valid].reshape(N, H * hd))


@torch.no_grad()
def paged_forward(model: Any, cache: PagedKVCache, seqs: list[Any], new_tokens: list[list[int]], *,
                  last_only: bool = False) -> Tensor:
    """Logits of the new tokens of every sequence: ``(B, T_max, V)`` (row b valid up to ``len(new_tokens[b])``),
    or with ``last_only`` only each row's last new token, ``(B, V)`` (what a server samples from).

    Reserves slots for the new tokens in ``cache`` (sequences must have been :meth:`PagedKVCache.add`-ed),
    runs the model's layers on the N new tokens flattened (no padding in the linear layers, as vLLM), and
    leaves their keys/values cached. Row b's token i sits at position ``past_b + i`` and sees keys
    ``t ≤ past_b + i`` of its own sequence only.
    """
    if len(seqs) != len(new_tokens) or not seqs or any(len(t) == 0 for t in new_tokens):
        raise ValueError("seqs and new_tokens must be non-empty lists of the same length, each row with >= 1 "
                         f"token; got {len(seqs)} seqs and token counts {[len(t) for t in new_tokens]}")
    past = torch.tensor([cache.length(s) for s in seqs], dtype=torch.long)
    n_new = torch.tensor([len(t) for t in new_tokens], dtype=torch.long)
    slots = torch.cat([cache.reserve(s, len(t)) for s, t in zip(seqs, new_tokens)])
    T = int(n_new.max())
    steps = torch.arange(T)
    grid_pos = past[:, None] + steps[None]                               # (B, T) positions of the grid
    valid = steps[None] < n_new[:, None]                                 # (B, T) real tokens
    read_slots, ctx = cache.slot_index(seqs)                             # (B, L), (B,)
    keys = torch.arange(read_slots.shape[1])
    mask = (keys[None, None] < ctx[:, None, None]) & (keys[None, None] <= grid_pos[:, :, None])
    ids = torch.tensor([t for row in new_tokens for t in row], dtype=torch.long)
    x = model.model.embed_tokens(ids)                                    # (N, dim)
    for i, layer in enumerate(model.model.layers):
        x = x + _layer_attention(layer.self_attn, layer.input_layernorm(x), grid_pos[valid], cache.k[i],
                                 cache.v[i], (valid, slots), read_slots, mask[:, None])
        x = x + layer.mlp(layer.post_attention_layernorm(x))
    if last_only:
        return model.lm_head(model.model.norm(x[torch.cumsum(n_new, 0) - 1]))
    out = x.new_zeros(len(seqs), T, x.shape[-1])
    out[valid] = x
    return model.lm_head(model.model.norm(out))
