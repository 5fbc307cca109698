"""Attention masks, all in one place (chapters 03, 07, 12). Boolean, ``True`` = may attend.

* :func:`causal_mask` (bottom-right aligned), :func:`prefix_lm_mask`, :func:`padding_mask` (0/1 → key mask);
* :func:`document_causal_mask`: block-diagonal causal mask for packed sequences (chapter 12);
* :func:`build_attention_mask`: what the LLaMA model does with a user's ``attention_mask`` (chapter 07).
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["causal_mask", "prefix_lm_mask", "padding_mask", "build_attention_mask", "document_causal_mask"]


def causal_mask(Tq: int, Tk: int | None = None, device: torch.device | str | None = None) -> Tensor:
    """Bottom-right aligned causal mask, ``bool (Tq, Tk)``, ``True`` = may attend.

    ``mask[i, j] = j <= i + (Tk - Tq)``: query ``i`` is at absolute position ``Tk - Tq + i``. With
    ``Tq == Tk`` this is ``tril(ones(T, T))``. With ``Tq > Tk`` the first ``Tq - Tk`` rows are all ``False``.
    """
    Tk = Tq if Tk is None else Tk
    for name, val in (("Tq", Tq), ("Tk", Tk)):
        if not isinstance(val, int) or isinstance(val, bool) or val < 0:
            raise ValueError(f"{name} must be a non-negative int, got {val!r}")
    i = torch.arange(Tq, device=device).unsqueeze(-1)
    j = torch.arange(Tk, device=device)
    return j <= i + (Tk - Tq)


def prefix_lm_mask(T: int, prefix_len: int, device: torch.device | str | None = None) -> Tensor:
    """Prefix-LM mask, ``bool (T, T)``: the first ``prefix_len`` tokens see each other (bidirectional),
    every later token sees the whole prefix and the tokens before it (causal).

    ``mask[i, j] = (j <= i) or (j < prefix_len)``. ``prefix_len = 0`` gives the causal mask,
    ``prefix_len = T`` the full (bidirectional, encoder) mask.
    """
    if isinstance(T, bool) or not isinstance(T, int) or T < 0:
        raise ValueError(f"T must be a non-negative int (the sequence length), got {T!r}")
    if isinstance(prefix_len, bool) or not isinstance(prefix_len, int) or not 0 <= prefix_len <= T:
        raise ValueError(f"prefix_len must be an int in [0, T={T}], got {prefix_len!r}")
    j = torch.arange(T, device=device)
    return causal_mask(T, device=device) | (j < prefix_len)


def padding_mask(attention_mask: Tensor) -> Tensor:
    """Turn a tokenizer-style ``attention_mask`` ``(B, T)`` of 0/1 into a boolean key mask ``(B, 1, 1, T)``.

    It broadcasts against scores ``(B, H, Tq, T)``: every query may attend to real tokens (1), never to
    padding (0). Combine with a causal mask by ``&``.
    """
    if not isinstance(attention_mask, Tensor):
        raise TypeError(f"attention_mask must be a tensor of 0/1, got {type(attention_mask).__name__}")
    if attention_mask.dim() != 2:
        raise ValueError(
            f"attention_mask must have shape (B, T), got {tuple(attention_mask.shape)}; "
            "add a batch dim with attention_mask[None]"
        )
    if attention_mask.dtype != torch.bool and not bool(((attention_mask == 0) | (attention_mask == 1)).all()):
        raise ValueError("attention_mask must hold only 0 (padding) and 1 (real token)")
    return attention_mask.bool()[:, None, None, :]


def build_attention_mask(attention_mask: Tensor | None, B: int, T: int, past: int,
                         device: torch.device | None = None) -> Tensor | None:
    """Turn the user's ``attention_mask`` into a bool mask ``(B, 1, T, past + T)`` (True = may attend).

    * ``None`` → ``None`` (the layers then use the bottom-right aligned causal mask);
    * integer / float ``(B, past + T)`` (or ``(B, T)`` without a cache) of 0/1 = a **padding mask**: combined
      with causality, padded keys are never attended to;
    * bool ``(T, Tk)``, ``(B, T, Tk)`` or ``(B, 1, T, Tk)`` = a **full mask** that *replaces* the causal mask
      (e.g. a block-diagonal document mask for packed sequences). Tk = past + T.
    """
    if attention_mask is None:
        return None
    if not isinstance(attention_mask, Tensor):
        raise TypeError(f"attention_mask must be a tensor, got {type(attention_mask).__name__}")
    for name, val in (("B", B), ("T", T), ("past", past)):
        if isinstance(val, bool) or not isinstance(val, int) or val < 0:
            raise ValueError(f"{name} must be a non-negative int, got {val!r}")
    Tk = past + T
    m = attention_mask.to(device) if device is not None else attention_mask
    if m.dtype != torch.bool:
        if m.dim() != 2 or m.shape != (B, Tk):
            raise ValueError(f"a 0/1 padding attention_mask must have shape (B, past + T) = ({B}, {Tk}), got "
                             f"{tuple(m.shape)}; for a full (T, Tk) mask pass a bool tensor (True = may attend)")
        if not bool(((m == 0) | (m == 1)).all()):
            raise ValueError("a padding attention_mask must hold only 0 (padding) and 1 (real token)")
        keys = m.bool()[:, None, None, :]                                   # (B, 1, 1, Tk)
        return keys & causal_mask(T, Tk, device=m.device)                   # (B, 1, T, Tk)
    expected = {2: (T, Tk), 3: (B, T, Tk), 4: (B, 1, T, Tk)}
    if m.dim() not in expected or tuple(m.shape) != expected[m.dim()]:
        raise ValueError(f"a bool attention_mask must have shape (T, Tk), (B, T, Tk) or (B, 1, T, Tk) with "
                         f"B={B}, T={T}, Tk={Tk}; got {tuple(m.shape)}. For padding pass a 0/1 long (B, Tk) mask")
    if m.dim() == 2:
        m = m[None, None].expand(B, 1, T, Tk)
    elif m.dim() == 3:
        m = m[:, None]
    return m


def document_causal_mask(doc_ids: Tensor) -> Tensor:
    """Block-diagonal causal mask: ``mask[i, j] = (doc[i] == doc[j]) and (j <= i)``; True = may attend.

    ``doc_ids (T,) → (T, T)`` or ``(B, T) → (B, T, T)``. Padding (``-1``) forms its own block, so no row
    is ever fully masked (the diagonal is always allowed) and real tokens never see padding.
    """
    if not isinstance(doc_ids, Tensor) or doc_ids.dim() not in (1, 2) or doc_ids.is_floating_point():
        raise ValueError("doc_ids must be an integer tensor of shape (T,) or (B, T)")
    T = doc_ids.shape[-1]
    causal = torch.ones(T, T, dtype=torch.bool, device=doc_ids.device).tril()
    return (doc_ids[..., :, None] == doc_ids[..., None, :]) & causal
