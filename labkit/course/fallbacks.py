"""labkit's version of each lab task, in the task's own signature (what :func:`labkit.course.lab.use`
hands a learner copy while the learner's function is a stub).

Where labkit's canonical function already has the task's signature the notebook passes it directly
(``numerics.stable_softmax``, ``numerics.cross_entropy``, ``blocks.scaled_dot_product_attention``,
``tokenizer.merge_pair`` ...). The functions here adapt the canonical code to a task's signature; they do
not re-derive anything that has a home elsewhere in labkit, except the two-line residual arrangements of
chapter 05 (``pre_ln_block``, ``post_ln_block``), which live inside model classes there.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Callable

import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call

from labkit.blocks import RMSNorm, causal_mask, scaled_dot_product_attention, silu
from labkit.model import count_parameters
from labkit.tokenizer import BPETokenizer, get_pair_counts, merge_pair, train_merges_slow

__all__ = ["attention", "causal_mask", "split_heads", "merge_heads", "get_stats", "merge", "train_bpe",
           "encode_chunk", "rms_norm", "pre_ln_block", "post_ln_block", "swiglu", "llama_params"]

Sublayer = Callable[[Tensor], Tensor]


# ---- chapter 02: BPE -----------------------------------------------------------------------------------
def get_stats(ids: list[int]) -> dict[tuple[int, int], int]:
    """Adjacent pair counts (:func:`labkit.tokenizer.get_pair_counts`)."""
    return get_pair_counts(ids)


def merge(ids: list, pair: tuple, new_id: object) -> list:
    """Replace ``pair`` by ``new_id`` left to right (:func:`labkit.tokenizer.merge_pair`)."""
    return merge_pair(ids, pair, new_id)


def train_bpe(chunks: list[str], num_merges: int) -> tuple[list[tuple[int, int]], list[int]]:
    """``(merges, counts)`` of the clear trainer (:func:`labkit.tokenizer.train_merges_slow`)."""
    return train_merges_slow(chunks, num_merges)


def encode_chunk(text: str, merges: dict[tuple[int, int], int]) -> list[int]:
    """Byte-level BPE of one chunk, lowest rank first (:class:`labkit.tokenizer.BPETokenizer`, no pre-split)."""
    return BPETokenizer(merges, pattern=None).encode_ordinary(text)


# ---- chapter 03: attention -----------------------------------------------------------------------------
def attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
    """``softmax(q kᵀ/√d + mask) v``, bottom-right causal, empty rows 0 (:func:`labkit.blocks.scaled_dot_product_attention`)."""
    return scaled_dot_product_attention(q, k, v, mask=mask, is_causal=is_causal)


def split_heads(x: Tensor, n_heads: int) -> Tensor:
    """``(B, T, D) -> (B, h, T, D/h)``, as inside :class:`labkit.blocks.GroupedQueryAttention`."""
    B, T, D = x.shape
    return x.reshape(B, T, n_heads, D // n_heads).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """``(B, h, T, hd) -> (B, T, h·hd)``, the inverse of :func:`split_heads`."""
    B, H, T, hd = x.shape
    return x.transpose(1, 2).reshape(B, T, H * hd)


# ---- chapter 05: normalization -------------------------------------------------------------------------
def rms_norm(x: Tensor, weight: Tensor, eps: float = 1e-6) -> Tensor:
    """:class:`labkit.blocks.RMSNorm` (HF numerics) with ``weight`` given, differentiable in both."""
    return functional_call(RMSNorm(x.shape[-1], eps=eps), {"weight": weight}, (x,))


def pre_ln_block(x: Tensor, attn: Sublayer, ffn: Sublayer, norm1: Sublayer, norm2: Sublayer) -> Tensor:
    """Pre-LN: ``h = x + attn(norm1(x))``, then ``h + ffn(norm2(h))`` (as labkit's ``LlamaDecoderLayer``)."""
    h = x + attn(norm1(x))
    return h + ffn(norm2(h))


def post_ln_block(x: Tensor, attn: Sublayer, ffn: Sublayer, norm1: Sublayer, norm2: Sublayer,
                  alpha: float = 1.0) -> Tensor:
    """Post-LN (DeepNorm with ``alpha > 1``): ``h = norm1(αx + attn(x))``, then ``norm2(αh + ffn(h))``."""
    h = norm1(alpha * x + attn(x))
    return norm2(alpha * h + ffn(h))


# ---- chapter 06: FFN -----------------------------------------------------------------------------------
def swiglu(x: Tensor, w_gate: Tensor, w_up: Tensor, w_down: Tensor) -> Tensor:
    """``down(silu(gate x) · up x)`` with ``nn.Linear``-layout weights, as :class:`labkit.blocks.SwiGLU`."""
    return F.linear(silu(F.linear(x, w_gate)) * F.linear(x, w_up), w_down)


def llama_params(vocab_size: int, hidden_size: int, n_layers: int, n_heads: int, n_kv_heads: int,
                 intermediate_size: int, tie_embeddings: bool = False) -> int:
    """Exact parameter count of a LLaMA model (:func:`labkit.model.count_parameters`)."""
    cfg = SimpleNamespace(vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=n_layers,
                          num_attention_heads=n_heads, num_key_value_heads=n_kv_heads,
                          intermediate_size=intermediate_size, tie_word_embeddings=tie_embeddings)
    return count_parameters(cfg)

