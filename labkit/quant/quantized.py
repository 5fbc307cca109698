"""Quantizing a whole model (chapter 10): an LLM.int8() ``nn.Linear`` and every linear weight of a model
in fp32 / bf16 / int8 / LLM.int8 / NF4 / int4, with the bytes each format takes.

Storage counted by :func:`quantize_model` per linear weight of n values and ``rows`` output rows:
fp32 ``4n``, bf16 ``2n``, int8 ``n + 4·rows``, 4-bit ``ceil(n/2) + 4·ceil(n / block_size)``.
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn

from labkit.quant.int8 import _check_block, _int_matmul, absmax_dequantize, absmax_quantize, outlier_columns
from labkit.quant.lut import nf4_dequantize, nf4_quantize

__all__ = ["FORMATS", "QuantizedLinearInt8", "quantize_model", "model_bytes"]

FORMATS: tuple[str, ...] = ("fp32", "bf16", "int8", "llm_int8", "nf4", "int4")
"""Weight formats understood by :func:`quantize_model`."""


class QuantizedLinearInt8(nn.Module):
    """An ``nn.Linear`` replacement running LLM.int8(): the weight is stored as int8 with one fp32 scale
    per output row; each call quantizes the input rows, multiplies in int8 (exact accumulator) and
    routes input features with ``|x| > threshold`` through a float matmul against the dequantized rows."""

    def __init__(self, linear: nn.Linear, threshold: float = 6.0) -> None:
        super().__init__()
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"`linear` must be an nn.Linear, got {type(linear).__name__}")
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not threshold > 0:
            raise ValueError(f"`threshold` must be a number > 0 (6.0 in the LLM.int8 paper), got {threshold!r}")
        self.in_features, self.out_features, self.threshold = linear.in_features, linear.out_features, threshold
        q, s = absmax_quantize(linear.weight.detach(), dim=0)  # (out, in), (out, 1)
        self.register_buffer("qweight", q)
        self.register_buffer("scale", s)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() == 0 or x.shape[-1] != self.in_features:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must have shape (..., in_features={self.in_features}), got {shape}")
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


def _other_bytes(model: nn.Module, target_weights: set[int]) -> int:
    """Bytes of every parameter and buffer that is not a quantized linear weight, at its own dtype, once each."""
    seen: set[int] = set()
    n_bytes = 0
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) in seen or id(t) in target_weights:
            continue
        seen.add(id(t))
        n_bytes += t.numel() * t.element_size()
    return n_bytes


def _fake_quantize(w: torch.Tensor, fmt: str, block_size: int) -> torch.Tensor:
    """``w`` rounded to ``fmt`` (``"bf16"``, ``"int8"``, ``"nf4"`` or ``"int4"``) and dequantized back to float."""
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
    return new


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
    _check_block(block_size)
    if isinstance(skip, str):
        raise TypeError(f"`skip` must be a tuple of module names, e.g. ({skip!r},), not one string")
    m = model if inplace else copy.deepcopy(model)
    targets = [(name, mod) for name, mod in m.named_modules() if _should_quantize(name, mod, skip)]
    target_weights = {id(mod.weight) for _, mod in targets}
    n_bytes = _other_bytes(m, target_weights)
    for name, mod in targets:
        n_bytes += _weight_bytes(mod, fmt, block_size)
        if fmt == "fp32":
            continue
        if fmt == "llm_int8":
            parent_name, _, child = name.rpartition(".")
            parent = m.get_submodule(parent_name) if parent_name else m
            setattr(parent, child, QuantizedLinearInt8(mod, threshold))
            continue
        new = _fake_quantize(mod.weight.detach(), fmt, block_size)
        with torch.no_grad():
            mod.weight.copy_(new.to(mod.weight.dtype))
    return m, n_bytes


def model_bytes(model: nn.Module) -> int:
    """Bytes of all parameters and buffers at their current dtypes (shared tensors counted once)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be an nn.Module, got {type(model).__name__}")
    seen: set[int] = set()
    total = 0
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total
