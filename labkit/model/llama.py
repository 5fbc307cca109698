"""A LLaMA-style decoder-only language model (chapter 07), mirroring Hugging Face's ``LlamaForCausalLM``.

The module tree has the same names as ``transformers``' Llama, so ``state_dict`` keys are identical
(``model.layers.0.self_attn.q_proj.weight`` ...), LoRA target names like ``q_proj`` work, and
converting to / from ``transformers`` is a plain state-dict copy (:mod:`labkit.model.hf`). The config is in
:mod:`labkit.model.config`, checkpoint folders in :mod:`labkit.model.checkpoint`.

    x = embed_tokens(ids)                                   (B, T, dim)
    for each layer:  x = x + attn(RMSNorm(x));  x = x + SwiGLU(RMSNorm(x))
    logits = lm_head(RMSNorm(x))                            (B, T, vocab)
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from labkit.blocks.ffn import SwiGLU
from labkit.blocks.gqa import GroupedQueryAttention, KVCache
from labkit.blocks.masks import build_attention_mask
from labkit.blocks.norms import RMSNorm
from labkit.model.config import LlamaConfig

__all__ = ["ModelCache", "LlamaDecoderLayer", "LlamaModel", "Llama"]


# ------------------------------------------------------------------------------------------------ cache
class ModelCache(list):
    """The whole model's KV cache: one :class:`labkit.blocks.KVCache` per layer, updated in place.

    ``len(cache)`` is the number of layers; :attr:`length` the number of cached positions.
    """

    def __init__(self, n_layers: int) -> None:
        super().__init__(KVCache() for _ in range(n_layers))

    @property
    def length(self) -> int:
        """Cached time steps (the same in every layer)."""
        return self[0].length if len(self) else 0

    @property
    def nbytes(self) -> int:
        """Bytes held by all cached keys and values: 2·L·B·n_kv·T·head_dim·bytes_per_element."""
        return sum(c.nbytes for c in self)

    def reorder(self, index: Tensor) -> None:
        """Keep rows ``index`` of the batch dim in every layer (beam search: follow the surviving beams)."""
        for c in self:
            if c.k is not None and c.v is not None:
                c.k, c.v = c.k.index_select(0, index), c.v.index_select(0, index)

    def reset(self) -> None:
        """Empty every layer's cache."""
        for c in self:
            c.reset()


# ----------------------------------------------------------------------------------------------- model
class LlamaDecoderLayer(nn.Module):
    """One pre-norm block: ``x + attn(RMSNorm(x))`` then ``h + SwiGLU(RMSNorm(h))``. (B, T, dim) → (B, T, dim)."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        # registration order = HF's, so state_dict keys come out in the same order
        self.self_attn = GroupedQueryAttention(config.dim, config.n_heads, config.n_kv_heads, bias=False,
                                               rope_base=config.rope_base)
        self.mlp = SwiGLU(config.dim, config.hidden_dim, bias=False)
        self.input_layernorm = RMSNorm(config.dim, eps=config.norm_eps)
        self.post_attention_layernorm = RMSNorm(config.dim, eps=config.norm_eps)

    def forward(self, x: Tensor, *, mask: Tensor | None, positions: Tensor | None,
                kv_cache: KVCache | None) -> Tensor:
        h = x + self.self_attn(self.input_layernorm(x), mask=mask, is_causal=mask is None,
                               positions=positions, kv_cache=kv_cache)
        return h + self.mlp(self.post_attention_layernorm(h))


class LlamaModel(nn.Module):
    """Embedding, the decoder stack and the final norm (HF ``LlamaModel``); returns hidden states (B, T, dim)."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.dim)
        self.layers = nn.ModuleList(LlamaDecoderLayer(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.dim, eps=config.norm_eps)


class Llama(nn.Module):
    """A LLaMA-style causal LM whose ``state_dict`` keys equal ``transformers.LlamaForCausalLM``'s.

    ``forward(input_ids (B, T), kv_cache=None, *, attention_mask=None, position_ids=None) -> logits (B, T, V)``.

    * ``kv_cache``: a :class:`ModelCache` from :meth:`new_cache`, updated **in place**; positions then start at
      ``kv_cache.length`` and the causal mask is bottom-right aligned (new tokens see all cached ones).
    * ``attention_mask``: see :func:`build_attention_mask` (0/1 padding mask, or a bool mask that replaces
      the causal one, e.g. block-diagonal for packed documents).
    * ``position_ids`` (B, T): RoPE positions (e.g. restarting at 0 in every packed document).
    """

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        if not isinstance(config, LlamaConfig):
            raise TypeError(f"config must be a labkit.model.LlamaConfig, got {type(config).__name__}; "
                            "for a transformers model use labkit.model.from_hf(hf_model)")
        self.config = config
        self.model = LlamaModel(config)
        self.lm_head = nn.Linear(config.dim, config.vocab_size, bias=False)
        self.reset_parameters()
        if config.tie_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def reset_parameters(self, std: float = 0.02) -> None:
        """GPT-2 style init: N(0, 0.02) weights, residual output projections (o_proj, down_proj) scaled by
        1/sqrt(2·n_layers) so the residual stream's variance does not grow with depth; norms at 1."""
        residual_std = std / (2 * self.config.n_layers) ** 0.5
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                nn.init.ones_(p)
            elif name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, 0.0, residual_std)
            else:
                nn.init.normal_(p, 0.0, std)

    def new_cache(self) -> ModelCache:
        """An empty :class:`ModelCache` with one :class:`KVCache` per layer."""
        return ModelCache(self.config.n_layers)

    def _check_ids(self, input_ids: Tensor) -> None:
        if not isinstance(input_ids, Tensor) or input_ids.dtype not in (torch.int64, torch.int32):
            raise TypeError("input_ids must be a LongTensor of token ids with shape (B, T)")
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must have shape (B, T), got {tuple(input_ids.shape)}; "
                             "add a batch dim with input_ids[None]")
        if input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) >= self.config.vocab_size):
            raise ValueError(f"input_ids must lie in [0, vocab_size={self.config.vocab_size}), got values in "
                             f"[{int(input_ids.min())}, {int(input_ids.max())}]; was the text encoded with "
                             "another tokenizer?")

    def hidden_states(self, input_ids: Tensor, kv_cache: ModelCache | None = None, *,
                      attention_mask: Tensor | None = None, position_ids: Tensor | None = None) -> Tensor:
        """Final RMS-normed hidden states (B, T, dim), the input of ``lm_head`` (and of reward / value heads)."""
        self._check_ids(input_ids)
        B, T = input_ids.shape
        if kv_cache is not None and (not isinstance(kv_cache, ModelCache) or len(kv_cache) != self.config.n_layers):
            raise TypeError(f"kv_cache must be a ModelCache with {self.config.n_layers} layers; "
                            "make one with model.new_cache()")
        past = kv_cache.length if kv_cache is not None else 0
        mask = build_attention_mask(attention_mask, B, T, past, device=input_ids.device)
        positions = None
        if position_ids is not None:
            if not isinstance(position_ids, Tensor) or tuple(position_ids.shape) not in ((B, T), (T,)):
                raise ValueError(f"position_ids must be a tensor of shape (B, T) = ({B}, {T}) or (T,), got "
                                 f"{tuple(position_ids.shape) if isinstance(position_ids, Tensor) else position_ids!r}")
            positions = position_ids.to(input_ids.device)
        x = self.model.embed_tokens(input_ids)
        for i, layer in enumerate(self.model.layers):
            x = layer(x, mask=mask, positions=positions, kv_cache=kv_cache[i] if kv_cache is not None else None)
        return self.model.norm(x)

    def forward(self, input_ids: Tensor, kv_cache: ModelCache | None = None, *,
                attention_mask: Tensor | None = None, position_ids: Tensor | None = None) -> Tensor:
        """Logits (B, T, vocab_size) = ``lm_head(hidden_states(...))``."""
        return self.lm_head(self.hidden_states(input_ids, kv_cache, attention_mask=attention_mask,
                                               position_ids=position_ids))

    def num_parameters(self) -> int:
        """Distinct parameters (a tied embedding counted once); equals :func:`count_parameters`."""
        return sum(p.numel() for p in self.parameters())
