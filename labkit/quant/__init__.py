"""Layer 5, quant (chapter 10): int8 absmax/zero-point, LLM.int8, NF4/FP4 and double quantization, FP8.
"""
from __future__ import annotations

from .floats import FLOAT_FORMATS, FloatFormat, decode_bits, float_bits, float_format, fp8_values  # noqa: F401
from .int8 import (  # noqa: F401
    absmax_dequantize,
    absmax_quantize,
    int8_matmul_per_tensor,
    int8_matmul_vectorwise,
    int8_matmul_with_outliers,
    outlier_columns,
    zeropoint_dequantize,
    zeropoint_quantize,
)
from .lut import (  # noqa: F401
    FP4_TABLE,
    NF4_TABLE,
    bits_per_param,
    create_normal_map,
    double_dequantize,
    double_quantize,
    fp4_dequantize,
    fp4_quantize,
    lut_dequantize,
    lut_quantize,
    nf4_dequantize,
    nf4_quantize,
)
from .quantized import FORMATS, QuantizedLinearInt8, model_bytes, quantize_model  # noqa: F401

__all__ = ["absmax_quantize", "absmax_dequantize", "zeropoint_quantize", "zeropoint_dequantize", "outlier_columns", "int8_matmul_vectorwise", "int8_matmul_with_outliers", "int8_matmul_per_tensor", "create_normal_map", "NF4_TABLE", "FP4_TABLE", "lut_quantize", "lut_dequantize", "nf4_quantize", "nf4_dequantize", "fp4_quantize", "fp4_dequantize", "double_quantize", "double_dequantize", "bits_per_param", "FLOAT_FORMATS", "FloatFormat", "float_format", "float_bits", "decode_bits", "fp8_values", "FORMATS", "QuantizedLinearInt8", "quantize_model", "model_bytes"]
