"""Integer quantization from scratch (量化, chapter 10): absmax / zero-point int-k and LLM.int8().

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
* NaN/inf inputs are a ValueError: the scale is max|x|, so one inf would make every value dequantize to NaN
  and one NaN would poison its slice or block.

LLM.int8() multiplies vector-wise int8 codes with an exact accumulator and routes outlier feature columns
through a float matmul. The 4-bit formats are in :mod:`labkit.quant.lut`, float bit layouts in
:mod:`labkit.quant.floats`, whole-model quantization in :mod:`labkit.quant.quantized`.
"""
from __future__ import annotations

import torch

from labkit.core.validate import require_finite

__all__ = [
    "absmax_quantize", "absmax_dequantize", "zeropoint_quantize", "zeropoint_dequantize",
    "outlier_columns", "int8_matmul_vectorwise", "int8_matmul_with_outliers", "int8_matmul_per_tensor",
]

# --------------------------------------------------------------------------- input checks
def _check_float(x: torch.Tensor, arg: str = "x", *, finite: bool = True) -> None:
    """A floating-point tensor; with ``finite`` also free of NaN/inf (quantizers need that)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"`{arg}` must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(
            f"`{arg}` must be a floating-point tensor, got dtype {x.dtype}; convert it first, e.g. x.float()"
        )
    if finite:
        require_finite(x, arg, "a scale is computed from max|x|, so one inf makes it inf (everything dequantizes "
                       "to NaN) and one NaN poisons its whole block or tensor; clean the tensor first "
                       "(e.g. torch.nan_to_num) or find where the NaN/inf comes from")


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
        if x.numel() == 0:
            raise ValueError("`x` is empty: a per-tensor scale max|x| is undefined; pass a non-empty tensor")
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
        _amax(x32, None)  # validates: not empty
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
    _check_float(x, "x", finite=False)   # the quantizers check finiteness of what they quantize
    _check_float(w, "w", finite=False)
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
    _check_float(x, "x", finite=False)
    if x.dim() != 2:
        raise ValueError(f"`x` must be 2-D (N, K), got shape {tuple(x.shape)}")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not threshold > 0:
        raise ValueError(f"`threshold` must be a number > 0 (6.0 in the LLM.int8 paper), got {threshold!r}")
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
