"""4-bit lookup-table quantization (chapter 10): NF4 and FP4 tables, block-wise quantize / dequantize,
QLoRA double quantization and the storage cost per parameter.

The 4-bit lookup-table formats (NF4, FP4) are block-wise: the flattened tensor is cut into blocks of
``block_size`` values, each block is divided by its absmax and every value is replaced by the index of
the nearest table entry. A last, partial block is **padded with zeros** (as bitsandbytes does) and the
padding is dropped again by the dequantizer, which is why it takes the original ``shape``.
A NaN/inf weight is a ValueError (it would poison its block's absmax).
"""
from __future__ import annotations

import math
from typing import Iterable

import torch

from labkit.quant.int8 import _check_block, _check_float, absmax_quantize

__all__ = [
    "create_normal_map", "NF4_TABLE", "FP4_TABLE", "lut_quantize", "lut_dequantize",
    "nf4_quantize", "nf4_dequantize", "fp4_quantize", "fp4_dequantize",
    "double_quantize", "double_dequantize", "bits_per_param",
]

def create_normal_map(offset: float = 0.9677083) -> torch.Tensor:
    """The NF4 table of QLoRA, rebuilt from normal quantiles (bitsandbytes' ``create_normal_map``).

    8 positive levels ``Φ⁻¹(p)`` for ``p`` = linspace(offset, 0.5, 9)[:-1], 7 negative levels
    ``-Φ⁻¹(p)`` for ``p`` = linspace(offset, 0.5, 8)[:-1], plus an exact 0; all divided by the largest,
    so the table spans [-1, 1] (asymmetric: one more positive level). ``offset`` = ½(1-1/30 + 1-1/32).
    As in bitsandbytes, the probabilities are float32 and the quantiles float64, the table float32.
    """
    if not 0.5 < offset < 1.0:
        raise ValueError(f"`offset` must be in (0.5, 1), got {offset}")
    p_pos = torch.linspace(offset, 0.5, 9)[:-1].double()
    p_neg = torch.linspace(offset, 0.5, 8)[:-1].double()
    v = torch.cat([torch.special.ndtri(p_pos), torch.zeros(1, dtype=torch.float64), -torch.special.ndtri(p_neg)])
    v = v.float().sort().values
    return v / v.max()


NF4_TABLE: torch.Tensor = create_normal_map()
"""The 16 NF4 levels, ascending, in [-1, 1] (equal to bitsandbytes' hard-coded table)."""

_FP4_MAGNITUDES = torch.tensor([0.0, 0.0625, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0])
FP4_TABLE: torch.Tensor = torch.cat([-_FP4_MAGNITUDES.flip(0), _FP4_MAGNITUDES]) / 12.0
"""bitsandbytes' FP4 (E2M1, exponent bias 2 plus one subnormal) magnitudes 0, 0.0625, 2, 3, 4, 6, 8, 12,
with both signs (±0 both present, so only 15 distinct values), divided by 12; ascending."""


def _check_table(table: torch.Tensor) -> None:
    if not isinstance(table, torch.Tensor) or table.dim() != 1 or table.numel() < 2:
        raise ValueError("`table` must be a 1-D tensor with at least 2 levels")
    if not bool((table[1:] >= table[:-1]).all()):
        raise ValueError("`table` must be sorted ascending")


def lut_quantize(
    w: torch.Tensor, table: torch.Tensor, block_size: int = 64
) -> tuple[torch.Tensor, torch.Tensor]:
    """Block-wise lookup-table quantization.

    ``w`` is flattened and cut into blocks of ``block_size`` (the last block is zero-padded); each block
    ``b`` is normalised by ``absmax_b = max|b|`` and each value replaced by the index of the nearest
    table level: ``code = argmin_j |w / absmax_b - table[j]|``.

    Returns:
        ``codes`` uint8 of shape (n_blocks · block_size,), ``absmax`` float32 of shape (n_blocks,).
    """
    _check_float(w, "w")
    _check_block(block_size)
    _check_table(table)
    flat = w.detach().float().reshape(-1)
    pad = (-flat.numel()) % block_size
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    blocks = flat.view(-1, block_size)
    absmax = blocks.abs().amax(dim=1)
    safe = torch.where(absmax > 0, absmax, torch.ones_like(absmax))
    normed = (blocks / safe[:, None]).reshape(-1)
    t = table.float()
    mids = (t[1:] + t[:-1]) / 2
    codes = torch.bucketize(normed, mids).to(torch.uint8)
    return codes, absmax


def lut_dequantize(
    codes: torch.Tensor, absmax: torch.Tensor, table: torch.Tensor, block_size: int, shape: Iterable[int]
) -> torch.Tensor:
    """Inverse of :func:`lut_quantize`: ``ŵ = table[code] · absmax_block``, padding dropped, reshaped."""
    _check_block(block_size)
    _check_table(table)
    if not isinstance(codes, torch.Tensor) or not isinstance(absmax, torch.Tensor):
        raise TypeError("`codes` and `absmax` must be tensors (as returned by the matching quantize call)")
    shape = tuple(int(s) for s in shape)
    if any(s < 0 for s in shape):
        raise ValueError(f"`shape` {shape} has a negative size; pass the original tensor's shape")
    n = math.prod(shape)
    if codes.numel() != absmax.numel() * block_size or codes.numel() < n:
        raise ValueError(
            f"codes ({codes.numel()}) must equal absmax ({absmax.numel()}) × block_size ({block_size}) and "
            f"cover shape {shape}; pass the block_size used when quantizing"
        )
    if codes.numel() and (codes.is_floating_point() or int(codes.min()) < 0 or int(codes.max()) >= table.numel()):
        raise ValueError(f"`codes` must be integers in [0, {table.numel()}) (indices into the table), got "
                         f"dtype {codes.dtype}, range [{codes.min().item()}, {codes.max().item()}]")
    vals = table.float()[codes.long()].view(-1, block_size) * absmax.float()[:, None]
    return vals.reshape(-1)[:n].reshape(shape)


def nf4_quantize(w: torch.Tensor, block_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """NF4 (4-bit NormalFloat, QLoRA): block-wise absmax + nearest of the 16 :data:`NF4_TABLE` levels.

    A partial last block is zero-padded. Returns ``codes`` (uint8 in 0..15, length n_blocks·block_size)
    and ``absmax`` (float32, n_blocks). Storage: 4 bits per code + 32 bits per block.
    """
    return lut_quantize(w, NF4_TABLE, block_size)


def nf4_dequantize(
    codes: torch.Tensor, absmax: torch.Tensor, block_size: int, shape: Iterable[int]
) -> torch.Tensor:
    """``ŵ = NF4_TABLE[codes] · absmax`` per block, reshaped to ``shape`` (float32)."""
    return lut_dequantize(codes, absmax, NF4_TABLE, block_size, shape)


def fp4_quantize(w: torch.Tensor, block_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Block-wise FP4 (bitsandbytes' E2M1 table :data:`FP4_TABLE`), same layout as :func:`nf4_quantize`."""
    return lut_quantize(w, FP4_TABLE, block_size)


def fp4_dequantize(
    codes: torch.Tensor, absmax: torch.Tensor, block_size: int, shape: Iterable[int]
) -> torch.Tensor:
    """Inverse of :func:`fp4_quantize`."""
    return lut_dequantize(codes, absmax, FP4_TABLE, block_size, shape)


def double_quantize(
    absmax: torch.Tensor, block_size: int = 256
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """QLoRA double quantization (双重量化) of the first-level block scales.

    The fp32 ``absmax`` values (all ≥ 0) are centred by their mean and quantized to int8 with one fp32
    absmax scale per ``block_size`` of them (the last block is zero-padded):
    ``c = mean(absmax)``, ``(q, s2) = absmax_int8_blockwise(absmax - c)``.
    Returns ``(q int8 (n,), s2 float32 (n_blocks2,), c float32 scalar)``.
    """
    _check_float(absmax, "absmax")
    _check_block(block_size)
    a = absmax.detach().float().reshape(-1)
    n = a.numel()
    c = a.mean() if n else torch.zeros(())
    centred = a - c
    pad = (-n) % block_size
    if pad:
        centred = torch.cat([centred, centred.new_zeros(pad)])
    q, s2 = absmax_quantize(centred.view(-1, block_size), bits=8, dim=0)
    return q.reshape(-1)[:n], s2.reshape(-1), c


def double_dequantize(q: torch.Tensor, s2: torch.Tensor, c: torch.Tensor, block_size: int = 256) -> torch.Tensor:
    """Inverse of :func:`double_quantize`: the recovered first-level absmax (float32, shape (n,))."""
    _check_block(block_size)
    if not all(isinstance(t, torch.Tensor) for t in (q, s2, c)):
        raise TypeError("`q`, `s2` and `c` must be tensors (as returned by double_quantize)")
    n = q.numel()
    if s2.numel() != math.ceil(n / block_size):
        raise ValueError(f"`s2` has {s2.numel()} scales but {n} codes in blocks of {block_size} need "
                         f"{math.ceil(n / block_size)}; pass the block_size used by double_quantize")
    pad = (-n) % block_size
    qq = torch.cat([q.reshape(-1), q.new_zeros(pad)]) if pad else q.reshape(-1)
    return (qq.float().view(-1, block_size) * s2.float()[:, None]).reshape(-1)[:n] + c


def bits_per_param(
    bits: int = 4, block_size: int = 64, double_quant: bool = False, block_size2: int = 256,
    scale_bits: int = 32, scale_bits_dq: int = 8,
) -> float:
    """Storage per parameter: ``bits + scale_bits / block_size``; with double quantization
    ``bits + scale_bits_dq / block_size + scale_bits / (block_size · block_size2)``.
    NF4, block 64: 4 + 0.5 = 4.5 bits; with DQ (256): 4 + 0.125 + 0.00195 = 4.127 bits."""
    _check_block(block_size)
    _check_block(block_size2, "block_size2")
    if double_quant:
        return bits + scale_bits_dq / block_size + scale_bits / (block_size * block_size2)
    return bits + scale_bits / block_size
