"""Grouped-query attention and its KV cache (chapter 04); MHA (n_kv = n_heads) and MQA (n_kv = 1) are cases.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from labkit.blocks.attention import scaled_dot_product_attention
from labkit.blocks.rope import apply_rope

__all__ = ["repeat_kv", "KVCache", "GroupedQueryAttention"]


def repeat_kv(x: Tensor, n_rep: int) -> Tensor:
    """``(B, n_kv, T, hd) -> (B, n_kv * n_rep, T, hd)``: each KV head serves ``n_rep`` consecutive query heads.

    Same as ``x.repeat_interleave(n_rep, dim=1)`` and HF Llama's ``repeat_kv`` (query head ``h`` uses KV head
    ``h // n_rep``).
    """
    if isinstance(n_rep, bool) or not isinstance(n_rep, int) or n_rep < 1:
        raise ValueError(f"n_rep must be an int >= 1, got {n_rep!r}")
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor of shape (B, n_kv, T, head_dim), got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"x must have shape (B, n_kv, T, head_dim), got {tuple(x.shape)}")
    if n_rep == 1:
        return x
    B, n_kv, T, hd = x.shape
    return x[:, :, None].expand(B, n_kv, n_rep, T, hd).reshape(B, n_kv * n_rep, T, hd)


class KVCache:
    """One layer's key/value cache: keys and values ``(B, n_kv, T_so_far, hd)`` grown along time (dim 2).

    ``update(k, v)`` appends the new ``(B, n_kv, T_new, hd)`` keys/values and returns everything so far.
    Works with tensors that require grad (e.g. trainable prefix key/values pre-filled for prefix tuning):
    the concatenation stays in the autograd graph.
    """

    def __init__(self) -> None:
        self.k: Tensor | None = None
        self.v: Tensor | None = None

    def update(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        if not isinstance(k, Tensor) or not isinstance(v, Tensor):
            raise TypeError(f"k and v must be tensors (B, n_kv, T_new, head_dim), got {type(k).__name__}, "
                            f"{type(v).__name__}")
        if k.dim() != 4 or v.dim() != 4:
            raise ValueError(
                f"k and v must be (B, n_kv, T_new, head_dim), got k {tuple(k.shape)}, v {tuple(v.shape)}"
            )
        if k.shape[:3] != v.shape[:3]:
            raise ValueError(f"k and v must agree in (B, n_kv, T_new): k {tuple(k.shape)}, v {tuple(v.shape)}")
        if self.k is None or self.v is None:
            self.k, self.v = k, v
        else:
            if k.shape[:2] != self.k.shape[:2] or k.shape[3] != self.k.shape[3] or v.shape[3] != self.v.shape[3]:
                raise ValueError(
                    f"new k {tuple(k.shape)} / v {tuple(v.shape)} do not match the cached "
                    f"k {tuple(self.k.shape)} / v {tuple(self.v.shape)} in batch, heads or head_dim; "
                    "call reset() before starting a different batch"
                )
            self.k = torch.cat([self.k, k], dim=2)
            self.v = torch.cat([self.v, v], dim=2)
        return self.k, self.v

    @property
    def length(self) -> int:
        """Number of cached time steps (0 when empty)."""
        return 0 if self.k is None else int(self.k.shape[2])

    @property
    def nbytes(self) -> int:
        """Bytes held by the cached key and value tensors."""
        if self.k is None or self.v is None:
            return 0
        return self.k.numel() * self.k.element_size() + self.v.numel() * self.v.element_size()

    def reset(self) -> None:
        self.k = None
        self.v = None

    def __repr__(self) -> str:
        shape = None if self.k is None else tuple(self.k.shape)
        return f"KVCache(length={self.length}, k_shape={shape}, nbytes={self.nbytes})"


class GroupedQueryAttention(nn.Module):
    """Grouped-query attention (GQA): ``n_heads`` query heads share ``n_kv_heads`` key/value heads.

    ``n_kv_heads = n_heads`` is multi-head attention (MHA), ``n_kv_heads = 1`` multi-query attention (MQA).
    Projections are named as in HF Llama (``q_proj, k_proj, v_proj, o_proj``), so weights copy by name.

    Shapes: x ``(B, T, d_model)`` -> q ``(B, n_heads, T, hd)``, k/v ``(B, n_kv_heads, T, hd)`` with
    ``hd = d_model // n_heads``; out ``(B, T, d_model)``. With ``rope_base`` set, RoPE rotates q and k at
    ``positions`` (default ``past .. past + T - 1``, ``past = kv_cache.length``) *before* k is cached.
    Passing ``positions`` to a module built without ``rope_base`` is a ``ValueError`` (they would do nothing).
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        n_kv_heads: int | None = None,
        bias: bool = False,
        rope_base: float | None = None,
    ) -> None:
        super().__init__()
        n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        for name, val in (("d_model", d_model), ("n_heads", n_heads), ("n_kv_heads", n_kv_heads)):
            if isinstance(val, bool) or not isinstance(val, int):
                raise TypeError(f"{name} must be an int, got {type(val).__name__}")
        if d_model < 1:
            raise ValueError(f"d_model ({d_model}) must be >= 1: it is the width of every token vector")
        if n_heads < 1 or n_kv_heads < 1:
            raise ValueError(f"n_heads ({n_heads}) and n_kv_heads ({n_kv_heads}) must be >= 1")
        if rope_base is not None and (isinstance(rope_base, bool) or not isinstance(rope_base, (int, float))
                                      or not 0 < rope_base < float("inf")):
            raise ValueError(f"rope_base must be a finite number > 0 (10000.0 in LLaMA), or None for no RoPE; "
                             f"got {rope_base!r}")
        if d_model % n_heads:
            raise ValueError(
                f"d_model ({d_model}) must be divisible by n_heads ({n_heads}); "
                f"pick n_heads from {[h for h in range(1, d_model + 1) if d_model % h == 0]}"
            )
        if n_heads % n_kv_heads:
            raise ValueError(
                f"n_heads ({n_heads}) must be divisible by n_kv_heads ({n_kv_heads}); "
                f"pick n_kv_heads from {[g for g in range(1, n_heads + 1) if n_heads % g == 0]}"
            )
        self.d_model, self.n_heads, self.n_kv_heads = d_model, n_heads, n_kv_heads
        self.head_dim = d_model // n_heads
        self.n_rep = n_heads // n_kv_heads
        if rope_base is not None and self.head_dim % 2:
            raise ValueError(
                f"RoPE needs an even head_dim, got head_dim = d_model // n_heads = {self.head_dim}; "
                "change d_model or n_heads, or pass rope_base=None"
            )
        self.rope_base = rope_base
        self.q_proj = nn.Linear(d_model, n_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(d_model, n_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(d_model, n_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(n_heads * self.head_dim, d_model, bias=bias)

    def forward(
        self,
        x: Tensor,
        *,
        mask: Tensor | None = None,
        is_causal: bool = False,
        positions: Tensor | None = None,
        kv_cache: KVCache | None = None,
    ) -> Tensor:
        if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[-1] != self.d_model:
            if not isinstance(x, Tensor):
                raise TypeError(f"x must be a torch.Tensor (B, T, d_model={self.d_model}), got {type(x).__name__}")
            raise ValueError(f"x must have shape (B, T, d_model={self.d_model}), got {tuple(x.shape)}")
        if positions is not None and self.rope_base is None:
            raise ValueError(
                "positions were passed, but this GroupedQueryAttention was built without rope_base, so they "
                "would be silently ignored; build it with rope_base (e.g. rope_base=10000.0) to apply RoPE, "
                "or drop positions"
            )
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        if self.rope_base is not None:
            if positions is None:
                past = kv_cache.length if kv_cache is not None else 0
                positions = torch.arange(past, past + T, device=x.device)
            q = apply_rope(q, positions, base=self.rope_base)
            k = apply_rope(k, positions, base=self.rope_base)
        if kv_cache is not None:
            k, v = kv_cache.update(k, v)
        k, v = repeat_kv(k, self.n_rep), repeat_kv(v, self.n_rep)
        out = scaled_dot_product_attention(q, k, v, mask=mask, is_causal=is_causal)  # (B, H, T, hd)
        return self.o_proj(out.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim))
