"""Quantization from scratch (量化): number formats, absmax / zero-point int-k, LLM.int8(), NF4, FP4, FP8.

Conventions used throughout (``scale`` is always the *step size*, the float value of one integer step):

* **absmax (symmetric, 对称)**:  ``q = round(x / s)``, ``s = max|x| / (2^(b-1) - 1)``, ``x̂ = q · s``.
  For b = 8 the integers live in [-127, 127]; 0 maps to 0 exactly.
* **zero-point (asymmetric, 非对称)**: the range is first widened to include 0 (as PyTorch observers do),
  ``s = (max - min) / (2^b - 1)``, ``z = round(q_min - min / s)``, ``q = clamp(round(x / s) + z)``,
  ``x̂ = (q - z) · s`` with ``q ∈ [-2^(b-1), 2^(b-1) - 1]``.
* Both round-trips satisfy ``|x - x̂| ≤ s / 2`` per element (rounding to the nearest step).
* Granularity: ``dim=None`` one scale per tensor; ``dim=d`` one scale per slice ``x.select(d, i)``
  (per channel); ``group_size=g`` one scale per ``g`` consecutive elements of the last dim (per group).
* An all-zero slice gets ``s = 1`` (any positive number works): no division by zero, exact round trip.

The 4-bit lookup-table formats (NF4, FP4) are block-wise: the flattened tensor is cut into blocks of
``block_size`` values, each block is divided by its absmax and every value is replaced by the index of
the nearest table entry. A last, partial block is **padded with zeros** (as bitsandbytes does) and the
padding is dropped again by the dequantizer, which is why it takes the original ``shape``.
"""
from __future__ import annotations

import copy
import math
import struct
from dataclasses import dataclass
from typing import Iterable

import torch
from torch import nn

__all__ = [
    "absmax_quantize", "absmax_dequantize", "zeropoint_quantize", "zeropoint_dequantize",
    "outlier_columns", "int8_matmul_vectorwise", "int8_matmul_with_outliers", "int8_matmul_per_tensor",
    "create_normal_map", "NF4_TABLE", "FP4_TABLE", "lut_quantize", "lut_dequantize",
    "nf4_quantize", "nf4_dequantize", "fp4_quantize", "fp4_dequantize",
    "double_quantize", "double_dequantize", "bits_per_param",
    "FLOAT_FORMATS", "FloatFormat", "float_format", "float_bits", "decode_bits", "fp8_values",
    "FORMATS", "QuantizedLinearInt8", "quantize_model", "model_bytes",
]


# --------------------------------------------------------------------------- input checks
def _check_float(x: torch.Tensor, arg: str = "x") -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"`{arg}` must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(
            f"`{arg}` must be a floating-point tensor, got dtype {x.dtype}; convert it first, e.g. x.float()"
        )


def _check_bits(bits: int) -> None:
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise TypeError(f"`bits` must be an int in 2..8, got {type(bits).__name__}")
    if not 2 <= bits <= 8:
        raise ValueError(f"`bits` must be in 2..8 (codes are stored in int8), got {bits}")


def _check_block(block_size: int, arg: str = "block_size") -> None:
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"`{arg}` must be a positive int, got {block_size!r}")


def _amax(x: torch.Tensor, dim: int | None) -> torch.Tensor:
    """max|x| over everything except ``dim`` (kept with size 1 so it broadcasts back onto ``x``)."""
    a = x.abs()
    if dim is None:
        return a.amax().reshape([1] * x.dim())
    d = dim % x.dim() if x.dim() else 0
    if x.dim() == 0 or not -x.dim() <= dim < x.dim():
        raise ValueError(f"`dim` ({dim}) is out of range for a tensor of shape {tuple(x.shape)}")
    others = [i for i in range(x.dim()) if i != d]
    return a.amax(dim=others, keepdim=True) if others else a


def _grouped(x: torch.Tensor, group_size: int) -> torch.Tensor:
    """View ``x`` (..., K) as (..., K / g, g)."""
    _check_block(group_size, "group_size")
    if x.dim() == 0 or x.shape[-1] % group_size:
        k = x.shape[-1] if x.dim() else 1
        divisors = [g for g in range(1, k + 1) if k % g == 0]
        raise ValueError(
            f"`group_size` ({group_size}) must divide the last dim ({k}); groups are rejected, not padded. "
            f"Pick one of {divisors[-8:]} or quantize per channel (dim=...)"
        )
    return x.reshape(*x.shape[:-1], x.shape[-1] // group_size, group_size)


def _ungroup_scale(scale: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Expand a per-group scale (..., K/g) to (..., K); pass other scales through (they broadcast)."""
    try:
        torch.broadcast_shapes(scale.shape, q.shape)
        return scale
    except RuntimeError:
        pass
    if scale.dim() == q.dim() and scale.shape[:-1] == q.shape[:-1] and q.shape[-1] % scale.shape[-1] == 0:
        return scale.repeat_interleave(q.shape[-1] // scale.shape[-1], dim=-1)
    raise ValueError(
        f"`scale` of shape {tuple(scale.shape)} does not fit codes of shape {tuple(q.shape)}; "
        "pass the scale returned by the matching quantize call"
    )


# --------------------------------------------------------------------------- absmax / zero-point
def absmax_quantize(
    x: torch.Tensor, bits: int = 8, dim: int | None = None, group_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric (absmax) quantization: ``q = round(x / s)``, ``s = max|x| / (2^(bits-1) - 1)``.

    Args:
        x: float tensor, any shape.
        bits: 2..8; codes lie in ``[-(2^(bits-1) - 1), 2^(bits-1) - 1]`` (e.g. ±127 for 8 bits).
        dim: ``None`` = one scale for the whole tensor; an int = one scale per slice along ``dim``
            (``dim=0`` on an (out, in) weight = one scale per output row). Scale keeps size-1 dims.
        group_size: one scale per ``group_size`` consecutive values of the last dim (must divide it;
            rejected otherwise). Scale shape (..., K / group_size). Exclusive with ``dim``.

    Returns:
        ``q`` (int8, shape of ``x``) and ``scale`` (float32). ``|x - q·scale| ≤ scale / 2``.
    """
    _check_float(x)
    _check_bits(bits)
    qmax = 2 ** (bits - 1) - 1
    x32 = x.detach().float()
    if group_size is not None:
        if dim is not None:
            raise ValueError("pass either `dim` (per channel) or `group_size` (per group), not both")
        g = _grouped(x32, group_size)
        amax = g.abs().amax(dim=-1, keepdim=True)
        scale = torch.where(amax > 0, amax / qmax, torch.ones_like(amax))
        q = torch.round(g / scale).clamp(-qmax, qmax).to(torch.int8).reshape(x.shape)
        return q, scale.squeeze(-1)
    amax = _amax(x32, dim)
    scale = torch.where(amax > 0, amax / qmax, torch.ones_like(amax))
    q = torch.round(x32 / scale).clamp(-qmax, qmax).to(torch.int8)
    return q, scale


def absmax_dequantize(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``x̂ = q · scale`` (float32); a per-group scale (..., K/g) is expanded to the codes' last dim."""
    if not isinstance(q, torch.Tensor) or not isinstance(scale, torch.Tensor):
        raise TypeError("`q` and `scale` must be tensors (as returned by absmax_quantize)")
    return q.float() * _ungroup_scale(scale.float(), q)


def zeropoint_quantize(
    x: torch.Tensor, bits: int = 8, dim: int | None = None, group_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric (zero-point) quantization onto all ``2^bits`` codes ``[-2^(bits-1), 2^(bits-1) - 1]``.

    ``lo = min(min x, 0)``, ``hi = max(max x, 0)`` (range widened to contain 0, so real 0 is exact and
    the zero point always fits), ``s = (hi - lo) / (2^bits - 1)``, ``z = round(q_min - lo / s)``,
    ``q = clamp(round(x / s) + z, q_min, q_max)``. Granularity as in :func:`absmax_quantize`.

    Returns:
        ``q`` (int8), ``scale`` (float32), ``zero_point`` (int32, same shape as scale).
    """
    _check_float(x)
    _check_bits(bits)
    qmin, qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    x32 = x.detach().float()
    if group_size is not None:
        if dim is not None:
            raise ValueError("pass either `dim` (per channel) or `group_size` (per group), not both")
        g = _grouped(x32, group_size)
        lo, hi = g.amin(dim=-1, keepdim=True), g.amax(dim=-1, keepdim=True)
    elif dim is None:
        lo, hi = x32.amin().reshape([1] * x.dim()), x32.amax().reshape([1] * x.dim())
    else:
        _amax(x32, dim)  # validates dim
        d = dim % x.dim()
        others = [i for i in range(x.dim()) if i != d]
        lo = x32.amin(dim=others, keepdim=True) if others else x32
        hi = x32.amax(dim=others, keepdim=True) if others else x32
    lo, hi = lo.clamp(max=0.0), hi.clamp(min=0.0)
    span = hi - lo
    scale = torch.where(span > 0, span / (qmax - qmin), torch.ones_like(span))
    zp = torch.round(qmin - lo / scale).clamp(qmin, qmax)
    src = g if group_size is not None else x32
    q = (torch.round(src / scale) + zp).clamp(qmin, qmax).to(torch.int8).reshape(x.shape)
    if group_size is not None:
        scale, zp = scale.squeeze(-1), zp.squeeze(-1)
    return q, scale, zp.to(torch.int32)


def zeropoint_dequantize(q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor) -> torch.Tensor:
    """``x̂ = (q - zero_point) · scale`` (float32)."""
    if not all(isinstance(t, torch.Tensor) for t in (q, scale, zero_point)):
        raise TypeError("`q`, `scale` and `zero_point` must be tensors (as returned by zeropoint_quantize)")
    s = _ungroup_scale(scale.float(), q)
    z = _ungroup_scale(zero_point.float(), q)
    return (q.float() - z) * s


# --------------------------------------------------------------------------- LLM.int8()
def _check_matmul(x: torch.Tensor, w: torch.Tensor) -> None:
    _check_float(x, "x")
    _check_float(w, "w")
    if x.dim() != 2 or w.dim() != 2 or x.shape[1] != w.shape[0]:
        raise ValueError(
            f"expected x (N, K) and w (K, M) with matching K, got x {tuple(x.shape)} and w {tuple(w.shape)}; "
            "flatten leading dims of x and pass w as (in, out), i.e. linear.weight.T"
        )


def _int_matmul(qa: torch.Tensor, qb: torch.Tensor) -> torch.Tensor:
    """Exact integer matmul of int8 codes. Float64 products of int8 codes are exact integers while
    ``K · 127² < 2^53``, so this equals an int32/int64 accumulator but runs on the BLAS path."""
    return qa.double() @ qb.double()


def int8_matmul_per_tensor(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Plain int8 matmul with one absmax scale for all of ``x`` and one for all of ``w``."""
    _check_matmul(x, w)
    qx, sx = absmax_quantize(x)
    qw, sw = absmax_quantize(w)
    return (_int_matmul(qx, qw) * (sx.double() * sw.double())).float()


def int8_matmul_vectorwise(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Vector-wise int8 matmul (LLM.int8 without the outlier split).

    Each row of ``x`` (N, K) gets scale ``c_x[i] = max_k |x[i, k]| / 127`` and each column of
    ``w`` (K, M) gets ``c_w[j] = max_k |w[k, j]| / 127``; then
    ``y[i, j] ≈ c_x[i] · c_w[j] · Σ_k q_x[i, k] · q_w[k, j]`` with an exact integer accumulator.
    """
    _check_matmul(x, w)
    qx, sx = absmax_quantize(x, dim=0)  # (N, 1)
    qw, sw = absmax_quantize(w, dim=1)  # (1, M)
    return (_int_matmul(qx, qw) * sx.double() * sw.double()).float()


def outlier_columns(x: torch.Tensor, threshold: float = 6.0) -> torch.Tensor:
    """Indices k of the feature columns of ``x`` (N, K) that hold any ``|x[:, k]| > threshold``."""
    _check_float(x, "x")
    if x.dim() != 2:
        raise ValueError(f"`x` must be 2-D (N, K), got shape {tuple(x.shape)}")
    if not threshold > 0:
        raise ValueError(f"`threshold` must be > 0, got {threshold}")
    return torch.nonzero((x.abs() > threshold).any(dim=0)).flatten()


def int8_matmul_with_outliers(x: torch.Tensor, w: torch.Tensor, threshold: float = 6.0) -> torch.Tensor:
    """LLM.int8() (Dettmers et al. 2022): vector-wise int8 matmul plus mixed-precision decomposition.

    Columns ``O = {k : max_i |x[i, k]| > threshold}`` of ``x`` (the outlier *features*) and the matching
    rows of ``w`` are multiplied in floating point; everything else goes through
    :func:`int8_matmul_vectorwise`:

        ``y = x[:, O] @ w[O, :]  +  int8(x[:, ¬O]) @ int8(w[¬O, :])``

    Args:
        x: (N, K) activations.  w: (K, M) weight (``linear.weight.T``).  threshold: 6.0 as in the paper.
    Returns:
        (N, M) float32.
    """
    _check_matmul(x, w)
    cols = outlier_columns(x, threshold)
    if cols.numel() == 0:
        return int8_matmul_vectorwise(x, w)
    keep = torch.ones(x.shape[1], dtype=torch.bool)
    keep[cols] = False
    x_reg, w_reg = x[:, keep], w[keep, :]
    y_out = x[:, cols].float() @ w[cols, :].float()
    if x_reg.shape[1] == 0:
        return y_out
    return int8_matmul_vectorwise(x_reg, w_reg) + y_out


# --------------------------------------------------------------------------- 4-bit lookup tables
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
    shape = tuple(int(s) for s in shape)
    n = math.prod(shape)
    if codes.numel() != absmax.numel() * block_size or codes.numel() < n:
        raise ValueError(
            f"codes ({codes.numel()}) must equal absmax ({absmax.numel()}) × block_size ({block_size}) and "
            f"cover shape {shape}; pass the block_size used when quantizing"
        )
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
    n = q.numel()
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


# --------------------------------------------------------------------------- float bit layouts
@dataclass(frozen=True)
class FloatFormat:
    """A binary floating-point layout: 1 sign bit, ``exp_bits`` exponent bits, ``man_bits`` mantissa bits.

    ``value = (-1)^s · 2^(e - bias) · (1 + m / 2^man_bits)`` for ``e > 0`` (normal) and
    ``(-1)^s · 2^(1 - bias) · (m / 2^man_bits)`` for ``e = 0`` (subnormal). ``ieee_specials``: the
    all-ones exponent means inf (m = 0) / NaN (m ≠ 0); otherwise (E4M3 "fn") only ``S.1111.111`` is NaN.
    """

    name: str
    exp_bits: int
    man_bits: int
    ieee_specials: bool = True

    @property
    def bias(self) -> int:
        return 2 ** (self.exp_bits - 1) - 1

    @property
    def n_bits(self) -> int:
        return 1 + self.exp_bits + self.man_bits

    @property
    def max(self) -> float:
        top = 2 ** self.exp_bits - 1
        if self.ieee_specials:
            return 2.0 ** (top - 1 - self.bias) * (2 - 2.0 ** -self.man_bits)
        return 2.0 ** (top - self.bias) * (2 - 2.0 ** (1 - self.man_bits))  # mantissa all-ones is NaN

    @property
    def min_normal(self) -> float:
        return 2.0 ** (1 - self.bias)

    @property
    def min_subnormal(self) -> float:
        return 2.0 ** (1 - self.bias - self.man_bits)

    @property
    def eps(self) -> float:
        """Gap between 1 and the next representable number."""
        return 2.0 ** -self.man_bits


FLOAT_FORMATS: dict[str, FloatFormat] = {
    "fp32": FloatFormat("fp32", 8, 23),
    "fp16": FloatFormat("fp16", 5, 10),
    "bf16": FloatFormat("bf16", 8, 7),
    "e4m3": FloatFormat("e4m3", 4, 3, ieee_specials=False),
    "e5m2": FloatFormat("e5m2", 5, 2),
}
_TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16,
                 "e4m3": torch.float8_e4m3fn, "e5m2": torch.float8_e5m2}


def float_format(fmt: str) -> FloatFormat:
    """Look up a layout by name: ``"fp32"``, ``"fp16"``, ``"bf16"``, ``"e4m3"``, ``"e5m2"``."""
    if fmt not in FLOAT_FORMATS:
        raise ValueError(f"unknown float format {fmt!r}; choose one of {sorted(FLOAT_FORMATS)}")
    return FLOAT_FORMATS[fmt]


def float_bits(x: float, fmt: str = "fp32") -> tuple[str, str, str]:
    """Bit fields (sign, exponent, mantissa) of ``x`` after rounding it to ``fmt``, as '0'/'1' strings.

    The bits come from the stored bytes of a torch tensor of that dtype (the hardware layout)."""
    f = float_format(fmt)
    t = torch.tensor([float(x)], dtype=torch.float32).to(_TORCH_DTYPES[fmt])
    int_dtype = {32: torch.int32, 16: torch.int16, 8: torch.uint8}[f.n_bits]
    word = int(t.view(int_dtype).item()) & ((1 << f.n_bits) - 1)
    s = format(word, f"0{f.n_bits}b")
    return s[0], s[1:1 + f.exp_bits], s[1 + f.exp_bits:]


def decode_bits(word: int, fmt: str) -> float:
    """Decode one bit pattern (an int in ``[0, 2^n_bits)``) of ``fmt`` by the formula, from scratch."""
    f = float_format(fmt)
    if not 0 <= word < 2 ** f.n_bits:
        raise ValueError(f"`word` must be in [0, 2^{f.n_bits}) for {fmt}, got {word}")
    sign = -1.0 if word >> (f.n_bits - 1) else 1.0
    e = (word >> f.man_bits) & (2 ** f.exp_bits - 1)
    m = word & (2 ** f.man_bits - 1)
    top = 2 ** f.exp_bits - 1
    if f.ieee_specials and e == top:
        return sign * math.inf if m == 0 else math.nan
    if not f.ieee_specials and e == top and m == 2 ** f.man_bits - 1:
        return math.nan
    if e == 0:
        return sign * 2.0 ** (1 - f.bias) * (m / 2 ** f.man_bits)
    return sign * 2.0 ** (e - f.bias) * (1 + m / 2 ** f.man_bits)


def fp8_values(fmt: str, finite_only: bool = True) -> torch.Tensor:
    """All 256 FP8 bit patterns of ``"e4m3"`` (E4M3FN) or ``"e5m2"`` decoded from scratch (float64).

    In bit-pattern order 0x00..0xFF; with ``finite_only`` NaN/inf are dropped (+0 and -0 both stay):
    254 finite values for E4M3 (max 448), 248 for E5M2 (max 57344)."""
    if fmt not in ("e4m3", "e5m2"):
        raise ValueError(f"`fmt` must be 'e4m3' or 'e5m2', got {fmt!r}")
    v = torch.tensor([decode_bits(w, fmt) for w in range(256)], dtype=torch.float64)
    return v[torch.isfinite(v)] if finite_only else v


def _struct_fp32_bits(x: float) -> str:  # used by tests as an independent oracle
    return format(struct.unpack(">I", struct.pack(">f", x))[0], "032b")


# --------------------------------------------------------------------------- whole-model quantization
FORMATS: tuple[str, ...] = ("fp32", "bf16", "int8", "llm_int8", "nf4", "int4")
"""Weight formats understood by :func:`quantize_model`."""


class QuantizedLinearInt8(nn.Module):
    """An ``nn.Linear`` replacement running LLM.int8(): the weight is stored as int8 with one fp32 scale
    per output row; each call quantizes the input rows, multiplies in int8 (exact accumulator) and
    routes input features with ``|x| > threshold`` through a float matmul against the dequantized rows."""

    def __init__(self, linear: nn.Linear, threshold: float = 6.0) -> None:
        super().__init__()
        self.in_features, self.out_features, self.threshold = linear.in_features, linear.out_features, threshold
        q, s = absmax_quantize(linear.weight.detach(), dim=0)  # (out, in), (out, 1)
        self.register_buffer("qweight", q)
        self.register_buffer("scale", s)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features).float()
        cols = outlier_columns(x2, self.threshold)
        keep = torch.ones(self.in_features, dtype=torch.bool)
        keep[cols] = False
        qx, sx = absmax_quantize(x2[:, keep], dim=0)
        y = _int_matmul(qx, self.qweight[:, keep].T) * sx.double() * self.scale.double().T
        y = y.float()
        if cols.numel():
            w_out = self.qweight[:, cols].float() * self.scale  # (out, |O|) dequantized weight columns
            y = y + x2[:, cols] @ w_out.T
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*lead, self.out_features).to(x.dtype)


def _weight_bytes(linear: nn.Linear, fmt: str, block_size: int) -> int:
    n = linear.weight.numel()
    rows = linear.out_features
    if fmt == "fp32":
        return 4 * n
    if fmt == "bf16":
        return 2 * n
    if fmt in ("int8", "llm_int8"):
        return n + 4 * rows  # int8 codes + an fp32 scale per output row
    n_blocks = math.ceil(n / block_size)
    return math.ceil(n / 2) + 4 * n_blocks  # two 4-bit codes per byte + an fp32 absmax per block


def _should_quantize(name: str, module: nn.Module, skip: tuple[str, ...]) -> bool:
    return isinstance(module, nn.Linear) and not any(name == s or name.endswith("." + s) for s in skip)


def quantize_model(
    model: nn.Module, fmt: str, *, block_size: int = 64, threshold: float = 6.0,
    skip: tuple[str, ...] = ("lm_head",), inplace: bool = False,
) -> tuple[nn.Module, int]:
    """Quantize every ``nn.Linear`` weight of ``model`` (except names in ``skip``) to ``fmt``.

    Formats (:data:`FORMATS`): ``"fp32"`` unchanged; ``"bf16"`` weights rounded to bfloat16;
    ``"int8"`` absmax int8 per output channel; ``"llm_int8"`` modules replaced by
    :class:`QuantizedLinearInt8` (int8 weights + outlier decomposition of the activations);
    ``"nf4"`` block-wise NF4; ``"int4"`` block-wise absmax 4-bit (levels -7..7) with ``block_size`` groups.
    Apart from ``llm_int8`` the weights are *fake-quantized* (stored dequantized in fp32) so the
    forward pass is unchanged and only the rounding error shows.

    Returns:
        ``(model, n_bytes)``: the quantized model (a deep copy unless ``inplace``) and the bytes its
        parameters and buffers would take when stored in ``fmt`` (codes packed, scales in fp32;
        everything that is not a quantized linear weight counted at its own dtype, tied weights once).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {list(FORMATS)}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be an nn.Module, got {type(model).__name__}")
    m = model if inplace else copy.deepcopy(model)
    targets = [(name, mod) for name, mod in m.named_modules() if _should_quantize(name, mod, skip)]
    target_weights = {id(mod.weight) for _, mod in targets}
    seen: set[int] = set()
    n_bytes = 0
    for t in list(m.parameters()) + list(m.buffers()):
        if id(t) in seen or id(t) in target_weights:
            continue
        seen.add(id(t))
        n_bytes += t.numel() * t.element_size()
    for name, mod in targets:
        n_bytes += _weight_bytes(mod, fmt, block_size)
        if fmt == "fp32":
            continue
        if fmt == "llm_int8":
            parent_name, _, child = name.rpartition(".")
            parent = m.get_submodule(parent_name) if parent_name else m
            setattr(parent, child, QuantizedLinearInt8(mod, threshold))
            continue
        w = mod.weight.detach()
        if fmt == "bf16":
            new = w.to(torch.bfloat16).float()
        elif fmt == "int8":
            new = absmax_dequantize(*absmax_quantize(w, bits=8, dim=0))
        elif fmt == "nf4":
            new = nf4_dequantize(*nf4_quantize(w, block_size), block_size, w.shape)
        else:  # int4
            flat = w.reshape(-1)
            pad = (-flat.numel()) % block_size
            padded = torch.cat([flat, flat.new_zeros(pad)]) if pad else flat
            q, s = absmax_quantize(padded.view(-1, block_size), bits=4, dim=0)
            new = absmax_dequantize(q, s).reshape(-1)[: flat.numel()].reshape(w.shape)
        with torch.no_grad():
            mod.weight.copy_(new.to(mod.weight.dtype))
    return m, n_bytes


def model_bytes(model: nn.Module) -> int:
    """Bytes of all parameters and buffers at their current dtypes (shared tensors counted once)."""
    seen: set[int] = set()
    total = 0
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total
