r"""Rotary position embeddings, RoPE (chapter 04), in both pairings of the features, and the weight
permutation that converts one into the other.

Pair ``i`` (``i < d/2``) of a ``d``-dim vector at position ``p`` is rotated by the angle ``p·θ_i``,
:math:`\theta_i = \mathrm{base}^{-2i/d}`. Which two features form pair ``i`` is a convention:

* **rotate-half** (🤗 transformers' Llama, this course's default): ``(x_i, x_{i+d/2})``;
* **interleaved** (the RoFormer paper, GPT-J, Meta's original LLaMA code with complex numbers):
  ``(x_{2i}, x_{2i+1})``.

Both are the same rotation up to a permutation of the features: with
``perm = [0, 2, 4, …, d-2, 1, 3, …, d-1]`` (:func:`rope_permutation`),
``apply_rope(x[..., perm]) == apply_rope(x, interleaved=True)[..., perm]``. A permutation applied to both
``q`` and ``k`` leaves every score ``q·k`` unchanged, so weights trained in one layout run in the other after
permuting the rows of each head of the q and k projections (:func:`interleaved_to_half`, the ``permute`` of
transformers' ``convert_llama_weights_to_hf.py``; :func:`half_to_interleaved` is its inverse).
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["rope_cos_sin", "rotate_half", "rotate_every_two", "apply_rope", "rope_permutation",
           "interleaved_to_half", "half_to_interleaved"]


def rope_cos_sin(
    positions: Tensor, d: int, base: float = 10000.0, scale: float = 1.0, dtype: torch.dtype = torch.float32,
    interleaved: bool = False,
) -> tuple[Tensor, Tensor]:
    r"""``cos, sin`` of shape ``positions.shape + (d,)`` for RoPE, as HF ``LlamaRotaryEmbedding``.

    :math:`\theta_i = \mathrm{base}^{-2i/d}` for :math:`i < d/2`; angle ``(p / scale) * theta_i``. The ``d/2``
    angles are laid out to match the pairing: rotate-half concatenates them twice,
    ``[a_0 … a_{d/2-1}, a_0 … a_{d/2-1}]``; ``interleaved=True`` repeats each one,
    ``[a_0, a_0, a_1, a_1, …]`` (``repeat_interleave(2)``, as GPT-J). ``scale > 1`` is linear position
    interpolation (HF ``rope_type="linear"`` with ``factor=scale``): positions are squeezed back into the
    trained range.
    """
    if d % 2:
        raise ValueError(f"RoPE needs an even head dim d, got d={d}")
    if scale <= 0:
        raise ValueError(f"scale must be > 0 (1.0 = no interpolation), got {scale}")
    if not base > 1:
        raise ValueError(f"base must be > 1 (the usual value is 10000.0; base <= 1 gives angles that do not "
                         f"decrease with i or are inf/NaN), got base={base}")
    inv_freq = 1.0 / (base ** (torch.arange(0, d, 2, dtype=torch.int64, device=positions.device).float() / d))
    if scale != 1.0:
        inv_freq = inv_freq / scale
    freqs = positions[..., None].float() * inv_freq  # (..., T, d/2)
    emb = freqs.repeat_interleave(2, dim=-1) if interleaved else torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x: Tensor) -> Tensor:
    """``[x1, x2] -> [-x2, x1]`` on the last dim (the two halves), HF Llama's convention."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rotate_every_two(x: Tensor) -> Tensor:
    """``[x0, x1, x2, x3, …] -> [-x1, x0, -x3, x2, …]`` on the last dim: each adjacent pair turned by 90°
    (GPT-J's ``rotate_every_two``, the interleaved convention)."""
    return torch.stack((-x[..., 1::2], x[..., 0::2]), dim=-1).flatten(-2)


def apply_rope(x: Tensor, positions: Tensor, base: float = 10000.0, scale: float = 1.0,
               interleaved: bool = False) -> Tensor:
    r"""Rotary position embedding: ``x * cos + rotate(x) * sin`` (HF Llama's ``apply_rotary_pos_emb``).

    Each pair :math:`(a, b)` is rotated by :math:`\varphi = p\,\theta_i`:
    :math:`(a, b) \mapsto (a\cos\varphi - b\sin\varphi,\; b\cos\varphi + a\sin\varphi)`, so
    :math:`\langle R_m q, R_n k\rangle` depends only on ``m - n``. The pairs are ``(x_i, x_{i+d/2})`` with
    ``rotate = rotate_half`` (default), or ``(x_{2i}, x_{2i+1})`` with ``interleaved=True`` and
    ``rotate = rotate_every_two``; the latter equals Meta's complex form
    :math:`(x_{2i} + \mathrm{i}\,x_{2i+1})\,e^{\mathrm{i} p\theta_i}` (``torch.view_as_complex`` ·
    ``torch.polar``).

    Args:
        x: ``(..., T, d)`` with even ``d``, e.g. ``(B, H, T, hd)``.
        positions: long ``(T,)`` (shared by the batch) or ``(B, T)`` (per sequence; ``x`` is ``(B, ..., T, d)``).
        base: the RoPE base ``theta`` (10000 in LLaMA).
        scale: linear position interpolation factor (see :func:`rope_cos_sin`); 1.0 = plain RoPE.
        interleaved: pair adjacent features (GPT-J / Meta layout) instead of the two halves (HF layout).
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
    cos, sin = rope_cos_sin(positions, d, base=base, scale=scale, dtype=x.dtype, interleaved=interleaved)
    if positions.dim() == 2:  # (B, T, d) -> (B, 1, ..., 1, T, d) to broadcast over the head dims
        if x.dim() < 3 or x.shape[0] != positions.shape[0]:
            raise ValueError(
                f"positions of shape {tuple(positions.shape)} need x of shape (B={positions.shape[0]}, ..., T, d), "
                f"got {tuple(x.shape)}"
            )
        extra = x.dim() - 3
        cos = cos.view(cos.shape[0], *([1] * extra), T, d)
        sin = sin.view(sin.shape[0], *([1] * extra), T, d)
    rotated = rotate_every_two(x) if interleaved else rotate_half(x)
    return x * cos + rotated * sin


# ------------------------------------------------------------------------------- layout conversion
def _check_count(value: object, arg: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{arg} must be a positive int, got {value!r}")
    return value


def rope_permutation(head_dim: int, n_heads: int = 1) -> Tensor:
    r"""Indices ``perm`` (long, ``(n_heads·head_dim,)``) that reorder interleaved features into rotate-half.

    Within each head, rotate-half feature ``j`` is interleaved feature ``perm[j]``:
    ``perm = [0, 2, …, d-2, 1, 3, …, d-1]`` (``d = head_dim``), offset by ``h·d`` for head ``h``. So pair
    ``i`` = interleaved ``(2i, 2i+1)`` lands on rotate-half ``(i, i + d/2)``, and

    ``apply_rope(x[..., perm], p) == apply_rope(x, p, interleaved=True)[..., perm]``  (one head).

    ``torch.argsort(perm)`` is the inverse (rotate-half → interleaved).
    """
    head_dim, n_heads = _check_count(head_dim, "head_dim"), _check_count(n_heads, "n_heads")
    if head_dim % 2:
        raise ValueError(f"head_dim ({head_dim}) must be even: RoPE rotates pairs of features; "
                         "a projection with an odd head_dim has no RoPE layout to convert")
    one = torch.cat((torch.arange(0, head_dim, 2), torch.arange(1, head_dim, 2)))
    return (torch.arange(n_heads)[:, None] * head_dim + one).reshape(-1)


def _head_view(weight: Tensor, n_heads: int, head_dim: int | None, fn: str) -> tuple[int, int]:
    """Check that ``weight`` has ``n_heads·head_dim`` rows (dim 0) with an even head_dim; return both."""
    if not isinstance(weight, Tensor):
        raise TypeError(f"{fn}: weight must be a torch.Tensor of shape (n_heads·head_dim, dim), "
                        f"got {type(weight).__name__}")
    n_heads = _check_count(n_heads, "n_heads")
    if weight.dim() not in (1, 2):
        raise ValueError(f"{fn}: weight must be a q/k projection weight (n_heads·head_dim, dim) or its bias "
                         f"(n_heads·head_dim,), got shape {tuple(weight.shape)}")
    rows = weight.shape[0]
    if head_dim is not None and rows != n_heads * _check_count(head_dim, "head_dim"):
        raise ValueError(f"{fn}: weight has {rows} rows but n_heads·head_dim = {n_heads}·{head_dim} = "
                         f"{n_heads * head_dim}; for k_proj of a GQA model pass n_heads=n_kv_heads, and pass "
                         "the q/k weight itself (out_features first), not its transpose")
    if rows % n_heads:
        raise ValueError(f"{fn}: weight has {rows} rows, not a multiple of n_heads={n_heads}; pass the number "
                         "of heads this projection produces (n_kv_heads for k_proj of a GQA model)")
    hd = rows // n_heads
    if hd % 2:
        raise ValueError(f"{fn}: head_dim = rows / n_heads = {rows} / {n_heads} = {hd} is odd, but RoPE "
                         "pairs need an even head_dim; check n_heads (n_kv_heads for k_proj) and that the "
                         "weight is (out_features, in_features)")
    return n_heads, hd


def interleaved_to_half(weight: Tensor, n_heads: int, head_dim: int | None = None) -> Tensor:
    r"""Permute the rows of a q or k projection trained with interleaved RoPE for rotate-half RoPE.

    ``weight``: ``(n_heads·head_dim, dim)`` (``nn.Linear`` layout, e.g. ``q_proj.weight``; for ``k_proj`` of a
    GQA model ``n_heads = n_kv_heads``) or a bias ``(n_heads·head_dim,)``. Returns ``weight[perm]`` with
    ``perm = rope_permutation(head_dim, n_heads)``, i.e. transformers' ``convert_llama_weights_to_hf.permute``:
    ``w.view(n_heads, head_dim // 2, 2, dim).transpose(1, 2).reshape(n_heads·head_dim, dim)``.

    Then per head ``RoPE_half(x W_half^T) = RoPE_interleaved(x W^T)[..., perm]`` and, ``perm`` being the same
    for q and k, every attention score ``q·k`` is identical. ``head_dim`` (optional) is checked against the
    shape.
    """
    n_heads, hd = _head_view(weight, n_heads, head_dim, "interleaved_to_half")
    rest = weight.shape[1:]
    return weight.reshape(n_heads, hd // 2, 2, *rest).transpose(1, 2).reshape(weight.shape)


def half_to_interleaved(weight: Tensor, n_heads: int, head_dim: int | None = None) -> Tensor:
    r"""The inverse of :func:`interleaved_to_half`: rotate-half rows → interleaved rows (for export to
    GPT-J / Meta-style code). ``w.view(n_heads, 2, head_dim // 2, dim).transpose(1, 2).reshape(...)``."""
    n_heads, hd = _head_view(weight, n_heads, head_dim, "half_to_interleaved")
    rest = weight.shape[1:]
    return weight.reshape(n_heads, 2, hd // 2, *rest).transpose(1, 2).reshape(weight.shape)
