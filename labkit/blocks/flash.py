"""Tiled attention with the online softmax ("flash" attention, chapter 04): equal to the naive
formula, with memory linear in T instead of T².
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from labkit.blocks.attention import _check_qkv

__all__ = ["flash_attention"]


def flash_attention(q: Tensor, k: Tensor, v: Tensor, block_size: int = 64, is_causal: bool = False) -> Tensor:
    r"""Tiled attention with the online softmax (the FlashAttention recurrence), never building ``Tq x Tk``.

    For each query block, walk the key blocks keeping per row a running max ``m``, a running sum
    ``l = sum exp(s - m)`` and an unnormalised output ``acc = sum exp(s - m) v``. A new block with scores
    ``s`` and block max ``m_b`` updates

    .. math:: m' = \max(m, m_b),\quad c = e^{m - m'},\quad l' = c\,l + \textstyle\sum e^{s - m'},\quad
              acc' = c\,acc + e^{s - m'} V_b

    and at the end ``out = acc / l``. The largest temporary is ``block_size x block_size`` per head.
    ``is_causal`` is bottom-right aligned, like :func:`scaled_dot_product_attention`; key blocks entirely in
    the future are skipped. Any ``T`` works (the last block is shorter). Fully masked rows give zeros.

    Args: q ``(..., Tq, d)``, k ``(..., Tk, d)``, v ``(..., Tk, dv)``. Returns ``(..., Tq, dv)``.
    """
    if not isinstance(block_size, int) or isinstance(block_size, bool):
        raise TypeError(f"block_size must be an int, got {type(block_size).__name__}")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}; 64 is a good CPU default")
    _check_qkv(q, k, v)
    Tq, Tk, d = q.shape[-2], k.shape[-2], q.shape[-1]
    scale = 1.0 / math.sqrt(d)
    offset = Tk - Tq  # query i sits at absolute position offset + i
    out = q.new_empty(*q.shape[:-1], v.shape[-1])
    for i0 in range(0, Tq, block_size):
        i1 = min(i0 + block_size, Tq)
        qi = q[..., i0:i1, :] * scale
        m = q.new_full((*qi.shape[:-1], 1), float("-inf"))
        l = q.new_zeros((*qi.shape[:-1], 1))
        acc = q.new_zeros((*qi.shape[:-1], v.shape[-1]))
        last_key = offset + i1 - 1 if is_causal else Tk - 1  # no query in this block sees beyond it
        for j0 in range(0, min(Tk, last_key + 1), block_size):
            j1 = min(j0 + block_size, Tk)
            s = qi @ k[..., j0:j1, :].transpose(-2, -1)  # (..., bq, bk): the only score tile
            if is_causal and j1 - 1 > offset + i0:  # the tile crosses the diagonal
                qpos = torch.arange(i0, i1, device=q.device)[:, None] + offset
                kpos = torch.arange(j0, j1, device=q.device)
                s = s.masked_fill(kpos > qpos, float("-inf"))
            m_new = torch.maximum(m, s.amax(dim=-1, keepdim=True))
            m_safe = torch.where(torch.isneginf(m_new), torch.zeros_like(m_new), m_new)
            p = torch.exp(s - m_safe)
            c = torch.exp(m - m_safe)
            l = c * l + p.sum(dim=-1, keepdim=True)
            acc = c * acc + p @ v[..., j0:j1, :]
            m = m_new
        out[..., i0:i1, :] = torch.where(l > 0, acc / l.clamp_min(torch.finfo(l.dtype).tiny), 0.0)
    return out
