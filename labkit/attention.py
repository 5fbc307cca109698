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
import weakref
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "scaled_dot_product_attention",
    "attention_weights",
    "causal_mask",
    "prefix_lm_mask",
    "padding_mask",
    "repeat_kv",
    "KVCache",
    "GroupedQueryAttention",
    "rope_cos_sin",
    "rotate_half",
    "apply_rope",
    "flash_attention",
    "kv_cache_bytes",
    "peak_tensor_bytes",
]


# --------------------------------------------------------------------------------------------- masks
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
    if not isinstance(prefix_len, int) or not 0 <= prefix_len <= T:
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


# ------------------------------------------------------------------------------------------ core SDPA
def _check_qkv(q: Tensor, k: Tensor, v: Tensor) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() < 2:
            raise ValueError(f"{name} must have shape (..., T, d), got {tuple(t.shape)}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must share the last dim d: q {tuple(q.shape)}, k {tuple(k.shape)}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"k and v must have the same length Tk: k {tuple(k.shape)}, v {tuple(v.shape)}")


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
def repeat_kv(x: Tensor, n_rep: int) -> Tensor:
    """``(B, n_kv, T, hd) -> (B, n_kv * n_rep, T, hd)``: each KV head serves ``n_rep`` consecutive query heads.

    Same as ``x.repeat_interleave(n_rep, dim=1)`` and HF Llama's ``repeat_kv`` (query head ``h`` uses KV head
    ``h // n_rep``).
    """
    if not isinstance(n_rep, int) or n_rep < 1:
        raise ValueError(f"n_rep must be an int >= 1, got {n_rep!r}")
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
        if n_heads < 1 or n_kv_heads < 1:
            raise ValueError(f"n_heads ({n_heads}) and n_kv_heads ({n_kv_heads}) must be >= 1")
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
        if x.dim() != 3 or x.shape[-1] != self.d_model:
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


# ------------------------------------------------------------------------------------------------ RoPE
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


# ------------------------------------------------------------------------------------- flash attention
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


# --------------------------------------------------------------------------------- memory accounting
def kv_cache_bytes(
    n_layers: int, n_kv_heads: int, head_dim: int, seq_len: int, batch: int = 1, bytes_per_elem: int = 2
) -> int:
    """KV-cache size in bytes: ``2 (K and V) * n_layers * n_kv_heads * head_dim * seq_len * batch * bytes``.

    LLaMA-7B (32 layers, 32 KV heads of 128, fp16) at 2048 tokens: ``2*32*32*128*2048*2 = 2**30`` (1 GiB).
    """
    args = dict(n_layers=n_layers, n_kv_heads=n_kv_heads, head_dim=head_dim, seq_len=seq_len, batch=batch,
                bytes_per_elem=bytes_per_elem)
    for name, val in args.items():
        if not isinstance(val, int) or isinstance(val, bool) or val < 0:
            raise ValueError(f"{name} must be a non-negative int, got {val!r}")
    return 2 * n_layers * n_kv_heads * head_dim * seq_len * batch * bytes_per_elem


class _TensorBytesTracker(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts the bytes of every tensor storage created by torch ops while active, and frees them when
    the storage dies; ``peak`` is the high-water mark. Deterministic (it does not read the allocator)."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._owned: dict[int, int] = {}

    def _free(self, key: int) -> None:
        self.live -= self._owned.pop(key, 0)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = {t.untyped_storage().data_ptr() for t in torch.utils._pytree.tree_leaves((args, kwargs))
                  if isinstance(t, Tensor)}
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, Tensor):
                st = t.untyped_storage()
                key = st.data_ptr()
                if key in self._owned or key in inputs or st.nbytes() == 0:
                    continue  # a view of (or in-place write to) an existing storage: no new memory
                self._owned[key] = st.nbytes()
                self.live += st.nbytes()
                self.peak = max(self.peak, self.live)
                weakref.finalize(st, self._free, key)
        return out


def peak_tensor_bytes(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, int]:
    """Run ``fn(*args, **kwargs)`` and return ``(result, peak)`` where ``peak`` is the largest total size
    (bytes) of tensors created *inside* ``fn`` that were alive at the same time. Inputs do not count.

    It intercepts every ATen op (``TorchDispatchMode``), so it sees what ``tracemalloc`` cannot (torch
    allocates outside Python's allocator) and, unlike RSS, it is exact and reproducible.
    """
    tracker = _TensorBytesTracker()
    with torch.no_grad(), tracker:
        result = fn(*args, **kwargs)
    return result, tracker.peak
