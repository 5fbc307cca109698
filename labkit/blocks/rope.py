"""Rotary position embeddings, RoPE (chapter 04), in the rotate-half convention of 🤗 transformers.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["rope_cos_sin", "rotate_half", "apply_rope"]


def rope_cos_sin(
    positions: Tensor, d: int, base: float = 10000.0, scale: float = 1.0, dtype: torch.dtype = torch.float32
) -> tuple[Tensor, Tensor]:
    r"""``cos, sin`` of shape ``positions.shape + (d,)`` for RoPE, as HF ``LlamaRotaryEmbedding``.

    :math:`\theta_i = \mathrm{base}^{-2i/d}` for :math:`i < d/2`; angle ``(p / scale) * theta_i``, the
    ``d/2`` angles concatenated twice (rotate-half layout). ``scale > 1`` is linear position interpolation
    (HF ``rope_type="linear"`` with ``factor=scale``): positions are squeezed back into the trained range.
    """
    if d % 2:
        raise ValueError(f"RoPE needs an even head dim d, got d={d}")
    if scale <= 0:
        raise ValueError(f"scale must be > 0 (1.0 = no interpolation), got {scale}")
    inv_freq = 1.0 / (base ** (torch.arange(0, d, 2, dtype=torch.int64, device=positions.device).float() / d))
    if scale != 1.0:
        inv_freq = inv_freq / scale
    freqs = positions[..., None].float() * inv_freq  # (..., T, d/2)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x: Tensor) -> Tensor:
    """``[x1, x2] -> [-x2, x1]`` on the last dim (the two halves), HF Llama's convention."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x: Tensor, positions: Tensor, base: float = 10000.0, scale: float = 1.0) -> Tensor:
    r"""Rotary position embedding: ``x * cos + rotate_half(x) * sin`` (HF Llama's ``apply_rotary_pos_emb``).

    Pairs ``(x_i, x_{i+d/2})`` are rotated by angle ``p * theta_i``, so
    :math:`\langle R_m q, R_n k\rangle` depends only on ``m - n``.

    Args:
        x: ``(..., T, d)`` with even ``d``, e.g. ``(B, H, T, hd)``.
        positions: long ``(T,)`` (shared by the batch) or ``(B, T)`` (per sequence; ``x`` is ``(B, ..., T, d)``).
        base: the RoPE base ``theta`` (10000 in LLaMA).
        scale: linear position interpolation factor (see :func:`rope_cos_sin`); 1.0 = plain RoPE.
    """
    if x.dim() < 2:
        raise ValueError(f"x must have shape (..., T, d), got {tuple(x.shape)}")
    T, d = x.shape[-2], x.shape[-1]
    if d % 2:
        raise ValueError(f"RoPE needs an even last dim, got x of shape {tuple(x.shape)} (d={d})")
    if not isinstance(positions, Tensor):
        positions = torch.as_tensor(positions, device=x.device)
    if positions.dim() not in (1, 2) or positions.shape[-1] != T:
        raise ValueError(f"positions must be (T,) or (B, T) with T={T}, got {tuple(positions.shape)}")
    cos, sin = rope_cos_sin(positions, d, base=base, scale=scale, dtype=x.dtype)
    if positions.dim() == 2:  # (B, T, d) -> (B, 1, ..., 1, T, d) to broadcast over the head dims
        if x.dim() < 3 or x.shape[0] != positions.shape[0]:
            raise ValueError(
                f"positions of shape {tuple(positions.shape)} need x of shape (B={positions.shape[0]}, ..., T, d), "
                f"got {tuple(x.shape)}"
            )
        extra = x.dim() - 3
        cos = cos.view(cos.shape[0], *([1] * extra), T, d)
        sin = sin.view(sin.shape[0], *([1] * extra), T, d)
    return x * cos + rotate_half(x) * sin
