"""Layer 3, blocks (chapters 03-06): masks, attention, grouped-query attention and the KV cache, RoPE,
tiled ("flash") attention, LayerNorm/RMSNorm/DeepNorm, feed-forward layers and activations.
"""
from __future__ import annotations

from .attention import attention_weights, scaled_dot_product_attention  # noqa: F401
from .ffn import FeedForward, GeGLU, SwiGLU, gelu, glu, llama_hidden_dim, silu, swish  # noqa: F401
from .flash import flash_attention  # noqa: F401
from .gqa import GroupedQueryAttention, KVCache, repeat_kv  # noqa: F401
from .masks import build_attention_mask, causal_mask, document_causal_mask, padding_mask, prefix_lm_mask  # noqa: F401
from .norms import DeepNormResidual, LayerNorm, RMSNorm, deepnorm_constants, deepnorm_init_  # noqa: F401
from .rope import (  # noqa: F401
    apply_rope,
    half_to_interleaved,
    interleaved_to_half,
    rope_cos_sin,
    rope_permutation,
    rotate_every_two,
    rotate_half,
)

__all__ = ["causal_mask", "prefix_lm_mask", "padding_mask", "build_attention_mask", "document_causal_mask", "scaled_dot_product_attention", "attention_weights", "repeat_kv", "KVCache", "GroupedQueryAttention", "rope_cos_sin", "rotate_half", "rotate_every_two", "apply_rope", "rope_permutation", "interleaved_to_half", "half_to_interleaved", "flash_attention", "LayerNorm", "RMSNorm", "deepnorm_constants", "deepnorm_init_", "DeepNormResidual", "gelu", "silu", "swish", "glu", "FeedForward", "GeGLU", "SwiGLU", "llama_hidden_dim"]
