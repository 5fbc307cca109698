"""Attention, from scaled dot-product to grouped-query attention, KV cache, tiled "flash" attention and RoPE.

Chapters 03 (attention) and 04 (attention variants). Conventions used throughout:

* shapes are ``(..., T, d)``: leading dims are batch and heads, ``T`` is time, ``d`` the head size;
* a **boolean mask** means ``True`` = *may attend* (as ``torch.nn.functional.scaled_dot_product_attention``);
  a **float mask** is *added* to the scores (``0`` keeps, ``-inf`` removes);
* ``is_causal=True`` is **bottom-right aligned**: with ``Tq`` queries and ``Tk`` keys, query ``i`` sits at
  absolute position ``Tk - Tq + i`` and sees keys ``0 .. Tk - Tq + i``. With a KV cache (``Tq`` new tokens
  after ``Tk - Tq`` cached ones) that is exactly "see everything before me". PyTorch's ``is_causal`` is
  **top-left** aligned when ``Tq != Tk`` (query ``i`` sees keys ``0 .. i``); for ``Tq == Tk`` both agree;
* a query row whose keys are *all* masked returns **zeros** (PyTorch's math kernel returns NaN there).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from labkit.blocks.masks import causal_mask

__all__ = ["scaled_dot_product_attention", "attention_weights"]


# --------------------------------------------------------------------------------------------- masks


# ------------------------------------------------------------------------------------------ core SDPA
def _check_qkv(q: Tensor, k: Tensor, v: Tensor) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() < 2:
            raise ValueError(f"{name} must have shape (..., T, d), got {tuple(t.shape)}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}; convert it, e.g. {name}.float()")
    if not q.dtype == k.dtype == v.dtype:
        raise TypeError(f"q, k and v must have one dtype, got {q.dtype}, {k.dtype}, {v.dtype}; cast them to one")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must share the last dim d: q {tuple(q.shape)}, k {tuple(k.shape)}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"k and v must have the same length Tk: k {tuple(k.shape)}, v {tuple(v.shape)}")
    try:
        torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    except RuntimeError:
        raise ValueError(f"the leading (batch, head) dims of q {tuple(q.shape)}, k {tuple(k.shape)} and v "
                         f"{tuple(v.shape)} do not broadcast; give them the same batch and head sizes") from None


def attention_weights(
    q: Tensor,
    k: Tensor,
    mask: Tensor | None = None,
    is_causal: bool = False,
    scale: float | None = None,
) -> Tensor:
    """The attention matrix ``softmax(q k^T * scale + mask)``, shape ``(..., Tq, Tk)``; rows sum to 1.

    ``scale`` defaults to ``1/sqrt(d)``. See the module docstring for the mask and causal conventions.
    Rows with every key masked are all zeros (not NaN).
    """
    _check_qkv(q, k, k)
    Tq, Tk = q.shape[-2], k.shape[-2]
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float))
                              or not math.isfinite(scale)):
        raise ValueError(f"scale must be a finite number (default 1/sqrt(d)), got {scale!r}")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = (q @ k.transpose(-2, -1)) * scale  # (..., Tq, Tk)
    if mask is not None:
        if not isinstance(mask, Tensor):
            raise TypeError(f"mask must be a bool or float tensor, got {type(mask).__name__}")
        try:
            shape = torch.broadcast_shapes(mask.shape, scores.shape)
        except RuntimeError:
            shape = None
        if shape != scores.shape:
            raise ValueError(
                f"mask of shape {tuple(mask.shape)} does not broadcast to the scores' shape "
                f"{tuple(scores.shape)} = (..., Tq, Tk); use (Tq, Tk), (B, 1, Tq, Tk) or (B, 1, 1, Tk)"
            )
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, float("-inf"))
        elif mask.is_floating_point():
            scores = scores + mask.to(scores.dtype)
        else:
            raise TypeError(f"mask must be bool (True = attend) or float (added), got dtype {mask.dtype}")
    if is_causal:
        scores = scores.masked_fill(~causal_mask(Tq, Tk, device=q.device), float("-inf"))
    if mask is None and (not is_causal or Tq <= Tk):
        return torch.softmax(scores, dim=-1)  # every row keeps at least one key: nothing can be fully masked
    # A row with every score -inf would give softmax NaN (0/0); compute it on zeros and zero it afterwards.
    dead = torch.isneginf(scores).all(dim=-1, keepdim=True)
    weights = torch.softmax(scores.masked_fill(dead, 0.0), dim=-1)
    return weights.masked_fill(dead, 0.0)


def scaled_dot_product_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None = None,
    is_causal: bool = False,
    scale: float | None = None,
) -> Tensor:
    r"""Scaled dot-product attention :math:`\mathrm{softmax}(QK^\top/\sqrt{d} + M)\,V`.

    Args:
        q: ``(..., Tq, d)``; k: ``(..., Tk, d)``; v: ``(..., Tk, dv)``.
        mask: bool (``True`` = may attend) or float (added to the scores); must broadcast to
            ``(..., Tq, Tk)``, else ``ValueError``.
        is_causal: bottom-right aligned causal mask (query ``i`` at position ``Tk - Tq + i``); combined
            with ``mask`` by AND. PyTorch's ``is_causal`` is top-left aligned when ``Tq != Tk``.
        scale: multiplies ``q k^T``; default ``1/sqrt(d)``.

    Returns:
        ``(..., Tq, dv)``. Fully masked query rows give zeros.
    """
    _check_qkv(q, k, v)
    return attention_weights(q, k, mask=mask, is_causal=is_causal, scale=scale) @ v


# --------------------------------------------------------------------------------------- GQA and cache


# ------------------------------------------------------------------------------------------------ RoPE


# ------------------------------------------------------------------------------------- flash attention


# --------------------------------------------------------------------------------- memory accounting


