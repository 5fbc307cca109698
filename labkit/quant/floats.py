"""Floating-point bit layouts (chapter 10): fp32, fp16, bf16 and the FP8 formats E4M3 / E5M2.

A layout is 1 sign bit, ``exp_bits`` exponent bits and ``man_bits`` mantissa bits:
``value = (-1)^s · 2^(e - bias) · (1 + m / 2^man_bits)`` (normal), ``(-1)^s · 2^(1 - bias) · (m / 2^man_bits)``
(subnormal, e = 0). :func:`float_bits` reads the bits torch stores, :func:`decode_bits` decodes them by the
formula, :func:`fp8_values` lists every FP8 value.
"""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import torch

__all__ = ["FLOAT_FORMATS", "FloatFormat", "float_format", "float_bits", "decode_bits", "fp8_values"]

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
        """Exponent bias ``2^(exp_bits-1) - 1`` (127 for fp32, 15 for fp16, 7 for E4M3)."""
        return 2 ** (self.exp_bits - 1) - 1

    @property
    def n_bits(self) -> int:
        """Total width ``1 + exp_bits + man_bits``."""
        return 1 + self.exp_bits + self.man_bits

    @property
    def max(self) -> float:
        """Largest finite value (448 for E4M3, 57344 for E5M2, 65504 for fp16)."""
        top = 2 ** self.exp_bits - 1
        if self.ieee_specials:
            return 2.0 ** (top - 1 - self.bias) * (2 - 2.0 ** -self.man_bits)
        return 2.0 ** (top - self.bias) * (2 - 2.0 ** (1 - self.man_bits))  # mantissa all-ones is NaN

    @property
    def min_normal(self) -> float:
        """Smallest positive normal value ``2^(1 - bias)``."""
        return 2.0 ** (1 - self.bias)

    @property
    def min_subnormal(self) -> float:
        """Smallest positive subnormal value ``2^(1 - bias - man_bits)``."""
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
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise TypeError(f"`x` must be a number, got {type(x).__name__}")
    t = torch.tensor([float(x)], dtype=torch.float32).to(_TORCH_DTYPES[fmt])
    int_dtype = {32: torch.int32, 16: torch.int16, 8: torch.uint8}[f.n_bits]
    word = int(t.view(int_dtype).item()) & ((1 << f.n_bits) - 1)
    s = format(word, f"0{f.n_bits}b")
    return s[0], s[1:1 + f.exp_bits], s[1 + f.exp_bits:]


def decode_bits(word: int, fmt: str) -> float:
    """Decode one bit pattern (an int in ``[0, 2^n_bits)``) of ``fmt`` by the formula, from scratch."""
    f = float_format(fmt)
    if isinstance(word, bool) or not isinstance(word, int):
        raise TypeError(f"`word` must be an int bit pattern, got {type(word).__name__}")
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
